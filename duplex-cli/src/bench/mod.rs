//! `duplex bench`: a load generator that checks every answer it gets.
//!
//! One file per mode (`echo`, `connect`, `idle`, `fanout`, `rooms`) and one for the report,
//! its histograms and the SVG plot. This file holds what the modes share: the command line,
//! the loopback guard, the connection ramp, the run clock, rate pacing and the progress bar.
//!
//! Every run is bounded: it stops after `--warmup` + `--duration` (plus at most [`DRAIN`] to
//! collect answers still in flight) or at its count cap. Targets must resolve to loopback
//! addresses unless `--allow-remote` is given. Anything that comes back wrong (a corrupted,
//! missing, duplicated or reordered message, a failed connection, an unclean close) is counted
//! and makes the exit status non-zero.
//!
//! With `--rate`, latency is measured from the *intended* send time of each message, so a
//! server that stalls is charged for the messages that would have been sent meanwhile
//! (coordinated omission); without it, from the actual send time.

mod connect;
mod echo;
mod fanout;
mod idle;
mod report;
mod rooms;

use anyhow::Context as _;
use duplex::{ClientBuilder, Config, DeflateConfig, MaybeTlsStream, WebSocket, WebSocketConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use report::Notes;
use std::future::Future;
use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How long a run waits after its end for answers still in flight; what has not arrived by
/// then counts as missing.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Connections one process can hold: the open-file limit here is about 20,000 and the
/// process needs some descriptors of its own.
const FDS_RESERVED: u64 = 64;

/// The longest `--duration` or `--warmup` accepted.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

const AFTER_HELP: &str = "\
LIMITS:
  Every run stops by itself: after --warmup + --duration (then up to 5 s to collect answers
  still in flight), or earlier at its count cap (--messages, --handshakes). Targets must
  resolve to loopback addresses unless --allow-remote is given: only load servers you are
  responsible for.
  Connections are opened at most --ramp (64) at a time so the ramp-up does not trip the
  server. One process holds about 18,000 connections at most (its open-file limit is about
  20,000, see `ulimit -n`); for more, run several `duplex bench` processes side by side.

OUTPUT:
  A text report on stdout, or one JSON object with --json; a live progress bar on stderr
  when it is a terminal; --plot FILE.svg draws the latency percentile curve.

EXIT STATUS:
  0  the run completed and every message checked out
  1  errors were counted (corrupt, missing, duplicate, reordered messages, failed
     connections, unclean closes, refused commands), or the run could not start
  2  invalid command line, or a target that is not loopback";

/// Options of `duplex bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Round trips against an echo server: every connection sends messages carrying a
    /// sequence number and a timestamp and checks each echo byte for byte (ping-pong, or
    /// pipelined with --window).
    #[command(after_help = AFTER_HELP)]
    Echo(echo::EchoArgs),
    /// Opening handshakes per second: -c workers each connect, close cleanly (1000) and
    /// connect again.
    #[command(after_help = AFTER_HELP)]
    Connect(connect::ConnectArgs),
    /// Hold -c idle connections for --duration; with --server-pid, report the server's
    /// memory per connection (from /proc).
    #[command(after_help = AFTER_HELP)]
    Idle(idle::IdleArgs),
    /// Fan-out through the hub (`duplex serve`): -c subscribers on one channel, one
    /// publisher (duplex.v1 or the HTTP API); checks that every subscriber gets every
    /// publication exactly once and in order.
    #[command(after_help = AFTER_HELP)]
    Fanout(fanout::FanoutArgs),
    /// The same over a raw room of the hub (ws://HOST/rooms/ROOM): one sender, -c
    /// members that must each receive every message exactly once and in order.
    #[command(after_help = AFTER_HELP)]
    Rooms(rooms::RoomsArgs),
}

/// Runs one benchmark; the report goes to stdout.
///
/// # Errors
/// When the run could not start, or when it counted errors (after printing the report).
/// Command-line problems and non-loopback targets exit with status 2 directly.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.mode {
        Mode::Echo(args) => echo::run(args).await,
        Mode::Connect(args) => connect::run(args).await,
        Mode::Idle(args) => idle::run(args).await,
        Mode::Fanout(args) => fanout::run(args).await,
        Mode::Rooms(args) => rooms::run(args).await,
    }
}

