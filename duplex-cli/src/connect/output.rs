//! Where `duplex connect` reports what happens: plain lines, JSON lines or the interactive
//! screen.
//!
//! One [`Output`] is shared by the task reading the connection, the loop writing to it and
//! (interactive) the line editor's thread; each report is written whole, so lines from
//! different tasks never interleave.

use super::binary::BinaryFormat;
use duplex::Message;
use rustyline::ExternalPrinter;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, info};

/// A close code for a close frame without a status code (RFC 6455 §7.4.1, never sent).
pub const NO_STATUS: u16 = 1005;
/// A close code for a connection that ended without a close handshake (RFC 6455 §7.4.1).
pub const ABNORMAL: u16 = 1006;

/// A printer that writes above the line being edited.
pub type Printer = Box<dyn ExternalPrinter + Send>;

/// How reports look.
enum Style {
    /// Pipe mode: received messages on stdout, one a line (none when `quiet`); everything
    /// else logged on stderr.
    Plain { quiet: bool },
    /// `--jsonl`: every event as one JSON object a line on stdout.
    Jsonl,
    /// A person at a terminal: marked lines printed above the prompt.
    Interactive(Mutex<Printer>),
}

/// The reporting end of `duplex connect`.
pub struct Output {
    style: Style,
    binary: BinaryFormat,
    timestamps: AtomicBool,
}

impl Output {
    /// Pipe mode; `--echo` (`quiet`) prints no messages, as they go back to the server.
    pub fn plain(binary: BinaryFormat, timestamps: bool, quiet: bool) -> Self {
        Self::new(Style::Plain { quiet }, binary, timestamps)
    }

    /// `--jsonl`.
    pub fn jsonl(binary: BinaryFormat, timestamps: bool) -> Self {
        Self::new(Style::Jsonl, binary, timestamps)
    }

    /// Interactive: everything goes through `printer`.
    pub fn interactive(printer: Printer, binary: BinaryFormat, timestamps: bool) -> Self {
        Self::new(Style::Interactive(Mutex::new(printer)), binary, timestamps)
    }

    fn new(style: Style, binary: BinaryFormat, timestamps: bool) -> Self {
        Self {
            style,
            binary,
            timestamps: AtomicBool::new(timestamps),
        }
    }

    /// The text form of binary payloads.
    pub fn binary_format(&self) -> BinaryFormat {
        self.binary
    }

    /// Turns timestamps on or off (`/timestamps`).
    pub fn set_timestamps(&self, on: bool) {
        self.timestamps.store(on, Ordering::Relaxed);
    }

    /// Whether reports carry timestamps.
    pub fn timestamps(&self) -> bool {
        self.timestamps.load(Ordering::Relaxed)
    }

    /// The opening handshake succeeded.
    pub fn open(&self, url: &str, protocol: Option<&str>, extensions: Option<&str>) {
        match &self.style {
            Style::Plain { .. } => info!(url, protocol, extensions, "connected"),
            Style::Jsonl => self.json(json!({
                "event": "open", "url": url, "protocol": protocol, "extensions": extensions,
            })),
            Style::Interactive(_) => {
                let mut text = format!("* connected to {url}");
                if let Some(protocol) = protocol {
                    text += &format!(", subprotocol {protocol}");
                }
                if let Some(extensions) = extensions {
                    text += &format!(", extensions: {extensions}");
                }
                self.screen(&text);
            }
        }
    }

    /// A message arrived.
    ///
    /// # Errors
    /// Writing to stdout failed (say, the reader of a pipe went away).
    pub fn message(&self, message: &Message) -> io::Result<()> {
        match &self.style {
            Style::Plain { quiet: true } => Ok(()),
            Style::Plain { quiet: false } => {
                let line = match message {
                    Message::Text(text) => text.to_string(),
                    Message::Binary(data) => self.binary.encode(data),
                };
                self.stdout(&line)
            }
            Style::Jsonl => {
                let event = match message {
                    Message::Text(text) => {
                        json!({"event": "message", "type": "text", "data": text.as_str()})
                    }
                    Message::Binary(data) => json!({
                        "event": "message", "type": "binary",
                        "encoding": self.binary.name(), "data": self.binary.encode(data),
                    }),
                };
                self.stdout(&self.with_time(event).to_string())
            }
            Style::Interactive(_) => {
                let text = match message {
                    Message::Text(text) => format!("< {}", printable(text)),
                    Message::Binary(data) => {
                        format!("< [binary {} B] {}", data.len(), self.binary.encode(data))
                    }
                };
                self.screen(&text);
                Ok(())
            }
        }
    }

    /// The server sent a ping (it was answered already).
    pub fn ping(&self, payload: &[u8]) {
        match &self.style {
            Style::Plain { .. } => debug!(payload = %self.binary.encode(payload), "ping"),
            Style::Jsonl => self.json(json!({
                "event": "ping", "encoding": self.binary.name(), "data": self.binary.encode(payload),
            })),
            Style::Interactive(_) => {
                self.screen(&format!("* ping from the server {}", self.payload(payload)));
            }
        }
    }

