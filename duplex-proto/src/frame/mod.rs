//! RFC 6455 §5 framing: headers, masking, decoding and encoding.
