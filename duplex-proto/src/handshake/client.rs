//! The client's side: send an upgrade request, validate the `101 Switching Protocols` answer.

use bytes::{BufMut, BytesMut};
use http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, HOST, PROXY_AUTHORIZATION, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::uri::PathAndQuery;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};

use super::http::{
    has_token, is_handshake_header, is_token, single_value, write_headers, SharedHead,
};
use super::key::{accept_key, generate_key};
use super::HandshakeError;
use crate::config::Config;
use crate::deflate::{self, DeflateConfig, DeflateParams};

/// The client's half of the opening handshake (RFC 6455 §4.1), sans-IO.
///
/// Build it from the URI, write the request, find the response head with
/// [`HeadReader`](super::HeadReader), then check it with
/// [`handle_response`](Self::handle_response). Clients built on hyper send
/// [`request`](Self::request) themselves and call [`validate_response`](Self::validate_response);
/// both paths run the same checks.
///
/// ```
/// use bytes::BytesMut;
/// use duplex_proto::Config;
/// use duplex_proto::handshake::ClientHandshake;
///
/// let uri = "wss://example.com/chat?room=1".parse().unwrap();
/// let handshake = ClientHandshake::new(&uri, &Config::default())
///     .unwrap()
///     .protocols(["chat.v2", "chat.v1"]);
/// assert_eq!((handshake.host(), handshake.port(), handshake.is_tls()), ("example.com", 443, true));
/// let mut out = BytesMut::new();
/// handshake.write_request(&mut out);
/// assert!(out.starts_with(b"GET /chat?room=1 HTTP/1.1\r\n"));
/// ```
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    path: PathAndQuery,
    host: String,
    port: u16,
    tls: bool,
    host_header: HeaderValue,
    key: String,
    expected_accept: String,
    protocols: Vec<String>,
    headers: HeaderMap,
    /// Our deflate policy and the offer it produced; `None` when we offer nothing.
    deflate: Option<(DeflateConfig, HeaderValue)>,
    max_header_bytes: usize,
    max_headers: usize,
}

impl ClientHandshake {
    /// Prepares a handshake for `uri` with a fresh random key.
    ///
    /// `ws://` and `wss://` URIs are expected; `http://` and `https://` are accepted and mean
    /// the same. The port defaults to 80 or 443. Credentials in the URI (`user:pass@host`)
    /// are refused rather than dropped silently: send an `Authorization` header instead.
    ///
    /// # Errors
    /// * `400 Bad Request` for another scheme, no host, or credentials in the URI;
    /// * `500 Internal Server Error` when the system has no randomness for the key, or the
    ///   deflate offer is not a valid header value.
    pub fn new(uri: &Uri, config: &Config) -> Result<Self, HandshakeError> {
        let tls = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("ws") || s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("wss") || s.eq_ignore_ascii_case("https") => true,
            _ => {
                return Err(HandshakeError::bad_request(format!(
                    "{uri} is not a ws:// or wss:// URI"
                )))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| HandshakeError::bad_request(format!("{uri} has no host")))?;
        if authority.as_str().contains('@') {
            return Err(HandshakeError::bad_request(
                "credentials in the URI are not supported; send an Authorization header",
            ));
        }
        let bracketed = authority.host();
        let host = bracketed
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(bracketed);
        if host.is_empty() {
            return Err(HandshakeError::bad_request(format!("{uri} has no host")));
        }
        let default_port = if tls { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        // RFC 6455 §4.1 item 4: the port only when it is not the scheme's default.
        let host_header = if port == default_port {
            bracketed.to_owned()
        } else {
            format!("{bracketed}:{port}")
        };
        let host_header = HeaderValue::try_from(host_header)
            .map_err(|_| HandshakeError::bad_request(format!("{uri} has an invalid host")))?;
        let path = match uri.path_and_query() {
            Some(pq) if pq.path().starts_with('/') => pq.clone(),
            // `ws://host?x` has an empty path; the request target needs the `/`.
            Some(pq) => PathAndQuery::try_from(format!("/{pq}"))
                .map_err(|_| HandshakeError::bad_request(format!("{uri} has an invalid path")))?,
            None => PathAndQuery::from_static("/"),
        };
        let deflate = match &config.deflate {
            None => None,
            Some(deflate_config) => {
                let offer = deflate::client_offer(deflate_config);
                if offer.is_empty() {
                    None
                } else {
                    let offer = HeaderValue::try_from(offer).map_err(|_| {
                        HandshakeError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "deflate offer is not a valid header value",
                        )
                    })?;
                    Some((deflate_config.clone(), offer))
                }
            }
        };
        let key = generate_key()?;
        Ok(Self {
            path,
            host: host.to_owned(),
            port,
            tls,
            host_header,
            expected_accept: accept_key(key.as_bytes()),
            key,
            protocols: Vec::new(),
            headers: HeaderMap::new(),
            deflate,
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
        })
    }

