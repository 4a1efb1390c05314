//! `duplex bench fanout`: one publisher, many subscribers on one hub channel.
//!
//! The subscribers speak `duplex.v1` (docs/protocol.md): `connect`, then `subscribe` to the
//! channel; once every one of them is subscribed, the publisher (a `duplex.v1` connection, or
//! the HTTP API with `--via-http`) publishes `--messages` publications at `--rate`, each with
//! the data `{"seq": n, "ts": <unix ns of the intended send time>, "pad": "<filler>"}`. Every
//! subscriber checks the data in full, that `seq` goes up by exactly one (gaps, duplicates and
//! reordering are counted) and records `now − ts` as the publish-to-deliver latency.
//!
//! The receiving side (the sequence check, the data format, the receive loop) is shared with
//! `rooms`, which sends the same data as plain messages.

use super::report::{self, Connections, Errors, Latencies, Notes, Report, Settings, Throughput};
use super::{
    check_fd_limit, check_url, open_all, parse_rate, Clock, Dialer, Live, Output, Pacer, Progress,
    Target, Timing, Ws, DRAIN,
};
use crate::size::parse_size;
use anyhow::{bail, Context as _};
use bytes::Bytes;
use duplex::http::{header, Request, Uri};
use duplex::{ClientBuilder, CloseCode, Message};
use futures_util::FutureExt as _;
use http_body_util::{BodyExt as _, Full};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long one protocol command (connect, subscribe) may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The subprotocol of the hub's client protocol.
const SUBPROTOCOL: &str = "duplex.v1";

/// Options of `duplex bench fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// The hub's WebSocket endpoint (ws://HOST:PORT/ws; a URL without a path means /ws).
    #[command(flatten)]
    target: Target,
    /// Subscribers (the publisher is one more connection).
    #[arg(short = 'c', long, default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    connections: u64,
    /// The channel to subscribe and publish to. Its namespace must be configured on the hub,
    /// with anonymous publishing unless --token is given (for example
    /// `duplex serve --set 'namespaces.bench.publish="anonymous"'`).
    #[arg(long, default_value = "bench:fanout", value_name = "NAME")]
    channel: String,
    /// Publications to make (the run also ends at --duration).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    messages: u64,
    /// Publications per second, or `max`. Latency counts from each one's intended send time.
    /// The hub limits publications per connection (limits.publish_rate, 50/s by default;
    /// above it closes with 4002): raise it (`duplex serve --publish-rate N`) or use
    /// --via-http.
    #[arg(long, default_value = "1000", value_parser = parse_rate, value_name = "PER_SECOND")]
    rate: f64,
    /// Bytes of each publication's JSON data (padded with filler).
    #[arg(long, default_value = "64", value_parser = parse_size, value_name = "SIZE")]
    size: usize,
    /// Publish through the HTTP API at this base URL (POST {URL}/api/publish) instead of a
    /// duplex.v1 connection.
    #[arg(long, value_name = "URL")]
    via_http: Option<String>,
    /// The HTTP API key (`Authorization: apikey KEY`), with --via-http.
    #[arg(
        long,
        env = "DUPLEX_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// A JWT to send in every connection's `connect` command.
    #[arg(long, env = "DUPLEX_TOKEN", value_name = "JWT", hide_env_values = true)]
    token: Option<String>,
    /// Publish this long before measuring; those deliveries are checked but not counted.
    #[arg(long, default_value = "0s", value_parser = super::parse_duration, value_name = "TIME")]
    warmup: Duration,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    output: Output,
}

