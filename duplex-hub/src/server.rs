//! The HTTP side: the accept loop, the routes, the checks made before an upgrade (origin,
//! token, limits) and graceful shutdown.

use crate::api;
use crate::auth::{token_from_request, Identity};
use crate::channel::ChannelName;
use crate::config::parse_origin;
use crate::node::{permitted, ConnectionGuard, Node, NodeError};
use crate::protocol::SUBPROTOCOL;
use crate::session::{self, Opening};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use duplex::axum::{WebSocketRejection, WebSocketUpgrade};
use duplex::{DeflateConfig, WebSocketConfig};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// A refusal before the upgrade: a status and a plain-text reason.
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
    retry_after: Option<&'static str>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        debug!(status = %self.status, "refusing: {}", self.message);
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        if let Some(after) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(after));
        }
        response
    }
}

fn refusal(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some("5"),
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    refusal(status, message).into_response()
}

/// Whether a browser at `origin` may open a WebSocket here.
pub(crate) fn origin_allowed(
    node: &Node,
    origin: Option<&str>,
    host: Option<&str>,
    tls: bool,
) -> bool {
    let Some(origin) = origin else {
        return true; // not a browser: Origin is a browser's promise, nothing to check
    };
    let settings = node.settings();
    if settings.allowed_origins.iter().any(|o| o == "*") {
        return true;
    }
    let Some((scheme, o_host, o_port)) = parse_origin(origin) else {
        return false; // "null" (sandboxed pages, file://) and garbage
    };
    if settings.allow_localhost_origins
        && (o_host == "localhost"
            || o_host.ends_with(".localhost")
            || o_host == "127.0.0.1"
            || o_host == "[::1]")
    {
        return true;
    }
    if let Some(host) = host.and_then(|h| h.parse::<http::uri::Authority>().ok()) {
        let port = host.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let same_scheme = (scheme == "https") == tls;
        if same_scheme && host.host().eq_ignore_ascii_case(&o_host) && port == o_port {
            return true;
        }
    }
    settings
        .allowed_origins
        .iter()
        .filter_map(|o| parse_origin(o))
        .any(|(s, h, p)| s == scheme && h == o_host && p == o_port)
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub node: Arc<Node>,
    pub tls: bool,
    /// The WebSocket settings every connection shares (made once from the node's).
    pub ws_config: Arc<WebSocketConfig>,
}

/// Checks made before any upgrade: shutdown, Origin, token, connection limit.
fn admit(
    state: &AppState,
    request: &Request<()>,
) -> Result<(Option<Identity>, ConnectionGuard), Refusal> {
    let node = &state.node;
    if node.is_draining() {
        return Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !origin_allowed(node, origin, host, state.tls) {
        node.metrics().origin_refusals.inc();
        return Err(refusal(
            StatusCode::FORBIDDEN,
            format!("origin {:?} is not allowed", origin.unwrap_or_default()),
        ));
    }
    let identity = match token_from_request(request) {
        Ok(None) => None,
        Ok(Some((token, _source))) => match node
            .settings()
            .authenticator()
            .verify(&token, SystemTime::now())
        {
            Ok(identity) => Some(identity),
            Err(error) => {
                node.metrics().auth_failure(if error.is_expired() {
                    "expired"
                } else {
                    "invalid"
                });
                return Err(refusal(
                    StatusCode::UNAUTHORIZED,
                    format!("token refused: {error}"),
                ));
            }
        },
        Err(error) => {
            node.metrics().auth_failure("invalid");
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                format!("token refused: {error}"),
            ));
        }
    };
    let Some(guard) = node.try_open_connection() else {
        return Err(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "too many connections".into(),
            retry_after: Some("1"),
        });
    };
    Ok((identity, guard))
}

/// The WebSocket settings of hub connections.
pub(crate) fn websocket_config(node: &Node) -> WebSocketConfig {
    let settings = node.settings();
    let limit = settings.limits.max_message_size;
    let mut proto = duplex::Config::default()
        .with_max_message_size(limit)
        .with_max_frame_size(limit);
    proto.deflate = settings.compression.then(|| {
        // No server context: a publication can be compressed once for every subscriber.
        // No client context either (RFC 7692 §7.1.1.1 lets the server ask for it even when
        // not offered): the inflater is released after each message, so an idle connection
        // keeps no zlib state (about 40 KiB otherwise).
        DeflateConfig::default()
            .with_server_no_context_takeover(true)
            .with_client_no_context_takeover(true)
    });
    let ping = settings.ping_interval();
    WebSocketConfig::default()
        .with_proto(proto)
        .with_ping_interval(ping)
        .with_idle_timeout(ping.map(|p| p + Duration::from_secs(settings.ping.timeout_secs)))
}

type Upgrade = Result<WebSocketUpgrade, WebSocketRejection>;

async fn ws_v1(State(state): State<AppState>, upgrade: Upgrade) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let (identity, guard) = match admit(&state, upgrade.request()) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let upgrade = upgrade
        .config(state.ws_config.clone())
        .protocols([SUBPROTOCOL]);
    if upgrade.selected_protocol() != Some(SUBPROTOCOL) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("/ws needs the subprotocol {SUBPROTOCOL}"),
        );
    }
    let node = state.node.clone();
    upgrade.on_upgrade(move |ws| session::run_v1(node, ws, Opening { identity, guard }))
}

