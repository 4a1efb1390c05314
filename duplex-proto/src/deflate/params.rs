//! permessage-deflate parameter negotiation (RFC 7692 §5, §7.1) for both roles.

use super::header::{parse_extensions, Extension, ExtensionError, PERMESSAGE_DEFLATE};
use crate::error::ConfigError;
use std::fmt::Write as _;

/// The largest LZ77 window, and the one a side uses when nothing limits it (RFC 7692 §7.1.2).
const MAX_WINDOW_BITS: u8 = 15;

/// permessage-deflate policy: what a client offers, or what a server accepts.
///
/// The same type serves both roles. For a client it shapes [`client_offer`] and what
/// [`negotiate_client`] accepts; for a server it is what [`negotiate_server`] imposes on top of
/// the client's offer. The defaults ask for nothing: full 32 KiB windows and context takeover
/// both ways, which compresses best and costs the most memory per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// The server resets its compressor after each message (RFC 7692 §7.1.1.1). A client
    /// requests it in every offer; a server imposes it. Default `false`.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (RFC 7692 §7.1.1.2). A client
    /// promises it in every offer; a server imposes it. Default `false`.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window of the server's compressor, as a base-2 logarithm 8..=15
    /// (RFC 7692 §7.1.2.1). Below 15 a client requests it in every offer and a server uses it
    /// as its ceiling. Default 15.
    pub server_max_window_bits: u8,
    /// Largest LZ77 window of the client's compressor, 8..=15 (RFC 7692 §7.1.2.2). A client
    /// never compresses with more; a server below 15 declines offers that do not let it limit
    /// the client's window. Default 15.
    pub client_max_window_bits: u8,
    /// zlib level for our compressor: 0 (stored blocks only) to 9 (smallest). Values above 9 are
    /// refused by [`DeflateConfig::validate`]. Default 1, the cheapest level that still compresses.
    pub compression_level: u32,
    /// Messages shorter than this many bytes are sent uncompressed (the connection decides
    /// per message, RFC 7692 §6.1 allows mixing). Default 0: compress everything.
    pub min_compress_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
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
            if !(8..=MAX_WINDOW_BITS).contains(&bits) {
                return Err(ConfigError::WindowBits(bits));
            }
        }
        if self.compression_level > 9 {
            return Err(ConfigError::CompressionLevel(self.compression_level));
        }
        Ok(())
    }

    /// Sets [`DeflateConfig::server_no_context_takeover`] (default `false`).
    pub fn with_server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::client_no_context_takeover`] (default `false`).
    pub fn with_client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::server_max_window_bits`] (base-2 logarithm, 8..=15, default 15).
    pub fn with_server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits;
        self
    }

    /// Sets [`DeflateConfig::client_max_window_bits`] (base-2 logarithm, 8..=15, default 15).
    pub fn with_client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits;
        self
    }

    /// Sets [`DeflateConfig::compression_level`] (0..=9, default 1).
    pub fn with_compression_level(mut self, level: u32) -> Self {
        self.compression_level = level;
        self
    }

    /// Sets [`DeflateConfig::min_compress_size`] (bytes, default 0).
    pub fn with_min_compress_size(mut self, bytes: usize) -> Self {
        self.min_compress_size = bytes;
        self
    }

    /// The server window, clamped so an unvalidated config cannot produce an invalid header.
    fn server_bits(&self) -> u8 {
        self.server_max_window_bits.clamp(8, MAX_WINDOW_BITS)
    }

    /// The client window, clamped like [`Self::server_bits`].
    fn client_bits(&self) -> u8 {
        self.client_max_window_bits.clamp(8, MAX_WINDOW_BITS)
    }
}

/// Negotiated permessage-deflate parameters, the same on both ends of a connection.
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

impl Default for DeflateParams {
    /// What a bare `permessage-deflate` response means: full windows, context takeover.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

/// The permessage-deflate parameters of one offer or response (RFC 7692 §7.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PmdParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)` is the parameter without a value, which only an offer may carry
    /// (RFC 7692 §7.1.2.2).
    client_max_window_bits: Option<Option<u8>>,
}

