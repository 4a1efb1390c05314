//! The WebSocket state machine. See [`Connection`].

use crate::close::{CloseCode, CloseFrame};
use crate::config::Config;
use crate::deflate::{DeflateCodec, DeflateParams};
use crate::error::{ProtocolError, SendError};
use crate::frame::{apply_mask, encode_frame, write_header, FrameHeader, OpCode};
use crate::message::{Event, Message};
use crate::role::Role;
use crate::utf8::{Utf8Bytes, Utf8Validator};
use bytes::{Buf, Bytes, BytesMut};
use std::io::IoSlice;
use std::sync::Arc;

mod events;
mod outbuf;
mod pool;
use events::EventQueue;
use outbuf::OutQueue;

/// Payloads up to this size are copied: outgoing ones next to their header, so that many
/// small frames go out as one contiguous write, incoming ones out of the read buffer, so a
/// kept message does not pin it. Larger ones are shared by reference (no copy), and so is a
/// prepared frame of any size that has nothing queued before it.
const INLINE_PAYLOAD: usize = 4096;

/// Control frame payloads are at most 125 bytes (RFC 6455 §5.5), so a close reason is at
/// most 123 bytes after the two-byte code.
const MAX_CONTROL_PAYLOAD: usize = 125;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CloseState {
    /// Both directions open.
    Open,
    /// We sent a close frame and wait for the peer's.
    Sent,
    /// The close handshake finished, or the connection failed.
    Closed,
}

/// A frame whose header has been read and whose payload is still arriving.
#[derive(Clone, Copy, Debug)]
struct InFrame {
    header: FrameHeader,
    /// Payload bytes already consumed.
    done: usize,
    /// The frame has been counted into the message in progress.
    begun: bool,
}

/// A data message being reassembled from fragments or from a frame that arrives in pieces.
#[derive(Debug)]
struct Assembly {
    text: bool,
    compressed: bool,
    buf: BytesMut,
    fragments: usize,
    utf8: Utf8Validator,
}

/// One WebSocket connection after the opening handshake, for either role.
///
/// The core owns everything RFC 6455 and RFC 7692 decide: control replies (ping → pong,
/// close → close reply), the close handshake, fragment reassembly, UTF-8 checks (failing as
/// soon as the bytes received so far cannot be valid), permessage-deflate, size limits, and
/// turning a protocol violation into the right close frame. It owns no socket, task or clock.
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
/// * **Order**: a peer's close frame, or a protocol error, takes effect only once every event
///   before it has been taken with [`Connection::poll_event`]. An application that answers a
///   message (an echo, say) can therefore still send that answer although the bytes after
///   the message already failed the connection or closed it; the close frame follows the
///   answer on the wire. `handle_*` returns the error at once, so the driver knows no more
///   input will be read; keep draining events, then flush.
/// * **End**: once [`Connection::is_closed`] is true, the close handshake is over (or the
///   connection failed): flush, then a server closes the TCP connection and a client waits
///   briefly for the server to do so (RFC 6455 §7.1.1).
pub struct Connection {
    role: Role,
    /// Shared, when the caller shares it (see [`Connection::new`]): 8 bytes of each
    /// connection's state instead of the whole `Config`.
    config: Arc<Config>,
    codec: Option<Box<DeflateCodec>>,
    state: CloseState,
    failed: bool,
    close_received: bool,
    /// The peer's close frame waits in `events` behind earlier events; answer it when taken.
    close_pending: bool,
    /// `read` came from the pool in [`Connection::reserve_read`] and nothing was processed
    /// from it since: [`Connection::unreserve_read`] may put it back unchecked.
    read_untouched: bool,
    /// Bytes at the front of `read` that hold only whole small data messages, already
    /// checked and unmasked, older than anything in `events`, and handed out one by one by
    /// [`Connection::poll_event`] straight from `read` (see
    /// [`Connection::check_small_messages`]).
    /// (A `u16`, so the fields fit in the padding they had: a longer run of small messages,
    /// which takes a read of more than 64 KiB, is queued as before.)
    deferred: u16,
    /// A protocol error found behind events not yet taken; applied once they are.
    /// Boxed, as it is rare: an idle connection's fixed state stays small.
    failure_pending: Option<Box<ProtocolError>>,
    read: BytesMut,
    /// Boxed: only a frame whose payload is still arriving waits here between reads.
    frame: Option<Box<InFrame>>,
    message: Option<Box<Assembly>>,
    events: EventQueue,
    out: OutQueue,
    /// Boxed, as it is rare: an idle connection's fixed state stays small.
    peer_close: Option<Box<CloseFrame>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("failed", &self.failed)
            .field("deflate", &self.deflate())
            .field("buffered_in", &self.read.len())
            .field("deferred", &self.deferred)
            .field("pending_out", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection without extensions.
    ///
    /// `config` is a [`Config`] or an `Arc<Config>`: connections made from clones of one
    /// `Arc` share one copy of it (a server holding many connections should).
    pub fn new(role: Role, config: impl Into<Arc<Config>>) -> Self {
        Self::with_deflate(role, config, None)
    }

    /// A connection with the permessage-deflate parameters negotiated in the handshake.
    /// `config` as in [`Connection::new`].
    pub fn with_deflate(
        role: Role,
        config: impl Into<Arc<Config>>,
        deflate: Option<DeflateParams>,
    ) -> Self {
        let config = config.into();
        let level = config.deflate.as_ref().map_or(1, |d| d.compression_level);
        Self {
            role,
            codec: deflate.map(|p| Box::new(DeflateCodec::new(role, p, level))),
            config,
            state: CloseState::Open,
            failed: false,
            close_received: false,
            close_pending: false,
            read_untouched: false,
            deferred: 0,
            failure_pending: None,
            read: BytesMut::new(),
            frame: None,
            message: None,
            events: EventQueue::default(),
            out: OutQueue::default(),
            peer_close: None,
        }
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The negotiated permessage-deflate parameters, if any.
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.codec.as_ref().map(|codec| codec.params())
    }

    /// Feeds bytes read from the transport.
    ///
    /// # Errors
    /// The first protocol violation found. The close frame that tells the peer why is
    /// already queued: flush it, then close the transport. Later input is ignored.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        self.read_untouched = false;
        if self.discards_input() {
            return Ok(());
        }
        self.read.extend_from_slice(data);
        self.handle_read()
    }