/// Runs the fan-out benchmark.
pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let uri = check_url(&args.target.url, &["ws", "wss"], args.target.allow_remote).await;
    let http = match &args.via_http {
        Some(url) => Some(check_url(url, &["http"], args.target.allow_remote).await),
        None => None,
    };
    check_fd_limit(args.connections + 1);
    let url = with_default_path(&uri, "/ws");
    let builder = ClientBuilder::new(&url).protocols([SUBPROTOCOL]);
    let dialer = Dialer::with(&args.target, builder, args.size);
    let live = Arc::new(Live::default());
    let notes = Arc::new(Notes::default());
    let mut progress = Progress::new();
    progress.connecting(args.connections, &live);
    let token: Option<Arc<str>> = args.token.as_deref().map(Arc::from);
    let channel: Arc<str> = Arc::from(args.channel.as_str());
    let subscribers = {
        let (token, channel) = (token.clone(), channel.clone());
        open_all(
            &dialer,
            args.connections as usize,
            args.target.ramp,
            &live,
            &notes,
            move |ws| {
                let (token, channel) = (token.clone(), channel.clone());
                async move { hello(ws, token.as_deref(), Some(&channel)).await }
            },
        )
        .await
    };
    // The publisher connects before the clock starts, so its first publication is on time.
    let publisher = match &http {
        Some(http) => HttpPublisher::connect(http, args.api_key.clone())
            .await
            .map(PublisherConn::Http),
        None => async {
            let ws = dialer.connect().await.context("cannot connect")?;
            hello(ws, token.as_deref(), None).await
        }
        .await
        .map(PublisherConn::Ws),
    };
    let (total_tx, total_rx) = watch::channel(None);
    let ctx = Arc::new(Deliveries::new(args.size, live.clone(), notes.clone()));
    let clock = Clock::start(args.warmup, args.timing.duration);
    let _ = ctx.clock.set(clock.clone());
    progress.running(&clock, &live);

    let publication = Publication {
        channel: channel.clone(),
        messages: args.messages,
        rate: args.rate,
    };
    let publisher = match publisher {
        // Nobody would hear it.
        Ok(_) if subscribers.conns.is_empty() => {
            let _ = total_tx.send(Some(0));
            tokio::spawn(std::future::ready(Published::default()))
        }
        Ok(PublisherConn::Ws(ws)) => {
            tokio::spawn(publish_ws(ws, ctx.clone(), publication, total_tx))
        }
        Ok(PublisherConn::Http(http)) => {
            tokio::spawn(publish_http(http, ctx.clone(), publication, total_tx))
        }
        Err(error) => {
            notes.add(format!("publisher: {error:#}"));
            let _ = total_tx.send(Some(0));
            tokio::spawn(std::future::ready(Published {
                errors: Errors {
                    connect: 1,
                    ..Default::default()
                },
                ..Default::default()
            }))
        }
    };
    let channel_for_classify = channel.clone();
    let classify =
        move |message: &Message, size: usize| classify_push(message, &channel_for_classify, size);
    let receivers = Receivers {
        opened: subscribers.conns.len() as u64,
        failed: subscribers.failed,
        open_latency: &subscribers.open_latency,
    };
    let delivered = receive_all(subscribers.conns, &ctx, &total_rx, classify).await;
    let published = publisher.await.unwrap_or_else(|error| {
        ctx.notes.add(format!("publisher task failed: {error}"));
        Published {
            errors: Errors {
                connection: 1,
                ..Default::default()
            },
            ..Default::default()
        }
    });
    progress.finish();
    let settings = Settings {
        connections: args.connections,
        duration_s: args.timing.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        deflate: !args.target.no_deflate,
        size: Some(args.size),
        rate: Some(args.rate).filter(|r| r.is_finite()),
        messages: Some(args.messages),
        channel: Some(args.channel.clone()),
        publisher: Some(
            args.via_http
                .clone()
                .unwrap_or_else(|| SUBPROTOCOL.to_owned()),
        ),
        ..Default::default()
    };
    let (report, latencies) = delivery_report(
        "fanout", url, settings, &receivers, delivered, published, &ctx,
    );
    report::finish(&report, &latencies, &args.output)
}

