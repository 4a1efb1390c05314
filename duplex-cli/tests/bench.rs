//! `duplex bench` end to end: short runs against `duplex echo` and `duplex serve` on free
//! loopback ports. Only consistency is asserted (every message sent came back, nothing was
//! counted wrong, the exit status and the JSON agree), never speed.

use serde_json::Value;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_duplex");

/// How long any one bench run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A running `duplex echo` or `duplex serve`; killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (child, addr, _) = common::spawn_listening(command, Duration::from_secs(20));
        Self { child, addr }
    }

    fn echo() -> Self {
        Self::start(&["echo"])
    }

    /// The hub, with a `bench` namespace open to anonymous publishers, rooms, an HTTP API key
    /// and a publish rate limit the runs stay under.
    fn hub() -> Self {
        Self::start(&[
            "serve",
            "--api-key",
            API_KEY,
            "--publish-rate",
            "100000",
            "--set",
            "namespaces.bench.publish=\"anonymous\"",
            "--set",
            "namespaces.rooms.publish=\"anonymous\"",
        ])
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const API_KEY: &str = "bench-test-key-0123456789";

/// What a `duplex bench` run left behind.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn assert_success(&self) {
        assert!(
            self.status.success(),
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `duplex bench ARGS`, killing it if it outlives [`RUN_LIMIT`].
fn bench(args: &[&str]) -> Run {
    let mut child = Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn duplex bench");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("duplex bench {args:?} ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Checks what every successful message run reports.
fn assert_consistent(report: &Value) {
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["errors"]["total"], 0, "{report:#}");
    assert_eq!(
        report["connections"]["opened"], report["connections"]["requested"],
        "{report:#}"
    );
    assert_eq!(report["received"], report["expected"], "{report:#}");
    assert!(report["sent"].as_u64().unwrap() > 0, "{report:#}");
}

#[test]
fn echo_ping_pong_gets_every_message_back() {
    let server = Server::echo();
    let run = bench(&[
        "echo",
        &server.url(),
        "-c",
        "4",
        "--duration",
        "1s",
        "--json",
    ]);
    run.assert_success();
    let report = run.json();
    assert_consistent(&report);
    assert_eq!(report["mode"], "echo");
    assert_eq!(report["sent"], report["received"]);
    assert_eq!(report["connections"]["opened"], 4);
    assert_eq!(report["latency_from"], "send time");
    let latency = &report["latency_us"];
    assert!(latency["count"].as_u64().unwrap() > 0);
    assert!(latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap());
    assert!(latency["p99_9"].as_f64().unwrap() <= latency["max"].as_f64().unwrap());
}

#[test]
fn echo_pipelined_binary_at_a_rate_with_a_plot() {
    let server = Server::echo();
    let plot = std::env::temp_dir().join(format!("duplex-bench-{}.svg", std::process::id()));
    let run = bench(&[
        "echo",
        &server.url(),
        "-c",
        "3",
        "--window",
        "8",
        "--binary",
        "--size",
        "300",
        "--rate",
        "600",
        "--messages",
        "400",
        "--warmup",
        "200ms",
        "--duration",
        "1s",
        "--no-deflate",
        "--json",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    run.assert_success();
    let report = run.json();
    assert_consistent(&report);
    assert_eq!(report["sent"], report["received"]);
    assert!(report["sent"].as_u64().unwrap() <= 400);
    assert_eq!(
        report["bytes_received"],
        report["sent"].as_u64().unwrap() * 300
    );
    assert_eq!(report["latency_from"], "intended send time");
    assert_eq!(report["settings"]["window"], 8);
    assert_eq!(report["settings"]["binary"], true);
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    let _ = std::fs::remove_file(&plot);
    assert!(svg.starts_with("<svg"), "{svg:.200}");
    assert!(svg.contains("<polyline"));
}

#[test]
fn echo_text_report_says_ok() {
    let server = Server::echo();
    let run = bench(&[
        "echo",
        &server.url(),
        "-c",
        "2",
        "--messages",
        "50",
        "--duration",
        "5s",
    ]);
    run.assert_success();
    assert!(
        run.stdout.contains("50 sent, 50 received of 50 expected"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("result       OK"), "{}", run.stdout);
}

#[test]
fn connect_closes_every_connection_cleanly() {
    let server = Server::echo();
    let run = bench(&[
        "connect",
        &server.url(),
        "-c",
        "2",
        "--handshakes",
        "30",
        "--duration",
        "5s",
        "--json",
    ]);
    run.assert_success();
    let report = run.json();
    assert_eq!(report["ok"], true, "{report:#}");
    let handshakes = &report["handshakes"];
    assert_eq!(handshakes["attempted"], 30);
    assert_eq!(handshakes["completed"], 30);
    assert_eq!(handshakes["clean_closes"], 30);
    assert_eq!(report["errors"]["total"], 0);
}

#[test]
fn idle_holds_connections_and_reads_server_memory() {
    let server = Server::echo();
    let run = bench(&[
        "idle",
        &server.url(),
        "-c",
        "50",
        "--warm",
        "4",
        "--duration",
        "300ms",
        "--server-pid",
        &server.pid(),
        "--json",
    ]);
    run.assert_success();
    let report = run.json();
    assert_eq!(report["ok"], true, "{report:#}");
    // The warm-up connections are held and closed cleanly too, but not counted.
    assert_eq!(report["connections"]["opened"], 50);
    assert_eq!(report["errors"]["total"], 0);
    let memory = &report["memory"]["server"];
    assert_eq!(memory["pid"].as_u64().unwrap().to_string(), server.pid());
    assert!(memory["before"]["vm_rss_kib"].as_u64().unwrap() > 0);
    assert!(memory["per_connection_bytes"]["vm_rss"].is_number());
}

#[test]
fn non_loopback_targets_are_refused() {
    // TEST-NET-1: never reachable, and refused before any connection is tried.
    let run = bench(&["echo", "ws://192.0.2.1:9001/", "--duration", "1s"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("not a loopback address"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--allow-remote"), "{}", run.stderr);
    assert!(run.stdout.is_empty());

    let run = bench(&[
        "fanout",
        "ws://127.0.0.1:9/",
        "--via-http",
        "http://192.0.2.1/",
        "--duration",
        "1s",
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("not a loopback address"),
        "{}",
        run.stderr
    );

    let run = bench(&["echo", "http://127.0.0.1:9/"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    let run = bench(&["echo", "ws://127.0.0.1:9/", "--size", "8"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("too small"), "{}", run.stderr);
}

#[test]
fn a_wrong_echo_fails_the_run() {
    // An "echo" server that changes every 7th message and sends every 11th twice.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = duplex::accept(tcp).await else {
                    return;
                };
                let mut n = 0u64;
                while let Some(Ok(message)) = ws.recv().await {
                    n += 1;
                    let text = message.as_text().unwrap_or_default().to_owned();
                    // (Remainders named, not `is_multiple_of`: that needs Rust 1.87.)
                    let (seventh, eleventh) = (n % 7, n % 11);
                    let reply = if seventh == 0 {
                        let mut bytes = text.into_bytes();
                        let last = bytes.len() - 1;
                        bytes[last] = if bytes[last] == b'#' { b'$' } else { b'#' };
                        duplex::Message::text(String::from_utf8(bytes).unwrap())
                    } else {
                        duplex::Message::text(text)
                    };
                    if eleventh == 0 && ws.send(reply.clone()).await.is_err() {
                        return;
                    }
                    if ws.send(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let run = bench(&[
        "echo",
        &url,
        "-c",
        "2",
        "--window",
        "4",
        "--messages",
        "200",
        "--duration",
        "1s",
        "--json",
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["ok"], false);
    let errors = &report["errors"];
    assert!(errors["corrupt"].as_u64().unwrap() > 0, "{report:#}");
    assert!(errors["duplicate"].as_u64().unwrap() > 0, "{report:#}");
    // A corrupted echo never counts as received: its message is missing.
    assert_eq!(errors["missing"], errors["corrupt"], "{report:#}");
    assert!(run.stderr.contains("bench echo failed"), "{}", run.stderr);
    runtime.shutdown_background();
}

#[test]
fn fanout_delivers_every_publication_once_in_order() {
    let hub = Server::hub();
    let run = bench(&[
        "fanout",
        &hub.url(),
        "-c",
        "8",
        "--messages",
        "100",
        "--rate",
        "400",
        "--duration",
        "5s",
        "--json",
    ]);
    run.assert_success();
    let report = run.json();
    assert_consistent(&report);
    assert_eq!(report["sent"], 100);
    assert_eq!(report["expected"], 800);
    assert_eq!(report["received"], 800);
    assert_eq!(report["settings"]["channel"], "bench:fanout");
    assert_eq!(report["latency_us"]["count"], 800);
}

#[test]
fn fanout_through_the_http_api() {
    let hub = Server::hub();
    let http = format!("http://{}", hub.addr);
    let run = bench(&[
        "fanout",
        &hub.url(),
        "-c",
        "5",
        "--messages",
        "60",
        "--rate",
        "300",
        "--via-http",
        &http,
        "--api-key",
        API_KEY,
        "--duration",
        "5s",
        "--json",
    ]);
    run.assert_success();
    let report = run.json();
    assert_consistent(&report);
    assert_eq!(report["received"], 300);
    assert_eq!(report["settings"]["publisher"], http.as_str());
}

#[test]
fn rooms_deliver_every_message_to_every_other_member() {
    let hub = Server::hub();
    let run = bench(&[
        "rooms",
        &hub.url(),
        "-c",
        "6",
        "--messages",
        "80",
        "--rate",
        "400",
        "--duration",
        "5s",
        "--json",
    ]);
    run.assert_success();
    let report = run.json();
    assert_consistent(&report);
    assert_eq!(report["received"], 480);
    assert_eq!(report["settings"]["channel"], "rooms:bench");
}
