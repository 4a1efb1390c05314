//! The per-message DEFLATE codec (RFC 7692 §7.2) for one connection.

use super::DeflateParams;
use crate::error::{ProtocolError, SendError};
use crate::role::Role;
use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The empty stored block a sync flush ends with; stripped after compressing and appended
/// before inflating (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Smallest and largest slice of output inflated in one step, so a bomb never allocates far
/// past the limit and small frames do not zero large buffers.
const MIN_STEP: usize = 4 << 10;
const MAX_STEP: usize = 256 << 10;

/// The window our compressor is given for `bits` negotiated.
///
/// zlib and zlib-rs refuse 8 for raw deflate (and flate2 asserts 9..=15), so 8 becomes 9.
/// That is still correct for a peer limited to 256 bytes: zlib's matcher never reaches
/// further back than `MAX_DIST = window - MIN_LOOKAHEAD`, which for a 512-byte window is
/// 512 - 262 = 250 bytes (zlib-rs asserts this in `tally_dist`), so every distance fits in the
/// 256-byte window RFC 7692 §7.1.2 promised. The `window_8_*` tests check the output with an
/// independent decoder.
fn zlib_bits(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

/// Compressor and decompressor for one connection's messages (RFC 7692 §7.2).
///
/// zlib state is allocated on first use, and when a side does not keep its context
/// (`*_no_context_takeover`) that side's state is dropped at the end of each message, so an
/// idle connection holds no zlib memory for it.
#[derive(Debug)]
pub struct DeflateCodec {
    role: Role,
    params: DeflateParams,
    level: Compression,
    /// Our compressor; `None` until the first message, and between messages without context.
    compressor: Option<Compress>,
    /// The peer's messages' inflater; `None` until needed, and between messages without
    /// context.
    decompressor: Option<Decompress>,
    /// The current incoming message has carried compressed bytes.
    inflating: bool,
    /// The peer ended its DEFLATE stream (a block with BFINAL) in the current message.
    stream_ended: bool,
}

impl DeflateCodec {
    /// A codec for our `role` with the negotiated `params` and zlib `level` (0..=9, as
    /// [`DeflateConfig::validate`](super::DeflateConfig::validate) checks; higher values act as 9). No zlib state is allocated until first use.
    pub fn new(role: Role, params: DeflateParams, level: u32) -> Self {
        Self {
            role,
            params,
            level: Compression::new(level.min(9)),
            compressor: None,
            decompressor: None,
            inflating: false,
            stream_ended: false,
        }
    }

    /// The negotiated parameters.
    pub fn params(&self) -> DeflateParams {
        self.params
    }

    /// Whether no zlib state is allocated right now (before first use, or between messages
    /// when neither side keeps its context).
    pub fn is_idle_empty(&self) -> bool {
        self.compressor.is_none() && self.decompressor.is_none()
    }

    /// Our compressor's window and whether we reset it after each message.
    fn ours(&self) -> (u8, bool) {
        match self.role {
            Role::Server => (
                self.params.server_max_window_bits,
                self.params.server_no_context_takeover,
            ),
            Role::Client => (
                self.params.client_max_window_bits,
                self.params.client_no_context_takeover,
            ),
        }
    }

    /// Whether the peer resets its compressor after each message.
    ///
    /// The peer's window size is not needed: we always inflate with 15 bits, which decodes
    /// any smaller window. zlib-rs allocates a 32 KiB inflate window whatever it is told, so
    /// a smaller one would save nothing.
    fn peer_resets(&self) -> bool {
        match self.role {
            Role::Server => self.params.client_no_context_takeover,
            Role::Client => self.params.server_no_context_takeover,
        }
    }

    /// Compresses one whole message payload, appending to `out` without the trailing
    /// `00 00 ff ff` (RFC 7692 §7.2.1). An empty message becomes the single byte `00`
    /// (RFC 7692 §7.2.3.6). Without context takeover on our side the compressor is released
    /// afterwards.
    ///
    /// # Errors
    /// [`SendError::Deflate`] if zlib fails; `out` is left as it was and the compressor
    /// is discarded.
    pub fn compress(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), SendError> {
        let (bits, no_context) = self.ours();
        let start = out.len();
        let level = self.level;
        let compressor = self
            .compressor
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, zlib_bits(bits)));
        let result = deflate_sync(compressor, payload, out);
        if result.is_err() || no_context {
            // Dropped rather than reset: an idle connection keeps no zlib memory.
            self.compressor = None;
        }
        if let Err(e) = result {
            out.truncate(start);
            return Err(e);
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        } else if out.len() > start {
            out.truncate(start);
            self.compressor = None;
            return Err(SendError::Deflate(
                "sync flush did not end with an empty stored block".into(),
            ));
        }
        if out.len() == start {
            // zlib writes nothing for a sync flush right after another one. The stream is
            // byte-aligned there, so a lone 00 (an empty stored block's header) is valid and
            // keeps the receiver's inflater in step.
            out.extend_from_slice(&[0x00]);
        }
        Ok(())
    }

    /// Compresses `payload` as a whole message with a fresh compressor of `window_bits` and
    /// zlib `level`: the bytes a server without context takeover sends, the same for every
    /// connection with that window, so a fan-out can compress once (RFC 7692 §7.2.1).
    ///
    /// # Errors
    /// [`SendError::Deflate`] if zlib fails.
    pub fn compress_standalone(
        payload: &[u8],
        window_bits: u8,
        level: u32,
        out: &mut BytesMut,
    ) -> Result<(), SendError> {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: window_bits,
            client_max_window_bits: window_bits,
        };
        Self::new(Role::Server, params, level).compress(payload, out)
    }

    /// The window our compressor uses after the zlib adjustment (9..=15), when it starts
    /// afresh for every message; `None` when it keeps its context.
    pub fn standalone_window(&self) -> Option<u8> {
        let (bits, no_context) = self.ours();
        no_context.then(|| zlib_bits(bits))
    }

    /// Inflates one frame's compressed payload, appending to `out`; `fin` marks the last
    /// frame of the message. Call it once per frame, in order, with `fin = false` for every
    /// frame but the last (empty frames are fine).
    ///
    /// `max` bounds `out.len()`: pass the buffer that collects the message and the message
    /// size limit. Output is produced in bounded steps and the call fails the moment `out`
    /// would exceed `max`, so a compression bomb never allocates much more than `max`
    /// (capacity grows to at most `max + 1` unless `out` already had more).
    ///
    /// At `fin` the `00 00 ff ff` tail is appended before the final inflate (RFC 7692
    /// §7.2.2), and the inflater is released when the peer does not keep its context. A
    /// message ended early with a BFINAL block (RFC 7692 §7.2.3.4) has whatever follows that
    /// block ignored, and the next message starts a fresh stream.
    ///
    /// # Errors
    /// [`ProtocolError::Inflate`] for invalid data, [`ProtocolError::MessageTooBig`] past
    /// `max` (with `out` cut back to `max` bytes). The inflater is discarded; the connection
    /// should fail.
    pub fn decompress(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut BytesMut,
        max: usize,
    ) -> Result<(), ProtocolError> {
        let result = self.inflate_frame(input, fin, out, max);
        if result.is_err() {
            self.decompressor = None;
            self.inflating = false;
            self.stream_ended = false;
        }
        result
    }

    fn inflate_frame(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut BytesMut,
        max: usize,
    ) -> Result<(), ProtocolError> {
        if !self.stream_ended && !input.is_empty() {
            self.inflating = true;
            let inflater = self
                .decompressor
                .get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
            self.stream_ended = inflate_into(inflater, input, out, max)?;
        }
        if !fin {
            return Ok(());
        }
        // An empty payload is not a DEFLATE stream; feeding the tail alone would leave the
        // inflater inside a stored block header, so it counts as an empty message.
        if self.inflating && !self.stream_ended {
            if let Some(inflater) = self.decompressor.as_mut() {
                self.stream_ended = inflate_into(inflater, &TAIL, out, max)?;
            }
        }
        // After BFINAL the inflater cannot continue, so it starts over even with context.
        if self.peer_resets() || self.stream_ended {
            self.decompressor = None;
        }
        self.inflating = false;
        self.stream_ended = false;
        Ok(())
    }
}

