//! The report of a run: latency histograms, error counts, the text and JSON forms, and the
//! SVG percentile plot.
//!
//! The JSON form is one object (field names are stable; absent sections are omitted):
//!
//! ```text
//! {"mode": "echo", "url": "...", "ok": true,
//!  "settings": {"connections": 100, "duration_s": 10.0, "warmup_s": 0.0, "deflate": true,
//!               "size": 64, "binary": false, "window": 1, "rate": null, "messages": null, ...},
//!  "elapsed_s": 10.0,
//!  "connections": {"requested": 100, "opened": 100, "failed": 0, "open_us": {SUMMARY}},
//!  "sent": 123, "received": 123, "expected": 123, "bytes_sent": 7872, "bytes_received": 7872,
//!  "throughput": {"messages_per_s": 12.3, "bytes_per_s": 787.2},
//!  "latency_us": {SUMMARY} | null, "latency_from": "send time",
//!  "errors": {"total": 0, "connect": 0, "connection": 0, "corrupt": 0, "missing": 0,
//!             "duplicate": 0, "reordered": 0, "unclean_close": 0, "refused": 0},
//!  "handshakes": {...} (connect), "memory": {...} (idle), "notes": ["first errors", ...]}
//! SUMMARY = {"count": n, "min": µs, "mean": µs, "p50": µs, "p90": µs, "p99": µs,
//!            "p99_9": µs, "max": µs}
//! ```

use super::Output;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::debug;

/// Latencies are recorded in nanoseconds, from 1 ns to an hour, to three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant bounds are valid")
}

/// Histogram shards: connection tasks record into one of these, chosen by their index, so
/// thousands of connections neither share one lock nor hold a histogram each.
const SHARDS: usize = 16;

/// Values a [`Recorder`] buffers before taking its shard's lock.
const BATCH: usize = 256;

/// The latencies of a whole run, recorded from many tasks.
#[derive(Debug)]
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    /// Empty shards.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
        })
    }

    /// A recorder for the task with this index.
    pub fn recorder(self: &Arc<Self>, index: usize) -> Recorder {
        Recorder {
            latencies: self.clone(),
            shard: index % SHARDS,
            pending: Vec::new(),
        }
    }

    /// Everything recorded so far (recorders flush when dropped).
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.add(&*shard)
                .expect("shards have the same bounds as the total");
        }
        all
    }
}

/// Buffers one task's latencies and adds them to its shard in batches.
#[derive(Debug)]
pub struct Recorder {
    latencies: Arc<Latencies>,
    shard: usize,
    pending: Vec<u64>,
}

impl Recorder {
    /// Records one latency (batched).
    pub fn record(&mut self, latency: Duration) {
        self.pending.push(super::nanos(latency).max(1));
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    /// Adds what is buffered to the shard.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut shard = self.latencies.shards[self.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for value in self.pending.drain(..) {
            shard.saturating_record(value);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The first few error descriptions of a run, for the report.
#[derive(Debug, Default)]
pub struct Notes {
    inner: Mutex<(Vec<String>, u64)>,
}

/// Distinct notes kept; further notes (repeats of those not kept included) are only counted.
const NOTES_KEPT: usize = 5;

impl Notes {
    /// Notes an error (and logs it at debug level).
    pub fn add(&self, note: String) {
        debug!(%note, "bench error");
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.0.contains(&note) {
            return;
        }
        if inner.0.len() < NOTES_KEPT {
            inner.0.push(note);
        } else {
            inner.1 += 1;
        }
    }

    /// The notes kept, and how many more there were.
    pub fn list(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut list = inner.0.clone();
        if inner.1 > 0 {
            list.push(format!("... and {} more", inner.1));
        }
        list
    }
}

/// What went wrong, by kind. Any non-zero count fails the run.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Errors {
    /// All of the below.
    pub total: u64,
    /// Connections that could not be opened (or whose protocol handshake was refused).
    pub connect: u64,
    /// Connections that failed, or were closed by the server, during the run.
    pub connection: u64,
    /// Messages that did not match what was sent, byte for byte.
    pub corrupt: u64,
    /// Messages never answered or delivered (gaps).
    pub missing: u64,
    /// Messages received more than once.
    pub duplicate: u64,
    /// Messages received before an earlier one.
    pub reordered: u64,
    /// Our close handshakes that did not complete.
    pub unclean_close: u64,
    /// Commands the server answered with an error (fan-out publish and subscribe).
    pub refused: u64,
}

impl Errors {
    /// Adds `other`'s counts and updates `total`.
    pub fn add(&mut self, other: &Errors) {
        self.connect += other.connect;
        self.connection += other.connection;
        self.corrupt += other.corrupt;
        self.missing += other.missing;
        self.duplicate += other.duplicate;
        self.reordered += other.reordered;
        self.unclean_close += other.unclean_close;
        self.refused += other.refused;
        self.total = self.sum();
    }

