//! Client ↔ server over in-memory pipes and loopback TCP.

mod common;

use bytes::Bytes;
use common::{bounded, client_and_peer, echo, listener, RawPeer};
use duplex::{
    ClientBuilder, CloseCode, CloseFrame, Error, Message, ProtocolError, Role, ServerBuilder,
    WebSocket, WebSocketConfig,
};
use duplex_proto::{Config, Event};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

#[tokio::test]
async fn handshake_and_messages_over_memory_pipe() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let ws = duplex::accept(server_io).await.unwrap();
            echo(ws).await;
        });
        let (mut ws, response) = ClientBuilder::new("ws://localhost/chat")
            .connect_on(client_io)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Message::text("hello")).await.unwrap();
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("hello"));
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::binary(vec![1u8, 2, 3])
        );
        ws.close(CloseCode::NORMAL, "bye").await.unwrap();
        assert!(ws.recv().await.is_none());
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn text_and_binary_over_loopback_with_deflate() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            echo(duplex::accept(tcp).await.unwrap()).await;
        });
        let (mut ws, response) = duplex::connect(&url).await.unwrap();
        let extensions = response
            .headers()
            .get("sec-websocket-extensions")
            .expect("deflate negotiated")
            .to_str()
            .unwrap();
        assert!(extensions.contains("permessage-deflate"), "{extensions}");
        let text = "compressible ".repeat(10_000);
        ws.send(Message::text(text.as_str())).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap().as_text(),
            Some(text.as_str())
        );
        let binary: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        ws.send(Message::binary(binary.clone())).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::binary(binary));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn sixteen_mib_messages_both_ways() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = duplex::accept(tcp).await.unwrap();
            loop {
                match ws.recv().await {
                    Some(Ok(message)) => ws.send(message).await.unwrap(),
                    Some(Err(error)) => return error,
                    None => panic!("expected the limit to be enforced"),
                }
            }
        });
        let no_deflate =
            WebSocketConfig::default().with_proto(Config::default().with_deflate(None));
        let (mut ws, _) = ClientBuilder::new(&url)
            .config(no_deflate)
            .connect()
            .await
            .unwrap();
        let big: Vec<u8> = (0..16usize << 20).map(|i| (i % 253) as u8).collect();
        let big = Bytes::from(big);
        ws.send(Message::Binary(big.clone())).await.unwrap();
        let back = ws.recv().await.unwrap().unwrap();
        assert_eq!(back.len(), big.len());
        assert!(back.as_bytes() == &big[..]);
        // One byte over the limit is refused by the server with 1009. The server may close
        // before it has read everything we send, so our send and receive may fail.
        let too_big = Bytes::from(vec![0u8; (16 << 20) + 1]);
        let _ = ws.send(Message::Binary(too_big)).await;
        if let Some(Ok(m)) = ws.recv().await {
            panic!("unexpected {} byte message", m.len());
        }
        if let Some(frame) = ws.close_frame() {
            assert_eq!(frame.code, CloseCode::TOO_BIG);
        }
        match server.await.unwrap() {
            Error::Protocol(e) => assert_eq!(e.close_code(), CloseCode::TOO_BIG),
            other => panic!("expected a protocol error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn large_message_with_deflate() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            echo(duplex::accept(tcp).await.unwrap()).await;
        });
        let (mut ws, _) = duplex::connect(&url).await.unwrap();
        let big: String = (0..4usize << 20)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        ws.send(Message::text(big.as_str())).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap().as_text(),
            Some(big.as_str())
        );
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn clean_close_seen_by_both_sides_and_tcp_shut_down() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = duplex::accept(tcp).await.unwrap();
            assert!(ws.recv().await.is_none(), "close is not an error");
            assert_eq!(
                ws.close_frame(),
                Some(CloseFrame::new(CloseCode::NORMAL, "finished"))
            );
            assert!(ws.is_closed());
            assert!(matches!(
                ws.send(Message::text("late")).await,
                Err(Error::ConnectionClosed)
            ));
        });
        let (mut ws, _) = duplex::connect(&url).await.unwrap();
        ws.close(CloseCode::NORMAL, "finished").await.unwrap();
        assert!(ws.is_closed());
        assert!(ws.recv().await.is_none());
        assert_eq!(ws.close_frame().map(|f| f.code), Some(CloseCode::NORMAL));
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn server_initiated_close_shuts_down_tcp() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = duplex::accept(tcp).await.unwrap();
            ws.close(CloseCode::GOING_AWAY, "restart").await.unwrap();
        });
        let (mut ws, _) = duplex::connect(&url).await.unwrap();
        assert!(ws.recv().await.is_none());
        assert_eq!(
            ws.close_frame(),
            Some(CloseFrame::new(CloseCode::GOING_AWAY, "restart"))
        );
        server.await.unwrap();
    })
    .await;
}

