//! `duplex echo`: an echo server.

use crate::size::parse_size;
use anyhow::Context as _;
use duplex::tls::ServerTlsStream as TlsStream;
use duplex::tls::TlsAcceptor;
use duplex::Message;
use duplex::{CloseCode, Config, DeflateConfig, ServerBuilder, WebSocket, WebSocketConfig};
use futures_util::{Sink, Stream};
use pin_project_lite::pin_project;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
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
    let listener = crate::listen(args.listen).await?;
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
    STOPPING.store(true, Ordering::Release);
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

/// What one connection starts with. Boxed, and taken apart by the boxed handshake, so the
/// task of an idle connection keeps none of it.
struct Accepted {
    tcp: TcpStream,
    builder: ServerBuilder,
}

/// One plain connection: the handshake, then echo.
fn serve(
    accepted: Box<Accepted>,
    conn_id: u64,
    shutdown: CancellationToken,
) -> EchoConnection<TcpStream> {
    EchoConnection::new(
        Box::pin(async move {
            let Accepted { tcp, builder } = *accepted;
            handshake(builder, tcp).await
        }),
        conn_id,
        shutdown,
    )
}

/// One TLS connection: the TLS handshake, the WebSocket handshake, then echo.
fn serve_tls(
    accepted: Box<Accepted>,
    acceptor: TlsAcceptor,
    conn_id: u64,
    shutdown: CancellationToken,
) -> EchoConnection<TlsStream<TcpStream>> {
    EchoConnection::new(
        Box::pin(async move {
            let Accepted { tcp, builder } = *accepted;
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => handshake(builder, tls).await,
                Ok(Err(error)) => Err(duplex::Error::Io(error)),
                Err(_) => Err(duplex::Error::Timeout("TLS handshake")),
            }
        }),
        conn_id,
        shutdown,
    )
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

type BoxedHandshake<S> =
    Pin<Box<dyn Future<Output = Result<WebSocket<S>, duplex::Error>> + Send + 'static>>;
type BoxedClose = Pin<Box<dyn Future<Output = Result<(), duplex::Error>> + Send + 'static>>;

pin_project! {
    /// The task of one connection, polled by hand rather than written as an `async fn`: the
    /// task of every idle connection holds this future, and a state machine with exactly the
    /// fields it needs is 144 bytes (152 with the task tracker's token) where the `async fn`
    /// was 304: a compiler-made future keeps room for every local that lives across an
    /// await. At 152 bytes or less, tokio's task cell (104 bytes of its own plus the future,
    /// rounded up to 128) is 256 bytes instead of 512 (docs/performance.md,
    /// "Optimisations (issue 7)", fourth pass).
    struct EchoConnection<S> {
        // Made once, not once per wait: each new one would register with the token, and
        // deregister when dropped, under its lock.
        #[pin]
        stop: WaitForCancellationFutureOwned,
        phase: EchoPhase<S>,
        conn_id: u64,
        // `stop` was polled once, so cancelling the token wakes this task.
        stop_armed: bool,
    }
}

/// Raised just before the shutdown token is cancelled. A connection waiting for a message
/// polls its `stop` future once, to be woken by it, and after that only once this is up:
/// each poll of it takes the token's lock and its `Notify`'s, and a connection waits once
/// per message. The waker `stop` keeps stays valid: an `EchoConnection` is always a task of
/// its own (spawned in [`run`]), so every poll comes with that task's waker.
static STOPPING: AtomicBool = AtomicBool::new(false);

enum EchoPhase<S> {
    /// The opening handshake (and the TLS one), boxed: it is large, and freed once done.
    Handshake(BoxedHandshake<S>),
    Open {
        ws: WebSocket<S>,
        step: Step,
    },
    /// Closing with 1001 at shutdown; boxed, as it happens once.
    Closing(BoxedClose),
    Done,
}

/// Where an open connection is in its loop.
enum Step {
    /// Waiting for the next message (or the stop signal).
    Receive,
    /// Echoing this message; those that arrived with it follow before one flush, so a
    /// pipelined burst goes back in one write.
    Send(Message),
    /// Writing what was queued.
    Flush,
}

