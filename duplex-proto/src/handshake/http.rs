//! HTTP/1.1 plumbing shared by both roles: finding the end of a head, reading header lists,
//! and writing heads.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{
    AsHeaderName, HeaderName, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use std::mem::MaybeUninit;

use super::HandshakeError;
use crate::config::Config;

/// Finds the end of an HTTP head (request or status line plus headers) in a growing buffer.
///
/// Feed it the whole buffer after every read; it remembers how far it has looked, so each byte
/// is examined once however the head is split across reads. The head ends at the first empty
/// line: `\r\n\r\n`, or a bare `\n\n` which RFC 9112 §2.2 lets recipients accept (httparse
/// does, so both agree on where the head ends).
///
/// ```
/// use duplex_proto::Config;
/// use duplex_proto::handshake::HeadReader;
///
/// let config = Config::default();
/// let mut reader = HeadReader::new();
/// let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
/// assert_eq!(reader.poll(&buf, &config).unwrap(), None);
/// buf.extend_from_slice(b"\r\n\x81\x00"); // the head's end, then the first frame
/// assert_eq!(reader.poll(&buf, &config).unwrap(), Some(27));
/// ```
#[derive(Clone, Debug, Default)]
pub struct HeadReader {
    /// Bytes of the buffer already examined.
    scanned: usize,
    /// Where the line after the last examined `\n` starts; `None` before the first one.
    line_start: Option<usize>,
    /// The head's length, once found.
    head_len: Option<usize>,
}

impl HeadReader {
    /// A reader that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks for the end of the head in `buf`, which must start where the head starts and only
    /// grow between calls.
    ///
    /// Returns `Ok(Some(len))` once `buf[..len]` is a complete head; the bytes after it belong
    /// to the WebSocket stream and the caller must keep them. `Ok(None)` means more bytes are
    /// needed. After `Some`, further calls return the same length.
    ///
    /// # Errors
    /// `431 Request Header Fields Too Large` once [`Config::max_header_bytes`] bytes have
    /// arrived without the head ending.
    pub fn poll(&mut self, buf: &[u8], config: &Config) -> Result<Option<usize>, HandshakeError> {
        if buf.len() < self.scanned {
            // The caller broke the contract and handed us a different buffer; start over
            // rather than report a length past its end.
            *self = Self::default();
        }
        if let Some(len) = self.head_len {
            return Ok(Some(len));
        }
        let limit = buf.len().min(config.max_header_bytes);
        let mut at = self.scanned.min(limit);
        // Line ends only: a head has a few dozen, and memchr skips the text between them
        // many bytes at a time (byte by byte, this scan was a twentieth of a handshake's
        // instructions, docs/performance.md, eighth pass).
        while let Some(offset) = memchr::memchr(b'\n', &buf[at..limit]) {
            let end = at + offset;
            // The line this `\n` ends is empty (`\n`, or `\r\n`): the head is complete.
            let empty = self
                .line_start
                .is_some_and(|start| end == start || (end == start + 1 && buf[start] == b'\r'));
            if empty {
                let len = end + 1;
                self.scanned = len;
                self.head_len = Some(len);
                return Ok(Some(len));
            }
            self.line_start = Some(end + 1);
            at = end + 1;
        }
        self.scanned = self.scanned.max(limit);
        if buf.len() >= config.max_header_bytes {
            return Err(HandshakeError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("HTTP head longer than {} bytes", config.max_header_bytes),
            ));
        }
        Ok(None)
    }

    /// How many bytes have been examined so far (for tests that check nothing is rescanned).
    #[cfg(test)]
    pub(crate) fn scanned(&self) -> usize {
        self.scanned
    }
}

/// The comma-separated elements of every `name` header, trimmed, empty ones skipped
/// (RFC 9110 §5.6.1: recipients accept empty list elements).
pub(crate) fn list_elements(
    headers: &HeaderMap,
    name: impl AsHeaderName,
) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
}

