use super::DeflateParams;
use crate::error::{ProtocolError, SendError};
use crate::role::Role;
use bytes::BytesMut;

/// Placeholder codec until the deflate module lands.
#[derive(Debug)]
pub struct DeflateCodec {
    _role: Role,
    _params: DeflateParams,
}

impl DeflateCodec {
    /// A codec for our `role`; no zlib state is allocated until first use.
    pub fn new(role: Role, params: DeflateParams, _level: u32) -> Self {
        Self {
            _role: role,
            _params: params,
        }
    }

    /// Compresses one whole message payload, appending to `out` without the trailing
    /// `00 00 ff ff` (RFC 7692 §7.2.1).
    ///
    /// # Errors
    /// [`SendError::Deflate`] if zlib fails.
    pub fn compress(&mut self, _payload: &[u8], _out: &mut BytesMut) -> Result<(), SendError> {
        Err(SendError::Deflate("not implemented".into()))
    }

    /// Inflates one frame's compressed payload, appending to `out`; `fin` marks the last
    /// frame of the message. Fails with `MessageTooBig` as soon as `out` would exceed `max`.
    ///
    /// # Errors
    /// [`ProtocolError::Inflate`] or [`ProtocolError::MessageTooBig`].
    pub fn decompress(
        &mut self,
        _input: &[u8],
        _fin: bool,
        _out: &mut BytesMut,
        _max: usize,
    ) -> Result<(), ProtocolError> {
        Err(ProtocolError::Inflate("not implemented".into()))
    }
}
