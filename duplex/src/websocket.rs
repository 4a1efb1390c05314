//! [`WebSocket`]: a connection over any tokio byte stream.

use crate::config::WebSocketConfig;
use crate::driver::{queue, Access, Outbound, Shared};
use crate::error::Error;
use crate::split::{WsReader, WsWriter};
use bytes::Bytes;
use duplex_proto::connection::PreparedFrame;
use duplex_proto::{CloseCode, CloseFrame, Connection, Event, Message, Role};
use futures_core::Stream;
use futures_sink::Sink;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};

/// A WebSocket connection after the opening handshake, over any `AsyncRead + AsyncWrite`
/// stream (TCP, TLS, an upgraded hyper connection, an in-memory pipe).
///
/// The driver answers pings, replies to close frames and reports protocol violations to the
/// peer by itself; the application sees only messages. Receive with [`recv`](Self::recv) (or
/// as a [`Stream`]), send with [`send`](Self::send) (or as a [`Sink`]), and end with
/// [`close`](Self::close). To read and write from different tasks, [`split`](Self::split) it.
///
/// Writes are buffered up to [`WebSocketConfig::write_buffer_high_water`]: [`feed`](Self::feed)
/// queues without writing, [`flush`](Self::flush) writes everything queued in as few system
/// calls as the transport allows (one vectored write when it supports them).
pub struct WebSocket<S> {
    /// Owned alone, so no lock is taken (see `Shared::get_mut`); shared by the halves
    /// once split.
    pub(crate) shared: Box<Shared<S>>,
    pub(crate) config: Arc<WebSocketConfig>,
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("role", &self.shared.lock().role())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream on which the opening handshake already happened elsewhere, without
    /// extensions. Only the driver settings and [`WebSocketConfig::proto`] limits are used.
    ///
    /// From here on the connection is the only reader of `stream`: after a read finds
    /// nothing, the next read waits for the stream's own wake-up instead of polling it
    /// again. A stream must therefore read only from `poll_read` (TCP, Unix sockets and
    /// rustls after its handshake do; a TLS stream whose writes may read, or a handshake
    /// still running inside `poll_write`, does not qualify), and nothing else may poll it
    /// for reading (see [`with_transport`](Self::with_transport)).
    pub fn from_raw(stream: S, role: Role, config: WebSocketConfig) -> Self {
        let conn = Connection::new(role, crate::config::shared_proto(&config.proto));
        Self::from_connection(stream, conn, config)
    }

    /// Wraps a stream and a [`Connection`] built from a handshake done elsewhere (for example
    /// with negotiated permessage-deflate parameters). The connection's own [`Config`]
    /// applies; `config` gives the driver settings (buffering, timers).
    ///
    /// [`Config`]: duplex_proto::Config
    pub fn from_connection(stream: S, conn: Connection, config: WebSocketConfig) -> Self {
        Self::from_parts(stream, conn, Arc::new(config), &[])
    }

    /// After a handshake: `leftover` are bytes that arrived right behind the handshake head.
    pub(crate) fn from_parts(
        stream: S,
        mut conn: Connection,
        config: Arc<WebSocketConfig>,
        leftover: &[u8],
    ) -> Self {
        let pending_error = if leftover.is_empty() {
            None
        } else {
            conn.handle_bytes(leftover).err()
        };
        Self {
            shared: Box::new(Shared::new(
                stream,
                conn,
                Arc::clone(&config),
                pending_error,
            )),
            config,
        }
    }

