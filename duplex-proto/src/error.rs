//! Errors, split by layer: the peer broke the protocol, we misused the send side, or the
//! configuration is inconsistent.

use crate::close::CloseCode;

/// The peer broke RFC 6455 or RFC 7692, or exceeded a configured limit.
///
/// Every variant knows the close code the core answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV bits set without a negotiated extension that defines them (§5.2).
    #[error("reserved bits set in frame header")]
    ReservedBits,
    /// An opcode RFC 6455 reserves (§5.2).
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A client sent an unmasked frame (§5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server sent a masked frame (§5.1).
    #[error("server frame is masked")]
    MaskedFrame,
    /// A control frame with more than 125 bytes of payload (§5.5).
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN (§5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame with no message in progress (§5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is still in progress (§5.4).
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// The 64-bit payload length has its most significant bit set (§5.2).
    #[error("invalid 64-bit payload length")]
    InvalidLength,
    /// Text that is not valid UTF-8, detected as early as possible (§8.1).
    #[error("invalid UTF-8 in text message")]
    InvalidUtf8,
    /// A close frame whose code may not appear on the wire (§7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close frame with a one-byte payload, or a reason that is not UTF-8 (§5.5.1).
    #[error("malformed close frame payload")]
    InvalidClosePayload,
    /// A compressed frame that is a control or continuation frame (RFC 7692 §6.1).
    #[error("RSV1 set on a control or continuation frame")]
    InvalidCompressedFrame,
    /// Compressed data that does not inflate (RFC 7692 §6.2).
    #[error("invalid compressed data: {0}")]
    Inflate(String),
    /// A frame larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooBig {
        /// The frame's announced payload size.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message (counted after decompression) larger than the configured limit.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooBig {
        /// The configured limit.
        max: usize,
    },
    /// A message split into more fragments than the configured limit.
    #[error("message has more than {max} fragments")]
    TooManyFragments {
        /// The configured limit.
        max: usize,
    },
    /// The peer sent data frames after its close frame (§5.5.1).
    #[error("data received after close frame")]
    DataAfterClose,
    /// The connection ended without a close frame; reported as 1006 (§7.1.5), never sent.
    #[error("connection closed without a close frame")]
    AbnormalClosure,
}

impl ProtocolError {
    /// The close code this error is answered with (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::Inflate(_) => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooBig { .. } | Self::MessageTooBig { .. } => CloseCode::TOO_BIG,
            Self::TooManyFragments { .. } => CloseCode::POLICY,
            Self::AbnormalClosure => CloseCode::ABNORMAL,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// A local misuse of the send side; the connection itself is unaffected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// We already sent a close frame, or the connection failed.
    #[error("connection is closing or closed")]
    Closed,
    /// Ping, pong and close payloads are limited to 125 bytes (§5.5).
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// The close code may not be sent (1005, 1006, 1015 and unassigned codes).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// Compression failed.
    #[error("compression failed: {0}")]
    Deflate(String),
}

/// Configuration values that cannot work together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A permessage-deflate window size outside 8..=15.
    #[error("window bits must be between 8 and 15, got {0}")]
    WindowBits(u8),
    /// A zlib compression level outside 0..=9.
    #[error("compression level must be between 0 and 9, got {0}")]
    CompressionLevel(u32),
    /// A limit that must be positive was zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The frame limit is larger than the message limit.
    #[error("max_frame_size ({frame}) exceeds max_message_size ({message})")]
    FrameLargerThanMessage {
        /// The frame limit.
        frame: usize,
        /// The message limit.
        message: usize,
    },
}