/// `url` with `path` when it has none (`ws://host:port` or `ws://host:port/`).
pub(super) fn with_default_path(uri: &Uri, path: &str) -> String {
    let given = uri.path();
    let path = if given.is_empty() || given == "/" {
        path
    } else {
        given
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!(
        "{}://{}{path}{query}",
        uri.scheme_str().unwrap_or("ws"),
        uri.authority().map_or("", |a| a.as_str())
    )
}

/// Sends `connect` (and `subscribe` to `channel`), checking both replies.
async fn hello(mut ws: Ws, token: Option<&str>, channel: Option<&str>) -> anyhow::Result<Ws> {
    let mut connect = json!({"id": 1, "cmd": "connect", "name": "duplex-bench"});
    if let Some(token) = token {
        connect["token"] = json!(token);
    }
    command(&mut ws, 1, connect).await?;
    if let Some(channel) = channel {
        let subscribe = json!({"id": 2, "cmd": "subscribe", "channel": channel});
        command(&mut ws, 2, subscribe).await?;
    }
    Ok(ws)
}

/// Sends one command and waits for its reply, skipping pushes.
async fn command(ws: &mut Ws, id: u64, command: Value) -> anyhow::Result<Value> {
    let name = command["cmd"].as_str().unwrap_or("command").to_owned();
    ws.send(Message::text(command.to_string()))
        .await
        .with_context(|| format!("sending {name}"))?;
    let reply = tokio::time::timeout(COMMAND_TIMEOUT, async {
        loop {
            let message = match ws.recv().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => bail!("waiting for the {name} reply: {error}"),
                None => bail!(
                    "the server closed the connection instead of answering {name} ({:?})",
                    ws.close_frame()
                ),
            };
            let Some(text) = message.as_text() else {
                continue;
            };
            let reply: Value = serde_json::from_str(text)
                .with_context(|| format!("the {name} reply is not JSON: {text:.200}"))?;
            if reply["id"].as_u64() == Some(id) {
                return Ok(reply);
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no {name} reply within {COMMAND_TIMEOUT:?}"))??;
    if let Some(error) = reply.get("error") {
        bail!("{name} refused: {error}");
    }
    Ok(reply["result"].clone())
}

/// What a publisher publishes.
#[derive(Debug, Clone)]
pub(super) struct Publication {
    pub channel: Arc<str>,
    pub messages: u64,
    pub rate: f64,
}

/// A publisher's counts.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// Publications sent (the number every receiver expects).
    pub sent: u64,
    pub bytes_sent: u64,
    pub errors: Errors,
}

/// The send times of a publisher: the intended time of each publication, or `None` once it
/// should stop.
pub(super) struct Schedule {
    pacer: Option<Pacer>,
    clock: Clock,
    left: u64,
}

impl Schedule {
    pub(super) fn new(clock: &Clock, publication: &Publication) -> Self {
        Self {
            pacer: Pacer::new(clock.base, publication.rate, 1, 0),
            clock: clock.clone(),
            left: publication.messages,
        }
    }

    /// The next intended send time, without waiting for it.
    pub(super) fn next(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let intended = self.pacer.as_ref().map_or(now, Pacer::next);
        if self.left == 0 || intended >= self.clock.stop_at || now >= self.clock.stop_at {
            return None;
        }
        self.left -= 1;
        if let Some(pacer) = self.pacer.as_mut() {
            pacer.advance();
        }
        Some(intended)
    }
}

/// Publishes over `duplex.v1`, reading the replies as they come.
/// A connected publisher.
enum PublisherConn {
    Ws(Ws),
    Http(HttpPublisher),
}

async fn publish_ws(
    mut ws: Ws,
    ctx: Arc<Deliveries>,
    publication: Publication,
    total: watch::Sender<Option<u64>>,
) -> Published {
    let ctx = &*ctx;
    let clock = ctx.clock();
    let mut out = Published::default();
    let mut replies = Replies::default();
    let channel = serde_json::to_string(&*publication.channel).expect("a string serialises");
    let mut schedule = Schedule::new(&clock, &publication);
    let result: Result<(), String> = async {
        while let Some(intended) = schedule.next() {
            while Instant::now() < intended {
                tokio::select! {
                    message = ws.recv() => replies.handle(message, ctx)?,
                    () = tokio::time::sleep_until(intended.into()) => {}
                }
            }
            let seq = out.sent;
            let data = data_json(seq, clock.unix_nanos(intended), ctx.size);
            // Ids 1 and 2 went to connect and subscribe.
            let command = format!(
                "{{\"id\":{},\"cmd\":\"publish\",\"channel\":{channel},\"data\":{data}}}",
                seq + 3
            );
            out.bytes_sent += command.len() as u64;
            ws.send(Message::text(command))
                .await
                .map_err(|e| format!("publish: {e}"))?;
            out.sent += 1;
            ctx.live.sent.fetch_add(1, Ordering::Relaxed);
            // Take the replies that are already here, so they never pile up.
            while let Some(message) = ws.recv().now_or_never() {
                replies.handle(message, ctx)?;
            }
        }
        let _ = total.send(Some(out.sent));
        let deadline = clock.stop_at.max(Instant::now()) + DRAIN;
        while replies.answered() < out.sent {
            tokio::select! {
                message = ws.recv() => replies.handle(message, ctx)?,
                () = tokio::time::sleep_until(deadline.into()) => break,
            }
        }
        Ok(())
    }
    .await;
    let _ = total.send(Some(out.sent));
    out.errors.refused += replies.refused;
    match result {
        Ok(()) => {
            let unanswered = out.sent.saturating_sub(replies.answered());
            if unanswered > 0 {
                out.errors.missing += unanswered;
                ctx.notes
                    .add(format!("{unanswered} publish commands got no reply"));
            }
            if let Err(error) = ws.close(CloseCode::NORMAL, "").await {
                out.errors.unclean_close += 1;
                ctx.notes.add(format!("publisher close: {error}"));
            }
        }
        Err(error) => {
            out.errors.connection += 1;
            let close = ws
                .close_frame()
                .map(|f| format!(" (close {}: {})", f.code, f.reason))
                .unwrap_or_default();
            ctx.notes.add(format!("publisher: {error}{close}"));
        }
    }
    out
}

/// Replies to the publisher's commands.
#[derive(Debug, Default)]
struct Replies {
    ok: u64,
    refused: u64,
}

impl Replies {
    fn answered(&self) -> u64 {
        self.ok + self.refused
    }

    fn handle(
        &mut self,
        message: Option<Result<Message, duplex::Error>>,
        ctx: &Deliveries,
    ) -> Result<(), String> {
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(format!("receive: {error}")),
            None => return Err("the server closed the connection".to_owned()),
        };
        let Some(reply) = message
            .as_text()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        else {
            return Ok(());
        };
        if reply.get("id").is_none() {
            return Ok(()); // a push
        }
        if let Some(error) = reply.get("error") {
            self.refused += 1;
            ctx.notes.add(format!("publish refused: {error}"));
        } else {
            self.ok += 1;
        }
        Ok(())
    }
}

/// A kept-alive HTTP/1.1 connection to the hub's HTTP API.
struct HttpPublisher {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    authority: duplex::http::uri::Authority,
    path: String,
    api_key: Option<String>,
}

impl HttpPublisher {
    async fn connect(uri: &Uri, api_key: Option<String>) -> anyhow::Result<Self> {
        let authority = uri.authority().context("the HTTP URL has no host")?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("cannot connect to {authority}"))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP publisher connection ended");
            }
        });
        Ok(Self {
            sender,
            driver,
            authority,
            path: format!("{}/api/publish", uri.path().trim_end_matches('/')),
            api_key,
        })
    }
}