impl PmdParams {
    /// Reads the parameters of a permessage-deflate element. Any unknown or repeated
    /// parameter, or an invalid value, makes the whole element invalid (RFC 7692 §7.1).
    fn from_extension(ext: &Extension) -> Result<Self, String> {
        let mut p = Self::default();
        let mut seen = [false; 4];
        for (name, value) in &ext.params {
            let (index, what) = match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" => (0, "server_no_context_takeover"),
                "client_no_context_takeover" => (1, "client_no_context_takeover"),
                "server_max_window_bits" => (2, "server_max_window_bits"),
                "client_max_window_bits" => (3, "client_max_window_bits"),
                _ => return Err(format!("unknown parameter {name:?}")),
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(format!("{what} appears more than once"));
            }
            match index {
                // The two context-takeover parameters have no value (RFC 7692 §7.1.1).
                0 | 1 => {
                    if value.is_some() {
                        return Err(format!("{what} takes no value"));
                    }
                    if index == 0 {
                        p.server_no_context_takeover = true;
                    } else {
                        p.client_no_context_takeover = true;
                    }
                }
                // server_max_window_bits always has a value (RFC 7692 §7.1.2.1).
                2 => {
                    let bits = value.as_deref().ok_or(format!("{what} needs a value"))?;
                    p.server_max_window_bits = Some(window_bits(what, bits)?);
                }
                _ => {
                    let bits = match value.as_deref() {
                        Some(v) => Some(window_bits(what, v)?),
                        None => None,
                    };
                    p.client_max_window_bits = Some(bits);
                }
            }
        }
        Ok(p)
    }

    /// The header element for these parameters, in a fixed order.
    fn render(&self) -> String {
        let mut s = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            let _ = write!(s, "; server_max_window_bits={bits}");
        }
        match self.client_max_window_bits {
            Some(Some(bits)) => {
                let _ = write!(s, "; client_max_window_bits={bits}");
            }
            Some(None) => s.push_str("; client_max_window_bits"),
            None => {}
        }
        s
    }
}

/// A window size value: a decimal 8..=15 without leading zeros (RFC 7692 §7.1.2).
fn window_bits(what: &str, value: &str) -> Result<u8, String> {
    // `u8::from_str` alone would also take "+9" and "09".
    let digits = value.bytes().all(|c| c.is_ascii_digit()) && !value.starts_with('0');
    match value.parse::<u8>() {
        Ok(bits) if digits && (8..=MAX_WINDOW_BITS).contains(&bits) => Ok(bits),
        _ => Err(format!("{what}={value:?} is not a window size 8..=15")),
    }
}

/// Header values that carry no element at all; tolerated rather than answered with a 400.
fn is_blank(value: &str) -> bool {
    value.bytes().all(|c| c == b' ' || c == b'\t')
}

/// Server side: picks the first acceptable permessage-deflate offer (RFC 7692 §5) from all
/// `Sec-WebSocket-Extensions` header values, in order, and returns the negotiated parameters
/// with the exact response header value.
///
/// An offer with an unknown, repeated or invalid parameter is declined and the next one is
/// tried (RFC 7692 §5.1); other extensions are ignored (RFC 6455 §9.1). On top of each offer
/// the server applies its `config`: it adds `server_no_context_takeover` and
/// `client_no_context_takeover` when configured, lowers `server_max_window_bits` to its
/// ceiling, and answers `client_max_window_bits` (only when the client offered it, §7.1.2.2)
/// with the smaller of the client's hint and its own ceiling. A client that offers
/// `client_no_context_takeover` is taken at its word and the response confirms it, so the
/// server can drop its inflater between messages. With `config.client_max_window_bits` below
/// 15, offers without `client_max_window_bits` are declined, since the server could not limit
/// the client's window. Blank header values are skipped.
///
/// `Ok(None)` means no offer was acceptable: answer without the extension.
///
/// # Errors
/// [`ExtensionError`] when a header value is syntactically malformed (answer 400).
pub fn negotiate_server<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
    config: &DeflateConfig,
) -> Result<Option<(DeflateParams, String)>, ExtensionError> {
    let mut offers = Vec::new();
    for value in header_values {
        if !is_blank(value) {
            offers.extend(parse_extensions(value)?);
        }
    }
    // Every header is parsed before choosing, so a malformed one is always a 400.
    Ok(offers
        .iter()
        .filter(|ext| ext.is_permessage_deflate())
        .filter_map(|ext| PmdParams::from_extension(ext).ok())
        .find_map(|offer| accept_offer(&offer, config))
        .map(|(params, response)| (params, response.render())))
}