    fn sum(&self) -> u64 {
        self.connect
            + self.connection
            + self.corrupt
            + self.missing
            + self.duplicate
            + self.reordered
            + self.unclean_close
            + self.refused
    }

    fn describe(&self) -> String {
        let kinds = [
            ("failed to connect", self.connect),
            ("connection errors", self.connection),
            ("corrupt", self.corrupt),
            ("missing", self.missing),
            ("duplicate", self.duplicate),
            ("reordered", self.reordered),
            ("unclean closes", self.unclean_close),
            ("refused", self.refused),
        ];
        let named: Vec<String> = kinds
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        if named.is_empty() {
            "none".to_owned()
        } else {
            named.join(", ")
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Average.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// `None` for an empty histogram.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Some(Self {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / 1e3,
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }
}

/// The options the run was made with.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    /// -c: connections (echo, idle), workers (connect), receivers (fanout, rooms).
    pub connections: u64,
    /// --duration, seconds.
    pub duration_s: f64,
    /// --warmup, seconds.
    pub warmup_s: f64,
    /// Whether permessage-deflate was offered.
    pub deflate: bool,
    /// --size, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// --binary (echo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<bool>,
    /// --window (echo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// Messages (or handshakes) per second in total; `null` for as fast as possible.
    pub rate: Option<f64>,
    /// The count cap; `null` for none.
    pub messages: Option<u64>,
    /// The channel (fanout) or `rooms:ROOM` (rooms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// `duplex.v1`, or the HTTP API's base URL (fanout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
}

/// Connection counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    /// Connections asked for (connect: handshakes attempted).
    pub requested: u64,
    /// Connections opened (connect: handshakes completed).
    pub opened: u64,
    /// Connections that failed to open.
    pub failed: u64,
    /// Time to open one connection (TCP, TLS, upgrade, protocol handshake), µs.
    pub open_us: Option<Summary>,
}

/// Measured counts per second.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// Messages (deliveries) received per second.
    pub messages_per_s: f64,
    /// Their bytes per second.
    pub bytes_per_s: f64,
}

/// `connect` mode's counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Handshakes {
    /// Connections tried.
    pub attempted: u64,
    /// Opening handshakes completed.
    pub completed: u64,
    /// Close handshakes completed with 1000 from the server.
    pub clean_closes: u64,
    /// Handshakes completed per second in the measured window.
    pub per_s: f64,
}

/// `idle` mode's memory figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// The server's process, with --server-pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<MemoryDelta>,
    /// This process.
    pub client: MemoryDelta,
}

/// Resident memory before and after opening the connections.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryDelta {
    /// The process (absent for this one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Before the first connection opened.
    pub before: Rss,
    /// Once all were open (and half a second later).
    pub after: Rss,
    /// (after − before) / connections opened, in bytes; may be negative.
    pub per_connection_bytes: RssDelta,
}

/// `VmRSS` and `RssAnon` from /proc/PID/status, KiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rss {
    /// `VmRSS`.
    pub vm_rss_kib: u64,
    /// `RssAnon` (0 where the kernel does not report it).
    pub rss_anon_kib: u64,
}

