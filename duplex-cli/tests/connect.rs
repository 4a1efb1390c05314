//! `duplex connect` end to end: pipe mode and `--jsonl` against `duplex echo`, a Python
//! `websockets` server and scripted servers in this file; the interactive mode driven in
//! tmux (`send-keys`, `capture-pane`).
//!
//! Everything listens on loopback, every wait has a deadline, and every process started
//! here is stopped by its handle (tmux by its private socket) when a test ends.

use duplex::{CloseCode, Message, WebSocket};
use serde_json::Value;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_duplex");
/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

// --- servers ------------------------------------------------------------------------------

/// A child process that prints `listening on ADDR` when ready; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `command` and waits for its ready line (on stdout or stderr).
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{command:?} printed no ready line"));
            if let Some(addr) = line.split("listening on ").nth(1) {
                break addr.trim().to_owned();
            }
        };
        Self { child, addr, lines }
    }

    fn duplex_echo() -> Self {
        let mut command = Command::new(BIN);
        command.args(["echo", "--listen", "127.0.0.1:0"]);
        Self::start(command)
    }

    /// The Python `websockets` server below, in `mode` (`echo` or `headers`).
    fn python(mode: &str) -> Self {
        let python = std::env::var_os("DUPLEX_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
            });
        assert!(
            python.exists(),
            "{} is missing: run `scripts/test.sh setup` (it creates .venv/ with the Python \
             `websockets` package), or set DUPLEX_TEST_PYTHON",
            python.display()
        );
        let mut command = Command::new(python);
        command.args(["-c", PYTHON_SERVER, mode]);
        Self::start(command)
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Waits for a line of output containing `text`.
    fn expect_line(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(_) => panic!("the server never printed {text:?}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python `websockets` server for one connection. `echo`: echo every message.
/// `headers`: first send the request's Origin, Authorization, X-Test and the subprotocol
/// as JSON, ping the client, send a binary message, then echo. Either way, print the
/// client's close code at the end.
const PYTHON_SERVER: &str = r#"
import asyncio, json, sys
from websockets.asyncio.server import serve

MODE = sys.argv[1]

async def main():
    done = asyncio.get_running_loop().create_future()

    async def handler(ws):
        if MODE == "headers":
            h = ws.request.headers
            await ws.send(json.dumps({
                "origin": h.get("Origin"), "authorization": h.get("Authorization"),
                "x-test": h.get("X-Test"), "subprotocol": ws.subprotocol,
            }))
            await ws.ping(b"srv-ping")
            await ws.send(b"\x00\x01\xfe")
        async for message in ws:
            await ws.send(message)
        rcvd = ws.protocol.close_rcvd
        print(f"client closed with {rcvd.code if rcvd else None}", flush=True)
        if not done.done():
            done.set_result(None)

    subprotocols = ["chat"] if MODE == "headers" else None
    async with serve(handler, "127.0.0.1", 0, subprotocols=subprotocols, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await asyncio.wait_for(done, 60)

asyncio.run(main())
"#;

/// A server written in this file: `script(n, ws)` handles the n-th connection (from 0);
/// the server stops after `connections` of them, or after a minute.
fn scripted_server<F, Fut>(connections: usize, script: F) -> String
where
    F: Fn(usize, WebSocket<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().to_string()).unwrap();
            let serve = async {
                for n in 0..connections {
                    let (tcp, _) = listener.accept().await.unwrap();
                    if let Ok(ws) = duplex::accept(tcp).await {
                        script(n, ws).await;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(60), serve).await;
        });
    });
    rx.recv_timeout(WAIT).unwrap()
}

// --- the client ---------------------------------------------------------------------------

