//! Keeps docs/http-api.md true: every `sh` block of the page that runs `curl` is run, in
//! order, against a hub started here, and what it prints must match the `json` or `text`
//! block that follows it. JSON is compared structurally; the strings `"<epoch>"` and
//! `"<client>"` stand for any non-empty string and `"<any>"` for any value, also as an
//! object key (then matching one key the object does not otherwise name).
//!
//! As the page says, one `duplex.v1` client, authenticated as user `42`, is subscribed to
//! `chat:lobby` throughout. The examples need `curl` on the PATH; without it this test fails.

use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use duplex_hub::auth::{KeyAlgorithm, KeyConfig};
use duplex_hub::metrics::Metrics;
use duplex_hub::{HubConfig, MemoryBroker, Node, Settings};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The API key of the page's examples (`KEY=...` in its setup block).
const KEY: &str = "0123456789abcdef-docs";

/// Longest time one example may take.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(20);

fn crate_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read_doc() -> String {
    std::fs::read_to_string(crate_path("../docs/http-api.md")).expect("docs/http-api.md exists")
}

/// A fenced code block of a Markdown page.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    body: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match open.take() {
            None => {
                if let Some(lang) = fence.strip_prefix("```") {
                    open = Some(Block {
                        line: i + 1,
                        lang: lang.trim().to_owned(),
                        body: String::new(),
                    });
                }
            }
            Some(block) if fence.starts_with("```") => blocks.push(block),
            Some(mut block) => {
                block.body.push_str(line);
                block.body.push('\n');
                open = Some(block);
            }
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    blocks
}

/// An example: a shell script and the output block that follows it.
struct Example<'a> {
    script: &'a Block,
    output: &'a Block,
}

fn examples(blocks: &[Block]) -> Vec<Example<'_>> {
    let mut examples = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if block.lang == "sh" && block.body.contains("curl") {
            let output = blocks
                .get(i + 1)
                .filter(|b| b.lang == "json" || b.lang == "text")
                .unwrap_or_else(|| {
                    panic!(
                        "http-api.md:{}: a curl example must be followed by a json or text block",
                        block.line
                    )
                });
            examples.push(Example {
                script: block,
                output,
            });
        }
    }
    examples
}

fn placeholder(s: &str) -> bool {
    matches!(s, "<epoch>" | "<client>" | "<any>")
}

