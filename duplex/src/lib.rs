//! duplex: tokio WebSocket client and server (placeholder).
