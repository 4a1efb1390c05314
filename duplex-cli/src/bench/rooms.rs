//! `duplex bench rooms`: the fan-out check over a raw room of the hub.
//!
//! `-c` members and one sender join `ws://HOST/rooms/ROOM` as plain WebSocket clients. The
//! sender first sends probes (`{"probe": k}`) until every member has heard one, which shows
//! they are all in the room; then it sends `--messages` text messages, each the same data as a
//! fan-out publication (`{"seq":..,"ts":..,"pad":..}`). Every member must receive every one of
//! them exactly once and in order; the server does not echo to the sender by default, and the
//! sender ignores whatever it receives.

use super::fanout::{
    check_data, data_json, delivery_report, receive_all, with_default_path, Deliveries, Item,
    Publication, Published, Receivers, Schedule,
};
use super::report::{self, Errors, Notes, Settings};
use super::{
    check_fd_limit, check_url, open_all, parse_rate, Clock, Dialer, Live, Output, Progress, Target,
    Timing, Ws, DRAIN,
};
use crate::size::parse_size;
use anyhow::Context as _;
use duplex::http::{header, HeaderValue};
use duplex::{ClientBuilder, CloseCode, Message};
use futures_util::FutureExt as _;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long the sender probes for members that have not heard it yet.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time between probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Options of `duplex bench rooms`.
#[derive(Debug, clap::Args)]
pub struct RoomsArgs {
    /// The room's URL (ws://HOST:PORT/rooms/ROOM; a URL without a path means
    /// /rooms/{--room}).
    #[command(flatten)]
    target: Target,
    /// Receiving members (the sender is one more connection).
    #[arg(short = 'c', long, default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    connections: u64,
    /// The room, when the URL has no path.
    #[arg(long, default_value = "bench", value_name = "NAME")]
    room: String,
    /// Messages to send (the run also ends at --duration).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    messages: u64,
    /// Messages per second, or `max`. Latency counts from each one's intended send time.
    #[arg(long, default_value = "1000", value_parser = parse_rate, value_name = "PER_SECOND")]
    rate: f64,
    /// Bytes of each message (JSON, padded with filler).
    #[arg(long, default_value = "64", value_parser = parse_size, value_name = "SIZE")]
    size: usize,
    /// A JWT for every connection (`Authorization: Bearer`).
    #[arg(long, env = "DUPLEX_TOKEN", value_name = "JWT", hide_env_values = true)]
    token: Option<String>,
    /// Send this long before measuring; those messages are checked but not counted.
    #[arg(long, default_value = "0s", value_parser = super::parse_duration, value_name = "TIME")]
    warmup: Duration,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    output: Output,
}

/// Runs the rooms benchmark.
pub async fn run(args: RoomsArgs) -> anyhow::Result<()> {
    let uri = check_url(&args.target.url, &["ws", "wss"], args.target.allow_remote).await;
    check_fd_limit(args.connections + 1);
    let url = with_default_path(&uri, &format!("/rooms/{}", args.room));
    let mut builder = ClientBuilder::new(&url);
    if let Some(token) = &args.token {
        let value = HeaderValue::try_from(format!("Bearer {token}"))
            .context("the token cannot be sent in a header")?;
        builder = builder.header(header::AUTHORIZATION, value);
    }
    let dialer = Dialer::with(&args.target, builder, args.size);
    let live = Arc::new(Live::default());
    let notes = Arc::new(Notes::default());
    let mut progress = Progress::new();
    progress.connecting(args.connections, &live);
    let members = open_all(
        &dialer,
        args.connections as usize,
        args.target.ramp,
        &live,
        &notes,
        |ws| async { Ok(ws) },
    )
    .await;
    let sender = dialer.connect().await;

    let ctx = Arc::new(Deliveries::new(args.size, live.clone(), notes.clone()));
    let (total_tx, total_rx) = watch::channel(None);
    let (done_tx, done_rx) = watch::channel(false);
    let opened = members.conns.len() as u64;
    let receivers = tokio::spawn({
        let (ctx, conns) = (ctx.clone(), members.conns);
        async move {
            let delivered = receive_all(conns, &ctx, &total_rx, classify).await;
            let _ = done_tx.send(true);
            delivered
        }
    });
    let publication = Publication {
        channel: Arc::from(url.as_str()),
        messages: args.messages,
        rate: args.rate,
    };
    let published = match sender {
        Ok(mut ws) => {
            let heard = probe(&mut ws, &ctx, opened).await;
            match heard {
                Ok(()) => {
                    let clock = Clock::start(args.warmup, args.timing.duration);
                    let _ = ctx.clock.set(clock.clone());
                    progress.running(&clock, &live);
                    send(ws, &ctx, &publication, total_tx, done_rx).await
                }
                Err(why) => {
                    let _ = total_tx.send(Some(0));
                    notes.add(why);
                    let _ = ws.close(CloseCode::NORMAL, "").await;
                    Published {
                        errors: Errors {
                            connect: opened.saturating_sub(ctx.ready.load(Ordering::Relaxed)),
                            ..Default::default()
                        },
                        ..Default::default()
                    }
                }
            }
        }
        Err(error) => {
            let _ = total_tx.send(Some(0));
            notes.add(format!("sender: cannot connect: {error}"));
            Published {
                errors: Errors {
                    connect: 1,
                    ..Default::default()
                },
                ..Default::default()
            }
        }
    };
    let delivered = receivers.await.context("the receivers failed")?;
    progress.finish();
    let settings = Settings {
        connections: args.connections,
        duration_s: args.timing.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        deflate: !args.target.no_deflate,
        size: Some(args.size),
        rate: Some(args.rate).filter(|r| r.is_finite()),
        messages: Some(args.messages),
        channel: Some(format!("rooms:{}", room_name(&url))),
        ..Default::default()
    };
    let receivers = Receivers {
        opened,
        failed: members.failed,
        open_latency: &members.open_latency,
    };
    let (report, latencies) = delivery_report(
        "rooms", url, settings, &receivers, delivered, published, &ctx,
    );
    report::finish(&report, &latencies, &args.output)
}

