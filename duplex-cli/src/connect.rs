//! `duplex connect`: a WebSocket client for people (interactive, at a terminal) and for
//! scripts (pipe mode, `--jsonl`).
//!
//! * [`input`]: stdin lines, or the line editor and its slash commands;
//! * [`session`]: one connection — reading, sending, echoing, pinging, closing;
//! * [`output`]: plain lines, JSON lines, or lines printed above the prompt;
//! * [`binary`]: hex and base64.
//!
//! This file holds the options, the choice of mode and the reconnect loop.

mod binary;
mod input;
mod output;
mod session;

use crate::size::parse_size;
use anyhow::Context as _;
use binary::BinaryFormat;
use duplex::http::{HeaderName, HeaderValue};
use duplex::{ClientBuilder, Config, DeflateConfig, MaybeTlsStream, WebSocket, WebSocketConfig};
use input::Input;
use output::Output;
use session::{Ending, Settings};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// First wait before reconnecting; doubled after each failed attempt.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between reconnect attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long our close frame may wait for the server's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `--timeout` or `--ping-interval` accepted.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

const AFTER_HELP: &str = "\
MODES:
  Interactive when stdin and stdout are terminals (and neither --jsonl nor --echo is given):
  line editing and history; received messages are printed above the line being typed,
  marked `<` (sent lines stay on screen after `> `), other events marked `*`, problems `!`.
  Commands: /ping [data], /close [code [reason]], /binary <data>, /file <path>,
  /timestamps [on|off], /quit, /help; `//text` sends `/text`.
  Pipe mode otherwise: each stdin line is sent as a text message (with --send-binary, as a
  binary message written in the --binary-format); each received message is written to
  stdout as one line (binary in the --binary-format, hex by default); logs go to stderr.
  At end of input the client closes with 1000 and exits once the server answered.
  --jsonl: stdin as in pipe mode; stdout gets one JSON object per event: open, message,
  ping, pong (with rtt_ms when it answers our ping), close (code, reason, clean; 1005 when
  the server's close frame had no code, 1006 when the connection ended without a close
  handshake), error, reconnecting.

EXIT STATUS:
  0  the connection closed cleanly: we closed (end of input, /quit, /close,
     --max-messages reached) or the server closed (whatever its code) and the close
     handshake completed; with --reconnect, only when we closed
  1  an error: connect, TLS, handshake, protocol, IO, a --timeout, a close handshake that
     did not complete, an unusable stdin line, or --reconnect-limit attempts failed
  2  invalid command line";