/// Where to connect, and how.
#[derive(Debug, Clone, clap::Args)]
struct Target {
    /// ws:// or wss:// URL of the server.
    url: String,
    /// Allow a target that does not resolve to loopback addresses.
    #[arg(long)]
    allow_remote: bool,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Also trust the CA certificates in this PEM file (wss://).
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (wss://). Only for testing.
    #[arg(long)]
    insecure: bool,
    /// Connection attempts in flight at once while opening connections.
    #[arg(long, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    ramp: u32,
}

/// How long to measure.
#[derive(Debug, Clone, clap::Args)]
struct Timing {
    /// How long to measure (10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "TIME")]
    duration: Duration,
}

/// Where the report goes.
#[derive(Debug, Clone, clap::Args)]
struct Output {
    /// Print the report as one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Draw the latency distribution (percentile curve) into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// Exits with status 2 and `message`, like any other command-line error.
fn usage(message: impl std::fmt::Display) -> ! {
    clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{message}\n")).exit()
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `1h` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m, h)")),
    };
    let duration =
        Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))?;
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is longer than 24h"));
    }
    Ok(duration)
}

/// Parses a rate in messages per second; `max` means as fast as possible.
fn parse_rate(text: &str) -> Result<f64, String> {
    if text.trim().eq_ignore_ascii_case("max") {
        return Ok(f64::INFINITY);
    }
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (messages per second, or `max`)"))?;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("{text:?}: the rate must be above 0"));
    }
    Ok(rate)
}

/// Refuses (exit 2) a URL that is unusable or, without `allow_remote`, whose host does not
/// resolve to loopback addresses only.
async fn check_url(url: &str, schemes: &[&str], allow_remote: bool) -> duplex::http::Uri {
    let uri: duplex::http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(error) => usage(format!("{url:?} is not a URL: {error}")),
    };
    let scheme = uri.scheme_str().unwrap_or("");
    if !schemes.contains(&scheme) {
        usage(format!(
            "{url:?}: the scheme must be {}",
            schemes.join(" or ")
        ));
    }
    let Some(host) = uri.host() else {
        usage(format!("{url:?} has no host"));
    };
    if allow_remote {
        return uri.clone();
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(match scheme {
        "wss" | "https" => 443,
        _ => 80,
    });
    let addresses: Vec<IpAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(found) => found.map(|a| a.ip()).collect(),
        Err(error) => usage(format!("cannot resolve {host:?}: {error}")),
    };
    let remote: Vec<String> = addresses
        .iter()
        .filter(|ip| !is_loopback(ip))
        .map(ToString::to_string)
        .collect();
    if addresses.is_empty() || !remote.is_empty() {
        usage(format!(
            "refusing to load {host:?}: it resolves to {}, which is not a loopback address.\n\
             duplex bench only targets this machine (127.0.0.0/8, ::1) unless --allow-remote \
             is given; only load servers you are responsible for.",
            if remote.is_empty() {
                "nothing".to_owned()
            } else {
                remote.join(", ")
            }
        ));
    }
    uri
}

fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Refuses (exit 2) a connection count this process cannot hold.
fn check_fd_limit(connections: u64) {
    let Some(limit) = open_file_limit() else {
        return;
    };
    if connections.saturating_add(FDS_RESERVED) > limit {
        usage(format!(
            "{connections} connections need about {} file descriptors, but this process may \
             open {limit} (ulimit -n). Raise the limit, or split the load across several \
             `duplex bench` processes (about {} connections each).",
            connections + FDS_RESERVED,
            limit.saturating_sub(FDS_RESERVED + 2000).max(1)
        ));
    }
}

/// The soft `RLIMIT_NOFILE`, from /proc (Linux); `None` elsewhere or when unlimited.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A client connection as the benchmarks use it.
type Ws = WebSocket<MaybeTlsStream>;

/// Opens client connections with the target's options.
#[derive(Clone, Debug)]
struct Dialer {
    builder: Arc<ClientBuilder>,
}

impl Dialer {
    /// A dialer for `url` (which may differ from the target's: fan-out adds `/ws`), accepting
    /// messages of at least `max_message` bytes.
    fn new(target: &Target, url: &str, max_message: usize) -> Self {
        Self::with(target, ClientBuilder::new(url), max_message)
    }

