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
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service_fn(hyper_handler))
                        .with_upgrades()
                        .await;
                });
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