/// Options of `duplex connect`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ConnectArgs {
    /// ws:// or wss:// URL.
    url: String,
    /// Send every received message back unchanged (text as text, binary as binary) until
    /// the server closes; stdin is not read.
    #[arg(long)]
    echo: bool,
    /// Report every event as one JSON object per line on stdout (see MODES).
    #[arg(long)]
    jsonl: bool,
    /// How binary payloads are written, on output and for --send-binary and /binary.
    #[arg(long, value_enum, default_value = "hex", value_name = "FORMAT")]
    binary_format: BinaryFormat,
    /// Pipe mode: stdin lines are binary payloads in the --binary-format, sent as binary
    /// messages (a line that does not decode closes the connection and exits 1).
    #[arg(long)]
    send_binary: bool,
    /// Prefix printed lines with the UTC time (HH:MM:SS.mmm); with --jsonl, add "time"
    /// (Unix seconds). Interactive: toggle with /timestamps.
    #[arg(long)]
    timestamps: bool,
    /// Extra request header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Offer this subprotocol; repeatable, most preferred first.
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Send this Origin header.
    #[arg(long, value_name = "ORIGIN", value_parser = parse_header_value)]
    origin: Option<HeaderValue>,
    /// Send `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DUPLEX_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Also trust the CA certificates in this PEM file (wss://).
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (wss://). Only for testing: anyone in between can read
    /// and change the traffic.
    #[arg(long)]
    insecure: bool,
    /// Do not offer permessage-deflate.
    #[arg(long, conflicts_with = "deflate_window_bits")]
    no_deflate: bool,
    /// permessage-deflate: ask for LZ77 windows of 2^BITS bytes (8..=15) both ways
    /// (server_max_window_bits and client_max_window_bits). Default 15.
    #[arg(long, value_name = "BITS", value_parser = clap::value_parser!(u8).range(8..=15))]
    deflate_window_bits: Option<u8>,
    /// Send a ping this often and print each round-trip time (500ms, 5s, 1m).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    ping_interval: Option<Duration>,
    /// Close with 1000 and exit 0 after receiving N messages (over all reconnects).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_messages: Option<u64>,
    /// Give up (exit 1) when connecting takes longer (TCP, TLS and the opening handshake,
    /// each), or when nothing at all arrives from the server for this long (pongs count;
    /// pair it with --ping-interval to check a quiet server is alive). Default: 10 s to
    /// connect, no limit once connected.
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// When the connection fails or the server closes it, connect again, waiting 0.5 s,
    /// then twice as long after each failed attempt up to 30 s (back to 0.5 s once a
    /// connection opens). Input that arrives meanwhile waits.
    #[arg(long)]
    reconnect: bool,
    /// With --reconnect: give up (exit 1) once this many reconnect attempts in a row have
    /// failed. Default: never.
    #[arg(long, value_name = "N", requires = "reconnect")]
    reconnect_limit: Option<u32>,
    /// Largest message and frame accepted.
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    max_message_size: usize,
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not `Name: value`"))?;
    let name = HeaderName::try_from(name.trim()).map_err(|e| format!("{name:?}: {e}"))?;
    let value = parse_header_value(value)?;
    Ok((name, value))
}

fn parse_header_value(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::try_from(value.trim()).map_err(|e| format!("{value:?}: {e}"))
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
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m, h)")),
    };
    let duration =
        Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))?;
    if duration.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is longer than 24h"));
    }
    Ok(duration)
}

/// The client options of every connection attempt.
fn client(args: &ConnectArgs) -> anyhow::Result<ClientBuilder> {
    let deflate = (!args.no_deflate).then(|| {
        let bits = args.deflate_window_bits.unwrap_or(15);
        DeflateConfig::default()
            .with_server_max_window_bits(bits)
            .with_client_max_window_bits(bits)
    });
    let proto = Config::default()
        .with_max_message_size(args.max_message_size)
        .with_max_frame_size(args.max_message_size)
        .with_deflate(deflate);
    let config = WebSocketConfig::default()
        .with_proto(proto)
        .with_close_timeout(CLOSE_TIMEOUT)
        .with_idle_timeout(args.timeout);
    config.validate().context("invalid options")?;
    let mut builder = ClientBuilder::new(&args.url)
        .config(config)
        .protocols(args.subprotocols.iter().cloned());
    if let Some(timeout) = args.timeout {
        builder = builder.connect_timeout(timeout).handshake_timeout(timeout);
    }
    for (name, value) in &args.headers {
        builder = builder.header(name.clone(), value.clone());
    }
    if let Some(origin) = &args.origin {
        builder = builder.origin(origin.clone());
    }
    if let Some(token) = &args.token {
        let mut value = HeaderValue::try_from(format!("Bearer {}", token.trim()))
            .context("--token is not usable in a header")?;
        value.set_sensitive(true);
        builder = builder.header(duplex::http::header::AUTHORIZATION, value);
    }
    if let Some(ca) = &args.ca {
        builder = builder.add_root_certificate_pem(ca);
    }
    if args.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    Ok(builder)
}

