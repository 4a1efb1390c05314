//! Channel names: `[namespace:]name`, bounded in length and character set.

use std::fmt;
use std::sync::Arc;

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// A validated channel name such as `chat:lobby`, `prices:BTC-USD` or `news`.
///
/// Cheap to clone (shared). The namespace is the part before the first `:`; a name without
/// `:` is in the default namespace (`""`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// Why a string is not a channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelNameError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`].
    #[error("channel name is longer than {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    /// A character outside the allowed set.
    #[error("channel name contains {0:?}; allowed are ASCII letters, digits and _-=@.,;/+:*!")]
    BadCharacter(char),
    /// `:` with nothing before or after it.
    #[error("channel name has an empty namespace or an empty name around ':'")]
    EmptyPart,
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-=@.,;/+:*!".contains(c)
}

impl ChannelName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`ChannelNameError`] naming what is wrong.
    pub fn new(name: &str) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(ChannelNameError::TooLong);
        }
        if let Some(c) = name.chars().find(|c| !allowed(*c)) {
            return Err(ChannelNameError::BadCharacter(c));
        }
        if let Some((ns, rest)) = name.split_once(':') {
            if ns.is_empty() || rest.is_empty() {
                return Err(ChannelNameError::EmptyPart);
            }
        }
        Ok(Self(name.into()))
    }

    /// Whether `self` and `other` are the same shared name, not only equal names: a pointer
    /// comparison, for caches keyed by the registry's copy of a name (see
    /// `Registry::for_each`).
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, or `""`.
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }

    /// The part after the namespace (the whole name in the default namespace).
    pub fn local_name(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(_, rest)| rest)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        let c = ChannelName::new("chat:lobby").unwrap();
        assert_eq!(c.namespace(), "chat");
        assert_eq!(c.local_name(), "lobby");
        let c = ChannelName::new("prices:BTC-USD:spot").unwrap();
        assert_eq!(c.namespace(), "prices");
        assert_eq!(c.local_name(), "BTC-USD:spot");
        let c = ChannelName::new("news").unwrap();
        assert_eq!(c.namespace(), "");
        assert_eq!(c.local_name(), "news");
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(ChannelName::new(""), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::new(&"a".repeat(256)),
            Err(ChannelNameError::TooLong)
        );
        assert!(ChannelName::new(&"a".repeat(255)).is_ok());
        assert_eq!(
            ChannelName::new("a b"),
            Err(ChannelNameError::BadCharacter(' '))
        );
        assert_eq!(
            ChannelName::new("é"),
            Err(ChannelNameError::BadCharacter('é'))
        );
        assert_eq!(ChannelName::new(":x"), Err(ChannelNameError::EmptyPart));
        assert_eq!(ChannelName::new("x:"), Err(ChannelNameError::EmptyPart));
    }
}
