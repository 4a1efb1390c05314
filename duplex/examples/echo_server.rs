//! A WebSocket echo server: `cargo run -p duplex --example echo_server [ADDR]`.
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), duplex::Error> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on ws://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut ws = duplex::accept(tcp).await?;
            while let Some(message) = ws.recv().await {
                ws.send(message?).await?;
            }
            Ok::<_, duplex::Error>(())
        });
    }
}
