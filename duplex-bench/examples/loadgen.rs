//! The neutral load generator of `bench/run.sh`: it drives `duplex`, the raw TCP baseline,
//! tokio-tungstenite and fastwebsockets with the same code, and checks every byte it gets.
//!
//! It speaks WebSocket itself (a small client written here, so no server library under test
//! is on the measuring side): masked client frames, the opening handshake with its
//! `Sec-WebSocket-Accept` check, the close handshake, permessage-deflate (RFC 7692, with
//! flate2) and TLS (rustls). With `--raw` it sends *exactly the bytes a WebSocket client
//! sends* (the same masked frames) to a raw TCP server and expects them back byte for byte,
//! so the raw baseline does comparable byte work.
//!
//! Modes (one line of JSON on stdout; exit status 1 when anything came back wrong):
//!
//! * `echo -c N --size S [--depth D] [--text]`: N connections, each keeping D messages in
//!   flight (1: ping-pong); every echo is compared with what was sent;
//! * `handshakes -c N`: N workers open a connection, upgrade, close cleanly (1000, the
//!   server's close reply, then the server's FIN), again and again; `--raw`: connect and
//!   wait for the server's FIN (against `raw_tcp --close`: the server closes first, as a
//!   WebSocket server does, so neither side's TIME_WAITs differ);
//! * `idle -c N [--hold T]`: open N connections and hold them; with `--server-pid`, the
//!   server's resident memory (`VmRSS`) before the first and after the last, the first
//!   read with 64 warm-up connections open (they stay open to the end);
//! * `fanout -c N [--window W] [--dialect raw|rooms|v1]`: N subscribers and one publisher
//!   sending 100-byte messages (sequence number and send time inside), at most W
//!   publications not yet delivered to every subscriber; every subscriber must receive
//!   every publication once and in order.
//!
//! With `--server-pid PID` the server's CPU time (utime + stime from `/proc/PID/stat`) is read
//! at the start and the end of the measured window, and the report gives CPU nanoseconds
//! per message (per handshake, per delivery).
//!
//! ```text
//! cargo run --release -p duplex-bench --example loadgen -- echo 127.0.0.1:9001 -c 100 --size 1KiB
//! ```

use base64::Engine as _;
use bytes::{Buf as _, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use sha1::{Digest as _, Sha1};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const USAGE: &str = "\
usage: loadgen MODE HOST:PORT [options]
modes: echo | handshakes | idle | fanout
  --raw                 raw TCP target: send WebSocket client bytes, expect them back as sent
                        (handshakes: connect and wait for the server's FIN: raw_tcp --close)
  --path P              request path (default /)
  --tls                 wss (any certificate accepted: loopback benchmarks only)
  --deflate             offer permessage-deflate
  --protocol NAME       offer this subprotocol
  -c N                  connections (echo, idle), workers (handshakes), subscribers (fanout)
  --size S              message size: 16, 1KiB, 64KiB (echo; default 16)
  --depth D             messages in flight per connection (echo; default 1)
  --text                text messages of JSON-like text instead of binary (echo)
  --window W            publications in flight (fanout; default 4)
  --dialect D           fanout: raw (a raw TCP relay), rooms (plain WebSocket), v1 (duplex.v1)
  --warmup T            seconds before measuring (default 1)
  --duration T          seconds measured (default 5)
  --hold T              seconds idle connections are held after the warm-up ones and after
                        the last opened, before each memory reading (default 1)
  --server-pid PID      read the server's CPU time and memory from /proc
  --clk-tck N           clock ticks per second of /proc/PID/stat (default 100)";

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Publication size of the fan-out mode.
const FANOUT_SIZE: usize = 100;
/// How long the end of a run waits for answers still in flight.
const DRAIN: Duration = Duration::from_secs(5);
/// Connection attempts in flight while opening many connections.
const RAMP: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Echo,
    Handshakes,
    Idle,
    Fanout,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dialect {
    Raw,
    Rooms,
    V1,
}

#[derive(Clone, Debug)]
struct Opts {
    mode: Mode,
    addr: SocketAddr,
    host: String,
    path: String,
    raw: bool,
    tls: bool,
    deflate: bool,
    protocol: Option<String>,
    conns: usize,
    size: usize,
    depth: usize,
    text: bool,
    window: u64,
    dialect: Dialect,
    warmup: Duration,
    duration: Duration,
    hold: Duration,
    server_pid: Option<u32>,
    clk_tck: u64,
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: {message}\n{USAGE}");
    std::process::exit(2)
}

fn parse_size(text: &str) -> usize {
    let lower = text.to_ascii_lowercase();
    let (number, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let n: usize = number
        .parse()
        .unwrap_or_else(|_| fail(format!("bad size {text:?}")));
    match unit {
        "" | "b" => n,
        "kib" | "k" => n * 1024,
        "mib" | "m" => n * 1024 * 1024,
        _ => fail(format!("bad size unit in {text:?}")),
    }
}

fn parse_secs(text: &str) -> Duration {
    let secs: f64 = text
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| fail(format!("bad duration {text:?}")));
    Duration::try_from_secs_f64(secs).unwrap_or_else(|_| fail(format!("bad duration {text:?}")))
}

fn parse_args() -> Opts {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("echo") => Mode::Echo,
        Some("handshakes") => Mode::Handshakes,
        Some("idle") => Mode::Idle,
        Some("fanout") => Mode::Fanout,
        other => fail(format!("unknown mode {other:?}")),
    };
    let target = args.next().unwrap_or_else(|| fail("missing HOST:PORT"));
    let addr: SocketAddr = target
        .parse()
        .unwrap_or_else(|_| fail(format!("{target:?} is not HOST:PORT")));
    if !addr.ip().is_loopback() {
        fail("only loopback targets are allowed");
    }
    let mut opts = Opts {
        mode,
        addr,
        host: target.clone(),
        path: "/".into(),
        raw: false,
        tls: false,
        deflate: false,
        protocol: None,
        conns: 1,
        size: 16,
        depth: 1,
        text: false,
        window: 4,
        dialect: Dialect::Rooms,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(5),
        hold: Duration::from_secs(1),
        server_pid: None,
        clk_tck: 100,
    };
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--raw" => opts.raw = true,
            "--tls" => opts.tls = true,
            "--deflate" => opts.deflate = true,
            "--text" => opts.text = true,
            "--path" => opts.path = value(),
            "--protocol" => opts.protocol = Some(value()),
            "-c" => opts.conns = parse_size(&value()),
            "--size" => opts.size = parse_size(&value()),
            "--depth" => opts.depth = parse_size(&value()),
            "--window" => opts.window = parse_size(&value()) as u64,
            "--warmup" => opts.warmup = parse_secs(&value()),
            "--duration" => opts.duration = parse_secs(&value()),
            "--hold" => opts.hold = parse_secs(&value()),
            "--clk-tck" => opts.clk_tck = parse_size(&value()) as u64,
            "--server-pid" => {
                opts.server_pid = Some(
                    value()
                        .parse()
                        .unwrap_or_else(|_| fail("--server-pid: not a PID")),
                )
            }
            "--dialect" => {
                opts.dialect = match value().as_str() {
                    "raw" => Dialect::Raw,
                    "rooms" => Dialect::Rooms,
                    "v1" => Dialect::V1,
                    other => fail(format!("unknown dialect {other:?}")),
                }
            }
            other => fail(format!("unknown option {other:?}")),
        }
    }
    if opts.conns == 0 || opts.depth == 0 || opts.window == 0 {
        fail("-c, --depth and --window must be at least 1");
    }
    if opts.size < 8 {
        fail("--size must be at least 8 (the sequence number)");
    }
    if opts.mode == Mode::Fanout {
        opts.raw = opts.dialect == Dialect::Raw;
        if opts.dialect == Dialect::V1 {
            opts.protocol = Some("duplex.v1".into());
        }
    }
    if opts.raw && (opts.tls || opts.deflate) {
        fail("--raw does not combine with --tls or --deflate");
    }
    opts
}