    /// Offers these subprotocols, most preferred first, replacing any earlier offer.
    ///
    /// Names that are not RFC 6455 tokens (empty, or holding spaces, commas, quotes, control or
    /// non-ASCII characters) cannot be sent and are left out of the offer.
    pub fn protocols(mut self, protocols: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.protocols = protocols
            .into_iter()
            .map(Into::into)
            .filter(|p| is_token(p.as_bytes()))
            .collect();
        self
    }

    /// Adds an extra request header (`Origin`, `Authorization`, `Cookie`...), appended after
    /// any earlier value of the same name.
    ///
    /// A `Host` header replaces the one derived from the URI. Headers the handshake itself
    /// owns (`Upgrade`, `Connection`, `Content-Length`, `Transfer-Encoding` and any
    /// `Sec-WebSocket-*`; use [`protocols`](Self::protocols) for subprotocols) are not sent.
    /// `Authorization`, `Proxy-Authorization` and `Cookie` values are marked sensitive, so
    /// they do not show in `Debug` output.
    pub fn header(mut self, name: HeaderName, mut value: HeaderValue) -> Self {
        // Keep credentials out of `Debug` output and logs.
        if name == AUTHORIZATION || name == PROXY_AUTHORIZATION || name == COOKIE {
            value.set_sensitive(true);
        }
        self.headers.append(name, value);
        self
    }

