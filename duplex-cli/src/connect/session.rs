//! One connection of `duplex connect`: a task reads and reports events while this loop
//! sends what the input asks for, echoes, pings, and closes.

use super::input::Input;
use super::output::{Output, ABNORMAL, NO_STATUS};
use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use duplex::{CloseCode, CloseFrame, Event, Message, WebSocket, WsReader};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};

/// Pings remembered while their pongs are outstanding.
const PINGS_REMEMBERED: usize = 32;
/// Messages received but not yet echoed back (`--echo`).
const ECHO_QUEUE: usize = 16;

/// What stays the same across connections.
pub struct Settings {
    /// Where events are reported.
    pub output: Arc<Output>,
    /// Send every received message back.
    pub echo: bool,
    /// Send a ping this often and report the round trip.
    pub ping_interval: Option<Duration>,
    /// Close after this many received messages (counted over all connections).
    pub max_messages: Option<u64>,
    /// Messages received so far, over all connections.
    pub received: Arc<AtomicU64>,
    /// The close handshake's own limit; waiting for the reading task is bounded by it.
    pub close_timeout: Duration,
}

/// How a connection that closed cleanly ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// We closed it: the input ended, the user quit, or `--max-messages` was reached.
    Local,
    /// The server closed it.
    Remote,
}

/// Runs one connection to its end. `pending` is an input read while no connection was
/// open; it goes first.
///
/// # Errors
/// Anything that ended the connection without a clean close handshake, and
/// [`Input::Fail`] (after a clean close).
pub async fn run<S>(
    ws: WebSocket<S>,
    settings: &Settings,
    inputs: &mut mpsc::Receiver<Input>,
    pending: &mut Option<Input>,
) -> anyhow::Result<Ending>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let output = Arc::clone(&settings.output);
    let (reader, mut writer) = ws.split();
    let pings = Arc::new(Pings::default());
    let limit_reached = Arc::new(Notify::new());
    let (echo_tx, mut echo_rx) = mpsc::channel(ECHO_QUEUE);
    let mut reader_task = tokio::spawn(read(
        reader,
        Arc::clone(&output),
        Arc::clone(&pings),
        settings.echo.then_some(echo_tx),
        Limit {
            max: settings.max_messages,
            received: Arc::clone(&settings.received),
            reached: Arc::clone(&limit_reached),
        },
    ));
    let mut keepalive = settings.ping_interval.map(|every| {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        timer
    });
    let mut keepalive_seq = 0u64;

    let step = loop {
        let input = match pending.take() {
            Some(input) => input,
            None => tokio::select! {
                biased;
                read = &mut reader_task => break Step::PeerEnded(joined(read)),
                Some(message) = echo_rx.recv() => {
                    if writer.send(message).await.is_err() {
                        break Step::Broken;
                    }
                    continue;
                }
                () = limit_reached.notified() => Input::End,
                () = tick(&mut keepalive) => {
                    keepalive_seq += 1;
                    let payload = Bytes::copy_from_slice(&keepalive_seq.to_be_bytes());
                    pings.sent(payload.clone(), true);
                    if writer.ping(payload).await.is_err() {
                        break Step::Broken;
                    }
                    continue;
                }
                input = inputs.recv() => input.unwrap_or(Input::End),
            },
        };
        match input {
            Input::Send(message) => {
                if writer.send(message).await.is_err() {
                    break Step::Broken;
                }
            }
            Input::Ping(payload) => {
                pings.sent(payload.clone(), false);
                if writer.ping(payload).await.is_err() {
                    break Step::Broken;
                }
            }
            Input::Close(code, reason) => break Step::Close(code, reason, None),
            Input::End => break Step::Close(CloseCode::NORMAL, String::new(), None),
            Input::Fail(why) => break Step::Close(CloseCode::NORMAL, String::new(), Some(why)),
        }
    };

    // The reading task may be waiting to hand us a message to echo: let it go on.
    drop(echo_rx);
    let wait_reader = settings.close_timeout.saturating_mul(2) + Duration::from_secs(1);
    let (read, closed, ending, failure) = match step {
        Step::PeerEnded(read) => (read, Ok(()), Ending::Remote, None),
        // A send failed because the connection ended: the reading task knows why.
        Step::Broken => (
            finish_reader(&mut reader_task, wait_reader).await,
            Ok(()),
            Ending::Remote,
            None,
        ),
        Step::Close(code, reason, failure) => {
            let closed = writer
                .close(code, &reason)
                .await
                .context("closing the connection");
            let read = finish_reader(&mut reader_task, wait_reader).await;
            (read, closed, Ending::Local, failure)
        }
    };
    match read.and_then(|frame| closed.map(|()| frame)) {
        Ok(frame) => {
            match frame {
                Some(frame) => output.close(frame.code.as_u16(), &frame.reason, true),
                None => output.close(NO_STATUS, "", true),
            }
            match failure {
                Some(why) => Err(anyhow!(why)),
                None => Ok(ending),
            }
        }
        Err(error) => {
            output.error(&error);
            output.close(ABNORMAL, "", false);
            Err(error)
        }
    }
}