/// Per-connection growth of [`Rss`], bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RssDelta {
    /// From `VmRSS`.
    pub vm_rss: f64,
    /// From `RssAnon`.
    pub rss_anon: f64,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// echo, connect, idle, fanout or rooms.
    pub mode: &'static str,
    /// The URL connected to.
    pub url: String,
    /// Whether every check passed: no error of any kind and everything expected received.
    pub ok: bool,
    /// The options of the run.
    pub settings: Settings,
    /// The measured window that elapsed, seconds.
    pub elapsed_s: f64,
    /// Connection counts.
    pub connections: Connections,
    /// Messages sent (echo) or publications made (fanout, rooms), warm-up included.
    pub sent: u64,
    /// Messages received that checked out (echoes, or deliveries summed over subscribers).
    pub received: u64,
    /// What `received` should be.
    pub expected: u64,
    /// Bytes of the messages sent.
    pub bytes_sent: u64,
    /// Bytes of the messages received.
    pub bytes_received: u64,
    /// Received messages (deliveries) per second in the measured window.
    pub throughput: Throughput,
    /// Round-trip (echo), handshake (connect), connection-opening (idle) or
    /// publish-to-deliver (fanout, rooms) latency; `null` without samples.
    pub latency_us: Option<Summary>,
    /// Where latency counts from: "send time", "intended send time" (with --rate, corrected
    /// for coordinated omission) or "handshake start".
    pub latency_from: &'static str,
    /// What went wrong.
    pub errors: Errors,
    /// connect mode's counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshakes: Option<Handshakes>,
    /// idle mode's memory figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// The first few error descriptions.
    pub notes: Vec<String>,
}

impl Report {
    /// Sets `ok` from the counts: no errors, every connection opened, everything expected
    /// received.
    pub fn judge(&mut self) {
        self.errors.total = self.errors.sum();
        self.ok = self.errors.total == 0
            && self.connections.opened == self.connections.requested
            && self.received == self.expected;
    }

    fn why_not_ok(&self) -> String {
        let mut why = Vec::new();
        if self.errors.total > 0 {
            why.push(self.errors.describe());
        }
        if self.received != self.expected {
            why.push(format!(
                "received {} of {} expected",
                self.received, self.expected
            ));
        }
        if self.connections.opened != self.connections.requested && self.errors.connect == 0 {
            why.push(format!(
                "opened {} of {} connections",
                self.connections.opened, self.connections.requested
            ));
        }
        why.join("; ")
    }

    /// The text form.
    pub fn text(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(out, "duplex bench {} {}", self.mode, self.url);
        let mut setting = vec![format!("{} connections", s.connections)];
        if let Some(size) = s.size {
            let kind = match s.binary {
                Some(true) => " binary",
                Some(false) => " text",
                None => "",
            };
            setting.push(format!("{size} B{kind}"));
        }
        if let Some(window) = s.window {
            setting.push(format!("window {window}"));
        }
        if let Some(channel) = &s.channel {
            setting.push(channel.clone());
        }
        if let Some(publisher) = &s.publisher {
            setting.push(format!("via {publisher}"));
        }
        setting.push(match s.rate {
            Some(rate) => format!("rate {}/s", si(rate)),
            None => "rate unbounded".to_owned(),
        });
        if let Some(cap) = s.messages {
            setting.push(format!("cap {cap}"));
        }
        setting.push(if s.deflate { "deflate" } else { "no deflate" }.to_owned());
        setting.push(format!(
            "{} (+{} warm-up)",
            secs(s.duration_s),
            secs(s.warmup_s)
        ));
        let _ = writeln!(out, "  settings     {}", setting.join(", "));
        let c = &self.connections;
        let _ = write!(
            out,
            "  connections  {} opened, {} failed",
            c.opened, c.failed
        );
        if let Some(open) = &c.open_us {
            let _ = write!(
                out,
                "; open p50 {}, p99 {}, max {}",
                us(open.p50),
                us(open.p99),
                us(open.max)
            );
        }
        out.push('\n');
        if let Some(h) = &self.handshakes {
            let _ = writeln!(
                out,
                "  handshakes   {} attempted, {} completed, {} clean closes; {}/s",
                h.attempted,
                h.completed,
                h.clean_closes,
                si(h.per_s)
            );
        } else if self.memory.is_none() {
            let _ = writeln!(
                out,
                "  messages     {} sent, {} received of {} expected",
                self.sent, self.received, self.expected
            );
            let _ = writeln!(
                out,
                "  throughput   {} msg/s, {}/s over {}",
                si(self.throughput.messages_per_s),
                bytes(self.throughput.bytes_per_s),
                secs(self.elapsed_s)
            );
        }
        if let Some(memory) = &self.memory {
            if let Some(server) = &memory.server {
                let _ = writeln!(out, "  server rss   {}", memory_line(server));
            }
            let _ = writeln!(out, "  client rss   {}", memory_line(&memory.client));
        }
        match &self.latency_us {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "  latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n               \
                     (min {}, mean {}, n={}, from the {})",
                    us(l.p50),
                    us(l.p90),
                    us(l.p99),
                    us(l.p99_9),
                    us(l.max),
                    us(l.min),
                    us(l.mean),
                    l.count,
                    self.latency_from
                );
            }
            None if self.memory.is_none() => {
                let _ = writeln!(out, "  latency      no measured samples");
            }
            None => {}
        }
        let _ = writeln!(out, "  errors       {}", self.errors.describe());
        for note in &self.notes {
            let _ = writeln!(out, "               {note}");
        }
        if self.ok {
            let _ = writeln!(out, "  result       OK");
        } else {
            let _ = writeln!(out, "  result       FAILED: {}", self.why_not_ok());
        }
        out
    }
}

