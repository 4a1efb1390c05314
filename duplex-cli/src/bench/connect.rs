//! `duplex bench connect`: opening handshakes per second, each connection closed cleanly.

use super::report::{self, Connections, Errors, Handshakes, Latencies, Notes, Report, Settings};
use super::{
    check_fd_limit, check_url, parse_rate, Budget, Clock, Dialer, Live, Output, Pacer, Progress,
    Target, Timing,
};
use duplex::CloseCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `duplex bench connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    target: Target,
    /// Workers, each connecting and closing in a loop (connections open at once).
    #[arg(short = 'c', long, default_value_t = 8, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    connections: u64,
    /// Stop after this many handshakes in total.
    #[arg(long, value_name = "N")]
    handshakes: Option<u64>,
    /// Handshakes per second over all workers (default: as fast as they complete). Latency
    /// then counts from each handshake's intended start.
    #[arg(long, value_parser = parse_rate, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Run this long before measuring.
    #[arg(long, default_value = "0s", value_parser = super::parse_duration, value_name = "TIME")]
    warmup: Duration,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    output: Output,
}

/// Runs the handshake benchmark.
pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    check_url(&args.target.url, &["ws", "wss"], args.target.allow_remote).await;
    check_fd_limit(args.connections);
    let dialer = Dialer::new(&args.target, &args.target.url, 0);
    let live = Arc::new(Live::default());
    let notes = Arc::new(Notes::default());
    let clock = Clock::start(args.warmup, args.timing.duration);
    let ctx = Arc::new(Ctx {
        dialer,
        budget: Budget::new(args.handshakes),
        latencies: Latencies::new(),
        last_measured: AtomicU64::new(0),
        live: live.clone(),
        notes: notes.clone(),
        clock: clock.clone(),
    });
    let mut progress = Progress::new();
    progress.running(&clock, &live);
    let n = args.connections as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..n {
        let pacer = args
            .rate
            .and_then(|rate| Pacer::new(clock.base, rate, n, index));
        tasks.spawn(worker(ctx.clone(), pacer, index));
    }
    let mut total = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(outcome) => total.add(&outcome),
            Err(error) => {
                total.errors.connection += 1;
                notes.add(format!("worker failed: {error}"));
            }
        }
    }
    progress.finish();

    let latencies = ctx.latencies.merged();
    let elapsed = clock.elapsed(ctx.last_measured.load(Ordering::Relaxed));
    let per_s = if elapsed.is_zero() {
        0.0
    } else {
        total.measured as f64 / elapsed.as_secs_f64()
    };
    let paced = args.rate.is_some_and(f64::is_finite);
    let mut errors = total.errors;
    errors.add(&Errors::default());
    let mut report = Report {
        mode: "connect",
        url: args.target.url.clone(),
        settings: Settings {
            connections: args.connections,
            duration_s: args.timing.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            deflate: !args.target.no_deflate,
            rate: args.rate.filter(|r| r.is_finite()),
            messages: args.handshakes,
            ..Default::default()
        },
        elapsed_s: elapsed.as_secs_f64(),
        // Every attempt is a connection; failures are in errors.connect.
        connections: Connections {
            requested: total.attempted,
            opened: total.completed,
            failed: total.errors.connect,
            open_us: report::Summary::of(&latencies),
        },
        latency_us: report::Summary::of(&latencies),
        latency_from: if paced {
            "intended handshake start"
        } else {
            "handshake start"
        },
        errors,
        handshakes: Some(Handshakes {
            attempted: total.attempted,
            completed: total.completed,
            clean_closes: total.clean_closes,
            per_s,
        }),
        notes: notes.list(),
        ..Default::default()
    };
    report.judge();
    if total.attempted == 0 {
        report.ok = false;
        report.notes.push("no handshake was attempted".to_owned());
    }
    report::finish(&report, &latencies, &args.output)
}

struct Ctx {
    dialer: Dialer,
    budget: Budget,
    latencies: Arc<Latencies>,
    last_measured: AtomicU64,
    live: Arc<Live>,
    notes: Arc<Notes>,
    clock: Clock,
}

#[derive(Debug, Default)]
struct Outcome {
    attempted: u64,
    completed: u64,
    clean_closes: u64,
    measured: u64,
    errors: Errors,
}

impl Outcome {
    fn add(&mut self, other: &Outcome) {
        self.attempted += other.attempted;
        self.completed += other.completed;
        self.clean_closes += other.clean_closes;
        self.measured += other.measured;
        self.errors.add(&other.errors);
    }
}

/// Connects, closes with 1000 and waits for the server's close frame, again and again.
async fn worker(ctx: Arc<Ctx>, mut pacer: Option<Pacer>, index: usize) -> Outcome {
    let mut out = Outcome::default();
    let mut recorder = ctx.latencies.recorder(index);
    let clock = &ctx.clock;
    loop {
        let intended = match &pacer {
            Some(pacer) => pacer.next(),
            None => Instant::now(),
        };
        if intended >= clock.stop_at || Instant::now() >= clock.stop_at || !ctx.budget.take() {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        if let Some(pacer) = pacer.as_mut() {
            pacer.advance();
        }
        out.attempted += 1;
        ctx.live.sent.fetch_add(1, Ordering::Relaxed);
        let mut ws = match ctx.dialer.connect().await {
            Ok(ws) => ws,
            Err(error) => {
                out.errors.connect += 1;
                ctx.live.errors.fetch_add(1, Ordering::Relaxed);
                ctx.notes.add(format!("cannot connect: {error}"));
                continue;
            }
        };
        let now = Instant::now();
        out.completed += 1;
        ctx.live.open.fetch_add(1, Ordering::Relaxed);
        ctx.live.received.fetch_add(1, Ordering::Relaxed);
        if clock.measured(intended) {
            recorder.record(now - intended);
            out.measured += 1;
            ctx.last_measured
                .fetch_max(clock.nanos(now), Ordering::Relaxed);
        }
        let closed = ws.close(CloseCode::NORMAL, "").await;
        ctx.live.open.fetch_sub(1, Ordering::Relaxed);
        match closed {
            Ok(()) if ws.close_frame().map(|f| f.code) == Some(CloseCode::NORMAL) => {
                out.clean_closes += 1;
            }
            Ok(()) => {
                out.errors.unclean_close += 1;
                ctx.live.errors.fetch_add(1, Ordering::Relaxed);
                ctx.notes.add(format!(
                    "the server answered our 1000 with {:?}",
                    ws.close_frame()
                ));
            }
            Err(error) => {
                out.errors.unclean_close += 1;
                ctx.live.errors.fetch_add(1, Ordering::Relaxed);
                ctx.notes.add(format!("close: {error}"));
            }
        }
    }
    out
}
