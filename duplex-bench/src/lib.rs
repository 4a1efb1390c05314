//! # duplex-bench
//!
//! Micro-benchmarks comparing `duplex-proto` with `tungstenite` and `fastwebsockets` on the
//! same inputs, in the same harness (criterion). The benchmarks live in `benches/`; this
//! library only builds the inputs they share, so every implementation sees identical bytes.
//! Results and method: `docs/performance.md`.
//!
//! `examples/` holds the end-to-end side that `bench/run.sh` drives: the reference servers
//! (`raw_tcp`, `tungstenite_server`, `fastws_server`) and the load generator (`loadgen`)
//! that checks every echoed byte and every fan-out delivery.
//!
//! ```text
//! cargo bench -p duplex-bench                      # everything
//! cargo bench -p duplex-bench --bench frames -- decode/server
//! ```
//!
//! ```
//! let text = duplex_bench::json_text(1024);
//! assert_eq!(text.len(), 1024);
//! assert!(std::str::from_utf8(&text).is_ok());
//! ```

/// Message sizes every frame benchmark runs at: a small chat message, a typical JSON
/// document, and a large binary message.
pub const SIZES: [usize; 3] = [16, 1024, 64 * 1024];

/// Masking key used for client frames; fixed so every run sees the same bytes.
pub const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// `len` bytes of JSON-like ASCII text (repeated chat events), the kind of payload the hub
/// carries and permessage-deflate compresses well.
pub fn json_text(len: usize) -> Vec<u8> {
    const EVENT: &str = r#"{"channel":"room:lobby","offset":1842,"data":{"user":"alice","text":"the build is green again","ts":1731312000123}},"#;
    EVENT.bytes().cycle().take(len).collect()
}

/// `len` bytes of valid UTF-8 mixing ASCII with 2-, 3- and 4-byte characters (the tail may
/// be padded with ASCII so the length is exact).
pub fn mixed_text(len: usize) -> Vec<u8> {
    const SAMPLE: &str = "Grüße, κόσμε — 日本語のテキスト 🎉 ok; ";
    let mut out = String::with_capacity(len);
    for c in SAMPLE.chars().cycle() {
        if out.len() + c.len_utf8() > len {
            break;
        }
        out.push(c);
    }
    while out.len() < len {
        out.push(' ');
    }
    out.into_bytes()
}

/// `len` bytes of binary payload (a fixed pseudo-random sequence).
pub fn binary(len: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// A human label for a size: `16B`, `1KiB`, `64KiB`.
pub fn size_label(len: usize) -> String {
    if len >= 1024 && len.is_multiple_of(1024) {
        format!("{}KiB", len / 1024)
    } else {
        format!("{len}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_have_the_requested_length_and_encoding() {
        for len in [0, 1, 15, 16, 1024, 65536, 1000] {
            assert_eq!(json_text(len).len(), len);
            assert_eq!(binary(len).len(), len);
            let mixed = mixed_text(len);
            assert_eq!(mixed.len(), len);
            assert!(std::str::from_utf8(&mixed).is_ok());
        }
        assert_eq!(size_label(16), "16B");
        assert_eq!(size_label(64 * 1024), "64KiB");
    }
}
