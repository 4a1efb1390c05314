//! The driver: one [`Connection`] and its transport, shared by a [`WebSocket`] or by the two
//! halves of a split one.
//!
//! Everything happens inside `poll_*` functions, whoever polls makes progress. A
//! [`WebSocket`] owns the state alone and reaches it without a lock; the two halves of a split
//! one share it under a short `std` mutex that is never held across an `.await` (see
//! [`Access`]). The transport is polled with the waker of
//! the one task that drives the connection, or with a fan-out waker once two tasks do (see
//! [`crate::wakers`]), so a reader waiting to flush a pong and a writer waiting to flush its
//! data are both woken when the socket drains.
//!
//! [`WebSocket`]: crate::WebSocket

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::wakers::{self, ReadSignal, Waiters};
use bytes::{Buf, Bytes, BytesMut};
use duplex_proto::connection::PreparedFrame;
use duplex_proto::{
    CloseCode, CloseFrame, Connection, Event, Message, ProtocolError, Role, SendError,
};
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tracing::debug;

/// First read reservation; small so idle connections stay small.
const INITIAL_READ_RESERVE: u32 = 4 << 10;
/// Largest read reservation; reached after reads keep filling the buffer.
const MAX_READ_RESERVE: u32 = 64 << 10;
/// Reserved beyond the read reservation: a frame header's worst case (RFC 6455 §5.2), so a
/// frame whose payload is as large as the reservation fits in one read with its header and
/// is taken from the read buffer without being copied into a message buffer.
const READ_HEADER_SLACK: usize = 14;
/// Below this much free space, reserve more before reading.
const MIN_READ_SPACE: usize = 1 << 10;
/// Slices handed to one vectored write. Small frames share one slice (the core coalesces
/// them), so more slices only mean more large frames per write, which already fill the
/// socket; and the array is set up on every write, so it is kept short.
const MAX_SLICES: usize = 16;
/// Non-vectored transports: small frames are copied together up to this size, larger ones
/// are written straight from the core's queue.
const COALESCE_LIMIT: usize = 64 << 10;
/// Worst-case bytes of a control frame beyond its payload (2-byte header, 4-byte mask).
const CONTROL_OVERHEAD: u32 = 6;
/// Unflushed pong bytes after which the reader stops reading until the socket drains, so a
/// peer that pings without reading cannot grow our queue without bound.
const CONTROL_BACKLOG_LIMIT: u32 = 64 << 10;

/// The coalescing buffer of a transport without vectored writes. Boxed, and only while it
/// holds bytes: most transports (TCP, rustls) write vectored and never use it, and an idle
/// connection's state stays 24 bytes smaller.
#[derive(Default)]
struct Gather(Option<Box<BytesMut>>);

impl Gather {
    fn bytes(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], |buf| &buf[..])
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.0
            .get_or_insert_with(Default::default)
            .extend_from_slice(bytes);
    }

    fn advance(&mut self, n: usize) {
        if let Some(buf) = &mut self.0 {
            buf.advance(n);
        }
    }

    fn clear(&mut self) {
        if let Some(buf) = &mut self.0 {
            buf.clear();
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |buf| buf.capacity())
    }

    /// Frees the buffer once everything in it was written.
    fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }
}

/// One item of a batch for [`WebSocket::send_all`](crate::WebSocket::send_all): a message, or
/// a frame prepared once for many connections.
#[derive(Debug)]
pub enum Outbound<'a> {
    /// A message, framed (and compressed, if negotiated) for this connection.
    Message(Message),
    /// A frame prepared once for many connections ([`PreparedFrame`]).
    Prepared(&'a PreparedFrame),
}

/// The state of one connection: owned by its [`WebSocket`](crate::WebSocket), or shared by
/// the halves of a split one.
pub(crate) struct Shared<S> {
    inner: Mutex<Inner<S>>,
}

impl<S> std::fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Where the connection is in its life.
#[derive(Clone, Copy)]
enum Phase {
    /// Messages flow.
    Open,
    /// The connection is over; flush, maybe wait for the server's FIN, shut down, then report
    /// [`Inner::error`] (nothing after a clean close).
    Finishing(Stage),
    /// Nothing more happens.
    Done,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Flush,
    WaitEof,
    Shutdown,
}