    /// As [`new`](Self::new), starting from a builder with headers or subprotocols set.
    fn with(target: &Target, builder: ClientBuilder, max_message: usize) -> Self {
        let limit = max_message.saturating_mul(2).max(16 << 20);
        let proto = Config::default()
            .with_max_message_size(limit)
            .with_max_frame_size(limit)
            .with_deflate((!target.no_deflate).then(DeflateConfig::default));
        let mut builder = builder.config(WebSocketConfig::default().with_proto(proto));
        if let Some(ca) = &target.ca {
            builder = builder.add_root_certificate_pem(ca);
        }
        if target.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Self {
            builder: Arc::new(builder),
        }
    }

    /// Connects once.
    async fn connect(&self) -> Result<Ws, duplex::Error> {
        Ok(self.builder.connect().await?.0)
    }
}

/// The connections [`open_all`] managed to open, with their opening times.
struct Opened {
    conns: Vec<Ws>,
    failed: u64,
    open_latency: hdrhistogram::Histogram<u64>,
}

/// Opens `n` connections, at most `ramp` attempts at a time, running `prepare` on each (a
/// protocol handshake, say) before counting it as open. Failures are counted and noted.
async fn open_all<F, Fut>(
    dialer: &Dialer,
    n: usize,
    ramp: u32,
    live: &Arc<Live>,
    notes: &Arc<Notes>,
    prepare: F,
) -> Opened
where
    F: Fn(Ws) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<Ws>> + Send,
{
    let permits = Arc::new(Semaphore::new(ramp as usize));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (dialer, permits, prepare) = (dialer.clone(), permits.clone(), prepare.clone());
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the ramp semaphore is never closed");
            let started = Instant::now();
            let ws = dialer.connect().await.context("cannot connect")?;
            let ws = prepare(ws).await?;
            anyhow::Ok((ws, started.elapsed()))
        });
    }
    let mut opened = Opened {
        conns: Vec::with_capacity(n),
        failed: 0,
        open_latency: report::histogram(),
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((ws, took))) => {
                opened.conns.push(ws);
                opened.open_latency.saturating_record(nanos(took));
                live.open.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                opened.failed += 1;
                live.errors.fetch_add(1, Ordering::Relaxed);
                notes.add(format!("{error:#}"));
            }
            Err(error) => {
                opened.failed += 1;
                notes.add(format!("connection task failed: {error}"));
            }
        }
    }
    opened
}

/// The time line of a run.
#[derive(Debug, Clone)]
struct Clock {
    /// Time zero: payload timestamps count nanoseconds from here.
    base: Instant,
    /// Unix time of `base`, in nanoseconds, for timestamps other processes may read.
    unix_base: u64,
    /// End of the warm-up: what is sent from here on is measured.
    measure_from: Instant,
    /// Nothing is sent from here on.
    stop_at: Instant,
}