fn memory_line(m: &MemoryDelta) -> String {
    format!(
        "{} → {} (RssAnon {} → {}); per connection {} (RssAnon {})",
        bytes(m.before.vm_rss_kib as f64 * 1024.0),
        bytes(m.after.vm_rss_kib as f64 * 1024.0),
        bytes(m.before.rss_anon_kib as f64 * 1024.0),
        bytes(m.after.rss_anon_kib as f64 * 1024.0),
        bytes(m.per_connection_bytes.vm_rss),
        bytes(m.per_connection_bytes.rss_anon),
    )
}

/// Prints the report (text, or JSON with --json), draws the plot if asked, and turns a failed
/// run into an error.
pub fn finish(report: &Report, latencies: &Histogram<u64>, output: &Output) -> anyhow::Result<()> {
    if output.json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{}", report.text());
    }
    if let Some(path) = &output.plot {
        let title = format!("duplex bench {} {}", report.mode, report.url);
        std::fs::write(path, svg(latencies, &title, report.latency_from))
            .map_err(|e| anyhow::anyhow!("cannot write the plot to {}: {e}", path.display()))?;
    }
    if !report.ok {
        anyhow::bail!("bench {} failed: {}", report.mode, report.why_not_ok());
    }
    Ok(())
}

/// `1234567.0` → `1.23M`.
pub fn si(x: f64) -> String {
    if !x.is_finite() {
        return "-".to_owned();
    }
    match x.abs() {
        a if a >= 1e9 => format!("{:.2}G", x / 1e9),
        a if a >= 1e6 => format!("{:.2}M", x / 1e6),
        a if a >= 1e4 => format!("{:.1}k", x / 1e3),
        a if a >= 100.0 => format!("{x:.0}"),
        _ => format!("{x:.1}"),
    }
}

/// Bytes with a binary unit.
fn bytes(x: f64) -> String {
    match x.abs() {
        a if a >= (1u64 << 30) as f64 => format!("{:.2} GiB", x / (1u64 << 30) as f64),
        a if a >= (1 << 20) as f64 => format!("{:.2} MiB", x / (1 << 20) as f64),
        a if a >= (1 << 10) as f64 => format!("{:.1} KiB", x / 1024.0),
        _ => format!("{x:.0} B"),
    }
}

/// Microseconds in the unit that fits.
fn us(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.2} s", x / 1e6),
        x if x >= 1e3 => format!("{:.2} ms", x / 1e3),
        x if x >= 10.0 => format!("{x:.0} µs"),
        x => format!("{x:.1} µs"),
    }
}

fn secs(x: f64) -> String {
    if x == x.trunc() {
        format!("{x:.0} s")
    } else {
        format!("{x:.2} s")
    }
}

// The plot: latency (y, linear) by percentile (x, log scale of 1/(1-q), as HdrHistogram's
// own plotter draws it, so the tail gets as much room as the body).
const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 60.0;