    /// The extra request headers, for changes [`header`](Self::header) cannot express.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// Our `Sec-WebSocket-Key`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the URI asked for TLS (`wss://` or `https://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host to connect to and to name in TLS, without the brackets of an IPv6 literal.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to: the URI's, or 80 / 443.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The upgrade request: `GET` with the URI's path and query, `Host`, `Upgrade`,
    /// `Connection`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`, the subprotocol and
    /// deflate offers when there are any, then the extra headers.
    pub fn request(&self) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = Uri::from(self.path.clone());
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        if !self.headers.contains_key(HOST) {
            headers.insert(HOST, self.host_header.clone());
        }
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::try_from(self.key.as_str())
                .expect("base64 is always a valid header value"),
        );
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        if !self.protocols.is_empty() {
            headers.insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::try_from(self.protocols.join(", "))
                    .expect("protocols are filtered to tokens"),
            );
        }
        if let Some((_, offer)) = &self.deflate {
            headers.insert(SEC_WEBSOCKET_EXTENSIONS, offer.clone());
        }
        for (name, value) in &self.headers {
            if !is_handshake_header(name) {
                headers.append(name, value.clone());
            }
        }
        request
    }

    /// Appends the raw HTTP/1.1 bytes of [`ClientHandshake::request`] to `out`.
    pub fn write_request(&self, out: &mut BytesMut) {
        let request = self.request();
        out.put_slice(b"GET ");
        out.put_slice(self.path.as_str().as_bytes());
        out.put_slice(b" HTTP/1.1\r\n");
        write_headers(out, request.headers());
        out.put_slice(b"\r\n");
    }

    /// Parses the server's response head (found with [`HeadReader`](super::HeadReader)) and
    /// validates it: [`parse_response`] then [`validate_response`](Self::validate_response).
    /// Bytes after the head are ignored; they are the first WebSocket frames.
    ///
    /// # Errors
    /// As [`parse_response`] and [`validate_response`](Self::validate_response).
    pub fn handle_response(&self, head: &[u8]) -> Result<ClientUpgrade, HandshakeError> {
        let response = parse_head(head, self.max_header_bytes, self.max_headers)?;
        self.validate_response(&response)
    }

    /// Validates the server's response (RFC 6455 §4.1): status `101`, `Upgrade: websocket`,
    /// `Connection: upgrade`, the right `Sec-WebSocket-Accept`, a subprotocol we offered (or
    /// none), and no extension we did not offer. Only status, version and headers are read.
    ///
    /// # Errors
    /// * The server's own status when it is not `101`: the server refused (`403`, `404`...),
    ///   redirected or asked for authentication, and the caller may want to tell which;
    /// * `502 Bad Gateway` when a `101` response breaks RFC 6455.
    pub fn validate_response<B>(
        &self,
        response: &Response<B>,
    ) -> Result<ClientUpgrade, HandshakeError> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::new(
                response.status(),
                format!("server answered {} instead of 101", response.status()),
            ));
        }
        if response.version() < Version::HTTP_11 {
            return Err(HandshakeError::bad_response(
                "101 response is not HTTP/1.1 or later",
            ));
        }
        let headers = response.headers();
        if !has_token(headers, UPGRADE, "websocket") {
            return Err(HandshakeError::bad_response(
                "response lacks `Upgrade: websocket`",
            ));
        }
        if !has_token(headers, CONNECTION, "upgrade") {
            return Err(HandshakeError::bad_response(
                "response lacks `Connection: upgrade`",
            ));
        }
        match single_value(headers, &SEC_WEBSOCKET_ACCEPT) {
            Ok(Some(accept)) if accept == self.expected_accept.as_bytes() => {}
            Ok(Some(_)) => {
                return Err(HandshakeError::bad_response(
                    "wrong Sec-WebSocket-Accept for our key",
                ))
            }
            Ok(None) => return Err(HandshakeError::bad_response("missing Sec-WebSocket-Accept")),
            Err(_) => {
                return Err(HandshakeError::bad_response(
                    "more than one Sec-WebSocket-Accept",
                ))
            }
        }
        let protocol = match single_value(headers, &SEC_WEBSOCKET_PROTOCOL) {
            Ok(None) => None,
            Ok(Some(chosen)) => Some(
                self.protocols
                    .iter()
                    .find(|p| p.as_bytes() == chosen)
                    .cloned()
                    .ok_or_else(|| {
                        HandshakeError::bad_response(format!(
                            "server chose subprotocol {:?}, which we did not offer",
                            String::from_utf8_lossy(chosen)
                        ))
                    })?,
            ),
            Err(_) => {
                return Err(HandshakeError::bad_response(
                    "more than one Sec-WebSocket-Protocol",
                ))
            }
        };
        let extensions = headers
            .get_all(SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .map(|v| v.to_str())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| HandshakeError::bad_response("invalid Sec-WebSocket-Extensions"))?;
        let answered = extensions.iter().any(|v| !v.trim().is_empty());
        let deflate = match &self.deflate {
            Some((config, _)) => deflate::negotiate_client(extensions.iter().copied(), config)
                .map_err(|e| HandshakeError::bad_response(e.to_string()))?,
            None => None,
        };
        // We only ever offer permessage-deflate, so an answer that did not negotiate it names
        // an extension we did not offer (RFC 6455 §4.1 item 5 of the response checks).
        if answered && deflate.is_none() {
            return Err(HandshakeError::bad_response(
                "server accepted an extension we did not offer",
            ));
        }
        let mut parts = Response::new(());
        *parts.status_mut() = response.status();
        *parts.version_mut() = response.version();
        *parts.headers_mut() = headers.clone();
        Ok(ClientUpgrade {
            response: parts,
            protocol,
            deflate,
        })
    }
}

