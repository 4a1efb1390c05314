//! The server side of the opening handshake over a raw stream: [`accept`] and
//! [`ServerBuilder`].

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::websocket::WebSocket;
use bytes::BytesMut;
use duplex_proto::handshake::{self, HeadReader, ServerUpgrade};
use duplex_proto::{Config, Connection, HandshakeError, Role};
use http::{HeaderMap, Request};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

/// Accepts a WebSocket connection on `stream` with the default configuration.
///
/// Reads the upgrade request, validates it and answers `101 Switching Protocols`; a bad
/// request is answered with its HTTP error status and fails with [`Error::Handshake`].
///
/// ```no_run
/// # async fn run() -> Result<(), duplex::Error> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let (tcp, _) = listener.accept().await?;
/// let mut ws = duplex::accept(tcp).await?;
/// while let Some(message) = ws.recv().await {
///     ws.send(message?).await?;
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`ServerBuilder::accept`].
pub async fn accept<S>(stream: S) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ServerBuilder::new().accept(stream).await
}

/// Server options; reusable for every accepted connection.
#[derive(Clone, Debug)]
pub struct ServerBuilder {
    /// Shared by every connection accepted with it.
    config: Arc<WebSocketConfig>,
    handshake_timeout: Duration,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// Default configuration, 10 s handshake timeout.
    pub fn new() -> Self {
        Self {
            config: crate::config::shared_default(),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Sets the connection configuration (limits, deflate, buffering, timers). Every
    /// connection this builder accepts shares it; so can other builders, given the same
    /// `Arc`.
    pub fn config(mut self, config: impl Into<Arc<WebSocketConfig>>) -> Self {
        self.config = config.into();
        self
    }

    /// Sets how long the client has to send its request, and we to answer it. Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The connection configuration.
    pub fn websocket_config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// Accepts any valid upgrade request on `stream`.
    ///
    /// # Errors
    /// [`Error::Handshake`] for an invalid request (answered with its status before
    /// returning), [`Error::Timeout`] after the handshake timeout, [`Error::Io`],
    /// [`Error::Config`] for an invalid configuration.
    pub async fn accept<S>(&self, stream: S) -> Result<WebSocket<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.accept_with(
            stream,
            |_: &Request<()>, _: &mut ServerUpgrade, _: &mut HeaderMap| Ok(()),
        )
        .await
    }

    /// Accepts the connection if `callback` agrees.
    ///
    /// The callback runs after the request passed the RFC 6455 checks. It sees the request
    /// (path, query, headers, `Origin`) and the [`ServerUpgrade`], on which it may
    /// [select a subprotocol](ServerUpgrade::select_protocol); headers it adds to the map are
    /// sent with the `101` response. Returning an error rejects the client with that status
    /// (written as a plain HTTP response, then the connection is shut down).
    ///
    /// ```no_run
    /// use duplex::{HandshakeError, ServerBuilder};
    /// use http::StatusCode;
    /// # async fn run(tcp: tokio::net::TcpStream) -> Result<(), duplex::Error> {
    /// let ws = ServerBuilder::new()
    ///     .accept_with(tcp, |request, upgrade, _headers| {
    ///         if upgrade.origin() != Some("https://example.com") {
    ///             return Err(HandshakeError::new(StatusCode::FORBIDDEN, "unknown origin"));
    ///         }
    ///         if upgrade.protocols().iter().any(|p| p == "chat") {
    ///             upgrade.select_protocol("chat")?;
    ///         }
    ///         println!("upgrade on {}", request.uri().path());
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # drop(ws); Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`accept`](Self::accept), and [`Error::Handshake`] with the callback's error.
    pub async fn accept_with<S, F>(&self, stream: S, callback: F) -> Result<WebSocket<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: FnOnce(&Request<()>, &mut ServerUpgrade, &mut HeaderMap) -> Result<(), HandshakeError>,
    {
        // The handshake's state (the request buffer, the parsed request, the response, the
        // timer) lives in a box freed when it is done: the caller's future, which typically
        // lives as long as the connection, then stays small.
        Box::pin(self.handshake(stream, callback)).await
    }

    async fn handshake<S, F>(&self, mut stream: S, callback: F) -> Result<WebSocket<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: FnOnce(&Request<()>, &mut ServerUpgrade, &mut HeaderMap) -> Result<(), HandshakeError>,
    {
        self.config.validate()?;
        let proto = &self.config.proto;
        let mut buf = BytesMut::with_capacity(1024);
        let handshake = async {
            let result = answer(&mut stream, &mut buf, proto, callback).await;
            if let Err(Error::Handshake(rejection)) = &result {
                debug!(status = %rejection.status(), "rejecting WebSocket upgrade: {}", rejection.message());
                let mut out = BytesMut::new();
                rejection.write_response(&mut out);
                // Best effort: the client may already be gone.
                let _ = stream.write_all(&out).await;
                let _ = stream.shutdown().await;
            }
            result
        };
        let (head_len, upgrade) = tokio::time::timeout(self.handshake_timeout, handshake)
            .await
            .map_err(|_| Error::Timeout("opening handshake"))??;
        let conn = Connection::with_deflate(
            Role::Server,
            crate::config::shared_proto(proto),
            upgrade.deflate(),
        );
        Ok(WebSocket::from_parts(
            stream,
            conn,
            Arc::clone(&self.config),
            &buf[head_len..],
        ))
    }
}

/// Reads and validates the request, asks the callback, writes the `101`.
async fn answer<S, F>(
    stream: &mut S,
    buf: &mut BytesMut,
    config: &Config,
    callback: F,
) -> Result<(usize, ServerUpgrade), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request<()>, &mut ServerUpgrade, &mut HeaderMap) -> Result<(), HandshakeError>,
{
    let head_len = read_head(stream, buf, config).await?;
    let (upgrade, out) = respond(&buf[..head_len], config, callback)?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok((head_len, upgrade))
}

/// Parses and checks the request, lets `callback` look at it, and writes the `101`. Apart
/// from `answer` so that the request and the extra headers are gone before it awaits the
/// write: a future keeps every local that lives across an await, and this one is boxed per
/// connection (under 1 KiB, glibc, the default allocator, serves it from its per-thread
/// cache).
fn respond<F>(
    head: &[u8],
    config: &Config,
    callback: F,
) -> Result<(ServerUpgrade, BytesMut), HandshakeError>
where
    F: FnOnce(&Request<()>, &mut ServerUpgrade, &mut HeaderMap) -> Result<(), HandshakeError>,
{
    let request = handshake::parse_request(head, config)?;
    let mut upgrade = handshake::accept(&request, config)?;
    let mut headers = HeaderMap::new();
    callback(&request, &mut upgrade, &mut headers)?;
    let mut out = BytesMut::new();
    upgrade.write_response(&headers, &mut out);
    Ok((upgrade, out))
}

/// Reads until `buf` holds a complete HTTP head; returns its length. Bytes after it are the
/// first WebSocket frames.
pub(crate) async fn read_head<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    config: &Config,
) -> Result<usize, Error>
where
    S: AsyncRead + Unpin,
{
    let mut reader = HeadReader::new();
    loop {
        if let Some(len) = reader.poll(buf, config)? {
            return Ok(len);
        }
        if buf.capacity() - buf.len() < 256 {
            buf.reserve(1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed during the opening handshake",
            )));
        }
    }
}