/// Draws the percentile curve of `h` as a standalone SVG document.
pub fn svg(h: &Histogram<u64>, title: &str, latency_from: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        out,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    let Some(summary) = Summary::of(h) else {
        let _ = writeln!(
            out,
            "<text x=\"{LEFT}\" y=\"{}\">no latency samples</text>\n</svg>",
            HEIGHT / 2.0
        );
        return out;
    };
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"42\" fill=\"#555\">p50 {}  p99 {}  p99.9 {}  max {}  \
         (n={}, latency from the {})</text>",
        esc(&us(summary.p50)),
        esc(&us(summary.p99)),
        esc(&us(summary.p99_9)),
        esc(&us(summary.max)),
        summary.count,
        esc(latency_from)
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    // x: decades of 1/(1-q) up to the resolution the sample count gives (at least 99%).
    let decades = (h.len() as f64).log10().ceil().clamp(2.0, 6.0);
    let x_of = |q: f64| {
        let d = if q >= 1.0 {
            decades
        } else {
            (1.0 / (1.0 - q)).log10().min(decades)
        };
        LEFT + plot_w * d / decades
    };
    let (y_max, y_step) = nice_axis(summary.max);
    let y_of = |v_us: f64| TOP + plot_h * (1.0 - v_us / y_max);
    // Grid and labels.
    for decade in 0..=(decades as u32) {
        let x = LEFT + plot_w * f64::from(decade) / decades;
        let label = match decade {
            0 => "0%".to_owned(),
            d => format!("{}%", 100.0 - 100.0 / 10f64.powi(d as i32)),
        };
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let mut tick = 0.0;
    while tick <= y_max * 1.0001 {
        let y = y_of(tick);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            if tick == 0.0 {
                "0".to_owned()
            } else {
                esc(&us(tick))
            }
        );
        tick += y_step;
    }
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w:.1}\" height=\"{plot_h:.1}\" \
         fill=\"none\" stroke=\"#888\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>\n\
         <text transform=\"translate(20 {:.1}) rotate(-90)\" text-anchor=\"middle\">latency</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0,
        TOP + plot_h / 2.0
    );
    // The curve.
    let mut points = String::new();
    for step in h.iter_quantiles(5) {
        let q = step.quantile_iterated_to();
        let v = h.highest_equivalent(step.value_iterated_to()) as f64 / 1e3;
        let _ = write!(points, "{:.1},{:.1} ", x_of(q), y_of(v.min(y_max)));
    }
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>",
        points.trim_end()
    );
    out.push_str("</svg>\n");
    out
}

/// An axis maximum at or above `max` and a round step (1, 2 or 5 × 10^k) giving 4–10 ticks.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_in_microseconds() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let s = Summary::of(&h).unwrap();
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() < 1.0, "{}", s.p50);
        assert!((s.p99 - 990.0).abs() < 1.0, "{}", s.p99);
        assert!((s.max - 1000.0).abs() < 1.0, "{}", s.max);
        assert!(Summary::of(&histogram()).is_none());
    }

    #[test]
    fn recorders_merge_across_shards() {
        let latencies = Latencies::new();
        for task in 0..40 {
            let mut r = latencies.recorder(task);
            for _ in 0..300 {
                r.record(Duration::from_micros(task as u64 + 1));
            }
        }
        assert_eq!(latencies.merged().len(), 40 * 300);
    }

    #[test]
    fn errors_add_up_and_fail_the_report() {
        let mut report = Report {
            connections: Connections {
                requested: 2,
                opened: 2,
                ..Default::default()
            },
            sent: 10,
            received: 10,
            expected: 10,
            ..Default::default()
        };
        report.judge();
        assert!(report.ok);
        report.errors.add(&Errors {
            duplicate: 1,
            missing: 2,
            ..Default::default()
        });
        report.judge();
        assert!(!report.ok);
        assert_eq!(report.errors.total, 3);
        assert_eq!(report.why_not_ok(), "2 missing, 1 duplicate");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["errors"]["total"], 3);
        assert_eq!(json["ok"], false);
    }

    #[test]
    fn notes_keep_the_first_few_distinct() {
        let notes = Notes::default();
        for i in 0..9 {
            notes.add(format!("error {i}"));
            notes.add(format!("error {i}"));
        }
        let list = notes.list();
        assert_eq!(list.len(), NOTES_KEPT + 1);
        assert_eq!(list.last().unwrap(), "... and 8 more"); // the 4 not kept, twice each
    }

    #[test]
    fn axis_is_round() {
        assert_eq!(nice_axis(930.0), (1000.0, 200.0));
        assert_eq!(nice_axis(41.0), (50.0, 10.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
    }

    #[test]
    fn plot_is_an_svg_with_a_curve() {
        let mut h = histogram();
        for v in 1..10_000u64 {
            h.record(v * 100).unwrap();
        }
        let svg = svg(&h, "a <title> & more", "send time");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;title&gt; &amp; more"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("99.99%"));
        let empty = super::svg(&histogram(), "t", "send time");
        assert!(empty.contains("no latency samples"));
    }

    #[test]
    fn units() {
        assert_eq!(us(3.25), "3.2 µs");
        assert_eq!(us(250.0), "250 µs");
        assert_eq!(us(1500.0), "1.50 ms");
        assert_eq!(si(123_456.0), "123.5k");
        assert_eq!(bytes(2048.0), "2.0 KiB");
    }
}
