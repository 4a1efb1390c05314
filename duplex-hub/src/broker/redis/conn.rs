//! The connections of the broker, to one Redis server or to a Redis Cluster.
//!
//! * Commands go through [`Commands`]: a [`ConnectionManager`] (one server, reconnecting by
//!   itself) or a [`ClusterConnection`], which keeps a multiplexed connection to every
//!   master, routes each command to the master of its key's slot and follows `MOVED` and
//!   `ASK` redirections. Both pipeline concurrent requests.
//! * Pub/Sub goes through [`PubSub`], a RESP3 connection whose pushes reach a sender: one
//!   [`MultiplexedConnection`], or a [`ClusterConnection`] that sends each (S)SUBSCRIBE to the
//!   node owning the channel's slot.

use super::{COMMAND_TIMEOUT, CONNECT_TIMEOUT};
use ::redis::aio::{
    AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig,
    MultiplexedConnection,
};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, Pipeline, ProtocolVersion, RedisFuture,
    RedisResult, TlsCertificates, Value,
};
use futures_util::{StreamExt, TryStreamExt};
use std::time::Duration;

/// Retries of a cluster command after a redirection or a connection error (each bounded by
/// the broker's command timeout as a whole).
const CLUSTER_RETRIES: u32 = 3;

/// Commands in flight at once when a cluster needs one per channel.
pub(super) const CLUSTER_CONCURRENCY: usize = 64;

/// Where the broker's Redis is.
#[allow(clippy::large_enum_variant)] // one per broker
pub(super) enum Backend {
    /// One Redis server.
    Single {
        /// For the Pub/Sub connection (RESP3).
        pubsub: ::redis::Client,
        /// For commands.
        commands: ::redis::Client,
    },
    /// A Redis Cluster, discovered from these nodes.
    Cluster {
        /// The seed nodes.
        seeds: Vec<ConnectionInfo>,
        /// CA and client certificates, with `rediss://` seeds.
        certificates: Option<TlsCertificates>,
    },
}

impl Backend {
    /// A pool of `size` command connections, connecting in the background.
    pub(super) fn pool(&self, size: usize) -> RedisResult<Vec<Commands>> {
        match self {
            Backend::Single { commands, .. } => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                (0..size)
                    .map(|_| {
                        ConnectionManager::new_lazy_with_config(commands.clone(), config.clone())
                            .map(Commands::Single)
                    })
                    .collect()
            }
            Backend::Cluster {
                seeds,
                certificates,
            } => {
                let client = cluster_builder(seeds, certificates).build()?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(COMMAND_TIMEOUT);
                Ok((0..size)
                    .map(|_| {
                        Commands::Cluster(
                            client.get_pending_async_connection_with_config(config.clone()),
                        )
                    })
                    .collect())
            }
        }
    }

    /// Opens a Pub/Sub connection whose pushes (messages, subscription confirmations,
    /// `Disconnection`) go to `pushes`.
    pub(super) async fn pubsub(&self, pushes: impl AsyncPushSender) -> RedisResult<PubSub> {
        match self {
            Backend::Single { pubsub, .. } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_push_sender(pushes);
                let conn = pubsub
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(PubSub::Single(conn))
            }
            Backend::Cluster {
                seeds,
                certificates,
            } => {
                let client: ClusterClient = cluster_builder(seeds, certificates)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(pushes)
                    .build()?;
                Ok(PubSub::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

fn cluster_builder(
    seeds: &[ConnectionInfo],
    certificates: &Option<TlsCertificates>,
) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(COMMAND_TIMEOUT)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(20)
        .max_retry_wait(500);
    match certificates {
        Some(certificates) => builder.certs(certificates.clone()),
        None => builder,
    }
}

/// A pooled command connection.
#[derive(Clone)]
pub(crate) enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}

/// The Pub/Sub connection.
#[derive(Clone)]
pub(super) enum PubSub {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A (un)subscription command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subscription {
    Subscribe,
    Unsubscribe,
    SSubscribe,
    SUnsubscribe,
}

impl Subscription {
    pub(super) fn new(on: bool, sharded: bool) -> Self {
        match (on, sharded) {
            (true, false) => Self::Subscribe,
            (true, true) => Self::SSubscribe,
            (false, false) => Self::Unsubscribe,
            (false, true) => Self::SUnsubscribe,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Subscribe => "SUBSCRIBE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::SSubscribe => "SSUBSCRIBE",
            Self::SUnsubscribe => "SUNSUBSCRIBE",
        }
    }
}

impl PubSub {
    /// Runs `what` for `channel`; resolves once Redis confirmed it. In a cluster, the command
    /// goes to the node owning the channel's slot.
    pub(super) async fn subscription(
        &mut self,
        what: Subscription,
        channel: &str,
    ) -> RedisResult<()> {
        match self {
            PubSub::Single(conn) => {
                let cmd = ::redis::cmd(what.name()).arg(channel).to_owned();
                conn.send_packed_command(&cmd).await.map(drop)
            }
            PubSub::Cluster(conn) => match what {
                Subscription::Subscribe => conn.subscribe(channel).await,
                Subscription::Unsubscribe => conn.unsubscribe(channel).await,
                Subscription::SSubscribe => conn.ssubscribe(channel).await,
                Subscription::SUnsubscribe => conn.sunsubscribe(channel).await,
            },
        }
    }

    /// Runs `what` for every channel of `channels`: pipelined on one server; in a cluster,
    /// concurrently, each on the node owning the channel's slot (one command per channel, as
    /// the channels of one command must share a slot).
    pub(super) async fn subscribe_all(
        &mut self,
        what: Subscription,
        channels: &[String],
    ) -> RedisResult<()> {
        match self {
            PubSub::Single(conn) if what == Subscription::Subscribe => {
                conn.subscribe(channels).await
            }
            PubSub::Single(conn) => {
                let mut pipe = ::redis::pipe();
                for name in channels {
                    pipe.cmd(what.name()).arg(name);
                }
                conn.send_packed_commands(&pipe, 0, channels.len())
                    .await
                    .map(drop)
            }
            PubSub::Cluster(conn) => {
                let subscriptions: Vec<_> = channels
                    .iter()
                    .map(|channel| {
                        let mut conn = PubSub::Cluster(conn.clone());
                        let channel = channel.clone();
                        async move { conn.subscription(what, &channel).await }
                    })
                    .collect();
                futures_util::stream::iter(subscriptions)
                    .buffer_unordered(CLUSTER_CONCURRENCY)
                    .try_collect::<()>()
                    .await
            }
        }
    }

    /// `PING`s the server, or every master of the cluster.
    pub(super) async fn ping(&mut self) -> RedisResult<()> {
        let ping = ::redis::cmd("PING");
        match self {
            PubSub::Single(conn) => conn.send_packed_command(&ping).await.map(drop),
            // Routed to every master (redis's routing table for PING).
            PubSub::Cluster(conn) => conn.req_packed_command(&ping).await.map(drop),
        }
    }
}