/// The server's answer to one valid offer, or `None` when its policy declines it.
fn accept_offer(offer: &PmdParams, config: &DeflateConfig) -> Option<(DeflateParams, PmdParams)> {
    let client_bits = match offer.client_max_window_bits {
        // Without the parameter the client may use any window and the response must not
        // mention it (RFC 7692 §7.1.2.2).
        None if config.client_bits() < MAX_WINDOW_BITS => return None,
        None => None,
        Some(hint) => {
            let bits = hint.unwrap_or(MAX_WINDOW_BITS).min(config.client_bits());
            (bits < MAX_WINDOW_BITS).then_some(bits)
        }
    };
    // A requested server window must be confirmed with the same or a smaller value; the server
    // may also limit itself unasked (RFC 7692 §7.1.2.1).
    let server_bits = offer
        .server_max_window_bits
        .unwrap_or(MAX_WINDOW_BITS)
        .min(config.server_bits());
    let server_bits_sent = offer.server_max_window_bits.is_some() || server_bits < MAX_WINDOW_BITS;
    let response = PmdParams {
        // A requested server_no_context_takeover must be honoured (RFC 7692 §7.1.1.1).
        server_no_context_takeover: offer.server_no_context_takeover
            || config.server_no_context_takeover,
        client_no_context_takeover: offer.client_no_context_takeover
            || config.client_no_context_takeover,
        server_max_window_bits: server_bits_sent.then_some(server_bits),
        client_max_window_bits: client_bits.map(Some),
    };
    let params = DeflateParams {
        server_no_context_takeover: response.server_no_context_takeover,
        client_no_context_takeover: response.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits.unwrap_or(MAX_WINDOW_BITS),
    };
    Some((params, response))
}

/// The offers a client sends, most preferred first.
///
/// 1. Context takeover both ways, and `client_max_window_bits` so the server may shrink our
///    window: any RFC 7692 server can accept this one.
/// 2. The same with `client_no_context_takeover`, for servers that want it but only take it
///    when offered (the Autobahn fuzzingserver's 13.x cases).
/// 3. The same without `client_max_window_bits`, for older servers that decline the
///    parameter.
///
/// Our own `config` requirements go into every offer.
fn client_offers(config: &DeflateConfig) -> Vec<PmdParams> {
    let client_bits = config.client_bits();
    let server_bits = config.server_bits();
    let first = PmdParams {
        server_no_context_takeover: config.server_no_context_takeover,
        client_no_context_takeover: config.client_no_context_takeover,
        server_max_window_bits: (server_bits < MAX_WINDOW_BITS).then_some(server_bits),
        client_max_window_bits: Some((client_bits < MAX_WINDOW_BITS).then_some(client_bits)),
    };
    let mut offers = vec![first];
    if !config.client_no_context_takeover {
        // Also asks for server_no_context_takeover, which a server accepting this offer must
        // confirm (RFC 7692 §7.1.1.1): a response without it can only answer the first offer,
        // so we keep our context there. Without that marker the client could not tell which
        // offer was accepted, and would have to keep this offer's promise everywhere.
        offers.push(PmdParams {
            client_no_context_takeover: true,
            server_no_context_takeover: true,
            ..first
        });
    }
    offers.push(PmdParams {
        client_max_window_bits: None,
        ..first
    });
    offers
}

/// Client side: the `Sec-WebSocket-Extensions` value to send, several permessage-deflate
/// offers in order of preference (RFC 7692 §5). With the default config:
///
/// ```text
/// permessage-deflate; client_max_window_bits, permessage-deflate; client_no_context_takeover; server_no_context_takeover; client_max_window_bits, permessage-deflate
/// ```
///
/// The first asks for nothing and lets the server shrink our window; the second also offers
/// `client_no_context_takeover`, which some servers (the Autobahn fuzzingserver) only impose
/// when offered, and asks for `server_no_context_takeover` so that a response to it can be
/// told apart from a response to the first; the last is a bare fallback for servers that mishandle
/// `client_max_window_bits`. The config's requests (`server_no_context_takeover`, windows
/// below 15) appear in every offer.
pub fn client_offer(config: &DeflateConfig) -> String {
    let offers: Vec<String> = client_offers(config)
        .iter()
        .map(PmdParams::render)
        .collect();
    offers.join(", ")
}