impl Drop for HttpPublisher {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Publishes through the HTTP API, one request after the other on one kept-alive connection.
async fn publish_http(
    mut http: HttpPublisher,
    ctx: Arc<Deliveries>,
    publication: Publication,
    total: watch::Sender<Option<u64>>,
) -> Published {
    let mut out = Published::default();
    let result = publish_http_inner(&mut http, &ctx, &publication, &mut out).await;
    let _ = total.send(Some(out.sent));
    if let Err(error) = result {
        out.errors.connection += 1;
        ctx.notes.add(format!("HTTP publisher: {error:#}"));
    }
    out
}

async fn publish_http_inner(
    http: &mut HttpPublisher,
    ctx: &Deliveries,
    publication: &Publication,
    out: &mut Published,
) -> anyhow::Result<()> {
    let clock = ctx.clock();
    let channel = serde_json::to_string(&*publication.channel).expect("a string serialises");
    let mut schedule = Schedule::new(&clock, publication);
    while let Some(intended) = schedule.next() {
        tokio::time::sleep_until(intended.into()).await;
        let seq = out.sent;
        let data = data_json(seq, clock.unix_nanos(intended), ctx.size);
        let body = format!("{{\"channel\":{channel},\"data\":{data}}}");
        out.bytes_sent += body.len() as u64;
        let mut request = Request::post(http.path.as_str())
            .header(header::HOST, http.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = &http.api_key {
            request = request.header(header::AUTHORIZATION, format!("apikey {key}"));
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        http.sender
            .ready()
            .await
            .context("the HTTP connection failed")?;
        let response = http
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("POST {}", http.path))?;
        out.sent += 1;
        ctx.live.sent.fetch_add(1, Ordering::Relaxed);
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            out.errors.refused += 1;
            ctx.notes.add(format!(
                "POST {}: {status}: {}",
                http.path,
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            ));
        }
    }
    Ok(())
}

/// The JSON data of publication `seq`: `{"seq":..,"ts":..,"pad":".."}`, padded to `size`
/// bytes when that is more than the fields take.
pub(super) fn data_json(seq: u64, ts: u64, size: usize) -> String {
    let mut data = format!("{{\"seq\":{seq},\"ts\":{ts},\"pad\":\"");
    let len = pad_len(&data, size);
    data.extend(pad(seq, len));
    data.push_str("\"}");
    data
}

fn pad_len(head: &str, size: usize) -> usize {
    size.saturating_sub(head.len() + 2)
}

/// Filler that depends on the sequence number, so a body swapped between publications shows.
fn pad(seq: u64, len: usize) -> impl Iterator<Item = char> {
    (0..len).map(move |i| char::from(b'a' + ((seq % 26) as usize + i).rem_euclid(26) as u8))
}

/// Checks data made by [`data_json`] in full; returns its (seq, ts).
pub(super) fn check_data(data: &Value, size: usize) -> Result<(u64, u64), String> {
    let object = data
        .as_object()
        .ok_or_else(|| format!("data is not an object: {data:.100}"))?;
    let (Some(seq), Some(ts), Some(padding)) = (
        object.get("seq").and_then(Value::as_u64),
        object.get("ts").and_then(Value::as_u64),
        object.get("pad").and_then(Value::as_str),
    ) else {
        return Err(format!("data lacks seq, ts or pad: {data:.100}"));
    };
    if object.len() != 3 {
        return Err(format!("data has unexpected fields: {data:.100}"));
    }
    let head = format!("{{\"seq\":{seq},\"ts\":{ts},\"pad\":\"");
    let expected = pad_len(&head, size);
    if padding.len() != expected || !padding.chars().eq(pad(seq, expected)) {
        return Err(format!("the padding of publication {seq} differs"));
    }
    Ok((seq, ts))
}

/// What a receiver makes of a message.
pub(super) enum Item {
    /// Benchmark data (or why it is not).
    Data(Result<(u64, u64), String>),
    /// A room probe (rooms mode, before the data).
    Probe,
    /// Anything else: replies, joins, leaves.
    Other,
}

/// A `duplex.v1` push: publications on our channel are data.
fn classify_push(message: &Message, channel: &str, size: usize) -> Item {
    let Some(text) = message.as_text() else {
        return Item::Data(Err("a binary frame arrived".to_owned()));
    };
    let push: Value = match serde_json::from_str(text) {
        Ok(push) => push,
        Err(error) => return Item::Data(Err(format!("not JSON ({error}): {text:.100}"))),
    };
    match push["push"].as_str() {
        Some("publication") if push["channel"].as_str() == Some(channel) => {
            Item::Data(check_data(&push["data"], size))
        }
        Some("disconnect") => Item::Data(Err(format!("disconnect push: {push}"))),
        _ => Item::Other,
    }
}

/// Per-receiver order check of one publisher's sequence numbers.
#[derive(Debug, Default)]
pub(super) struct SeqCheck {
    /// The sequence number expected next.
    next: u64,
    /// Sequence numbers jumped over and not (yet) received.
    skipped: BTreeSet<u64>,
    /// Jumped over but not remembered (the set is bounded).
    untracked: u64,
    /// Distinct publications received.
    received: u64,
    duplicate: u64,
    reordered: u64,
}

/// Jumped-over sequence numbers one receiver remembers.
const MAX_SKIPPED: usize = 4096;

/// What [`SeqCheck::on`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// First delivery, in order or after a gap.
    Fresh,
    /// First delivery, after a later one (reordered).
    Late,
    /// Delivered before.
    Duplicate,
}