// ---------------------------------------------------------------------------------------
// Run state shared by the tasks of one run (one thread: a current-thread runtime).

/// The phases after the warm-up (phase 0): measuring, stopping.
const MEASURING: u8 = 1;
const STOPPING: u8 = 2;

#[derive(Default)]
struct Stats {
    phase: AtomicU8,
    /// Messages (handshakes, deliveries) completed while measuring.
    counted: AtomicU64,
    /// Everything that came back wrong, and failed connections.
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    latency: Mutex<Option<Histogram<u64>>>,
}

impl Stats {
    fn new() -> Arc<Self> {
        let stats = Stats::default();
        *stats.latency.lock().unwrap() =
            Some(Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap());
        Arc::new(stats)
    }

    fn measuring(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == MEASURING
    }

    fn stopping(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == STOPPING
    }

    fn error(&self, what: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(what.to_string());
        }
    }

    fn record(&self, latency: Duration) {
        if let Some(h) = self.latency.lock().unwrap().as_mut() {
            let _ = h.record((latency.as_nanos() as u64).max(1));
        }
    }
}

/// utime and stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some((
        fields.get(11)?.parse::<u64>().ok()?,
        fields.get(12)?.parse::<u64>().ok()?,
    ))
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The client: TCP or TLS, the opening handshake, frames.

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// permessage-deflate state of one connection (RFC 7692, raw deflate, sync flush). The zlib
/// streams are made on first use, so thousands of idle connections cost the load generator
/// no deflate state.
struct Deflate {
    compress: Option<Compress>,
    decompress: Option<Decompress>,
    client_bits: u8,
    server_bits: u8,
    /// The server asked us not to keep context between messages.
    reset_compress: bool,
    /// The server does not keep context either: start each inflate afresh.
    reset_decompress: bool,
}

impl Deflate {
    fn compressor(&mut self) -> &mut Compress {
        let bits = self.client_bits;
        self.compress.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::default(), false, bits)
        })
    }

    fn decompressor(&mut self) -> &mut Decompress {
        let bits = self.server_bits;
        self.decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits))
    }
}

struct Conn {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    mask: [u8; 4],
    deflate: Option<Deflate>,
}

/// A frame as received.
struct Frame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: BytesMut,
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
}

/// xorshift64*: masking keys and handshake nonces need no cryptographic randomness here.
fn next_random() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