/// Connects a client with a 300 ms close timeout to a raw server that reads the client's
/// close frame and then does `after_close`; returns what the client's `close` returned, how
/// long it took, and the client.
async fn close_against<F, Fut>(
    after_close: F,
) -> (
    Result<(), Error>,
    Duration,
    WebSocket<duplex::MaybeTlsStream>,
)
where
    F: FnOnce(RawPeer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (listener, url) = listener().await;
    let server = tokio::spawn(async move {
        let mut peer = RawPeer::accept(&listener).await;
        let event = peer.next_event().await;
        assert!(matches!(event, Some(Event::Close(_))), "{event:?}");
        after_close(peer).await;
    });
    let config = WebSocketConfig::default().with_close_timeout(Duration::from_millis(300));
    let (mut ws, _) = ClientBuilder::new(&url)
        .config(config)
        .connect()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let result = ws.close(CloseCode::NORMAL, "").await;
    let took = started.elapsed();
    server.abort();
    (result, took, ws)
}

#[tokio::test]
async fn close_times_out_when_peer_never_answers() {
    bounded(async {
        // The server reads the close frame but never answers it; it keeps the socket open.
        let (result, took, mut ws) = close_against(|peer| async move {
            let _open = peer;
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
        .await;
        assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
        assert!(took < Duration::from_secs(2));
        assert!(ws.recv().await.is_none());
    })
    .await;
}

/// After a clean close handshake the client waits for the server to close TCP first
/// (RFC 6455 §7.1.1), but only for the close timeout: a server that answers the close frame
/// and then keeps the socket open does not hold the client.
#[tokio::test]
async fn waiting_for_the_servers_fin_is_bounded_by_the_close_timeout() {
    bounded(async {
        let (result, took, mut ws) = close_against(|mut peer| async move {
            peer.flush().await; // the close reply, and no FIN after it
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
        .await;
        result.unwrap();
        assert!(took >= Duration::from_millis(250), "did not wait: {took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(ws.recv().await.is_none());
    })
    .await;
}

/// The same wait, against a server that answers the close frame and then floods the
/// socket instead of closing it: reading (and discarding) what keeps arriving must not
/// keep the client from giving up at the close timeout.
#[tokio::test]
async fn a_server_that_keeps_sending_after_the_close_does_not_hold_the_client() {
    bounded(async {
        let (result, took, _ws) = close_against(|mut peer| async move {
            peer.flush().await;
            let junk = vec![0u8; 64 << 10];
            let until = tokio::time::Instant::now() + Duration::from_secs(4);
            while tokio::time::Instant::now() < until {
                if peer.tcp.write_all(&junk).await.is_err() {
                    break;
                }
            }
        })
        .await;
        result.unwrap();
        assert!(took < Duration::from_secs(2), "{took:?}");
    })
    .await;
}

#[tokio::test]
async fn ping_is_answered_while_split_halves_live_in_other_tasks() {
    bounded(async {
        let (ws, mut peer) = client_and_peer().await;
        let (mut reader, mut writer) = ws.split();
        let reader_task = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(Ok(message)) = reader.recv().await {
                got.push(message);
            }
            (got, reader.close_frame())
        });
        // The writer sits in another task, idle until told to send.
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let writer_task = tokio::spawn(async move {
            go_rx.await.unwrap();
            writer.send(Message::text("after pong")).await.unwrap();
            writer.close(CloseCode::NORMAL, "done").await
        });
        peer.conn
            .ping(Bytes::from_static(b"are you there"))
            .unwrap();
        peer.flush().await;
        assert_eq!(
            peer.next_event().await,
            Some(Event::Pong(Bytes::from_static(b"are you there")))
        );
        peer.conn.send(Message::text("to reader")).unwrap();
        peer.flush().await;
        go_tx.send(()).unwrap();
        assert_eq!(
            peer.next_event().await,
            Some(Event::Message(Message::text("after pong")))
        );
        assert!(matches!(peer.next_event().await, Some(Event::Close(_))));
        peer.flush().await; // the core queued the close reply
        peer.tcp.shutdown().await.unwrap();
        writer_task.await.unwrap().unwrap();
        let (got, close) = reader_task.await.unwrap();
        assert_eq!(got, vec![Message::text("to reader")]);
        assert_eq!(close.map(|f| f.code), Some(CloseCode::NORMAL));
    })
    .await;
}

#[tokio::test]
async fn reunited_halves_are_one_socket_again() {
    bounded(async {
        let (ws, mut peer) = client_and_peer().await;
        let (mut reader, mut writer) = ws.split();
        writer.send(Message::text("from the writer")).await.unwrap();
        assert_eq!(
            peer.next_event().await,
            Some(Event::Message(Message::text("from the writer")))
        );
        peer.conn.send(Message::text("to the reader")).unwrap();
        peer.flush().await;
        assert_eq!(
            reader.recv().await.transpose().unwrap(),
            Some(Message::text("to the reader"))
        );

        // Halves of another connection are refused, and given back intact.
        let (other, _other_peer) = client_and_peer().await;
        let (other_reader, other_writer) = other.split();
        let (reader, other_writer) = match reader.reunite(other_writer) {
            Err(halves) => halves,
            Ok(_) => panic!("halves of two connections were reunited"),
        };
        drop((other_reader, other_writer));

        // The reunited socket owns its state alone again: it reads (and answers a ping)
        // and sends by itself.
        let mut ws = reader
            .reunite(writer)
            .expect("the two halves of one socket");
        peer.conn.ping(Bytes::from_static(b"still one")).unwrap();
        peer.conn
            .send(Message::binary(&b"after the ping"[..]))
            .unwrap();
        peer.flush().await;
        assert_eq!(
            ws.recv().await.transpose().unwrap(),
            Some(Message::binary(&b"after the ping"[..]))
        );
        // The pong was queued by that recv and goes out with the next write.
        ws.send(Message::text("reunited")).await.unwrap();
        assert_eq!(
            peer.next_event().await,
            Some(Event::Pong(Bytes::from_static(b"still one")))
        );
        assert_eq!(
            peer.next_event().await,
            Some(Event::Message(Message::text("reunited")))
        );
        let closing = tokio::spawn(async move { ws.close(CloseCode::NORMAL, "bye").await });
        assert!(matches!(peer.next_event().await, Some(Event::Close(_))));
        peer.flush().await; // the core queued the close reply
        peer.tcp.shutdown().await.unwrap();
        closing.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn split_halves_waiting_on_a_full_socket_are_both_woken() {
    bounded(async {
        // A 1 KiB pipe: the writer's message fills it, then the reader's pong waits behind.
        let (a, b) = tokio::io::duplex(1024);
        let mut client = WebSocket::from_raw(a, Role::Client, WebSocketConfig::default());
        let server = WebSocket::from_raw(b, Role::Server, WebSocketConfig::default());
        let (mut reader, mut writer) = server.split();
        let big = Message::binary(vec![7u8; 64 << 10]);
        let sent = big.clone();
        let writer_task = tokio::spawn(async move {
            writer.send(sent).await.unwrap();
            writer.close(CloseCode::NORMAL, "done").await
        });
        // The writer waits for the socket to drain first...
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reader_task = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(event) = reader.recv_event().await {
                got.push(event.unwrap());
            }
            got
        });
        // ...then the reader, to flush the pong it owes: the last to wait on the transport.
        client.ping(Bytes::from_static(b"p")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Draining must wake both: the writer's send completes and the pong arrives.
        assert_eq!(
            client.recv_event().await.unwrap().unwrap(),
            Event::Message(big)
        );
        assert_eq!(
            client.recv_event().await.unwrap().unwrap(),
            Event::Pong(Bytes::from_static(b"p"))
        );
        let close = tokio::time::timeout(Duration::from_secs(5), client.recv_event())
            .await
            .expect("the writer was not woken when the socket drained");
        assert!(matches!(close, Some(Ok(Event::Close(_)))));
        while client.recv_event().await.is_some() {}
        writer_task.await.unwrap().unwrap();
        let got = reader_task.await.unwrap();
        assert_eq!(got[0], Event::Ping(Bytes::from_static(b"p")));
    })
    .await;
}

#[tokio::test]
async fn peer_sending_garbage_gets_1002_and_we_get_protocol_error() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let mut peer = RawPeer::accept(&listener).await;
            // A text frame with RSV2 set: no extension defines it.
            peer.tcp.write_all(&[0xA1, 0x02, b'h', b'i']).await.unwrap();
            let event = peer.next_event().await;
            match event {
                Some(Event::Close(Some(frame))) => {
                    assert_eq!(frame.code, CloseCode::PROTOCOL_ERROR)
                }
                other => panic!("expected a close frame, got {other:?}"),
            }
            assert!(
                peer.sees_eof().await,
                "client closes TCP after a protocol error"
            );
        });
        let (mut ws, _) = duplex::connect(&url).await.unwrap();
        match ws.recv().await {
            Some(Err(Error::Protocol(e))) => assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR),
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert!(ws.recv().await.is_none());
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn peer_vanishing_is_abnormal_closure() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let peer = RawPeer::accept(&listener).await;
            drop(peer);
        });
        let (mut ws, _) = duplex::connect(&url).await.unwrap();
        server.await.unwrap();
        match ws.recv().await {
            Some(Err(Error::Protocol(ProtocolError::AbnormalClosure)))
            | Some(Err(Error::Io(_))) => {}
            other => panic!("expected abnormal closure, got {other:?}"),
        }
        assert!(ws.recv().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn callback_rejection_is_seen_by_client_as_403() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let result = ServerBuilder::new()
                .accept_with(tcp, |request, upgrade, _headers| {
                    assert_eq!(request.uri().path(), "/test");
                    if upgrade.origin() != Some("https://good.example") {
                        return Err(duplex::HandshakeError::new(
                            StatusCode::FORBIDDEN,
                            "origin not allowed",
                        ));
                    }
                    Ok(())
                })
                .await;
            assert_eq!(
                result.unwrap_err().handshake_status(),
                Some(StatusCode::FORBIDDEN)
            );
        });
        let error = ClientBuilder::new(&url)
            .origin(http::HeaderValue::from_static("https://evil.example"))
            .connect()
            .await
            .unwrap_err();
        match error {
            Error::Handshake(e) => assert_eq!(e.status(), StatusCode::FORBIDDEN),
            other => panic!("expected a handshake error, got {other:?}"),
        }
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn callback_selects_subprotocol_and_adds_headers() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = ServerBuilder::new()
                .accept_with(tcp, |request, upgrade, headers| {
                    assert_eq!(request.uri().query(), Some("room=1"));
                    assert_eq!(upgrade.protocols(), ["v2", "v1"]);
                    upgrade.select_protocol("v1")?;
                    headers.insert("x-served-by", http::HeaderValue::from_static("duplex"));
                    Ok(())
                })
                .await
                .unwrap();
            echo(ws).await;
        });
        let (mut ws, response) = ClientBuilder::new(format!("{url}?room=1"))
            .protocols(["v2", "v1"])
            .connect()
            .await
            .unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "v1");
        assert_eq!(response.headers()["x-served-by"], "duplex");
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn invalid_request_is_answered_with_its_status() {
    bounded(async {
        let (listener, _url) = listener().await;
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            duplex::accept(tcp).await.unwrap_err()
        });
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut answer)
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
        assert_eq!(
            server.await.unwrap().handshake_status(),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
    })
    .await;
}