    /// A pong arrived; `rtt` when it answers a ping of ours, `keepalive` when that ping was
    /// sent by `--ping-interval`.
    pub fn pong(&self, payload: &[u8], rtt: Option<Duration>, keepalive: bool) {
        // Microsecond resolution: finer digits are noise.
        let rtt_ms = rtt.map(|rtt| rtt.as_micros() as f64 / 1e3);
        match &self.style {
            Style::Plain { .. } => match rtt_ms {
                Some(rtt_ms) => info!(rtt_ms = format!("{rtt_ms:.3}"), "pong"),
                None => debug!(payload = %self.binary.encode(payload), "unsolicited pong"),
            },
            Style::Jsonl => {
                let mut event = json!({
                    "event": "pong", "encoding": self.binary.name(), "data": self.binary.encode(payload),
                });
                if let Some(rtt_ms) = rtt_ms {
                    event["rtt_ms"] = json!(rtt_ms);
                }
                self.json(event);
            }
            Style::Interactive(_) => {
                let mut text = String::from("* pong");
                if !keepalive {
                    text += &format!(" {}", self.payload(payload));
                }
                if let Some(rtt_ms) = rtt_ms {
                    text += &format!(", round trip {rtt_ms:.2} ms");
                }
                self.screen(&text);
            }
        }
    }

    /// The connection ended: `code` from the server's close frame, [`NO_STATUS`] when it
    /// had none, [`ABNORMAL`] without a close handshake (`clean` is then false).
    pub fn close(&self, code: u16, reason: &str, clean: bool) {
        match &self.style {
            Style::Plain { .. } => info!(code, reason, clean, "closed"),
            Style::Jsonl => self.json(json!({
                "event": "close", "code": code, "reason": reason, "clean": clean,
            })),
            Style::Interactive(_) => {
                let text = if clean {
                    format!("* closed: {code} {reason:?}")
                } else {
                    format!("* connection lost ({code})")
                };
                self.screen(&text);
            }
        }
    }

    /// An error that ends a connection, or a connection attempt.
    pub fn error(&self, error: &anyhow::Error) {
        match &self.style {
            // main prints the error that ends the command; a reconnect says why.
            Style::Plain { .. } => debug!("{error:#}"),
            Style::Jsonl => self.json(json!({"event": "error", "message": format!("{error:#}")})),
            Style::Interactive(_) => self.screen(&format!("! {error:#}")),
        }
    }

    /// `--reconnect`: the next attempt starts after `delay`; `why` the last one ended.
    pub fn reconnecting(&self, attempt: u32, delay: Duration, why: &str) {
        let delay_ms = delay.as_millis() as u64;
        match &self.style {
            Style::Plain { .. } => info!(attempt, delay_ms, after = why, "reconnecting"),
            Style::Jsonl => self.json(json!({
                "event": "reconnecting", "attempt": attempt, "delay_ms": delay_ms,
            })),
            Style::Interactive(_) => self.screen(&format!(
                "* reconnecting in {:.1} s (attempt {attempt})",
                delay.as_secs_f64()
            )),
        }
    }

    /// Interactive feedback (command results, help); nothing in the other styles.
    pub fn note(&self, text: &str) {
        if let Style::Interactive(_) = &self.style {
            self.screen(text);
        }
    }

    /// A payload as quoted text when it is UTF-8, else in the binary format.
    fn payload(&self, payload: &[u8]) -> String {
        match std::str::from_utf8(payload) {
            Ok(text) => format!("{text:?}"),
            Err(_) => format!("[{}] {}", self.binary.name(), self.binary.encode(payload)),
        }
    }

    fn json(&self, event: Value) {
        // Events other than messages are best effort: a failed stdout shows up on the next
        // message.
        let _ = self.stdout(&self.with_time(event).to_string());
    }

    fn with_time(&self, mut event: Value) -> Value {
        if self.timestamps() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            event["time"] = json!((now.as_millis() as f64) / 1e3);
        }
        event
    }

    fn stdout(&self, line: &str) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        if self.timestamps() && matches!(self.style, Style::Plain { .. }) {
            write!(stdout, "{} ", clock(SystemTime::now()))?;
        }
        stdout.write_all(line.as_bytes())?;
        stdout.write_all(b"\n")?;
        stdout.flush()
    }

    fn screen(&self, text: &str) {
        let Style::Interactive(printer) = &self.style else {
            return;
        };
        let mut line = String::with_capacity(text.len() + 16);
        if self.timestamps() {
            line += &clock(SystemTime::now());
            line.push(' ');
        }
        line += text;
        // Outside a prompt the printer writes as is; inside one it would add the newline.
        line.push('\n');
        let mut printer = printer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = printer.print(line);
    }
}

/// `HH:MM:SS.mmm`, UTC.
pub fn clock(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis()
    )
}

/// Text with control characters (other than newline and tab) escaped, so a message cannot
/// move the cursor or recolour the terminal.
fn printable(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_utc_time_of_day() {
        let t =
            UNIX_EPOCH + Duration::from_millis((86_400 * 3 + 3600 * 13 + 60 * 4 + 5) * 1000 + 67);
        assert_eq!(clock(t), "13:04:05.067");
    }

    #[test]
    fn printable_escapes_terminal_controls() {
        assert_eq!(printable("plain\ttext\nok"), "plain\ttext\nok");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
    }
}
