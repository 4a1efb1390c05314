//! The Autobahn TestSuite client-role driver.
//!
//! Run the fuzzingserver, then `cargo run --release -p duplex --example autobahn_client
//! [BASE_URL] [AGENT]` (defaults `ws://127.0.0.1:9001` and `duplex`). It asks for the case
//! count, echoes every message of every case back until the server closes, then asks the
//! server to write its reports.
use duplex::{ClientBuilder, CloseCode, Config, Error, MaybeTlsStream, WebSocket, WebSocketConfig};

fn config() -> WebSocketConfig {
    WebSocketConfig::default().with_proto(
        Config::default()
            .with_max_message_size(16 << 20)
            .with_max_frame_size(16 << 20),
    )
}

async fn open(url: &str) -> Result<WebSocket<MaybeTlsStream>, Error> {
    Ok(ClientBuilder::new(url).config(config()).connect().await?.0)
}

/// Echoes until the server closes; errors end the case.
async fn run_case(url: &str) -> Result<(), Error> {
    let mut ws = open(url).await?;
    while let Some(message) = ws.recv().await {
        ws.send(message?).await?;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let base = base.trim_end_matches('/');
    let agent = args.next().unwrap_or_else(|| "duplex".into());

    let mut ws = open(&format!("{base}/getCaseCount")).await?;
    let count: u32 = match ws.recv().await {
        Some(Ok(message)) => message
            .as_text()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| Error::Url("getCaseCount did not answer a number".into()))?,
        Some(Err(e)) => return Err(e),
        None => return Err(Error::ConnectionClosed),
    };
    let _ = ws.close(CloseCode::NORMAL, "").await;
    println!("{count} cases");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        if let Err(error) = run_case(&url).await {
            println!("case {case}: {error}");
        }
    }

    let mut ws = open(&format!("{base}/updateReports?agent={agent}")).await?;
    // The server writes the reports when the connection opens; then we are done.
    let _ = ws.close(CloseCode::NORMAL, "").await;
    println!("reports updated");
    Ok(())
}