#[tokio::test]
async fn handshake_timeout() {
    bounded(async {
        let (listener, _url) = listener().await;
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let result = ServerBuilder::new()
            .handshake_timeout(Duration::from_millis(100))
            .accept(tcp)
            .await;
        assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    })
    .await;
}

#[tokio::test]
async fn sender_waits_when_peer_does_not_read() {
    bounded(async {
        // The peer end of the pipe is never read: after 64 KiB in the pipe and the
        // high-water mark in our queue, sending must wait.
        let (client_io, _server_io) = tokio::io::duplex(64 << 10);
        let config = WebSocketConfig::default().with_write_buffer_high_water(128 << 10);
        let mut ws = WebSocket::from_raw(client_io, Role::Client, config);
        let chunk = Bytes::from(vec![7u8; 16 << 10]);
        let mut sent = 0usize;
        loop {
            let send = ws.feed(Message::Binary(chunk.clone()));
            match tokio::time::timeout(Duration::from_millis(200), send).await {
                Ok(result) => {
                    result.unwrap();
                    sent += chunk.len();
                    assert!(sent < 10 << 20, "feed never waited");
                }
                Err(_) => break,
            }
        }
        let queued = ws.buffered_amount();
        assert!(queued <= (128 << 10) + (16 << 10) + 64, "queued {queued}");
        assert!(sent >= 128 << 10, "sent only {sent}");
    })
    .await;
}