struct Dialer {
    opts: Opts,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Dialer {
    fn new(opts: &Opts) -> Self {
        Dialer {
            opts: opts.clone(),
            tls: opts.tls.then(tls_connector),
        }
    }

    /// Opens a connection; upgrades it unless raw. Raw fan-out subscribers also wait for the
    /// relay's one-byte welcome.
    async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect(self.opts.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                Box::new(
                    tls.connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?,
                )
            }
            None => Box::new(tcp),
        };
        let mut conn = Conn {
            io,
            rbuf: BytesMut::with_capacity(16 * 1024),
            mask: next_random().to_le_bytes()[..4].try_into().unwrap(),
            deflate: None,
        };
        if self.opts.raw {
            if self.opts.mode == Mode::Fanout {
                conn.fill(1).await?;
                if conn.rbuf[0] != b'+' {
                    return Err("the relay's welcome byte is not '+'".into());
                }
                conn.rbuf.advance(1);
            }
        } else {
            conn.upgrade(&self.opts).await?;
        }
        Ok(conn)
    }
}

impl Conn {
    /// Reads until at least `n` bytes are buffered.
    async fn fill(&mut self, n: usize) -> Result<(), String> {
        while self.rbuf.len() < n {
            self.rbuf.reserve(n.max(16 * 1024));
            let read = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if read == 0 {
                return Err("the server closed the connection".into());
            }
        }
        Ok(())
    }

    async fn upgrade(&mut self, opts: &Opts) -> Result<(), String> {
        let key = base64::engine::general_purpose::STANDARD
            .encode([next_random().to_le_bytes(), next_random().to_le_bytes()].concat());
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            opts.path, opts.host
        );
        if let Some(protocol) = &opts.protocol {
            request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        if opts.deflate {
            request.push_str(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            );
        }
        request.push_str("\r\n");
        self.io
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.io.flush().await.map_err(|e| format!("flush: {e}"))?;
        let head_len = loop {
            if let Some(end) = self.rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if self.rbuf.len() > 16 * 1024 {
                return Err("response head over 16 KiB".into());
            }
            let want = self.rbuf.len() + 1;
            self.fill(want).await?;
        };
        let head = self.rbuf.split_to(head_len);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        response
            .parse(&head)
            .map_err(|e| format!("bad response head: {e}"))?;
        if response.code != Some(101) {
            return Err(format!("handshake refused: {:?}", response.code));
        }
        let expected = base64::engine::general_purpose::STANDARD
            .encode(Sha1::digest(format!("{key}{GUID}").as_bytes()));
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let accept = header("sec-websocket-accept");
        if accept.as_deref() != Some(expected.as_str()) {
            return Err(format!(
                "Sec-WebSocket-Accept {accept:?}, expected {expected:?} for {key:?}"
            ));
        }
        if let Some(protocol) = &opts.protocol {
            if header("sec-websocket-protocol").as_deref() != Some(protocol.as_str()) {
                return Err(format!("subprotocol {protocol} not selected"));
            }
        }
        if let Some(extensions) = header("sec-websocket-extensions") {
            if !opts.deflate || !extensions.contains("permessage-deflate") {
                return Err(format!("unexpected extensions: {extensions}"));
            }
            let bits = |param: &str| {
                extensions
                    .split(';')
                    .map(str::trim)
                    .find_map(|p| p.strip_prefix(param))
                    .and_then(|v| {
                        v.trim_start_matches('=')
                            .trim_matches('"')
                            .parse::<u8>()
                            .ok()
                    })
            };
            let client_bits = bits("client_max_window_bits").unwrap_or(15);
            let server_bits = bits("server_max_window_bits").unwrap_or(15);
            self.deflate = Some(Deflate {
                compress: None,
                decompress: None,
                client_bits: client_bits.max(9),
                server_bits: server_bits.max(9),
                reset_compress: extensions.contains("client_no_context_takeover"),
                reset_decompress: extensions.contains("server_no_context_takeover"),
            });
        }
        Ok(())
    }

    /// Parses one frame from the buffer, if complete; unmasks masked frames (a raw relay
    /// hands out the publisher's masked frames).
    fn parse_frame(&mut self) -> Result<Option<Frame>, String> {
        let buf = &self.rbuf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let masked = buf[1] & 0x80 != 0;
        let (len, mut at) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (
                usize::try_from(u64::from_be_bytes(buf[2..10].try_into().unwrap()))
                    .map_err(|_| "frame length too large")?,
                10,
            ),
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        let mask = if masked {
            if buf.len() < at + 4 {
                return Ok(None);
            }
            at += 4;
            Some([buf[at - 4], buf[at - 3], buf[at - 2], buf[at - 1]])
        } else {
            None
        };
        if buf.len() < at + len {
            return Ok(None);
        }
        let first = buf[0];
        if first & 0x30 != 0 {
            return Err("reserved bits RSV2/RSV3 set".into());
        }
        self.rbuf.advance(at);
        let mut payload = self.rbuf.split_to(len);
        if let Some(mask) = mask {
            apply_mask(&mut payload, mask);
        }
        Ok(Some(Frame {
            fin: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            opcode: first & 0x0F,
            payload,
        }))
    }

