//! Idempotency keys: unique per request, reused on every retry of that request.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// Makes keys `bevy-<64-bit process seed in hex>-<counter>`. The seed mixes std's randomly
/// keyed hasher with the clock and process id, so two game processes (or two runs of one)
/// do not produce the same keys; the counter keeps keys of one process apart. The server scopes
/// keys per player, so they need not name the player.
#[derive(Debug)]
pub(crate) struct KeyGenerator {
    seed: u64,
    counter: u64,
}

impl KeyGenerator {
    pub(crate) fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        hasher.write_u128(now_ns);
        hasher.write_u32(std::process::id());
        KeyGenerator {
            seed: hasher.finish(),
            counter: 0,
        }
    }

    pub(crate) fn next_key(&mut self) -> String {
        self.counter += 1;
        format!("bevy-{:016x}-{}", self.seed, self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_within_and_across_generators_and_fit_the_server_limit() {
        let mut a = KeyGenerator::new();
        let mut b = KeyGenerator::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(a.next_key()));
            assert!(seen.insert(b.next_key()));
        }
        let key = a.next_key();
        assert!(key.len() <= 128 && key.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
}
