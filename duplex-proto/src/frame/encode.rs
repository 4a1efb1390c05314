use super::header::{OpCode, MAX_HEADER_LEN};
use super::mask::apply_mask;
use bytes::{BufMut, BytesMut};

/// Appends a frame header to `out`, with the minimal length encoding (§5.2).
///
/// Written in pieces of constant length rather than built in an array and copied: a copy
/// of a constant length is a store or two in place, where one of a computed length is a
/// call to `memcpy`, and this runs for every frame sent.
#[inline]
pub fn write_header(
    out: &mut BytesMut,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_len: usize,
) {
    let b0 = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload_len {
        0..=125 => out.put_slice(&[b0, mask_bit | payload_len as u8]),
        126..=0xFFFF => {
            let [hi, lo] = (payload_len as u16).to_be_bytes();
            out.put_slice(&[b0, mask_bit | 126, hi, lo]);
        }
        _ => {
            out.put_slice(&[b0, mask_bit | 127]);
            out.put_slice(&(payload_len as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.put_slice(&mask);
    }
}

/// Appends a whole frame (header and payload, masked when `mask` is given) to `out`.
// Always inlined: the compiler kept it out of line, and at its callers the role (so the
// mask) and the flags are often known (docs/performance.md, eleventh pass).
#[inline(always)]
pub fn encode_frame(
    out: &mut BytesMut,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    write_header(out, fin, rsv1, opcode, mask, payload.len());
    let start = out.len();
    out.put_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameHeader;

    #[test]
    fn write_header_agrees_with_frame_header_encode() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                for (fin, rsv1, opcode) in [
                    (true, false, OpCode::TEXT),
                    (false, true, OpCode::BINARY),
                    (false, false, OpCode::CONTINUATION),
                    (true, false, OpCode::PING),
                ] {
                    let mut out = BytesMut::new();
                    write_header(&mut out, fin, rsv1, opcode, mask, len);
                    let header = FrameHeader {
                        fin,
                        rsv: if rsv1 { 0b100 } else { 0 },
                        opcode,
                        mask,
                        payload_len: len as u64,
                    };
                    let mut buf = [0; MAX_HEADER_LEN];
                    let n = header.encode(&mut buf);
                    assert_eq!(&out[..], &buf[..n], "len {len} mask {mask:?} {opcode:?}");
                    assert_eq!(FrameHeader::parse(&out).unwrap(), Some((header, n)));
                }
            }
        }
    }

    #[test]
    fn rfc_example_frames() {
        // RFC 6455 §5.7.
        let mut out = BytesMut::new();
        encode_frame(&mut out, true, false, OpCode::TEXT, None, b"Hello");
        assert_eq!(&out[..], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        encode_frame(
            &mut out,
            true,
            false,
            OpCode::TEXT,
            Some([0x37, 0xfa, 0x21, 0x3d]),
            b"Hello",
        );
        assert_eq!(
            &out[..],
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        out.clear();
        // Unmasked ping "Hello".
        encode_frame(&mut out, true, false, OpCode::PING, None, b"Hello");
        assert_eq!(&out[..], &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    }
}