/// Counts the calls that reach the transport (reads, all writes, and the vectored ones).
struct CountingIo {
    inner: tokio::io::DuplexStream,
    reads: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
    vectored_writes: Arc<AtomicUsize>,
    vectored: bool,
}

impl CountingIo {
    fn new(inner: tokio::io::DuplexStream) -> Self {
        Self {
            inner,
            reads: Arc::default(),
            writes: Arc::default(),
            vectored_writes: Arc::default(),
            vectored: false,
        }
    }

    fn pipe(&mut self) -> Pin<&mut tokio::io::DuplexStream> {
        Pin::new(&mut self.inner)
    }
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.pipe().poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.pipe().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.vectored_writes.fetch_add(1, Ordering::SeqCst);
        // DuplexStream has no vectored write; gather like a kernel would.
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.pipe().poll_write(cx, &all)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.pipe().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.pipe().poll_shutdown(cx)
    }
}

#[tokio::test]
async fn pipelined_frames_are_coalesced_into_few_writes() {
    for vectored in [true, false] {
        bounded(async {
            let (client_io, server_io) = tokio::io::duplex(1 << 20);
            let writes = Arc::new(AtomicUsize::new(0));
            let io = CountingIo {
                writes: Arc::clone(&writes),
                vectored,
                ..CountingIo::new(client_io)
            };
            let mut client = WebSocket::from_raw(io, Role::Client, WebSocketConfig::default());
            let mut server =
                WebSocket::from_raw(server_io, Role::Server, WebSocketConfig::default());
            for i in 0..50 {
                client
                    .feed(Message::text(format!("message {i}")))
                    .await
                    .unwrap();
            }
            assert_eq!(writes.load(Ordering::SeqCst), 0, "feed does not write");
            client.flush().await.unwrap();
            let count = writes.load(Ordering::SeqCst);
            assert!(
                count <= 2,
                "vectored={vectored}: {count} writes for 50 frames"
            );
            for i in 0..50 {
                let message = server.recv().await.unwrap().unwrap();
                assert_eq!(message.as_text(), Some(format!("message {i}").as_str()));
            }
        })
        .await;
    }
}