impl<S> EchoConnection<S> {
    fn new(handshake: BoxedHandshake<S>, conn_id: u64, shutdown: CancellationToken) -> Self {
        Self {
            stop: shutdown.cancelled_owned(),
            stop_armed: false,
            phase: EchoPhase::Handshake(handshake),
            conn_id,
        }
    }
}

impl<S> Future for EchoConnection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let result = ready!(poll_phase(this.phase, this.stop, this.stop_armed, cx));
        *this.phase = EchoPhase::Done;
        match result {
            Ok(()) => debug!(conn = *this.conn_id, "connection closed"),
            Err(error) => debug!(conn = *this.conn_id, %error, "connection ended with an error"),
        }
        Poll::Ready(())
    }
}

/// Runs the connection until it ends: echo every message, and close with 1001 once `stop`
/// fires while waiting for one. A message that is ready is taken without looking at `stop`.
fn poll_phase<S>(
    phase: &mut EchoPhase<S>,
    mut stop: Pin<&mut WaitForCancellationFutureOwned>,
    stop_armed: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(), duplex::Error>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    loop {
        match phase {
            EchoPhase::Handshake(handshake) => {
                let ws = ready!(handshake.as_mut().poll(cx))?;
                *phase = EchoPhase::Open {
                    ws,
                    step: Step::Receive,
                };
            }
            EchoPhase::Open { ws, step } => match step {
                Step::Receive => match Pin::new(&mut *ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(message))) => *step = Step::Send(message),
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => {
                        if *stop_armed && !STOPPING.load(Ordering::Acquire) {
                            return Poll::Pending;
                        }
                        *stop_armed = true;
                        ready!(stop.as_mut().poll(cx));
                        let EchoPhase::Open { mut ws, .. } =
                            std::mem::replace(phase, EchoPhase::Done)
                        else {
                            unreachable!("matched as open just above")
                        };
                        *phase = EchoPhase::Closing(Box::pin(async move {
                            ws.close(CloseCode::GOING_AWAY, "server shutting down")
                                .await
                        }));
                    }
                },
                Step::Send(_) => {
                    let mut room = ready!(Pin::new(&mut *ws).poll_ready(cx));
                    let Step::Send(mut message) = std::mem::replace(step, Step::Flush) else {
                        unreachable!("matched as sending just above")
                    };
                    // This message and those that arrived with it, each kept in a local
                    // while there is room (most of a pipelined burst) rather than stored
                    // back into `step` and matched again.
                    loop {
                        match room.and_then(|()| Pin::new(&mut *ws).start_send(message)) {
                            Ok(()) => {}
                            // The peer's close frame came right behind this message: stop
                            // feeding, flush what was queued, and the next receive
                            // completes the close handshake (or reports the end, if the
                            // peer is gone).
                            Err(duplex::Error::Send(_)) => break,
                            Err(error) => return Poll::Ready(Err(error)),
                        }
                        let Some(next) = ws.try_recv() else {
                            break;
                        };
                        match Pin::new(&mut *ws).poll_ready(cx) {
                            Poll::Ready(result) => (room, message) = (result, next),
                            Poll::Pending => {
                                *step = Step::Send(next);
                                return Poll::Pending;
                            }
                        }
                    }
                }
                Step::Flush => {
                    ready!(Pin::new(&mut *ws).poll_flush(cx))?;
                    *step = Step::Receive;
                }
            },
            EchoPhase::Closing(close) => return close.as_mut().poll(cx),
            EchoPhase::Done => return Poll::Ready(Ok(())),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::task::task_tracker::TrackedFuture;

    /// tokio's task cell is its 104 bytes plus the future, rounded up to 128 bytes: a future
    /// (with the tracker's token) of at most 152 bytes makes an idle connection's task 256
    /// bytes, not 384 or 512.
    #[test]
    fn an_idle_connection_task_fits_in_256_bytes() {
        let plain = size_of::<TrackedFuture<EchoConnection<TcpStream>>>();
        let tls = size_of::<TrackedFuture<EchoConnection<TlsStream<TcpStream>>>>();
        assert!(plain <= 152, "plain connection future: {plain} bytes");
        assert!(tls <= 152, "TLS connection future: {tls} bytes");
    }
}
