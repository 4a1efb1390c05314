//! How binary payloads are written as text: hex or base64, both ways.

use base64::Engine as _;
use std::fmt::Write as _;

/// The text form of binary messages and control-frame payloads (`--binary-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BinaryFormat {
    /// Lower-case hex, two digits a byte (`00ff10`).
    #[default]
    Hex,
    /// Standard base64 with padding (RFC 4648 §4).
    Base64,
}

impl BinaryFormat {
    /// The name used in output (`"hex"`, `"base64"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hex => "hex",
            Self::Base64 => "base64",
        }
    }

    /// Writes `data` in this format.
    pub fn encode(self, data: &[u8]) -> String {
        match self {
            Self::Hex => {
                let mut out = String::with_capacity(data.len() * 2);
                for byte in data {
                    let _ = write!(out, "{byte:02x}");
                }
                out
            }
            Self::Base64 => base64::engine::general_purpose::STANDARD.encode(data),
        }
    }

    /// Reads `text` in this format; whitespace is ignored, hex in either case.
    ///
    /// # Errors
    /// A message saying what is wrong with `text`.
    pub fn decode(self, text: &str) -> Result<Vec<u8>, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        match self {
            Self::Hex => {
                if !compact.len().is_multiple_of(2) {
                    return Err("hex needs two digits a byte (odd number of digits)".into());
                }
                compact
                    .as_bytes()
                    .chunks(2)
                    .map(|pair| match (hex_digit(pair[0]), hex_digit(pair[1])) {
                        (Some(high), Some(low)) => Ok(high << 4 | low),
                        _ => Err(format!(
                            "{:?} is not a hex byte",
                            String::from_utf8_lossy(pair)
                        )),
                    })
                    .collect()
            }
            Self::Base64 => base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| format!("not base64: {e}")),
        }
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data = [0u8, 1, 0x7f, 0x80, 0xff];
        for format in [BinaryFormat::Hex, BinaryFormat::Base64] {
            assert_eq!(format.decode(&format.encode(&data)).unwrap(), data);
            assert_eq!(format.decode("").unwrap(), Vec::<u8>::new());
        }
        assert_eq!(BinaryFormat::Hex.encode(&data), "00017f80ff");
        assert_eq!(BinaryFormat::Base64.encode(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn hex_accepts_case_and_spaces_and_rejects_junk() {
        assert_eq!(
            BinaryFormat::Hex.decode("DE ad\tBe ef").unwrap(),
            [0xde, 0xad, 0xbe, 0xef]
        );
        assert!(BinaryFormat::Hex.decode("abc").is_err());
        assert!(BinaryFormat::Hex.decode("zz").is_err());
        assert!(BinaryFormat::Hex.decode("+1").is_err());
        assert!(BinaryFormat::Base64.decode("a").is_err());
    }
}