async fn room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    upgrade: Upgrade,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let channel = match ChannelName::new(&format!("rooms:{room}")) {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::NOT_FOUND, format!("no such room: {e}")),
    };
    let Some(ns) = state.node.namespace(&channel).cloned() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "rooms are not configured (namespace \"rooms\")",
        );
    };
    let (identity, guard) = match admit(&state, upgrade.request()) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let id = identity.as_ref();
    let may_subscribe = permitted(
        &ns.subscribe,
        id,
        &channel,
        id.is_some_and(|i| i.may_subscribe(channel.as_str())),
    );
    if !may_subscribe {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("not allowed to join {channel}"),
        );
    }
    let may_publish = permitted(
        &ns.publish,
        id,
        &channel,
        id.is_some_and(|i| i.may_publish(channel.as_str())),
    );
    // Join before answering 101: once the client sees `open`, it receives every message.
    let member = match session::RoomMember::join(&state.node, channel, identity.as_ref()).await {
        Ok(member) => member,
        Err(NodeError::ChannelFull(channel)) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{channel} is full"),
            )
        }
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    upgrade
        .config(state.ws_config.clone())
        .protocols(["duplex.raw"])
        .on_upgrade(move |ws| session::run_room(member, ws, may_publish, guard))
}

async fn echo(State(state): State<AppState>, upgrade: Upgrade) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let (_, guard) = match admit(&state, upgrade.request()) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let node = state.node.clone();
    upgrade
        .config(state.ws_config.clone())
        .on_upgrade(move |ws| session::run_echo(node, ws, guard))
}

/// The documentation the index page links to, compiled in so it matches this build.
async fn doc_page(Path(page): Path<String>) -> Response {
    let text = match page.as_str() {
        "protocol.md" => include_str!("../../docs/protocol.md"),
        "http-api.md" => include_str!("../../docs/http-api.md"),
        "configuration.md" => include_str!("../../docs/configuration.md"),
        "deploy.md" => include_str!("../../docs/deploy.md"),
        _ => return refuse(StatusCode::NOT_FOUND, format!("no document {page:?}")),
    };
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/markdown; charset=utf-8"),
    );
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !state.node.broker().is_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.node.metrics().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The hub's routes.
pub fn router(node: Arc<Node>, tls: bool) -> Router {
    let ws_config = Arc::new(websocket_config(&node));
    let state = AppState {
        node,
        tls,
        ws_config,
    };
    Router::new()
        .merge(crate::web::routes())
        .route("/ws", get(ws_v1))
        .route("/rooms/{room}", get(room))
        .route("/echo", get(echo))
        .route("/docs/{page}", get(doc_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api", api::router(state.clone()))
        .with_state(state)
}

/// Serves `node` on `listener` until `shutdown` resolves, then drains: readiness off, no
/// new connections, every client closed with 1001 over `shutdown.drain_secs`, and returns
/// once they are gone or `shutdown.timeout_secs` passed.
///
/// # Errors
/// TLS configuration errors.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), duplex::Error> {
    let settings = node.settings().clone();
    let acceptor = match &settings.tls {
        Some(tls) => Some(duplex::tls::TlsAcceptor::from(duplex::tls::server_config(
            &tls.cert_file,
            &tls.key_file,
        )?)),
        None => None,
    };
    let app = router(node.clone(), acceptor.is_some());
    let handshake_timeout = Duration::from_secs(settings.limits.handshake_timeout_secs);
    let mut tasks = vec![
        tokio::spawn(sweep(node.clone())),
        tokio::spawn(crate::stats::run(node.clone())),
    ];
    if settings.demo.feed {
        tasks.push(tokio::spawn(crate::demo::run(node.clone())));
    }
    // Stopped when serving ends, or when this future is dropped.
    let background = Background(tasks);
    tokio::pin!(shutdown);
    let timeout = Duration::from_secs(settings.shutdown.timeout_secs);
    let drain = Duration::from_secs(settings.shutdown.drain_secs);
    // Set once the signal came: until then, None.
    let mut stopping: Option<(Instant, tokio::task::JoinHandle<()>)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown, if stopping.is_none() => {
                info!(
                    connections = node.connection_count(),
                    "shutting down: readiness off, closing every connection with 1001"
                );
                let closer = node.clone();
                // Draining is on before this returns: new upgrades get 503 from now on, while
                // HTTP keeps answering so load balancers can read /readyz.
                node.start_draining();
                stopping = Some((Instant::now(), tokio::spawn(async move { closer.shutdown(drain).await })));
                continue;
            }
            _ = tick.tick(), if stopping.is_some() => {
                let (started, closer) = stopping.as_ref().expect("checked");
                if (closer.is_finished() && node.connection_count() == 0) || started.elapsed() >= timeout {
                    break;
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let metrics_node = node.clone();
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout);
            let result = match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            http.serve_connection(TokioIo::new(tls), service)
                                .with_upgrades()
                                .await
                        }
                        Ok(Err(error)) => {
                            debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics_node.metrics().limit_hit("handshake_timeout");
                            return;
                        }
                    }
                }
                None => {
                    http.serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
            };
            if let Err(error) = result {
                if error.is_timeout() {
                    metrics_node.metrics().limit_hit("handshake_timeout");
                }
                debug!(%peer, %error, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    drop(background);
    let left = node.connection_count();
    if left > 0 {
        warn!(
            left,
            "shutdown timeout: exiting with connections still open"
        );
    } else {
        info!("every connection closed");
    }
    Ok(())
}

/// The node's background tasks (broker sweeps, `sys:stats`, the demo feed): aborted on drop.
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn sweep(node: Arc<Node>) {
    let mut tick = tokio::time::interval(crate::broker::SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        node.broker().sweep();
    }
}
