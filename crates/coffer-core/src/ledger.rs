//! Ledger records: immutable transactions made of postings and item movements.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::command::RefundPolicy;
use crate::ids::{AccountId, CurrencyId, ItemId, Name, OfferId, RewardId, StorePlatform};

/// One signed currency amount on one account. A transaction's postings sum to zero per currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: AccountId,
    pub currency: CurrencyId,
    pub amount_minor_units: i64,
}

/// An item entering or leaving a player's inventory, or changing level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMovement {
    pub account: AccountId,
    pub item: ItemId,
    pub quantity_delta: i64,
    /// Level before and after (0 for items without levels, or not held).
    pub level_before: u32,
    pub level_after: u32,
}

/// What a transaction did, with the catalog entry it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionKind {
    /// Initial balances granted when a player first appears.
    Opening,
    Purchase {
        offer_id: OfferId,
    },
    Upgrade {
        item_id: ItemId,
        level: u32,
    },
    Consume {
        item_id: ItemId,
    },
    RewardClaim {
        reward_id: RewardId,
    },
    Grant,
    Revoke,
    /// An admin `Execute`: several operations on several players at once.
    Execute,
    /// Undoes the transaction `reverses`.
    Reversal {
        reverses: u64,
    },
    /// A verified real-money purchase credited from `system:store:<platform>`.
    StoreRedemption {
        platform: StorePlatform,
        store_transaction_id: String,
        product_id: String,
    },
    /// A store refund or revocation undoing the redemption `reverses` under `policy`. With
    /// [`RefundPolicy::ClawBack`] it is the only transaction that may take a player balance
    /// below zero.
    StoreRefund {
        platform: StorePlatform,
        store_transaction_id: String,
        reverses: u64,
        policy: RefundPolicy,
    },
}

impl TransactionKind {
    /// Stable lower-case name, as shown in logs and the API.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Purchase { .. } => "purchase",
            Self::Upgrade { .. } => "upgrade",
            Self::Consume { .. } => "consume",
            Self::RewardClaim { .. } => "reward_claim",
            Self::Grant => "grant",
            Self::Revoke => "revoke",
            Self::Execute => "execute",
            Self::Reversal { .. } => "reversal",
            Self::StoreRedemption { .. } => "store_redemption",
            Self::StoreRefund { .. } => "store_refund",
        }
    }
}

/// An immutable ledger transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Dense, increasing from 1 in commit order.
    pub id: u64,
    pub kind: TransactionKind,
    pub created_at_unix_ms: i64,
    pub postings: Vec<Posting>,
    pub item_movements: Vec<ItemMovement>,
    /// The version each player account touched has after this transaction.
    pub account_versions: BTreeMap<AccountId, u64>,
    /// Caller, idempotency key, reason and other context.
    pub metadata: BTreeMap<Name, Name>,
}

impl Transaction {
    /// Sum of postings per currency; zero for every currency in a balanced transaction.
    pub fn sums_per_currency(&self) -> BTreeMap<&str, i128> {
        let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
        for posting in &self.postings {
            *sums.entry(posting.currency.as_str()).or_default() +=
                i128::from(posting.amount_minor_units);
        }
        sums
    }

    /// True when every currency's postings sum to zero.
    pub fn is_balanced(&self) -> bool {
        self.sums_per_currency().values().all(|sum| *sum == 0)
    }
}