/// Compresses all of `input` with a sync flush, appending to `out`.
fn deflate_sync(
    compressor: &mut Compress,
    mut input: &[u8],
    out: &mut BytesMut,
) -> Result<(), SendError> {
    // Incompressible data grows by 5 bytes per stored block; the rest is for the flush.
    let mut step = input.len() + input.len() / 1024 + 64;
    loop {
        let len = out.len();
        out.resize(len + step, 0);
        let (in_before, out_before) = (compressor.total_in(), compressor.total_out());
        let status = compressor.compress(input, &mut out[len..], FlushCompress::Sync);
        let consumed = (compressor.total_in() - in_before) as usize;
        let produced = (compressor.total_out() - out_before) as usize;
        out.truncate(len + produced);
        let status = status.map_err(|e| SendError::Deflate(e.to_string()))?;
        input = input.get(consumed..).unwrap_or_default();
        // zlib's contract: the flush is complete once a call leaves output space unused.
        if input.is_empty() && produced < step {
            return Ok(());
        }
        if consumed == 0 && produced == 0 && status == Status::BufError {
            return Err(SendError::Deflate("compressor made no progress".into()));
        }
        step = step.max(MIN_STEP);
    }
}

/// Inflates `input` into `out`, never letting `out` exceed `max`. Returns whether the
/// DEFLATE stream ended (BFINAL); anything after the end is ignored (RFC 7692 §7.2.3.4).
fn inflate_into(
    inflater: &mut Decompress,
    mut input: &[u8],
    out: &mut BytesMut,
    max: usize,
) -> Result<bool, ProtocolError> {
    // One byte beyond the limit tells "exactly max" apart from "more than max".
    let bound = max.saturating_add(1);
    let mut step = input.len().saturating_mul(4).clamp(MIN_STEP, MAX_STEP);
    loop {
        let len = out.len();
        let want = step.min(bound.saturating_sub(len)).max(1);
        reserve_bounded(out, want, bound);
        out.resize(len + want, 0);
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let status = inflater.decompress(input, &mut out[len..], FlushDecompress::Sync);
        let consumed = (inflater.total_in() - in_before) as usize;
        let produced = (inflater.total_out() - out_before) as usize;
        out.truncate(len + produced);
        // The limit first: `out` must never be left above `max`, whatever zlib says.
        if out.len() > max {
            out.truncate(max);
            return Err(ProtocolError::MessageTooBig { max });
        }
        let status = status.map_err(|e| ProtocolError::Inflate(e.to_string()))?;
        input = input.get(consumed..).unwrap_or_default();
        if status == Status::StreamEnd {
            return Ok(true);
        }
        if produced < want {
            // Output space left over: the inflater wants more input.
            if input.is_empty() {
                return Ok(false);
            }
            if consumed == 0 && produced == 0 {
                return Err(ProtocolError::Inflate("inflater made no progress".into()));
            }
        } else {
            // Output filled up: highly compressed data, take bigger steps.
            step = step.saturating_mul(2).min(MAX_STEP);
        }
    }
}