/// Whether the `name` header list holds `token`, compared case-insensitively (tokens such as
/// `websocket` and `upgrade` are, RFC 9110 §7.8 and §7.6.1).
pub(crate) fn has_token(headers: &HeaderMap, name: impl AsHeaderName, token: &str) -> bool {
    list_elements(headers, name).any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
}

/// The one value of `name`, trimmed: `Ok(None)` when absent, `Err` when repeated.
pub(crate) fn single_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a [u8]>, Repeated> {
    let mut values = headers.get_all(name).into_iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value.as_bytes().trim_ascii())),
        (Some(_), Some(_)) => Err(Repeated),
    }
}

/// [`single_value`] found the header more than once; the caller picks the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Repeated;

/// Whether `s` is an RFC 9110 §5.6.2 token, the grammar of subprotocol names (RFC 6455 §4.1).
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers the handshake itself writes, which an application's extra headers must not
/// repeat or contradict.
pub(crate) fn is_handshake_header(name: &HeaderName) -> bool {
    name == UPGRADE
        || name == CONNECTION
        || name == CONTENT_LENGTH
        || name == TRANSFER_ENCODING
        || name.as_str().starts_with("sec-websocket-")
}

/// A parsed head's bytes, copied once: the request target and the header values are made
/// slices of this copy instead of one allocation each (a value kept from the map keeps at
/// most this copy alive, never the connection's read buffer).
pub(crate) struct SharedHead<'a> {
    /// What httparse parsed; its slices point into it.
    parsed: &'a [u8],
    copy: Bytes,
}

impl<'a> SharedHead<'a> {
    /// Copies the first `len` bytes of `parsed`, the head httparse found there.
    pub(crate) fn new(parsed: &'a [u8], len: usize) -> Self {
        Self {
            parsed,
            copy: Bytes::copy_from_slice(&parsed[..len]),
        }
    }

    /// The copy of `part`, a slice httparse returned into the parsed head.
    pub(crate) fn slice(&self, part: &[u8]) -> Bytes {
        let base = self.parsed.as_ptr().addr();
        debug_assert!(
            part.as_ptr().addr() >= base
                && part.as_ptr().addr() + part.len() <= base + self.copy.len(),
            "not a slice of the parsed head"
        );
        let start = part.as_ptr().addr() - base;
        self.copy.slice(start..start + part.len())
    }

    /// Builds a [`HeaderMap`] from httparse's headers.
    ///
    /// # Errors
    /// A message naming the first header `http` refuses (httparse and `http` differ
    /// slightly on what a header value may hold).
    pub(crate) fn header_map(&self, headers: &[httparse::Header<'_>]) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::with_capacity(headers.len());
        for header in headers {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| format!("invalid header name {:?}", header.name))?;
            let value = HeaderValue::from_maybe_shared(self.slice(header.value))
                .map_err(|_| format!("invalid value in header {:?}", header.name))?;
            map.append(name, value);
        }
        Ok(map)
    }
}

/// Room for httparse's header slots on the stack: a head with up to this many headers (the
/// default [`Config::max_headers`] is 64) is parsed without a heap array.
pub(crate) const STACK_HEADERS: usize = 64;

/// Calls `parse` with `max` uninitialised header slots: on the stack up to
/// [`STACK_HEADERS`], on the heap beyond.
pub(crate) fn with_header_slots<'b, R>(
    max: usize,
    parse: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max <= STACK_HEADERS {
        let mut slots = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        parse(&mut slots[..max])
    } else {
        let mut slots = Vec::with_capacity(max);
        slots.resize_with(max, MaybeUninit::uninit);
        parse(&mut slots)
    }
}

/// Appends `HTTP/1.1 <status> <reason>`, the headers and the empty line to `out`.
pub(crate) fn write_head(out: &mut BytesMut, status: StatusCode, headers: &HeaderMap) {
    write_status_line(out, status);
    write_headers(out, headers);
    out.put_slice(b"\r\n");
}

/// Appends `HTTP/1.1 <status> <reason>\r\n` to `out`.
pub(crate) fn write_status_line(out: &mut BytesMut, status: StatusCode) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.put_slice(b"\r\n");
}

