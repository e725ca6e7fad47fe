//! Commands: what a caller asks the ledger to do, with the idempotency key that makes it safe to
//! retry. Commands are built by the transport layer after it has checked their shape.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{Amounts, Contents};
use crate::ids::{ItemId, OfferId, RewardId};
use crate::rejection::Rejection;

/// An idempotency key, scoped to whoever chose it (`player:<id>` or `admin`), so two players can
/// never collide on the same key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
}

impl IdempotencyKey {
    /// The scope for keys chosen by (or on behalf of) one player.
    pub fn player(player_id: &str, key: &str) -> Self {
        IdempotencyKey {
            scope: format!("player:{player_id}"),
            key: key.to_owned(),
        }
    }

    /// The scope for keys chosen by administrative callers.
    pub fn admin(key: &str) -> Self {
        IdempotencyKey {
            scope: "admin".to_owned(),
            key: key.to_owned(),
        }
    }
}

/// One step of an atomic `Execute`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecuteStep {
    Grant {
        player_id: String,
        contents: Contents,
    },
    Revoke {
        player_id: String,
        contents: Contents,
    },
    Transfer {
        from_player_id: String,
        to_player_id: String,
        contents: Contents,
    },
}

/// The operation a command performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Buy an offer at the price the client saw.
    Purchase {
        player_id: String,
        offer_id: OfferId,
        expected_price: Amounts,
    },
    /// Raise an upgradable item to `target_level` (level 1 buys it) at the price the client saw.
    Upgrade {
        player_id: String,
        item_id: ItemId,
        target_level: u32,
        expected_price: Amounts,
    },
    /// Use up items.
    Consume {
        player_id: String,
        item_id: ItemId,
        quantity: u64,
    },
    /// Claim a rate-limited reward.
    ClaimReward {
        player_id: String,
        reward_id: RewardId,
    },
    /// Give a player currencies and items from `system:grants`.
    Grant {
        player_id: String,
        contents: Contents,
    },
    /// Take currencies and items from a player back to `system:grants`.
    Revoke {
        player_id: String,
        contents: Contents,
    },
    /// Undo a transaction with a new one that references it.
    Reverse { transaction_id: u64 },
    /// Several steps on several players, all applied or none.
    Execute { steps: Vec<ExecuteStep> },
}

impl Operation {
    /// The players this operation touches directly (a reversal's players come from its target).
    pub fn players(&self) -> Vec<&str> {
        match self {
            Operation::Purchase { player_id, .. }
            | Operation::Upgrade { player_id, .. }
            | Operation::Consume { player_id, .. }
            | Operation::ClaimReward { player_id, .. }
            | Operation::Grant { player_id, .. }
            | Operation::Revoke { player_id, .. } => vec![player_id.as_str()],
            Operation::Reverse { .. } => Vec::new(),
            Operation::Execute { steps } => steps
                .iter()
                .flat_map(|step| match step {
                    ExecuteStep::Grant { player_id, .. }
                    | ExecuteStep::Revoke { player_id, .. } => {
                        vec![player_id.as_str()]
                    }
                    ExecuteStep::Transfer {
                        from_player_id,
                        to_player_id,
                        ..
                    } => {
                        vec![from_player_id.as_str(), to_player_id.as_str()]
                    }
                })
                .collect(),
        }
    }
}

/// A command for the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub idempotency_key: IdempotencyKey,
    pub operation: Operation,
    /// Who asked (recorded in the transaction's metadata, not part of the request's identity).
    pub caller: String,
    /// Free text kept in the transaction's metadata (admin operations), part of the request.
    pub reason: String,
}

impl Command {
    /// A digest of what makes two requests "the same request" for idempotency: the operation
    /// and its reason. A retry must match it exactly.
    pub fn fingerprint(&self) -> [u8; 32] {
        let bytes = postcard::to_stdvec(&(&self.operation, &self.reason))
            .expect("serializing a command to memory cannot fail");
        Sha256::digest(&bytes).into()
    }
}

/// The stored result of an idempotent command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutcome {
    pub fingerprint: [u8; 32],
    /// The transaction id, or the rejection that a retry must get again.
    pub result: Result<u64, Rejection>,
}