/// On a vectored transport, output that is one slice goes out with a plain write (on TCP,
/// `send` rather than the dearer `writev`); a batch of small frames, a shared one first, is
/// one slice too; only a large payload sent by reference needs a vectored write.
#[tokio::test]
async fn one_slice_of_output_is_a_plain_write() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let vectored_writes = Arc::new(AtomicUsize::new(0));
        let io = CountingIo {
            writes: Arc::clone(&writes),
            vectored_writes: Arc::clone(&vectored_writes),
            vectored: true,
            ..CountingIo::new(server_io)
        };
        let mut client = WebSocket::from_raw(client_io, Role::Client, WebSocketConfig::default());
        let mut server = WebSocket::from_raw(io, Role::Server, WebSocketConfig::default());
        let counts = || {
            (
                writes.load(Ordering::SeqCst),
                vectored_writes.load(Ordering::SeqCst),
            )
        };

        server.send(Message::text("one")).await.unwrap();
        assert_eq!(counts(), (1, 0), "a lone message: one plain write");

        let shared = duplex::PreparedFrame::new(Message::binary(vec![7u8; 100]));
        let items = [
            duplex::Outbound::Prepared(&shared),
            duplex::Outbound::Message(Message::text("two")),
            duplex::Outbound::Prepared(&shared),
        ];
        server.send_all(items).await.unwrap();
        assert_eq!(counts(), (2, 0), "a small batch: one plain write");

        let large = Bytes::from(vec![9u8; 64 << 10]);
        server.send(Message::Binary(large.clone())).await.unwrap();
        let (all, vectored) = counts();
        assert!(vectored >= 1, "header and shared payload: a vectored write");
        assert!(all <= 4, "{all} writes");

        assert_eq!(client.recv().await.unwrap().unwrap().as_text(), Some("one"));
        let expected = [
            Message::binary(vec![7u8; 100]),
            Message::text("two"),
            Message::binary(vec![7u8; 100]),
            Message::Binary(large),
        ];
        for want in expected {
            assert_eq!(client.recv().await.unwrap().unwrap(), want);
        }
    })
    .await;
}

