//! `duplex connect`: a pipe between stdin/stdout and a WebSocket.

use crate::size::parse_size;
use anyhow::{bail, Context as _};
use duplex::http::{HeaderName, HeaderValue};
use duplex::{
    ClientBuilder, CloseCode, Config, DeflateConfig, Message, WebSocket, WebSocketConfig,
};
use std::fmt::Write as _;
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::info;

/// Options of `duplex connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// ws:// or wss:// URL.
    url: String,
    /// Send every received message back unchanged (text as text, binary as binary) until
    /// the server closes; stdin is not read.
    #[arg(long)]
    echo: bool,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Extra request header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Offer this subprotocol; repeatable, most preferred first.
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Also trust the CA certificates in this PEM file (wss://).
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (wss://). Only for testing: anyone in between can read
    /// and change the traffic.
    #[arg(long)]
    insecure: bool,
    /// Largest message and frame accepted.
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    max_message_size: usize,
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not `Name: value`"))?;
    let name = HeaderName::try_from(name.trim()).map_err(|e| format!("{name:?}: {e}"))?;
    let value = HeaderValue::try_from(value.trim()).map_err(|e| format!("{value:?}: {e}"))?;
    Ok((name, value))
}

/// Connects, then pipes or echoes until the connection ends.
pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let deflate = (!args.no_deflate).then(DeflateConfig::default);
    let proto = Config::default()
        .with_max_message_size(args.max_message_size)
        .with_max_frame_size(args.max_message_size)
        .with_deflate(deflate);
    let mut builder = ClientBuilder::new(&args.url)
        .config(WebSocketConfig::default().with_proto(proto))
        .protocols(args.subprotocols.iter().cloned());
    for (name, value) in args.headers {
        builder = builder.header(name, value);
    }
    if let Some(ca) = &args.ca {
        builder = builder.add_root_certificate_pem(ca);
    }
    if args.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    let (ws, response) = builder
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    info!(
        url = %args.url,
        protocol = ?response.headers().get("sec-websocket-protocol"),
        extensions = ?response.headers().get("sec-websocket-extensions"),
        "connected"
    );
    if args.echo {
        echo(ws).await
    } else {
        pipe(ws).await
    }
}

async fn echo<S>(mut ws: WebSocket<S>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    while let Some(message) = ws.recv().await {
        ws.send(message?).await?;
    }
    report_close(ws.close_frame());
    Ok(())
}

async fn pipe<S>(ws: WebSocket<S>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = ws.split();
    let mut printer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(message) = reader.recv().await {
            let line = match message? {
                Message::Text(text) => text.to_string(),
                Message::Binary(data) => hex(&data),
            };
            stdout.write_all(line.as_bytes()).await?;
            stdout.write_all(b"\n").await?;
            stdout.flush().await?;
        }
        anyhow::Ok(reader.close_frame())
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let printed = loop {
        tokio::select! {
            line = lines.next_line() => match line.context("reading stdin")? {
                Some(line) => writer.send(Message::text(line)).await?,
                None => {
                    writer.close(CloseCode::NORMAL, "").await?;
                    break printer.await;
                }
            },
            // The server ended the connection first.
            printed = &mut printer => break printed,
        }
    };
    let close = printed.context("output task failed")??;
    report_close(close);
    if !writer.is_closed() {
        bail!("connection did not close cleanly");
    }
    Ok(())
}

fn report_close(frame: Option<duplex::CloseFrame>) {
    match frame {
        Some(frame) => info!(code = %frame.code, reason = %frame.reason, "closed"),
        None => info!("closed"),
    }
}

fn hex(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 2);
    for byte in data {
        let _ = write!(out, "{byte:02x}");
    }
    out
}
