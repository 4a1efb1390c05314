//! Finding the token of a WebSocket upgrade request (protocol §1).

use std::fmt;

use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use http::Request;

use super::AuthError;

/// The prefix of a `Sec-WebSocket-Protocol` entry that carries a token: `duplex.token.<jwt>`.
/// Browsers cannot set headers on a WebSocket, but they can offer subprotocols; the server
/// never selects this entry.
pub const SUBPROTOCOL_TOKEN_PREFIX: &str = "duplex.token.";

/// Where in an upgrade request a token was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenSource {
    /// `Authorization: Bearer <jwt>`.
    Header,
    /// The `token` query parameter.
    Query,
    /// A `duplex.token.<jwt>` entry of `Sec-WebSocket-Protocol`.
    Subprotocol,
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "Authorization header",
            Self::Query => "token query parameter",
            Self::Subprotocol => "Sec-WebSocket-Protocol header",
        })
    }
}

/// Finds the token of an upgrade request, if it carries one.
///
/// A token may be given as `Authorization: Bearer <jwt>` (the scheme is case-insensitive), as
/// the query parameter `token` (percent-decoded, `+` meaning a space as in HTML forms), or as a
/// `Sec-WebSocket-Protocol` entry `duplex.token.<jwt>` (the header may be repeated and each
/// value is a comma-separated list). The same token may appear in several places; the first
/// place in that order is reported. Only where the token is found is checked here, not the
/// token itself: pass it to [`Authenticator::verify`](super::Authenticator::verify).
///
/// # Errors
///
/// * [`AuthError::ConflictingTokens`] if two places (or two copies of one) hold different
///   tokens;
/// * [`AuthError::NotBearer`] if an `Authorization` header uses another scheme, such as
///   `Basic`;
/// * [`AuthError::BadTokenField`] if a place holds an empty token or a header is not text.
///
/// ```
/// use duplex_hub::auth::{token_from_request, TokenSource};
///
/// let request = http::Request::get("/ws?token=a.b.c").body(()).unwrap();
/// let found = token_from_request(&request).unwrap();
/// assert_eq!(found, Some(("a.b.c".to_owned(), TokenSource::Query)));
/// ```
pub fn token_from_request(
    request: &Request<()>,
) -> Result<Option<(String, TokenSource)>, AuthError> {
    let mut found = Found::default();

    for value in request.headers().get_all(AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::BadTokenField {
            place: TokenSource::Header,
            reason: "the header is not visible ASCII",
        })?;
        let value = value.trim();
        let (scheme, token) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        found.add(token.trim().to_owned(), TokenSource::Header)?;
    }

    if let Some(query) = request.uri().query() {
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if form_decode(name) != b"token" {
                continue;
            }
            let token =
                String::from_utf8(form_decode(value)).map_err(|_| AuthError::BadTokenField {
                    place: TokenSource::Query,
                    reason: "not UTF-8 once percent-decoded",
                })?;
            found.add(token, TokenSource::Query)?;
        }
    }

    for value in request.headers().get_all(SEC_WEBSOCKET_PROTOCOL) {
        // A header that is not text cannot hold our entry; the handshake rejects it anyway.
        let Ok(value) = value.to_str() else { continue };
        for entry in value.split(',') {
            if let Some(token) = entry.trim().strip_prefix(SUBPROTOCOL_TOKEN_PREFIX) {
                found.add(token.to_owned(), TokenSource::Subprotocol)?;
            }
        }
    }

    Ok(found.0)
}

#[derive(Default)]
struct Found(Option<(String, TokenSource)>);

impl Found {
    fn add(&mut self, token: String, place: TokenSource) -> Result<(), AuthError> {
        if token.is_empty() {
            return Err(AuthError::BadTokenField {
                place,
                reason: "the token is empty",
            });
        }
        match &self.0 {
            None => self.0 = Some((token, place)),
            Some((first, _)) if *first == token => {}
            Some((_, first)) => {
                return Err(AuthError::ConflictingTokens {
                    first: *first,
                    second: place,
                })
            }
        }
        Ok(())
    }
}

