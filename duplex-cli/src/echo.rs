//! `duplex echo`: an echo server.

use crate::size::parse_size;
use anyhow::Context as _;
use duplex::tls::TlsAcceptor;
use duplex::{CloseCode, Config, DeflateConfig, ServerBuilder, WebSocket, WebSocketConfig};
use futures_util::{Sink, Stream};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
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

    let shutdown = CancellationToken::new();
    // A tracker rather than a JoinSet: it keeps no per-connection entry (an idle connection
    // costs only its task), and finished tasks need no reaping.
    let connections = TaskTracker::new();
    let mut conn_id: u64 = 0;
    loop {
        tokio::select! {
            signal = stop.recv() => {
                info!(signal, "stopping: no new connections, closing open ones with 1001");
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let accepted = Box::new(Accepted {
                        tcp,
                        builder: builder.clone(),
                    });
                    // A number, not the address, goes with the connection: 8 bytes
                    // instead of 32 in every idle connection's task.
                    conn_id += 1;
                    debug!(conn = conn_id, %peer, "connection accepted");
                    let shutdown = shutdown.clone();
                    // Two kinds of task, so a plain connection's holds nothing of TLS.
                    match &acceptor {
                        Some(acceptor) => connections.spawn(serve_tls(
                            accepted,
                            acceptor.clone(),
                            conn_id,
                            shutdown,
                        )),
                        None => connections.spawn(serve(accepted, conn_id, shutdown)),
                    };
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
    shutdown.cancel();
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

/// What one connection starts with. Boxed, and taken apart by the boxed handshake: an
/// async function keeps its arguments for as long as it runs, so each would otherwise stay
/// in the future of every idle connection.
struct Accepted {
    tcp: TcpStream,
    builder: ServerBuilder,
}

/// One plain connection: the handshake, then echo.
async fn serve(accepted: Box<Accepted>, conn_id: u64, shutdown: CancellationToken) {
    let result = match Box::pin(plain_handshake(accepted)).await {
        Ok(mut ws) => echo(&mut ws, &shutdown).await,
        Err(error) => Err(error),
    };
    log_end(conn_id, result);
}

/// One TLS connection: the TLS handshake, the WebSocket handshake, then echo.
async fn serve_tls(
    accepted: Box<Accepted>,
    acceptor: TlsAcceptor,
    conn_id: u64,
    shutdown: CancellationToken,
) {
    // Boxed: a TLS session's state is large; the task's future stays as small as a plain
    // connection's, and the box goes with the session.
    log_end(
        conn_id,
        Box::pin(tls_echo(accepted, acceptor, shutdown)).await,
    );
}

fn log_end(conn_id: u64, result: Result<(), duplex::Error>) {
    match result {
        Ok(()) => debug!(conn = conn_id, "connection closed"),
        Err(error) => debug!(conn = conn_id, %error, "connection ended with an error"),
    }
}

async fn tls_echo(
    accepted: Box<Accepted>,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) -> Result<(), duplex::Error> {
    let Accepted { tcp, builder } = *accepted;
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => echo(&mut handshake(builder, tls).await?, &shutdown).await,
        Ok(Err(error)) => Err(duplex::Error::Io(error)),
        Err(_) => Err(duplex::Error::Timeout("TLS handshake")),
    }
}

/// The handshake of a plain connection; frees what it started with.
async fn plain_handshake(accepted: Box<Accepted>) -> Result<WebSocket<TcpStream>, duplex::Error> {
    let Accepted { tcp, builder } = *accepted;
    handshake(builder, tcp).await
}

async fn handshake<S>(builder: ServerBuilder, stream: S) -> Result<WebSocket<S>, duplex::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Name ourselves in the 101 response (Autobahn files its report under this name).
    builder
        .accept_with(stream, |_request, _upgrade, headers| {
            headers.insert(duplex::http::header::SERVER, SERVER.clone());
            Ok(())
        })
        .await
}

async fn echo<S>(ws: &mut WebSocket<S>, shutdown: &CancellationToken) -> Result<(), duplex::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Made once, not once per message: each new one would register with the token, and
    // deregister when dropped, under its lock.
    let stop = shutdown.cancelled();
    tokio::pin!(stop);
    loop {
        // Hand-polled rather than `select!`ed: a message that is ready is taken without
        // looking at the stop signal, and the future that every idle connection holds stays
        // small (docs/performance.md, "Optimisations (issue 7)", second pass).
        let next = poll_fn(|cx| match Pin::new(&mut *ws).poll_next(cx) {
            Poll::Ready(next) => Poll::Ready(Some(next)),
            Poll::Pending => stop.as_mut().poll(cx).map(|()| None),
        })
        .await;
        let mut pending = match next {
            Some(Some(Ok(message))) => Some(message),
            Some(Some(Err(error))) => return Err(error),
            Some(None) => return Ok(()),
            // Boxed: happens once, and the future would otherwise reserve room for the
            // close timer.
            None => return Box::pin(ws.close(CloseCode::GOING_AWAY, "server shutting down")).await,
        };
        // Echo this message and every one that arrived with it, then flush once: a
        // pipelined burst goes back in one write.
        while pending.is_some() {
            let queued = poll_fn(|cx| {
                let ready = ready!(Pin::new(&mut *ws).poll_ready(cx));
                let message = pending.take().expect("taken only here, once ready");
                Poll::Ready(ready.and_then(|()| Pin::new(&mut *ws).start_send(message)))
            })
            .await;
            match queued {
                // The peer's close frame came right behind this message: stop feeding,
                // flush what was queued, and the next receive completes the close
                // handshake (or reports the end, if the peer is already gone).
                Err(duplex::Error::Send(_)) => break,
                other => other?,
            }
            pending = ws.try_recv();
        }
        poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx)).await?;
    }
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
