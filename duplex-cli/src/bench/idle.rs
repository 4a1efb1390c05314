//! `duplex bench idle`: hold many idle connections; measure what they cost in memory.
//!
//! With `--server-pid`, the server's `VmRSS` and `RssAnon` (from `/proc/PID/status`) are read
//! before the first connection opens and again once all are open; the difference divided by
//! the connections opened is the server's memory per idle connection. The same is reported
//! for this process. The first reading is of a warm server: `--warm` connections (64 by
//! default) are opened first and held to the end, so the code pages, per-thread pools and
//! allocator arenas that any first connections bring in are not counted per connection.

use super::report::{
    self, Connections, Errors, Memory, MemoryDelta, Notes, Report, Rss, RssDelta, Settings,
};
use super::{
    check_fd_limit, check_url, open_all, usage, Clock, Dialer, Live, Opened, Output, Progress,
    Target, Timing, Ws,
};
use duplex::CloseCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long the server gets to settle after the last connection opened, before its memory is
/// read again.
const SETTLE: Duration = Duration::from_millis(500);

/// Options of `duplex bench idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    target: Target,
    /// Connections to open and hold.
    #[arg(short = 'c', long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    connections: u64,
    /// Connections opened before the first memory reading and held to the end (not counted).
    #[arg(long, default_value_t = 64, value_name = "N")]
    warm: u64,
    /// The server's process id: report its resident memory per connection (Linux /proc).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    output: Output,
}

/// Runs the idle benchmark: open, hold for --duration, close.
pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    check_url(&args.target.url, &["ws", "wss"], args.target.allow_remote).await;
    check_fd_limit(args.connections + args.warm);
    let dialer = Dialer::new(&args.target, &args.target.url, 0);
    let live = Arc::new(Live::default());
    let notes = Arc::new(Notes::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let hold_all = HoldAll {
        dialer: &dialer,
        ramp: args.target.ramp,
        live: &live,
        notes: &notes,
        stop: &stop_rx,
    };
    let (_, warm) = hold_all.open(args.warm, &mut tasks).await;
    if args.warm > 0 {
        tokio::time::sleep(SETTLE).await;
    }
    let server_before = args.server_pid.map(|pid| match rss(&pid.to_string()) {
        Some(rss) => rss,
        None => usage(format!(
            "cannot read the memory of process {pid} (/proc/{pid}/status)"
        )),
    });
    let client_before = rss("self").unwrap_or_default();

    let mut progress = Progress::new();
    progress.connecting(args.connections, &live);
    let (open, opened) = hold_all.open(args.connections, &mut tasks).await;
    tokio::time::sleep(SETTLE).await;
    let server = match (args.server_pid, server_before) {
        (Some(pid), Some(before)) => {
            let after = rss(&pid.to_string()).unwrap_or_default();
            Some(delta(Some(pid), before, after, open))
        }
        _ => None,
    };
    let client = delta(None, client_before, rss("self").unwrap_or_default(), open);

    let clock = Clock::start(Duration::ZERO, args.timing.duration);
    progress.running(&clock, &live);
    tokio::time::sleep_until(clock.stop_at.into()).await;
    let _ = stop_tx.send(true);
    let mut errors = Errors {
        connect: warm.failed + opened.failed,
        ..Default::default()
    };
    let mut received = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(outcome) => {
                errors.add(&outcome.errors);
                received += outcome.received;
            }
            Err(error) => {
                errors.connection += 1;
                notes.add(format!("connection task failed: {error}"));
            }
        }
    }
    progress.finish();
    errors.add(&Errors::default());

    let mut report = Report {
        mode: "idle",
        url: args.target.url.clone(),
        settings: Settings {
            connections: args.connections,
            duration_s: args.timing.duration.as_secs_f64(),
            deflate: !args.target.no_deflate,
            ..Default::default()
        },
        elapsed_s: args.timing.duration.as_secs_f64(),
        connections: Connections {
            requested: args.connections,
            opened: open,
            failed: warm.failed + opened.failed,
            open_us: report::Summary::of(&opened.open_latency),
        },
        // Idle connections expect nothing; whatever the server sent is only counted.
        received,
        expected: received,
        latency_from: "connect start",
        latency_us: report::Summary::of(&opened.open_latency),
        errors,
        memory: Some(Memory { server, client }),
        notes: notes.list(),
        ..Default::default()
    };
    report.judge();
    report::finish(&report, &opened.open_latency, &args.output)
}

