//! Which idempotency keys the ledger file may hold: a growing Bloom filter the writer asks
//! before it looks a key up in the `idempotency` table.
//!
//! Why: nearly every request carries a new key, and a key that is in no table is the most
//! expensive lookup the writer makes (a full B-tree descent to a leaf that does not hold it,
//! in a table that grows by a row per purchase): about 2.5k instructions per purchase, measured
//! under callgrind. "Not in the filter" is certain, so such a key skips the lookup; a key the
//! filter may hold (every retry, and one or two new keys in a hundred) is looked up as before.
//!
//! The filter must hold every key the table holds. It is filled from the table when the files
//! open, after recovery and before the first batch (the overlay is empty then), and the writer
//! adds each batch's keys as it journals them, before the batch's generation can reach the
//! table; an import adds what it writes.

use growable_bloom_filter::GrowableBloom;

/// False positives the filter's first layer allows (a new key looked up in the table anyway);
/// each layer added as keys grow allows 0.85 times the one before, so the whole filter's rate
/// stays below ≈ 6.7 % however many layers it grows (1.9 % measured over four).
pub const FALSE_POSITIVE_RATE: f64 = 0.01;

/// Keys the filter's first layer is sized for; it adds layers as keys grow past it.
pub const KEYS_EXPECTED_MIN: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct KnownKeys {
    filter: GrowableBloom,
}

impl KnownKeys {
    /// An empty filter with room for `keys_expected` keys in its first layer.
    pub fn with_room_for(keys_expected: usize) -> KnownKeys {
        KnownKeys::first_layer_for(keys_expected.max(KEYS_EXPECTED_MIN))
    }

    fn first_layer_for(keys: usize) -> KnownKeys {
        KnownKeys {
            filter: GrowableBloom::new(FALSE_POSITIVE_RATE, keys),
        }
    }

    pub fn insert(&mut self, scope: &str, key: &str) {
        self.filter.insert((scope, key));
    }

    /// False only for a key never inserted.
    pub fn may_hold(&self, scope: &str, key: &str) -> bool {
        self.filter.contains((scope, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inserted_key_is_held_and_most_others_are_not() {
        // Eight times the first layer, so the filter grows layers and every one is checked.
        let mut known = KnownKeys::first_layer_for(1000);
        let inserted = 8000;
        for n in 0..inserted {
            known.insert("player:p1", &format!("key-{n}"));
        }
        for n in 0..inserted {
            assert!(known.may_hold("player:p1", &format!("key-{n}")));
        }
        let others = 10_000;
        let false_positives = (0..others)
            .filter(|n| known.may_hold("player:p2", &format!("key-{n}")))
            .count();
        // Four layers, each allowed 1 % × 0.85^i: at most ≈ 3.2 % together (1.9 % seen).
        assert!(
            false_positives * 1000 < others * 32,
            "{false_positives} of {others} unknown keys held"
        );
        // Scope and key are not one string: ("a", "bc") is not ("ab", "c").
        let mut known = KnownKeys::with_room_for(0);
        known.insert("a", "bc");
        assert!(known.may_hold("a", "bc"));
        assert!(!known.may_hold("ab", "c"));
    }
}