/// Client side: checks the server's `Sec-WebSocket-Extensions` response against the offers
/// [`client_offer`] produced for the same `config`, and returns the parameters to use.
///
/// The response must hold exactly one permessage-deflate element with valid, non-repeated,
/// known parameters, `client_max_window_bits` only with a value, and must match one of our
/// offers: a requested `server_no_context_takeover` or `server_max_window_bits` confirmed
/// (the latter with the same or a smaller value, RFC 7692 §7.1.2.1). Our compressor then uses
/// the smallest of the server's `client_max_window_bits`, our offer's hint and our config,
/// and resets after each message if the server asked or we promised to. Blank header values
/// are skipped; `Ok(None)` means the server did not accept the extension.
///
/// # Errors
/// [`ExtensionError`] for a malformed header, an extension we did not offer, more than one
/// permessage-deflate element, or one we cannot accept; the handshake must then fail
/// (RFC 6455 §4.1, RFC 7692 §5).
pub fn negotiate_client<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
    config: &DeflateConfig,
) -> Result<Option<DeflateParams>, ExtensionError> {
    let mut accepted = None;
    for value in header_values {
        if is_blank(value) {
            continue;
        }
        for ext in parse_extensions(value)? {
            if !ext.is_permessage_deflate() {
                return Err(ExtensionError(format!(
                    "server accepted extension {:?}, which we did not offer",
                    ext.name
                )));
            }
            if accepted.is_some() {
                return Err(ExtensionError(
                    "server accepted permessage-deflate more than once".into(),
                ));
            }
            let response = PmdParams::from_extension(&ext)
                .map_err(|e| ExtensionError(format!("permessage-deflate response: {e}")))?;
            if response.client_max_window_bits == Some(None) {
                return Err(ExtensionError(
                    "client_max_window_bits in a response needs a value (RFC 7692 §7.1.2.2)".into(),
                ));
            }
            accepted = Some(response);
        }
    }
    let Some(response) = accepted else {
        return Ok(None);
    };
    // The response may fit several offers; the server may have accepted any of them, so keep
    // the strictest promise among those it fits (RFC 7692 §7.1.1.2: an offered
    // client_no_context_takeover binds us even when the response leaves it out).
    let mut first_mismatch = None;
    let mut negotiated: Option<DeflateParams> = None;
    for offer in client_offers(config) {
        match match_response(&offer, &response, config) {
            Ok(params) => {
                negotiated = Some(match negotiated {
                    None => params,
                    Some(n) => DeflateParams {
                        client_no_context_takeover: n.client_no_context_takeover
                            || params.client_no_context_takeover,
                        client_max_window_bits: n
                            .client_max_window_bits
                            .min(params.client_max_window_bits),
                        ..n
                    },
                });
            }
            Err(e) => {
                first_mismatch.get_or_insert(e);
            }
        }
    }
    negotiated.map(Some).ok_or_else(|| {
        ExtensionError(format!(
            "permessage-deflate response matches none of our offers: {}",
            first_mismatch.unwrap_or_default()
        ))
    })
}