/// Decodes one `application/x-www-form-urlencoded` name or value: `+` is a space, `%XX` a byte.
/// A `%` not followed by two hex digits stays as it is, as in the WHATWG URL standard.
fn form_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|hex| {
                    let hi = char::from(hex[0]).to_digit(16)?;
                    let lo = char::from(hex[1]).to_digit(16)?;
                    u8::try_from(hi * 16 + lo).ok()
                });
                if let Some(decoded) = hex {
                    out.push(decoded);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("valid test request")
    }

    fn find(
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Result<Option<(String, TokenSource)>, AuthError> {
        token_from_request(&request(uri, headers))
    }

    #[test]
    fn no_token() {
        assert_eq!(find("/ws", &[]), Ok(None));
        assert_eq!(find("/ws?x=1&tokens=2", &[]), Ok(None));
        assert_eq!(
            find("/ws", &[("sec-websocket-protocol", "duplex.v1, chat")]),
            Ok(None)
        );
    }

    #[test]
    fn bearer_header() {
        let auth = format!("Bearer {JWT}");
        assert_eq!(
            find("/ws", &[("authorization", &auth)]),
            Ok(Some((JWT.to_owned(), TokenSource::Header)))
        );
        let auth = format!("bearer   {JWT} ");
        assert_eq!(
            find("/ws", &[("authorization", &auth)]),
            Ok(Some((JWT.to_owned(), TokenSource::Header)))
        );
    }

    #[test]
    fn other_schemes_are_refused() {
        assert_eq!(
            find("/ws", &[("authorization", "Basic dXNlcjpwYXNz")]),
            Err(AuthError::NotBearer)
        );
        assert_eq!(
            find("/ws", &[("authorization", JWT)]),
            Err(AuthError::NotBearer)
        );
        assert!(matches!(
            find("/ws", &[("authorization", "Bearer")]),
            Err(AuthError::BadTokenField {
                place: TokenSource::Header,
                ..
            })
        ));
    }

    #[test]
    fn query_parameter() {
        assert_eq!(
            find(&format!("/ws?a=1&token={JWT}&b"), &[]),
            Ok(Some((JWT.to_owned(), TokenSource::Query)))
        );
    }

    #[test]
    fn query_parameter_is_percent_decoded() {
        // `.` as %2E, `-` as %2d (lower-case hex), and the name itself encoded.
        assert_eq!(
            find("/ws?t%6Fken=a%2Eb-c%2dd.e", &[]),
            Ok(Some(("a.b-c-d.e".to_owned(), TokenSource::Query)))
        );
        assert_eq!(
            find("/ws?token=a+b%zz%4", &[]),
            Ok(Some(("a b%zz%4".to_owned(), TokenSource::Query)))
        );
        assert!(matches!(
            find("/ws?token=%FF", &[]),
            Err(AuthError::BadTokenField {
                place: TokenSource::Query,
                ..
            })
        ));
        assert!(matches!(
            find("/ws?token=", &[]),
            Err(AuthError::BadTokenField { .. })
        ));
    }

    #[test]
    fn subprotocol_entry() {
        let protocols = format!("duplex.v1, duplex.token.{JWT}");
        assert_eq!(
            find("/ws", &[("sec-websocket-protocol", &protocols)]),
            Ok(Some((JWT.to_owned(), TokenSource::Subprotocol)))
        );
        // The header may be repeated.
        let entry = format!("duplex.token.{JWT}");
        assert_eq!(
            find(
                "/ws",
                &[
                    ("sec-websocket-protocol", "duplex.v1"),
                    ("sec-websocket-protocol", &entry)
                ]
            ),
            Ok(Some((JWT.to_owned(), TokenSource::Subprotocol)))
        );
        // Subprotocol names are case-sensitive (RFC 6455 §4.1).
        assert_eq!(
            find("/ws", &[("sec-websocket-protocol", "Duplex.Token.abc")]),
            Ok(None)
        );
    }

    #[test]
    fn same_token_in_several_places_is_fine() {
        let auth = format!("Bearer {JWT}");
        let protocols = format!("duplex.token.{JWT},duplex.v1");
        assert_eq!(
            find(
                &format!("/ws?token={JWT}"),
                &[
                    ("authorization", &auth),
                    ("sec-websocket-protocol", &protocols)
                ]
            ),
            Ok(Some((JWT.to_owned(), TokenSource::Header)))
        );
    }

    #[test]
    fn different_tokens_conflict() {
        let auth = format!("Bearer {JWT}");
        assert_eq!(
            find("/ws?token=other", &[("authorization", &auth)]),
            Err(AuthError::ConflictingTokens {
                first: TokenSource::Header,
                second: TokenSource::Query
            })
        );
        assert_eq!(
            find(
                "/ws?token=one",
                &[("sec-websocket-protocol", "duplex.v1, duplex.token.two")]
            ),
            Err(AuthError::ConflictingTokens {
                first: TokenSource::Query,
                second: TokenSource::Subprotocol
            })
        );
        assert_eq!(
            find("/ws?token=one&token=two", &[]),
            Err(AuthError::ConflictingTokens {
                first: TokenSource::Query,
                second: TokenSource::Query
            })
        );
    }

    #[test]
    fn non_text_authorization_header_is_refused() {
        let mut req = request("/ws", &[]);
        req.headers_mut().insert(
            AUTHORIZATION,
            http::HeaderValue::from_bytes(b"Bearer \xff").expect("obs-text is a valid value"),
        );
        assert!(matches!(
            token_from_request(&req),
            Err(AuthError::BadTokenField {
                place: TokenSource::Header,
                ..
            })
        ));
    }
}