impl SeqCheck {
    pub(super) fn on(&mut self, seq: u64) -> Verdict {
        if seq >= self.next {
            let gap = seq - self.next;
            let room = (MAX_SKIPPED - self.skipped.len()) as u64;
            self.skipped.extend(self.next..self.next + gap.min(room));
            self.untracked += gap.saturating_sub(room);
            self.next = seq.saturating_add(1);
            self.received += 1;
            Verdict::Fresh
        } else if self.skipped.remove(&seq) {
            self.reordered += 1;
            self.received += 1;
            Verdict::Late
        } else {
            self.duplicate += 1;
            Verdict::Duplicate
        }
    }

    /// Whether all of `0..total` arrived.
    pub(super) fn complete(&self, total: u64) -> bool {
        self.next >= total && self.skipped.is_empty() && self.untracked == 0
    }

    /// Publications of `0..total` never received.
    pub(super) fn missing(&self, total: u64) -> u64 {
        total.saturating_sub(self.next) + self.skipped.len() as u64 + self.untracked
    }
}

/// What the receivers of one run share.
pub(super) struct Deliveries {
    /// Set before the first data is sent.
    pub clock: OnceLock<Clock>,
    pub size: usize,
    pub latencies: Arc<Latencies>,
    /// Time (ns from the clock's base) of the last measured delivery.
    pub last_measured: AtomicU64,
    /// Receivers that heard a probe (rooms).
    pub ready: AtomicU64,
    pub live: Arc<Live>,
    pub notes: Arc<Notes>,
}