/// Connects (again, with `--reconnect`) and runs each connection until one ends for good.
pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let builder = client(&args)?;
    let interactive = !args.echo
        && !args.jsonl
        && std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal();
    // `tx` lives as long as this function, so in --echo mode the input never ends.
    let (tx, mut inputs) = mpsc::channel(input::QUEUE);
    let mut terminal = None;
    let output = if interactive {
        let (editor, printer) = input::Editor::new().context("setting up the terminal")?;
        terminal = Some(Terminal::save());
        let output = Arc::new(Output::interactive(
            printer,
            args.binary_format,
            args.timestamps,
        ));
        editor.spawn(Arc::clone(&output), tx.clone());
        output
    } else {
        if !args.echo {
            input::pipe(tx.clone(), args.send_binary.then_some(args.binary_format));
        }
        Arc::new(if args.jsonl {
            Output::jsonl(args.binary_format, args.timestamps)
        } else {
            Output::plain(args.binary_format, args.timestamps, args.echo)
        })
    };
    let settings = Settings {
        output,
        echo: args.echo,
        ping_interval: args.ping_interval,
        max_messages: args.max_messages,
        received: Arc::new(AtomicU64::new(0)),
        close_timeout: CLOSE_TIMEOUT,
    };
    let result = connections(&args, &builder, &settings, &mut inputs).await;
    if let Some(terminal) = terminal {
        terminal.restore().await;
    }
    drop(tx);
    result
}

/// The reconnect loop.
async fn connections(
    args: &ConnectArgs,
    builder: &ClientBuilder,
    settings: &Settings,
    inputs: &mut mpsc::Receiver<Input>,
) -> anyhow::Result<()> {
    let output = &settings.output;
    let mut pending = None;
    let mut failures = 0u32;
    loop {
        let result = match open(args, builder, output).await {
            Ok(ws) => {
                failures = 0;
                session::run(ws, settings, inputs, &mut pending).await
            }
            Err(error) => {
                output.error(&error);
                Err(error)
            }
        };
        let why = match result {
            Ok(Ending::Local) => return Ok(()),
            Ok(Ending::Remote) if !args.reconnect => return Ok(()),
            Err(error) if !args.reconnect => return Err(error),
            Ok(Ending::Remote) => "the server closed the connection".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        failures += 1;
        if args.reconnect_limit.is_some_and(|limit| failures > limit) {
            anyhow::bail!("gave up after {} failed attempts: {why}", failures);
        }
        let delay = BACKOFF_START
            .saturating_mul(1 << (failures - 1).min(16))
            .min(BACKOFF_MAX);
        output.reconnecting(failures, delay, &why);
        // The user may quit while we wait; anything else waits for the next connection.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                input = inputs.recv(), if pending.is_none() => match input {
                    None | Some(Input::End | Input::Close(..)) => return Ok(()),
                    Some(Input::Fail(why)) => anyhow::bail!(why),
                    Some(input) => pending = Some(input),
                },
            }
        }
    }
}

/// One connection attempt; reports the opening.
async fn open(
    args: &ConnectArgs,
    builder: &ClientBuilder,
    output: &Output,
) -> anyhow::Result<WebSocket<MaybeTlsStream>> {
    let (ws, response) = builder
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    output.open(
        &args.url,
        header("sec-websocket-protocol"),
        header("sec-websocket-extensions"),
    );
    Ok(ws)
}

/// The terminal's settings from before the line editor, put back at exit.
///
/// The editor restores them itself when its prompt returns, but the connection can end
/// while the prompt is waiting for a key, and a blocked read cannot be interrupted.
struct Terminal {
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl Terminal {
    fn save() -> Self {
        Self {
            #[cfg(unix)]
            saved: nix::sys::termios::tcgetattr(std::io::stdin()).ok(),
        }
    }

    async fn restore(self) {
        // Lines handed to the editor's printer while its prompt is up are printed by the
        // editor's thread: give it a moment to show the last ones.
        tokio::time::sleep(Duration::from_millis(100)).await;
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            use nix::sys::termios::{tcsetattr, SetArg};
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, saved);
        }
        // Clear a prompt left behind, and turn bracketed paste off again.
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(b"\r\x1b[2K\x1b[?2004l");
        let _ = stdout.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn headers() {
        let (name, value) = parse_header("X-Test:  a b ").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-test", "a b"));
        assert!(parse_header("no colon").is_err());
    }
}