    /// The buffer the driver may read into directly (then call
    /// [`Connection::handle_read`]), saving a copy. It may hold unprocessed bytes, and whole
    /// messages already checked but not yet taken with [`Connection::poll_event`]: append
    /// only (to drop what is buffered, use [`Connection::discard_input`]).
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.read
    }

    /// Drops everything buffered from the transport, messages not yet taken included: for a
    /// driver that has finished with the connection, or reads on only to see the end of
    /// the stream.
    pub fn discard_input(&mut self) {
        self.read.clear();
        self.deferred = 0;
    }

    /// The read buffer with room for at least `additional` more bytes, to read into before
    /// calling [`Connection::handle_read`]. After [`Connection::release_idle_memory`] gave
    /// the buffer back, it comes from a small per-thread pool of released buffers when one
    /// is large enough, instead of from the allocator.
    pub fn reserve_read(&mut self, additional: usize) -> &mut BytesMut {
        if self.read.capacity() == 0 {
            self.read = pool::take(additional);
            self.read_untouched = true;
        } else {
            self.read.reserve(additional);
        }
        &mut self.read
    }

    /// Gives back the read buffer when it is empty, before waiting for the transport. A
    /// buffer that [`Connection::reserve_read`] took for a read that found nothing goes back
    /// unchecked; one that was read into is checked for storage still shared with a message.
    pub fn unreserve_read(&mut self) {
        if self.read.is_empty() && self.read.capacity() > 0 {
            let read = std::mem::take(&mut self.read);
            if std::mem::take(&mut self.read_untouched) {
                pool::give_unused(read);
            } else {
                pool::give(read);
            }
        }
    }

    /// Processes whatever is in [`Connection::read_buffer`].
    ///
    /// # Errors
    /// As [`Connection::handle_bytes`].
    pub fn handle_read(&mut self) -> Result<(), ProtocolError> {
        self.read_untouched = false;
        if self.discards_input() {
            // Messages deferred before the input ended are still to be taken.
            self.read.truncate(usize::from(self.deferred));
            return Ok(());
        }
        self.process().inspect_err(|e| self.fail(e))
    }

    /// Reports the end of the input stream.
    ///
    /// # Errors
    /// [`ProtocolError::AbnormalClosure`] (close code 1006) when the stream ended before the
    /// close handshake finished.
    pub fn handle_eof(&mut self) -> Result<(), ProtocolError> {
        if self.state == CloseState::Closed || self.failed {
            return Ok(());
        }
        if self.close_received {
            // The peer closed and went; its close event may still wait in the queue, but
            // there is nobody left to reply to.
            self.close_pending = false;
            self.state = CloseState::Closed;
            return Ok(());
        }
        self.failed = true;
        self.state = CloseState::Closed;
        self.message = None;
        self.frame = None;
        Err(ProtocolError::AbnormalClosure)
    }

    /// The next event, if any.
    ///
    /// Taking the peer's close event queues our reply; finding no more events after a
    /// protocol error queues the close frame that reports it (see the ordering rule in the
    /// type's documentation).
    // Always inlined (and `Inner::next_event` in the driver, its caller): an `Event` is 48
    // bytes, returned through memory by each call, and inlined the copies fold away
    // (docs/performance.md, eleventh pass).
    #[inline(always)]
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.deferred > 0 {
            return Some(Event::Message(self.take_deferred()));
        }
        let event = self.events.pop_front();
        match &event {
            Some(Event::Close(_)) if self.close_pending => {
                self.close_pending = false;
                self.answer_close();
            }
            None => {
                if let Some(error) = self.failure_pending.take() {
                    self.apply_failure(&error);
                }
            }
            _ => {}
        }
        event
    }

    /// Queues a text or binary message, compressed when permessage-deflate was negotiated.
    ///
    /// # Errors
    /// [`SendError::Closed`] once we sent a close frame or the connection failed.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::TEXT, t.into_bytes()),
            Message::Binary(b) => (OpCode::BINARY, b),
        };
        let min = self
            .config
            .deflate
            .as_ref()
            .map_or(0, |d| d.min_compress_size);
        match &mut self.codec {
            Some(codec) if payload.len() >= min => {
                let mut compressed = BytesMut::with_capacity(payload.len() / 2 + 16);
                codec.compress(&payload, &mut compressed)?;
                self.queue_data(opcode, true, compressed.freeze());
            }
            // The common case, a small message in one frame, straight into the tail: what
            // `queue_data` and `queue_frame` would do, without passing the payload down
            // through both.
            _ if payload.len() <= INLINE_PAYLOAD.min(self.config.max_send_frame_size) => {
                let mask = self.mask();
                encode_frame(self.out.tail(), true, false, opcode, mask, &payload);
            }
            _ => self.queue_data(opcode, false, payload),
        }
        Ok(())
    }

    /// Queues a message prepared once for many connections.
    ///
    /// Without compression on this connection the pre-encoded frame is queued by reference;
    /// otherwise the message is compressed for this connection as [`Connection::send`] would.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn send_prepared(&mut self, frame: &PreparedFrame) -> Result<(), SendError> {
        if self.role != Role::Server {
            return self.send(frame.message.clone());
        }
        // Borrowed, not cloned: a small frame behind other output is copied into the tail,
        // and a clone would be one more increment and decrement of the shared count (one
        // cache line for all subscribers) per delivery.
        let bytes = match self.codec.as_deref() {
            None if frame.message.len() <= self.config.max_send_frame_size => Some(&frame.frame),
            None => None,
            Some(codec) => {
                // Without our context takeover every connection with the same window
                // compresses a message to the same bytes: use the shared copy.
                let deflate = self.config.deflate.as_ref();
                let min = deflate.map_or(0, |d| d.min_compress_size);
                let level = deflate.map_or(6, |d| d.compression_level);
                match codec.standalone_window() {
                    Some(bits) if frame.message.len() >= min => frame
                        .deflated(bits, level)
                        .filter(|(_, payload_len)| *payload_len <= self.config.max_send_frame_size)
                        .map(|(bytes, _)| bytes),
                    Some(_) if frame.message.len() <= self.config.max_send_frame_size => {
                        Some(&frame.frame)
                    }
                    _ => None,
                }
            }
        };
        let Some(bytes) = bytes else {
            return self.send(frame.message.clone());
        };
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        // Alone in the queue, the shared frame is written from where it is: no copy, and no
        // buffer for a connection that sends one frame at a time. Behind other output, a
        // small one joins the tail, so a batch goes out in few slices.
        if self.out.len() > 0 && bytes.len() <= INLINE_PAYLOAD {
            self.out.tail().extend_from_slice(bytes);
        } else {
            self.out.push(bytes.clone());
        }
        Ok(())
    }

    /// Queues a ping.
    ///
    /// # Errors
    /// [`SendError::ControlFrameTooLong`] over 125 bytes; [`SendError::Closed`] after close.
    pub fn ping(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.queue_control(OpCode::PING, &payload)
    }

    /// Queues an unsolicited pong (a unidirectional heartbeat, RFC 6455 §5.5.3). Pongs that
    /// answer pings are sent by the core itself.
    ///
    /// # Errors
    /// As [`Connection::ping`].
    pub fn pong(&mut self, payload: Bytes) -> Result<(), SendError> {
        self.queue_control(OpCode::PONG, &payload)
    }

    /// Starts the closing handshake; `None` sends a close frame without a status code.
    ///
    /// # Errors
    /// [`SendError::InvalidCloseCode`] for codes that may not be sent,
    /// [`SendError::ControlFrameTooLong`] for reasons over 123 bytes, [`SendError::Closed`]
    /// when already closing.
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        if let Some(f) = &frame {
            if !f.code.is_sendable() {
                return Err(SendError::InvalidCloseCode(f.code.as_u16()));
            }
            if f.reason.len() > MAX_CONTROL_PAYLOAD - 2 {
                return Err(SendError::ControlFrameTooLong);
            }
        }
        self.queue_close(frame.as_ref());
        self.state = CloseState::Sent;
        Ok(())
    }

    /// Whether bytes wait to be written.
    pub fn has_pending_transmit(&self) -> bool {
        self.out.len() > 0
    }

    /// How many bytes wait to be written; drivers apply backpressure on this.
    pub fn pending_transmit_len(&self) -> usize {
        self.out.len()
    }

    /// Moves every pending byte into `out` and returns how many there were.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> usize {
        self.out.drain_into(out)
    }

    /// Fills `dst` with slices of the pending bytes, in order, for a vectored write; returns
    /// how many slices were filled. Follow with [`Connection::advance_transmit`].
    pub fn transmit_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.out.slices(dst)
    }

    /// Marks `n` pending bytes as written.
    pub fn advance_transmit(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// The close handshake is over, or the connection failed: nothing more will be read,
    /// and once the pending bytes are written the transport can be closed.
    pub fn is_closed(&self) -> bool {
        self.state == CloseState::Closed
    }

    /// We sent a close frame and wait for the peer's.
    pub fn is_closing(&self) -> bool {
        self.state == CloseState::Sent
    }

    /// Whether messages may still be queued.
    pub fn can_send(&self) -> bool {
        self.state == CloseState::Open
    }

    /// The peer's close frame, once received (`None` also when it carried no code).
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        self.peer_close.as_deref()
    }

    /// Whether the peer's close frame has been received.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Gives up buffers that hold nothing, so an idle connection keeps only its fixed state.
    /// Call it when the driver goes idle (for example before waiting for the next read).
    ///
    /// The read and output buffers go to a small per-thread pool, where the next connection
    /// that needs one on this thread (often this one, at its next message) finds it.
    pub fn release_idle_memory(&mut self) {
        self.unreserve_read();
        self.out.release_if_empty();
        self.events.release_if_empty();
    }

    // ---- input -------------------------------------------------------------------------

    /// No event waits to be taken (deferred messages included).
    fn nothing_waiting(&self) -> bool {
        self.deferred == 0 && self.events.is_empty()
    }

    fn discards_input(&self) -> bool {
        self.failed || self.close_received
    }

    fn process(&mut self) -> Result<(), ProtocolError> {
        loop {
            if self.close_received {
                // Nothing may follow a close frame (RFC 6455 §5.5.1).
                self.read.clear();
                return Ok(());
            }
            if self.frame.is_none() {
                self.check_small_messages();
                if self.deferred > 0 {
                    // Whole small messages and nothing else, behind nothing still queued,
                    // stay in the buffer and are handed out from it: no event is built,
                    // stored and taken back for them. Otherwise they are queued, so the
                    // general path below starts at the front of the buffer as usual.
                    if usize::from(self.deferred) == self.read.len() && self.events.is_empty() {
                        return Ok(());
                    }
                    self.queue_deferred();
                    continue;
                }
            }
            let mut frame = match self.frame.take() {
                Some(frame) => *frame,
                None => match FrameHeader::parse(&self.read)? {
                    None => return Ok(()),
                    Some((header, header_len)) => {
                        self.check_header(&header)?;
                        // check_header bounded the length by max_frame_size: it fits in usize.
                        let len = header.payload_len as usize;
                        if self.message.is_none()
                            && header.fin
                            && !header.rsv1()
                            && !header.opcode.is_control()
                            && self.read.len() - header_len >= len
                        {
                            // The common case, a whole, unfragmented, uncompressed message
                            // in the buffer: header and payload leave it in one step.
                            let payload =
                                take_payload(&mut self.read, header_len, len, header.mask);
                            self.events
                                .push_back(Event::Message(data_message(header.opcode, payload)?));
                            continue;
                        }
                        self.read.advance(header_len);
                        InFrame {
                            header,
                            done: 0,
                            begun: false,
                        }
                    }
                },
            };
            let header = frame.header;
            // check_header bounded the length by max_frame_size, so it fits in usize.
            let len = header.payload_len as usize;

            if header.opcode.is_control() {
                if self.read.len() < len {
                    self.frame = Some(Box::new(frame));
                    return Ok(());
                }
                let payload = take_payload(&mut self.read, 0, len, header.mask);
                self.on_control(header.opcode, payload)?;
                continue;
            }

            if !frame.begun {
                // Once per frame, even when its payload spans several reads.
                frame.begun = true;
                let arrived = self.read.len();
                self.begin_frame(&header, arrived);
            }
            let take = (len - frame.done).min(self.read.len());
            if take > 0 || len == 0 {
                let mut chunk = self.read.split_to(take);
                if let Some(mask) = header.mask {
                    apply_mask(&mut chunk, mask, frame.done);
                }
                frame.done += take;
                self.absorb(&chunk, header.fin && frame.done == len)?;
            }
            if frame.done < len {
                self.frame = Some(Box::new(frame));
                return Ok(());
            }
            if header.fin {
                self.finish_message()?;
            }
        }
    }

    /// The common case of [`Connection::process`], checked without building a
    /// [`FrameHeader`]: no message in progress, and whole, final, uncompressed text or binary
    /// frames of at most 125 bytes, masked as the peer's role requires, behind the
    /// `deferred` bytes at the front of the buffer. Such a frame breaks none of the rules
    /// of [`Connection::check_header`] when it is within the configured limits, which are
    /// checked here too. Each is unmasked in place and its text checked for UTF-8, then
    /// counted into `deferred`. Stops at anything else (a frame whose payload has not all
    /// arrived, one that fails a rule, text that is not UTF-8: that one is masked back, for
    /// the general path to report).
    fn check_small_messages(&mut self) {
        let config = &*self.config;
        if self.message.is_some() || config.max_fragments == 0 {
            return;
        }
        // 125: the longest payload a 7-bit length gives.
        let max = config.max_frame_size.min(config.max_message_size).min(125);
        let masked = self.role == Role::Server;
        let header_len = if masked { 6 } else { 2 };
        let buf = &mut self.read[..];
        let mut at = usize::from(self.deferred);
        while let [b0 @ (0x81 | 0x82), b1, ..] = buf[at..] {
            let len = usize::from(b1 & 0x7F);
            if (b1 & 0x80 != 0) != masked || len > max {
                break;
            }
            let end = at + header_len + len;
            if end > usize::from(u16::MAX) {
                break;
            }
            let Some(frame) = buf.get_mut(at..end) else {
                break;
            };
            let (header, payload) = frame.split_at_mut(header_len);
            let key = masked.then(|| [header[2], header[3], header[4], header[5]]);
            if let Some(key) = key {
                apply_mask(payload, key, 0);
            }
            if b0 == 0x81 && simdutf8::basic::from_utf8(payload).is_err() {
                if let Some(key) = key {
                    apply_mask(payload, key, 0);
                }
                break;
            }
            at = end;
        }
        // At most u16::MAX, checked in the loop.
        self.deferred = at as u16;
    }

    /// The first deferred message (`deferred` > 0), out of the buffer. Copied, as
    /// `take_payload` copies small payloads, so a message kept does not pin the buffer.
    #[inline(always)]
    fn take_deferred(&mut self) -> Message {
        let header_len = if self.role == Role::Server { 6 } else { 2 };
        let text = self.read[0] == 0x81;
        let len = usize::from(self.read[1] & 0x7F);
        let payload = Bytes::from(self.read[header_len..header_len + len].to_vec());
        self.read.advance(header_len + len);
        // The frame was counted into `deferred` whole, so it is at most that.
        self.deferred -= (header_len + len) as u16;
        if text {
            Message::Text(Utf8Bytes::from_bytes_unchecked(payload))
        } else {
            Message::Binary(payload)
        }
    }

    /// Queues every deferred message, in order, ahead of what follows them.
    fn queue_deferred(&mut self) {
        while self.deferred > 0 {
            let message = self.take_deferred();
            self.events.push_back(Event::Message(message));
        }
    }

    /// Every rule that can be decided from the header alone, so a bad frame fails before its
    /// payload is buffered.
    fn check_header(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        let allowed_rsv = if self.codec.is_some() { 0b100 } else { 0 };
        if h.rsv & !allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        if !h.opcode.is_known() {
            return Err(ProtocolError::UnknownOpcode(h.opcode.as_u8()));
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.rsv1() {
                return Err(ProtocolError::InvalidCompressedFrame);
            }
            return Ok(());
        }
        let (compressed, buffered, fragments) = match (&self.message, h.opcode) {
            (None, OpCode::CONTINUATION) => return Err(ProtocolError::UnexpectedContinuation),
            (Some(_), OpCode::TEXT | OpCode::BINARY) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            (Some(_), _) if h.rsv1() => return Err(ProtocolError::InvalidCompressedFrame),
            (Some(m), _) => (m.compressed, m.buf.len(), m.fragments),
            (None, _) => (h.rsv1(), 0, 0),
        };
        if h.payload_len > self.config.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooBig {
                size: h.payload_len,
                max: self.config.max_frame_size,
            });
        }
        // Uncompressed sizes are known up front; compressed ones are checked while
        // inflating.
        if !compressed && buffered as u64 + h.payload_len > self.config.max_message_size as u64 {
            return Err(ProtocolError::MessageTooBig {
                max: self.config.max_message_size,
            });
        }
        if fragments >= self.config.max_fragments {
            return Err(ProtocolError::TooManyFragments {
                max: self.config.max_fragments,
            });
        }
        Ok(())
    }

    /// Counts a frame into the message in progress, starting one for a first frame.
    /// `arrived` is how much of its payload is already buffered.
    fn begin_frame(&mut self, h: &FrameHeader, arrived: usize) {
        match &mut self.message {
            Some(m) => m.fragments += 1,
            None => {
                // Room for what has arrived, not for what the header announces: a peer that
                // announces 16 MiB and sends one byte must not make us allocate 16 MiB.
                let capacity = if h.rsv1() {
                    0
                } else {
                    arrived.min(h.payload_len as usize)
                };
                self.message = Some(Box::new(Assembly {
                    text: h.opcode == OpCode::TEXT,
                    compressed: h.rsv1(),
                    buf: BytesMut::with_capacity(capacity),
                    fragments: 1,
                    utf8: Utf8Validator::new(),
                }));
            }
        }
    }

    /// Adds a chunk of (unmasked) payload to the message in progress; `last` marks the end
    /// of the message's final frame.
    fn absorb(&mut self, chunk: &[u8], last: bool) -> Result<(), ProtocolError> {
        let max = self.config.max_message_size;
        let Some(m) = self.message.as_deref_mut() else {
            return Ok(());
        };
        let start = m.buf.len();
        if m.compressed {
            match self.codec.as_deref_mut() {
                Some(codec) => codec.decompress(chunk, last, &mut m.buf, max)?,
                None => return Err(ProtocolError::ReservedBits),
            }
        } else {
            m.buf.extend_from_slice(chunk);
        }
        if m.text {
            m.utf8
                .feed(&m.buf[start..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    fn finish_message(&mut self) -> Result<(), ProtocolError> {
        let Some(mut m) = self.message.take() else {
            return Ok(());
        };
        let payload = std::mem::take(&mut m.buf).freeze();
        let message = if m.text {
            m.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            Message::Text(Utf8Bytes::from_bytes_unchecked(payload))
        } else {
            Message::Binary(payload)
        };
        self.events.push_back(Event::Message(message));
        Ok(())
    }

    fn on_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), ProtocolError> {
        match opcode {
            OpCode::PING => {
                if self.state == CloseState::Open {
                    self.encode_control(OpCode::PONG, &payload);
                }
                self.events.push_back(Event::Ping(payload));
            }
            OpCode::PONG => self.events.push_back(Event::Pong(payload)),
            _ => {
                let frame = parse_close_payload(payload)?;
                self.close_received = true;
                self.message = None;
                self.peer_close = frame.clone().map(Box::new);
                let answer_now = self.nothing_waiting();
                self.events.push_back(Event::Close(frame));
                if answer_now {
                    self.answer_close();
                } else {
                    self.close_pending = true;
                }
            }
        }
        Ok(())
    }

    /// Replies to the peer's close frame unless we sent ours already.
    fn answer_close(&mut self) {
        if self.state == CloseState::Open {
            // Echo the status code, as endpoints typically do (RFC 6455 §5.5.1).
            let reply = self
                .peer_close
                .as_ref()
                .map(|f| CloseFrame::new(f.code, ""));
            self.queue_close(reply.as_ref());
        }
        self.state = CloseState::Closed;
    }

    /// Fails the connection (RFC 6455 §7.1.7): stop reading at once, and once the events
    /// before the error are taken, queue a close frame carrying the error's code.
    fn fail(&mut self, error: &ProtocolError) {
        self.failed = true;
        self.frame = None;
        self.message = None;
        self.read.truncate(usize::from(self.deferred));
        if self.nothing_waiting() {
            self.apply_failure(error);
        } else {
            self.failure_pending = Some(Box::new(error.clone()));
        }
    }

    fn apply_failure(&mut self, error: &ProtocolError) {
        if self.state == CloseState::Open {
            let code = error.close_code();
            if code.is_sendable() {
                let reason = truncate_reason(&error.to_string());
                self.queue_close(Some(&CloseFrame::new(code, reason)));
            }
        }
        self.state = CloseState::Closed;
    }

    // ---- output ------------------------------------------------------------------------

    fn mask(&self) -> Option<[u8; 4]> {
        match self.role {
            Role::Client => Some(mask_key()),
            Role::Server => None,
        }
    }

    fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlFrameTooLong);
        }
        self.encode_control(opcode, payload);
        Ok(())
    }

    fn encode_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.mask();
        encode_frame(self.out.tail(), true, false, opcode, mask, payload);
    }

    fn queue_close(&mut self, frame: Option<&CloseFrame>) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let len = match frame {
            Some(f) => {
                payload[..2].copy_from_slice(&f.code.as_u16().to_be_bytes());
                let reason = f.reason.as_bytes();
                let n = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
                payload[2..2 + n].copy_from_slice(&reason[..n]);
                2 + n
            }
            None => 0,
        };
        self.encode_control(OpCode::CLOSE, &payload[..len]);
    }

    fn queue_data(&mut self, opcode: OpCode, compressed: bool, mut payload: Bytes) {
        let max = self.config.max_send_frame_size;
        if payload.len() <= max {
            self.queue_frame(true, compressed, opcode, payload);
            return;
        }
        let mut opcode = opcode;
        let mut rsv1 = compressed;
        loop {
            let chunk = payload.split_to(max.min(payload.len()));
            let fin = payload.is_empty();
            self.queue_frame(fin, rsv1, opcode, chunk);
            if fin {
                return;
            }
            opcode = OpCode::CONTINUATION;
            rsv1 = false;
        }
    }

    fn queue_frame(&mut self, fin: bool, rsv1: bool, opcode: OpCode, payload: Bytes) {
        let mask = self.mask();
        if mask.is_some() || payload.len() <= INLINE_PAYLOAD {
            encode_frame(self.out.tail(), fin, rsv1, opcode, mask, &payload);
        } else {
            write_header(self.out.tail(), fin, rsv1, opcode, None, payload.len());
            self.out.push(payload);
        }
    }
}

