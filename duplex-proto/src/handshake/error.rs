use bytes::BytesMut;
use http::header::{
    ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Response, StatusCode};

use super::http::write_head;

/// A failed opening handshake; knows the HTTP status to answer with.
///
/// On the server side the status is what to send back to the client: [`HandshakeError::response`]
/// for hyper and axum, [`HandshakeError::write_response`] for a raw socket. Applications
/// rejecting a request for their own reasons (a bad `Origin`, failed authentication) build one
/// with [`HandshakeError::new`].
///
/// On the client side nothing is sent back; the status classifies the failure:
///
/// * the server's own status when it did not answer `101 Switching Protocols`;
/// * `502 Bad Gateway` when its response broke RFC 6455 §4.1 (wrong accept key, missing
///   `Upgrade`, a subprotocol or extension we did not offer, an unparsable head);
/// * `400 Bad Request` for a URI we cannot connect to;
/// * `500 Internal Server Error` for local faults (no randomness for the key).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct HandshakeError {
    status: StatusCode,
    message: String,
}

impl HandshakeError {
    /// A failure answered with `status`; `message` becomes the plain-text response body, so
    /// keep it free of anything the client should not see.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// `400 Bad Request`: a malformed request, or a client-side URI we cannot use.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `502 Bad Gateway`: a client received a response that breaks RFC 6455 §4.1.
    pub(crate) fn bad_response(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }

    /// The HTTP status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong, without the status.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The rejection as an HTTP response whose body is [`HandshakeError::message`].
    ///
    /// Carries `Content-Type: text/plain; charset=utf-8`; a `405` carries `Allow: GET`, and a
    /// `426` carries `Upgrade: websocket` (RFC 7231 §6.5.15) and `Sec-WebSocket-Version: 13`
    /// (RFC 6455 §4.4). `Content-Length` and `Connection` are left to the HTTP server.
    pub fn response(&self) -> Response<String> {
        let mut response = Response::new(self.message.clone());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match self.status {
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(ALLOW, HeaderValue::from_static("GET"));
            }
            StatusCode::UPGRADE_REQUIRED => {
                headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            _ => {}
        }
        response
    }

    /// Appends the raw HTTP/1.1 bytes of [`HandshakeError::response`] to `out`, with
    /// `Content-Length` and `Connection: close`: after a failed handshake the connection is
    /// done. (A `426` says `Connection: Upgrade, close`, because RFC 7230 §6.7 wants the
    /// `upgrade` option whenever an `Upgrade` header is sent.)
    pub fn write_response(&self, out: &mut BytesMut) {
        let mut response = self.response();
        let connection = if response.headers().contains_key(UPGRADE) {
            "Upgrade, close"
        } else {
            "close"
        };
        let headers = response.headers_mut();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(self.message.len()));
        headers.insert(CONNECTION, HeaderValue::from_static(connection));
        write_head(out, self.status, response.headers());
        out.extend_from_slice(self.message.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_status_and_message() {
        let err = HandshakeError::new(StatusCode::FORBIDDEN, "origin not allowed");
        assert_eq!(err.to_string(), "403 Forbidden: origin not allowed");
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert_eq!(err.message(), "origin not allowed");
    }

    #[test]
    fn raw_response_is_complete() {
        let err = HandshakeError::new(StatusCode::FORBIDDEN, "origin not allowed");
        let mut out = BytesMut::new();
        err.write_response(&mut out);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = parsed.parse(&out).unwrap() else {
            panic!("incomplete head");
        };
        assert_eq!(parsed.code, Some(403));
        assert_eq!(parsed.reason, Some("Forbidden"));
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        assert_eq!(header("content-length"), Some(&b"18"[..]));
        assert_eq!(header("connection"), Some(&b"close"[..]));
        assert_eq!(
            header("content-type"),
            Some(&b"text/plain; charset=utf-8"[..])
        );
        assert_eq!(&out[n..], b"origin not allowed");
    }

    #[test]
    fn upgrade_required_names_the_version() {
        let err = HandshakeError::new(StatusCode::UPGRADE_REQUIRED, "unsupported version");
        let response = err.response();
        assert_eq!(response.headers()[SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(response.headers()[UPGRADE], "websocket");
        assert_eq!(response.body(), "unsupported version");
        let mut out = BytesMut::new();
        err.write_response(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nConnection: Upgrade, close\r\n"));
    }

    #[test]
    fn method_not_allowed_names_get() {
        let err = HandshakeError::new(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        assert_eq!(err.response().headers()[ALLOW], "GET");
    }
}
