//! The demo price feed (`demo.feed`, `duplex serve --demo-feed`): simulated quotes for the
//! `/prices` page, published through the broker like any publication, so they cross nodes
//! over Redis (and every node with the feed on publishes its own: turn it on for one).
//!
//! Every symbol moves by a random walk pulled gently back toward its starting price, about
//! four times a second at random moments, on `prices:<SYMBOL>` with the symbol as `key`:
//! `{"symbol": "BTC-USD", "price": 64012.5, "change": -3.25, "time": <unix ms>}`.

use crate::broker::Data;
use crate::channel::ChannelName;
use crate::node::Node;
use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use tracing::debug;

/// One simulated instrument.
#[derive(Debug, Clone, Copy)]
struct Instrument {
    symbol: &'static str,
    start: f64,
    /// Decimal places of its quotes.
    decimals: i32,
    /// Largest relative move of one tick.
    step: f64,
}

/// The symbols of the feed.
const INSTRUMENTS: [Instrument; 8] = [
    Instrument {
        symbol: "BTC-USD",
        start: 64_000.0,
        decimals: 2,
        step: 0.0008,
    },
    Instrument {
        symbol: "ETH-USD",
        start: 3_400.0,
        decimals: 2,
        step: 0.001,
    },
    Instrument {
        symbol: "SOL-USD",
        start: 150.0,
        decimals: 3,
        step: 0.0015,
    },
    Instrument {
        symbol: "EUR-USD",
        start: 1.085,
        decimals: 5,
        step: 0.0001,
    },
    Instrument {
        symbol: "GBP-USD",
        start: 1.27,
        decimals: 5,
        step: 0.0001,
    },
    Instrument {
        symbol: "AAPL",
        start: 190.0,
        decimals: 2,
        step: 0.0005,
    },
    Instrument {
        symbol: "MSFT",
        start: 420.0,
        decimals: 2,
        step: 0.0005,
    },
    Instrument {
        symbol: "NVDA",
        start: 120.0,
        decimals: 2,
        step: 0.001,
    },
];

/// Mean time between two ticks of one symbol: four a second.
const MEAN_GAP: Duration = Duration::from_millis(250);

/// A uniform number in `[0, 1)`.
fn uniform() -> f64 {
    rand::random::<f64>()
}

/// A gap between ticks: uniform in [0.4, 1.6] × [`MEAN_GAP`], so the mean stays at
/// [`MEAN_GAP`] and ticks of different symbols interleave irregularly.
fn next_gap(u: f64) -> Duration {
    MEAN_GAP.mul_f64(0.4 + 1.2 * u)
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    let rounded = (value * scale).round() / scale;
    // Never "-0".
    if rounded == 0.0 {
        0.0
    } else {
        rounded
    }
}

/// The price after one tick from `price`, given a uniform `u` in `[0, 1)`: a move of up to
/// `step` of the price either way, plus a pull of 1% of the distance back to the start so
/// the walk stays near it; never below one unit of the last decimal.
fn next_price(instrument: &Instrument, price: f64, u: f64) -> f64 {
    let walk = price * instrument.step * (2.0 * u - 1.0);
    let pull = (instrument.start - price) * 0.01;
    let floor = 10f64.powi(-instrument.decimals);
    round_to((price + walk + pull).max(floor), instrument.decimals)
}

/// One symbol's state.
struct Quote {
    instrument: Instrument,
    channel: ChannelName,
    price: f64,
    due: Instant,
}

/// Publishes the feed until the task is aborted (when `serve` returns). Ticks are skipped
/// while the broker is unavailable.
pub(crate) async fn run(node: Arc<Node>) {
    let now = Instant::now();
    let mut quotes: Vec<Quote> = INSTRUMENTS
        .iter()
        .map(|i| Quote {
            instrument: *i,
            channel: ChannelName::new(&format!("prices:{}", i.symbol)).expect("a valid name"),
            price: i.start,
            due: now + next_gap(uniform()),
        })
        .collect();
    loop {
        let quote = quotes
            .iter_mut()
            .min_by_key(|q| q.due)
            .expect("the feed has symbols");
        tokio::time::sleep_until(quote.due).await;
        // Never fall behind for good: a slow broker delays ticks, it does not queue them.
        quote.due = quote.due.max(Instant::now()) + next_gap(uniform());
        let price = next_price(&quote.instrument, quote.price, uniform());
        let change = round_to(price - quote.price, quote.instrument.decimals);
        quote.price = price;
        if !node.broker().is_healthy() {
            continue;
        }
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let data = json!({
            "symbol": quote.instrument.symbol,
            "price": price,
            "change": change,
            "time": time,
        });
        let data = Data::Json(Bytes::from(data.to_string()));
        let symbol = quote.instrument.symbol;
        if let Err(error) = node.publish_own(&quote.channel, data, Some(symbol)).await {
            debug!(%error, symbol, "demo feed tick not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_average_four_per_second() {
        assert_eq!(next_gap(0.0), Duration::from_millis(100));
        assert_eq!(next_gap(0.5), Duration::from_millis(250));
        assert!(next_gap(0.999_999) < Duration::from_millis(400));
    }

    #[test]
    fn prices_walk_near_their_start_on_their_grid() {
        for instrument in &INSTRUMENTS {
            let mut price = instrument.start;
            let (mut low, mut high) = (price, price);
            // A deterministic sequence of uniforms.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                let next = next_price(instrument, price, u);
                let max_move = price * instrument.step + (instrument.start - price).abs() * 0.01;
                assert!(
                    (next - price).abs() <= max_move + 10f64.powi(-instrument.decimals),
                    "{}: {price} -> {next}",
                    instrument.symbol
                );
                let scaled = next * 10f64.powi(instrument.decimals);
                assert!(
                    (scaled - scaled.round()).abs() < 1e-6,
                    "{}: {next} is not on the grid",
                    instrument.symbol
                );
                price = next;
                low = low.min(price);
                high = high.max(price);
            }
            assert!(
                low > instrument.start * 0.8 && high < instrument.start * 1.2,
                "{}: wandered to {low}..{high}",
                instrument.symbol
            );
            assert!(high > low, "{}: never moved", instrument.symbol);
        }
    }

    #[test]
    fn rounding_never_gives_negative_zero() {
        assert_eq!(round_to(-0.000_001, 2).to_string(), "0");
        assert_eq!(round_to(64_012.504, 2), 64_012.5);
        assert_eq!(json!(round_to(1.085_004_9, 5)).to_string(), "1.085");
    }
}
