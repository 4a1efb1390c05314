//! Connection limits and options.

use crate::deflate::DeflateConfig;
use crate::error::ConfigError;

/// Limits and options of one connection, the same type for both roles.
///
/// Every limit has a safe default. Fields are public so a config reads like a table; the
/// chained `with_*` setters are there for builders, and [`Config::validate`] checks values that
/// can conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest message accepted, in bytes, counted after decompression. Default 16 MiB.
    pub max_message_size: usize,
    /// Largest single frame accepted, in bytes of payload. Default 16 MiB.
    pub max_frame_size: usize,
    /// Most frames one message may be split into. Default 131,072 (enough for 4 MiB in
    /// 64-byte fragments, which the Autobahn suite sends).
    pub max_fragments: usize,
    /// Largest opening-handshake head (request or response line plus headers), in bytes.
    /// Default 16 KiB.
    pub max_header_bytes: usize,
    /// Most header lines in the opening handshake. Default 64.
    pub max_headers: usize,
    /// permessage-deflate: what a client offers or what a server accepts. `None` disables
    /// compression. Default: enabled with [`DeflateConfig::default`].
    pub deflate: Option<DeflateConfig>,
    /// Largest outgoing frame; longer messages are sent as several fragments. Default: no
    /// fragmentation (`usize::MAX`).
    pub max_send_frame_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            max_fragments: 1 << 17,
            max_header_bytes: 16 << 10,
            max_headers: 64,
            deflate: Some(DeflateConfig::default()),
            max_send_frame_size: usize::MAX,
        }
    }
}

impl Config {
    /// Sets [`Config::max_message_size`] (bytes).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Config::max_frame_size`] (bytes).
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Config::max_fragments`].
    pub fn with_max_fragments(mut self, count: usize) -> Self {
        self.max_fragments = count;
        self
    }

    /// Sets [`Config::max_header_bytes`] (bytes).
    pub fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Sets [`Config::max_headers`].
    pub fn with_max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }

    /// Sets [`Config::deflate`]; `None` disables permessage-deflate.
    pub fn with_deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    /// Sets [`Config::max_send_frame_size`] (bytes).
    pub fn with_max_send_frame_size(mut self, bytes: usize) -> Self {
        self.max_send_frame_size = bytes;
        self
    }

    /// Checks values that can conflict.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first offending value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("max_message_size", self.max_message_size),
            ("max_frame_size", self.max_frame_size),
            ("max_fragments", self.max_fragments),
            ("max_header_bytes", self.max_header_bytes),
            ("max_headers", self.max_headers),
            ("max_send_frame_size", self.max_send_frame_size),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_frame_size > self.max_message_size {
            return Err(ConfigError::FrameLargerThanMessage {
                frame: self.max_frame_size,
                message: self.max_message_size,
            });
        }
        if let Some(d) = &self.deflate {
            d.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn conflicting_limits_are_refused() {
        let c = Config::default()
            .with_max_message_size(10)
            .with_max_frame_size(20);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::FrameLargerThanMessage { .. })
        ));
        assert_eq!(
            Config::default().with_max_fragments(0).validate(),
            Err(ConfigError::Zero("max_fragments"))
        );
        let deflate = DeflateConfig::default().with_compression_level(10);
        assert_eq!(
            Config::default().with_deflate(Some(deflate)).validate(),
            Err(ConfigError::CompressionLevel(10))
        );
    }
}