/// How the connection ended, for handles that were not the one to see it end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Clean,
    TimedOut,
    Failed,
}

pub(crate) struct Inner<S> {
    conn: Connection,
    stream: S,
    /// Buffering and timer settings, shared by the connections made with the same settings.
    config: Arc<WebSocketConfig>,
    vectored: bool,
    /// Coalescing buffer for transports without vectored writes.
    out: Gather,
    /// How much the next read asks for (4 to 64 KiB); `u32`, like `control_backlog`, to
    /// keep the state small.
    read_reserve: u32,
    phase: Phase,
    end: Option<End>,
    /// While open, a protocol error found behind events not yet delivered (applied once
    /// they are); while finishing, the error to report at the end. One field for both, and
    /// boxed, as both are rare: an idle connection's state stays small.
    error: Option<Box<Error>>,
    write_failed: bool,
    read_eof: bool,
    control_backlog: u32,
    /// Bytes were read since the idle timer was last set: `poll_idle` moves its deadline.
    /// (A flag rather than the time of the read: no clock read per read, and 15 bytes
    /// fewer.)
    read_seen: bool,
    ping_timer: Option<Pin<Box<Sleep>>>,
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// Armed while we wait for the peer's close frame, and while finishing.
    close_timer: Option<Pin<Box<Sleep>>>,
    /// Tasks waiting for the connection to end. Boxed, as only a closing connection has any:
    /// 8 bytes in every connection's state instead of a `Vec`'s 24.
    #[allow(clippy::box_collection)]
    closed_wakers: Option<Box<Vec<Waker>>>,
    reader_dropped: bool,
    /// Tasks waiting to read (and on the timers, which the reading side polls).
    read_waiters: Waiters,
    /// The transport's read side is polled with this signal's waker (see
    /// [`wakers::poll_read`]); made at the first read.
    read_signal: Option<Arc<ReadSignal>>,
    /// The last read found nothing, and `read_signal` says whether the transport woke us
    /// since.
    read_parked: bool,
    /// Tasks waiting to write.
    write_waiters: Waiters,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Shared<S> {
    /// Wraps a connection whose handshake is done. `pending_error` is the result of feeding
    /// bytes that arrived with the handshake.
    pub(crate) fn new(
        stream: S,
        conn: Connection,
        config: Arc<WebSocketConfig>,
        pending_error: Option<ProtocolError>,
    ) -> Self {
        let vectored = stream.is_write_vectored();
        Self {
            inner: Mutex::new(Inner {
                conn,
                stream,
                config,
                vectored,
                out: Gather::default(),
                read_reserve: INITIAL_READ_RESERVE,
                phase: Phase::Open,
                end: None,
                error: pending_error.map(|error| Box::new(Error::Protocol(error))),
                write_failed: false,
                read_eof: false,
                control_backlog: 0,
                read_seen: false,
                ping_timer: None,
                idle_timer: None,
                close_timer: None,
                closed_wakers: None,
                reader_dropped: false,
                read_waiters: Waiters::default(),
                read_signal: None,
                read_parked: false,
                write_waiters: Waiters::default(),
            }),
        }
    }
}

impl<S> Shared<S> {
    /// The state, for the handles that share it (the halves of a split socket).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // A panic while holding the lock leaves a consistent Connection behind (the core does
        // not panic half-way through a state change), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, for the one handle that owns it (an unsplit [`WebSocket`]): no lock, so
    /// none of the two atomic operations a lock and unlock cost, four to six times per
    /// message (docs/performance.md, eighth pass).
    ///
    /// [`WebSocket`]: crate::WebSocket
    pub(crate) fn get_mut(&mut self) -> &mut Inner<S> {
        self.inner.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn reader_back(&self) {
        self.lock().reader_dropped = false;
    }

    pub(crate) fn reader_dropped(&self) {
        let mut inner = self.lock();
        inner.reader_dropped = true;
        inner.wake_closed();
    }
}

/// Reaches a connection's state: through the lock of a [`Shared`] that split halves share,
/// or directly through the `&mut` of the one owner.
pub(crate) trait Access<S> {
    type Guard<'g>: DerefMut<Target = Inner<S>>
    where
        Self: 'g;

