//! The axum 0.8 extractor (feature `axum`).
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use axum::response::Response;
//! use duplex::axum::WebSocketUpgrade;
//!
//! async fn chat(upgrade: WebSocketUpgrade) -> Response {
//!     upgrade.protocols(["chat.v1"]).on_upgrade(|mut ws| async move {
//!         while let Some(Ok(message)) = ws.recv().await {
//!             if ws.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! let app: Router = Router::new().route("/chat", get(chat));
//! ```

use crate::config::WebSocketConfig;
use crate::hyper::{response_with, PendingUpgrade, UpgradedIo};
use crate::websocket::WebSocket;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use duplex_proto::handshake::{self, ServerUpgrade};
use duplex_proto::HandshakeError;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use hyper::upgrade::OnUpgrade;
use std::future::Future;
use std::sync::Arc;
use tracing::debug;

/// Extracts a WebSocket upgrade request; answer it with [`on_upgrade`](Self::on_upgrade).
///
/// The request is validated by the same [`handshake::accept`] as every other entry point;
/// an invalid one is rejected with its status ([`WebSocketRejection`]).
pub struct WebSocketUpgrade {
    request: Request<()>,
    upgrade: ServerUpgrade,
    on_upgrade: OnUpgrade,
    config: Arc<WebSocketConfig>,
    headers: HeaderMap,
    /// A failure found after extraction (a new config the request does not fit).
    failed: Option<HandshakeError>,
}

impl std::fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("upgrade", &self.upgrade)
            .finish_non_exhaustive()
    }
}

/// A request that cannot be upgraded; responds with the handshake error's status and message.
#[derive(Debug)]
pub struct WebSocketRejection(pub HandshakeError);

impl IntoResponse for WebSocketRejection {
    fn into_response(self) -> Response {
        debug!(status = %self.0.status(), "rejecting WebSocket upgrade: {}", self.0.message());
        self.0.response().map(Body::from)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = WebSocketRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut request = Request::new(());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        let config = crate::config::shared_default();
        let upgrade = handshake::accept(&request, &config.proto).map_err(WebSocketRejection)?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            WebSocketRejection(HandshakeError::new(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded (HTTP/1.1 with hyper is needed)",
            ))
        })?;
        Ok(Self {
            request,
            upgrade,
            on_upgrade,
            config,
            headers: HeaderMap::new(),
            failed: None,
        })
    }
}

impl WebSocketUpgrade {
    /// The request (method, URI, headers), without body.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// What the handshake negotiated so far; [`select_protocol`](ServerUpgrade::select_protocol)
    /// and [`origin`](ServerUpgrade::origin) live here.
    pub fn upgrade_mut(&mut self) -> &mut ServerUpgrade {
        &mut self.upgrade
    }

    /// Uses this configuration instead of the default (limits, deflate, buffering, timers).
    ///
    /// Pass an `Arc<WebSocketConfig>` made once to share it among connections: each keeps
    /// a reference instead of a copy (a smaller connection, and one configuration in the
    /// cache for all of them).
    pub fn config(mut self, config: impl Into<Arc<WebSocketConfig>>) -> Self {
        let config = config.into();
        if let Err(e) = config.validate() {
            self.failed = Some(HandshakeError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ));
            return self;
        }
        // Deflate negotiation depends on the configuration: negotiate again.
        match handshake::accept(&self.request, &config.proto) {
            Ok(mut upgrade) => {
                if let Some(protocol) = self.upgrade.protocol() {
                    let _ = upgrade.select_protocol(protocol);
                }
                self.upgrade = upgrade;
            }
            Err(e) => self.failed = Some(e),
        }
        self.config = config;
        self
    }

    /// Selects the first subprotocol the client offered (in its order of preference) that
    /// is also in `protocols`; without a match the response names none.
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let ours: Vec<I::Item> = protocols.into_iter().collect();
        let chosen = self
            .upgrade
            .protocols()
            .iter()
            .find(|offered| ours.iter().any(|p| p.as_ref() == offered.as_str()))
            .cloned();
        if let Some(protocol) = chosen {
            // It was offered, so selecting it cannot fail.
            let _ = self.upgrade.select_protocol(&protocol);
        }
        self
    }

    /// The subprotocol that will be answered, if any.
    pub fn selected_protocol(&self) -> Option<&str> {
        self.upgrade.protocol()
    }

    /// Adds a header to the `101` response (handshake headers are skipped).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Answers `101 Switching Protocols` and runs `callback` with the WebSocket in a new task
    /// once hyper hands the connection over.
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(WebSocket<UpgradedIo>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if let Some(error) = self.failed {
            return WebSocketRejection(error).into_response();
        }
        let response = response_with(&self.upgrade, self.headers);
        let pending = PendingUpgrade::new(self.on_upgrade, self.upgrade.deflate(), self.config);
        tokio::spawn(async move {
            match pending.await {
                Ok(ws) => callback(ws).await,
                Err(error) => debug!(%error, "WebSocket upgrade did not complete"),
            }
        });
        response.map(|()| Body::empty())
    }
}
