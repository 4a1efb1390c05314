use crate::error::ConfigError;

/// permessage-deflate policy (placeholder until the deflate module lands).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Request/impose that the server resets its compression context after each message.
    pub server_no_context_takeover: bool,
    /// Request/impose that the client resets its compression context after each message.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window (8..=15) for the server's compressor.
    pub server_max_window_bits: u8,
    /// Largest LZ77 window (8..=15) for the client's compressor.
    pub client_max_window_bits: u8,
    /// zlib level 0..=9 for our compressor.
    pub compression_level: u32,
    /// Messages shorter than this many bytes are sent uncompressed.
    pub min_compress_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            compression_level: 1,
            min_compress_size: 0,
        }
    }
}

impl DeflateConfig {
    /// Checks the window sizes.
    ///
    /// # Errors
    /// [`ConfigError::WindowBits`] when a window is outside 8..=15.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for bits in [self.server_max_window_bits, self.client_max_window_bits] {
            if !(8..=15).contains(&bits) {
                return Err(ConfigError::WindowBits(bits));
            }
        }
        Ok(())
    }
}

/// Negotiated permessage-deflate parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The server's compressor window, 8..=15.
    pub server_max_window_bits: u8,
    /// The client's compressor window, 8..=15.
    pub client_max_window_bits: u8,
}

/// One extension from a `Sec-WebSocket-Extensions` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Extension token.
    pub name: String,
    /// Parameters, values unquoted.
    pub params: Vec<(String, Option<String>)>,
}

/// A malformed or unacceptable extension header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Sec-WebSocket-Extensions: {0}")]
pub struct ExtensionError(pub String);

/// Parses a `Sec-WebSocket-Extensions` header value (RFC 6455 §9.1).
///
/// # Errors
/// [`ExtensionError`] when the value does not follow the grammar.
pub fn parse_extensions(_value: &str) -> Result<Vec<Extension>, ExtensionError> {
    Err(ExtensionError("not implemented yet".into()))
}

/// Server side: picks the first acceptable offer.
///
/// # Errors
/// [`ExtensionError`] when a header is malformed.
pub fn negotiate_server<'a>(
    _header_values: impl IntoIterator<Item = &'a str>,
    _config: &DeflateConfig,
) -> Result<Option<(DeflateParams, String)>, ExtensionError> {
    Ok(None)
}

/// Client side: the `Sec-WebSocket-Extensions` value to offer.
pub fn client_offer(_config: &DeflateConfig) -> String {
    String::new()
}

/// Client side: checks the server's response.
///
/// # Errors
/// [`ExtensionError`] when the server answered with something we did not offer.
pub fn negotiate_client<'a>(
    _header_values: impl IntoIterator<Item = &'a str>,
    _config: &DeflateConfig,
) -> Result<Option<DeflateParams>, ExtensionError> {
    Ok(None)
}
