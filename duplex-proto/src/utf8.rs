//! UTF-8 for text messages: a cheap string type over shared bytes and a streaming validator
//! that fails as soon as the bytes seen so far cannot begin valid UTF-8 (RFC 6455 §8.1).

use bytes::Bytes;
use std::fmt;
use std::ops::Deref;

/// Immutable UTF-8 text backed by [`Bytes`], so text messages are shared and sliced without
/// copying.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Text from a static string, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Checks `bytes` and wraps them.
    ///
    /// # Errors
    /// Returns the bytes back when they are not valid UTF-8.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Bytes> {
        if simdutf8::basic::from_utf8(&bytes).is_ok() {
            Ok(Self(bytes))
        } else {
            Err(bytes)
        }
    }

    /// Wraps bytes the caller has already validated.
    pub(crate) fn from_bytes_unchecked(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // The constructors guarantee the invariant; a failure here would be a bug in this
        // module, never something a peer can cause, so fall back to an empty string rather
        // than reach for `unsafe`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Gives up the UTF-8 guarantee.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(s: Utf8Bytes) -> Bytes {
        s.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Bytes;
    fn try_from(bytes: Bytes) -> Result<Self, Bytes> {
        Self::try_from_bytes(bytes)
    }
}

impl TryFrom<Vec<u8>> for Utf8Bytes {
    type Error = Bytes;
    fn try_from(v: Vec<u8>) -> Result<Self, Bytes> {
        Self::try_from_bytes(Bytes::from(v))
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The bytes seen so far can never become valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates UTF-8 arriving in pieces of any size.
///
/// It keeps at most three bytes of an unfinished code point, so an invalid sequence is
/// reported on the very piece that makes it impossible, even when a code point is split
/// across frames or reads.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

/// How many bytes a sequence starting with `first` has, or `None` when `first` cannot start
/// a sequence.
fn sequence_len(first: u8) -> Option<usize> {
    match first {
        0x00..=0x7F => Some(1),
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece.
    ///
    /// # Errors
    /// [`InvalidUtf8`] as soon as the text seen so far cannot be completed into valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let have = self.partial_len as usize;
            let need = sequence_len(self.partial[0]).ok_or(InvalidUtf8)?;
            let take = (need - have).min(input.len());
            self.partial[have..have + take].copy_from_slice(&input[..take]);
            let now = have + take;
            input = &input[take..];
            match simdutf8::compat::from_utf8(&self.partial[..now]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix; we consumed all of `input`.
                    self.partial_len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        if input.is_empty() {
            return Ok(());
        }
        // Fast path: whole piece valid.
        if simdutf8::basic::from_utf8(input).is_ok() {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Declares the end of the text.
    ///
    /// # Errors
    /// [`InvalidUtf8`] when the text ends inside a code point.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let incomplete = self.partial_len != 0;
        self.partial_len = 0;
        if incomplete {
            Err(InvalidUtf8)
        } else {
            Ok(())
        }
    }

    /// Whether the validator holds part of a code point.
    pub fn is_mid_sequence(&self) -> bool {
        self.partial_len != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(input: &[u8], size: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for c in input.chunks(size.max(1)) {
            v.feed(c)?;
        }
        v.finish()
    }

    #[test]
    fn accepts_valid_text_in_any_chunking() {
        let text = "κόσμε — ascii, 日本語, 𝄞 emoji 🎉".as_bytes();
        for size in 1..=text.len() {
            assert!(chunked(text, size).is_ok(), "chunk size {size}");
        }
    }

    #[test]
    fn fails_on_the_first_impossible_byte() {
        // "κόσμε" followed by 0xED 0xA0 0x80 (a UTF-16 surrogate): invalid at 0xA0.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        v.feed(&[0xED]).unwrap();
        assert_eq!(v.feed(&[0xA0]), Err(InvalidUtf8));
    }

    #[test]
    fn fails_fast_above_max_code_point() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xF4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xF5]), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_sequence_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(&[b'a', 0xE2, 0x82]).unwrap();
        assert!(v.is_mid_sequence());
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    #[test]
    fn agrees_with_std_on_every_two_byte_prefix() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let bytes = [a, b];
                let std_ok = std::str::from_utf8(&bytes).is_ok();
                assert_eq!(chunked(&bytes, 1).is_ok(), std_ok, "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn utf8bytes_round_trip() {
        let t = Utf8Bytes::from("héllo");
        assert_eq!(t, "héllo");
        assert!(Utf8Bytes::try_from(vec![0xff]).is_err());
        assert_eq!(Bytes::from(t.clone()).len(), 6);
    }
}
