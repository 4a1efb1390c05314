//! The HTTP API (docs/http-api.md): publish, broadcast, channels, presence, history,
//! disconnect. JSON in and out; `Authorization: apikey <key>`.

use crate::broker::{Data, HistoryQuery, StreamPosition};
use crate::channel::ChannelName;
use crate::node::{NodeError, CLOSE_API_DISCONNECT};
use crate::protocol;
use crate::server::AppState;
use crate::session::presence_json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Largest request body, bytes.
const MAX_BODY: usize = 1024 * 1024;

/// An error answer: the status, and `{"error": {"code": status, "message": ...}}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.as_u16();
        (
            self.0,
            axum::Json(json!({"error": {"code": code, "message": self.1}})),
        )
            .into_response()
    }
}

fn api_error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    api_error(status, message).into_response()
}

fn ok(result: Value) -> Response {
    axum::Json(json!({ "result": result })).into_response()
}

/// Constant-time comparison, so response times do not reveal how much of a key matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let keys = &state.node.settings().api.keys;
    if keys.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "the HTTP API is disabled: configure api.keys",
        );
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("apikey").then(|| key.trim())
        });
    match given {
        Some(given) if keys.iter().any(|k| same(k.as_bytes(), given.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => error(StatusCode::UNAUTHORIZED, "unknown API key"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "expected the header Authorization: apikey <key>",
        ),
    }
}

pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/publish", post(publish))
        .route("/broadcast", post(broadcast))
        .route("/channels", get(channels))
        .route("/presence/{channel}", get(presence))
        .route("/history/{channel}", get(history))
        .route("/disconnect", post(disconnect))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "wrong method for this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route_layer(middleware::from_fn_with_state(state, require_key))
}

/// `Some` for any value, `null` included (a missing field is `None` by `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn channel(name: &str) -> Result<ChannelName, ApiError> {
    ChannelName::new(name).map_err(|e| api_error(StatusCode::BAD_REQUEST, format!("{name:?}: {e}")))
}

fn configured(state: &AppState, channel: &ChannelName) -> Result<(), ApiError> {
    if state.node.namespace(channel).is_none() {
        return Err(api_error(
            StatusCode::NOT_FOUND,
            format!("namespace {:?} is not configured", channel.namespace()),
        ));
    }
    Ok(())
}

fn data(raw: Option<&RawValue>, b64: Option<&str>) -> Result<Data, ApiError> {
    match (raw, b64) {
        (Some(raw), None) => Ok(Data::Json(Bytes::copy_from_slice(raw.get().as_bytes()))),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(|b| Data::Binary(b.into()))
            .map_err(|e| api_error(StatusCode::BAD_REQUEST, format!("data_b64: {e}"))),
        _ => Err(api_error(
            StatusCode::BAD_REQUEST,
            "give exactly one of data and data_b64",
        )),
    }
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    channel: String,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    data_b64: Option<String>,
    key: Option<String>,
}

async fn publish_one(
    state: &AppState,
    name: &str,
    data: Data,
    key: Option<&str>,
) -> Result<Value, ApiError> {
    let channel = channel(name)?;
    configured(state, &channel)?;
    let publication = state
        .node
        .publish(&channel, data, None, key)
        .await
        .map_err(|e| api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(match &publication.epoch {
        Some(epoch) => json!({"offset": publication.offset, "epoch": &**epoch}),
        None => json!({}),
    })
}

async fn publish(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let body: PublishBody<'_> = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let data = match data(body.data, body.data_b64.as_deref()) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    match publish_one(&state, &body.channel, data, body.key.as_deref()).await {
        Ok(result) => ok(result),
        Err(response) => response.into_response(),
    }
}

#[derive(Deserialize)]
struct BroadcastBody<'a> {
    channels: Vec<String>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    data_b64: Option<String>,
    key: Option<String>,
}