/// Whether `actual` matches `expected`; the error names the first difference by its path.
fn matches(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(p), _) if p == "<any>" => Ok(()),
        (Value::String(p), Value::String(a)) if placeholder(p) => {
            if a.is_empty() {
                Err(format!("{path}: expected {p}, found an empty string"))
            } else {
                Ok(())
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            let mut unmatched: Vec<&String> =
                a.keys().filter(|k| !e.contains_key(k.as_str())).collect();
            for (key, value) in e {
                let found = if placeholder(key) {
                    if unmatched.is_empty() {
                        None
                    } else {
                        let k = unmatched.remove(0);
                        Some((k, &a[k.as_str()]))
                    }
                } else {
                    a.get_key_value(key.as_str())
                };
                match found {
                    Some((k, v)) => matches(value, v, &format!("{path}.{k}"))?,
                    None => return Err(format!("{path}: missing key {key:?} in {actual}")),
                }
            }
            match unmatched.first() {
                Some(extra) => Err(format!("{path}: unexpected key {extra:?} in {actual}")),
                None => Ok(()),
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{path}: expected {} elements, found {} in {actual}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                matches(e, a, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{path}: expected {expected}, found {actual}")),
    }
}

/// Every JSON value in `text`, one after the other.
fn json_values(text: &str) -> Result<Vec<Value>, serde_json::Error> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect()
}

fn check_output(expected: &Block, stdout: &str) -> Result<(), String> {
    if expected.lang == "text" {
        let want: Vec<&str> = expected.body.lines().map(str::trim_end).collect();
        let got: Vec<&str> = stdout.lines().map(str::trim_end).collect();
        return if want == got {
            Ok(())
        } else {
            Err(format!("expected\n{}\nfound\n{stdout}", expected.body))
        };
    }
    let want = json_values(&expected.body).map_err(|e| format!("the json block: {e}"))?;
    let got = json_values(stdout).map_err(|e| format!("output is not JSON ({e}): {stdout}"))?;
    if want.len() != got.len() {
        return Err(format!(
            "expected {} JSON values, found {}: {stdout}",
            want.len(),
            got.len()
        ));
    }
    for (w, g) in want.iter().zip(&got) {
        matches(w, g, "$")?;
    }
    Ok(())
}

/// A token for user 42, signed with the HS256 test secret the hub is configured with.
fn token() -> String {
    let mut secret = std::fs::read(crate_path("tests/keys/hs256_secret.txt")).unwrap();
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let claims = json!({"sub": "42", "exp": now.as_secs() + 3600, "info": {"name": "Ann"}});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap()
}

async fn next_json(ws: &mut WebSocket<MaybeTlsStream>) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(10), ws.recv())
        .await
        .expect("a frame within 10 s")
        .expect("the connection is open")
        .expect("a valid frame");
    match message {
        Message::Text(text) => serde_json::from_str(&text).expect("frames are JSON"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The page's subscriber: connected as user 42 and subscribed to `chat:lobby`.
async fn subscriber(addr: SocketAddr) -> WebSocket<MaybeTlsStream> {
    let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/ws"))
        .protocols(["duplex.v1"])
        .connect()
        .await
        .expect("the subscriber connects");
    let connect = json!({"id": 1, "cmd": "connect", "token": token()});
    ws.send(Message::text(connect.to_string())).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["result"]["user"], "42", "connect: {reply}");
    let subscribe = json!({"id": 2, "cmd": "subscribe", "channel": "chat:lobby"});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(
        reply["result"]["channel"], "chat:lobby",
        "subscribe: {reply}"
    );
    ws
}

#[tokio::test]
async fn http_api_examples_hold() {
    let curl = std::process::Command::new("curl").arg("--version").output();
    assert!(
        curl.is_ok_and(|o| o.status.success()),
        "curl must be installed: the examples of docs/http-api.md are curl commands"
    );
    let doc = read_doc();
    assert!(
        doc.contains(&format!("KEY={KEY}\n")),
        "the page's setup block sets KEY={KEY}"
    );
    let blocks = blocks(&doc);
    let examples = examples(&blocks);
    assert!(
        examples.len() >= 10,
        "found only {} examples",
        examples.len()
    );

    tokio::time::timeout(Duration::from_secs(120), run_examples(&examples))
        .await
        .expect("the examples finish within 120 s");
}

async fn run_examples(examples: &[Example<'_>]) {
    let mut config = HubConfig::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.api.keys = vec![KEY.to_owned()];
    config.auth.keys = vec![KeyConfig {
        secret_file: Some(crate_path("tests/keys/hs256_secret.txt")),
        ..KeyConfig::new(KeyAlgorithm::HS256)
    }];
    let settings = Settings::new(config).expect("a valid configuration");
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Node::new(settings, Arc::new(MemoryBroker::new()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(duplex_hub::serve(node, listener, async move {
        let _ = stopped.await;
    }));

    // The subscriber reads everything it is sent until the server closes it.
    let mut ws = subscriber(addr).await;
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        while let Some(Ok(message)) = ws.recv().await {
            if let Message::Text(text) = message {
                frames.push(serde_json::from_str::<Value>(&text).expect("frames are JSON"));
            }
        }
        (frames, ws.close_frame())
    });

    let hub = format!("http://{addr}");
    let mut failures = Vec::new();
    for example in examples {
        let output = tokio::time::timeout(
            EXAMPLE_TIMEOUT,
            tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&example.script.body)
                .env("HUB", &hub)
                .env("KEY", KEY)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("http-api.md:{}: timed out", example.script.line))
        .expect("sh runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let result = if output.status.success() {
            check_output(example.output, &stdout)
        } else {
            Err(format!(
                "exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        };
        if let Err(e) = result {
            failures.push(format!(
                "http-api.md:{}:\n{}=> {e}",
                example.script.line, example.script.body
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));

    // What the page says the subscriber received.
    let (frames, close) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the subscriber is disconnected by the disconnect example")
        .unwrap();
    assert!(
        frames.iter().any(|f| f["push"] == "publication"
            && f["channel"] == "chat:lobby"
            && f["offset"] == 1
            && f["data"] == json!({"text": "hello"})
            && f.get("info").is_none()),
        "{frames:?}"
    );
    assert!(
        frames.contains(
            &json!({"push": "disconnect", "code": 4502, "reason": "account closed", "reconnect": false})
        ),
        "{frames:?}"
    );
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 4502);
    assert_eq!(&*close.reason, "account closed");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the hub stops")
        .unwrap()
        .unwrap();
}

#[test]
fn every_metric_is_documented() {
    let metrics = Metrics::new();
    // Labelled metrics are only rendered once they have a label value.
    metrics
        .connections
        .get_or_create(&vec![("dialect", "v1")])
        .inc();
    metrics
        .connections_total
        .get_or_create(&vec![("dialect", "v1")])
        .inc();
    metrics.auth_failure("invalid");
    metrics.limit_hit("max_connections");
    let doc = read_doc();
    let mut names = 0;
    for line in metrics.render().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        assert!(
            doc.contains(&format!("| `{sample}` | {kind} |")),
            "docs/http-api.md does not list the {kind} `{sample}`"
        );
        names += 1;
    }
    assert_eq!(names, 15, "update this count and the page's metrics table");
}

#[test]
fn placeholders_match() {
    let expected = json!({"clients": {"<client>": {"client": "<client>", "user": "42"}}});
    let actual = json!({"clients": {"abc": {"client": "abc", "user": "42"}}});
    assert!(matches(&expected, &actual, "$").is_ok());
    let two = json!({"clients": {"a": {"client": "a", "user": "42"}, "b": {}}});
    assert!(matches(&expected, &two, "$").is_err());
    assert!(matches(&json!({"e": "<epoch>"}), &json!({"e": ""}), "$").is_err());
    assert!(matches(&json!({"e": "<any>"}), &json!({"e": [1]}), "$").is_ok());
    assert!(matches(&json!([1, 2]), &json!([1, 2, 3]), "$").is_err());
    assert!(matches(&json!({"a": 1}), &json!({"a": 1, "b": 2}), "$").is_err());
}
