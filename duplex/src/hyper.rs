//! Upgrading a hyper 1.x request (feature `hyper`).
//!
//! The request is validated by the same [`handshake::accept`] as raw TCP servers use. On
//! success you answer with the returned `101` response and await the [`PendingUpgrade`],
//! which resolves once hyper hands over the connection.
//!
//! ```no_run
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper::{Request, Response};
//!
//! async fn handle(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
//!     match duplex::hyper::upgrade(&mut request, duplex::WebSocketConfig::default()) {
//!         Ok((response, pending)) => {
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = pending.await else { return };
//!                 while let Some(Ok(message)) = ws.recv().await {
//!                     if ws.send(message).await.is_err() {
//!                         break;
//!                     }
//!                 }
//!             });
//!             Ok(response)
//!         }
//!         Err(rejection) => Ok(rejection.response().map(Full::from)),
//!     }
//! }
//! ```
//!
//! [`handshake::accept`]: duplex_proto::handshake::accept

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::websocket::WebSocket;
use bytes::Bytes;
use duplex_proto::handshake::{self, ServerUpgrade};
use duplex_proto::{Connection, DeflateParams, HandshakeError, Role};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, Request, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::net::TcpStream;
pub use tokio_util::either::Either;

/// The transport of a WebSocket upgraded from hyper.
///
/// When hyper served the connection over `hyper_util::rt::TokioIo<TcpStream>` with
/// `hyper::server::conn::http1` (as `duplex serve` does), this is [`Either::Left`]: the TCP
/// stream itself, taken back from hyper, so reads and writes go to the socket directly, not
/// through hyper's `Upgraded` (a boxed, dynamically dispatched transport with its own
/// buffer of bytes read ahead, behind two adapters between tokio's and hyper's I/O traits),
/// which costs every read and every write. The bytes hyper had read ahead are handed to the
/// WebSocket, not lost. Any other transport is [`Either::Right`], hyper's `Upgraded`: TLS,
/// and also `axum::serve`, whose `hyper_util` auto builder wraps the stream in a private
/// type.
pub type UpgradedIo = Either<TcpStream, TokioIo<Upgraded>>;

/// Takes the TCP stream back from hyper when it is one; returns the bytes hyper had read
/// past the request.
fn take_transport(upgraded: Upgraded) -> (UpgradedIo, Bytes) {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (Either::Left(parts.io.into_inner()), parts.read_buf),
        Err(upgraded) => (Either::Right(TokioIo::new(upgraded)), Bytes::new()),
    }
}

/// Validates `request` as a WebSocket upgrade and prepares to take the connection over.
///
/// Returns the `101 Switching Protocols` response to send (the body type is any `Default`
/// body: `Full<Bytes>`, `Empty<Bytes>`, axum's `Body`...) and a future that resolves to the
/// WebSocket once hyper has sent the response. `config` may be an `Arc` made once and
/// shared by every connection: each keeps a reference instead of a copy.
///
/// # Errors
/// The [`HandshakeError`] to answer with: `response()` gives the HTTP response.
pub fn upgrade<B, R: Default>(
    request: &mut Request<B>,
    config: impl Into<Arc<WebSocketConfig>>,
) -> Result<(Response<R>, PendingUpgrade), HandshakeError> {
    upgrade_with(request, config, |_, _, _| Ok(()))
}

/// [`upgrade`] with a callback that sees the request and the [`ServerUpgrade`] (select a
/// subprotocol, check the `Origin`) and may add response headers; an error rejects the
/// request with its status.
///
/// # Errors
/// The [`HandshakeError`] from the checks or from the callback.
pub fn upgrade_with<B, R, F>(
    request: &mut Request<B>,
    config: impl Into<Arc<WebSocketConfig>>,
    callback: F,
) -> Result<(Response<R>, PendingUpgrade), HandshakeError>
where
    R: Default,
    F: FnOnce(&Request<B>, &mut ServerUpgrade, &mut HeaderMap) -> Result<(), HandshakeError>,
{
    let config = config.into();
    config
        .validate()
        .map_err(|e| HandshakeError::new(http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut upgrade = handshake::accept(request, &config.proto)?;
    let mut headers = HeaderMap::new();
    callback(request, &mut upgrade, &mut headers)?;
    let on_upgrade = hyper::upgrade::on(request);
    let response = response_with(&upgrade, headers).map(|()| R::default());
    Ok((
        response,
        PendingUpgrade {
            on_upgrade,
            deflate: upgrade.deflate(),
            config: Some(config),
        },
    ))
}

/// The `101` response of `upgrade` plus extra headers, minus those that would contradict
/// the handshake.
pub(crate) fn response_with(upgrade: &ServerUpgrade, extra: HeaderMap) -> Response<()> {
    let mut response = upgrade.response();
    let mut last: Option<HeaderName> = None;
    for (name, value) in extra {
        // HeaderMap's IntoIterator yields the name only with the first of its values.
        if let Some(name) = name {
            last = Some(name);
        }
        let Some(name) = &last else { continue };
        if !is_handshake_header(name) {
            response.headers_mut().append(name.clone(), value);
        }
    }
    response
}

fn is_handshake_header(name: &HeaderName) -> bool {
    name == UPGRADE
        || name == CONNECTION
        || name == CONTENT_LENGTH
        || name == TRANSFER_ENCODING
        || name.as_str().starts_with("sec-websocket-")
}

/// Resolves to the WebSocket once hyper hands the upgraded connection over.
#[must_use = "the WebSocket only exists once this future is awaited"]
pub struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    deflate: Option<DeflateParams>,
    config: Option<Arc<WebSocketConfig>>,
}

impl PendingUpgrade {
    pub(crate) fn new(
        on_upgrade: OnUpgrade,
        deflate: Option<DeflateParams>,
        config: Arc<WebSocketConfig>,
    ) -> Self {
        Self {
            on_upgrade,
            deflate,
            config: Some(config),
        }
    }
}

impl std::fmt::Debug for PendingUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingUpgrade").finish_non_exhaustive()
    }
}

impl Future for PendingUpgrade {
    type Output = Result<WebSocket<UpgradedIo>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let upgraded = ready!(Pin::new(&mut self.on_upgrade).poll(cx)).map_err(Error::Upgrade)?;
        let config = self.config.take().ok_or(Error::ConnectionClosed)?;
        let conn = Connection::with_deflate(
            Role::Server,
            crate::config::shared_proto(&config.proto),
            self.deflate,
        );
        let (io, read_ahead) = take_transport(upgraded);
        Poll::Ready(Ok(WebSocket::from_parts(io, conn, config, &read_ahead)))
    }
}
