//! The halves of a split [`WebSocket`](crate::WebSocket).

use crate::config::WebSocketConfig;
use crate::driver::{queue, Outbound, Shared};
use crate::error::Error;
use crate::websocket::{close_with_deadline, WebSocket};
use bytes::Bytes;
use duplex_proto::connection::PreparedFrame;
use duplex_proto::{CloseCode, CloseFrame, Event, Message};
use futures_core::Stream;
use futures_sink::Sink;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};

/// The receiving half of a split [`WebSocket`]; also answers pings and close frames.
///
/// Keep polling it (in a loop over [`recv`](Self::recv) or as a [`Stream`]) for as long as
/// the connection lives: it is the half that reads, so pongs, close replies and keepalive
/// pings depend on it.
pub struct WsReader<S> {
    shared: Arc<Shared<S>>,
}

/// The sending half of a split [`WebSocket`].
pub struct WsWriter<S> {
    shared: Arc<Shared<S>>,
    config: Arc<WebSocketConfig>,
}

impl<S> std::fmt::Debug for WsReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader").finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for WsWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsWriter").finish_non_exhaustive()
    }
}

impl<S> Drop for WsReader<S> {
    fn drop(&mut self) {
        // A writer waiting in close() must now read the peer's close frame itself.
        self.shared.reader_dropped();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsReader<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        Self { shared }
    }

    /// Receives the next message; see [`WebSocket::recv`].
    ///
    /// # Errors
    /// As [`WebSocket::recv`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.shared.lock().poll_recv_message(cx)).await
    }

    /// A message that has already arrived, without waiting; see [`WebSocket::try_recv`].
    pub fn try_recv(&mut self) -> Option<Message> {
        self.shared.lock().try_recv()
    }

    /// Receives the next message or control frame (pings, pongs, the peer's close frame);
    /// see [`WebSocket::recv_event`].
    ///
    /// # Errors
    /// As [`WebSocket::recv`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv_event(&mut self) -> Option<Result<Event, Error>> {
        poll_fn(|cx| self.shared.lock().poll_recv_event(cx)).await
    }

    /// The peer's close frame, once received.
    pub fn close_frame(&self) -> Option<CloseFrame> {
        self.shared.lock().close_frame()
    }

    /// Whether the connection is finished.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_finished()
    }

    /// Whether `writer` is the other half of this reader.
    pub fn is_pair_of(&self, writer: &WsWriter<S>) -> bool {
        Arc::ptr_eq(&self.shared, &writer.shared)
    }

    /// Puts the halves back together.
    ///
    /// # Errors
    /// Gives both halves back when they come from different connections.
    pub fn reunite(self, writer: WsWriter<S>) -> Result<WebSocket<S>, (Self, WsWriter<S>)> {
        if !self.is_pair_of(&writer) {
            return Err((self, writer));
        }
        // Dropping the reader marks it gone; the reunited socket reads again itself.
        drop(self);
        writer.shared.reader_back();
        let WsWriter { shared, config } = writer;
        // The writer now holds the only reference (the reader's is gone and the halves
        // hand theirs to no one), so the state comes back to one owner.
        let shared = Arc::try_unwrap(shared)
            .unwrap_or_else(|_| unreachable!("the halves of a socket are its only owners"));
        Ok(WebSocket {
            shared: Box::new(shared),
            config,
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsWriter<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, config: Arc<WebSocketConfig>) -> Self {
        Self { shared, config }
    }

    /// Sends a message and flushes; see [`WebSocket::send`].
    ///
    /// # Errors
    /// As [`WebSocket::send`].
    ///
    /// # Cancel safety
    /// As [`WebSocket::send`].
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        queue(&*self.shared, [Outbound::Message(message)], true).await
    }

    /// Queues a message without flushing; see [`WebSocket::feed`].
    ///
    /// # Errors
    /// As [`WebSocket::send`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn feed(&mut self, message: Message) -> Result<(), Error> {
        queue(&*self.shared, [Outbound::Message(message)], false).await
    }

    /// Queues a prepared frame and flushes; see [`WebSocket::send_prepared`].
    ///
    /// # Errors
    /// As [`WebSocket::send`].
    pub async fn send_prepared(&mut self, frame: &PreparedFrame) -> Result<(), Error> {
        queue(&*self.shared, [Outbound::Prepared(frame)], true).await
    }

    /// Queues a batch and flushes it; see [`WebSocket::send_all`]. The iterator runs while
    /// the connection is locked: calling this connection's [`WsReader`] from it would
    /// deadlock.
    ///
    /// # Errors
    /// As [`WebSocket::send_all`].
    pub fn send_all<'s, 'a, I>(
        &'s mut self,
        items: I,
    ) -> impl Future<Output = Result<(), Error>> + use<'s, 'a, I, S>
    where
        I: IntoIterator<Item = Outbound<'a>>,
    {
        queue(&*self.shared, items, true)
    }

    /// Writes everything queued; see [`WebSocket::flush`].
    ///
    /// # Errors
    /// As [`WebSocket::flush`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.shared.lock().poll_flush(cx)).await
    }

    /// Sends a ping; see [`WebSocket::ping`].
    ///
    /// # Errors
    /// As [`WebSocket::ping`].
    pub async fn ping(&mut self, payload: Bytes) -> Result<(), Error> {
        self.shared.lock().start_ping(payload)?;
        self.flush().await
    }

    /// Closes cleanly: sends the close frame, then waits (up to
    /// [`WebSocketConfig::close_timeout`]) until the reader half has seen the peer's close
    /// frame and the transport is shut down. If the reader half was dropped, this reads
    /// (and discards) by itself.
    ///
    /// # Errors
    /// As [`WebSocket::close`].
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared
            .lock()
            .start_close(Some(CloseFrame::new(code, reason)))?;
        close_with_deadline(&*self.shared, &self.config, false).await
    }

    /// Whether the connection is finished.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_finished()
    }

    /// Bytes queued for the transport.
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().queued()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsReader<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.lock().poll_recv_message(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WsWriter<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.lock().poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.shared.lock().start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.lock().poll_flush(cx)
    }

    /// Sends a `1000` close frame and waits as [`WsWriter::close`] does.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared
            .lock()
            .start_close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        self.shared.lock().poll_close(cx, false)
    }
}