impl Deliveries {
    pub(super) fn new(size: usize, live: Arc<Live>, notes: Arc<Notes>) -> Self {
        Self {
            clock: OnceLock::new(),
            size,
            latencies: Latencies::new(),
            last_measured: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            live,
            notes,
        }
    }

    /// The run's clock.
    ///
    /// # Panics
    /// Before the clock is set; publishers only start after it is.
    pub(super) fn clock(&self) -> Clock {
        self.clock
            .get()
            .expect("the clock is set before publishing starts")
            .clone()
    }
}

/// The receivers' counts.
#[derive(Debug, Default)]
pub(super) struct Delivered {
    pub received: u64,
    pub bytes_received: u64,
    pub measured: u64,
    pub measured_bytes: u64,
    pub errors: Errors,
}

impl Delivered {
    fn add(&mut self, other: &Delivered) {
        self.received += other.received;
        self.bytes_received += other.bytes_received;
        self.measured += other.measured;
        self.measured_bytes += other.measured_bytes;
        self.errors.add(&other.errors);
    }
}

/// Runs a receive loop on every connection until each has everything the publisher sent (or
/// the drain time is over); sums their counts.
pub(super) async fn receive_all<F>(
    conns: Vec<Ws>,
    ctx: &Arc<Deliveries>,
    total: &watch::Receiver<Option<u64>>,
    classify: F,
) -> Delivered
where
    F: Fn(&Message, usize) -> Item + Clone + Send + Sync + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (index, ws) in conns.into_iter().enumerate() {
        tasks.spawn(receive(
            ws,
            ctx.clone(),
            total.clone(),
            classify.clone(),
            index,
        ));
    }
    let mut sum = Delivered::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(delivered) => sum.add(&delivered),
            Err(error) => {
                sum.errors.connection += 1;
                ctx.notes.add(format!("receiver task failed: {error}"));
            }
        }
    }
    sum
}