/// The parameters a server `response` to our `offer` gives, or why it does not fit the offer.
fn match_response(
    offer: &PmdParams,
    response: &PmdParams,
    config: &DeflateConfig,
) -> Result<DeflateParams, String> {
    if offer.server_no_context_takeover && !response.server_no_context_takeover {
        return Err("server_no_context_takeover was requested but not confirmed".into());
    }
    match (
        offer.server_max_window_bits,
        response.server_max_window_bits,
    ) {
        (Some(asked), None) => {
            return Err(format!(
                "server_max_window_bits={asked} was requested but not confirmed"
            ))
        }
        (Some(asked), Some(got)) if got > asked => {
            return Err(format!(
                "server_max_window_bits={got} exceeds the requested {asked}"
            ))
        }
        _ => {}
    }
    if offer.client_max_window_bits.is_none() && response.client_max_window_bits.is_some() {
        return Err("client_max_window_bits was not offered".into());
    }
    let client_bits = response
        .client_max_window_bits
        .flatten()
        .unwrap_or(MAX_WINDOW_BITS)
        .min(
            offer
                .client_max_window_bits
                .flatten()
                .unwrap_or(MAX_WINDOW_BITS),
        )
        .min(config.client_bits());
    Ok(DeflateParams {
        server_no_context_takeover: response.server_no_context_takeover,
        // Offered, client_no_context_takeover is a promise we keep (RFC 7692 §7.1.1.2).
        client_no_context_takeover: response.client_no_context_takeover
            || offer.client_no_context_takeover,
        server_max_window_bits: response.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
        client_max_window_bits: client_bits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn server(values: &[&str], config: &DeflateConfig) -> Option<(DeflateParams, String)> {
        negotiate_server(values.iter().copied(), config).unwrap()
    }

    /// The response to a single header value under the default policy.
    fn answer(offer: &str) -> Option<String> {
        server(&[offer], &DeflateConfig::default()).map(|(_, response)| response)
    }

    fn client(values: &[&str], config: &DeflateConfig) -> Result<Option<DeflateParams>, String> {
        negotiate_client(values.iter().copied(), config).map_err(|e| e.0)
    }

    fn p(snct: bool, cnct: bool, server_bits: u8, client_bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        }
    }

    #[test]
    fn browsers_get_plain_permessage_deflate() {
        // Chromium (and Safari) offer client_max_window_bits; Firefox offers nothing.
        for offer in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
        ] {
            let (params, response) = server(&[offer], &DeflateConfig::default()).unwrap();
            assert_eq!(params, DeflateParams::default());
            assert_eq!(response, "permessage-deflate");
        }
    }

    #[test]
    fn server_answers_table() {
        for (offer, expected) in [
            (
                "permessage-deflate; server_max_window_bits=8",
                Some("permessage-deflate; server_max_window_bits=8"),
            ),
            (
                "permessage-deflate; server_no_context_takeover",
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                Some("permessage-deflate; client_no_context_takeover"),
            ),
            (
                "permessage-deflate; client_max_window_bits=\"10\"",
                Some("permessage-deflate; client_max_window_bits=10"),
            ),
            (
                "PerMessage-Deflate; Client_Max_Window_Bits=9",
                Some("permessage-deflate; client_max_window_bits=9"),
            ),
            // The first offer is unacceptable, the second is taken (RFC 7692 §5).
            (
                "permessage-deflate; server_max_window_bits=7, permessage-deflate; \
                 client_no_context_takeover",
                Some("permessage-deflate; client_no_context_takeover"),
            ),
            (
                "x-webkit-deflate-frame, permessage-deflate; foo, permessage-deflate",
                Some("permessage-deflate"),
            ),
            ("permessage-deflate; server_max_window_bits=7", None),
            ("permessage-deflate; server_max_window_bits=16", None),
            ("permessage-deflate; server_max_window_bits=abc", None),
            ("permessage-deflate; server_max_window_bits=09", None),
            ("permessage-deflate; server_max_window_bits=+9", None),
            ("permessage-deflate; server_max_window_bits", None),
            ("permessage-deflate; client_max_window_bits=0", None),
            ("permessage-deflate; server_no_context_takeover=1", None),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                None,
            ),
            (
                "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
                None,
            ),
            ("permessage-deflate; unknown", None),
            ("x-webkit-deflate-frame", None),
        ] {
            assert_eq!(answer(offer).as_deref(), expected, "{offer}");
        }
    }

    #[test]
    fn server_reads_every_header_value_and_refuses_malformed_ones() {
        let values = ["foo", "", "permessage-deflate; server_no_context_takeover"];
        let (params, response) = server(&values, &DeflateConfig::default()).unwrap();
        assert_eq!(response, "permessage-deflate; server_no_context_takeover");
        assert_eq!(params, p(true, false, 15, 15));
        // A malformed header is an error even after an acceptable offer.
        let err = negotiate_server(
            ["permessage-deflate", "bad header"],
            &DeflateConfig::default(),
        );
        assert!(err.is_err());
        assert_eq!(server(&[" ", "\t"], &DeflateConfig::default()), None);
        assert_eq!(server(&[], &DeflateConfig::default()), None);
    }

    #[test]
    fn server_policy_is_imposed() {
        let strict = DeflateConfig::default()
            .with_server_no_context_takeover(true)
            .with_client_no_context_takeover(true)
            .with_server_max_window_bits(10)
            .with_client_max_window_bits(9);
        let (params, response) =
            server(&["permessage-deflate; client_max_window_bits"], &strict).unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9"
        );
        assert_eq!(params, p(true, true, 10, 9));
        // The client's smaller requests win over the ceilings.
        let (params, _) = server(
            &["permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"],
            &strict,
        )
        .unwrap();
        assert_eq!(params, p(true, true, 8, 8));
        // A client that cannot be limited is declined when the policy limits clients.
        assert_eq!(server(&["permessage-deflate"], &strict), None);
        // Offered client_max_window_bits without a value and no limit: not mentioned.
        let (params, response) = server(
            &["permessage-deflate; client_max_window_bits; server_max_window_bits=12"],
            &DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(response, "permessage-deflate; server_max_window_bits=12");
        assert_eq!(params, p(false, false, 12, 15));
    }

    #[test]
    fn default_client_offer() {
        assert_eq!(
            client_offer(&DeflateConfig::default()),
            "permessage-deflate; client_max_window_bits, \
             permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits, \
             permessage-deflate"
        );
        let config = DeflateConfig::default()
            .with_client_no_context_takeover(true)
            .with_server_no_context_takeover(true)
            .with_server_max_window_bits(10)
            .with_client_max_window_bits(9);
        assert_eq!(
            client_offer(&config),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9, \
             permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        );
        // Every offer we make is one we would accept ourselves.
        for offer in parse_extensions(&client_offer(&config)).unwrap() {
            assert!(PmdParams::from_extension(&offer).is_ok(), "{offer}");
        }
    }

    #[test]
    fn client_checks_responses() {
        let config = DeflateConfig::default();
        for (response, expected) in [
            ("permessage-deflate", Ok(Some(DeflateParams::default()))),
            (" ", Ok(None)),
            (
                "permessage-deflate; server_max_window_bits=8",
                Ok(Some(p(false, false, 8, 15))),
            ),
            (
                "permessage-deflate; client_max_window_bits=\"10\"",
                Ok(Some(p(false, false, 15, 10))),
            ),
            // Autobahn 13.x style: accepting our second offer.
            (
                "permessage-deflate; client_no_context_takeover; client_max_window_bits=8",
                Ok(Some(p(false, true, 15, 8))),
            ),
            // Could answer our second offer, whose client_no_context_takeover binds us even
            // unechoed (RFC 7692 §7.1.1.2): keep the promise.
            (
                "permessage-deflate; server_no_context_takeover",
                Ok(Some(p(true, true, 15, 15))),
            ),
            // Without server_no_context_takeover it can only answer the first offer.
            (
                "permessage-deflate; client_max_window_bits=12",
                Ok(Some(p(false, false, 15, 12))),
            ),
            (
                "permessage-deflate; client_max_window_bits",
                Err("needs a value"),
            ),
            (
                "permessage-deflate; server_max_window_bits=16",
                Err("window size"),
            ),
            (
                "permessage-deflate; server_max_window_bits=7",
                Err("window size"),
            ),
            ("permessage-deflate; mystery", Err("unknown parameter")),
            (
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
                Err("more than once"),
            ),
            (
                "permessage-deflate, permessage-deflate",
                Err("more than once"),
            ),
            ("x-webkit-deflate-frame", Err("did not offer")),
            ("permessage-deflate, foo", Err("did not offer")),
            ("permessage-deflate;", Err("parameter name")),
        ] {
            let got = client(&[response], &config);
            match expected {
                Ok(params) => assert_eq!(got, Ok(params), "{response}"),
                Err(needle) => {
                    let err = got.unwrap_err();
                    assert!(err.contains(needle), "{response}: {err}");
                }
            }
        }
        assert!(client(&["permessage-deflate", "permessage-deflate"], &config).is_err());
    }

    #[test]
    fn client_insists_on_its_requests() {
        let config = DeflateConfig::default()
            .with_server_no_context_takeover(true)
            .with_server_max_window_bits(10);
        let ok = "permessage-deflate; server_no_context_takeover; server_max_window_bits=9";
        // Both our offers fit this response, and the second promised
        // client_no_context_takeover: we keep that promise.
        assert_eq!(client(&[ok], &config), Ok(Some(p(true, true, 9, 15))));
        for (bad, needle) in [
            (
                "permessage-deflate; server_max_window_bits=10",
                "server_no_context_takeover",
            ),
            (
                "permessage-deflate; server_no_context_takeover",
                "not confirmed",
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
                "exceeds the requested 10",
            ),
        ] {
            let err = client(&[bad], &config).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        // Our own limit and promise hold whatever the server says.
        let config = DeflateConfig::default()
            .with_client_max_window_bits(11)
            .with_client_no_context_takeover(true);
        assert_eq!(
            client(&["permessage-deflate; client_max_window_bits=13"], &config),
            Ok(Some(p(false, true, 15, 11)))
        );
        assert_eq!(
            client(&["permessage-deflate"], &config),
            Ok(Some(p(false, true, 15, 11)))
        );
    }

    fn any_config() -> impl Strategy<Value = DeflateConfig> {
        (any::<bool>(), any::<bool>(), 8u8..=15, 8u8..=15).prop_map(|(s, c, sb, cb)| {
            DeflateConfig::default()
                .with_server_no_context_takeover(s)
                .with_client_no_context_takeover(c)
                .with_server_max_window_bits(sb)
                .with_client_max_window_bits(cb)
        })
    }

    /// Characters that reach every branch of the parser.
    fn header_ish() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "permessage-deflate",
                "client_max_window_bits",
                "server_no_context_takeover",
                "a",
                "9",
                "15",
                ";",
                ",",
                "=",
                "\"",
                "\\",
                " ",
                "\t",
                "\u{0}",
                "\u{e9}",
                "\r\n",
            ]),
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn parser_never_panics(value in any::<String>()) {
            let _ = parse_extensions(&value);
            let _ = negotiate_server([value.as_str()], &DeflateConfig::default());
            let _ = negotiate_client([value.as_str()], &DeflateConfig::default());
        }

        #[test]
        fn parser_never_panics_on_header_like_input(value in header_ish(), config in any_config()) {
            if let Ok(list) = parse_extensions(&value) {
                // What parses prints back to something that parses the same.
                let printed: Vec<String> = list.iter().map(ToString::to_string).collect();
                prop_assert_eq!(parse_extensions(&printed.join(", ")).unwrap(), list);
            }
            if let Ok(Some((_, response))) = negotiate_server([value.as_str()], &config) {
                prop_assert!(parse_extensions(&response).is_ok());
            }
            let _ = negotiate_client([value.as_str()], &config);
        }

        // Whatever the two policies, our client and server agree on the parameters, except
        // that the client may keep a client_no_context_takeover promise the server did not
        // need: a client that resets its compressor is always decodable.
        #[test]
        fn client_and_server_agree(client_config in any_config(), server_config in any_config()) {
            let offer = client_offer(&client_config);
            let (server_params, response) =
                negotiate_server([offer.as_str()], &server_config).unwrap().unwrap();
            let client_params = negotiate_client([response.as_str()], &client_config)
                .unwrap()
                .unwrap();
            prop_assert!(
                client_params.client_no_context_takeover
                    || !server_params.client_no_context_takeover
            );
            prop_assert_eq!(
                client_params,
                DeflateParams {
                    client_no_context_takeover: client_params.client_no_context_takeover,
                    ..server_params
                }
            );
            prop_assert!(server_params.server_max_window_bits <= server_config.server_max_window_bits);
            prop_assert!(server_params.server_max_window_bits <= client_config.server_max_window_bits);
            prop_assert!(server_params.client_max_window_bits <= server_config.client_max_window_bits);
            prop_assert!(server_params.client_max_window_bits <= client_config.client_max_window_bits);
            prop_assert!(!client_config.server_no_context_takeover || server_params.server_no_context_takeover);
            prop_assert!(!server_config.client_no_context_takeover || server_params.client_no_context_takeover);
        }
    }
}