/// Parses a response head into an [`http::Response`] without validating it, for clients that
/// want to look at a refusal (a redirect's `Location`, say) before
/// [`ClientHandshake::validate_response`]. Bytes after the head are ignored.
///
/// # Errors
/// `502 Bad Gateway` when the head is malformed, incomplete, or exceeds
/// [`Config::max_header_bytes`] or [`Config::max_headers`].
pub fn parse_response(head: &[u8], config: &Config) -> Result<Response<()>, HandshakeError> {
    parse_head(head, config.max_header_bytes, config.max_headers)
}

fn parse_head(
    head: &[u8],
    max_header_bytes: usize,
    max_headers: usize,
) -> Result<Response<()>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return Err(HandshakeError::bad_response("incomplete response head"))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::bad_response(format!(
                "response has more than {max_headers} headers"
            )))
        }
        Err(e) => {
            return Err(HandshakeError::bad_response(format!(
                "malformed response head: {e}"
            )))
        }
    };
    if len > max_header_bytes {
        return Err(HandshakeError::bad_response(format!(
            "response head exceeds {max_header_bytes} bytes"
        )));
    }
    let (Some(code), Some(minor)) = (parsed.code, parsed.version) else {
        return Err(HandshakeError::bad_response("incomplete status line"));
    };
    let status = StatusCode::from_u16(code)
        .map_err(|_| HandshakeError::bad_response(format!("invalid status code {code}")))?;
    let headers = SharedHead::new(head, len)
        .header_map(parsed.headers)
        .map_err(HandshakeError::bad_response)?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *response.headers_mut() = headers;
    Ok(response)
}

/// A server response that passed [`ClientHandshake::validate_response`].
#[derive(Clone, Debug)]
pub struct ClientUpgrade {
    response: Response<()>,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

impl ClientUpgrade {
    /// The server's `101` response, headers included (`Set-Cookie`, say).
    pub fn response(&self) -> &Response<()> {
        &self.response
    }

    /// The response, consuming the upgrade.
    pub fn into_response(self) -> Response<()> {
        self.response
    }

    /// The subprotocol the server chose, if any; always one we offered.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The negotiated permessage-deflate parameters; `None` when compression is off.
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{accept, parse_request, HeadReader};
    use http::header::ORIGIN;
    use proptest::prelude::*;

    #[test]
    fn response_values_survive_the_buffer_they_were_parsed_from() {
        let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00"
            .to_vec();
        let response = parse_response(&bytes, &Config::default()).unwrap();
        bytes.fill(b'!');
        drop(bytes);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(response.headers()["upgrade"], "websocket");
    }

    fn client(uri: &str) -> ClientHandshake {
        ClientHandshake::new(&uri.parse().unwrap(), &Config::default()).unwrap()
    }