/// Counts the wakes of a task.
#[derive(Default)]
struct WakeCount(AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A read that found nothing leaves the task registered with the transport: until the
/// transport wakes it, polling the socket again is skipped (a task woken by its outbox does
/// not poll an empty socket), but data that arrives wakes the task and is read; and a
/// task that was not the one registered polls the transport itself, so it is woken too.
#[tokio::test]
async fn an_empty_socket_is_polled_again_only_after_it_signals() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let io = CountingIo::new(server_io);
        let reads = Arc::clone(&io.reads);
        let mut client = WebSocket::from_raw(client_io, Role::Client, WebSocketConfig::default());
        let mut server = WebSocket::from_raw(io, Role::Server, WebSocketConfig::default());
        let reads = || reads.load(Ordering::SeqCst);

        let first = Arc::new(WakeCount::default());
        let first_waker = std::task::Waker::from(Arc::clone(&first));
        let mut recv = Box::pin(server.recv());
        let mut poll =
            |waker: &std::task::Waker| recv.as_mut().poll(&mut Context::from_waker(waker));
        assert!(poll(&first_waker).is_pending());
        assert_eq!(reads(), 1, "the first poll reads");
        for _ in 0..5 {
            assert!(poll(&first_waker).is_pending());
        }
        assert_eq!(
            reads(),
            1,
            "woken for nothing: the empty socket is not polled"
        );

        // Another task polls: it must be the one the socket wakes, so the socket is polled.
        let second = Arc::new(WakeCount::default());
        let second_waker = std::task::Waker::from(Arc::clone(&second));
        assert!(poll(&second_waker).is_pending());
        assert_eq!(reads(), 2, "a new waker polls the socket");
        assert!(poll(&second_waker).is_pending());
        assert_eq!(reads(), 2);

        client.send(Message::text("hello")).await.unwrap();
        assert_eq!(second.0.load(Ordering::SeqCst), 1, "data wakes the reader");
        match poll(&second_waker) {
            Poll::Ready(Some(Ok(message))) => assert_eq!(message, Message::text("hello")),
            other => panic!("expected the message, got {other:?}"),
        }
        assert!(reads() >= 3);
    })
    .await;
}

