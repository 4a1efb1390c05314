//! `duplex serve` end to end: graceful shutdown on SIGTERM, configuration refused at start,
//! `--help`, JSON logs. The hub listens on a free loopback port and is killed at the end of
//! every test, passed or not.

use duplex::{ClientBuilder, CloseCode, MaybeTlsStream, Message, WebSocket};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_duplex");
/// Every wait in these tests ends within this.
const LIMIT: Duration = Duration::from_secs(20);

/// `duplex ARGS`, with no `DUPLEX*` variable from the environment the tests run in.
fn duplex(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DUPLEX") {
            command.env_remove(key);
        }
    }
    command
}

/// A running `duplex serve`; killed when dropped.
struct Hub {
    child: Child,
    addr: String,
    /// The stderr lines after `listening on`.
    stderr: mpsc::Receiver<String>,
}

impl Hub {
    fn start(global: &[&str], args: &[&str]) -> Self {
        Self::start_env(global, args, &[])
    }

    /// `start` with environment variables.
    fn start_env(global: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = duplex(global);
        command.envs(env.iter().copied());
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null());
        let (child, addr, rx) = common::spawn_listening(command, LIMIT);
        assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"));
        Self {
            child,
            addr,
            stderr: rx,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the exit; `None` if it takes longer than `limit`.
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plain HTTP/1.1 GET; returns the status code and the whole response.
    fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect for GET");
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the response");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        (status, response)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to its end, killing it after `LIMIT`.
fn run_to_end(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn duplex");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(output) => output.expect("wait for duplex"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("duplex did not exit within {LIMIT:?}");
        }
    }
}

type Ws = WebSocket<MaybeTlsStream>;

async fn recv(ws: &mut Ws, what: &str) -> Message {
    tokio::time::timeout(LIMIT, ws.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {LIMIT:?}"))
        .unwrap_or_else(|| panic!("{what}: the connection closed"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Reads until the server's close; returns its code (`None`: no close frame came).
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.recv()).await {
            Err(_) => return None,
            Ok(Some(Ok(_))) => continue, // pushes queued before the close
            Ok(None) | Ok(Some(Err(_))) => return ws.close_frame().map(|f| f.code),
        }
    }
}

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut hub = Hub::start(
        &[],
        &[
            "--set",
            "shutdown.drain_secs=1",
            "--set",
            "shutdown.timeout_secs=5",
        ],
    );
    let (status, response) = hub.get("/readyz");
    assert_eq!(status, 200, "/readyz before the signal: {response}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let signalled = runtime.block_on(async {
        let mut clients: Vec<(String, Ws)> = Vec::new();
        for i in 0..5 {
            let (mut ws, response) = ClientBuilder::new(hub.url("/ws"))
                .protocols(["duplex.v1"])
                .connect()
                .await
                .expect("duplex.v1 client connects");
            assert_eq!(
                response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some("duplex.v1")
            );
            ws.send(Message::text(r#"{"id":1,"cmd":"connect"}"#))
                .await
                .unwrap();
            let reply = recv(&mut ws, "connect reply").await;
            let reply: serde_json::Value =
                serde_json::from_str(reply.as_text().expect("a text reply")).expect("JSON reply");
            assert_eq!(reply["id"], 1, "connect reply: {reply}");
            assert!(reply.get("error").is_none(), "connect refused: {reply}");
            clients.push((format!("duplex.v1 client {i}"), ws));
        }
        let (mut a, _) = duplex::connect(&hub.url("/rooms/lobby")).await.unwrap();
        let (mut b, _) = duplex::connect(&hub.url("/rooms/lobby")).await.unwrap();
        // The hub joins a room right after the handshake: retry until b hears a.
        let mut joined = false;
        for _ in 0..50 {
            a.send(Message::text("hello")).await.unwrap();
            if let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_millis(100), b.recv()).await
            {
                assert_eq!(m, Message::text("hello"));
                joined = true;
                break;
            }
        }
        assert!(joined, "room clients never heard each other");
        clients.push(("room client a".into(), a));
        clients.push(("room client b".into(), b));
        let (mut echo, _) = duplex::connect(&hub.url("/echo")).await.unwrap();
        echo.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            recv(&mut echo, "echo").await,
            Message::binary(vec![1, 2, 3])
        );
        clients.push(("echo client".into(), echo));

        hub.sigterm();
        let signalled = Instant::now();
        let codes = futures_util::future::join_all(
            clients
                .iter_mut()
                .map(|(_, ws)| async move { close_code(ws).await }),
        )
        .await;
        for ((name, _), code) in clients.iter().zip(codes) {
            assert_eq!(code, Some(CloseCode::GOING_AWAY), "{name}");
        }
        signalled
    });
    let status = hub
        .wait(Duration::from_secs(10))
        .expect("duplex serve still running 10 s after SIGTERM");
    assert!(status.success(), "exit {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(7),
        "exit took {:?}, past shutdown.timeout_secs = 5",
        signalled.elapsed()
    );
}

