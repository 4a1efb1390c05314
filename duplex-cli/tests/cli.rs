//! The `duplex` binary end to end: `echo` on a free loopback port, `connect` against it.

use duplex::CloseCode;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_duplex");

/// A running `duplex echo`; killed if the test fails half-way.
struct EchoServer {
    child: Child,
    addr: String,
}

impl EchoServer {
    fn start(extra: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(["echo", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (child, addr, _) = common::spawn_listening(command, Duration::from_secs(20));
        assert!(
            !addr.ends_with(":0"),
            "ready line shows the bound port: {addr}"
        );
        Self { child, addr }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `duplex connect` with `input` on stdin; returns (exit status, stdout).
fn connect(args: &[&str], input: &str) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(BIN)
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn duplex connect");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("duplex connect did not exit")
        .unwrap();
    (output.status, String::from_utf8(output.stdout).unwrap())
}

/// Runs `duplex connect` interactively: writes `lines`, waits until as many lines came
/// back, then ends stdin; returns (exit status, stdout).
fn converse(args: &[&str], lines: &[&str]) -> (std::process::ExitStatus, Vec<String>) {
    let mut child = Command::new(BIN)
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn duplex connect");
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut received = Vec::new();
    while received.len() < lines.len() {
        received.push(
            rx.recv_timeout(Duration::from_secs(20))
                .expect("echoed line did not arrive"),
        );
    }
    drop(stdin); // end of input: close with 1000
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = done
        .recv_timeout(Duration::from_secs(20))
        .expect("duplex connect did not exit")
        .unwrap();
    received.extend(rx.try_iter());
    (status, received)
}

#[test]
fn connect_pipes_lines_through_echo() {
    let server = EchoServer::start(&[]);
    let url = format!("ws://{}/", server.addr);
    let lines = ["hello", "second line", "", "ünïcödé ✓", "last"];
    let (status, received) = converse(&[&url], &lines);
    assert!(status.success(), "exit {status:?}");
    assert_eq!(received, lines);

    let (status, received) = converse(&["--no-deflate", "-H", "X-Test: 1", &url], &["plain"]);
    assert!(status.success(), "exit {status:?}");
    assert_eq!(received, ["plain"]);
}

#[test]
fn connect_fails_with_nonzero_exit() {
    // Nothing listens on this port once the listener is gone.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (status, _) = connect(&[&format!("ws://127.0.0.1:{port}/")], "");
    assert!(!status.success());
    let (status, _) = connect(&["http//not a url"], "");
    assert!(!status.success());
}

#[test]
fn sigterm_closes_connections_with_1001_and_exits_0() {
    let mut server = EchoServer::start(&[]);
    let url = format!("ws://{}/", server.addr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut ws, _) = duplex::connect(&url).await.unwrap();
        ws.send(duplex::Message::text("ping")).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            duplex::Message::text("ping")
        );
        server.sigterm();
        let end = tokio::time::timeout(Duration::from_secs(10), ws.recv())
            .await
            .expect("server did not close");
        assert!(end.is_none(), "clean close expected, got {end:?}");
        assert_eq!(
            ws.close_frame().map(|f| f.code),
            Some(CloseCode::GOING_AWAY)
        );
    });
    let status = server.wait(Duration::from_secs(15));
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn idle_server_stops_on_sigterm() {
    let mut server = EchoServer::start(&["--no-deflate", "--max-message-size", "1MiB"]);
    server.sigterm();
    let status = server.wait(Duration::from_secs(15));
    assert!(status.success(), "exit {status:?}");
}