    fn state(&mut self) -> Self::Guard<'_>;
}

impl<S> Access<S> for &Shared<S> {
    type Guard<'g>
        = MutexGuard<'g, Inner<S>>
    where
        Self: 'g;

    fn state(&mut self) -> MutexGuard<'_, Inner<S>> {
        self.lock()
    }
}

impl<S> Access<S> for &mut Inner<S> {
    type Guard<'g>
        = &'g mut Inner<S>
    where
        Self: 'g;

    fn state(&mut self) -> &mut Inner<S> {
        self
    }
}

/// Queues each item of `items` in order, each after waiting for room; then, with `flush`,
/// writes everything queued (with no items, only that). If cancelled, what was queued stays
/// queued. `send`, `feed`, their prepared-frame forms and `send_all` of the handles. The
/// first item is taken at the first poll, as the others are.
///
/// A plain future over [`Inner::poll_queue`] rather than an `async fn`: it holds the item
/// and the iterator once (nested `async fn`s each kept their own copy), which keeps the tasks
/// that await it small.
pub(crate) fn queue<'a, S, A, I>(
    mut access: A,
    items: I,
    flush: bool,
) -> impl Future<Output = Result<(), Error>> + use<'a, S, A, I>
where
    S: AsyncRead + AsyncWrite + Unpin,
    A: Access<S>,
    I: IntoIterator<Item = Outbound<'a>>,
{
    let mut items = items.into_iter();
    let mut item = None;
    let mut started = false;
    poll_fn(move |cx| {
        if !started {
            started = true;
            item = items.next();
        }
        access.state().poll_queue(cx, &mut item, &mut items, flush)
    })
}

impl<S> Inner<S> {
    pub(crate) fn close_frame(&self) -> Option<CloseFrame> {
        self.conn.close_frame().cloned()
    }

    pub(crate) fn role(&self) -> Role {
        self.conn.role()
    }

