//! Commands: what a caller asks the ledger to do, with the idempotency key that makes it safe to
//! retry. Commands are built by the transport layer after it has checked their shape.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{Amounts, Contents};
use crate::ids::{ItemId, Name, OfferId, PlayerId, RewardId, StorePlatform};
use crate::rejection::Rejection;

/// An idempotency key, scoped to whoever chose it (`player:<id>` or `admin`), so two players can
/// never collide on the same key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub scope: Name,
    pub key: Name,
}

impl IdempotencyKey {
    /// The scope for keys chosen by (or on behalf of) one player.
    pub fn player(player_id: &str, key: impl Into<Name>) -> Self {
        IdempotencyKey {
            scope: compact_str::format_compact!("player:{player_id}"),
            key: key.into(),
        }
    }

    /// The key of a store purchase: one per `(platform, store transaction id)` across all
    /// players, so a receipt is redeemed at most once whoever sends it.
    pub fn store(platform: StorePlatform, store_transaction_id: &str) -> Self {
        IdempotencyKey {
            scope: compact_str::format_compact!("store:{}", platform.name()),
            key: Name::new(store_transaction_id),
        }
    }

    /// The key of the refund of a store purchase: a purchase is refunded at most once.
    pub fn store_refund(platform: StorePlatform, store_transaction_id: &str) -> Self {
        IdempotencyKey {
            scope: compact_str::format_compact!("store-refund:{}", platform.name()),
            key: Name::new(store_transaction_id),
        }
    }

    /// The scope for keys chosen by administrative callers.
    pub fn admin(key: &str) -> Self {
        IdempotencyKey {
            scope: Name::const_new("admin"),
            key: Name::new(key),
        }
    }
}

/// One step of an atomic `Execute`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecuteStep {
    Grant {
        player_id: PlayerId,
        contents: Contents,
    },
    Revoke {
        player_id: PlayerId,
        contents: Contents,
    },
    Transfer {
        from_player_id: PlayerId,
        to_player_id: PlayerId,
        contents: Contents,
    },
}

/// How a store refund takes back what its purchase granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RefundPolicy {
    /// Take every granted currency back even if the player spent it, leaving a negative
    /// balance (a debt later credits pay off first); take back granted items the player still
    /// holds. The default: a refund must never let a player keep what they did not pay for.
    ClawBack,
    /// Take back exactly what was granted, or refuse (`INSUFFICIENT_FUNDS` /
    /// `INSUFFICIENT_ITEMS`) and change nothing when the player no longer holds it.
    ReverseIfPossible,
}

impl RefundPolicy {
    /// The configuration name: `claw_back` or `reverse_if_possible`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClawBack => "claw_back",
            Self::ReverseIfPossible => "reverse_if_possible",
        }
    }

    /// The policy with that configuration name.
    pub fn from_name(name: &str) -> Option<RefundPolicy> {
        [Self::ClawBack, Self::ReverseIfPossible]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// What the store did to a purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreRefundKind {
    /// The buyer got their money back.
    Refund,
    /// Access was withdrawn without a refund to this buyer (e.g. Family Sharing ended).
    Revoke,
}

impl StoreRefundKind {
    /// `refund` or `revoke`, as kept in transaction metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::Refund => "refund",
            Self::Revoke => "revoke",
        }
    }
}

/// The verified facts of a store purchase, as the transport's receipt verifier returned them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorePurchase {
    pub platform: StorePlatform,
    /// Unique per purchase in its store; the purchase is redeemable once across all players.
    pub store_transaction_id: String,
    pub product_id: String,
    /// Units bought (at least 1): the product's grants are multiplied by it.
    pub quantity: u32,
    /// Price paid in the minor unit of `currency_code`, when the store reports it.
    pub price_minor_units: Option<i64>,
    /// ISO 4217 code, when the store reports a price.
    pub currency_code: Option<String>,
    /// The store environment (`Production`, `Sandbox`, `production`, `sandbox`).
    pub environment: String,
    pub purchased_at_unix_ms: i64,
}

/// The operation a command performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Buy an offer at the price the client saw.
    Purchase {
        player_id: PlayerId,
        offer_id: OfferId,
        expected_price: Amounts,
    },
    /// Raise an upgradable item to `target_level` (level 1 buys it) at the price the client saw.
    Upgrade {
        player_id: PlayerId,
        item_id: ItemId,
        target_level: u32,
        expected_price: Amounts,
    },
    /// Use up items.
    Consume {
        player_id: PlayerId,
        item_id: ItemId,
        quantity: u64,
    },
    /// Claim a rate-limited reward.
    ClaimReward {
        player_id: PlayerId,
        reward_id: RewardId,
    },
    /// Give a player currencies and items from `system:grants`.
    Grant {
        player_id: PlayerId,
        contents: Contents,
    },
    /// Take currencies and items from a player back to `system:grants`.
    Revoke {
        player_id: PlayerId,
        contents: Contents,
    },
    /// Undo a transaction with a new one that references it.
    Reverse { transaction_id: u64 },
    /// Several steps on several players, all applied or none.
    Execute { steps: Vec<ExecuteStep> },
    /// Credit a verified store purchase to a player, once per store transaction across all
    /// players (the command's idempotency key is replaced by [`IdempotencyKey::store`]).
    RedeemReceipt {
        player_id: PlayerId,
        purchase: StorePurchase,
    },
    /// Undo the redemption of a store transaction after a verified refund notice, once (the
    /// command's idempotency key is replaced by [`IdempotencyKey::store_refund`]).
    RefundStoreTransaction {
        platform: StorePlatform,
        store_transaction_id: String,
        kind: StoreRefundKind,
        policy: RefundPolicy,
    },
}