    /// Receives the next message.
    ///
    /// Returns `None` once the connection is finished: after a clean close handshake (the
    /// close reply is flushed and the transport shut down before), and after an error has
    /// been returned once. While waiting it answers pings, flushes pongs and close replies,
    /// and sends keepalive pings ([`WebSocketConfig::ping_interval`]).
    ///
    /// # Errors
    /// [`Error::Protocol`] when the peer broke the protocol (the close frame saying why was
    /// sent) or vanished without a close frame ([`ProtocolError::AbnormalClosure`]),
    /// [`Error::Io`], [`Error::Timeout`] for the idle and close timeouts.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is only taken from the connection when it is returned.
    ///
    /// [`ProtocolError::AbnormalClosure`]: duplex_proto::ProtocolError::AbnormalClosure
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        let inner = self.shared.get_mut();
        poll_fn(|cx| inner.poll_recv_message(cx)).await
    }

    /// A message that has already arrived, without waiting and without reading from the
    /// transport: one decoded from the same read as the last message [`recv`](Self::recv)
    /// returned, say. `None` when there is none (or the connection is finishing); then
    /// `recv` waits for the next one, and reports errors and the end of the connection.
    ///
    /// Like [`recv`](Self::recv), it passes over pings, pongs and the peer's close (the
    /// library answers them): an application that watches those with
    /// [`recv_event`](Self::recv_event) should not mix in `try_recv`.
    ///
    /// An application that answers messages can feed its answers to every message that
    /// arrived together and flush once, so a pipelined burst is answered in one write:
    ///
    /// ```no_run
    /// # async fn run(mut ws: duplex::WebSocket<tokio::net::TcpStream>) -> Result<(), duplex::Error> {
    /// while let Some(message) = ws.recv().await {
    ///     ws.feed(message?).await?;
    ///     while let Some(message) = ws.try_recv() {
    ///         ws.feed(message).await?;
    ///     }
    ///     ws.flush().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_recv(&mut self) -> Option<Message> {
        self.shared.get_mut().try_recv()
    }

    /// Receives the next message or control frame: as [`recv`](Self::recv), but also
    /// returns the peer's pings ([`Event::Ping`], already answered), pongs ([`Event::Pong`],
    /// for example to time a [`ping`](Self::ping)) and close frame ([`Event::Close`], already
    /// replied to; keep calling until `None` to finish the close handshake).
    ///
    /// Use it instead of `recv`, not beside it: whichever call reads a frame consumes it, and
    /// `recv` drops control frames.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    ///
    /// # Cancel safety
    /// Cancel safe: an event is only taken from the connection when it is returned.
    pub async fn recv_event(&mut self) -> Option<Result<Event, Error>> {
        let inner = self.shared.get_mut();
        poll_fn(|cx| inner.poll_recv_event(cx)).await
    }

    /// Sends a message and flushes it (and anything fed before it).
    ///
    /// Waits first while more than [`WebSocketConfig::write_buffer_high_water`] bytes are
    /// queued, so a slow peer slows the sender down instead of growing memory.
    ///
    /// # Errors
    /// [`Error::Send`] after we started closing, [`Error::ConnectionClosed`] once the
    /// connection is finished, [`Error::Io`].
    ///
    /// # Cancel safety
    /// If cancelled while waiting for room, nothing was queued; if cancelled while flushing,
    /// the message is queued and goes out with the next flush or receive.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        queue(self.shared.get_mut(), [Outbound::Message(message)], true).await
    }

    /// Queues a message without flushing; waits only while the queue is above the high-water
    /// mark. Follow a burst of feeds with [`flush`](Self::flush).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    /// Cancel safe: the message is queued only when the future completes.
    pub async fn feed(&mut self, message: Message) -> Result<(), Error> {
        queue(self.shared.get_mut(), [Outbound::Message(message)], false).await
    }

    /// Queues a frame prepared once for many connections (fan-out) and flushes it.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_prepared(&mut self, frame: &PreparedFrame) -> Result<(), Error> {
        queue(self.shared.get_mut(), [Outbound::Prepared(frame)], true).await
    }

    /// Queues a prepared frame without flushing; waits only while the queue is above the
    /// high-water mark, as [`feed`](Self::feed).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    /// Cancel safe: the frame is queued only when the future completes.
    pub async fn feed_prepared(&mut self, frame: &PreparedFrame) -> Result<(), Error> {
        queue(self.shared.get_mut(), [Outbound::Prepared(frame)], false).await
    }

    /// Queues every item of `items` in order, each after waiting for room as
    /// [`feed`](Self::feed) does, then flushes them: a batch (say, what a fan-out queue
    /// holds for this connection) is queued in one poll instead of one per message. The
    /// iterator runs at most one item ahead of what is queued, so a slow peer holds back the
    /// producing of the rest. An empty batch is a [`flush`](Self::flush).
    ///
    /// # Errors
    /// As [`send`](Self::send); on an error the items not yet queued are dropped.
    ///
    /// # Cancel safety
    /// The items queued before cancellation stay queued and go out with the next flush;
    /// the item taken and waiting for room, and the rest, are dropped with the iterator.
    ///
    /// # Example
    /// ```no_run
    /// # async fn push(sockets: &mut [duplex::WebSocket<tokio::net::TcpStream>]) -> Result<(), duplex::Error> {
    /// use duplex::{Message, Outbound, PreparedFrame};
    ///
    /// // Framed (and compressed, if negotiated without context takeover) once, for everyone.
    /// let price = PreparedFrame::new(Message::text(r#"{"BTC-USD":97012.5}"#));
    /// for ws in sockets.iter_mut() {
    ///     ws.send_all([Outbound::Prepared(&price), Outbound::Message(Message::text("tick"))])
    ///         .await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_all<'s, 'a, I>(
        &'s mut self,
        items: I,
    ) -> impl Future<Output = Result<(), Error>> + use<'s, 'a, I, S>
    where
        I: IntoIterator<Item = Outbound<'a>>,
    {
        queue(self.shared.get_mut(), items, true)
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::ConnectionClosed`] when bytes remain but the connection is
    /// finished.
    ///
    /// # Cancel safety
    /// Cancel safe: what was not written stays queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let inner = self.shared.get_mut();
        poll_fn(|cx| inner.poll_flush(cx)).await
    }

    /// Sends a ping (at most 125 bytes of payload) and flushes it. The pong counts as
    /// activity for [`WebSocketConfig::idle_timeout`]; [`recv_event`](Self::recv_event)
    /// returns it, [`recv`](Self::recv) does not.
    ///
    /// # Errors
    /// As [`send`](Self::send); [`Error::Send`] for a payload over 125 bytes.
    pub async fn ping(&mut self, payload: Bytes) -> Result<(), Error> {
        self.shared.get_mut().start_ping(payload)?;
        self.flush().await
    }

    /// Closes cleanly: sends a close frame with `code` and `reason`, waits up to
    /// [`WebSocketConfig::close_timeout`] for the peer's close frame (discarding messages
    /// that arrive meanwhile), then shuts the transport down.
    ///
    /// Calling it when the connection is already closing or finished just waits for the end.
    ///
    /// # Errors
    /// [`Error::Send`] for a code that may not be sent or a reason over 123 bytes,
    /// [`Error::Timeout`] when the peer did not answer in time (the transport is shut down
    /// anyway), or the error that ended the connection.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let inner = self.shared.get_mut();
        inner.start_close(Some(CloseFrame::new(code, reason)))?;
        close_with_deadline(inner, &self.config, true).await
    }

    /// Splits into a reader and a writer that may be used from different tasks.
    ///
    /// Pings keep being answered by the reader while the writer is idle or blocked; the
    /// writer's [`close`](WsWriter::close) relies on the reader to see the peer's close frame
    /// (or reads itself once the reader is dropped).
    pub fn split(self) -> (WsReader<S>, WsWriter<S>) {
        let shared: Arc<Shared<S>> = Arc::from(self.shared);
        (
            WsReader::new(Arc::clone(&shared)),
            WsWriter::new(shared, self.config),
        )
    }

    /// The peer's close frame, once received (`None` also when it carried no status code).
    pub fn close_frame(&self) -> Option<CloseFrame> {
        self.shared.lock().close_frame()
    }

    /// Whether the connection is finished (closed, failed or timed out).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_finished()
    }

    /// Bytes queued for the transport.
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().queued()
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.shared.lock().role()
    }

    /// The configuration this connection runs with.
    pub fn config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// Calls `f` with the transport: to read its peer address or its TLS session, say. The
    /// connection's state is locked meanwhile, so keep `f` short. Do not poll the transport
    /// for reading from `f` (`poll_read_ready`, `poll_peek` and the like): that would take
    /// the connection's read registration, and its reads would wait for a wake-up that
    /// never comes (see [`from_raw`](Self::from_raw)).
    pub fn with_transport<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(self.shared.lock().transport())
    }
}

/// Drives the end of a close handshake, bounded by twice the close timeout (the driver's own
/// timers normally end it after one).
pub(crate) async fn close_with_deadline<S: AsyncRead + AsyncWrite + Unpin>(
    mut access: impl Access<S>,
    config: &WebSocketConfig,
    drive_reads: bool,
) -> Result<(), Error> {
    let wait = poll_fn(|cx| access.state().poll_close(cx, drive_reads));
    let result = tokio::time::timeout(config.close_timeout.saturating_mul(2), wait).await;
    match result {
        Ok(result) => result,
        Err(_) => {
            access.state().abort();
            Err(Error::Timeout(crate::driver::CLOSE_TIMEOUT))
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.get_mut().poll_recv_message(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.get_mut().poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.shared.get_mut().start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.get_mut().poll_flush(cx)
    }

    /// Sends a `1000` close frame, then completes the close handshake as
    /// [`WebSocket::close`] does (bounded by the driver's close timer).
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let inner = self.shared.get_mut();
        inner.start_close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        inner.poll_close(cx, true)
    }
}
