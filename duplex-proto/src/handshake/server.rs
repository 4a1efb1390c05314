//! The server's side: validate an upgrade request, answer `101 Switching Protocols`.

use bytes::{BufMut, BytesMut};
use http::header::{
    CONNECTION, HOST, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};

use super::http::{
    has_token, is_handshake_header, is_token, list_elements, single_value, with_header_slots,
    write_headers, write_status_line, SharedHead,
};
use super::key::{accept_key, is_valid_key};
use super::HandshakeError;
use crate::config::Config;
use crate::deflate::{self, DeflateParams};

/// Parses a request head (found with [`HeadReader`](super::HeadReader)) into an
/// [`http::Request`] for [`accept`]. Bytes after the head are ignored.
///
/// The request target and the header values share one copy of the head (at most
/// [`Config::max_header_bytes`]), as hyper's do: a value cloned out of the request keeps
/// that copy alive; copy the bytes of one kept for a long time.
///
/// # Errors
/// * `431 Request Header Fields Too Large` with more than [`Config::max_headers`] headers or a
///   head longer than [`Config::max_header_bytes`];
/// * `400 Bad Request` when the head is malformed or incomplete.
pub fn parse_request(head: &[u8], config: &Config) -> Result<Request<()>, HandshakeError> {
    let too_large = || {
        HandshakeError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request head exceeds {} bytes or {} headers",
                config.max_header_bytes, config.max_headers
            ),
        )
    };
    with_header_slots(config.max_headers, |slots| {
        let mut parsed = httparse::Request::new(&mut []);
        let len = match parsed.parse_with_uninit_headers(head, slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                return Err(HandshakeError::bad_request("incomplete request head"))
            }
            Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
            Err(e) => {
                return Err(HandshakeError::bad_request(format!(
                    "malformed request head: {e}"
                )))
            }
        };
        if len > config.max_header_bytes {
            return Err(too_large());
        }
        // httparse guarantees these are present in a complete request.
        let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version)
        else {
            return Err(HandshakeError::bad_request("incomplete request line"));
        };
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| HandshakeError::bad_request("invalid method"))?;
        let shared = SharedHead::new(head, len);
        let uri = Uri::from_maybe_shared(shared.slice(path.as_bytes()))
            .map_err(|_| HandshakeError::bad_request("invalid request target"))?;
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let headers = shared
            .header_map(parsed.headers)
            .map_err(HandshakeError::bad_request)?;

        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        Ok(request)
    })
}