/// Appends `name: value\r\n` for each header, names in the conventional capitalisation:
/// HTTP does not care, but a few embedded WebSocket clients compare names byte for byte.
pub(crate) fn write_headers<'a>(
    out: &mut BytesMut,
    headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) {
    for (name, value) in headers {
        write_name(out, name);
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// Writes `name` as `Title-Case`, with `WebSocket` spelled as RFC 6455 does.
fn write_name(out: &mut BytesMut, name: &HeaderName) {
    let name = name.as_str();
    if let Some(rest) = name.strip_prefix("sec-websocket-") {
        out.put_slice(b"Sec-WebSocket-");
        write_title_case(out, rest);
    } else {
        write_title_case(out, name);
    }
}

fn write_title_case(out: &mut BytesMut, name: &str) {
    let mut upper = true;
    for &b in name.as_bytes() {
        out.put_u8(if upper { b.to_ascii_uppercase() } else { b });
        upper = b == b'-';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\n\r\n";

    fn config() -> Config {
        Config::default()
    }

    #[test]
    fn finds_the_end_in_one_read_and_leaves_the_rest() {
        let mut buf = HEAD.to_vec();
        buf.extend_from_slice(b"\x81\x85rest");
        assert_eq!(
            HeadReader::new().poll(&buf, &config()).unwrap(),
            Some(HEAD.len())
        );
    }

    #[test]
    fn any_split_finds_the_same_end_incrementally() {
        let mut stream = HEAD.to_vec();
        stream.extend_from_slice(b"\x81\x00");
        // Every pair of cut points, so the `\r\n\r\n` is split every way, including between
        // its two line ends.
        for first in 0..=stream.len() {
            for second in first..=stream.len() {
                let mut reader = HeadReader::new();
                let mut found = None;
                for cut in [first, second, stream.len()] {
                    let result = reader.poll(&stream[..cut], &config()).unwrap();
                    if cut < HEAD.len() {
                        assert_eq!(result, None, "cut at {cut}");
                        // Everything fed so far was examined once and is not looked at again.
                        assert_eq!(reader.scanned(), cut);
                    } else {
                        assert_eq!(result, Some(HEAD.len()), "cut at {first}/{second}/{cut}");
                        found = result;
                    }
                }
                assert_eq!(found, Some(HEAD.len()));
            }
        }
    }

    #[test]
    fn does_not_rescan_examined_bytes() {
        let mut reader = HeadReader::new();
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX: 0000".to_vec();
        assert_eq!(reader.poll(&buf, &config()).unwrap(), None);
        // Rewrite bytes already examined into an end of head: a reader that rescanned from the
        // start would now report it, ours only looks at what is new.
        let n = buf.len();
        buf[n - 4..].copy_from_slice(b"\r\n\r\n");
        buf.extend_from_slice(b"1");
        assert_eq!(reader.poll(&buf, &config()).unwrap(), None);
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(reader.poll(&buf, &config()).unwrap(), Some(buf.len()));
    }

    #[test]
    fn accepts_bare_line_feeds() {
        for head in [
            &b"GET / HTTP/1.1\nHost: a\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        ] {
            for cut in 0..head.len() {
                let mut reader = HeadReader::new();
                assert_eq!(reader.poll(&head[..cut], &config()).unwrap(), None);
                assert_eq!(reader.poll(head, &config()).unwrap(), Some(head.len()));
            }
        }
    }

    /// The byte-at-a-time definition the reader must agree with: the head ends with the
    /// first `\n` that ends an empty line (`\n` or `\r\n` alone), the first line excepted.
    fn bytewise_end(buf: &[u8]) -> Option<usize> {
        let mut after_newline = false;
        let mut after_newline_cr = false;
        for (i, &b) in buf.iter().enumerate() {
            if b == b'\n' && (after_newline || after_newline_cr) {
                return Some(i + 1);
            }
            after_newline_cr = after_newline && b == b'\r';
            after_newline = b == b'\n';
        }
        None
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_bytewise_definition_however_split(
            bytes in proptest::collection::vec(
                proptest::sample::select(&b"\n\r\na:"[..]), 0..48),
            cuts in proptest::collection::vec(0usize..48, 0..4),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            cuts.push(bytes.len());
            let mut reader = HeadReader::new();
            let mut found = None;
            for cut in cuts {
                found = reader.poll(&bytes[..cut], &config()).unwrap();
                if let Some(len) = found {
                    proptest::prop_assert!(len <= cut);
                }
            }
            proptest::prop_assert_eq!(found, bytewise_end(&bytes));
        }

        #[test]
        fn a_head_longer_than_the_limit_is_refused_however_split(
            bytes in proptest::collection::vec(
                proptest::sample::select(&b"\n\r\na:"[..]), 0..48),
            cuts in proptest::collection::vec(0usize..48, 0..4),
            max in 1usize..48,
        ) {
            let config = Config::default().with_max_header_bytes(max);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            cuts.push(bytes.len());
            let mut reader = HeadReader::new();
            let mut outcome = Ok(None);
            for cut in cuts {
                outcome = reader.poll(&bytes[..cut], &config).map_err(|e| e.status());
                if outcome.is_err() {
                    break;
                }
            }
            // Only the first `max` bytes count; past them without an end, 431.
            let expected = match bytewise_end(&bytes[..bytes.len().min(max)]) {
                Some(len) => Ok(Some(len)),
                None if bytes.len() >= max => Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
                None => Ok(None),
            };
            proptest::prop_assert_eq!(outcome, expected);
        }
    }

    #[test]
    fn too_long_head_is_431() {
        let config = config().with_max_header_bytes(HEAD.len());
        // Exactly at the limit is fine...
        assert_eq!(
            HeadReader::new().poll(HEAD, &config).unwrap(),
            Some(HEAD.len())
        );
        // ...one byte more without an end is not, whether it arrives at once or bit by bit.
        let long = [&HEAD[..HEAD.len() - 2], b"X:\r\n\r\n"].concat();
        let err = HeadReader::new().poll(&long, &config).unwrap_err();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let mut reader = HeadReader::new();
        for cut in 0..HEAD.len() {
            assert_eq!(reader.poll(&long[..cut], &config).unwrap(), None);
        }
        assert!(reader.poll(&long, &config).is_err());
        // The limit bounds the scan even when a huge buffer arrives at once.
        let huge = vec![b'a'; 1 << 20];
        let mut reader = HeadReader::new();
        assert!(reader.poll(&huge, &config).is_err());
        assert_eq!(reader.scanned(), HEAD.len());
    }

    #[test]
    fn header_lists_and_tokens() {
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.append(CONNECTION, HeaderValue::from_static(" ,, close "));
        let elements: Vec<_> = list_elements(&headers, CONNECTION).collect();
        assert_eq!(elements, [&b"keep-alive"[..], b"Upgrade", b"close"]);
        assert!(has_token(&headers, CONNECTION, "upgrade"));
        assert!(!has_token(&headers, CONNECTION, "upgrad"));
        assert!(!has_token(&headers, UPGRADE, "websocket"));

        assert_eq!(single_value(&headers, &UPGRADE), Ok(None));
        assert_eq!(single_value(&headers, &CONNECTION), Err(Repeated));

        assert!(is_token(b"chat.v2+json"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert!(!is_token(b"a,b"));
        assert!(!is_token("é".as_bytes()));
    }

    #[test]
    fn names_are_written_in_conventional_case() {
        let mut headers = HeaderMap::new();
        headers.insert("sec-websocket-accept", HeaderValue::from_static("x"));
        headers.insert("www-authenticate", HeaderValue::from_static("y"));
        let mut out = BytesMut::new();
        write_head(&mut out, StatusCode::SWITCHING_PROTOCOLS, &headers);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\
              Www-Authenticate: y\r\n\r\n"
        );
    }
}