fn room_name(url: &str) -> &str {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// A room message: a probe, or data.
fn classify(message: &Message, size: usize) -> Item {
    let Some(text) = message.as_text() else {
        return Item::Data(Err("a binary message arrived".to_owned()));
    };
    match serde_json::from_str::<Value>(text) {
        Ok(value) if value.get("probe").is_some() => Item::Probe,
        Ok(value) => Item::Data(check_data(&value, size)),
        Err(error) => Item::Data(Err(format!("not JSON ({error}): {text:.100}"))),
    }
}

/// Sends probes until every one of `members` heard one.
async fn probe(ws: &mut Ws, ctx: &Deliveries, members: u64) -> Result<(), String> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut k = 0u64;
    while ctx.ready.load(Ordering::Relaxed) < members {
        if Instant::now() >= deadline {
            return Err(format!(
                "{} of {members} members heard no probe within {PROBE_TIMEOUT:?}",
                members - ctx.ready.load(Ordering::Relaxed)
            ));
        }
        ws.send(Message::text(format!("{{\"probe\":{k}}}")))
            .await
            .map_err(|e| format!("sender: {e}"))?;
        k += 1;
        let next = Instant::now() + PROBE_INTERVAL;
        loop {
            tokio::select! {
                message = ws.recv() => ignore(message)?,
                () = tokio::time::sleep_until(next.into()) => break,
            }
        }
    }
    Ok(())
}

/// Whatever the sender receives (its own messages, when the room echoes) is ignored; only
/// the end of the connection matters.
fn ignore(message: Option<Result<Message, duplex::Error>>) -> Result<(), String> {
    match message {
        Some(Ok(_)) => Ok(()),
        Some(Err(error)) => Err(format!("sender: {error}")),
        None => Err("the server closed the sender's connection".to_owned()),
    }
}

/// Sends the data messages on schedule, then closes.
async fn send(
    mut ws: Ws,
    ctx: &Deliveries,
    publication: &Publication,
    total: watch::Sender<Option<u64>>,
    mut members_done: watch::Receiver<bool>,
) -> Published {
    let clock = ctx.clock();
    let mut out = Published::default();
    let mut schedule = Schedule::new(&clock, publication);
    let result: Result<(), String> = async {
        while let Some(intended) = schedule.next() {
            while Instant::now() < intended {
                tokio::select! {
                    message = ws.recv() => ignore(message)?,
                    () = tokio::time::sleep_until(intended.into()) => {}
                }
            }
            let data = data_json(out.sent, clock.unix_nanos(intended), ctx.size);
            out.bytes_sent += data.len() as u64;
            ws.send(Message::text(data))
                .await
                .map_err(|e| format!("sender: {e}"))?;
            out.sent += 1;
            ctx.live.sent.fetch_add(1, Ordering::Relaxed);
            while let Some(message) = ws.recv().now_or_never() {
                ignore(message)?;
            }
        }
        let _ = total.send(Some(out.sent));
        // Keep reading (and answering pings) until the members are done or the drain ends.
        let deadline = clock.stop_at.max(Instant::now()) + DRAIN;
        tokio::select! {
            () = async {
                while let Some(Ok(_)) = ws.recv().await {}
            } => Err("the server closed the sender's connection".to_owned()),
            () = tokio::time::sleep_until(deadline.into()) => Ok(()),
            _ = members_done.wait_for(|&done| done) => Ok(()),
        }
    }
    .await;
    let _ = total.send(Some(out.sent));
    match result {
        Ok(()) => {
            if let Err(error) = ws.close(CloseCode::NORMAL, "").await {
                out.errors.unclean_close += 1;
                ctx.notes.add(format!("sender close: {error}"));
            }
        }
        Err(error) => {
            out.errors.connection += 1;
            ctx.notes.add(error);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_messages() {
        assert!(matches!(
            classify(&Message::text(r#"{"probe":3}"#), 64),
            Item::Probe
        ));
        assert!(matches!(
            classify(&Message::text(data_json(9, 10, 64)), 64),
            Item::Data(Ok((9, 10)))
        ));
        assert!(matches!(
            classify(&Message::binary(vec![1, 2]), 64),
            Item::Data(Err(_))
        ));
        assert_eq!(room_name("ws://h:1/rooms/lobby?token=x"), "lobby");
    }
}
