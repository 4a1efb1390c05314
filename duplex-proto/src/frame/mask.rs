/// XORs `buf` with the masking key (RFC 6455 §5.3), where `buf` starts `offset` bytes into
/// the frame's payload. Masking and unmasking are the same operation.
///
/// Works a 64-bit word at a time (the loop over fixed-size chunks vectorises); only the last
/// few bytes go one by one. On x86-64 CPUs with AVX2, payloads of 128 bytes or more
/// take the same loop compiled for AVX2 (32 bytes per step instead of SSE2's 16), chosen at
/// run time.
#[inline]
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    // The key as it stands `offset` bytes in, rotated as a word: `[u8]::rotate_left` is a
    // call into the general slice rotation, about 17 instructions per frame.
    let key = u32::from_le_bytes(mask)
        .rotate_right(8 * (offset % 4) as u32)
        .to_le_bytes();
    #[cfg(target_arch = "x86_64")]
    if buf.len() >= WIDE_MIN && avx2::xor_key(buf, key) {
        return;
    }
    xor_key(buf, key);
}

/// Payloads at least this long are worth a call to the AVX2 loop (the feature check and a
/// call that is not inlined cost a few instructions; small payloads are most of them).
pub(crate) const WIDE_MIN: usize = 128;

/// The masking loop, for whatever instructions the caller is compiled for.
#[inline(always)]
fn xor_key(buf: &mut [u8], key: [u8; 4]) {
    // The key twice over, as the word that overlays 8 payload bytes in memory: in either
    // byte order that is the key read natively, repeated in both halves. (Gathering the
    // eight bytes into an array, as the obvious code does, costs about 19 instructions
    // per call; this, two.)
    let word = u64::from(u32::from_ne_bytes(key)) * 0x1_0000_0001;
    let mut blocks = buf.chunks_exact_mut(32);
    for block in &mut blocks {
        for lane in block.chunks_exact_mut(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(lane);
            lane.copy_from_slice(&(u64::from_ne_bytes(w) ^ word).to_ne_bytes());
        }
    }
    let rest = blocks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for lane in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(lane);
        lane.copy_from_slice(&(u64::from_ne_bytes(w) ^ word).to_ne_bytes());
    }
    // A whole number of words keeps the key phase, so the tail starts at key[0].
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The one place `duplex-proto` allows `unsafe`: calling the masking loop compiled for AVX2,
/// which a CPU without AVX2 cannot run. Unmasking a 64 KiB payload in 16-byte SSE2 steps
/// (the baseline x86-64 target) was two thirds of the user-space instructions of a 64 KiB
/// echo (docs/performance.md, eleventh pass).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    /// Masks `buf` with the AVX2 loop and returns true, or returns false (and leaves `buf`
    /// alone) when this CPU has no AVX2.
    pub(super) fn xor_key(buf: &mut [u8], key: [u8; 4]) -> bool {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return false;
        }
        // SAFETY: the only requirement of a `#[target_feature]` function is that the CPU
        // has the features it was compiled for, and AVX2 was detected just above.
        unsafe { xor_key_avx2(buf, key) };
        true
    }

    #[target_feature(enable = "avx2")]
    fn xor_key_avx2(buf: &mut [u8], key: [u8; 4]) {
        super::xor_key(buf, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytewise(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc_masked_hello() {
        // RFC 6455 §5.7.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn matches_bytewise_for_every_length_and_offset() {
        let mask = [0xA1, 0x5B, 0x03, 0xFE];
        // Past WIDE_MIN, so that the AVX2 loop is checked too where the CPU has it.
        for len in 0..(WIDE_MIN + 100) {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
                let mut fast = data.clone();
                let mut slow = data.clone();
                apply_mask(&mut fast, mask, offset);
                bytewise(&mut slow, mask, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_loop_matches_the_portable_one_where_the_cpu_has_it() {
        let key = [0xA1, 0x5B, 0x03, 0xFE];
        for len in [0, 1, 31, 32, 33, 127, 128, 129, 1000, 4099, 65536] {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let mut portable = data.clone();
            xor_key(&mut portable, key);
            let mut wide = data.clone();
            let ran = avx2::xor_key(&mut wide, key);
            // Whichever the CPU: with AVX2 the loop runs and agrees, without it `buf` is left
            // alone for the portable loop.
            assert_eq!(ran, std::arch::is_x86_feature_detected!("avx2"));
            assert_eq!(wide, if ran { portable } else { data }, "len {len}");
        }
    }

    #[test]
    fn split_masking_equals_whole() {
        let mask = [9, 8, 7, 6];
        let data: Vec<u8> = (0..=255).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        let mut parts = data;
        let (a, b) = parts.split_at_mut(13);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 13);
        assert_eq!(whole, parts);
    }
}