#[tokio::test]
async fn echo_with_try_recv_answers_a_pipelined_burst_in_one_write() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let io = CountingIo {
            writes: Arc::clone(&writes),
            vectored: true,
            ..CountingIo::new(server_io)
        };
        let mut client = WebSocket::from_raw(client_io, Role::Client, WebSocketConfig::default());
        let mut server = WebSocket::from_raw(io, Role::Server, WebSocketConfig::default());
        assert!(server.try_recv().is_none(), "nothing has arrived");
        for i in 0..20 {
            client.feed(Message::text(format!("m{i}"))).await.unwrap();
        }
        client.flush().await.unwrap();
        // recv() reads the whole burst; the rest is already decoded and waits for try_recv.
        let first = server.recv().await.unwrap().unwrap();
        server.feed(first).await.unwrap();
        let mut echoed = 1;
        while let Some(message) = server.try_recv() {
            server.feed(message).await.unwrap();
            echoed += 1;
        }
        assert_eq!(echoed, 20);
        assert!(server.try_recv().is_none());
        assert_eq!(writes.load(Ordering::SeqCst), 0, "feed does not write");
        server.flush().await.unwrap();
        assert_eq!(writes.load(Ordering::SeqCst), 1, "one write for 20 echoes");
        for i in 0..20 {
            let message = client.recv().await.unwrap().unwrap();
            assert_eq!(message.as_text(), Some(format!("m{i}").as_str()));
        }
    })
    .await;
}

#[tokio::test]
async fn stream_and_sink_traits() {
    bounded(async {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut client = WebSocket::from_raw(a, Role::Client, WebSocketConfig::default());
        let server = WebSocket::from_raw(b, Role::Server, WebSocketConfig::default());
        let server = tokio::spawn(async move {
            let (mut sink, mut stream) = StreamExt::split(server);
            while let Some(Ok(message)) = stream.next().await {
                sink.send(message).await.unwrap();
            }
        });
        client.send(Message::text("one")).await.unwrap();
        SinkExt::send(&mut client, Message::text("two"))
            .await
            .unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), Message::text("one"));
        assert_eq!(client.next().await.unwrap().unwrap(), Message::text("two"));
        SinkExt::close(&mut client).await.unwrap();
        assert!(client.next().await.is_none());
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn keepalive_pings_and_idle_timeout() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let mut peer = RawPeer::accept(&listener).await;
            // The client's keepalive pings arrive; we never answer (the core would, so we
            // drop the pongs it queued).
            let mut pings = 0;
            while let Some(event) = peer.next_event().await {
                if matches!(event, Event::Ping(_)) {
                    pings += 1;
                    let mut discard = bytes::BytesMut::new();
                    peer.conn.poll_transmit(&mut discard);
                }
                if matches!(event, Event::Close(_)) {
                    break;
                }
            }
            pings
        });
        let config = WebSocketConfig::default()
            .with_ping_interval(Some(Duration::from_millis(50)))
            .with_idle_timeout(Some(Duration::from_millis(400)))
            .with_close_timeout(Duration::from_millis(200));
        let (mut ws, _) = ClientBuilder::new(&url)
            .config(config)
            .connect()
            .await
            .unwrap();
        match ws.recv().await {
            Some(Err(Error::Timeout(what))) => assert_eq!(what, "idle timeout"),
            other => panic!("expected idle timeout, got {other:?}"),
        }
        let pings = server.await.unwrap();
        assert!(pings >= 3, "only {pings} keepalive pings");
    })
    .await;
}

#[tokio::test]
async fn data_waiting_in_the_socket_is_not_an_idle_timeout() {
    bounded(async {
        let (a, b) = tokio::io::duplex(4096);
        let config = WebSocketConfig::default().with_idle_timeout(Some(Duration::from_millis(100)));
        let mut client = WebSocket::from_raw(a, Role::Client, config);
        let mut server = WebSocket::from_raw(b, Role::Server, WebSocketConfig::default());
        server.send(Message::text("waiting")).await.unwrap();
        // The application is busy for longer than the idle timeout; the message was there all
        // along, so the next recv() must deliver it rather than time out.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::text("waiting")
        );
    })
    .await;
}

