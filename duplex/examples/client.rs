//! Send one message and print the answer: `cargo run -p duplex --example client [URL]`.
use duplex::{CloseCode, Message};

#[tokio::main]
async fn main() -> Result<(), duplex::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let (mut ws, _response) = duplex::connect(&url).await?;
    ws.send(Message::text("hello from duplex")).await?;
    if let Some(reply) = ws.recv().await {
        println!("{:?}", reply?);
    }
    ws.close(CloseCode::NORMAL, "bye").await
}
