//! The client side: [`connect`] and [`ClientBuilder`].

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::server::read_head;
use crate::stream::MaybeTlsStream;
use crate::websocket::WebSocket;
use bytes::BytesMut;
use duplex_proto::handshake::ClientHandshake;
use duplex_proto::{Connection, Role};
use http::header::ORIGIN;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[cfg(feature = "tls")]
use crate::tls::{TlsOptions, TlsRoots};
#[cfg(feature = "tls")]
use std::path::PathBuf;

/// Connects to a `ws://` or `wss://` URL with the default options: permessage-deflate
/// offered, webpki roots for TLS, 10 s connect and handshake timeouts.
///
/// Returns the WebSocket and the server's `101` response (for its headers and the selected
/// subprotocol).
///
/// ```no_run
/// # async fn run() -> Result<(), duplex::Error> {
/// let (mut ws, _response) = duplex::connect("wss://example.com/chat").await?;
/// ws.send(duplex::Message::text("hello")).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`ClientBuilder::connect`].
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
    ClientBuilder::new(url).connect().await
}

/// Client options, ending in [`connect`](Self::connect) or [`connect_on`](Self::connect_on).
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    url: String,
    headers: HeaderMap,
    protocols: Vec<String>,
    config: WebSocketConfig,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    #[cfg(feature = "tls")]
    tls: TlsOptions,
}

impl ClientBuilder {
    /// Options for connecting to `url` (`ws://host[:port]/path?query` or `wss://...`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: HeaderMap::new(),
            protocols: Vec::new(),
            config: WebSocketConfig::default(),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            #[cfg(feature = "tls")]
            tls: TlsOptions::default(),
        }
    }

    /// Adds a request header (`Authorization`, `Cookie`...). Headers the handshake owns
    /// (`Upgrade`, `Connection`, `Sec-WebSocket-*`) are not sent; use
    /// [`protocols`](Self::protocols) for subprotocols.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the `Origin` header (browsers always send one; servers may check it).
    pub fn origin(mut self, origin: HeaderValue) -> Self {
        self.headers.insert(ORIGIN, origin);
        self
    }

    /// Offers these subprotocols, most preferred first.
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the connection configuration. Its [`proto`](WebSocketConfig::proto)`.deflate`
    /// decides whether permessage-deflate is offered (it is by default).
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// How long the TCP connect may take. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the TLS and WebSocket handshakes may take together. Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Which trust anchors to start from. Default [`TlsRoots::WebPki`].
    #[cfg(feature = "tls")]
    pub fn tls_roots(mut self, roots: TlsRoots) -> Self {
        self.tls.roots = roots;
        self
    }

    /// Also trusts the CA certificates in this PEM file (read when connecting).
    #[cfg(feature = "tls")]
    pub fn add_root_certificate_pem(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_files.push(path.into());
        self
    }

    /// Accepts any server certificate, expired or for another name, signed by anyone.
    ///
    /// Only for tests and debugging: the connection is encrypted but anyone in between can
    /// read and change it. Default `false`.
    #[cfg(feature = "tls")]
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.danger_accept_invalid_certs = accept;
        self
    }

    /// Uses this rustls configuration as is, instead of one built from the options above.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// Connects: TCP (with `TCP_NODELAY`), TLS for `wss://`, then the opening handshake.
    ///
    /// # Errors
    /// [`Error::Url`] for an unusable URL, [`Error::Timeout`] (`"connect"` or
    /// `"opening handshake"`), [`Error::Io`], [`Error::Tls`], and [`Error::Handshake`] when
    /// the server refused (its status, say `403`) or answered against RFC 6455 (`502`).
    pub async fn connect(&self) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
        let handshake = self.prepare()?;
        let address = (handshake.host(), handshake.port());
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| Error::Timeout("connect"))??;
        tcp.set_nodelay(true)?;
        let work = async {
            let stream = if handshake.is_tls() {
                self.wrap_tls(tcp, handshake.host()).await?
            } else {
                MaybeTlsStream::Plain(tcp)
            };
            self.upgrade(stream, &handshake).await
        };
        tokio::time::timeout(self.handshake_timeout, work)
            .await
            .map_err(|_| Error::Timeout("opening handshake"))?
    }

    /// Runs the opening handshake on a stream that is already connected (and already
    /// encrypted, if the URL says `wss://`: this does not add TLS).
    ///
    /// # Errors
    /// As [`connect`](Self::connect), without the connect step.
    pub async fn connect_on<S>(&self, stream: S) -> Result<(WebSocket<S>, Response<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = self.prepare()?;
        tokio::time::timeout(self.handshake_timeout, self.upgrade(stream, &handshake))
            .await
            .map_err(|_| Error::Timeout("opening handshake"))?
    }

    fn prepare(&self) -> Result<ClientHandshake, Error> {
        self.config.validate()?;
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e| Error::Url(format!("{}: {e}", self.url)))?;
        let mut handshake = ClientHandshake::new(&uri, &self.config.proto).map_err(|e| {
            if e.status() == StatusCode::BAD_REQUEST {
                Error::Url(e.message().to_owned())
            } else {
                Error::Handshake(e)
            }
        })?;
        if !self.protocols.is_empty() {
            handshake = handshake.protocols(self.protocols.iter().cloned());
        }
        handshake.headers_mut().extend(self.headers.clone());
        #[cfg(not(feature = "tls"))]
        if handshake.is_tls() {
            return Err(Error::Url(format!(
                "{}: wss:// needs duplex's `tls` feature",
                self.url
            )));
        }
        Ok(handshake)
    }

    #[cfg(feature = "tls")]
    async fn wrap_tls(&self, tcp: TcpStream, host: &str) -> Result<MaybeTlsStream, Error> {
        let connector = tokio_rustls::TlsConnector::from(self.tls.client_config()?);
        let name = crate::tls::server_name(host)?;
        let tls = connector.connect(name, tcp).await.map_err(|e| {
            // tokio-rustls reports TLS failures (bad certificate, alerts) as InvalidData.
            if e.kind() == std::io::ErrorKind::InvalidData {
                match e.into_inner() {
                    Some(inner) => Error::Tls(inner),
                    None => Error::Tls("TLS handshake failed".into()),
                }
            } else {
                Error::Io(e)
            }
        })?;
        Ok(MaybeTlsStream::Rustls(Box::new(tls)))
    }

    #[cfg(not(feature = "tls"))]
    async fn wrap_tls(&self, _tcp: TcpStream, _host: &str) -> Result<MaybeTlsStream, Error> {
        Err(Error::Url("wss:// needs duplex's `tls` feature".into()))
    }

    async fn upgrade<S>(
        &self,
        mut stream: S,
        handshake: &ClientHandshake,
    ) -> Result<(WebSocket<S>, Response<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut out = BytesMut::new();
        handshake.write_request(&mut out);
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut buf = BytesMut::with_capacity(1024);
        let head_len = read_head(&mut stream, &mut buf, &self.config.proto).await?;
        let upgrade = handshake.handle_response(&buf[..head_len])?;
        let conn = Connection::with_deflate(
            Role::Client,
            crate::config::shared_proto(&self.config.proto),
            upgrade.deflate(),
        );
        let ws = WebSocket::from_parts(
            stream,
            conn,
            Arc::new(self.config.clone()),
            &buf[head_len..],
        );
        Ok((ws, upgrade.into_response()))
    }
}