/// A running `duplex connect` with piped stdin and stdout; killed when dropped.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Client {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("connect")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn duplex connect");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the next stdout line.
    fn line(&mut self) -> String {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no more output; so far: {:#?}", self.seen));
        self.seen.push(line.clone());
        line
    }

    /// Waits for the next JSON line (`--jsonl`).
    fn event(&mut self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }

    /// Waits for the next event of kind `name`, skipping others.
    fn event_named(&mut self, name: &str) -> Value {
        loop {
            let event = self.event();
            if event["event"] == name {
                return event;
            }
        }
    }

    /// Ends stdin (unless `keep_stdin`), waits for the exit; returns it and the rest of
    /// stdout.
    fn finish(mut self, keep_stdin: bool) -> (ExitStatus, Vec<String>) {
        if !keep_stdin {
            self.stdin.take();
        }
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "duplex connect did not exit; output: {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reading thread ends at EOF, which comes with the exit.
        let rest: Vec<String> = self.lines.iter().collect();
        (status, rest)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

// --- pipe mode and --jsonl ----------------------------------------------------------------

#[test]
fn pipe_mode_text_and_binary_through_duplex_echo() {
    let server = Server::duplex_echo();
    let url = server.url();

    let mut client = Client::start(&["--deflate-window-bits", "9", &url]);
    for line in ["hello", "", "ünïcödé ✓"] {
        client.send(line);
        assert_eq!(client.line(), line);
    }
    let (status, rest) = client.finish(false);
    assert!(status.success(), "exit {status:?}");
    assert!(rest.is_empty(), "{rest:?}");

    // Binary both ways, in hex and in base64.
    let mut client = Client::start(&["--send-binary", "--no-deflate", &url]);
    client.send("00 01 fe FF");
    assert_eq!(client.line(), "0001feff");
    let (status, _) = client.finish(false);
    assert!(status.success(), "exit {status:?}");

    let mut client = Client::start(&["--send-binary", "--binary-format", "base64", &url]);
    client.send("AAH+/w==");
    assert_eq!(client.line(), "AAH+/w==");
    // A line that does not decode: clean close, then exit 1.
    client.send("not base64!");
    let (status, _) = client.finish(true);
    assert_eq!(status.code(), Some(1));
}

#[test]
fn jsonl_reports_open_messages_pongs_and_close() {
    let server = Server::duplex_echo();
    let url = server.url();
    let mut client = Client::start(&["--jsonl", "--ping-interval", "100ms", "--timestamps", &url]);
    let open = client.event();
    assert_eq!(open["event"], "open", "{open}");
    assert_eq!(open["url"], url.as_str());
    assert_eq!(open["extensions"], "permessage-deflate");
    assert!(
        open["time"].as_f64().is_some(),
        "--timestamps adds time: {open}"
    );

    client.send("hello");
    let message = client.event_named("message");
    assert_eq!(
        (&message["type"], &message["data"]),
        (&"text".into(), &"hello".into())
    );
    // Keepalive pings every 100 ms: their pongs come back with round-trip times.
    for _ in 0..2 {
        let pong = client.event_named("pong");
        assert!(pong["rtt_ms"].as_f64().unwrap() >= 0.0, "{pong}");
        assert_eq!(pong["encoding"], "hex");
    }
    let (status, rest) = client.finish(false);
    assert!(status.success(), "exit {status:?}");
    let close = json_lines(&rest).pop().expect("a close event");
    assert_eq!(close["event"], "close", "{close}");
    assert_eq!(
        (close["code"].as_u64(), close["clean"].as_bool()),
        (Some(1000), Some(true))
    );
}

#[test]
fn max_messages_closes_after_n_even_with_stdin_open() {
    let server = Server::duplex_echo();
    let mut client = Client::start(&["--max-messages", "2", &server.url()]);
    for line in ["one", "two", "three"] {
        client.send(line);
    }
    assert_eq!(client.line(), "one");
    assert_eq!(client.line(), "two");
    let (status, rest) = client.finish(true);
    assert!(status.success(), "exit {status:?}");
    assert!(rest.is_empty(), "printed past --max-messages: {rest:?}");
}

#[test]
fn echo_mode_sends_messages_back() {
    let addr = scripted_server(2, |_, mut ws| async move {
        ws.send(Message::text("first")).await.unwrap();
        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("first"));
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::binary(vec![1, 2, 3])
        );
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
    });
    let client = Client::start(&["--echo", "--jsonl", &format!("ws://{addr}/")]);
    let (status, rest) = client.finish(true);
    assert!(status.success(), "exit {status:?}");
    let events = json_lines(&rest);
    let close = events.last().unwrap();
    assert_eq!(
        (close["code"].as_u64(), &close["reason"]),
        (Some(1000), &"done".into())
    );
    assert_eq!(events[2]["data"], "010203", "{events:?}");

    // Without --jsonl, nothing on stdout: the messages went back to the server.
    let client = Client::start(&["--echo", &format!("ws://{addr}/")]);
    let (status, rest) = client.finish(true);
    assert!(status.success(), "exit {status:?}");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn timeout_bounds_connecting_and_silence() {
    // A server that accepts the TCP connection and never answers the handshake.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let started = Instant::now();
    let client = Client::start(&["--timeout", "300ms", &url]);
    let (status, _) = client.finish(true);
    assert_eq!(status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);

    // Connected, but nothing arrives.
    let server = Server::duplex_echo();
    let started = Instant::now();
    let client = Client::start(&["--jsonl", "--timeout", "300ms", &server.url()]);
    let (status, rest) = client.finish(true);
    assert_eq!(status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    let events = json_lines(&rest);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["open", "error", "close"], "{events:?}");
    assert_eq!(events[2]["clean"], false);
    assert_eq!(events[2]["code"], 1006);
}

#[test]
fn reconnect_with_backoff_after_the_server_closes() {
    let addr = scripted_server(2, |n, mut ws| async move {
        ws.send(Message::text(format!("connection {n}")))
            .await
            .unwrap();
        if n == 0 {
            ws.close(CloseCode::GOING_AWAY, "restarting").await.unwrap();
        } else {
            // The client closes once it has its two messages.
            while let Some(Ok(_)) = ws.recv().await {}
        }
    });
    let started = Instant::now();
    let client = Client::start(&[
        "--jsonl",
        "--reconnect",
        "--max-messages",
        "2",
        &format!("ws://{addr}/"),
    ]);
    let (status, rest) = client.finish(true);
    assert!(status.success(), "exit {status:?}");
    let events = json_lines(&rest);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "open",
            "message",
            "close",
            "reconnecting",
            "open",
            "message",
            "close"
        ],
        "{events:?}"
    );
    assert_eq!(events[1]["data"], "connection 0");
    assert_eq!(
        (events[2]["code"].as_u64(), &events[2]["reason"]),
        (Some(1001), &"restarting".into())
    );
    assert_eq!(
        (
            events[3]["attempt"].as_u64(),
            events[3]["delay_ms"].as_u64()
        ),
        (Some(1), Some(500))
    );
    assert_eq!(events[5]["data"], "connection 1");
    assert_eq!(events[6]["code"], 1000);
    assert!(started.elapsed() >= Duration::from_millis(500), "backoff");
}