async fn receive<F>(
    mut ws: Ws,
    ctx: Arc<Deliveries>,
    mut total: watch::Receiver<Option<u64>>,
    classify: F,
    index: usize,
) -> Delivered
where
    F: Fn(&Message, usize) -> Item,
{
    let mut out = Delivered::default();
    let mut check = SeqCheck::default();
    let mut recorder = ctx.latencies.recorder(index);
    let mut probed = false;
    let mut publisher_gone = false;
    let failure: Option<String> = loop {
        let expected = *total.borrow_and_update();
        if let Some(expected) = expected {
            if check.complete(expected) {
                break None;
            }
        } else if publisher_gone {
            break None;
        }
        // Before the clock is set (rooms' probing) the publisher side bounds the wait.
        let deadline = ctx.clock.get().map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            |clock| clock.stop_at + DRAIN,
        );
        tokio::select! {
            message = ws.recv() => match message {
                Some(Ok(message)) => match classify(&message, ctx.size) {
                    Item::Data(Ok((seq, ts))) => {
                        let now = Instant::now();
                        match check.on(seq) {
                            Verdict::Duplicate => {
                                ctx.notes.add(format!("publication {seq} delivered twice"));
                                continue;
                            }
                            Verdict::Late => ctx.notes.add(format!(
                                "publication {seq} delivered after a later one"
                            )),
                            Verdict::Fresh => {}
                        }
                        out.bytes_received += message.len() as u64;
                        ctx.live.received.fetch_add(1, Ordering::Relaxed);
                        let Some(clock) = ctx.clock.get() else { continue };
                        let Some(sent) = ts.checked_sub(clock.unix_base) else { continue };
                        let intended = clock.instant(sent);
                        if clock.measured(intended) {
                            recorder.record(now.saturating_duration_since(intended));
                            out.measured += 1;
                            out.measured_bytes += message.len() as u64;
                            ctx.last_measured.fetch_max(clock.nanos(now), Ordering::Relaxed);
                        }
                    }
                    Item::Data(Err(why)) => {
                        out.errors.corrupt += 1;
                        ctx.live.errors.fetch_add(1, Ordering::Relaxed);
                        ctx.notes.add(why);
                    }
                    Item::Probe => {
                        if !probed {
                            probed = true;
                            ctx.ready.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Item::Other => {}
                },
                Some(Err(error)) => break Some(format!("receive: {error}")),
                None => break Some(format!(
                    "the server closed a receiving connection ({:?})",
                    ws.close_frame()
                )),
            },
            changed = total.changed(), if !publisher_gone => {
                publisher_gone = changed.is_err();
            }
            () = tokio::time::sleep_until(deadline.into()) => break None,
        }
    };
    recorder.flush();
    let expected = total.borrow().unwrap_or(0);
    out.received = check.received;
    out.errors.duplicate = check.duplicate;
    out.errors.reordered = check.reordered;
    out.errors.missing = check.missing(expected);
    match failure {
        Some(error) => {
            out.errors.connection += 1;
            ctx.notes.add(error);
        }
        None => {
            if let Err(error) = ws.close(CloseCode::NORMAL, "").await {
                out.errors.unclean_close += 1;
                ctx.notes.add(format!("close: {error}"));
            }
        }
    }
    let errors = &out.errors;
    ctx.live.errors.fetch_add(
        errors.missing + errors.duplicate + errors.reordered + errors.connection,
        Ordering::Relaxed,
    );
    out
}

/// The receiving connections of a fan-out or rooms run.
pub(super) struct Receivers<'a> {
    pub opened: u64,
    pub failed: u64,
    pub open_latency: &'a hdrhistogram::Histogram<u64>,
}