    fn request_text(handshake: &ClientHandshake) -> String {
        let mut out = BytesMut::new();
        handshake.write_request(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// A `101` answer to `handshake` with `lines` as extra header lines.
    fn response_for(handshake: &ClientHandshake, lines: &[&str]) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            accept_key(handshake.key().as_bytes())
        );
        for line in lines {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    #[test]
    fn request_is_well_formed_and_accepted() {
        let handshake = client("ws://example.com/chat?room=1")
            .protocols(["chat.v2", "chat.v1"])
            .header(ORIGIN, HeaderValue::from_static("https://example.com"));
        let text = request_text(&handshake);
        assert!(text.starts_with("GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n"));
        assert!(text.contains("\r\nUpgrade: websocket\r\n"));
        assert!(text.contains("\r\nConnection: Upgrade\r\n"));
        assert!(text.contains(&format!("\r\nSec-WebSocket-Key: {}\r\n", handshake.key())));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Protocol: chat.v2, chat.v1\r\n"));
        assert!(text.contains("\r\nOrigin: https://example.com\r\n"));
        assert!(text.ends_with("\r\n\r\n"));

        let config = Config::default();
        let len = HeadReader::new()
            .poll(text.as_bytes(), &config)
            .unwrap()
            .unwrap();
        assert_eq!(len, text.len());
        let request = parse_request(text.as_bytes(), &config).unwrap();
        assert_eq!(request.uri(), "/chat?room=1");
        // The raw bytes say exactly what `request()` says.
        assert_eq!(request.headers(), handshake.request().headers());
        let upgrade = accept(&request, &config).unwrap();
        assert_eq!(upgrade.origin(), Some("https://example.com"));
        assert_eq!(upgrade.protocols(), ["chat.v2", "chat.v1"]);
        assert_eq!(upgrade.accept_key(), accept_key(handshake.key().as_bytes()));
    }

    #[test]
    fn host_port_and_scheme() {
        let cases = [
            (
                "ws://example.com",
                "example.com",
                80,
                false,
                "example.com",
                "/",
            ),
            (
                "ws://example.com:80/a",
                "example.com",
                80,
                false,
                "example.com",
                "/a",
            ),
            (
                "ws://example.com:8080/",
                "example.com",
                8080,
                false,
                "example.com:8080",
                "/",
            ),
            (
                "wss://example.com",
                "example.com",
                443,
                true,
                "example.com",
                "/",
            ),
            (
                "wss://example.com:443",
                "example.com",
                443,
                true,
                "example.com",
                "/",
            ),
            (
                "wss://example.com:80",
                "example.com",
                80,
                true,
                "example.com:80",
                "/",
            ),
            (
                "http://example.com?x=1",
                "example.com",
                80,
                false,
                "example.com",
                "/?x=1",
            ),
            (
                "https://example.com/p",
                "example.com",
                443,
                true,
                "example.com",
                "/p",
            ),
            (
                "ws://[::1]:9000/ws",
                "::1",
                9000,
                false,
                "[::1]:9000",
                "/ws",
            ),
            (
                "wss://[2001:db8::1]",
                "2001:db8::1",
                443,
                true,
                "[2001:db8::1]",
                "/",
            ),
            (
                "WS://Example.com",
                "example.com",
                80,
                false,
                "example.com",
                "/",
            ),
        ];
        for (uri, host, port, tls, host_header, path) in cases {
            let handshake = client(uri);
            assert_eq!(handshake.host().to_ascii_lowercase(), host, "{uri}");
            assert_eq!(handshake.port(), port, "{uri}");
            assert_eq!(handshake.is_tls(), tls, "{uri}");
            let request = handshake.request();
            assert_eq!(
                request.headers()[HOST]
                    .to_str()
                    .unwrap()
                    .to_ascii_lowercase(),
                host_header,
                "{uri}"
            );
            assert_eq!(request.uri(), path, "{uri}");
        }
    }

    #[test]
    fn unusable_uris_are_refused() {
        for uri in [
            "ftp://example.com/",
            "/relative",
            "ws://user:pw@example.com/",
        ] {
            let err = ClientHandshake::new(&uri.parse().unwrap(), &Config::default()).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{uri}");
        }
    }

    #[test]
    fn credentials_stay_out_of_debug_output() {
        let handshake = client("ws://a/").header(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer secret-token"),
        );
        assert!(!format!("{handshake:?}").contains("secret-token"));
        let text = request_text(&handshake);
        assert!(text.contains("\r\nAuthorization: Bearer secret-token\r\n"));
    }

    #[test]
    fn keys_are_fresh() {
        let a = client("ws://a/");
        let b = client("ws://a/");
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn invalid_protocols_are_left_out() {
        let handshake = client("ws://a/").protocols(["ok", "", "two words", "a,b", "fine.v1"]);
        assert_eq!(
            handshake.request().headers()[SEC_WEBSOCKET_PROTOCOL],
            "ok, fine.v1"
        );
        assert!(!client("ws://a/")
            .protocols(Vec::<String>::new())
            .request()
            .headers()
            .contains_key(SEC_WEBSOCKET_PROTOCOL));
    }

    #[test]
    fn extra_headers_cannot_break_the_handshake() {
        let mut handshake = client("ws://10.0.0.1:8080/")
            .header(HOST, HeaderValue::from_static("virtual.example"))
            .header(UPGRADE, HeaderValue::from_static("h2c"))
            .header(SEC_WEBSOCKET_KEY, HeaderValue::from_static("forged"))
            .header(http::header::COOKIE, HeaderValue::from_static("a=1"));
        handshake
            .headers_mut()
            .append(http::header::COOKIE, HeaderValue::from_static("b=2"));
        let request = handshake.request();
        let headers = request.headers();
        assert_eq!(headers[HOST], "virtual.example");
        assert_eq!(headers.get_all(HOST).iter().count(), 1);
        assert_eq!(headers[UPGRADE], "websocket");
        assert_eq!(headers.get_all(UPGRADE).iter().count(), 1);
        assert_eq!(headers[SEC_WEBSOCKET_KEY], handshake.key());
        assert_eq!(headers.get_all(http::header::COOKIE).iter().count(), 2);
        let text = request_text(&handshake);
        assert!(text.contains("\r\nHost: virtual.example\r\n"));
        assert!(!text.contains("10.0.0.1"));
    }

    #[test]
    fn accepts_a_correct_response() {
        let handshake = client("ws://a/").protocols(["chat"]);
        let upgrade = handshake
            .handle_response(&response_for(&handshake, &["Sec-WebSocket-Protocol: chat"]))
            .unwrap();
        assert_eq!(upgrade.protocol(), Some("chat"));
        assert_eq!(upgrade.deflate(), None);
        assert_eq!(upgrade.response().status(), StatusCode::SWITCHING_PROTOCOLS);
        // No subprotocol in the answer is fine too (RFC 6455 §4.1: the server may pick none).
        let upgrade = handshake
            .handle_response(&response_for(&handshake, &[]))
            .unwrap();
        assert_eq!(upgrade.protocol(), None);
    }

    #[test]
    fn tolerates_case_and_lists() {
        let handshake = client("ws://a/");
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n\
             sec-websocket-accept: {}\r\n\r\n",
            accept_key(handshake.key().as_bytes())
        );
        handshake.handle_response(head.as_bytes()).unwrap();
    }

    fn failure(handshake: &ClientHandshake, head: &[u8]) -> HandshakeError {
        handshake.handle_response(head).unwrap_err()
    }

    #[test]
    fn non_101_keeps_the_servers_status() {
        let handshake = client("ws://a/");
        let err = failure(
            &handshake,
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert!(err.message().contains("403 Forbidden"), "{err}");
        let err = failure(&handshake, b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(err.status(), StatusCode::OK);
    }

    #[test]
    fn wrong_accept_key_is_refused() {
        let handshake = client("ws://a/");
        let other = client("ws://a/");
        let err = failure(&handshake, &response_for(&other, &[]));
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(failure(&handshake, head).status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn missing_upgrade_or_connection_is_refused() {
        let handshake = client("ws://a/");
        let accept = accept_key(handshake.key().as_bytes());
        for head in [
            format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"),
            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"),
            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"),
            format!("HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"),
        ] {
            assert_eq!(failure(&handshake, head.as_bytes()).status(), StatusCode::BAD_GATEWAY, "{head}");
        }
    }

    #[test]
    fn unoffered_protocol_is_refused() {
        let handshake = client("ws://a/").protocols(["chat"]);
        let err = failure(
            &handshake,
            &response_for(&handshake, &["Sec-WebSocket-Protocol: superchat"]),
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        // Offering nothing and getting one is just as wrong.
        let bare = client("ws://a/");
        let err = failure(
            &bare,
            &response_for(&bare, &["Sec-WebSocket-Protocol: chat"]),
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        // So is answering with a list.
        let err = failure(
            &handshake,
            &response_for(&handshake, &["Sec-WebSocket-Protocol: chat, chat"]),
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn unoffered_extension_is_refused() {
        let config = Config::default().with_deflate(None);
        let handshake = ClientHandshake::new(&"ws://a/".parse().unwrap(), &config).unwrap();
        assert!(!handshake
            .request()
            .headers()
            .contains_key(SEC_WEBSOCKET_EXTENSIONS));
        let err = failure(
            &handshake,
            &response_for(
                &handshake,
                &["Sec-WebSocket-Extensions: permessage-deflate"],
            ),
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let err = failure(
            &handshake,
            &response_for(
                &handshake,
                &["Sec-WebSocket-Extensions: x-webkit-deflate-frame"],
            ),
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn malformed_responses_are_502() {
        let handshake = client("ws://a/");
        for head in [
            &b""[..],
            b"HTTP/1.1 101 Switching Protocols\r\n",
            b"HTTP/1.1 1O1 Switching Protocols\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert_eq!(failure(&handshake, head).status(), StatusCode::BAD_GATEWAY);
        }
        let config = Config::default().with_max_headers(2);
        let handshake = ClientHandshake::new(&"ws://a/".parse().unwrap(), &config).unwrap();
        let err = failure(&handshake, &response_for(&handshake, &[]));
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn round_trip() {
        for deflate in [None, Some(crate::deflate::DeflateConfig::default())] {
            let config = Config::default().with_deflate(deflate);
            let client =
                ClientHandshake::new(&"ws://example.com:9001/echo".parse().unwrap(), &config)
                    .unwrap()
                    .protocols(["v2.duplex", "v1.duplex"])
                    .header(ORIGIN, HeaderValue::from_static("https://example.com"));
            let mut wire = BytesMut::new();
            client.write_request(&mut wire);
            wire.extend_from_slice(b"\x81\x80"); // a frame right behind the head

            let mut reader = HeadReader::new();
            let len = reader.poll(&wire, &config).unwrap().unwrap();
            assert_eq!(&wire[len..], b"\x81\x80");
            let request = parse_request(&wire[..len], &config).unwrap();
            let mut upgrade = accept(&request, &config).unwrap();
            assert_eq!(upgrade.origin(), Some("https://example.com"));
            upgrade.select_protocol("v1.duplex").unwrap();
            let mut answer = BytesMut::new();
            upgrade.write_response(&HeaderMap::new(), &mut answer);
            answer.extend_from_slice(b"\x81\x00");

            let mut reader = HeadReader::new();
            let len = reader.poll(&answer, &config).unwrap().unwrap();
            assert_eq!(&answer[len..], b"\x81\x00");
            let upgraded = client.handle_response(&answer[..len]).unwrap();
            assert_eq!(upgraded.protocol(), Some("v1.duplex"));
            assert_eq!(upgraded.deflate(), upgrade.deflate());
            // The hyper path validates the same `http::Response`.
            let upgraded = client.validate_response(&upgrade.response()).unwrap();
            assert_eq!(upgraded.protocol(), Some("v1.duplex"));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let config = Config::default();
            let handshake = ClientHandshake::new(&"ws://a/".parse().unwrap(), &config).unwrap();
            let _ = handshake.handle_response(&bytes);
            let _ = HeadReader::new().poll(&bytes, &config);
        }

        #[test]
        fn mutated_responses_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let handshake = client("ws://a/").protocols(["chat"]);
            let mut bytes = response_for(
                &handshake,
                &["Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Extensions: permessage-deflate"],
            );
            for (index, byte) in edits {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            let _ = handshake.handle_response(&bytes);
        }

        #[test]
        fn head_reader_agrees_in_any_chunks(
            bytes in proptest::collection::vec(
                prop::sample::select(vec![b'\r', b'\n', b'a', b':', b' ']), 0..200),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let config = Config::default().with_max_header_bytes(150);
            let whole = HeadReader::new().poll(&bytes, &config);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut reader = HeadReader::new();
            let mut chunked = None;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                match reader.poll(&bytes[..cut], &config) {
                    Ok(Some(len)) => { chunked = Some(Ok(Some(len))); break; }
                    Ok(None) => chunked = Some(Ok(None)),
                    Err(e) => { chunked = Some(Err(e)); break; }
                }
            }
            prop_assert_eq!(chunked.unwrap(), whole);
        }
    }
}