/// Validates an upgrade request (RFC 6455 §4.2.1) and negotiates subprotocol candidates and
/// permessage-deflate.
///
/// This is the single implementation of the rules: raw TCP servers call it after
/// [`parse_request`], hyper and axum adapters with the parts of their own request. Only the
/// method, version and headers are read, never the body or the URI.
///
/// Checks, in order, each failure answered with its status:
///
/// | check | status |
/// |---|---|
/// | method is `GET` | 405 (the response carries `Allow: GET`) |
/// | version is HTTP/1.1 or later | 400 |
/// | exactly one `Host` | 400 |
/// | `Upgrade` lists `websocket` | 426: a plain HTTP request to a WebSocket-only endpoint |
/// | `Connection` lists `upgrade` | 400 |
/// | `Sec-WebSocket-Version` is `13` | 426 (with `Sec-WebSocket-Version: 13`, RFC 6455 §4.4) |
/// | exactly one `Sec-WebSocket-Key`, base64 of 16 bytes | 400 |
/// | at most one `Origin`, visible ASCII | 400, so an application never mistakes a garbled origin for none |
/// | `Sec-WebSocket-Protocol` elements are tokens | 400 |
/// | `Sec-WebSocket-Extensions` parses (only read when [`Config::deflate`] is set) | 400 |
///
/// Tokens and header names compare case-insensitively, so `Connection: upgrade` from nginx,
/// `Connection: keep-alive, Upgrade` from Firefox and HAProxy's lower-case names all pass.
///
/// # Errors
/// A [`HandshakeError`] whose status is the one in the table; answer the client with its
/// [`response`](HandshakeError::response) or [`write_response`](HandshakeError::write_response).
pub fn accept<B>(request: &Request<B>, config: &Config) -> Result<ServerUpgrade, HandshakeError> {
    if request.method() != Method::GET {
        return Err(HandshakeError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("WebSocket upgrade needs GET, not {}", request.method()),
        ));
    }
    if request.version() < Version::HTTP_11 {
        return Err(HandshakeError::bad_request(
            "WebSocket upgrade needs HTTP/1.1 or later",
        ));
    }
    let headers = request.headers();
    match single_value(headers, &HOST) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(HandshakeError::bad_request("missing Host header")),
        Err(_) => return Err(HandshakeError::bad_request("more than one Host header")),
    }
    if !has_token(headers, UPGRADE, "websocket") {
        return Err(HandshakeError::new(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint only speaks WebSocket: `Upgrade: websocket` is missing",
        ));
    }
    if !has_token(headers, CONNECTION, "upgrade") {
        return Err(HandshakeError::bad_request(
            "`Connection` header does not list `upgrade`",
        ));
    }
    match single_value(headers, &SEC_WEBSOCKET_VERSION) {
        Ok(Some(b"13")) => {}
        _ => {
            return Err(HandshakeError::new(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported Sec-WebSocket-Version; this server speaks 13",
            ))
        }
    }
    let key = match single_value(headers, &SEC_WEBSOCKET_KEY) {
        Ok(Some(key)) if is_valid_key(key) => key,
        Ok(Some(_)) => {
            return Err(HandshakeError::bad_request(
                "Sec-WebSocket-Key is not base64 of 16 bytes",
            ))
        }
        Ok(None) => return Err(HandshakeError::bad_request("missing Sec-WebSocket-Key")),
        Err(_) => {
            return Err(HandshakeError::bad_request(
                "more than one Sec-WebSocket-Key header",
            ))
        }
    };
    let origin = match single_value(headers, &ORIGIN) {
        Ok(None) => None,
        Ok(Some(origin)) => Some(
            std::str::from_utf8(origin)
                .ok()
                .filter(|o| o.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| HandshakeError::bad_request("invalid Origin header"))?
                .to_owned(),
        ),
        Err(_) => return Err(HandshakeError::bad_request("more than one Origin header")),
    };
    let protocols = list_elements(headers, SEC_WEBSOCKET_PROTOCOL)
        .map(|p| {
            is_token(p)
                // A token is ASCII, so this never fails.
                .then(|| String::from_utf8_lossy(p).into_owned())
                .ok_or_else(|| HandshakeError::bad_request("invalid Sec-WebSocket-Protocol"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (deflate, extensions) = match &config.deflate {
        // Without deflate we support no extension, and RFC 6455 §9.1 lets a server ignore
        // offers it does not accept, so the header is not even read.
        None => (None, None),
        Some(deflate_config) => {
            let values = headers
                .get_all(SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .map(|v| v.to_str())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| HandshakeError::bad_request("invalid Sec-WebSocket-Extensions"))?;
            match deflate::negotiate_server(values, deflate_config) {
                Ok(None) => (None, None),
                Ok(Some((params, response))) if response.is_empty() => (Some(params), None),
                Ok(Some((params, response))) => {
                    let value = HeaderValue::try_from(response).map_err(|_| {
                        HandshakeError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "negotiated extension is not a valid header value",
                        )
                    })?;
                    (Some(params), Some(value))
                }
                Err(e) => return Err(HandshakeError::bad_request(e.to_string())),
            }
        }
    };
    Ok(ServerUpgrade {
        accept_key: accept_key(key),
        origin,
        protocols,
        protocol: None,
        deflate,
        extensions,
    })
}

/// An upgrade request that passed [`accept`]: what the client offered, what was negotiated,
/// and the `101 Switching Protocols` answer.
///
/// Between [`accept`] and sending the response, the application may inspect
/// [`origin`](Self::origin) (and reject with [`HandshakeError::new`], say `403`) and pick a
/// subprotocol with [`select_protocol`](Self::select_protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUpgrade {
    accept_key: String,
    origin: Option<String>,
    protocols: Vec<String>,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
    /// Our `Sec-WebSocket-Extensions` answer, when deflate was negotiated.
    extensions: Option<HeaderValue>,
}

impl ServerUpgrade {
    /// The `Origin` header, if the client sent one (browsers always do, RFC 6455 §10.2).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Answers with `protocol`, which must be one the client offered (RFC 6455 §4.2.2).
    /// Without a call, the response names no subprotocol.
    ///
    /// # Errors
    /// `500 Internal Server Error` when the client did not offer `protocol`: answering with it
    /// would make the client fail the connection, so this is a fault of the application, not of
    /// the client. Nothing changes in that case.
    pub fn select_protocol(&mut self, protocol: &str) -> Result<(), HandshakeError> {
        match self.protocols.iter().find(|p| *p == protocol) {
            Some(offered) => {
                self.protocol = Some(offered.clone());
                Ok(())
            }
            None => Err(HandshakeError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("subprotocol {protocol:?} was not offered by the client"),
            )),
        }
    }

    /// The selected subprotocol, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The negotiated permessage-deflate parameters; `None` when compression is off for this
    /// connection.
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }

    /// The `Sec-WebSocket-Accept` value.
    pub fn accept_key(&self) -> &str {
        &self.accept_key
    }

    /// The `101 Switching Protocols` response: `Upgrade: websocket`, `Connection: Upgrade`,
    /// `Sec-WebSocket-Accept`, and `Sec-WebSocket-Protocol` / `Sec-WebSocket-Extensions` when
    /// a subprotocol was selected / deflate negotiated.
    pub fn response(&self) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::try_from(self.accept_key.as_str())
                .expect("base64 is always a valid header value"),
        );
        if let Some(protocol) = &self.protocol {
            headers.insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::try_from(protocol.as_str())
                    .expect("a protocol is one the client offered, and those are tokens"),
            );
        }
        if let Some(extensions) = &self.extensions {
            headers.insert(SEC_WEBSOCKET_EXTENSIONS, extensions.clone());
        }
        response
    }

    /// Appends the raw HTTP/1.1 bytes of [`ServerUpgrade::response`] to `out`, followed by
    /// `extra` headers (`Set-Cookie`, say). Extra headers that would contradict the handshake
    /// (`Upgrade`, `Connection`, `Content-Length`, `Transfer-Encoding` and any
    /// `Sec-WebSocket-*`) are skipped.
    pub fn write_response(&self, extra: &HeaderMap, out: &mut BytesMut) {
        // The bytes of `response()`, written straight: building its header map would cost
        // a table, an entry list and a copy of the key (docs/performance.md, eighth pass).
        // Reserve roughly once: status line, our headers and the extras.
        out.reserve(160 + extra.len() * 32);
        write_status_line(out, StatusCode::SWITCHING_PROTOCOLS);
        out.put_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.put_slice(self.accept_key.as_bytes());
        out.put_slice(b"\r\n");
        if let Some(protocol) = &self.protocol {
            out.put_slice(b"Sec-WebSocket-Protocol: ");
            out.put_slice(protocol.as_bytes());
            out.put_slice(b"\r\n");
        }
        if let Some(extensions) = &self.extensions {
            out.put_slice(b"Sec-WebSocket-Extensions: ");
            out.put_slice(extensions.as_bytes());
            out.put_slice(b"\r\n");
        }
        write_headers(
            out,
            extra.iter().filter(|(name, _)| !is_handshake_header(name)),
        );
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(lines: &[&str]) -> Vec<u8> {
        let mut head = lines.join("\r\n");
        head.push_str("\r\n\r\n");
        head.into_bytes()
    }

    fn accept_head(lines: &[&str]) -> Result<ServerUpgrade, HandshakeError> {
        let config = Config::default();
        accept(&parse_request(&head(lines), &config)?, &config)
    }

    const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    const MINIMAL: &[&str] = &[
        "GET /chat HTTP/1.1",
        "Host: server.example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];

    /// `MINIMAL` with the header starting with `name` replaced (or removed when `line` is
    /// empty).
    fn minimal_with(name: &str, line: &str) -> Vec<String> {
        MINIMAL
            .iter()
            .filter_map(|l| {
                if l.starts_with(name) {
                    (!line.is_empty()).then(|| line.to_owned())
                } else {
                    Some((*l).to_owned())
                }
            })
            .collect()
    }

    fn status_of(lines: &[String]) -> StatusCode {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        accept_head(&lines).unwrap_err().status()
    }

    #[test]
    fn rfc6455_example() {
        let upgrade = accept_head(MINIMAL).unwrap();
        assert_eq!(upgrade.accept_key(), RFC_ACCEPT);
        assert_eq!(upgrade.origin(), None);
        assert!(upgrade.protocols().is_empty());
        assert_eq!(upgrade.protocol(), None);
        let response = upgrade.response();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[UPGRADE], "websocket");
        assert_eq!(response.headers()[CONNECTION], "Upgrade");
        assert_eq!(response.headers()[SEC_WEBSOCKET_ACCEPT], RFC_ACCEPT);
        assert!(!response.headers().contains_key(SEC_WEBSOCKET_PROTOCOL));
    }

    #[test]
    fn chromium() {
        let upgrade = accept_head(&[
            "GET /socket?token=abc HTTP/1.1",
            "Host: localhost:8080",
            "Connection: Upgrade",
            "Pragma: no-cache",
            "Cache-Control: no-cache",
            "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/126.0.0.0 Safari/537.36",
            "Upgrade: websocket",
            "Origin: http://localhost:8080",
            "Sec-WebSocket-Version: 13",
            "Accept-Encoding: gzip, deflate, br, zstd",
            "Accept-Language: en-US,en;q=0.9",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
            "Sec-WebSocket-Protocol: chat.v2, chat.v1",
        ])
        .unwrap();
        assert_eq!(upgrade.accept_key(), RFC_ACCEPT);
        assert_eq!(upgrade.origin(), Some("http://localhost:8080"));
        assert_eq!(upgrade.protocols(), ["chat.v2", "chat.v1"]);
    }

    #[test]
    fn firefox() {
        let upgrade = accept_head(&[
            "GET /ws HTTP/1.1",
            "Host: example.com",
            "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Accept: */*",
            "Accept-Language: en-US,en;q=0.5",
            "Accept-Encoding: gzip, deflate, br, zstd",
            "Sec-WebSocket-Version: 13",
            "Origin: https://example.com",
            "Sec-WebSocket-Protocol: chat",
            "Sec-WebSocket-Extensions: permessage-deflate",
            "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==",
            "Connection: keep-alive, Upgrade",
            "Sec-Fetch-Dest: empty",
            "Sec-Fetch-Mode: websocket",
            "Sec-Fetch-Site: same-origin",
            "Pragma: no-cache",
            "Cache-Control: no-cache",
            "Upgrade: websocket",
        ])
        .unwrap();
        assert_eq!(upgrade.accept_key(), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
        assert_eq!(upgrade.origin(), Some("https://example.com"));
        assert_eq!(upgrade.protocols(), ["chat"]);
    }

    #[test]
    fn behind_nginx() {
        // nginx's documented proxy config sends `Connection: upgrade` (lower case) and
        // `Upgrade: $http_upgrade`.
        let upgrade = accept_head(&[
            "GET /ws HTTP/1.1",
            "Upgrade: websocket",
            "Connection: upgrade",
            "Host: backend",
            "X-Real-IP: 203.0.113.7",
            "X-Forwarded-For: 203.0.113.7",
            "X-Forwarded-Proto: https",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Origin: https://example.com",
        ])
        .unwrap();
        assert_eq!(upgrade.accept_key(), RFC_ACCEPT);
    }

    #[test]
    fn behind_haproxy_with_lower_case_names() {
        let upgrade = accept_head(&[
            "GET /ws HTTP/1.1",
            "host: example.com",
            "upgrade: WebSocket",
            "connection: Upgrade",
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version: 13",
            "sec-websocket-protocol: a",
            "sec-websocket-protocol: b, c",
            "origin: https://example.com",
        ])
        .unwrap();
        assert_eq!(upgrade.accept_key(), RFC_ACCEPT);
        // Repeated headers and comma lists are collected in order.
        assert_eq!(upgrade.protocols(), ["a", "b", "c"]);
    }

    #[test]
    fn works_on_requests_built_elsewhere() {
        // What a hyper or axum adapter hands over: an `http::Request` with a body type of its
        // own.
        let request = Request::builder()
            .uri("/ws")
            .header("host", "example.com")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .body(String::from("ignored"))
            .unwrap();
        let upgrade = accept(&request, &Config::default()).unwrap();
        assert_eq!(upgrade.accept_key(), RFC_ACCEPT);
    }

    #[test]
    fn wrong_method_is_405() {
        let mut lines = minimal_with("GET", "POST /chat HTTP/1.1");
        assert_eq!(status_of(&lines), StatusCode::METHOD_NOT_ALLOWED);
        lines[0] = "HEAD /chat HTTP/1.1".into();
        let err = {
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            accept_head(&lines).unwrap_err()
        };
        assert_eq!(err.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(err.response().headers()[http::header::ALLOW], "GET");
    }

    #[test]
    fn http_1_0_is_400() {
        let lines = minimal_with("GET", "GET /chat HTTP/1.0");
        assert_eq!(status_of(&lines), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn missing_host_is_400() {
        assert_eq!(
            status_of(&minimal_with("Host", "")),
            StatusCode::BAD_REQUEST
        );
        let mut twice = minimal_with("Host", "Host: a");
        twice.push("Host: b".into());
        assert_eq!(status_of(&twice), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn plain_http_request_is_426() {
        let err = {
            let lines = minimal_with("Upgrade", "");
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            accept_head(&lines).unwrap_err()
        };
        assert_eq!(err.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(err.response().headers()[UPGRADE], "websocket");
        assert_eq!(
            status_of(&minimal_with("Upgrade", "Upgrade: h2c")),
            StatusCode::UPGRADE_REQUIRED
        );
        // A list that holds the token passes.
        assert!(accept_head(&[
            MINIMAL[0],
            MINIMAL[1],
            "Upgrade: foo/1, WebSocket",
            MINIMAL[3],
            MINIMAL[4],
            MINIMAL[5]
        ])
        .is_ok());
    }

    #[test]
    fn connection_without_upgrade_is_400() {
        assert_eq!(
            status_of(&minimal_with("Connection", "")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&minimal_with("Connection", "Connection: keep-alive")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&minimal_with("Connection", "Connection: upgrades")),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn wrong_version_is_426_naming_13() {
        for line in [
            "Sec-WebSocket-Version: 8",
            "Sec-WebSocket-Version: 13, 8",
            "",
        ] {
            let err = {
                let lines = minimal_with("Sec-WebSocket-Version", line);
                let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                accept_head(&lines).unwrap_err()
            };
            assert_eq!(err.status(), StatusCode::UPGRADE_REQUIRED, "{line}");
            assert_eq!(err.response().headers()[SEC_WEBSOCKET_VERSION], "13");
            let mut out = BytesMut::new();
            err.write_response(&mut out);
            assert!(out
                .windows(27)
                .any(|w| w == b"Sec-WebSocket-Version: 13\r\n"));
        }
    }

    #[test]
    fn bad_keys_are_400() {
        for line in [
            "",
            "Sec-WebSocket-Key: ",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA", // 15 bytes
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=", // 17 bytes
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ", // no padding
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==",
        ] {
            assert_eq!(
                status_of(&minimal_with("Sec-WebSocket-Key", line)),
                StatusCode::BAD_REQUEST,
                "{line}"
            );
        }
        let mut twice = minimal_with(
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        );
        twice.push("Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==".into());
        assert_eq!(status_of(&twice), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn ambiguous_origin_is_400() {
        let mut lines = minimal_with("Host", "Host: a");
        lines.push("Origin: https://a.example".into());
        lines.push("Origin: https://b.example".into());
        assert_eq!(status_of(&lines), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn invalid_protocol_is_400() {
        let mut lines = minimal_with("Host", "Host: a");
        lines.push("Sec-WebSocket-Protocol: chat, \"quoted\"".into());
        assert_eq!(status_of(&lines), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn too_many_headers_is_431() {
        let config = Config::default().with_max_headers(5);
        assert!(parse_request(&head(MINIMAL), &config).is_ok());
        let config = Config::default().with_max_headers(4);
        let err = parse_request(&head(MINIMAL), &config).unwrap_err();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn more_headers_than_the_stack_slots_hold() {
        // Past `STACK_HEADERS` the slots come from the heap; the limit still holds.
        let mut lines = MINIMAL.to_vec();
        let extra: Vec<String> = (0..80).map(|i| format!("X-Extra-{i}: {i}")).collect();
        lines.extend(extra.iter().map(String::as_str));
        let count = lines.len() - 1; // the request line is not a header
        let config = Config::default().with_max_headers(count);
        let request = parse_request(&head(&lines), &config).unwrap();
        assert_eq!(request.headers().len(), count);
        assert_eq!(request.headers()["x-extra-79"], "79");
        let config = Config::default().with_max_headers(count - 1);
        let err = parse_request(&head(&lines), &config).unwrap_err();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn an_empty_last_value_is_kept_empty() {
        let mut lines = MINIMAL.to_vec();
        lines.push("X-Empty:   ");
        let request = parse_request(&head(&lines), &Config::default()).unwrap();
        assert_eq!(request.headers()["x-empty"], "");
    }

    #[test]
    fn values_and_target_survive_the_buffer_they_were_parsed_from() {
        let mut bytes = valid_request();
        bytes.extend_from_slice(b"\x81\x05hello"); // the first frame, right behind the head
        let request = parse_request(&bytes, &Config::default()).unwrap();
        bytes.fill(b'!');
        drop(bytes);
        assert_eq!(request.uri(), "/chat?x=1");
        assert_eq!(request.headers()[HOST], "example.com:8080");
        assert_eq!(request.headers()[ORIGIN], "https://example.com");
        assert_eq!(request.headers()[SEC_WEBSOCKET_PROTOCOL], "a, b");
    }

    /// `write_response` writes `response()` by hand: the two must never drift apart.
    fn rendered(upgrade: &ServerUpgrade) -> Vec<u8> {
        let response = upgrade.response();
        let mut out = BytesMut::new();
        super::super::http::write_head(&mut out, response.status(), response.headers());
        out.to_vec()
    }

    #[test]
    fn raw_response_is_the_response_rendered() {
        for deflate in [true, false] {
            for protocol in [None, Some("a"), Some("b")] {
                let mut config = Config::default();
                if !deflate {
                    config = config.with_deflate(None);
                }
                let request = parse_request(&valid_request(), &config).unwrap();
                let mut upgrade = accept(&request, &config).unwrap();
                if let Some(protocol) = protocol {
                    upgrade.select_protocol(protocol).unwrap();
                }
                let mut out = BytesMut::new();
                upgrade.write_response(&HeaderMap::new(), &mut out);
                assert_eq!(out.to_vec(), rendered(&upgrade), "{deflate} {protocol:?}");
                assert_eq!(
                    deflate,
                    out.windows(25).any(|w| w == b"Sec-WebSocket-Extensions:")
                );
            }
        }
    }

    #[test]
    fn too_long_head_is_431() {
        let head = head(MINIMAL);
        let config = Config::default().with_max_header_bytes(head.len());
        assert!(parse_request(&head, &config).is_ok());
        let config = Config::default().with_max_header_bytes(head.len() - 1);
        let err = parse_request(&head, &config).unwrap_err();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn malformed_heads_are_400() {
        let config = Config::default();
        for head in [
            &b"GET /chat HTTP/1.1\r\nHost: a\r\n"[..], // incomplete
            b"GET /chat HTTP/2.0\r\n\r\n",
            b"GET /chat\r\n\r\n",
            b"GET /chat HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
            b"",
        ] {
            let err = parse_request(head, &config).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{head:?}");
        }
    }

    #[test]
    fn select_protocol_must_pick_an_offer() {
        let mut lines = minimal_with("Host", "Host: a");
        lines.push("Sec-WebSocket-Protocol: chat.v2, chat.v1".into());
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut upgrade = accept_head(&lines).unwrap();
        let err = upgrade.select_protocol("chat.v3").unwrap_err();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(upgrade.protocol(), None);
        upgrade.select_protocol("chat.v1").unwrap();
        assert_eq!(upgrade.protocol(), Some("chat.v1"));
        assert_eq!(
            upgrade.response().headers()[SEC_WEBSOCKET_PROTOCOL],
            "chat.v1"
        );
    }

    #[test]
    fn raw_response_keeps_handshake_headers_authoritative() {
        let upgrade = accept_head(MINIMAL).unwrap();
        let mut extra = HeaderMap::new();
        extra.insert(http::header::SET_COOKIE, HeaderValue::from_static("id=1"));
        extra.insert(UPGRADE, HeaderValue::from_static("h2c"));
        extra.insert(SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("forged"));
        let mut out = BytesMut::new();
        upgrade.write_response(&extra, &mut out);
        assert_eq!(
            &out[..],
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSet-Cookie: id=1\r\n\r\n"[..]
        );
    }

    #[test]
    fn deflate_off_ignores_extension_offers() {
        let config = Config::default().with_deflate(None);
        let mut lines = MINIMAL.to_vec();
        lines.push("Sec-WebSocket-Extensions: permessage-deflate, x-garbage;;;");
        let upgrade = accept(&parse_request(&head(&lines), &config).unwrap(), &config).unwrap();
        assert_eq!(upgrade.deflate(), None);
        assert!(!upgrade
            .response()
            .headers()
            .contains_key(SEC_WEBSOCKET_EXTENSIONS));
    }

    fn valid_request() -> Vec<u8> {
        head(&[
            "GET /chat?x=1 HTTP/1.1",
            "Host: example.com:8080",
            "Upgrade: websocket",
            "Connection: keep-alive, Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: a, b",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
            "Origin: https://example.com",
        ])
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let config = Config::default();
            if let Ok(request) = parse_request(&bytes, &config) {
                let _ = accept(&request, &config);
            }
        }

        #[test]
        fn mutated_requests_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let config = Config::default();
            let mut bytes = valid_request();
            for (index, byte) in edits {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            if let Ok(request) = parse_request(&bytes, &config) {
                if let Ok(mut upgrade) = accept(&request, &config) {
                    let offered = upgrade.protocols().first().cloned();
                    if let Some(protocol) = offered {
                        upgrade.select_protocol(&protocol).unwrap();
                    }
                    let mut out = BytesMut::new();
                    upgrade.write_response(&HeaderMap::new(), &mut out);
                    prop_assert_eq!(out.to_vec(), rendered(&upgrade));
                }
            }
        }
    }
}
