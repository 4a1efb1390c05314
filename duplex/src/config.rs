//! [`WebSocketConfig`]: the core's limits plus what only a driver can decide (buffers, time).

use duplex_proto::{Config, ConfigError};
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Settings of one connection: the sans-IO core's [`Config`] plus buffering and timers.
///
/// Every value has a safe default; setters are chained:
///
/// ```
/// use std::time::Duration;
/// use duplex::WebSocketConfig;
///
/// let config = WebSocketConfig::default()
///     .with_ping_interval(Some(Duration::from_secs(20)))
///     .with_idle_timeout(Some(Duration::from_secs(60)));
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// Limits and permessage-deflate policy of the protocol core. Default: [`Config::default`]
    /// (16 MiB messages and frames, deflate offered / accepted).
    pub proto: Config,
    /// Bytes queued for the socket above which senders wait for the peer to read. Default
    /// 64 KiB. Memory per connection stays below this plus one message.
    pub write_buffer_high_water: usize,
    /// How long [`WebSocket::close`](crate::WebSocket::close) waits for the peer's close
    /// frame, and how long a finished connection waits to flush and shut down. Default 5 s.
    pub close_timeout: Duration,
    /// Send a ping this often while [`recv`](crate::WebSocket::recv) is being awaited.
    /// Default `None` (no keepalive pings).
    pub ping_interval: Option<Duration>,
    /// Fail the connection with [`Error::Timeout`](crate::Error::Timeout) when nothing at all
    /// was received for this long (pongs count) while the connection was being read: the
    /// time runs from the first wait for data after the last bytes arrived, so an
    /// application that holds a message before receiving again is not counted against the
    /// peer. Default `None`.
    pub idle_timeout: Option<Duration>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            proto: Config::default(),
            write_buffer_high_water: 64 << 10,
            close_timeout: Duration::from_secs(5),
            ping_interval: None,
            idle_timeout: None,
        }
    }
}

/// `proto` as an `Arc` that the connections made with equal settings share, so each holds a
/// pointer rather than a copy (64 bytes of every idle connection's state). The last one made
/// is kept per thread, and a connection made with other settings gets its own.
pub(crate) fn shared_proto(proto: &Config) -> Arc<Config> {
    thread_local! {
        static LAST: RefCell<Option<Arc<Config>>> = const { RefCell::new(None) };
    }
    LAST.try_with(|last| {
        let mut last = last.try_borrow_mut().ok()?;
        match &*last {
            Some(shared) if **shared == *proto => Some(Arc::clone(shared)),
            _ => Some(Arc::clone(last.insert(Arc::new(proto.clone())))),
        }
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| Arc::new(proto.clone()))
}

/// The default configuration, made once and shared by the connections that keep it.
pub(crate) fn shared_default() -> Arc<WebSocketConfig> {
    static DEFAULT: OnceLock<Arc<WebSocketConfig>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| Arc::new(WebSocketConfig::default()))
        .clone()
}

impl WebSocketConfig {
    /// Sets [`WebSocketConfig::proto`].
    pub fn with_proto(mut self, proto: Config) -> Self {
        self.proto = proto;
        self
    }

    /// Sets [`WebSocketConfig::write_buffer_high_water`] (bytes, default 64 KiB).
    pub fn with_write_buffer_high_water(mut self, bytes: usize) -> Self {
        self.write_buffer_high_water = bytes;
        self
    }

    /// Sets [`WebSocketConfig::close_timeout`] (default 5 s).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`WebSocketConfig::ping_interval`] (default `None`).
    pub fn with_ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`WebSocketConfig::idle_timeout`] (default `None`).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Checks values that can conflict.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first offending value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.proto.validate()?;
        if self.write_buffer_high_water == 0 {
            return Err(ConfigError::Zero("write_buffer_high_water"));
        }
        if self.close_timeout.is_zero() {
            return Err(ConfigError::Zero("close_timeout"));
        }
        if self.ping_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Zero("ping_interval"));
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Zero("idle_timeout"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_zero_is_refused() {
        WebSocketConfig::default().validate().unwrap();
        assert_eq!(
            WebSocketConfig::default()
                .with_write_buffer_high_water(0)
                .validate(),
            Err(ConfigError::Zero("write_buffer_high_water"))
        );
        assert_eq!(
            WebSocketConfig::default()
                .with_ping_interval(Some(Duration::ZERO))
                .validate(),
            Err(ConfigError::Zero("ping_interval"))
        );
    }
}