#[test]
fn reconnect_limit_gives_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/");
    let started = Instant::now();
    let client = Client::start(&["--jsonl", "--reconnect", "--reconnect-limit", "2", &url]);
    let (status, rest) = client.finish(true);
    assert_eq!(status.code(), Some(1));
    let kinds: Vec<String> = json_lines(&rest)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["error", "reconnecting", "error", "reconnecting", "error"]
    );
    // 0.5 s, then 1 s.
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--deflate-window-bits", "7", "ws://127.0.0.1:1/"][..],
        &[
            "--no-deflate",
            "--deflate-window-bits",
            "9",
            "ws://127.0.0.1:1/",
        ],
        &["--max-messages", "0", "ws://127.0.0.1:1/"],
        &["--timeout", "0s", "ws://127.0.0.1:1/"],
        &["--reconnect-limit", "3", "ws://127.0.0.1:1/"],
        &["--binary-format", "octal", "ws://127.0.0.1:1/"],
    ] {
        let status = Command::new(BIN)
            .arg("connect")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}

// --- against Python websockets ------------------------------------------------------------

#[test]
fn pipe_mode_against_python_websockets() {
    let server = Server::python("echo");
    let mut client = Client::start(&[&server.url()]);
    for line in ["from duplex", "to python and back"] {
        client.send(line);
        assert_eq!(client.line(), line);
    }
    let (status, _) = client.finish(false);
    assert!(status.success(), "exit {status:?}");
    server.expect_line("client closed with 1000");
}