#[test]
fn invalid_configuration_is_refused_naming_the_key() {
    let expect_refusal = |command: Command, key: &str| {
        let output = run_to_end(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{key}: stderr {stderr}");
        assert!(stderr.contains(key), "stderr does not name {key}: {stderr}");
        assert!(!stderr.contains("listening on"), "it started: {stderr}");
    };
    let serve = ["serve", "--listen", "127.0.0.1:0"];

    let mut command = duplex(&serve);
    command.args(["--set", "limits.max_connections=0"]);
    expect_refusal(command, "limits.max_connections");

    let mut command = duplex(&serve);
    command.env("DUPLEX__LIMITS__PUBLISH_RATE", "0");
    expect_refusal(command, "limits.publish_rate");

    let dir = std::env::temp_dir().join(format!("duplex-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, toml, key) in [
        ("top.toml", "bogus_key = 5\n", "bogus_key"),
        (
            "nested.toml",
            "[limits]\nmax_conections = 5\n",
            "max_conections",
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, toml).unwrap();
        let mut command = duplex(&serve);
        command.arg("--config").arg(&path);
        expect_refusal(command, key);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_help_documents_the_flags() {
    let output = run_to_end(duplex(&["serve", "--help"]));
    assert!(output.status.success(), "exit {:?}", output.status);
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in ["--config", "--listen", "--set", "DUPLEX__"] {
        assert!(help.contains(needle), "no {needle} in:\n{help}");
    }
}

#[test]
fn log_format_json_writes_json_lines() {
    let hub = Hub::start(&["--log-format", "json"], &[]);
    let line = hub
        .stderr
        .recv_timeout(LIMIT)
        .expect("no log line after 'listening on'");
    let value: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert!(value.is_object(), "not an object: {line}");
    assert_eq!(value["level"], "INFO", "{line}");
    let message = value["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ready"), "{line}");
    assert_eq!(value["fields"]["addr"], hub.addr.as_str(), "{line}");
}

/// The `ready` log line of a hub started with `--log-format json`.
fn ready_line(hub: &Hub) -> serde_json::Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = hub.stderr.recv_timeout(left).expect("no 'ready' log line");
        let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        if value["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ready"))
        {
            return value;
        }
    }
}

#[test]
fn demo_feed_by_flag_or_variable_and_the_pages_are_served() {
    let hub = Hub::start(&["--log-format", "json"], &["--demo-feed"]);
    assert_eq!(ready_line(&hub)["fields"]["demo_feed"], true);
    for (path, content_type) in [
        ("/prices", "text/html"),
        ("/status", "text/html"),
        ("/duplex.js", "text/javascript"),
    ] {
        let (status, response) = hub.get(path);
        assert_eq!(status, 200, "{path}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains(&format!("content-type: {content_type}")),
            "{path}: {response}"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut ws, _) = ClientBuilder::new(hub.url("/ws"))
            .protocols(["duplex.v1"])
            .connect()
            .await
            .expect("duplex.v1 client connects");
        ws.send(Message::text(
            r#"{"id":1,"cmd":"connect","info":{"name":"cli test"}}"#,
        ))
        .await
        .unwrap();
        ws.send(Message::text(
            r#"{"id":2,"cmd":"subscribe","channel":"prices:ETH-USD"}"#,
        ))
        .await
        .unwrap();
        let mut ticks = 0;
        while ticks < 3 {
            let message = recv(&mut ws, "a price tick").await;
            let v: serde_json::Value = serde_json::from_str(message.as_text().unwrap()).unwrap();
            assert!(v.get("error").is_none(), "{v}");
            if v["push"] == "publication" {
                assert_eq!(v["key"], "ETH-USD", "{v}");
                assert_eq!(v["data"]["symbol"], "ETH-USD", "{v}");
                assert!(v["data"]["price"].as_f64().unwrap() > 0.0, "{v}");
                ticks += 1;
            }
        }
    });
    drop(hub);

    // The variable takes the usual spellings of a boolean, not only `true`/`false`.
    for (value, on) in [("true", true), ("1", true), ("yes", true), ("0", false)] {
        let hub = Hub::start_env(
            &["--log-format", "json"],
            &[],
            &[("DUPLEX_DEMO_FEED", value)],
        );
        assert_eq!(ready_line(&hub)["fields"]["demo_feed"], on, "{value}");
        drop(hub);
    }
    let hub = Hub::start(&["--log-format", "json"], &[]);
    assert_eq!(
        ready_line(&hub)["fields"]["demo_feed"],
        false,
        "off by default"
    );
}