impl Clock {
    fn start(warmup: Duration, duration: Duration) -> Self {
        let base = Instant::now();
        let unix_base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            base,
            unix_base,
            measure_from: base + warmup,
            stop_at: base + warmup + duration,
        }
    }

    /// Nanoseconds from `base` to `t` (0 before it).
    fn nanos(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.base))
    }

    /// The instant `ns` nanoseconds after `base`.
    fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }

    /// Unix time of `t` in nanoseconds, on this run's monotonic time line.
    fn unix_nanos(&self, t: Instant) -> u64 {
        self.unix_base.saturating_add(self.nanos(t))
    }

    /// Whether a message meant to be sent at `t` belongs to the measurement.
    fn measured(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.stop_at
    }

    /// The measured window that actually elapsed, given the last measured answer (a count
    /// cap may end a run early).
    fn elapsed(&self, last_ns: u64) -> Duration {
        let full = self.stop_at - self.measure_from;
        let last = self.instant(last_ns);
        if last_ns == 0 || last < self.measure_from {
            return Duration::ZERO;
        }
        full.min(last - self.measure_from)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Evenly spaced send times: one connection's share of a total rate.
#[derive(Debug, Clone)]
struct Pacer {
    next: Instant,
    interval: Duration,
}

impl Pacer {
    /// The schedule of connection `index` of `n` sharing `rate` messages per second from
    /// `start`; the connections are staggered so the total is smooth. `None` for an unbounded
    /// rate.
    fn new(start: Instant, rate: f64, n: usize, index: usize) -> Option<Self> {
        if !rate.is_finite() {
            return None;
        }
        let interval = Duration::from_secs_f64(n as f64 / rate);
        let offset = interval.mul_f64(index as f64 / n as f64);
        Some(Self {
            next: start + offset,
            interval,
        })
    }

    fn next(&self) -> Instant {
        self.next
    }

    fn advance(&mut self) {
        self.next += self.interval;
    }
}

/// A shared cap on a count (`--messages`, `--handshakes`).
#[derive(Debug)]
struct Budget(Option<AtomicU64>);

impl Budget {
    fn new(cap: Option<u64>) -> Self {
        Self(cap.map(AtomicU64::new))
    }

    /// Takes one unit; `false` once the cap is used up.
    fn take(&self) -> bool {
        match &self.0 {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// Counters the progress bar shows while a run goes on.
#[derive(Debug, Default)]
struct Live {
    open: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
}

/// The live progress bar on stderr; does nothing when stderr is not a terminal.
struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10))
        });
        Self { bar, ticker: None }
    }

    /// Shows the ramp-up: connections open out of `total`.
    fn connecting(&mut self, total: u64, live: &Arc<Live>) {
        let Some(bar) = self.bar.clone() else { return };
        self.stop_ticker();
        bar.set_style(style("{spinner} connecting [{bar:30}] {pos}/{len} {msg}"));
        bar.set_length(total);
        let live = live.clone();
        self.ticker = Some(tokio::spawn(async move {
            loop {
                bar.set_position(live.open.load(Ordering::Relaxed));
                let errors = live.errors.load(Ordering::Relaxed);
                bar.set_message(if errors > 0 {
                    format!("{errors} failed")
                } else {
                    String::new()
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    /// Shows the run: time elapsed out of warm-up + duration, and the live counters.
    fn running(&mut self, clock: &Clock, live: &Arc<Live>) {
        let Some(bar) = self.bar.clone() else { return };
        self.stop_ticker();
        bar.set_style(style("{spinner} {elapsed:>4} [{bar:30}] {msg}"));
        let total = clock.stop_at - clock.base;
        bar.set_length(total.as_millis() as u64);
        bar.reset_elapsed();
        let (live, base) = (live.clone(), clock.base);
        self.ticker = Some(tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let received = live.received.load(Ordering::Relaxed);
                let rate = (received - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, received);
                bar.set_position((now - base).as_millis() as u64);
                bar.set_message(format!(
                    "{} open, {} sent, {} received ({}/s), {} errors",
                    live.open.load(Ordering::Relaxed),
                    live.sent.load(Ordering::Relaxed),
                    received,
                    report::si(rate),
                    live.errors.load(Ordering::Relaxed),
                ));
            }
        }));
    }

    fn stop_ticker(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
    }

    /// Removes the bar before the report is printed.
    fn finish(&mut self) {
        self.stop_ticker();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("the progress templates are constant and valid")
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("25h").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert_eq!(parse_rate("max"), Ok(f64::INFINITY));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn loopback_addresses() {
        for ip in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(&ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(!is_loopback(&ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn pacer_spreads_a_total_rate_over_connections() {
        let start = Instant::now();
        // 1000/s over 4 connections: each sends every 4 ms, offset by 1 ms from the last.
        let mut second = Pacer::new(start, 1000.0, 4, 1).unwrap();
        assert_eq!(second.next() - start, Duration::from_millis(1));
        second.advance();
        assert_eq!(second.next() - start, Duration::from_millis(5));
        assert!(Pacer::new(start, f64::INFINITY, 4, 1).is_none());
    }

    #[test]
    fn budget_stops_at_the_cap() {
        let budget = Budget::new(Some(2));
        assert!(budget.take() && budget.take());
        assert!(!budget.take());
        assert!(Budget::new(None).take());
    }

    #[test]
    fn clock_measures_after_warmup() {
        let clock = Clock::start(Duration::from_secs(1), Duration::from_secs(2));
        assert!(!clock.measured(clock.base));
        assert!(clock.measured(clock.base + Duration::from_millis(1500)));
        assert!(!clock.measured(clock.stop_at));
        let ns = clock.nanos(clock.base + Duration::from_millis(2));
        assert_eq!(ns, 2_000_000);
        assert_eq!(clock.instant(ns), clock.base + Duration::from_millis(2));
        // A run capped after 1.5 s of measurement elapsed 1.5 s, not 2.
        assert_eq!(clock.elapsed(2_500_000_000), Duration::from_millis(1500));
        assert_eq!(clock.elapsed(9_000_000_000), Duration::from_secs(2));
        assert_eq!(clock.elapsed(0), Duration::ZERO);
    }
}