#[test]
fn jsonl_headers_pings_and_binary_against_python_websockets() {
    let server = Server::python("headers");
    let mut client = Client::start(&[
        "--jsonl",
        "--binary-format",
        "base64",
        "-H",
        "X-Test: yes",
        "--origin",
        "http://origin.test",
        "--token",
        "s3cret",
        "--subprotocol",
        "chat",
        &server.url(),
    ]);
    let open = client.event();
    assert_eq!(
        (&open["event"], &open["protocol"]),
        (&"open".into(), &"chat".into())
    );
    let headers = client.event_named("message");
    let headers: Value = serde_json::from_str(headers["data"].as_str().unwrap()).unwrap();
    assert_eq!(headers["origin"], "http://origin.test");
    assert_eq!(headers["authorization"], "Bearer s3cret");
    assert_eq!(headers["x-test"], "yes");
    assert_eq!(headers["subprotocol"], "chat");
    let ping = client.event();
    assert_eq!(ping["event"], "ping", "{ping}");
    assert_eq!(ping["data"], "c3J2LXBpbmc="); // base64("srv-ping")
    let binary = client.event();
    assert_eq!(
        (&binary["type"], &binary["data"]),
        (&"binary".into(), &"AAH+".into())
    );
    client.send("bye");
    assert_eq!(client.event()["data"], "bye");
    let (status, rest) = client.finish(false);
    assert!(status.success(), "exit {status:?}");
    assert_eq!(json_lines(&rest).last().unwrap()["code"], 1000);
    server.expect_line("client closed with 1000");
}

// --- interactive, in tmux -----------------------------------------------------------------

/// How the tmux wrapper reports the command's exit status: `[exit=0]`.
const EXIT_MARK: &str = "[exit=";

