use super::header::{FrameHeader, OpCode, MAX_HEADER_LEN};
use super::mask::apply_mask;
use bytes::{BufMut, BytesMut};

/// Appends a frame header to `out`.
#[inline]
pub fn write_header(
    out: &mut BytesMut,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_len: usize,
) {
    let header = FrameHeader {
        fin,
        rsv: if rsv1 { 0b100 } else { 0 },
        opcode,
        mask,
        payload_len: payload_len as u64,
    };
    let mut buf = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut buf);
    out.put_slice(&buf[..n]);
}

/// Appends a whole frame (header and payload, masked when `mask` is given) to `out`.
#[inline]
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