    pub(crate) fn transport(&self) -> &S {
        &self.stream
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Inner<S> {
    pub(crate) fn poll_recv_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, Error>>> {
        self.poll_recv(cx, Deliver::Messages).map(|next| {
            next.map(|result| {
                result.map(|event| match event {
                    Event::Message(message) => message,
                    // Deliver::Messages hands out nothing else.
                    _ => unreachable!("poll_recv delivered a control event"),
                })
            })
        })
    }

    pub(crate) fn try_recv(&mut self) -> Option<Message> {
        if !matches!(self.phase, Phase::Open) {
            return None;
        }
        match self.next_event(Deliver::Messages)? {
            Event::Message(message) => Some(message),
            // Deliver::Messages hands out nothing else.
            _ => unreachable!("next_event delivered a control event"),
        }
    }

    pub(crate) fn poll_recv_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, Error>>> {
        self.poll_recv(cx, Deliver::Events)
    }

    /// Waits for room, queues `*item` (taking it) and then each item of `rest` the same way,
    /// then, with `flush`, writes everything queued: `feed`, `send`, their prepared-frame
    /// forms and `send_all`, in one poll instead of one per step (and under one lock, for
    /// split halves). `*item` holds the item waiting for room; once it is `None` everything
    /// was queued. For split halves, `rest` runs under the lock (documented on
    /// [`WsWriter::send_all`](crate::WsWriter::send_all)).
    fn poll_queue<'a>(
        &mut self,
        cx: &mut Context<'_>,
        item: &mut Option<Outbound<'a>>,
        rest: &mut impl Iterator<Item = Outbound<'a>>,
        flush: bool,
    ) -> Poll<Result<(), Error>> {
        while let Some(next) = item.take() {
            if let waiting @ (Poll::Pending | Poll::Ready(Err(_))) = self.poll_ready(cx) {
                *item = Some(next); // still waiting for room (or not queued at all)
                return waiting;
            }
            match next {
                Outbound::Message(message) => self.conn.send(message)?,
                Outbound::Prepared(frame) => self.conn.send_prepared(frame)?,
            }
            *item = rest.next();
        }
        if flush {
            self.poll_flush(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    pub(crate) fn start_send(&mut self, message: Message) -> Result<(), Error> {
        self.check_send()?;
        self.conn.send(message)?;
        Ok(())
    }

    pub(crate) fn start_ping(&mut self, payload: Bytes) -> Result<(), Error> {
        self.check_send()?;
        self.conn.ping(payload)?;
        Ok(())
    }

    /// Gives up on the close handshake: best-effort shutdown, then finished.
    pub(crate) fn abort(&mut self) {
        if !matches!(self.phase, Phase::Done) {
            let mut cx = Context::from_waker(Waker::noop());
            if !self.write_failed {
                let _ = Pin::new(&mut self.stream).poll_shutdown(&mut cx);
            }
            self.end.get_or_insert(End::TimedOut);
            self.set_done();
        }
    }
}

/// What [`Inner::poll_recv`] hands to its caller; everything else is handled and dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deliver {
    /// Data messages (`recv`).
    Messages,
    /// Data messages, pings, pongs and the peer's close frame (`recv_event`).
    Events,
    /// Nothing: a `close()` reading until the end.
    Nothing,
}

/// A `close()` that timed out.
pub(crate) const CLOSE_TIMEOUT: &str = "close handshake";

impl<S> Inner<S> {
    /// Wakes the tasks waiting for the connection to end.
    fn wake_closed(&mut self) {
        for waker in self.closed_wakers.take().into_iter().flat_map(|w| *w) {
            waker.wake();
        }
    }

    /// Bytes waiting for the transport.
    pub(crate) fn queued(&self) -> usize {
        self.conn.pending_transmit_len() + self.out.len()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Inner<S> {
    fn check_send(&self) -> Result<(), Error> {
        if !matches!(self.phase, Phase::Open) || self.write_failed {
            return Err(Error::ConnectionClosed);
        }
        if !self.conn.can_send() {
            return Err(Error::Send(SendError::Closed));
        }
        Ok(())
    }

    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        deliver: Deliver,
    ) -> Poll<Option<Result<Event, Error>>> {
        loop {
            match self.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Finishing(_) => return self.poll_finish(cx),
                Phase::Open => {}
            }
            if let Some(event) = self.next_event(deliver) {
                return Poll::Ready(Some(Ok(event)));
            }
            if let Some(error) = self.error.take() {
                debug!(%error, "peer broke the protocol; closing");
                self.finish(Some(*error), End::Failed);
                continue;
            }
            if self.conn.is_closed() {
                self.finish(None, End::Clean);
                continue;
            }
            self.poll_keepalive(cx);
            // Pongs and close replies go out even while the writer is idle; a full socket
            // does not stop reading (the peer may be blocked on us reading)...
            if !self.write_failed {
                match self.poll_write_out(cx) {
                    Poll::Ready(Ok(())) => {
                        // TLS streams hold written records until flushed.
                        let mut wcx = self.write_waiters.context(cx);
                        if let Poll::Ready(Err(error)) =
                            Pin::new(&mut self.stream).poll_flush(&mut wcx)
                        {
                            debug!(%error, "flush failed");
                            self.write_failed = true;
                        }
                    }
                    // Keep reading: the peer's close frame may explain why it stopped reading.
                    Poll::Ready(Err(error)) => debug!(%error, "write failed"),
                    Poll::Pending => {}
                }
            }
            // ...unless answers to the peer's pings pile up unread.
            let stalled = !self.write_failed
                && self.control_backlog > CONTROL_BACKLOG_LIMIT
                && self.conn.has_pending_transmit();
            let read = if stalled {
                Poll::Pending
            } else {
                self.poll_read(cx)
            };
            match read {
                Poll::Pending => {
                    // Timers only once nothing more can be read: data (or the close frame
                    // we wait for) already in the socket is not a timeout.
                    if self.conn.is_closing()
                        && poll_timer(&mut self.close_timer, &mut self.read_waiters, cx).is_ready()
                    {
                        debug!("peer did not answer our close frame in time");
                        self.finish(Some(Error::Timeout(CLOSE_TIMEOUT)), End::TimedOut);
                        continue;
                    }
                    if self.poll_idle(cx).is_ready() {
                        debug!("connection idle for too long; closing");
                        let _ = self
                            .conn
                            .close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "idle timeout")));
                        self.finish(Some(Error::Timeout("idle timeout")), End::TimedOut);
                        continue;
                    }
                    self.release_idle_memory();
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => {
                    debug!(%error, "read failed");
                    self.finish(Some(Error::Io(error)), End::Failed);
                }
                Poll::Ready(Ok(0)) => {
                    self.read_eof = true;
                    if let Err(error) = self.conn.handle_eof() {
                        self.defer_error(error);
                    }
                }
                Poll::Ready(Ok(_)) => {
                    self.read_seen = true;
                    self.handle_read();
                }
            }
        }
    }

    /// The next event already decoded that `deliver` asks for; the others are accounted
    /// for and dropped.
    // Always inlined, as `Connection::poll_event` is: the event is moved once instead of
    // three times (docs/performance.md, eleventh pass).
    #[inline(always)]
    fn next_event(&mut self, deliver: Deliver) -> Option<Event> {
        while let Some(event) = self.conn.poll_event() {
            match &event {
                Event::Ping(payload) => {
                    // A ping's payload is at most 125 bytes.
                    self.control_backlog = self
                        .control_backlog
                        .saturating_add(payload.len() as u32 + CONTROL_OVERHEAD);
                }
                Event::Close(frame) => debug!(?frame, "peer sent a close frame"),
                _ => {}
            }
            let wanted = match deliver {
                Deliver::Messages => matches!(event, Event::Message(_)),
                Deliver::Events => true,
                Deliver::Nothing => false,
            };
            if wanted {
                return Some(event);
            }
        }
        None
    }

    /// Processes the read buffer.
    ///
    /// The core consumes every complete frame in one call (a close or error takes effect
    /// behind the events already queued): what stays buffered is part of a frame, or whole
    /// small messages it checked and hands out from the buffer as they are taken.
    fn handle_read(&mut self) {
        let result = self.conn.handle_read();
        if self.write_failed {
            // Nothing queued can be written any more: drop pongs and replies rather than
            // let a peer that keeps sending grow the queue.
            let pending = self.conn.pending_transmit_len();
            self.conn.advance_transmit(pending);
            self.out.clear();
        }
        if let Err(error) = result {
            self.defer_error(error);
        }
    }

    /// Keeps a protocol error for when the events before it have been delivered. Only an
    /// open connection reads (and so finds one); the check keeps a finishing connection's
    /// error, which shares the field, from ever being replaced.
    fn defer_error(&mut self, error: ProtocolError) {
        if matches!(self.phase, Phase::Open) {
            self.error = Some(Box::new(Error::Protocol(error)));
        }
    }

    /// Enters the finishing phase.
    fn finish(&mut self, error: Option<Error>, end: End) {
        self.end.get_or_insert(end);
        self.phase = Phase::Finishing(Stage::Flush);
        self.error = error.map(Box::new);
        // The finishing steps get a fresh close timeout, started by `poll_finish` once one
        // of them has to wait: most finish at once, and a timer that is never polled is
        // never registered (registering one wakes the runtime's driver, a system call).
        self.close_timer = None;
    }

    /// Flushes, waits for the server's FIN (client after a clean close, RFC 6455 §7.1.1),
    /// shuts the transport down; all of it bounded by the close timeout, which starts when
    /// a step first has to wait (or repeats: a peer that keeps sending instead of closing).
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Error>>> {
        loop {
            let Phase::Finishing(stage) = self.phase else {
                return Poll::Ready(None);
            };
            if self.write_failed {
                break;
            }
            // First, while this poll still has tokio's budget: a step that keeps making
            // progress (reads that never end) spends it, and a timer polled without budget
            // never fires.
            if poll_timer(&mut self.close_timer, &mut self.read_waiters, cx).is_ready() {
                debug!("gave up flushing and shutting down the transport");
                break;
            }
            match self.poll_finish_step(stage, cx) {
                Poll::Ready(Some(next)) => {
                    if next == stage {
                        self.start_finish_timer();
                    }
                    if let Phase::Finishing(stage) = &mut self.phase {
                        *stage = next;
                    }
                }
                Poll::Ready(None) => break,
                // The first wait starts the timer, polled (and so registered) at the top.
                Poll::Pending if self.close_timer.is_none() => self.start_finish_timer(),
                Poll::Pending => return Poll::Pending,
            }
        }
        let error = match self.phase {
            Phase::Finishing(_) => self.error.take(),
            _ => None,
        };
        self.set_done();
        Poll::Ready(error.map(|error| Err(*error)))
    }

    /// Starts the finishing steps' close timeout unless it runs already.
    fn start_finish_timer(&mut self) {
        let timeout = self.config.close_timeout;
        self.close_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
    }

    /// One step of [`poll_finish`](Self::poll_finish): the next stage, or `None` when
    /// finishing is over.
    fn poll_finish_step(&mut self, stage: Stage, cx: &mut Context<'_>) -> Poll<Option<Stage>> {
        Poll::Ready(match stage {
            Stage::Flush => {
                match ready!(self.poll_write_out(cx)) {
                    Ok(()) => {
                        let mut wcx = self.write_waiters.context(cx);
                        let _ = ready!(Pin::new(&mut self.stream).poll_flush(&mut wcx));
                    }
                    Err(error) => {
                        debug!(%error, "could not flush the final frames");
                        return Poll::Ready(None);
                    }
                }
                if self.conn.role() == Role::Client
                    && self.end == Some(End::Clean)
                    && !self.read_eof
                {
                    Some(Stage::WaitEof)
                } else {
                    Some(Stage::Shutdown)
                }
            }
            Stage::WaitEof => match ready!(self.poll_read(cx)) {
                Ok(n) if n > 0 => {
                    self.conn.discard_input();
                    Some(Stage::WaitEof)
                }
                _ => Some(Stage::Shutdown),
            },
            Stage::Shutdown => {
                let mut wcx = self.write_waiters.context(cx);
                if let Err(error) = ready!(Pin::new(&mut self.stream).poll_shutdown(&mut wcx)) {
                    debug!(%error, "shutdown failed");
                }
                None
            }
        })
    }

    fn set_done(&mut self) {
        self.phase = Phase::Done;
        self.error = None;
        self.ping_timer = None;
        self.idle_timer = None;
        self.close_timer = None;
        self.conn.discard_input();
        self.release_idle_memory();
        self.wake_closed();
        // Senders waiting for room learn that there will be none; a reader parked on the
        // socket learns that the connection is over.
        self.write_waiters.wake_all();
        self.read_waiters.wake_all();
    }

    fn release_idle_memory(&mut self) {
        self.conn.release_idle_memory();
        self.out.release_if_empty();
    }

    /// Idle timeout: ready once nothing was read for `idle_timeout`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(idle) = self.config.idle_timeout else {
            return Poll::Pending;
        };
        let restart = std::mem::take(&mut self.read_seen);
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if restart {
            timer.as_mut().reset(Instant::now() + idle);
        }
        timer.as_mut().poll(&mut self.read_waiters.context(cx))
    }

    /// Keepalive: queues a ping every `ping_interval`.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) {
        let Some(interval) = self.config.ping_interval else {
            return;
        };
        let timer = self
            .ping_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        while timer
            .as_mut()
            .poll(&mut self.read_waiters.context(cx))
            .is_ready()
        {
            if self.conn.can_send() && !self.write_failed {
                let _ = self.conn.ping(Bytes::new());
            }
            timer.as_mut().reset(Instant::now() + interval);
        }
    }

    /// Reads into the connection's read buffer, unless the transport has not become readable
    /// since the last read found nothing (see [`ReadSignal`]): a task woken for something
    /// else takes no buffer and makes no call.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let rcx = self.read_waiters.context(cx);
        let (conn, stream, reserve) = (&mut self.conn, &mut self.stream, &mut self.read_reserve);
        wakers::poll_read(&mut self.read_signal, &mut self.read_parked, &rcx, |rcx| {
            let mut buf = conn.read_buffer();
            // An idle connection holds no read buffer: it takes one for this read.
            let taken = buf.capacity() == 0;
            if buf.capacity() - buf.len() < MIN_READ_SPACE {
                buf = conn.reserve_read(*reserve as usize + READ_HEADER_SLACK);
            }
            let space = buf.capacity() - buf.len();
            let result = tokio_util::io::poll_read_buf(Pin::new(stream), rcx, buf);
            match result {
                Poll::Ready(Ok(n)) if n == space && *reserve < MAX_READ_RESERVE => {
                    *reserve *= 2;
                }
                // Nothing to read: the buffer goes straight back, untouched.
                Poll::Pending if taken => conn.unreserve_read(),
                _ => {}
            }
            result
        })
    }

    /// Writes queued bytes until none are left (`Ready(Ok)`) or the transport is full.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_failed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        loop {
            if self.out.is_empty() && !self.conn.has_pending_transmit() {
                // Every pong queued so far is written.
                self.control_backlog = 0;
                return Poll::Ready(Ok(()));
            }
            let mut wcx = self.write_waiters.context(cx);
            let stream = Pin::new(&mut self.stream);
            let (result, from_out) = if !self.out.is_empty() {
                (stream.poll_write(&mut wcx, self.out.bytes()), true)
            } else if self.vectored {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = self.conn.transmit_slices(&mut slices);
                // One slice goes out with a plain write: on a TCP socket that is `send`,
                // whose path through the kernel is shorter than `writev`'s (about 0.5 µs
                // per call here; see docs/performance.md, sixth pass).
                let result = if n == 1 {
                    stream.poll_write(&mut wcx, &slices[0])
                } else {
                    stream.poll_write_vectored(&mut wcx, &slices[..n])
                };
                (result, false)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = self.conn.transmit_slices(&mut slices);
                if slices[0].len() >= COALESCE_LIMIT {
                    (stream.poll_write(&mut wcx, &slices[0]), false)
                } else {
                    // Gather small frames so a pipelined burst is one write, not one per frame.
                    let mut copied = 0;
                    for slice in &slices[..n] {
                        if copied > 0 && copied + slice.len() > COALESCE_LIMIT {
                            break;
                        }
                        self.out.extend_from_slice(slice);
                        copied += slice.len();
                    }
                    self.conn.advance_transmit(copied);
                    continue;
                }
            };
            match result {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.write_failed = true;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    if from_out {
                        self.out.advance(n);
                    } else {
                        self.conn.advance_transmit(n);
                    }
                    self.control_backlog = self
                        .control_backlog
                        .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
                }
                Poll::Ready(Err(error)) => {
                    self.write_failed = true;
                    return Poll::Ready(Err(error));
                }
            }
        }
    }

    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if matches!(self.phase, Phase::Open) && !self.write_failed && !self.conn.can_send() {
                // Our close reply (or close frame) may still be queued. Callers often drop
                // the socket on this error, so get it to the peer first.
                let _ = ready!(self.poll_write_out(cx));
            }
            self.check_send()?;
            if self.queued() < self.config.write_buffer_high_water.max(1) {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_write_out(cx))?;
        }
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if matches!(self.phase, Phase::Done) {
            return Poll::Ready(if self.queued() == 0 {
                Ok(())
            } else {
                Err(Error::ConnectionClosed)
            });
        }
        ready!(self.poll_write_out(cx))?;
        let mut wcx = self.write_waiters.context(cx);
        ready!(Pin::new(&mut self.stream).poll_flush(&mut wcx)).inspect_err(|_| {
            self.write_failed = true;
        })?;
        Poll::Ready(Ok(()))
    }

    pub(crate) fn start_close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if !matches!(self.phase, Phase::Open)
            || self.conn.is_closing()
            || self.conn.is_closed()
            || self.write_failed
        {
            return Ok(());
        }
        self.conn.close(frame)?;
        self.close_timer = Some(Box::pin(tokio::time::sleep(self.config.close_timeout)));
        Ok(())
    }

    pub(crate) fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        drive_reads: bool,
    ) -> Poll<Result<(), Error>> {
        loop {
            if let Phase::Done = self.phase {
                return Poll::Ready(match self.end {
                    Some(End::Clean) => Ok(()),
                    Some(End::TimedOut) => Err(Error::Timeout(CLOSE_TIMEOUT)),
                    _ => Err(Error::ConnectionClosed),
                });
            }
            let drive =
                drive_reads || self.reader_dropped || matches!(self.phase, Phase::Finishing(_));
            if !drive {
                // The reader half sees the peer's close; we flush ours and keep the clock.
                if let Poll::Ready(Err(error)) = self.poll_write_out(cx) {
                    return Poll::Ready(Err(Error::Io(error)));
                }
                if self.conn.is_closing()
                    && poll_timer(&mut self.close_timer, &mut self.read_waiters, cx).is_ready()
                {
                    debug!("peer did not answer our close frame in time");
                    self.finish(Some(Error::Timeout(CLOSE_TIMEOUT)), End::TimedOut);
                    continue;
                }
                let wakers = self.closed_wakers.get_or_insert_with(Default::default);
                if !wakers.iter().any(|k| k.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            if let Some(Err(error)) = ready!(self.poll_recv(cx, Deliver::Nothing)) {
                return Poll::Ready(Err(error));
            }
        }
    }
}

/// Polls an optional timer on behalf of the reading side; `Pending` when there is none.
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    waiters: &mut Waiters,
    cx: &Context<'_>,
) -> Poll<()> {
    match timer {
        Some(timer) => timer.as_mut().poll(&mut waiters.context(cx)),
        None => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use crate::{Role, WebSocket, WebSocketConfig};
    use bytes::Bytes;
    use duplex_proto::{CloseCode, CloseFrame, Event, Message};
    use std::time::Duration;

    fn pair() -> (
        WebSocket<tokio::io::DuplexStream>,
        WebSocket<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 << 10);
        (
            WebSocket::from_raw(a, Role::Client, WebSocketConfig::default()),
            WebSocket::from_raw(b, Role::Server, WebSocketConfig::default()),
        )
    }

    #[tokio::test]
    async fn recv_event_reports_pings_pongs_and_close_in_order() {
        let (mut client, mut server) = pair();
        client.ping(Bytes::from_static(b"t1")).await.unwrap();
        client.send(Message::text("after")).await.unwrap();
        // The server sees the ping (already answered) before the message behind it.
        let server_task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(event) = server.recv_event().await {
                seen.push(event.unwrap());
            }
            seen
        });
        assert_eq!(
            client.recv_event().await.unwrap().unwrap(),
            Event::Pong(Bytes::from_static(b"t1"))
        );
        client.close(CloseCode::NORMAL, "bye").await.unwrap();
        let seen = server_task.await.unwrap();
        assert_eq!(
            seen,
            vec![
                Event::Ping(Bytes::from_static(b"t1")),
                Event::Message(Message::text("after")),
                Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))),
            ]
        );
        assert!(client.is_closed());
    }

    #[tokio::test]
    async fn recv_skips_pongs_that_recv_event_would_report() {
        let (mut client, mut server) = pair();
        let server_task = tokio::spawn(async move {
            while let Some(message) = server.recv().await {
                server.send(message.unwrap()).await.unwrap();
            }
        });
        client.ping(Bytes::from_static(b"p")).await.unwrap();
        client.send(Message::text("m")).await.unwrap();
        assert_eq!(client.recv().await.unwrap().unwrap(), Message::text("m"));
        client.close(CloseCode::NORMAL, "").await.unwrap();
        server_task.await.unwrap();
    }

    fn held_bytes<S>(ws: &WebSocket<S>) -> usize {
        let mut inner = ws.shared.lock();
        inner.out.capacity() + inner.conn.read_buffer().capacity()
    }

    /// Every connection, idle ones included, holds this state (in a `Box`; in an `Arc`, 16
    /// bytes more, once split): rare parts are boxed so it stays small. 384 bytes with a
    /// release build's 32-byte `TcpStream` (a debug build's is larger): jemalloc's 384-byte
    /// size class, where 392 would take 448 (docs/performance.md, ninth pass). The read
    /// signal, 48 bytes with its `Arc`, is only allocated once the connection has been read.
    #[test]
    fn connection_state_stays_small() {
        let size = std::mem::size_of::<super::Shared<tokio::net::TcpStream>>()
            - std::mem::size_of::<tokio::net::TcpStream>();
        assert!(
            size <= 384 - 32,
            "a TCP connection's shared state is {size} bytes besides the stream"
        );
    }

    #[tokio::test]
    async fn idle_connection_releases_its_buffers() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut client = WebSocket::from_raw(a, Role::Client, WebSocketConfig::default());
        let mut server = WebSocket::from_raw(b, Role::Server, WebSocketConfig::default());
        let big = Message::binary(vec![1u8; 512 << 10]);
        let send = tokio::spawn(async move {
            client.send(big).await.unwrap();
            client
        });
        assert_eq!(server.recv().await.unwrap().unwrap().len(), 512 << 10);
        let _client = send.await.unwrap();
        // Nothing more arrives: the receive goes idle and gives its buffers back.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), server.recv())
                .await
                .is_err()
        );
        assert_eq!(held_bytes(&server), 0);
    }
}
