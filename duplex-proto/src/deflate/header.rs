//! `Sec-WebSocket-Extensions` header grammar (RFC 6455 §9.1).

use std::fmt::{self, Write as _};

/// The extension name RFC 7692 registers.
pub(super) const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// One extension from a `Sec-WebSocket-Extensions` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Extension token, as sent.
    pub name: String,
    /// Parameters in order, values unquoted.
    pub params: Vec<(String, Option<String>)>,
}

impl Extension {
    /// Whether this is permessage-deflate (names compared ASCII case-insensitively).
    pub fn is_permessage_deflate(&self) -> bool {
        self.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE)
    }
}

impl fmt::Display for Extension {
    /// Writes the extension back in header syntax, quoting values that need it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            write!(f, "; {name}")?;
            match value {
                Some(v) if !v.is_empty() && v.bytes().all(is_tchar) => write!(f, "={v}")?,
                Some(v) => {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_char('\\')?;
                        }
                        f.write_char(c)?;
                    }
                    f.write_char('"')?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// A malformed or unacceptable extension header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Sec-WebSocket-Extensions: {0}")]
pub struct ExtensionError(pub String);

/// Parses one `Sec-WebSocket-Extensions` header value (RFC 6455 §9.1).
///
/// The grammar is a comma-separated list of extensions, each a token followed by
/// `;`-separated parameters whose values are tokens or quoted strings (a quoted value must
/// still be a token once unescaped, §9.1). Optional whitespace is accepted around every
/// separator and `=`, and empty list elements (`a, , b`) are skipped as RFC 7230 §7 asks.
/// Never panics, whatever the input.
///
/// # Errors
/// [`ExtensionError`] naming the byte offset when the value does not follow the grammar, or
/// when it holds no extension at all.
pub fn parse_extensions(value: &str) -> Result<Vec<Extension>, ExtensionError> {
    let mut p = Parser {
        s: value.as_bytes(),
        pos: 0,
    };
    let mut extensions = Vec::new();
    loop {
        p.skip_ows();
        match p.peek() {
            None => break,
            Some(b',') => {
                p.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = p.token("an extension name")?;
        let mut params = Vec::new();
        loop {
            p.skip_ows();
            match p.peek() {
                None => break,
                Some(b',') => {
                    p.pos += 1;
                    break;
                }
                Some(b';') => {
                    p.pos += 1;
                    p.skip_ows();
                    let param = p.token("a parameter name")?;
                    p.skip_ows();
                    let value = if p.peek() == Some(b'=') {
                        p.pos += 1;
                        p.skip_ows();
                        Some(p.param_value()?)
                    } else {
                        None
                    };
                    params.push((param, value));
                }
                Some(_) => return Err(p.unexpected("`;`, `,` or the end")),
            }
        }
        extensions.push(Extension { name, params });
    }
    if extensions.is_empty() {
        return Err(ExtensionError("no extension in the list".into()));
    }
    Ok(extensions)
}

/// A cursor over a header value; every access is bounds-checked.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// OWS = *( SP / HTAB ) (RFC 7230 §3.2.3).
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn token(&mut self, what: &str) -> Result<String, ExtensionError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        match self.s.get(start..self.pos) {
            Some(t) if !t.is_empty() => Ok(String::from_utf8_lossy(t).into_owned()),
            _ => Err(self.unexpected(what)),
        }
    }

    /// token / quoted-string; a quoted value must unescape to a token (RFC 6455 §9.1).
    fn param_value(&mut self) -> Result<String, ExtensionError> {
        if self.peek() != Some(b'"') {
            return self.token("a parameter value");
        }
        let open = self.pos;
        self.pos += 1;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ExtensionError(format!(
                        "unterminated quoted string starting at byte {open}"
                    )))
                }
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) if c == b'\t' || (b' '..=b'~').contains(&c) => {
                            value.push(c);
                            self.pos += 1;
                        }
                        _ => return Err(self.unexpected("an escaped character")),
                    }
                }
                Some(c) if c == b'\t' || (b' '..=b'~').contains(&c) => {
                    value.push(c);
                    self.pos += 1;
                }
                Some(_) => return Err(self.unexpected("a quoted-string character")),
            }
        }
        if value.is_empty() || !value.iter().copied().all(is_tchar) {
            return Err(ExtensionError(format!(
                "quoted value at byte {open} is not a token once unquoted (RFC 6455 §9.1)"
            )));
        }
        Ok(String::from_utf8_lossy(&value).into_owned())
    }

    fn unexpected(&self, expected: &str) -> ExtensionError {
        let found = match self.peek() {
            None => "the end of the value".to_owned(),
            Some(c) if c.is_ascii_graphic() => format!("`{}`", c as char),
            Some(b' ') => "a space".to_owned(),
            Some(c) => format!("byte {c:#04x}"),
        };
        ExtensionError(format!(
            "expected {expected} at byte {}, found {found}",
            self.pos
        ))
    }
}

/// tchar (RFC 7230 §3.2.6).
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(name: &str, params: &[(&str, Option<&str>)]) -> Extension {
        Extension {
            name: name.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn parses_lists_params_and_quoted_values() {
        assert_eq!(
            parse_extensions("permessage-deflate; client_max_window_bits").unwrap(),
            [ext(
                "permessage-deflate",
                &[("client_max_window_bits", None)]
            )]
        );
        assert_eq!(
            parse_extensions(" foo ,bar;a=1 ;\tb = \"x\\yz\" , , baz;c ").unwrap(),
            [
                ext("foo", &[]),
                ext("bar", &[("a", Some("1")), ("b", Some("xyz"))]),
                ext("baz", &[("c", None)]),
            ]
        );
        assert_eq!(
            parse_extensions("x; client_max_window_bits=\"10\"").unwrap(),
            [ext("x", &[("client_max_window_bits", Some("10"))])]
        );
    }

    #[test]
    fn rejects_garbage_with_a_position() {
        for (bad, needle) in [
            ("", "no extension"),
            (" , ,", "no extension"),
            ("foo;", "parameter name at byte 4"),
            ("foo; =1", "parameter name at byte 5"),
            ("foo bar", "`;`, `,` or the end at byte 4"),
            ("foo; a=", "parameter value at byte 7"),
            (
                "foo; a=\"open",
                "unterminated quoted string starting at byte 7",
            ),
            ("foo; a=\"b c\"", "not a token"),
            ("foo; a=\"\"", "not a token"),
            ("foo; a=\"b\\\u{7f}\"", "escaped character"),
            ("foo;;a", "parameter name at byte 4"),
            ("f\u{f6}o", "byte 0xc3"),
            ("foo; a=b=c", "at byte 8"),
            ("=foo", "extension name at byte 0"),
            ("foo\r\n, bar", "byte 0x0d"),
        ] {
            let err = parse_extensions(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }
}
