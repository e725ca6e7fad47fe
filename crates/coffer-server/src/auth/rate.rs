//! Rate limits per caller (each player, each API key) and the cap on open streams per player.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use serde::Deserialize;

use crate::error::ApiError;

/// Request and stream limits, from the `[limits]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sustained requests per second one player token may make.
    pub player_requests_per_second: u32,
    /// Requests a player may make at once above the sustained rate.
    pub player_burst: u32,
    /// Sustained requests per second one API key may make.
    pub key_requests_per_second: u32,
    /// Requests a key may make at once above the sustained rate.
    pub key_burst: u32,
    /// Subscribe streams one player may hold open.
    pub streams_per_player_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            player_requests_per_second: 50,
            player_burst: 100,
            key_requests_per_second: 100_000,
            key_burst: 100_000,
            streams_per_player_max: 4,
        }
    }
}

/// The rate limiters of a running server.
pub struct RateLimits {
    players: DefaultKeyedRateLimiter<String>,
    keys: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second.max(1)).expect("max(1) is non-zero");
    Quota::per_second(per_second)
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("max(1) is non-zero"))
}

impl RateLimits {
    /// Limiters with the configured quotas.
    pub fn new(limits: &Limits) -> RateLimits {
        RateLimits {
            players: RateLimiter::keyed(quota(
                limits.player_requests_per_second,
                limits.player_burst,
            )),
            keys: RateLimiter::keyed(quota(limits.key_requests_per_second, limits.key_burst)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of a caller; `Err` says when it may retry.
    pub fn check(&self, caller: &super::Caller) -> Result<(), ApiError> {
        let (limiter, key) = match caller {
            super::Caller::Player { player_id } => (&self.players, player_id),
            super::Caller::Key { id, .. } => (&self.keys, id),
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::RateLimited {
                retry_after: wait.max(Duration::from_millis(1)),
            }
        })
    }
}

/// Counts open Subscribe streams per player, and all of them in the `coffer_subscribers` gauge.
pub struct StreamCounter {
    open: Mutex<HashMap<String, u32>>,
    open_total: prometheus_client::metrics::gauge::Gauge,
}

/// Releases a stream slot when dropped.
pub struct StreamSlot {
    counter: Arc<StreamCounter>,
    player_id: String,
}

impl StreamCounter {
    /// No stream open yet; `open_total` follows every open and close.
    pub fn new(open_total: prometheus_client::metrics::gauge::Gauge) -> Self {
        StreamCounter {
            open: Mutex::default(),
            open_total,
        }
    }

    /// Takes a slot for one more stream of `player_id`, or refuses past `max`.
    pub fn open(self: &Arc<Self>, player_id: &str, max: u32) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().expect("stream counter poisoned");
        let count = open.entry(player_id.to_owned()).or_insert(0);
        if *count >= max {
            return Err(ApiError::ResourceExhausted(format!(
                "player {player_id:?} already has {max} open Subscribe streams; close one first"
            )));
        }
        *count += 1;
        self.open_total.inc();
        Ok(StreamSlot {
            counter: Arc::clone(self),
            player_id: player_id.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().expect("stream counter poisoned");
        if let Some(count) = open.get_mut(&self.player_id) {
            *count -= 1;
            self.counter.open_total.dec();
            if *count == 0 {
                open.remove(&self.player_id);
            }
        }
    }
}