impl Operation {
    /// The players this operation touches directly (a reversal's players come from its target),
    /// in the order the operation names them. An iterator, not a `Vec`: the writer asks for
    /// them several times per command.
    pub fn players(&self) -> impl Iterator<Item = &str> + '_ {
        let (single, steps) = match self {
            Operation::Purchase { player_id, .. }
            | Operation::Upgrade { player_id, .. }
            | Operation::Consume { player_id, .. }
            | Operation::ClaimReward { player_id, .. }
            | Operation::Grant { player_id, .. }
            | Operation::Revoke { player_id, .. }
            | Operation::RedeemReceipt { player_id, .. } => (Some(player_id.as_str()), None),
            Operation::Reverse { .. } | Operation::RefundStoreTransaction { .. } => (None, None),
            Operation::Execute { steps } => (None, Some(steps)),
        };
        let step_players = steps.into_iter().flatten().flat_map(|step| match step {
            ExecuteStep::Grant { player_id, .. } | ExecuteStep::Revoke { player_id, .. } => {
                [Some(player_id.as_str()), None]
            }
            ExecuteStep::Transfer {
                from_player_id,
                to_player_id,
                ..
            } => [Some(from_player_id.as_str()), Some(to_player_id.as_str())],
        });
        single.into_iter().chain(step_players.flatten())
    }
}

/// A command for the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub idempotency_key: IdempotencyKey,
    pub operation: Operation,
    /// Who asked (recorded in the transaction's metadata, not part of the request's identity).
    pub caller: Name,
    /// Free text kept in the transaction's metadata (admin operations), part of the request.
    pub reason: Name,
}

impl Command {
    /// The key the outcome is stored under: the caller's, except for store operations, whose
    /// key is the store transaction itself so that no caller can redeem or refund it twice.
    ///
    /// Borrowed where it is the caller's: the writer looks it up several times per command.
    pub fn effective_key(&self) -> Cow<'_, IdempotencyKey> {
        match &self.operation {
            Operation::RedeemReceipt { purchase, .. } => Cow::Owned(IdempotencyKey::store(
                purchase.platform,
                &purchase.store_transaction_id,
            )),
            Operation::RefundStoreTransaction {
                platform,
                store_transaction_id,
                ..
            } => Cow::Owned(IdempotencyKey::store_refund(
                *platform,
                store_transaction_id,
            )),
            _ => Cow::Borrowed(&self.idempotency_key),
        }
    }

    /// Store operations keep no rejection: a purchase refused because its product was missing
    /// from the catalog must be redeemable once the catalog is fixed, and a refund that arrived
    /// before its purchase was redeemed must apply when retried.
    pub fn stores_rejections(&self) -> bool {
        !matches!(
            self.operation,
            Operation::RedeemReceipt { .. } | Operation::RefundStoreTransaction { .. }
        )
    }

    /// A digest of what makes two requests "the same request" for idempotency: the operation
    /// and its reason. A retry must match it exactly.
    pub fn fingerprint(&self) -> [u8; 32] {
        let fingerprinted = (&self.operation, &self.reason);
        // Encoded on the stack: every command pays for its fingerprint on the writer's thread,
        // and a growing Vec allocated three times per purchase. Same bytes, same digest, either way.
        let mut buffer = [0u8; FINGERPRINT_STACK_BYTES];
        match postcard::to_slice(&fingerprinted, &mut buffer) {
            Ok(bytes) => Sha256::digest(bytes).into(),
            Err(_) => Sha256::digest(
                postcard::to_stdvec(&fingerprinted)
                    .expect("serializing a command to memory cannot fail"),
            )
            .into(),
        }
    }
}

/// Bytes of a command's encoding its fingerprint takes on the stack; a larger command (an
/// admin `Execute` with many steps) is encoded on the heap instead.
pub const FINGERPRINT_STACK_BYTES: usize = 512;

/// The stored result of an idempotent command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutcome {
    pub fingerprint: [u8; 32],
    /// The transaction id, or the rejection that a retry must get again.
    pub result: Result<u64, Rejection>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purchase_with_prices(currencies: usize) -> Command {
        let expected_price = (0..currencies)
            .map(|n| (Name::from(format!("currency-number-{n}")), 10))
            .collect();
        Command {
            idempotency_key: IdempotencyKey::player("p1", "k"),
            operation: Operation::Purchase {
                player_id: Name::new("p1"),
                offer_id: Name::new("potion"),
                expected_price,
            },
            caller: Name::new("tests"),
            reason: Name::new("why"),
        }
    }

    #[test]
    fn a_fingerprint_is_the_digest_of_the_encoding_on_the_stack_or_not() {
        for currencies in [1, 100] {
            let command = purchase_with_prices(currencies);
            let encoded = postcard::to_stdvec(&(&command.operation, &command.reason)).unwrap();
            assert_eq!(
                encoded.len() > FINGERPRINT_STACK_BYTES,
                currencies == 100,
                "one command fits the stack buffer, the other does not"
            );
            let digest: [u8; 32] = Sha256::digest(&encoded).into();
            assert_eq!(command.fingerprint(), digest);
        }
        let (one, other) = (purchase_with_prices(2), purchase_with_prices(3));
        assert_ne!(one.fingerprint(), other.fingerprint());
    }
}
