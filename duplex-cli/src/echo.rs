//! `duplex echo`: an echo server.

use crate::size::parse_size;
use anyhow::Context as _;
use duplex::tls::TlsAcceptor;
use duplex::{CloseCode, Config, DeflateConfig, ServerBuilder, WebSocket, WebSocketConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// How long open connections get to finish their close handshakes at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Options of `duplex echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Address to listen on. Port 0 picks a free port; the ready line
    /// `listening on ADDR` on stderr shows the one bound.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Do not accept permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Serve wss://: PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// Serve wss://: PEM private key (with --tls-cert).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Largest message and frame accepted (16MiB, 64KiB, bytes...).
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    max_message_size: usize,
}

/// Serves until SIGTERM or SIGINT, then closes every connection with 1001.
pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let deflate = (!args.no_deflate).then(DeflateConfig::default);
    let proto = Config::default()
        .with_max_message_size(args.max_message_size)
        .with_max_frame_size(args.max_message_size)
        .with_deflate(deflate);
    let config = WebSocketConfig::default().with_proto(proto);
    config.validate().context("invalid limits")?;
    let builder = ServerBuilder::new().config(config);
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(
            duplex::tls::server_config(cert, key).context("loading the TLS certificate")?,
        )),
        _ => None,
    };
    // Listen for signals before saying we are ready, so an early SIGTERM is not lost.
    let mut stop = Signals::new()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    eprintln!("listening on {local}");
    info!(
        tls = acceptor.is_some(),
        deflate = !args.no_deflate,
        "echo server ready"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // A tracker rather than a JoinSet: it keeps no per-connection entry (an idle connection
    // costs only its task), and finished tasks need no reaping.
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            signal = stop.recv() => {
                info!(signal, "stopping: no new connections, closing open ones with 1001");
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(serve(
                        tcp,
                        peer,
                        builder.clone(),
                        acceptor.clone(),
                        shutdown_rx.clone(),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors and the like: ours to report, then breathe.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    connections.close();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
    if drained.is_err() {
        warn!(
            open = connections.len(),
            "connections still open after the grace period; dropping them"
        );
    }
    Ok(())
}

static SERVER: duplex::http::HeaderValue =
    duplex::http::HeaderValue::from_static(concat!("duplex/", env!("CARGO_PKG_VERSION")));

/// One connection: optional TLS, the handshake, then echo.
async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    builder: ServerBuilder,
    acceptor: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let result = match acceptor {
        // Boxed: a TLS session's state is large, and this task's future (which every idle
        // connection holds) would otherwise reserve room for it on plain connections too.
        Some(acceptor) => Box::pin(tls_echo(builder, tcp, acceptor, shutdown)).await,
        None => echo_on(builder, tcp, shutdown).await,
    };
    match result {
        Ok(()) => debug!(%peer, "connection closed"),
        Err(error) => debug!(%peer, %error, "connection ended with an error"),
    }
}

async fn tls_echo(
    builder: ServerBuilder,
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    shutdown: watch::Receiver<bool>,
) -> Result<(), duplex::Error> {
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => echo_on(builder, tls, shutdown).await,
        Ok(Err(error)) => Err(duplex::Error::Io(error)),
        Err(_) => Err(duplex::Error::Timeout("TLS handshake")),
    }
}

async fn echo_on<S>(
    builder: ServerBuilder,
    stream: S,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), duplex::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Name ourselves in the 101 response (Autobahn files its report under this name).
    let mut ws = builder
        .accept_with(stream, |_request, _upgrade, headers| {
            headers.insert(duplex::http::header::SERVER, SERVER.clone());
            Ok(())
        })
        .await?;
    echo(&mut ws, &mut shutdown).await
}

async fn echo<S>(
    ws: &mut WebSocket<S>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), duplex::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Made once, not once per message: each new one would register with the shared
    // channel, and deregister when dropped, under its lock.
    let stop = async { drop(shutdown.wait_for(|&stop| stop).await) };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            message = ws.recv() => match message {
                Some(Ok(message)) => echo_burst(ws, message).await?,
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
            () = &mut stop => {
                // Boxed: happens once, and this task's future, which every idle connection
                // holds, would otherwise reserve room for the close timer.
                return Box::pin(ws.close(CloseCode::GOING_AWAY, "server shutting down")).await;
            }
        }
    }
}

/// Echoes `first` and every message that arrived with it, then flushes once: a pipelined
/// burst goes back in one write.
async fn echo_burst<S>(ws: &mut WebSocket<S>, first: duplex::Message) -> Result<(), duplex::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next = Some(first);
    while let Some(message) = next {
        match ws.feed(message).await {
            // The peer's close frame came right behind this message; the next recv()
            // flushes what was fed and completes the close handshake.
            Err(duplex::Error::Send(_)) => return Ok(()),
            other => other?,
        }
        next = ws.try_recv();
    }
    ws.flush().await
}

/// SIGTERM and SIGINT.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal; returns its name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}