/// A whole text or binary message's payload as a [`Message`], text checked for UTF-8.
fn data_message(opcode: OpCode, payload: Bytes) -> Result<Message, ProtocolError> {
    if opcode == OpCode::TEXT {
        if simdutf8::basic::from_utf8(&payload).is_err() {
            return Err(ProtocolError::InvalidUtf8);
        }
        Ok(Message::Text(Utf8Bytes::from_bytes_unchecked(payload)))
    } else {
        Ok(Message::Binary(payload))
    }
}

/// Takes a whole payload of `len` bytes that starts `skip` bytes into `read` (after a header
/// still there), removes both from `read`, and unmasks the payload.
///
/// Small payloads are copied out, so a short message the application keeps (in a history,
/// say) does not pin the whole read buffer; large ones are split off without copying.
fn take_payload(read: &mut BytesMut, skip: usize, len: usize, mask: Option<[u8; 4]>) -> Bytes {
    if len <= INLINE_PAYLOAD {
        // A `Vec` of exactly `len` becomes a `Bytes` without the round trip through
        // `BytesMut`'s representation.
        let mut payload = read[skip..skip + len].to_vec();
        read.advance(skip + len);
        if let Some(mask) = mask {
            apply_mask(&mut payload, mask, 0);
        }
        return Bytes::from(payload);
    }
    read.advance(skip);
    let mut payload = read.split_to(len);
    if let Some(mask) = mask {
        apply_mask(&mut payload, mask, 0);
    }
    payload.freeze()
}