/// Why the writing loop stopped.
enum Step {
    /// The reading task ended: the server closed, or the connection failed.
    PeerEnded(anyhow::Result<Option<CloseFrame>>),
    /// A send failed: the connection is over.
    Broken,
    /// Close with this code and reason; then fail with the message, if any.
    Close(CloseCode, String, Option<String>),
}

/// `--max-messages` bookkeeping for the reading task.
struct Limit {
    max: Option<u64>,
    received: Arc<AtomicU64>,
    reached: Arc<Notify>,
}

/// Reads until the connection ends; returns the server's close frame after a clean close.
async fn read<S>(
    mut reader: WsReader<S>,
    output: Arc<Output>,
    pings: Arc<Pings>,
    echo: Option<mpsc::Sender<Message>>,
    limit: Limit,
) -> anyhow::Result<Option<CloseFrame>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(event) = reader.recv_event().await {
        match event? {
            Event::Message(message) => {
                let count = limit.received.load(Ordering::Relaxed);
                if limit.max.is_some_and(|max| count >= max) {
                    // Past --max-messages: the close is on its way; drop the rest.
                    continue;
                }
                output.message(&message).context("writing to stdout")?;
                if let Some(echo) = &echo {
                    // Fails only once the writer stopped echoing to close.
                    let _ = echo.send(message).await;
                }
                let count = limit.received.fetch_add(1, Ordering::Relaxed) + 1;
                if limit.max == Some(count) {
                    limit.reached.notify_one();
                }
            }
            Event::Ping(payload) => output.ping(&payload),
            Event::Pong(payload) => match pings.answered(&payload) {
                Some((rtt, keepalive)) => output.pong(&payload, Some(rtt), keepalive),
                None => output.pong(&payload, None, false),
            },
            // Reported with the final code once the close handshake is done.
            _ => {}
        }
    }
    Ok(reader.close_frame())
}

/// Waits (bounded) for the reading task after the writer is done.
async fn finish_reader(
    task: &mut JoinHandle<anyhow::Result<Option<CloseFrame>>>,
    limit: Duration,
) -> anyhow::Result<Option<CloseFrame>> {
    match tokio::time::timeout(limit, &mut *task).await {
        Ok(read) => joined(read),
        Err(_) => {
            task.abort();
            Err(anyhow!("the connection did not end within {limit:?}"))
        }
    }
}

fn joined(
    read: Result<anyhow::Result<Option<CloseFrame>>, tokio::task::JoinError>,
) -> anyhow::Result<Option<CloseFrame>> {
    read.context("the reading task failed")?
}

async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Pings sent and not yet answered, to time their pongs.
#[derive(Default)]
struct Pings {
    sent: Mutex<VecDeque<(Bytes, Instant, bool)>>,
}

impl Pings {
    fn sent(&self, payload: Bytes, keepalive: bool) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if sent.len() == PINGS_REMEMBERED {
            sent.pop_front();
        }
        sent.push_back((payload, Instant::now(), keepalive));
    }

    /// The round trip of the ping this pong answers, and whether it was a keepalive.
    ///
    /// A pong may answer only the latest of several pings (RFC 6455 §5.5.3), so the older
    /// ones are forgotten with it.
    fn answered(&self, payload: &[u8]) -> Option<(Duration, bool)> {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let at = sent.iter().position(|(p, _, _)| p == payload)?;
        let (_, when, keepalive) = sent.drain(..=at).last()?;
        Some((when.elapsed(), keepalive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pongs_match_their_ping_and_forget_older_ones() {
        let pings = Pings::default();
        pings.sent(Bytes::from_static(b"a"), false);
        pings.sent(Bytes::from_static(b"b"), true);
        pings.sent(Bytes::from_static(b"c"), false);
        assert_eq!(pings.answered(b"b").map(|(_, k)| k), Some(true));
        assert!(
            pings.answered(b"a").is_none(),
            "older than an answered ping"
        );
        assert!(pings.answered(b"x").is_none(), "unsolicited");
        assert_eq!(pings.answered(b"c").map(|(_, k)| k), Some(false));
        for n in 0..100u8 {
            pings.sent(Bytes::copy_from_slice(&[n]), false);
        }
        assert_eq!(pings.sent.lock().unwrap().len(), PINGS_REMEMBERED);
    }
}
