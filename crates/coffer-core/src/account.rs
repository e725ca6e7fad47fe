//! The state of one account: balances, inventory, limits used and its version.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::ids::{CurrencyId, ItemId, OfferId, RewardId};

/// What a player holds of one item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemHolding {
    pub quantity: u64,
    /// 0 for items without levels.
    pub level: u32,
}

/// An account's state. Zero balances and empty holdings are not stored, so two states that
/// hold the same value compare equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Balances in minor units. Players: 0..=cap. System accounts: any sign.
    pub balances: BTreeMap<CurrencyId, i64>,
    pub items: BTreeMap<ItemId, ItemHolding>,
    /// Purchases made per offer, for per-player limits.
    pub offer_purchases: BTreeMap<OfferId, u32>,
    /// Unix ms of the claims still inside each reward's rate-limit window, oldest first.
    pub reward_claims_unix_ms: BTreeMap<RewardId, Vec<i64>>,
    /// Number of transactions that touched this player account (0 for system accounts).
    pub version: u64,
}

impl AccountState {
    /// Balance in minor units (0 when none is held).
    pub fn balance(&self, currency: &str) -> i64 {
        self.balances.get(currency).copied().unwrap_or(0)
    }

    /// What the account holds of an item (nothing when absent).
    pub fn holding(&self, item: &str) -> ItemHolding {
        self.items.get(item).copied().unwrap_or_default()
    }
}
