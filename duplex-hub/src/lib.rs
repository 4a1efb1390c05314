//! `duplex-hub`: the real-time server behind `duplex serve`.
//!
//! It sits on top of the `duplex` tokio library (which sits on the sans-IO `duplex-proto`)
//! and keeps persistent connections with browsers, apps and devices, pushing each
//! publication the moment it exists:
//!
//! * a [`Node`] owns channels, subscriptions, presence and history;
//! * every publication goes through a [`Broker`] ([`MemoryBroker`] by default) and is
//!   delivered only when the broker hands it back, so every broker behaves the same;
//! * dialects translate between connections and the node: the `duplex.v1` protocol at
//!   `/ws` (docs/protocol.md), raw rooms at `/rooms/{room}`, echo at `/echo`;
//! * every node publishes its figures on `sys:stats` each second ([`stats`]) and, with
//!   `demo.feed`, a simulated price feed; the demo pages and the JavaScript SDK of the
//!   repository's `web/` folder are compiled in and served at `/`, `/chat`, `/prices`,
//!   `/status`, `/plain` and `/duplex.js`;
//! * JWT authentication ([`auth`]), an Origin allow-list, limits, the HTTP API and
//!   Prometheus metrics.
//!
//! ```no_run
//! use duplex_hub::{HubConfig, MemoryBroker, Node, Settings};
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings::new(HubConfig::default())?;
//! let listener = tokio::net::TcpListener::bind(settings.listen).await?;
//! let node = Node::new(settings, Arc::new(MemoryBroker::new()));
//! duplex_hub::serve(node, listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

mod api;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod config;
mod demo;
pub mod metrics;
pub mod node;
mod outbox;
pub mod protocol;
mod registry;
mod server;
mod session;
pub mod stats;
mod web;

pub use broker::{Broker, MemoryBroker, Publication, StreamPosition};
pub use channel::ChannelName;
pub use config::{HubConfig, Settings};
pub use node::Node;
pub use server::{router, serve};
