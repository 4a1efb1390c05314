//! What the reference servers of `bench/run.sh` share: the command line, the runtime and the
//! ready line. Every server runs on the same runtime shape as `duplex echo` and `duplex serve`
//! (tokio's multi-thread runtime with its default worker count, which is one under
//! `taskset -c 0`), and prints `listening on ADDR` on stderr once it accepts connections.

use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The options every reference server takes.
pub struct ServerArgs {
    /// Where to listen (`--listen`, default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// `--broadcast`: relay every message to every other connection instead of echoing it.
    pub broadcast: bool,
    /// `--close` (only `raw_tcp`): close every connection as soon as it is accepted, the
    /// raw baseline of the handshake benchmark.
    pub close: bool,
}

impl ServerArgs {
    /// Parses `--listen ADDR`, `--broadcast` and, when `usage` names it, `--close`; exits
    /// with status 2 on anything else.
    pub fn parse(usage: &str) -> Self {
        let mut args = ServerArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            broadcast: false,
            close: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--listen" => {
                    let value = it.next().unwrap_or_default();
                    args.listen = value.parse().unwrap_or_else(|_| {
                        eprintln!("--listen: {value:?} is not an address like 127.0.0.1:0");
                        std::process::exit(2)
                    });
                }
                "--broadcast" => args.broadcast = true,
                "--close" if usage.contains("--close") => args.close = true,
                _ => {
                    eprintln!("usage: {usage}");
                    std::process::exit(2)
                }
            }
        }
        args
    }
}

/// Runs `server` on the runtime `duplex echo` uses; returns its error as the exit status.
pub fn run<F, Fut>(server: F) -> std::process::ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Binds `addr` and prints the ready line.
pub async fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    // One write: `eprintln!` writes each piece of its format separately to the unbuffered
    // stderr, and bench/run.sh once read the address while its port was still to come.
    let line = format!("listening on {}\n", listener.local_addr()?);
    std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes())?;
    Ok(listener)
}

/// Accepts forever, handing each connection (with `TCP_NODELAY`, like `duplex echo`) to
/// `serve` in its own task.
pub async fn accept_loop<F, Fut>(listener: TcpListener, mut serve: F) -> std::io::Result<()>
where
    F: FnMut(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve(tcp));
            }
            Err(error) => {
                // Out of descriptors and the like: breathe, like `duplex echo`.
                eprintln!("accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
