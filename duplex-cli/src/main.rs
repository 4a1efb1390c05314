//! `duplex`: the command-line face of the duplex WebSocket engine.
//!
//! * `duplex serve` — the real-time hub (channels, rooms, JWT, HTTP API);
//! * `duplex echo` — an echo server (the Autobahn server-role target);
//! * `duplex connect URL` — a pipe between stdin/stdout and a WebSocket;
//! * `duplex bench MODE URL` — a load generator that checks every answer.

/// jemalloc (the default feature `jemalloc`) rather than the system's malloc. tokio aligns its
/// task cells and I/O records to 128 bytes; glibc serves those with `memalign`, which pads
/// each and leaves the padding in fragments, where jemalloc's size classes are naturally
/// aligned. With it, an idle `duplex echo` connection is about 20 % smaller and an idle hub
/// member about 13 %, and a pipelined message takes about 11 % fewer instructions, a
/// handshake 10 % and a fan-out delivery 3 % (docs/performance.md, ninth pass).
#[cfg(all(
    feature = "jemalloc",
    not(feature = "mimalloc"),
    not(target_env = "msvc")
))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// With `--features mimalloc`: mimalloc instead. `duplex echo`'s idle connections are smaller
/// than with the system's malloc and its messages cheaper, but an idle raw-room member of
/// `duplex serve` is 13–20 % larger, so it is not the default (docs/performance.md, second
/// pass).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod connect;
mod echo;
mod serve;
mod size;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// How long `serve` and `echo` let a new connection stay silent before accepting it anyway
/// (`TCP_DEFER_ACCEPT`, see [`duplex::net::defer_accept`]); a client silent for longer then
/// meets the handshake timeout.
const DEFER_ACCEPT: Duration = Duration::from_secs(1);

/// The listener of `serve` and `echo`. Clients speak first, so a connection is accepted once
/// its request is in (one wake-up, not two).
async fn listen(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    if let Err(error) = duplex::net::defer_accept(&listener, DEFER_ACCEPT) {
        tracing::warn!(%error, "TCP_DEFER_ACCEPT is not available; accepting connections at once");
    }
    Ok(listener)
}

/// WebSocket tools built on duplex.
#[derive(Debug, Parser)]
#[command(
    name = "duplex",
    version,
    after_help = "EXIT STATUS:\n  0  the connection (or the server) ended cleanly: close handshake done, or \
                  SIGTERM/SIGINT handled\n  1  any error: connect, TLS, handshake, protocol, IO, timeout\n  \
                  2  invalid command line\n\nLOGGING:\n  Logs go to stderr; set DUPLEX_LOG (e.g. \
                  DUPLEX_LOG=debug) to change the filter (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text`, or `json` (one object per line, for log collectors).
    #[arg(
        long,
        global = true,
        env = "DUPLEX_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the real-time hub: channels and the duplex.v1 protocol at /ws, raw rooms at
    /// /rooms/{room}, /echo, the HTTP API, metrics; in-memory broker; demo pages at /.
    Serve(Box<serve::ServeArgs>),
    /// Run a WebSocket echo server: every message comes back unchanged (text as text,
    /// binary as binary).
    Echo(echo::EchoArgs),
    /// Connect to a WebSocket server. At a terminal: interactive, with line editing and
    /// slash commands (/ping, /close, /binary, /file, /quit). Otherwise stdin lines become
    /// text messages and received messages become stdout lines (binary as hex), or JSON
    /// lines with --jsonl; at end of input, close with 1000 and exit once the server answers.
    Connect(connect::ConnectArgs),
    /// Load a server and check every answer: echo round trips, handshakes, idle
    /// connections, hub fan-out and rooms. Exits 1 when any message came back wrong.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("DUPLEX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal (and never when NO_COLOR is set), so logs
    // captured by scripts and service managers stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(ansi).init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("duplex: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => on_worker(serve::run(*args)).await,
            Command::Echo(args) => on_worker(echo::run(args)).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    // Blocking stdin reads may still be pending; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("duplex: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a server's accept loop as a task of the runtime rather than in `block_on` on the
/// main thread: a connection's task spawned from a worker goes to that worker's own queue,
/// while one spawned from the main thread has to wake a worker (`futex` calls under strace,
/// gone with this) for connections accepted while it sleeps.
async fn on_worker(
    server: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    match tokio::spawn(server).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(anyhow::anyhow!("the server task ended: {error}")),
    }
}