/// The report of a fan-out or rooms run.
pub(super) fn delivery_report(
    mode: &'static str,
    url: String,
    settings: Settings,
    receivers: &Receivers<'_>,
    delivered: Delivered,
    published: Published,
    ctx: &Deliveries,
) -> (Report, hdrhistogram::Histogram<u64>) {
    let latencies = ctx.latencies.merged();
    let elapsed = ctx.clock.get().map_or(Duration::ZERO, |clock| {
        clock.elapsed(ctx.last_measured.load(Ordering::Relaxed))
    });
    let per_s = |x: u64| {
        if elapsed.is_zero() {
            0.0
        } else {
            x as f64 / elapsed.as_secs_f64()
        }
    };
    let mut errors = delivered.errors;
    errors.connect += receivers.failed;
    errors.add(&published.errors);
    let opened = receivers.opened;
    let mut report = Report {
        mode,
        url,
        connections: Connections {
            requested: settings.connections,
            opened,
            failed: receivers.failed,
            open_us: report::Summary::of(receivers.open_latency),
        },
        settings,
        elapsed_s: elapsed.as_secs_f64(),
        sent: published.sent,
        received: delivered.received,
        expected: published.sent * opened,
        bytes_sent: published.bytes_sent,
        bytes_received: delivered.bytes_received,
        throughput: Throughput {
            messages_per_s: per_s(delivered.measured),
            bytes_per_s: per_s(delivered.measured_bytes),
        },
        latency_us: report::Summary::of(&latencies),
        latency_from: "intended publish time",
        errors,
        notes: ctx.notes.list(),
        ..Default::default()
    };
    report.judge();
    if published.sent == 0 {
        report.ok = false;
        report.notes.push("nothing was published".to_owned());
    }
    (report, latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_padded_and_checked_in_full() {
        for size in [0, 10, 64, 1000] {
            let data = data_json(7, 123_456_789, size);
            if size > 40 {
                assert_eq!(data.len(), size);
            }
            let value: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(check_data(&value, size), Ok((7, 123_456_789)));
        }
        let value: Value = serde_json::from_str(&data_json(7, 1, 64)).unwrap();
        let mut bad = value.clone();
        bad["pad"] = json!(bad["pad"].as_str().unwrap().replacen('h', "i", 1));
        assert!(check_data(&bad, 64).is_err());
        let mut extra = value.clone();
        extra["more"] = json!(1);
        assert!(check_data(&extra, 64).is_err());
        assert!(check_data(&json!({"seq": 7, "ts": 1}), 64).is_err());
        assert!(check_data(&json!("text"), 64).is_err());
    }

    #[test]
    fn pushes_on_other_channels_are_not_data() {
        let data: Value = serde_json::from_str(&data_json(0, 5, 64)).unwrap();
        let push = |channel: &str| {
            Message::text(
                json!({"push": "publication", "channel": channel, "offset": 1, "data": data})
                    .to_string(),
            )
        };
        assert!(matches!(
            classify_push(&push("bench:fanout"), "bench:fanout", 64),
            Item::Data(Ok((0, 5)))
        ));
        assert!(matches!(
            classify_push(&push("other"), "bench:fanout", 64),
            Item::Other
        ));
        let join = Message::text(r#"{"push":"join","channel":"bench:fanout","info":{}}"#);
        assert!(matches!(
            classify_push(&join, "bench:fanout", 64),
            Item::Other
        ));
        assert!(matches!(
            classify_push(&Message::text("{oops"), "bench:fanout", 64),
            Item::Data(Err(_))
        ));
    }

    #[test]
    fn sequence_check_counts_gaps_duplicates_and_reordering() {
        let mut check = SeqCheck::default();
        assert_eq!(check.on(0), Verdict::Fresh);
        assert_eq!(check.on(1), Verdict::Fresh);
        assert_eq!(check.on(4), Verdict::Fresh); // 2 and 3 skipped
        assert_eq!(check.on(2), Verdict::Late);
        assert_eq!(check.on(2), Verdict::Duplicate);
        assert_eq!(check.on(0), Verdict::Duplicate);
        assert_eq!(check.received, 4);
        assert_eq!((check.duplicate, check.reordered), (2, 1));
        assert!(!check.complete(5));
        assert_eq!(check.missing(5), 1); // 3
        assert_eq!(check.missing(7), 3); // 3, 5, 6
        assert_eq!(check.on(3), Verdict::Late);
        assert!(check.complete(5));

        let mut in_order = SeqCheck::default();
        for seq in 0..100 {
            assert_eq!(in_order.on(seq), Verdict::Fresh);
        }
        assert!(in_order.complete(100));
        assert_eq!(in_order.missing(100), 0);

        // A wild sequence number does not make the check remember billions of gaps.
        let mut wild = SeqCheck::default();
        wild.on(u64::MAX - 1);
        assert_eq!(wild.skipped.len(), MAX_SKIPPED);
        assert_eq!(wild.missing(u64::MAX), u64::MAX - 1);
    }

    #[test]
    fn default_paths() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            with_default_path(&uri("ws://127.0.0.1:8080"), "/ws"),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            with_default_path(&uri("ws://127.0.0.1:8080/"), "/ws"),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            with_default_path(&uri("wss://localhost/custom?token=x"), "/ws"),
            "wss://localhost/custom?token=x"
        );
    }
}