async fn broadcast(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let body: BroadcastBody<'_> = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if body.channels.is_empty() || body.channels.len() > 1000 {
        return error(StatusCode::BAD_REQUEST, "channels: give 1 to 1000 channels");
    }
    let data = match data(body.data, body.data_b64.as_deref()) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    // Validate every channel first, so a bad name publishes nothing.
    for name in &body.channels {
        if let Err(r) = channel(name).and_then(|c| configured(&state, &c)) {
            return r.into_response();
        }
    }
    let mut responses = Vec::with_capacity(body.channels.len());
    for name in &body.channels {
        match publish_one(&state, name, data.clone(), body.key.as_deref()).await {
            Ok(mut result) => {
                result["channel"] = json!(name);
                responses.push(result);
            }
            Err(_) => responses.push(
                json!({"channel": name, "error": {"code": 503, "message": "broker unavailable"}}),
            ),
        }
    }
    ok(json!({ "responses": responses }))
}

async fn channels(State(state): State<AppState>) -> Response {
    match state.node.channels().await {
        Ok(list) => ok(json!({
            "channels": list.iter().map(|(c, n)| json!({"channel": c.as_str(), "subscribers": n})).collect::<Vec<_>>()
        })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct PresenceQuery {
    #[serde(default)]
    stats: bool,
}

async fn presence(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<PresenceQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let channel = match channel(&name).and_then(|c| configured(&state, &c).map(|()| c)) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if !state.node.namespace(&channel).is_some_and(|ns| ns.presence) {
        return error(
            StatusCode::NOT_FOUND,
            format!("presence is off for {channel}"),
        );
    }
    match state.node.presence(&channel).await {
        Ok(p) => ok(presence_json(&p, q.stats)),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct HistoryParams {
    limit: Option<usize>,
    since_offset: Option<u64>,
    since_epoch: Option<String>,
}

async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<HistoryParams>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let channel = match channel(&name).and_then(|c| configured(&state, &c).map(|()| c)) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let since = match (q.since_offset, q.since_epoch.clone()) {
        (Some(offset), Some(epoch)) => Some(StreamPosition { offset, epoch }),
        (None, None) => None,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give both since_offset and since_epoch, or neither",
            )
        }
    };
    match state
        .node
        .history(
            &channel,
            HistoryQuery {
                since,
                limit: q.limit,
            },
        )
        .await
    {
        Ok(Some(h)) => {
            let mut result = serde_json::Map::new();
            result.insert("epoch".into(), json!(h.position.epoch));
            result.insert("offset".into(), json!(h.position.offset));
            if q.since_offset.is_some() {
                // Whether nothing is missing between `since` and the first publication.
                result.insert("complete".into(), json!(h.contiguous));
            }
            // The same publication objects as the WebSocket protocol's history reply.
            let message = protocol::reply_with_publications(0, result, &h.publications);
            let reply: Value = serde_json::from_slice(message.as_bytes()).unwrap_or(Value::Null);
            ok(reply["result"].clone())
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("history is off for {channel}"),
        ),
        Err(NodeError::Broker(crate::broker::BrokerError::EpochMismatch(e))) => error(
            StatusCode::CONFLICT,
            format!("epoch {e:?} is not the channel's current epoch"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct DisconnectBody {
    user: String,
    code: Option<u16>,
    reason: Option<String>,
}

async fn disconnect(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let body: DisconnectBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if body.user.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "user must not be empty (anonymous connections have no user to disconnect)",
        );
    }
    let code = body.code.unwrap_or(CLOSE_API_DISCONNECT);
    if !(4000..=4999).contains(&code) {
        return error(
            StatusCode::BAD_REQUEST,
            "code must be between 4000 and 4999",
        );
    }
    let reason = body
        .reason
        .unwrap_or_else(|| "disconnected by the server".into());
    if reason.len() > 120 {
        return error(StatusCode::BAD_REQUEST, "reason: at most 120 bytes");
    }
    match state.node.disconnect_user(&body.user, code, &reason).await {
        Ok(()) => ok(json!({})),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