fn parse_close_payload(payload: Bytes) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::InvalidClosePayload),
        _ => {
            let code = CloseCode::new(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.as_u16()));
            }
            let reason = Utf8Bytes::try_from_bytes(payload.slice(2..))
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Cuts a reason to the 123 bytes a close frame can carry, at a character boundary.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// A fresh masking key from the operating system's CSPRNG (RFC 6455 §5.3 asks for a strong
/// source of entropy), drawn from a per-thread pool so it costs one syscall per 64 frames.
fn mask_key() -> [u8; 4] {
    use std::cell::RefCell;
    const POOL: usize = 256;
    thread_local! {
        static KEYS: RefCell<([u8; POOL], usize)> = const { RefCell::new(([0; POOL], POOL)) };
    }
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        let (pool, pos) = &mut *keys;
        if *pos + 4 > POOL {
            getrandom::fill(pool).expect("the OS random number generator is available");
            *pos = 0;
        }
        let key = [pool[*pos], pool[*pos + 1], pool[*pos + 2], pool[*pos + 3]];
        *pos += 4;
        key
    })
}

/// A compressed frame and its payload length, made on first use (`None` inside: compression
/// failed).
type DeflatedSlot = std::sync::OnceLock<Option<(Bytes, usize)>>;

/// A server-role frame encoded once and sent on many connections (hub fan-out): the
/// payload is framed once and shared by reference. Connections with permessage-deflate and
/// no server context takeover share one compressed copy per window size, made by the first
/// of them (with its compression level) and kept with the frame.
#[derive(Clone, Debug)]
pub struct PreparedFrame {
    message: Message,
    frame: Bytes,
    /// Compressed frames for windows 9..=15, and their payload sizes; `None` inside when
    /// compression failed.
    deflated: std::sync::Arc<[DeflatedSlot; 7]>,
}