/// A private tmux server (its own socket) with one window running a command.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` (no single quotes) under `sh`, which prints its exit status.
    fn start(command: &str) -> Self {
        assert!(!command.contains('\''), "{command}");
        let command = format!("sh -c '{command}; echo \"{EXIT_MARK}$?]\"'");
        let found = Command::new("tmux").arg("-V").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "tmux is required for the interactive tests (scripts/test.sh setup installs it)"
        );
        let socket = format!(
            "duplex-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let tmux = Self { socket };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "40",
            &command,
            ";",
            "set-option",
            "-t",
            "t",
            "remain-on-exit",
            "on",
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .unwrap();
        assert!(output.status.success(), "tmux {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `text` literally (no key names), without Enter.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
    }

    fn screen(&self) -> Vec<String> {
        // With the scrollback: keepalive pongs push older lines off the visible screen.
        self.run(&["capture-pane", "-p", "-t", "t", "-S", "-5000"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `check` accepts the screen; returns it.
    fn wait_for(&self, what: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_line(&self, what: &str) -> Vec<String> {
        self.wait_for(what, |screen| screen.iter().any(|l| l.contains(what)))
    }

    fn count(screen: &[String], what: &str) -> usize {
        screen.iter().filter(|l| l.contains(what)).count()
    }

    /// Sends one line and waits for the prompt to come back empty, so the next keys go
    /// to a fresh prompt (keys typed before it are lost by the line editor).
    fn enter(&self, line: &str) {
        self.type_text(line);
        self.keys(&["Enter"]);
        self.wait_for("a fresh prompt", |screen| {
            screen
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(String::as_str)
                == Some(">")
        });
    }

    /// The exit status once the command ended (printed by the wrapper: tmux 3.3 does not
    /// always record a dead pane's status).
    fn exit_status(&self) -> i32 {
        let screen = self.wait_for_line(EXIT_MARK);
        let line = screen.iter().find(|l| l.contains(EXIT_MARK)).unwrap();
        line[line.find(EXIT_MARK).unwrap() + EXIT_MARK.len()..]
            .trim_end_matches(']')
            .parse()
            .unwrap_or_else(|_| panic!("no exit status in {line:?}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn is_timestamped(line: &str, rest: &str) -> bool {
    let bytes = line.as_bytes();
    line.len() > 13
        && bytes[2] == b':'
        && bytes[5] == b':'
        && bytes[8] == b'.'
        && line[..12].chars().filter(char::is_ascii_digit).count() == 9
        && line[12..].strip_prefix(' ') == Some(rest)
}

#[test]
fn interactive_mode_in_tmux() {
    let server = Server::duplex_echo();
    let file = std::env::temp_dir().join(format!("duplex-connect-{}.txt", std::process::id()));
    std::fs::write(&file, "file contents").unwrap();
    let tmux = Tmux::start(&format!(
        "{BIN} connect --ping-interval 300ms {}",
        server.url()
    ));
    tmux.wait_for_line("* connected to ws://");

    tmux.enter("hello there");
    tmux.wait_for_line("< hello there");
    tmux.enter("/ping abc");
    tmux.wait_for_line("* pong \"abc\", round trip");
    tmux.enter("/binary 00ff10");
    tmux.wait_for_line("< [binary 3 B] 00ff10");
    tmux.enter(&format!("/file {}", file.display()));
    tmux.wait_for_line("< file contents");
    tmux.enter("//slash");
    tmux.wait_for_line("< /slash");
    tmux.enter("/nope");
    tmux.wait_for_line("! unknown command /nope");
    tmux.enter("/timestamps");
    tmux.wait_for_line("timestamps on (UTC)");
    tmux.enter("stamped");
    tmux.wait_for("a timestamped message", |screen| {
        screen.iter().any(|l| is_timestamped(l, "< stamped"))
    });
    tmux.enter("/timestamps off");

    // Keepalive pongs arrive while a line is half typed: they are printed above it and the
    // typed text stays on the prompt line, at the bottom.
    tmux.type_text("half typed");
    let before = Tmux::count(&tmux.screen(), "* pong, round trip");
    let screen = tmux.wait_for("pongs printed above the prompt", |screen| {
        Tmux::count(screen, "* pong, round trip") >= before + 2
    });
    let last = screen.iter().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert_eq!(last, "> half typed", "screen:\n{}", screen.join("\n"));

    // History: clear the line; Up, Up recalls the line before `/timestamps off`.
    tmux.keys(&["C-u", "Up", "Up", "Enter"]);
    tmux.wait_for("the recalled line echoed", |screen| {
        screen
            .iter()
            .filter(|l| is_timestamped(l, "< stamped") || *l == "< stamped")
            .count()
            == 2
    });

    tmux.type_text("/quit");
    tmux.keys(&["Enter"]);
    assert_eq!(tmux.exit_status(), 0);
    tmux.wait_for_line("* closed: 1000");
    let _ = std::fs::remove_file(file);
}

#[test]
fn interactive_exit_when_the_server_closes_restores_the_terminal() {
    let addr = scripted_server(1, |_, mut ws| async move {
        // Close once the client said something, while its prompt waits for more.
        let _ = ws.recv().await;
        ws.close(CloseCode::new(4001), "server says bye")
            .await
            .unwrap();
    });
    let tmux = Tmux::start(&format!("{BIN} connect ws://{addr}/ && stty -a"));
    tmux.wait_for_line("* connected to ws://");
    tmux.type_text("hi");
    tmux.keys(&["Enter"]);
    assert_eq!(tmux.exit_status(), 0);
    let text = tmux.screen().join("\n");
    assert!(
        text.contains("* closed: 4001 \"server says bye\""),
        "{text}"
    );
    // Back in cooked mode with echo: the line editor's raw mode did not outlive it.
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(
        words.contains(&"icanon") && words.contains(&"echo"),
        "{text}"
    );
    assert!(
        !words.contains(&"-icanon") && !words.contains(&"-echo"),
        "{text}"
    );
}
