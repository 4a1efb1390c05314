//! `duplex bench echo`: round trips against an echo server, every echo checked byte for byte.
//!
//! Each message starts with a header holding the connection-local sequence number and the
//! intended send time (nanoseconds since the run's time zero): 16 bytes big-endian in binary
//! messages, 32 hex digits in text messages. A deterministic pattern, shifted by the sequence
//! number, fills the rest, so an echo is checked against what was sent in full. Each connection
//! keeps its messages in flight in send order, which tells an in-order echo from a reordered,
//! duplicated, corrupted or missing one.

use super::report::{self, Connections, Errors, Latencies, Notes, Report, Settings, Throughput};
use super::{
    check_fd_limit, check_url, open_all, parse_rate, usage, Budget, Clock, Dialer, Live, Output,
    Pacer, Progress, Target, Timing, Ws, DRAIN,
};
use crate::size::parse_size;
use duplex::{CloseCode, Message};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `duplex bench echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    #[command(flatten)]
    target: Target,
    /// Connections, each running its own round trips.
    #[arg(short = 'c', long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    connections: u64,
    /// Payload bytes per message (at least 16 for --binary, 32 for text).
    #[arg(long, default_value = "64", value_parser = parse_size, value_name = "SIZE")]
    size: usize,
    /// Send binary messages (default: text).
    #[arg(long)]
    binary: bool,
    /// Messages in flight per connection: 1 is ping-pong, more is pipelined.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    window: u32,
    /// Messages per second over all connections (default: as fast as echoes come back).
    /// Latency then counts from each message's intended send time.
    #[arg(long, value_parser = parse_rate, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Stop after sending this many messages in total.
    #[arg(long, value_name = "N")]
    messages: Option<u64>,
    /// Run this long before measuring; its echoes are checked but not counted.
    #[arg(long, default_value = "0s", value_parser = super::parse_duration, value_name = "TIME")]
    warmup: Duration,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    output: Output,
}

/// Runs the echo benchmark.
pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let codec = Codec::new(args.binary, args.size);
    if args.size < codec.header_len() {
        usage(format!(
            "--size {} is too small: {} messages carry a {}-byte header",
            args.size,
            if args.binary { "binary" } else { "text" },
            codec.header_len()
        ));
    }
    check_url(&args.target.url, &["ws", "wss"], args.target.allow_remote).await;
    check_fd_limit(args.connections);
    let n = args.connections as usize;
    let dialer = Dialer::new(&args.target, &args.target.url, args.size);
    let live = Arc::new(Live::default());
    let notes = Arc::new(Notes::default());
    let mut progress = Progress::new();
    progress.connecting(args.connections, &live);
    let opened = open_all(&dialer, n, args.target.ramp, &live, &notes, |ws| async {
        Ok(ws)
    })
    .await;

    let clock = Clock::start(args.warmup, args.timing.duration);
    let ctx = Arc::new(Ctx {
        codec,
        window: args.window as usize,
        budget: Budget::new(args.messages),
        latencies: Latencies::new(),
        last_measured: AtomicU64::new(0),
        live: live.clone(),
        notes: notes.clone(),
        clock: clock.clone(),
    });
    progress.running(&clock, &live);
    let open = opened.conns.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, ws) in opened.conns.into_iter().enumerate() {
        let pacer = args
            .rate
            .and_then(|rate| Pacer::new(clock.base, rate, open, index));
        tasks.spawn(drive(ws, ctx.clone(), pacer, index));
    }
    let mut total = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(outcome) => total.add(&outcome),
            Err(error) => {
                total.errors.connection += 1;
                notes.add(format!("connection task failed: {error}"));
            }
        }
    }
    progress.finish();

    let latencies = ctx.latencies.merged();
    let elapsed = clock.elapsed(ctx.last_measured.load(Ordering::Relaxed));
    let per_s = |x: u64| {
        if elapsed.is_zero() {
            0.0
        } else {
            x as f64 / elapsed.as_secs_f64()
        }
    };
    let mut errors = total.errors;
    errors.connect = opened.failed;
    errors.add(&Errors::default());
    let paced = args.rate.is_some_and(f64::is_finite);
    let mut report = Report {
        mode: "echo",
        url: args.target.url.clone(),
        settings: Settings {
            connections: args.connections,
            duration_s: args.timing.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            deflate: !args.target.no_deflate,
            size: Some(args.size),
            binary: Some(args.binary),
            window: Some(args.window),
            rate: args.rate.filter(|r| r.is_finite()),
            messages: args.messages,
            ..Default::default()
        },
        elapsed_s: elapsed.as_secs_f64(),
        connections: Connections {
            requested: args.connections,
            opened: open as u64,
            failed: opened.failed,
            open_us: report::Summary::of(&opened.open_latency),
        },
        sent: total.sent,
        received: total.received,
        expected: total.sent,
        bytes_sent: total.bytes_sent,
        bytes_received: total.bytes_received,
        throughput: Throughput {
            messages_per_s: per_s(total.measured),
            bytes_per_s: per_s(total.measured_bytes),
        },
        latency_us: report::Summary::of(&latencies),
        latency_from: if paced {
            "intended send time"
        } else {
            "send time"
        },
        errors,
        notes: notes.list(),
        ..Default::default()
    };
    report.judge();
    report::finish(&report, &latencies, &args.output)
}

/// What every connection task shares.
struct Ctx {
    codec: Codec,
    window: usize,
    budget: Budget,
    latencies: Arc<Latencies>,
    /// Time (ns from the clock's base) of the last measured echo, for the elapsed window.
    last_measured: AtomicU64,
    live: Arc<Live>,
    notes: Arc<Notes>,
    clock: Clock,
}

/// One connection's counts.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    measured: u64,
    measured_bytes: u64,
    errors: Errors,
}

impl Outcome {
    fn add(&mut self, other: &Outcome) {
        self.sent += other.sent;
        self.received += other.received;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.measured += other.measured;
        self.measured_bytes += other.measured_bytes;
        self.errors.add(&other.errors);
    }
}

/// Runs one connection: sends on schedule (or as the window allows), checks every echo,
/// then closes with 1000.
async fn drive(mut ws: Ws, ctx: Arc<Ctx>, mut pacer: Option<Pacer>, index: usize) -> Outcome {
    let mut conn = Conn {
        ctx: &ctx,
        out: Outcome::default(),
        inflight: VecDeque::with_capacity(ctx.window.min(1024)),
        next_seq: 0,
        recorder: ctx.latencies.recorder(index),
    };
    let result = conn.exchange(&mut ws, &mut pacer).await;
    let Conn {
        mut out,
        inflight,
        mut recorder,
        ..
    } = conn;
    recorder.flush();
    out.errors.missing += inflight.len() as u64;
    match result {
        Ok(()) => {
            if let Err(error) = ws.close(CloseCode::NORMAL, "").await {
                out.errors.unclean_close += 1;
                ctx.notes.add(format!("close: {error}"));
            }
        }
        Err(error) => {
            out.errors.connection += 1;
            ctx.notes.add(error);
        }
    }
    let errors = out.errors;
    let count = errors.connection
        + errors.corrupt
        + errors.missing
        + errors.duplicate
        + errors.reordered
        + errors.unclean_close;
    ctx.live.errors.fetch_add(count, Ordering::Relaxed);
    out
}

struct Conn<'a> {
    ctx: &'a Ctx,
    out: Outcome,
    /// Sent and not yet echoed, oldest first: (sequence number, intended send time in ns).
    inflight: VecDeque<(u64, u64)>,
    next_seq: u64,
    recorder: report::Recorder,
}

impl Conn<'_> {
    async fn exchange(&mut self, ws: &mut Ws, pacer: &mut Option<Pacer>) -> Result<(), String> {
        let clock = &self.ctx.clock;
        let drain_until = clock.stop_at + DRAIN;
        let mut sending = true;
        loop {
            // Checked here too: with a full window the send loop below does not run.
            if Instant::now() >= clock.stop_at {
                sending = false;
            }
            let mut fed = false;
            while sending && self.inflight.len() < self.ctx.window {
                let now = Instant::now();
                let intended = pacer.as_ref().map_or(now, Pacer::next);
                if intended >= clock.stop_at || now >= clock.stop_at {
                    sending = false;
                    break;
                }
                if intended > now {
                    break;
                }
                if !self.ctx.budget.take() {
                    sending = false;
                    break;
                }
                let ts = clock.nanos(intended);
                let message = self.ctx.codec.encode(self.next_seq, ts);
                let len = message.len() as u64;
                ws.feed(message).await.map_err(|e| format!("send: {e}"))?;
                self.inflight.push_back((self.next_seq, ts));
                self.next_seq += 1;
                self.out.sent += 1;
                self.out.bytes_sent += len;
                self.ctx.live.sent.fetch_add(1, Ordering::Relaxed);
                if let Some(pacer) = pacer.as_mut() {
                    pacer.advance();
                }
                fed = true;
            }
            if fed {
                ws.flush().await.map_err(|e| format!("send: {e}"))?;
            }
            if !sending && self.inflight.is_empty() {
                return Ok(());
            }
            let wake = match pacer {
                _ if !sending => drain_until,
                Some(pacer) if self.inflight.len() < self.ctx.window => pacer.next(),
                _ => clock.stop_at,
            };
            tokio::select! {
                message = ws.recv() => match message {
                    Some(Ok(message)) => self.on_echo(&message),
                    Some(Err(error)) => return Err(format!("receive: {error}")),
                    None => {
                        return Err(format!(
                            "the server closed the connection ({:?})",
                            ws.close_frame()
                        ))
                    }
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    if !sending && Instant::now() >= drain_until {
                        // What is still in flight counts as missing.
                        return Ok(());
                    }
                }
            }
        }
    }

    fn on_echo(&mut self, message: &Message) {
        let now = Instant::now();
        let (seq, ts) = match self.ctx.codec.decode(message) {
            Ok(header) => header,
            Err(why) => {
                self.out.errors.corrupt += 1;
                self.ctx.notes.add(format!("corrupt echo: {why}"));
                return;
            }
        };
        let Some(at) = self.inflight.iter().position(|&(s, _)| s == seq) else {
            if seq < self.next_seq {
                self.out.errors.duplicate += 1;
                self.ctx
                    .notes
                    .add(format!("echo of message {seq} came twice"));
            } else {
                self.out.errors.corrupt += 1;
                self.ctx
                    .notes
                    .add(format!("echo of message {seq}, which was never sent"));
            }
            return;
        };
        if at > 0 {
            self.out.errors.reordered += 1;
            self.ctx.notes.add(format!(
                "echo of message {seq} came before {}",
                self.inflight[0].0
            ));
        }
        let (_, sent_ts) = self.inflight.remove(at).expect("`at` is in range");
        if sent_ts != ts {
            self.out.errors.corrupt += 1;
            self.ctx
                .notes
                .add(format!("echo of message {seq} carries another timestamp"));
            return;
        }
        let len = message.len() as u64;
        self.out.received += 1;
        self.out.bytes_received += len;
        self.ctx.live.received.fetch_add(1, Ordering::Relaxed);
        let clock = &self.ctx.clock;
        let intended = clock.instant(ts);
        if clock.measured(intended) {
            self.recorder.record(now - intended);
            self.out.measured += 1;
            self.out.measured_bytes += len;
            self.ctx
                .last_measured
                .fetch_max(clock.nanos(now), Ordering::Relaxed);
        }
    }
}

/// Builds and checks the payloads.
#[derive(Debug)]
struct Codec {
    binary: bool,
    size: usize,
    /// The filler pattern, one period longer than a body so any shift is a plain slice.
    pattern: Vec<u8>,
}

/// Pattern periods: prime for binary bytes, the printable ASCII range for text.
const BINARY_PERIOD: usize = 251;
const TEXT_PERIOD: usize = 94;

impl Codec {
    fn new(binary: bool, size: usize) -> Self {
        let period = if binary { BINARY_PERIOD } else { TEXT_PERIOD };
        let pattern = (0..size + period)
            .map(|i| {
                if binary {
                    (i % BINARY_PERIOD) as u8
                } else {
                    b'!' + (i % TEXT_PERIOD) as u8
                }
            })
            .collect();
        Self {
            binary,
            size,
            pattern,
        }
    }

    fn header_len(&self) -> usize {
        if self.binary {
            16
        } else {
            32
        }
    }

    fn period(&self) -> usize {
        if self.binary {
            BINARY_PERIOD
        } else {
            TEXT_PERIOD
        }
    }

    /// The body after the header of message `seq`.
    fn body(&self, seq: u64) -> &[u8] {
        let shift = (seq % self.period() as u64) as usize;
        &self.pattern[shift..shift + self.size - self.header_len()]
    }

    fn encode(&self, seq: u64, ts: u64) -> Message {
        let mut payload = Vec::with_capacity(self.size);
        if self.binary {
            payload.extend_from_slice(&seq.to_be_bytes());
            payload.extend_from_slice(&ts.to_be_bytes());
            payload.extend_from_slice(self.body(seq));
            Message::binary(payload)
        } else {
            let mut text = format!("{seq:016x}{ts:016x}");
            text.push_str(std::str::from_utf8(self.body(seq)).expect("the text pattern is ASCII"));
            Message::text(text)
        }
    }

    /// The sequence number and timestamp of an echo that matches its message in full.
    fn decode(&self, message: &Message) -> Result<(u64, u64), String> {
        if message.is_text() == self.binary {
            return Err(format!(
                "a {} message came back for a {} one",
                if message.is_text() { "text" } else { "binary" },
                if self.binary { "binary" } else { "text" }
            ));
        }
        let data = message.as_bytes();
        if data.len() != self.size {
            return Err(format!("{} bytes instead of {}", data.len(), self.size));
        }
        let (head, body) = data.split_at(self.header_len());
        let (seq, ts) = if self.binary {
            let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
            (word(&head[..8]), word(&head[8..]))
        } else {
            let hex = |b: &[u8]| {
                std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
            };
            match (hex(&head[..16]), hex(&head[16..])) {
                (Some(seq), Some(ts)) => (seq, ts),
                _ => return Err("the header is not hex".to_owned()),
            }
        };
        if body != self.body(seq) {
            let at = body
                .iter()
                .zip(self.body(seq))
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(format!(
                "message {seq} differs at byte {}",
                at + self.header_len()
            ));
        }
        Ok((seq, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for binary in [false, true] {
            let codec = Codec::new(binary, 100);
            for seq in [0, 1, 93, 94, 250, 251, u64::MAX] {
                let message = codec.encode(seq, seq.wrapping_mul(7));
                assert_eq!(message.len(), 100);
                assert_eq!(message.is_text(), !binary);
                assert_eq!(codec.decode(&message), Ok((seq, seq.wrapping_mul(7))));
            }
        }
        let exact = Codec::new(true, 16);
        assert_eq!(exact.decode(&exact.encode(5, 6)), Ok((5, 6)));
    }

    #[test]
    fn every_byte_is_checked() {
        for binary in [false, true] {
            let codec = Codec::new(binary, 64);
            let good = codec.encode(42, 1000).into_bytes();
            for at in 0..good.len() {
                let mut bad = good.to_vec();
                bad[at] = if binary {
                    bad[at] ^ 0x01
                } else {
                    b'~' - (bad[at] == b'~') as u8
                };
                let message = if binary {
                    Message::binary(bad)
                } else {
                    Message::text(String::from_utf8(bad).unwrap())
                };
                // A changed header byte may name another message or time; anything else is
                // corrupt. Either way the echo is not taken for message 42 at time 1000.
                assert_ne!(codec.decode(&message), Ok((42, 1000)), "byte {at}");
            }
        }
    }

    #[test]
    fn wrong_type_and_length_are_corrupt() {
        let codec = Codec::new(false, 40);
        let message = codec.encode(1, 2);
        assert!(codec
            .decode(&Message::binary(message.clone().into_bytes()))
            .is_err());
        let mut longer = message.as_text().unwrap().to_owned();
        longer.push('x');
        assert!(codec.decode(&Message::text(longer)).is_err());
    }
}
