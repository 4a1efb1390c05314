//! Helpers of the hub's end-to-end tests: a hub on loopback, duplex.v1 clients.
#![allow(dead_code)]

use duplex::{ClientBuilder, CloseCode, MaybeTlsStream, Message, WebSocket};
use duplex_hub::{Broker, HubConfig, MemoryBroker, Node, Settings};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every test body runs under this bound.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

/// The API key every test hub accepts.
pub const API_KEY: &str = "test-api-key-0123456789";

/// A hub serving on 127.0.0.1:0 until dropped.
pub struct Hub {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl Hub {
    pub async fn start(config: HubConfig) -> Self {
        Self::start_with(config, Arc::new(MemoryBroker::new())).await
    }

    /// A hub over `broker` (a Redis broker, say).
    pub async fn start_with(mut config: HubConfig, broker: Arc<dyn Broker>) -> Self {
        config.listen = "127.0.0.1:0".parse().unwrap();
        if config.api.keys.is_empty() {
            config.api.keys = vec![API_KEY.to_owned()];
        }
        let settings = Settings::new(config).expect("valid test config");
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let node = Node::new(settings, broker);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(duplex_hub::serve(node.clone(), listener, async move {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(async move {
            task.await.unwrap().unwrap();
        });
        Self {
            addr,
            node,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Starts the graceful shutdown; `wait` for it.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn wait(&mut self) {
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// A duplex.v1 client, connected (the `connect` command done).
    pub async fn client(&self) -> Client {
        let mut c = Client::open(self, None).await.expect("connects");
        c.connect(None).await;
        c
    }

    /// Calls the HTTP API: (status, body).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(self.addr, method, path, Some(API_KEY), body).await
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// GET `path` over plain HTTP; the whole response as text.
pub async fn get_text(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

/// A minimal HTTP/1.1 client over a TCP socket: (status, JSON body or Null).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = key
        .map(|k| format!("Authorization: apikey {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A duplex.v1 client that keeps pushes apart from replies.
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream>,
    next_id: u64,
    pushes: VecDeque<Value>,
    pub binary_pushes: VecDeque<(Value, Vec<u8>)>,
    pub info: Value,
}

impl Client {
    /// Opens the WebSocket (with `token` as a bearer header, if any).
    pub async fn open(hub: &Hub, token: Option<&str>) -> Result<Self, duplex::Error> {
        let mut builder = ClientBuilder::new(hub.url("/ws")).protocols(["duplex.v1"]);
        if let Some(token) = token {
            builder = builder.header(
                http::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        let (ws, _) = builder.connect().await?;
        Ok(Self {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
            binary_pushes: VecDeque::new(),
            info: Value::Null,
        })
    }

    /// A connected client whose socket receive buffer is tiny (no autotuning), so a client
    /// that stops reading backs up into the hub at once instead of into megabytes of kernel
    /// buffers.
    pub async fn open_slow(hub: &Hub) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(hub.addr).await.unwrap();
        let (ws, _) = ClientBuilder::new(hub.url("/ws"))
            .protocols(["duplex.v1"])
            .connect_on(MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
        let mut c = Self {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
            binary_pushes: VecDeque::new(),
            info: Value::Null,
        };
        c.connect(None).await;
        c
    }

    /// Sends `connect` (with `token`) and returns its result.
    pub async fn connect(&mut self, token: Option<&str>) -> Value {
        let reply = self.cmd(json!({"cmd": "connect", "token": token})).await;
        self.info = reply["result"].clone();
        assert!(reply.get("result").is_some(), "connect failed: {reply}");
        reply["result"].clone()
    }

    pub fn client_id(&self) -> String {
        self.info["client"].as_str().unwrap().to_owned()
    }

    /// Sends a command (an `id` is added) and returns the whole reply.
    pub async fn cmd(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .expect("send");
        self.reply(id).await
    }

    /// Sends a raw frame.
    pub async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    pub async fn reply(&mut self, id: u64) -> Value {
        loop {
            let value = self
                .next_frame()
                .await
                .unwrap_or_else(|| panic!("connection ended before reply {id}"));
            if value.get("id") == Some(&json!(id)) {
                return value;
            }
            self.pushes.push_back(value);
        }
    }

    /// The next frame as JSON (binary frames: the header with `"_binary"` holding the payload
    /// as an array), or None when the connection ended.
    async fn next_frame(&mut self) -> Option<Value> {
        let message = tokio::time::timeout(Duration::from_secs(10), self.ws.recv())
            .await
            .expect("no frame within 10 s")?
            .ok()?;
        Some(match message {
            Message::Text(t) => serde_json::from_str(&t).expect("frames are JSON"),
            Message::Binary(b) => {
                let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
                let mut header: Value = serde_json::from_slice(&b[4..4 + len]).unwrap();
                header["_binary"] = json!(b[4 + len..].to_vec());
                header
            }
        })
    }

    /// The next push.
    pub async fn push(&mut self) -> Value {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        self.next_frame()
            .await
            .expect("connection ended while waiting for a push")
    }

    /// Asserts that no push arrives within `wait`.
    pub async fn no_push(&mut self, wait: Duration) {
        assert!(self.pushes.is_empty(), "unexpected push: {:?}", self.pushes);
        if let Ok(Some(Ok(m))) = tokio::time::timeout(wait, self.ws.recv()).await {
            panic!("unexpected frame: {m:?}");
        }
    }

    /// Reads until the server closes; returns the close code and reason, and the
    /// `disconnect` push if one came.
    pub async fn closed(&mut self) -> (u16, String, Option<Value>) {
        let mut disconnect = None;
        let mut frames = 0usize;
        loop {
            frames += 1;
            match tokio::time::timeout(Duration::from_secs(10), self.ws.recv())
                .await
                .unwrap_or_else(|_| panic!("no close within 10 s ({frames} frames read)"))
            {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["push"] == "disconnect" {
                        disconnect = Some(v);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed instead of closing: {e}"),
                None => break,
            }
        }
        let frame = self.ws.close_frame().expect("a close frame");
        (u16::from(frame.code), frame.reason.to_string(), disconnect)
    }
}

pub fn close_code(code: u16) -> CloseCode {
    CloseCode::from(code)
}