#[test]
fn public_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_type<T: Send + Sync>() {}
    type Io = tokio::io::DuplexStream;
    assert_send_type::<WebSocket<Io>>();
    assert_send_type::<duplex::WsReader<Io>>();
    assert_send_type::<duplex::WsWriter<Io>>();
    assert_send_type::<Error>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(64);
        let mut ws = WebSocket::from_raw(a, Role::Client, WebSocketConfig::default());
        assert_send(&ws.recv());
        assert_send(&ws.send(Message::text("x")));
        assert_send(&ws.feed(Message::text("x")));
        assert_send(&ws.flush());
        assert_send(&ws.ping(Bytes::new()));
        assert_send(&ws.close(CloseCode::NORMAL, ""));
        let (mut reader, mut writer) = ws.split();
        assert_send(&reader.recv());
        assert_send(&writer.send(Message::text("x")));
        assert_send(&writer.close(CloseCode::NORMAL, ""));
        assert_send(&duplex::accept(b));
        assert_send(&duplex::connect("ws://127.0.0.1:1/"));
        let builder = ClientBuilder::new("ws://127.0.0.1:1/");
        assert_send(&builder.connect());
        let (c, _d) = tokio::io::duplex(64);
        assert_send(&builder.connect_on(c));
        let server = ServerBuilder::new();
        let (e, _f) = tokio::io::duplex(64);
        assert_send(&server.accept_with(e, |_, _, _| Ok(())));
    });
}

/// `send_all` queues messages and prepared frames in order, waits for room as `feed` does
/// (taking at most one item more than fits), and flushes them by itself; an empty batch
/// flushes what was fed.
#[tokio::test]
async fn send_all_queues_a_batch_in_order_under_backpressure() {
    bounded(async {
        const N: usize = 200;
        // Frames of 102 and 108 bytes; the pipe holds 1 KiB and the queue 256 bytes before
        // the sender waits: about a dozen items fit while nobody reads.
        let (client_io, server_io) = tokio::io::duplex(1024);
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = pulled.clone();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let (got_all_tx, got_all_rx) = tokio::sync::oneshot::channel::<()>();
        let (got_fed_tx, got_fed_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let config = WebSocketConfig::default().with_write_buffer_high_water(256);
            let mut ws = ServerBuilder::new()
                .config(config)
                .accept(server_io)
                .await
                .unwrap();
            go_rx.await.unwrap();
            let shared = duplex::PreparedFrame::new(Message::binary(vec![7u8; 100]));
            let items = (0..N).map(|i| {
                counter.fetch_add(1, Ordering::SeqCst);
                if i % 2 == 0 {
                    duplex::Outbound::Message(Message::text(format!("message {i:<98}")))
                } else {
                    duplex::Outbound::Prepared(&shared)
                }
            });
            ws.send_all(items).await.unwrap();
            // Everything went out without another flush: the client reads all of it
            // before we go on.
            got_all_rx.await.unwrap();
            ws.feed(Message::text("fed")).await.unwrap();
            ws.send_all(std::iter::empty()).await.unwrap();
            got_fed_rx.await.unwrap();
            ws.close(CloseCode::NORMAL, "done").await.unwrap();
        });
        // Uncompressed, so the batch (20 KiB) is well over what the pipe and the queue hold.
        let no_deflate =
            WebSocketConfig::default().with_proto(Config::default().with_deflate(None));
        let (mut ws, _) = ClientBuilder::new("ws://localhost/")
            .config(no_deflate)
            .connect_on(client_io)
            .await
            .unwrap();
        go_tx.send(()).unwrap();
        // Nobody reads: the server's batch stops at the high-water mark.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = pulled.load(Ordering::SeqCst);
        assert!(
            (5..=16).contains(&before),
            "{before} of {N} items taken while the peer read nothing"
        );
        for i in 0..N {
            let message = ws.recv().await.unwrap().unwrap();
            if i % 2 == 0 {
                assert_eq!(message, Message::text(format!("message {i:<98}")));
            } else {
                assert_eq!(message, Message::binary(vec![7u8; 100]));
            }
        }
        assert_eq!(pulled.load(Ordering::SeqCst), N);
        got_all_tx.send(()).unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("fed"));
        got_fed_tx.send(()).unwrap();
        assert!(ws.recv().await.is_none());
        assert_eq!(ws.close_frame().unwrap().code, CloseCode::NORMAL);
        server.await.unwrap();
    })
    .await;
}
