//! The WebSocket state machine. See [`Connection`].

use crate::config::Config;
use crate::close::CloseFrame;
use crate::deflate::DeflateParams;
use crate::error::{ProtocolError, SendError};
use crate::message::{Event, Message};
use crate::role::Role;
use bytes::{Bytes, BytesMut};
use std::io::IoSlice;

/// One WebSocket connection after the opening handshake, for either role.
///
/// # Driving contract
///
/// * **Input**: give every byte read from the transport to [`Connection::handle_bytes`] (or
///   read straight into [`Connection::read_buffer`] and call [`Connection::handle_read`]); at
///   end of stream call [`Connection::handle_eof`].
/// * **Events**: after any input, drain [`Connection::poll_event`] until `None`.
/// * **Output**: after any input or command, write out the pending bytes: either
///   [`Connection::poll_transmit`] (copies into your buffer) or
///   [`Connection::transmit_slices`] + [`Connection::advance_transmit`] (vectored, no copy).
///   Pongs, close replies and the close frame that reports a protocol error are queued by the
///   core itself, so flush before acting on an error.
/// * **End**: once [`Connection::is_closed`] is true, the close handshake is over (or the
///   connection failed): flush, then a server closes the TCP connection and a client waits
///   briefly for the server to do so (RFC 6455 §7.1.1).
pub struct Connection {
    _role: Role,
    _config: Config,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

#[allow(missing_docs, clippy::todo, unused_variables)]
impl Connection {
    /// A connection without extensions.
    pub fn new(role: Role, config: Config) -> Self {
        Self { _role: role, _config: config }
    }
    /// A connection with negotiated permessage-deflate parameters.
    pub fn with_deflate(role: Role, config: Config, deflate: Option<DeflateParams>) -> Self {
        todo!()
    }
    pub fn role(&self) -> Role { todo!() }
    pub fn config(&self) -> &Config { todo!() }
    pub fn deflate(&self) -> Option<DeflateParams> { todo!() }
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<(), ProtocolError> { todo!() }
    pub fn read_buffer(&mut self) -> &mut BytesMut { todo!() }
    pub fn handle_read(&mut self) -> Result<(), ProtocolError> { todo!() }
    pub fn handle_eof(&mut self) -> Result<(), ProtocolError> { todo!() }
    pub fn poll_event(&mut self) -> Option<Event> { todo!() }
    pub fn send(&mut self, message: Message) -> Result<(), SendError> { todo!() }
    pub fn send_prepared(&mut self, frame: &PreparedFrame) -> Result<(), SendError> { todo!() }
    pub fn ping(&mut self, payload: Bytes) -> Result<(), SendError> { todo!() }
    pub fn pong(&mut self, payload: Bytes) -> Result<(), SendError> { todo!() }
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> { todo!() }
    pub fn has_pending_transmit(&self) -> bool { todo!() }
    pub fn pending_transmit_len(&self) -> usize { todo!() }
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> usize { todo!() }
    pub fn transmit_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize { todo!() }
    pub fn advance_transmit(&mut self, n: usize) { todo!() }
    pub fn is_closed(&self) -> bool { todo!() }
    pub fn is_closing(&self) -> bool { todo!() }
    pub fn can_send(&self) -> bool { todo!() }
    pub fn close_frame(&self) -> Option<&CloseFrame> { todo!() }
    pub fn release_idle_memory(&mut self) { todo!() }
}

/// A server-role frame encoded once and sent on many connections (hub fan-out).
#[derive(Clone, Debug)]
pub struct PreparedFrame {
    _plain: Bytes,
}