/// Makes room for `additional` bytes while keeping the capacity at or below `bound` when
/// the request fits in it: `BytesMut::reserve` doubles like `Vec`, which near the limit would
/// allocate up to twice the message limit.
fn reserve_bounded(out: &mut BytesMut, additional: usize, bound: usize) {
    if out.capacity() - out.len() >= additional {
        return;
    }
    let needed = out.len().saturating_add(additional);
    if out.capacity().saturating_mul(2) <= bound || needed > bound {
        out.reserve(additional);
    } else {
        let mut exact = BytesMut::with_capacity(bound);
        exact.extend_from_slice(out);
        *out = exact;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::CloseCode;
    use proptest::prelude::*;

    const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn params(window: u8, no_context: bool) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: no_context,
            client_no_context_takeover: no_context,
            server_max_window_bits: window,
            client_max_window_bits: window,
        }
    }

    fn compress(codec: &mut DeflateCodec, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        codec.compress(payload, &mut out).unwrap();
        out.to_vec()
    }

    fn inflate(codec: &mut DeflateCodec, frames: &[&[u8]]) -> Result<Vec<u8>, ProtocolError> {
        let mut out = BytesMut::new();
        for (i, frame) in frames.iter().enumerate() {
            codec.decompress(frame, i + 1 == frames.len(), &mut out, usize::MAX)?;
        }
        Ok(out.to_vec())
    }

    fn client() -> DeflateCodec {
        DeflateCodec::new(Role::Client, DeflateParams::default(), 6)
    }

    // RFC 7692 §7.2.3.1: "Hello" in one compressed block.
    #[test]
    fn rfc_hello_compresses_to_the_rfc_bytes() {
        for level in 1..=9 {
            let mut server = DeflateCodec::new(Role::Server, DeflateParams::default(), level);
            assert_eq!(compress(&mut server, b"Hello"), HELLO, "level {level}");
        }
    }

    #[test]
    fn rfc_hello_inflates_whole_and_fragmented() {
        assert_eq!(inflate(&mut client(), &[HELLO]).unwrap(), b"Hello");
        let fragments: &[&[u8]] = &[&[0xf2, 0x48, 0xcd], &[0xc9, 0xc9, 0x07, 0x00]];
        assert_eq!(inflate(&mut client(), fragments).unwrap(), b"Hello");
    }

    // RFC 7692 §7.2.3.2: the second "Hello" refers back into the shared window.
    #[test]
    fn rfc_context_takeover_vector() {
        let second = [0xf2, 0x00, 0x11, 0x00, 0x00];
        let mut server = DeflateCodec::new(Role::Server, DeflateParams::default(), 6);
        assert_eq!(compress(&mut server, b"Hello"), HELLO);
        assert_eq!(compress(&mut server, b"Hello"), second);
        let mut client = client();
        assert_eq!(inflate(&mut client, &[HELLO]).unwrap(), b"Hello");
        assert_eq!(inflate(&mut client, &[&second]).unwrap(), b"Hello");
    }

    #[test]
    fn no_context_takeover_restarts_and_releases_state() {
        let mut server = DeflateCodec::new(Role::Server, params(15, true), 6);
        let mut client = DeflateCodec::new(Role::Client, params(15, true), 6);
        assert!(server.is_idle_empty());
        for _ in 0..3 {
            assert_eq!(compress(&mut server, b"Hello"), HELLO);
            assert!(server.is_idle_empty());
            assert_eq!(inflate(&mut client, &[HELLO]).unwrap(), b"Hello");
            assert!(client.is_idle_empty());
        }
        // Mid-message the inflater exists; it goes away at fin.
        let mut out = BytesMut::new();
        client
            .decompress(&HELLO[..3], false, &mut out, 100)
            .unwrap();
        assert!(!client.is_idle_empty());
        client.decompress(&HELLO[3..], true, &mut out, 100).unwrap();
        assert!(client.is_idle_empty());
        assert_eq!(&out[..], b"Hello");
    }

    #[test]
    fn context_takeover_keeps_state_between_messages() {
        let mut server = DeflateCodec::new(Role::Server, DeflateParams::default(), 1);
        compress(&mut server, b"Hello");
        assert!(!server.is_idle_empty());
        let mut client = client();
        inflate(&mut client, &[HELLO]).unwrap();
        assert!(!client.is_idle_empty());
    }

    // RFC 7692 §7.2.3.3: a stored block, which level 0 produces.
    #[test]
    fn rfc_stored_block_vector() {
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate(&mut client(), &[&stored]).unwrap(), b"Hello");
        let mut server = DeflateCodec::new(Role::Server, DeflateParams::default(), 0);
        assert_eq!(compress(&mut server, b"Hello"), stored);
    }

    // RFC 7692 §7.2.3.4: BFINAL set, then the next message starts a new stream.
    #[test]
    fn rfc_bfinal_vector() {
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let mut client = client();
        assert_eq!(inflate(&mut client, &[&bfinal]).unwrap(), b"Hello");
        assert_eq!(
            inflate(&mut client, &[&bfinal[..3], &bfinal[3..]]).unwrap(),
            b"Hello"
        );
        assert_eq!(inflate(&mut client, &[HELLO]).unwrap(), b"Hello");
    }

    // RFC 7692 §7.2.3.5: two DEFLATE blocks in one message.
    #[test]
    fn rfc_two_blocks_vector() {
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflate(&mut client(), &[&two]).unwrap(), b"Hello");
        assert_eq!(
            inflate(&mut client(), &[&two[..8], &two[8..]]).unwrap(),
            b"Hello"
        );
    }

    // RFC 7692 §7.2.3.6: a sender that flushes per frame ends with a lone empty block.
    #[test]
    fn empty_final_fragment() {
        let flushed = [
            0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut client = client();
        assert_eq!(
            inflate(&mut client, &[&flushed, &[0x00]]).unwrap(),
            b"Hello"
        );
        assert_eq!(inflate(&mut client, &[HELLO, &[]]).unwrap(), b"Hello");
        assert_eq!(inflate(&mut client, &[&[], HELLO]).unwrap(), b"Hello");
    }

    #[test]
    fn empty_messages() {
        let mut server = DeflateCodec::new(Role::Server, DeflateParams::default(), 6);
        let mut client = client();
        for payload in [&b""[..], b"Hello", b"", b"", b"Hello"] {
            let wire = compress(&mut server, payload);
            if payload.is_empty() {
                assert_eq!(wire, [0x00]);
            }
            assert_eq!(inflate(&mut client, &[&wire]).unwrap(), payload);
        }
        // An empty compressed payload is taken as an empty message and breaks nothing.
        assert_eq!(inflate(&mut client, &[&[]]).unwrap(), b"");
        assert_eq!(
            inflate(&mut client, &[&compress(&mut server, b"Hello")]).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn invalid_data_is_an_inflate_error() {
        let mut client = client();
        let err = inflate(&mut client, &[&[0xff, 0xff, 0xff, 0xff]]).unwrap_err();
        assert!(matches!(err, ProtocolError::Inflate(_)), "{err:?}");
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
        assert!(client.is_idle_empty());
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Messages with repeats at every distance around the 256-byte boundary and beyond.
    fn window_test_messages() -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        for period in [3usize, 100, 250, 251, 256, 257, 300, 511, 700, 5000] {
            let unit = pseudo_random(period, period as u64);
            let len = (period * 8).min(12_000) + 17;
            messages.push(unit.iter().cycle().take(len).copied().collect());
        }
        let text = b"the quick brown fox jumps over the lazy dog; ".repeat(40);
        messages.push(text.clone());
        messages.push(text);
        messages.push(pseudo_random(300, 1));
        messages.push(pseudo_random(300, 1));
        messages.push(Vec::new());
        messages.push(vec![b'a'; 20_000]);
        messages
    }

    #[test]
    fn round_trip_every_window_both_directions() {
        for bits in 8..=15 {
            for no_context in [false, true] {
                let p = params(bits, no_context);
                // Level 0 writes stored blocks, whatever the window.
                let levels: &[u32] = if bits == 8 { &[0, 1, 9] } else { &[1, 9] };
                for &level in levels {
                    let mut server = DeflateCodec::new(Role::Server, p, level);
                    let mut client = DeflateCodec::new(Role::Client, p, level);
                    for msg in window_test_messages() {
                        let wire = compress(&mut server, &msg);
                        assert_eq!(inflate(&mut client, &[&wire]).unwrap(), msg);
                        let wire = compress(&mut client, &msg);
                        let halves = wire.split_at(wire.len() / 2);
                        assert_eq!(inflate(&mut server, &[halves.0, halves.1]).unwrap(), msg);
                    }
                    assert_eq!(server.is_idle_empty(), no_context);
                    assert_eq!(client.is_idle_empty(), no_context);
                }
            }
        }
    }

    /// Compresses every test message with `bits` on one stream and decodes the whole stream
    /// with [`puff`], returning the longest distance used.
    fn longest_distance(bits: u8, level: u32) -> usize {
        let mut server = DeflateCodec::new(Role::Server, params(bits, false), level);
        let (mut stream, mut expected) = (Vec::new(), Vec::new());
        for msg in window_test_messages() {
            stream.extend(compress(&mut server, &msg));
            stream.extend(TAIL);
            expected.extend(msg);
        }
        let (decoded, longest) = puff::inflate(&stream).unwrap();
        assert!(
            decoded == expected,
            "puff disagrees at window {bits} level {level}"
        );
        longest
    }

    // The window-8 choice (see `zlib_bits`): zlib runs with 9 bits but never reaches past
    // 250 bytes, checked by a decoder that shares no code with zlib.
    #[test]
    fn window_8_output_never_reaches_past_256_bytes() {
        for level in 0..=9 {
            let longest = longest_distance(8, level);
            assert!(longest <= 256, "level {level} used distance {longest}");
        }
        // The messages do tempt a larger window into longer distances.
        assert!(longest_distance(15, 6) > 256);
        assert!(longest_distance(10, 6) > 512);
    }

    #[test]
    fn window_8_stays_within_256_without_context_too() {
        let mut server = DeflateCodec::new(Role::Server, params(8, true), 9);
        for msg in window_test_messages() {
            let mut stream = compress(&mut server, &msg);
            stream.extend(TAIL);
            let (decoded, longest) = puff::inflate(&stream).unwrap();
            assert_eq!(decoded, msg);
            assert!(longest <= 256);
        }
    }

    /// 100 MB of zeros, compressed: a sync-flushed chunk of zeros compresses to the same
    /// bytes once the window is all zeros, so the bomb is built from one chunk repeated.
    fn zero_bomb(total: usize) -> Vec<u8> {
        const CHUNK: usize = 256 << 10;
        let mut compressor = Compress::new(Compression::best(), false);
        let zeros = vec![0u8; CHUNK];
        let mut chunks = Vec::new();
        for _ in 0..3 {
            let mut out = Vec::with_capacity(CHUNK);
            compressor
                .compress_vec(&zeros, &mut out, FlushCompress::Sync)
                .unwrap();
            chunks.push(out);
        }
        assert_eq!(chunks[1], chunks[2], "steady state");
        let mut bomb = chunks[0].clone();
        for _ in 1..total / CHUNK {
            bomb.extend_from_slice(&chunks[1]);
        }
        bomb.truncate(bomb.len() - TAIL.len());
        bomb
    }

    #[test]
    fn error_in_the_step_that_crosses_the_limit_keeps_out_bounded() {
        // Found by the inflate fuzz target: zlib fails in the same call that produced
        // max + 1 bytes.
        let mut codec = DeflateCodec::new(Role::Client, DeflateParams::default(), 1);
        let mut out = BytesMut::new();
        assert!(codec
            .decompress(&[0x8a, 0x97, 0x00, 0xff], false, &mut out, 1)
            .is_err());
        assert!(out.len() <= 1, "out holds {} bytes", out.len());
    }

    #[test]
    fn compression_bomb_stops_at_the_limit() {
        let bomb = zero_bomb(100 << 20);
        assert!(bomb.len() < 200 << 10);
        let max = 1 << 20;

        // As one frame.
        let mut client = client();
        let mut out = BytesMut::new();
        let err = client.decompress(&bomb, true, &mut out, max).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig { max });
        assert_eq!(err.close_code(), CloseCode::TOO_BIG);
        assert_eq!(out.len(), max);
        assert!(out.capacity() <= max + 1, "capacity {}", out.capacity());

        // As many frames, into a buffer that already holds part of the message.
        let mut client = DeflateCodec::new(Role::Client, DeflateParams::default(), 1);
        let mut out = BytesMut::from(&b"already here"[..]);
        let mut result = Ok(());
        for (i, frame) in bomb.chunks(1000).enumerate() {
            result = client.decompress(frame, (i + 1) * 1000 >= bomb.len(), &mut out, max);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ProtocolError::MessageTooBig { max }));
        assert!(out.capacity() <= max + 1, "capacity {}", out.capacity());
    }

    #[test]
    fn limit_is_inclusive() {
        let msg = vec![7u8; 100_000];
        let mut server = DeflateCodec::new(Role::Server, DeflateParams::default(), 6);
        let wire = compress(&mut server, &msg);
        let mut client = DeflateCodec::new(Role::Client, params(15, true), 6);
        let mut out = BytesMut::new();
        client.decompress(&wire, true, &mut out, msg.len()).unwrap();
        assert_eq!(&out[..], &msg[..]);
        out.clear();
        let err = client.decompress(&wire, true, &mut out, msg.len() - 1);
        assert_eq!(
            err,
            Err(ProtocolError::MessageTooBig { max: msg.len() - 1 })
        );
        assert_eq!(out.len(), msg.len() - 1);
    }

    proptest! {
        #[test]
        fn any_chunking_inflates_the_same(
            messages in prop::collection::vec(prop::collection::vec(0u8..4, 0..3000), 1..5),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            bits in 8u8..=15,
            no_context in any::<bool>(),
        ) {
            let p = params(bits, no_context);
            let mut server = DeflateCodec::new(Role::Server, p, 6);
            let mut client = DeflateCodec::new(Role::Client, p, 6);
            for msg in &messages {
                let wire = compress(&mut server, msg);
                let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
                at.sort_unstable();
                let mut frames = Vec::new();
                let mut start = 0;
                for cut in at {
                    frames.push(&wire[start..cut]);
                    start = cut;
                }
                frames.push(&wire[start..]);
                prop_assert_eq!(&inflate(&mut client, &frames).unwrap(), msg);
            }
        }

        #[test]
        fn garbage_never_panics_or_exceeds_the_limit(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..4),
            max in 0usize..5000,
        ) {
            let mut client = client();
            let mut out = BytesMut::new();
            for (i, frame) in frames.iter().enumerate() {
                let result = client.decompress(frame, i + 1 == frames.len(), &mut out, max);
                prop_assert!(out.len() <= max);
                if result.is_err() {
                    break;
                }
            }
        }
    }

    /// A minimal DEFLATE decoder after zlib's `puff.c`, independent of zlib, that reports the
    /// longest back-reference distance it met.
    mod puff {
        const LBASE: [usize; 29] = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
            115, 131, 163, 195, 227, 258,
        ];
        const LEXT: [u32; 29] = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
        ];
        const DBASE: [usize; 30] = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
            1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
        ];
        const DEXT: [u32; 30] = [
            0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12,
            12, 13, 13,
        ];

        struct Huffman {
            count: [usize; 16],
            symbol: Vec<usize>,
        }

        impl Huffman {
            fn new(lengths: &[usize]) -> Self {
                let mut count = [0; 16];
                for &len in lengths {
                    count[len] += 1;
                }
                let mut offs = [0; 16];
                for len in 1..15 {
                    offs[len + 1] = offs[len] + count[len];
                }
                let mut symbol = vec![0; lengths.len()];
                for (sym, &len) in lengths.iter().enumerate() {
                    if len != 0 {
                        symbol[offs[len]] = sym;
                        offs[len] += 1;
                    }
                }
                Self { count, symbol }
            }
        }

        struct State<'a> {
            input: &'a [u8],
            pos: usize,
            bitbuf: u32,
            bitcnt: u32,
            out: Vec<u8>,
            longest: usize,
        }

        impl State<'_> {
            fn bits(&mut self, need: u32) -> Result<usize, &'static str> {
                let mut val = self.bitbuf;
                while self.bitcnt < need {
                    let byte = *self.input.get(self.pos).ok_or("out of input")?;
                    self.pos += 1;
                    val |= u32::from(byte) << self.bitcnt;
                    self.bitcnt += 8;
                }
                self.bitbuf = val >> need;
                self.bitcnt -= need;
                Ok((val & ((1 << need) - 1)) as usize)
            }

            fn byte(&mut self) -> Result<usize, &'static str> {
                let byte = *self.input.get(self.pos).ok_or("out of input")?;
                self.pos += 1;
                Ok(usize::from(byte))
            }

            fn stored(&mut self) -> Result<(), &'static str> {
                self.bitbuf = 0;
                self.bitcnt = 0;
                let len = self.byte()? | self.byte()? << 8;
                let nlen = self.byte()? | self.byte()? << 8;
                if len != !nlen & 0xffff {
                    return Err("bad stored length");
                }
                let data = self
                    .input
                    .get(self.pos..self.pos + len)
                    .ok_or("out of input")?;
                self.out.extend_from_slice(data);
                self.pos += len;
                Ok(())
            }

            fn decode(&mut self, h: &Huffman) -> Result<usize, &'static str> {
                let (mut code, mut first, mut index) = (0usize, 0usize, 0usize);
                for len in 1..16 {
                    code |= self.bits(1)?;
                    let count = h.count[len];
                    if code < first + count {
                        return Ok(h.symbol[index + code - first]);
                    }
                    index += count;
                    first = (first + count) << 1;
                    code <<= 1;
                }
                Err("bad code")
            }

            fn codes(&mut self, lens: &Huffman, dists: &Huffman) -> Result<(), &'static str> {
                loop {
                    let sym = self.decode(lens)?;
                    if sym < 256 {
                        self.out.push(sym as u8);
                        continue;
                    }
                    if sym == 256 {
                        return Ok(());
                    }
                    let sym = sym - 257;
                    let len = LBASE.get(sym).ok_or("bad length")? + self.bits(LEXT[sym])?;
                    let dsym = self.decode(dists)?;
                    let dist = DBASE.get(dsym).ok_or("bad distance")? + self.bits(DEXT[dsym])?;
                    if dist > self.out.len() {
                        return Err("distance too far back");
                    }
                    self.longest = self.longest.max(dist);
                    for _ in 0..len {
                        self.out.push(self.out[self.out.len() - dist]);
                    }
                }
            }

            fn fixed(&mut self) -> Result<(), &'static str> {
                let mut lengths = [0; 288];
                lengths[..144].fill(8);
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                lengths[280..].fill(8);
                self.codes(&Huffman::new(&lengths), &Huffman::new(&[5; 30]))
            }

            fn dynamic(&mut self) -> Result<(), &'static str> {
                const ORDER: [usize; 19] = [
                    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                ];
                let nlen = self.bits(5)? + 257;
                let ndist = self.bits(5)? + 1;
                let ncode = self.bits(4)? + 4;
                let mut lengths = [0; 320];
                for &index in &ORDER[..ncode] {
                    lengths[index] = self.bits(3)?;
                }
                let code = Huffman::new(&lengths[..19]);
                lengths[..19].fill(0);
                let mut index = 0;
                while index < nlen + ndist {
                    let sym = self.decode(&code)?;
                    if sym < 16 {
                        lengths[index] = sym;
                        index += 1;
                        continue;
                    }
                    let (len, repeat) = match sym {
                        16 => (
                            *lengths.get(index.wrapping_sub(1)).ok_or("repeat first")?,
                            3 + self.bits(2)?,
                        ),
                        17 => (0, 3 + self.bits(3)?),
                        _ => (0, 11 + self.bits(7)?),
                    };
                    if index + repeat > nlen + ndist {
                        return Err("too many lengths");
                    }
                    lengths[index..index + repeat].fill(len);
                    index += repeat;
                }
                let lens = Huffman::new(&lengths[..nlen]);
                let dists = Huffman::new(&lengths[nlen..nlen + ndist]);
                self.codes(&lens, &dists)
            }
        }

        /// Decodes blocks until the input is used up; returns the output and the longest
        /// distance.
        pub fn inflate(input: &[u8]) -> Result<(Vec<u8>, usize), &'static str> {
            let mut s = State {
                input,
                pos: 0,
                bitbuf: 0,
                bitcnt: 0,
                out: Vec::new(),
                longest: 0,
            };
            while s.pos < input.len() {
                let last = s.bits(1)?;
                match s.bits(2)? {
                    0 => s.stored()?,
                    1 => s.fixed()?,
                    2 => s.dynamic()?,
                    _ => return Err("bad block type"),
                }
                if last == 1 {
                    break;
                }
            }
            Ok((s.out, s.longest))
        }
    }
}