/// Opens connections and hands each to a [`hold`] task: the warm-up set and the measured
/// set alike.
struct HoldAll<'a> {
    dialer: &'a Dialer,
    ramp: u32,
    live: &'a Arc<Live>,
    notes: &'a Arc<Notes>,
    stop: &'a watch::Receiver<bool>,
}

impl HoldAll<'_> {
    /// Opens `n` connections, each held (reading, answering pings) in `tasks` until told to
    /// close; returns how many opened, and what opening them counted.
    async fn open(&self, n: u64, tasks: &mut JoinSet<Outcome>) -> (u64, Opened) {
        let mut opened = open_all(
            self.dialer,
            n as usize,
            self.ramp,
            self.live,
            self.notes,
            |ws| async { Ok(ws) },
        )
        .await;
        let open = opened.conns.len() as u64;
        for ws in opened.conns.drain(..) {
            tasks.spawn(hold(
                ws,
                self.stop.clone(),
                self.live.clone(),
                self.notes.clone(),
            ));
        }
        (open, opened)
    }
}

struct Outcome {
    received: u64,
    errors: Errors,
}

/// Keeps one connection open until `stop`, then closes it with 1000.
async fn hold(
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    live: Arc<Live>,
    notes: Arc<Notes>,
) -> Outcome {
    let mut out = Outcome {
        received: 0,
        errors: Errors::default(),
    };
    loop {
        tokio::select! {
            message = ws.recv() => match message {
                Some(Ok(_)) => {
                    out.received += 1;
                    live.received.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(error)) => {
                    out.errors.connection += 1;
                    live.errors.fetch_add(1, Ordering::Relaxed);
                    notes.add(format!("idle connection failed: {error}"));
                    return out;
                }
                None => {
                    out.errors.connection += 1;
                    live.errors.fetch_add(1, Ordering::Relaxed);
                    notes.add(format!(
                        "the server closed an idle connection ({:?})",
                        ws.close_frame()
                    ));
                    return out;
                }
            },
            _ = stop.wait_for(|&stop| stop) => break,
        }
    }
    if let Err(error) = ws.close(CloseCode::NORMAL, "").await {
        out.errors.unclean_close += 1;
        notes.add(format!("close: {error}"));
    }
    out
}

/// `VmRSS` and `RssAnon` of `/proc/{pid}/status` (`pid` may be `self`).
fn rss(pid: &str) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<Rss> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(Rss {
        vm_rss_kib: field("VmRSS")?,
        rss_anon_kib: field("RssAnon").unwrap_or(0),
    })
}

fn delta(pid: Option<u32>, before: Rss, after: Rss, connections: u64) -> MemoryDelta {
    let per = |b: u64, a: u64| {
        if connections == 0 {
            0.0
        } else {
            (a as f64 - b as f64) * 1024.0 / connections as f64
        }
    };
    MemoryDelta {
        pid,
        before,
        after,
        per_connection_bytes: RssDelta {
            vm_rss: per(before.vm_rss_kib, after.vm_rss_kib),
            rss_anon: per(before.rss_anon_kib, after.rss_anon_kib),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_status() {
        let status =
            "Name:\tduplex\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nRssAnon:\t    2048 kB\n";
        let rss = parse_status(status).unwrap();
        assert_eq!((rss.vm_rss_kib, rss.rss_anon_kib), (5120, 2048));
        assert!(parse_status("Name:\tx\n").is_none());
        // Our own process always has a status file on Linux.
        if cfg!(target_os = "linux") {
            assert!(super::rss("self").unwrap().vm_rss_kib > 0);
        }
    }

    #[test]
    fn per_connection_growth() {
        let before = Rss {
            vm_rss_kib: 1000,
            rss_anon_kib: 500,
        };
        let after = Rss {
            vm_rss_kib: 2000,
            rss_anon_kib: 1500,
        };
        let d = delta(Some(7), before, after, 100);
        assert_eq!(d.per_connection_bytes.vm_rss, 10240.0);
        assert_eq!(d.per_connection_bytes.rss_anon, 10240.0);
        assert_eq!(
            delta(None, before, after, 0).per_connection_bytes.vm_rss,
            0.0
        );
    }
}
