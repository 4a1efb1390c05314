//! RFC 6455 §5 framing: the header, masking and encoding.
//!
//! Decoding a stream of frames with all the protocol rules is [`crate::Connection`]'s job;
//! this module holds the pieces it is built from, usable on their own (benchmarks, fuzzing).

mod encode;
mod header;
mod mask;

pub use encode::{encode_frame, write_header};
pub use header::{FrameHeader, OpCode, MAX_HEADER_LEN};
pub use mask::apply_mask;
