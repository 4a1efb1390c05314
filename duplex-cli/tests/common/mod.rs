//! Helpers shared by the `duplex` command's integration tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Spawns `command` with stderr piped and waits up to `limit` for its `listening on ADDR`
/// line. Returns the child, ADDR and the stderr lines that follow; the lines keep being read
/// even when the receiver is dropped, so a chatty child never blocks on a full pipe. The
/// child is killed if the line does not come.
pub fn spawn_listening(
    mut command: Command,
    limit: Duration,
) -> (Child, String, mpsc::Receiver<String>) {
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.as_ref().is_some_and(|t| t.send(line).is_err()) {
                tx = None;
            }
        }
    });
    let deadline = Instant::now() + limit;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return (child, addr.trim().to_owned(), rx);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{:?} printed no 'listening on' line",
                    command.get_args().collect::<Vec<_>>()
                );
            }
        }
    }
}
