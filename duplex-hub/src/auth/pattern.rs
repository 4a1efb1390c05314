//! Channel patterns of the `channels` claim.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A channel name in which `*` matches any run of characters, possibly empty.
///
/// Every other character is literal, so `chat:*` matches `chat:lobby` and `chat:` but not
/// `chats:x`, and `*` matches every channel. There is no escape for a literal `*`. Matching
/// never backtracks: the pieces between stars are found left to right, so it takes time
/// linear in the pattern and channel for practical purposes (`str::find`, O(n·m) at worst).
///
/// ```
/// use duplex_hub::auth::ChannelPattern;
///
/// let p = ChannelPattern::new("prices:*-USD");
/// assert!(p.matches("prices:BTC-USD"));
/// assert!(!p.matches("prices:BTC-EUR"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelPattern(String);

impl ChannelPattern {
    /// Makes a pattern from its text. Any string is a valid pattern; one holding characters
    /// that channel names cannot hold (protocol §8) simply matches nothing.
    pub fn new(pattern: impl Into<String>) -> Self {
        Self(pattern.into())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `channel` matches the pattern as a whole.
    pub fn matches(&self, channel: &str) -> bool {
        let Some((prefix, rest)) = self.0.split_once('*') else {
            return self.0 == channel;
        };
        // `rest` is what follows the first star; what follows its last star is the suffix.
        let (middle, suffix) = rest.rsplit_once('*').unwrap_or(("", rest));
        if channel.len() < prefix.len() + suffix.len()
            || !channel.starts_with(prefix)
            || !channel.ends_with(suffix)
        {
            return false;
        }
        // Both ends are char boundaries: `channel` starts with `prefix` and ends with `suffix`.
        let Some(mut hay) = channel.get(prefix.len()..channel.len() - suffix.len()) else {
            return false;
        };
        // Taking the leftmost occurrence of each middle piece is optimal for `*`-only globs:
        // it leaves the longest remainder for the pieces after it.
        for piece in middle.split('*').filter(|piece| !piece.is_empty()) {
            match hay.find(piece) {
                Some(at) => hay = &hay[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ChannelPattern {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl From<&str> for ChannelPattern {
    fn from(pattern: &str) -> Self {
        Self::new(pattern)
    }
}

impl From<String> for ChannelPattern {
    fn from(pattern: String) -> Self {
        Self(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::ChannelPattern;

    fn m(pattern: &str, channel: &str) -> bool {
        ChannelPattern::new(pattern).matches(channel)
    }

    #[test]
    fn star_matches_everything() {
        assert!(m("*", ""));
        assert!(m("*", "chat:lobby"));
        assert!(m("**", "x"));
        assert!(m("***", ""));
    }

    #[test]
    fn literal_matches_only_itself() {
        assert!(m("chat:lobby", "chat:lobby"));
        assert!(!m("chat:lobby", "chat:lobby2"));
        assert!(!m("chat:lobby", "chat:lobb"));
        assert!(!m("chat:lobby", "Chat:lobby"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn prefix_pattern() {
        assert!(m("chat:*", "chat:lobby"));
        assert!(m("chat:*", "chat:"));
        assert!(m("chat:*", "chat:a:b*c"));
        assert!(!m("chat:*", "chat"));
        assert!(!m("chat:*", "chats:lobby"));
        assert!(!m("chat:*", "news:chat:x"));
    }

    #[test]
    fn suffix_pattern() {
        assert!(m("*:lobby", "chat:lobby"));
        assert!(m("*:lobby", ":lobby"));
        assert!(!m("*:lobby", "chat:lobby2"));
        assert!(!m("*:lobby", "lobby"));
    }

    #[test]
    fn stars_in_the_middle() {
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "aXbYc"));
        assert!(m("a*b*c", "abbbcc"));
        assert!(m("a*b*c", "acbc"));
        assert!(!m("a*b*c", "acb"));
        assert!(!m("a*b*c", "ab"));
        assert!(!m("a*b*c", "bac"));
        // The prefix and suffix must not overlap.
        assert!(!m("ab*ba", "aba"));
        assert!(m("ab*ba", "abba"));
        assert!(m("user:*:inbox", "user:42:inbox"));
        assert!(!m("user:*:inbox", "user:42:outbox"));
    }

    #[test]
    fn multibyte_characters_do_not_split() {
        assert!(m("é*é", "éé"));
        assert!(m("*ü*", "xüy"));
        assert!(!m("é*é", "é"));
        assert!(m("*", "日本"));
    }

    #[test]
    fn long_inputs_stay_fast() {
        // A backtracking matcher needs exponential time for this; ours is one pass per piece.
        let channel = "a".repeat(10_000);
        let pattern = format!("{}b", "a*".repeat(100));
        assert!(!m(&pattern, &channel));
        let pattern = "*a".repeat(100);
        assert!(m(&pattern, &channel));
    }

    #[test]
    fn parses_and_displays() {
        let p: ChannelPattern = "chat:*".parse().unwrap_or_else(|never| match never {});
        assert_eq!(p.as_str(), "chat:*");
        assert_eq!(p.to_string(), "chat:*");
        assert_eq!(
            ChannelPattern::from("x"),
            ChannelPattern::new(String::from("x"))
        );
        let json: Vec<ChannelPattern> = serde_json::from_str(r#"["a*", "b"]"#).expect("valid");
        assert_eq!(
            json,
            vec![ChannelPattern::new("a*"), ChannelPattern::new("b")]
        );
    }
}