impl PreparedFrame {
    /// Frames `message` once (unmasked, uncompressed, one frame).
    pub fn new(message: Message) -> Self {
        let opcode = if message.is_text() {
            OpCode::TEXT
        } else {
            OpCode::BINARY
        };
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, true, false, opcode, None, message.as_bytes());
        Self {
            message,
            frame: buf.freeze(),
            deflated: Default::default(),
        }
    }

    /// The compressed frame for a compressor of `window_bits` (9..=15) started afresh, and
    /// its payload length; compressed on first use.
    fn deflated(&self, window_bits: u8, level: u32) -> Option<&(Bytes, usize)> {
        let slot = &self.deflated[usize::from(window_bits.clamp(9, 15) - 9)];
        slot.get_or_init(|| {
            let mut payload = BytesMut::with_capacity(self.message.len() / 2 + 16);
            DeflateCodec::compress_standalone(
                self.message.as_bytes(),
                window_bits,
                level,
                &mut payload,
            )
            .ok()?;
            let opcode = if self.message.is_text() {
                OpCode::TEXT
            } else {
                OpCode::BINARY
            };
            let mut buf = BytesMut::with_capacity(payload.len() + 10);
            encode_frame(&mut buf, true, true, opcode, None, &payload);
            Some((buf.freeze(), payload.len()))
        })
        .as_ref()
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The encoded frame.
    pub fn frame_bytes(&self) -> &Bytes {
        &self.frame
    }
}

#[cfg(test)]
mod tests;
