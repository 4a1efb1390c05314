//! Upgrades from hyper 1.x and axum 0.8.
#![cfg(all(feature = "hyper", feature = "axum"))]

mod common;

use common::{bounded, echo};
use duplex::{ClientBuilder, CloseCode, Error, Message};
use http::StatusCode;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn hyper_handler(
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let result = duplex::hyper::upgrade_with(
        &mut request,
        duplex::WebSocketConfig::default(),
        |request, upgrade, headers| {
            if request.uri().path() != "/ws" {
                return Err(duplex::HandshakeError::new(
                    StatusCode::NOT_FOUND,
                    "no such endpoint",
                ));
            }
            if upgrade.protocols().iter().any(|p| p == "echo") {
                upgrade.select_protocol("echo")?;
            }
            headers.insert("x-hyper", http::HeaderValue::from_static("yes"));
            Ok(())
        },
    );
    match result {
        Ok((response, pending)) => {
            tokio::spawn(async move {
                echo(pending.await.unwrap()).await;
            });
            Ok(response)
        }
        Err(rejection) => Ok(rejection.response().map(Full::from)),
    }
}

#[tokio::test]
async fn hyper_upgrade() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                serve_one(tcp, hyper_handler);
            }
        });
        let (mut ws, response) = ClientBuilder::new(format!("ws://{addr}/ws"))
            .protocols(["echo"])
            .connect()
            .await
            .unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "echo");
        assert_eq!(response.headers()["x-hyper"], "yes");
        assert!(response.headers().contains_key("sec-websocket-extensions"));
        let text = "through hyper ".repeat(1000);
        ws.send(Message::text(text.as_str())).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap().as_text(),
            Some(text.as_str())
        );
        ws.close(CloseCode::NORMAL, "").await.unwrap();

        let error = duplex::connect(&format!("ws://{addr}/elsewhere"))
            .await
            .unwrap_err();
        assert_eq!(error.handshake_status(), Some(StatusCode::NOT_FOUND));
    })
    .await;
}

async fn axum_handler(upgrade: duplex::axum::WebSocketUpgrade) -> axum::response::Response {
    upgrade.protocols(["chat.v2", "chat.v1"]).on_upgrade(echo)
}

#[tokio::test]
async fn axum_extractor() {
    bounded(async {
        let app = axum::Router::new().route("/chat", axum::routing::get(axum_handler));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let (mut ws, response) = ClientBuilder::new(format!("ws://{addr}/chat"))
            .protocols(["chat.v1"])
            .connect()
            .await
            .unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
        ws.send(Message::binary(vec![9u8; 100_000])).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::binary(vec![9u8; 100_000])
        );
        ws.close(CloseCode::NORMAL, "").await.unwrap();

        // A plain GET is rejected with the handshake error's status.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut tcp,
            b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut answer)
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");

        let error = ClientBuilder::new(format!("ws://{addr}/missing"))
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Handshake(_)), "{error:?}");
    })
    .await;
}

/// Tells the client whether the WebSocket reads and writes the TCP stream itself, then
/// echoes.
async fn report_transport_then_echo(
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (response, pending) =
        duplex::hyper::upgrade(&mut request, duplex::WebSocketConfig::default()).unwrap();
    tokio::spawn(async move {
        let mut ws = pending.await.unwrap();
        let direct = ws.with_transport(|io| matches!(io, duplex::hyper::Either::Left(_)));
        ws.send(Message::text(format!("direct={direct}")))
            .await
            .unwrap();
        echo(ws).await;
    });
    Ok(response)
}

/// Serves one connection over `io` with hyper and `handler`, upgrades allowed.
fn serve_one<I, H, F>(io: I, handler: H)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + 'static,
    F: std::future::Future<Output = Result<Response<Full<Bytes>>, std::convert::Infallible>>
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(io), service_fn(handler))
            .with_upgrades()
            .await;
    });
}

/// hyper serving plain TCP: the WebSocket gets the TCP stream back from hyper, and a frame
/// the client sent in the same write as its request (which hyper read ahead) is not lost.
#[tokio::test]
async fn hyper_upgrade_takes_the_tcp_stream_back_with_the_bytes_read_ahead() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            serve_one(tcp, report_transport_then_echo);
        });
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The request and a masked text frame "early", in one write.
        let mut bytes = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        let mask = [1u8, 2, 3, 4];
        bytes.extend_from_slice(&[0x81, 0x80 | 5]);
        bytes.extend_from_slice(&mask);
        bytes.extend(b"early".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        tcp.write_all(&bytes).await.unwrap();
        // The 101, then two unmasked text frames: the report and the echo.
        let expected = [&b"direct=true"[..], &b"early"[..]];
        let mut received = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 512];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            received.extend_from_slice(&chunk[..n]);
            if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        assert!(received.starts_with(b"HTTP/1.1 101"));
        let frames_len: usize = expected.iter().map(|p| 2 + p.len()).sum();
        while received.len() < head_end + frames_len {
            let mut chunk = [0u8; 512];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            received.extend_from_slice(&chunk[..n]);
        }
        let mut frames = &received[head_end..];
        for payload in expected {
            assert_eq!(frames[0], 0x81);
            assert_eq!(usize::from(frames[1]), payload.len());
            assert_eq!(&frames[2..2 + payload.len()], payload);
            frames = &frames[2 + payload.len()..];
        }
        // The next frame answers our close: "early" was not handled twice.
        let mut rest = frames.to_vec();
        let code = 1000u16.to_be_bytes();
        let mut close = vec![0x88, 0x80 | 2];
        close.extend_from_slice(&mask);
        close.extend(code.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        tcp.write_all(&close).await.unwrap();
        while rest.len() < 2 {
            let mut chunk = [0u8; 512];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed without a close frame");
            rest.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(rest[0], 0x88, "expected the close reply, got {rest:?}");
    })
    .await;
}

/// Any other transport stays behind hyper's `Upgraded`, and works the same.
#[tokio::test]
async fn hyper_upgrade_over_another_transport_stays_behind_upgraded() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(64 << 10);
        serve_one(server_io, report_transport_then_echo);
        let (mut ws, _) = ClientBuilder::new("ws://localhost/ws")
            .connect_on(client_io)
            .await
            .unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::text("direct=false")
        );
        ws.send(Message::binary(vec![7u8; 70_000])).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::binary(vec![7u8; 70_000])
        );
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}