    /// The next frame, reading as needed.
    async fn next_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(frame) = self.parse_frame()? {
                return Ok(frame);
            }
            let want = self.rbuf.len() + 1;
            self.fill(want).await?;
        }
    }

    /// The next data message (reassembled, inflated), answering pings on the way.
    async fn next_message(&mut self) -> Result<(u8, BytesMut), String> {
        let mut first: Option<(u8, bool, BytesMut)> = None;
        loop {
            let frame = self.next_frame().await?;
            match frame.opcode {
                0x9 => {
                    let mut out = Vec::new();
                    self.encode(&mut out, 0xA, false, &frame.payload);
                    self.io
                        .write_all(&out)
                        .await
                        .map_err(|e| format!("write: {e}"))?;
                    continue;
                }
                0xA => continue,
                0x8 => {
                    return Err(format!(
                        "the server closed: {:?}",
                        close_reason(&frame.payload)
                    ))
                }
                0x0 => match first.as_mut() {
                    Some((_, _, data)) => data.extend_from_slice(&frame.payload),
                    None => return Err("continuation frame without a start".into()),
                },
                0x1 | 0x2 => {
                    if first.is_some() {
                        return Err("new message inside a fragmented one".into());
                    }
                    first = Some((frame.opcode, frame.rsv1, frame.payload));
                }
                other => return Err(format!("unknown opcode {other}")),
            }
            if frame.fin {
                let (opcode, compressed, data) = first.take().unwrap();
                if compressed {
                    return Ok((opcode, self.inflate(&data)?));
                }
                return Ok((opcode, data));
            }
        }
    }

    fn inflate(&mut self, data: &[u8]) -> Result<BytesMut, String> {
        let deflate = self
            .deflate
            .as_mut()
            .ok_or("compressed frame without permessage-deflate")?;
        if deflate.reset_decompress {
            deflate.decompressor().reset(false);
        }
        let mut input = Vec::with_capacity(data.len() + 4);
        input.extend_from_slice(data);
        input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
        let mut out = Vec::with_capacity(data.len() * 4 + 64);
        let start_in = deflate.decompressor().total_in();
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity());
            }
            let consumed = (deflate.decompressor().total_in() - start_in) as usize;
            let before = (
                deflate.decompressor().total_in(),
                deflate.decompressor().total_out(),
            );
            deflate
                .decompressor()
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|e| format!("inflate: {e}"))?;
            let consumed = (deflate.decompressor().total_in() - start_in) as usize;
            // Done once all input is in and the inflater stopped short of a full buffer.
            if consumed >= input.len() && out.len() < out.capacity() {
                break;
            }
            if before
                == (
                    deflate.decompressor().total_in(),
                    deflate.decompressor().total_out(),
                )
            {
                return Err("inflate made no progress".into());
            }
        }
        Ok(BytesMut::from(&out[..]))
    }

    /// A client frame (masked with this connection's key), compressed when permessage-deflate
    /// was negotiated and `compress` is set.
    fn encode(&mut self, out: &mut Vec<u8>, opcode: u8, compress: bool, payload: &[u8]) {
        let mut compressed = Vec::new();
        let (rsv1, payload) = match self.deflate.as_mut() {
            Some(deflate) if compress => {
                if deflate.reset_compress {
                    deflate.compressor().reset();
                }
                compressed.reserve(payload.len() + 64);
                let start = deflate.compressor().total_in();
                loop {
                    let consumed = (deflate.compressor().total_in() - start) as usize;
                    if compressed.capacity() - compressed.len() < 64 {
                        compressed.reserve(compressed.capacity());
                    }
                    deflate
                        .compressor()
                        .compress_vec(&payload[consumed..], &mut compressed, FlushCompress::Sync)
                        .expect("deflate of an in-memory buffer");
                    let consumed = (deflate.compressor().total_in() - start) as usize;
                    if consumed == payload.len() && compressed.capacity() > compressed.len() {
                        break;
                    }
                }
                debug_assert!(compressed.ends_with(&[0, 0, 0xFF, 0xFF]));
                compressed.truncate(compressed.len() - 4);
                (true, &compressed[..])
            }
            _ => (false, payload),
        };
        let first = 0x80 | if rsv1 { 0x40 } else { 0 } | opcode;
        put_header(out, first, Some(self.mask), payload.len());
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], self.mask);
    }

    /// The client's half of the close handshake: 1000, the server's close frame, its FIN.
    async fn close(&mut self) -> Result<(), String> {
        let mut out = Vec::new();
        self.encode(&mut out, 0x8, false, &1000u16.to_be_bytes());
        self.io
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.io.flush().await.map_err(|e| format!("flush: {e}"))?;
        loop {
            let frame = self.next_frame().await?;
            if frame.opcode == 0x8 {
                let code = close_reason(&frame.payload).0;
                if code != Some(1000) {
                    return Err(format!("close reply with code {code:?}"));
                }
                break;
            }
        }
        self.expect_eof().await
    }

    /// Waits for the server to close the TCP connection.
    async fn expect_eof(&mut self) -> Result<(), String> {
        self.rbuf.clear();
        match self.io.read_buf(&mut self.rbuf).await {
            Ok(0) => Ok(()),
            Ok(_) => Err("bytes after the close".into()),
            // A TLS server may skip close_notify; the FIN is what counts.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

fn close_reason(payload: &[u8]) -> (Option<u16>, String) {
    if payload.len() < 2 {
        return (None, String::new());
    }
    (
        Some(u16::from_be_bytes([payload[0], payload[1]])),
        String::from_utf8_lossy(&payload[2..]).into_owned(),
    )
}

/// Appends a frame header: the first byte, the payload length in the fewest bytes (RFC 6455
/// §5.2) with the mask bit set when `mask` is given, then the masking key.
fn put_header(out: &mut Vec<u8>, first: u8, mask: Option<[u8; 4]>, len: usize) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(first);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// The length of the unmasked frame header at the start of `frame`.
fn header_len(frame: &[u8]) -> usize {
    match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let word64 = u64::from(word) | (u64::from(word) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().unwrap()) ^ word64;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Writes `seq` as 16 lowercase hex digits (valid UTF-8, so text messages can carry it).
fn put_hex(out: &mut [u8], value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate().take(16) {
        *b = HEX[((value >> (60 - 4 * i)) & 0xF) as usize];
    }
}

fn get_hex(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data.get(..16)?).ok()?;
    u64::from_str_radix(text, 16).ok()
}

/// JSON-like text (repeated chat events), the payload of text and deflate runs.
fn json_text(len: usize) -> Vec<u8> {
    const EVENT: &str = r#"{"channel":"room:lobby","offset":1842,"data":{"user":"alice","text":"the build is green again","ts":1731312000123}},"#;
    EVENT.bytes().cycle().take(len).collect()
}

/// A deterministic binary payload.
fn binary_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

// ---------------------------------------------------------------------------------------
// echo

/// One connection keeping `depth` messages in flight; each message carries its sequence
/// number in its first 8 (binary) or 16 (text, as hex) bytes, and the rest is a fixed pattern.
async fn echo_worker(mut conn: Conn, opts: Arc<Opts>, stats: Arc<Stats>) {
    if let Err(error) = echo_loop(&mut conn, &opts, &stats).await {
        stats.error(error);
    }
}

async fn echo_loop(conn: &mut Conn, opts: &Opts, stats: &Stats) -> Result<(), String> {
    let template = if opts.text {
        json_text(opts.size)
    } else {
        binary_payload(opts.size)
    };
    let id_len = if opts.text { 16.min(opts.size) } else { 8 };
    let opcode = if opts.text { 0x1 } else { 0x2 };
    let mut payload = template.clone();
    let set_seq = |payload: &mut Vec<u8>, seq: u64| {
        if opts.text {
            if id_len == 16 {
                put_hex(&mut payload[..16], seq);
            }
        } else {
            payload[..8].copy_from_slice(&seq.to_le_bytes());
        }
    };
    let mut sent_at = std::collections::VecDeque::with_capacity(opts.depth);
    // The exact bytes expected back, in order: against a raw echo, the frame as sent; against
    // a WebSocket server that compresses nothing, its unmasked frame of the same payload. The
    // same work per message against every server (one copy of the expected bytes when a
    // message is sent, one comparison when it comes back), so that the client does not spend
    // more per message against one server than another and cap its rate lower. A WebSocket
    // reply that is not the expected frame (a ping before it, a fragmented message) goes
    // through the frame parser; with permessage-deflate every reply does.
    let exact = opts.raw || conn.deflate.is_none();
    let mut expected_frames: std::collections::VecDeque<Vec<u8>> =
        std::collections::VecDeque::with_capacity(opts.depth);
    let mut out = Vec::with_capacity(opts.depth * (opts.size + 14));
    let mut next_seq = 0u64;
    let mut expect_seq = 0u64;
    let mut send = |conn: &mut Conn,
                    out: &mut Vec<u8>,
                    seq: u64,
                    expected_frames: &mut std::collections::VecDeque<Vec<u8>>| {
        set_seq(&mut payload, seq);
        let start = out.len();
        conn.encode(out, opcode, true, &payload);
        if opts.raw {
            expected_frames.push_back(out[start..].to_vec());
        } else if exact {
            let mut frame = Vec::with_capacity(payload.len() + 10);
            put_header(&mut frame, 0x80 | opcode, None, payload.len());
            frame.extend_from_slice(&payload);
            expected_frames.push_back(frame);
        }
    };
    for _ in 0..opts.depth {
        send(conn, &mut out, next_seq, &mut expected_frames);
        sent_at.push_back(Instant::now());
        next_seq += 1;
    }
    conn.io
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    conn.io.flush().await.map_err(|e| format!("flush: {e}"))?;
    let mut expected = template.clone();
    loop {
        out.clear();
        // Everything complete in the buffer, then one write for the replacements.
        let mut completed = 0;
        loop {
            // Whether the reply is to be parsed as frames rather than compared as bytes.
            let mut parse = !exact;
            if exact {
                let Some(frame) = expected_frames.front() else {
                    break;
                };
                // A WebSocket reply whose header is not the one expected is something else
                // the protocol allows: known from its first differing byte, so a frame
                // shorter than the expected header (a close, a small ping) is not waited on.
                let header = if opts.raw { 0 } else { header_len(frame) };
                let buffered = conn.rbuf.len();
                let known = buffered.min(header);
                if conn.rbuf[..known] != frame[..known] {
                    parse = true;
                } else if buffered < frame.len() {
                    if completed == 0 {
                        let want = if buffered < header {
                            header
                        } else {
                            frame.len()
                        };
                        conn.fill(want).await?;
                        continue;
                    }
                    break;
                } else if conn.rbuf[..frame.len()] != frame[..] {
                    return Err(format!(
                        "echo {expect_seq}: bytes differ from those expected"
                    ));
                } else {
                    conn.rbuf.advance(frame.len());
                    expected_frames.pop_front();
                }
            }
            if parse {
                // Once some echoes are in, take another only if it is whole and a final data
                // frame: parsing a ping (or the start of a fragmented message) would wait
                // for more while the replacements for those echoes are not sent yet.
                if completed > 0 && !conn.whole_data_frame_ready() {
                    break;
                }
                let (got_opcode, data) = conn.next_message().await?;
                expected_frames.pop_front();
                set_seq(&mut expected, expect_seq);
                if got_opcode != opcode || data[..] != expected[..] {
                    return Err(format!(
                        "echo {expect_seq}: opcode {got_opcode} / {} bytes differ from those sent",
                        data.len()
                    ));
                }
            }
            let Some(started) = sent_at.pop_front() else {
                return Err("a message came back that was not sent".into());
            };
            if stats.measuring() {
                stats.counted.fetch_add(1, Ordering::Relaxed);
                stats.record(started.elapsed());
            }
            expect_seq += 1;
            completed += 1;
        }
        if stats.stopping() {
            if sent_at.is_empty() {
                break;
            }
            continue;
        }
        for _ in 0..completed {
            send(conn, &mut out, next_seq, &mut expected_frames);
            sent_at.push_back(Instant::now());
            next_seq += 1;
        }
        conn.io
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        conn.io.flush().await.map_err(|e| format!("flush: {e}"))?;
    }
    if opts.raw {
        conn.io
            .shutdown()
            .await
            .map_err(|e| format!("shutdown: {e}"))?;
        conn.expect_eof().await
    } else {
        conn.close().await
    }
}

impl Conn {
    /// Whether a whole, final text or binary frame is buffered, without consuming it.
    fn whole_data_frame_ready(&self) -> bool {
        let final_data =
            matches!(self.rbuf.first(), Some(b) if b & 0x80 != 0 && matches!(b & 0x0F, 1 | 2));
        final_data && self.parse_frame_ready().is_some()
    }

    /// Whether a whole frame is buffered (`Some(())`), without consuming it.
    fn parse_frame_ready(&self) -> Option<()> {
        let buf = &self.rbuf[..];
        if buf.len() < 2 {
            return None;
        }
        let masked = if buf[1] & 0x80 != 0 { 4 } else { 0 };
        let (len, at) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => {
                (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10)
            }
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        (buf.len() >= at + masked + len).then_some(())
    }
}

// ---------------------------------------------------------------------------------------
// handshakes

async fn handshake_worker(dialer: Arc<Dialer>, stats: Arc<Stats>) {
    while !stats.stopping() {
        let result = async {
            let mut conn = dialer.connect().await?;
            if dialer.opts.raw {
                conn.expect_eof().await
            } else {
                conn.close().await
            }
        }
        .await;
        match result {
            Ok(()) => {
                if stats.measuring() {
                    stats.counted.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => {
                stats.error(error);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// fan-out

struct Fan {
    subscribers: u64,
    window: u64,
    /// Deliveries of publication `seq` land in `slots[seq % window]`.
    slots: Vec<AtomicU64>,
    /// Publications delivered to every subscriber (they complete in order).
    done: AtomicU64,
    progress: Notify,
    /// Deliveries over the whole run, checked against publications × subscribers.
    total: AtomicU64,
    epoch: Instant,
}

/// The 100-byte publication `seq`: its number and send time in hex, then a fixed pattern.
fn publication(seq: u64, sent_ns: u64) -> [u8; FANOUT_SIZE] {
    let mut data = [0u8; FANOUT_SIZE];
    for (i, b) in data.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    put_hex(&mut data[..16], seq);
    put_hex(&mut data[16..32], sent_ns);
    data
}

async fn subscriber(mut conn: Conn, opts: Arc<Opts>, fan: Arc<Fan>, stats: Arc<Stats>) {
    let pattern = publication(0, 0);
    let mut expect = 0u64;
    let result: Result<(), String> = async {
        loop {
            let (opcode, data) = conn.next_message().await?;
            let body = match opts.dialect {
                Dialect::V1 => {
                    if opcode != 0x2 {
                        continue; // replies and other pushes are text
                    }
                    let header = data.get(..4).ok_or("short binary push")?;
                    let header = u32::from_be_bytes(header.try_into().unwrap()) as usize;
                    data.get(4 + header..)
                        .ok_or("binary push shorter than its header")?
                }
                _ => &data[..],
            };
            if body.len() != FANOUT_SIZE || body[32..] != pattern[32..] {
                return Err(format!(
                    "publication {expect}: {} bytes, not as sent",
                    body.len()
                ));
            }
            let seq = get_hex(body).ok_or("publication without a sequence number")?;
            if seq != expect {
                return Err(format!("publication {seq} arrived where {expect} was due"));
            }
            let sent_ns = get_hex(&body[16..]).ok_or("publication without a send time")?;
            expect += 1;
            if stats.measuring() {
                stats.counted.fetch_add(1, Ordering::Relaxed);
                let now = fan.epoch.elapsed().as_nanos() as u64;
                stats.record(Duration::from_nanos(now.saturating_sub(sent_ns)));
            }
            fan.total.fetch_add(1, Ordering::Relaxed);
            let slot = &fan.slots[(seq % fan.window) as usize];
            if slot.fetch_add(1, Ordering::Relaxed) + 1 == fan.subscribers {
                fan.done.fetch_max(seq + 1, Ordering::Relaxed);
                fan.progress.notify_one();
            }
        }
    }
    .await;
    if let Err(error) = result {
        if !stats.stopping() {
            stats.error(format!("subscriber: {error}"));
        }
    }
}

/// duplex.v1: `connect`, then optionally `subscribe`; waits for both replies.
async fn v1_setup(conn: &mut Conn, subscribe: bool) -> Result<(), String> {
    let mut out = Vec::new();
    conn.encode(
        &mut out,
        0x1,
        true,
        br#"{"id":1,"cmd":"connect","name":"loadgen"}"#,
    );
    if subscribe {
        conn.encode(
            &mut out,
            0x1,
            true,
            br#"{"id":2,"cmd":"subscribe","channel":"bench"}"#,
        );
    }
    conn.io
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let last = if subscribe { "\"id\":2" } else { "\"id\":1" };
    loop {
        let (_, data) = conn.next_message().await?;
        let text = String::from_utf8_lossy(&data);
        if text.contains("\"error\"") {
            return Err(format!("duplex.v1 setup refused: {text}"));
        }
        if text.contains(last) {
            return Ok(());
        }
    }
}

async fn publisher(mut conn: Conn, opts: Arc<Opts>, fan: Arc<Fan>, stats: Arc<Stats>) -> u64 {
    let mut sent = 0u64;
    let mut out = Vec::with_capacity(256);
    let (read_half, mut write_half) = {
        let io = std::mem::replace(&mut conn.io, Box::new(empty_duplex_impl::EmptyDuplex));
        tokio::io::split(io)
    };
    // The publisher's own inbound traffic (duplex.v1 replies) is read and checked aside.
    let reader_stats = stats.clone();
    let mut reader_conn = Conn {
        io: Box::new(ReadOnly(read_half)),
        rbuf: std::mem::take(&mut conn.rbuf),
        mask: conn.mask,
        deflate: None,
    };
    let reader = tokio::spawn(async move {
        while let Ok((_, data)) = reader_conn.next_message().await {
            if data.windows(8).any(|w| w == b"\"error\"") {
                reader_stats.error(format!(
                    "publish refused: {}",
                    String::from_utf8_lossy(&data)
                ));
            }
        }
    });
    while !stats.stopping() {
        while sent - fan.done.load(Ordering::Relaxed) >= fan.window {
            if stats.stopping() {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), fan.progress.notified()).await;
        }
        if stats.stopping() {
            break;
        }
        fan.slots[(sent % fan.window) as usize].store(0, Ordering::Relaxed);
        let data = publication(sent, fan.epoch.elapsed().as_nanos() as u64);
        out.clear();
        match opts.dialect {
            Dialect::V1 => {
                let header = format!(
                    r#"{{"id":{},"cmd":"publish","channel":"bench"}}"#,
                    sent + 10
                );
                let mut frame = Vec::with_capacity(4 + header.len() + FANOUT_SIZE);
                frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
                frame.extend_from_slice(header.as_bytes());
                frame.extend_from_slice(&data);
                conn.encode(&mut out, 0x2, false, &frame);
            }
            _ => conn.encode(&mut out, 0x2, false, &data),
        }
        if let Err(error) = write_half.write_all(&out).await {
            stats.error(format!("publisher write: {error}"));
            break;
        }
        sent += 1;
    }
    reader.abort();
    sent
}

/// A read half standing in for a full stream (writes are refused).
struct ReadOnly<R>(R);

impl<R: AsyncRead + Unpin> AsyncRead for ReadOnly<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for ReadOnly<R> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::Unsupported.into()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

mod empty_duplex_impl {
    /// An always-empty, always-accepting stream, the placeholder of a moved-out socket.
    pub struct EmptyDuplex;
    impl tokio::io::AsyncRead for EmptyDuplex {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
    impl tokio::io::AsyncWrite for EmptyDuplex {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
}

// ---------------------------------------------------------------------------------------
// main

/// Opens `n` connections, at most [`RAMP`] at a time.
async fn open_many(dialer: &Arc<Dialer>, n: usize) -> Result<Vec<Conn>, String> {
    let conns: Vec<Result<Conn, String>> = futures_util::stream::iter(0..n)
        .map(|_| {
            let dialer = dialer.clone();
            async move { dialer.connect().await }
        })
        .buffer_unordered(RAMP)
        .collect()
        .await;
    conns.into_iter().collect()
}

struct Window {
    secs: f64,
    /// The server's utime and stime over the window.
    ticks: Option<(u64, u64)>,
}

/// Warm-up, then the measured window with the server's CPU time read at both ends.
async fn measure(opts: &Opts, stats: &Stats) -> Window {
    tokio::time::sleep(opts.warmup).await;
    let ticks_before = opts.server_pid.and_then(cpu_ticks);
    let started = Instant::now();
    stats.phase.store(MEASURING, Ordering::Relaxed);
    tokio::time::sleep(opts.duration).await;
    stats.phase.store(STOPPING, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let ticks_after = opts.server_pid.and_then(cpu_ticks);
    Window {
        secs,
        ticks: ticks_before
            .zip(ticks_after)
            .map(|(b, a)| (a.0 - b.0, a.1 - b.1)),
    }
}

fn main() -> std::process::ExitCode {
    let opts = Arc::new(parse_args());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let (report, errors) = runtime.block_on(run(opts));
    println!("{report}");
    if errors == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Runs the mode; returns the JSON report and the number of errors.
async fn run(opts: Arc<Opts>) -> (String, u64) {
    let stats = Stats::new();
    let dialer = Arc::new(Dialer::new(&opts));
    let mut extra = String::new();
    let window = match opts.mode {
        Mode::Echo => {
            let conns = match open_many(&dialer, opts.conns).await {
                Ok(conns) => conns,
                Err(error) => return (failed(&opts, &error), 1),
            };
            let mut tasks = tokio::task::JoinSet::new();
            for conn in conns {
                tasks.spawn(echo_worker(conn, opts.clone(), stats.clone()));
            }
            let window = measure(&opts, &stats).await;
            if tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_err()
            {
                stats.error(format!(
                    "{} connections did not finish in time",
                    tasks.len()
                ));
            }
            window
        }
        Mode::Handshakes => {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..opts.conns {
                tasks.spawn(handshake_worker(dialer.clone(), stats.clone()));
            }
            let window = measure(&opts, &stats).await;
            if tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_err()
            {
                stats.error("handshake workers did not finish in time");
            }
            window
        }
        Mode::Idle => {
            // The baseline is a warm server: [`RAMP`] connections, opened as the measured
            // ones are, stay open through the run, so the code pages, per-thread pools and
            // allocator arenas that any first connections bring in are in the baseline and
            // the figure is what each further connection adds.
            let warm = match open_many(&dialer, RAMP).await {
                Ok(conns) => conns,
                Err(error) => return (failed(&opts, &error), 1),
            };
            tokio::time::sleep(opts.hold).await;
            let before = opts.server_pid.and_then(rss_kib);
            let started = Instant::now();
            let conns = match open_many(&dialer, opts.conns).await {
                Ok(conns) => conns,
                Err(error) => return (failed(&opts, &error), 1),
            };
            let open_secs = started.elapsed().as_secs_f64();
            tokio::time::sleep(opts.hold).await;
            let after = opts.server_pid.and_then(rss_kib);
            if let (Some(before), Some(after)) = (before, after) {
                extra = format!(
                    r#","rss_before_kib":{before},"rss_after_kib":{after},"bytes_per_conn":{:.0},"open_secs":{open_secs:.2}"#,
                    (after.saturating_sub(before) * 1024) as f64 / opts.conns as f64
                );
            }
            drop(conns);
            drop(warm);
            Window {
                secs: 0.0,
                ticks: None,
            }
        }
        Mode::Fanout => {
            let fan = Arc::new(Fan {
                subscribers: opts.conns as u64,
                window: opts.window,
                slots: (0..opts.window).map(|_| AtomicU64::new(0)).collect(),
                done: AtomicU64::new(0),
                progress: Notify::new(),
                total: AtomicU64::new(0),
                epoch: Instant::now(),
            });
            let mut conns = match open_many(&dialer, opts.conns).await {
                Ok(conns) => conns,
                Err(error) => return (failed(&opts, &error), 1),
            };
            let mut publisher_conn = match dialer.connect().await {
                Ok(conn) => conn,
                Err(error) => return (failed(&opts, &error), 1),
            };
            if opts.dialect == Dialect::V1 {
                let setup = futures_util::stream::iter(conns.iter_mut())
                    .map(|conn| v1_setup(conn, true))
                    .buffer_unordered(RAMP)
                    .collect::<Vec<_>>()
                    .await;
                if let Some(Err(error)) = setup.into_iter().find(Result::is_err) {
                    return (failed(&opts, &error), 1);
                }
                if let Err(error) = v1_setup(&mut publisher_conn, false).await {
                    return (failed(&opts, &error), 1);
                }
            }
            let mut subscribers = tokio::task::JoinSet::new();
            for conn in conns {
                subscribers.spawn(subscriber(conn, opts.clone(), fan.clone(), stats.clone()));
            }
            let publishing = tokio::spawn(publisher(
                publisher_conn,
                opts.clone(),
                fan.clone(),
                stats.clone(),
            ));
            let window = measure(&opts, &stats).await;
            let sent = publishing.await.unwrap_or(0);
            let drained = tokio::time::timeout(DRAIN, async {
                while fan.done.load(Ordering::Relaxed) < sent {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(50), fan.progress.notified())
                            .await;
                }
            })
            .await;
            let expected = sent * opts.conns as u64;
            let got = fan.total.load(Ordering::Relaxed);
            if drained.is_err() || got != expected {
                stats.error(format!(
                    "{} of {expected} deliveries missing after the drain",
                    expected.saturating_sub(got)
                ));
            }
            subscribers.abort_all();
            extra = format!(r#","publications":{sent}"#);
            window
        }
    };
    (
        report(&opts, &stats, &window, &extra),
        stats.errors.load(Ordering::Relaxed),
    )
}

fn failed(opts: &Opts, error: &str) -> String {
    format!(
        r#"{{"mode":"{:?}","errors":1,"first_error":{:?}}}"#,
        opts.mode, error
    )
}

fn report(opts: &Opts, stats: &Stats, window: &Window, extra: &str) -> String {
    let counted = stats.counted.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    let mut out = format!(
        r#"{{"mode":"{:?}","errors":{errors},"count":{counted},"secs":{:.3},"per_sec":{:.1}"#,
        opts.mode,
        window.secs,
        if window.secs > 0.0 {
            counted as f64 / window.secs
        } else {
            0.0
        }
    );
    if let Some((user, system)) = window.ticks {
        let ticks = user + system;
        let cpu_ns = ticks as f64 * 1e9 / opts.clk_tck as f64;
        out.push_str(&format!(
            r#","server_ticks":{ticks},"server_user_ticks":{user},"cpu_ns_per_op":{:.1}"#,
            if counted > 0 {
                cpu_ns / counted as f64
            } else {
                0.0
            }
        ));
    }
    if let Some(h) = stats.latency.lock().unwrap().as_ref() {
        if !h.is_empty() {
            out.push_str(&format!(
                r#","p50_us":{:.1},"p99_us":{:.1},"max_us":{:.1}"#,
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.max() as f64 / 1e3
            ));
        }
    }
    if let Some(first) = stats.first_error.lock().unwrap().as_ref() {
        out.push_str(&format!(r#","first_error":{first:?}"#));
    }
    out.push_str(extra);
    out.push('}');
    out
}
