//! Why the state machine refused a command: one stable enum, ordered by the precedence in which
//! the checks run, with fixed numbers a client can switch on (they match `coffer.v1.Rejection`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable rejection code. Never renumber: stored outcomes and clients depend on the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum RejectionCode {
    /// The idempotency key was used before with a different request.
    IdempotencyKeyReused = 1,
    /// No offer with that id in the current catalog.
    UnknownOffer = 2,
    /// No item with that id in the current catalog.
    UnknownItem = 3,
    /// No currency with that id in the current catalog.
    UnknownCurrency = 4,
    /// No reward with that id in the current catalog.
    UnknownReward = 5,
    /// The offer is outside its availability window.
    NotAvailable = 6,
    /// The price the client quoted is not the current price.
    PriceChanged = 7,
    /// The player reached the offer's per-player purchase limit.
    LimitReached = 8,
    /// The reward was claimed as often as its rate limit allows; retry later.
    RateLimited = 9,
    /// The item cannot be upgraded.
    NotUpgradable = 10,
    /// The level the client asked for is not the next level.
    LevelChanged = 11,
    /// The item is already at its top level.
    MaxLevelReached = 12,
    /// The item cannot be consumed (it is not stackable or unique).
    NotConsumable = 13,
    /// A balance would go below zero.
    InsufficientFunds = 14,
    /// A quantity to remove exceeds what the player holds.
    InsufficientItems = 15,
    /// A balance would exceed the currency's cap.
    CapExceeded = 16,
    /// A stack would exceed the item's maximum, or a unique item would be held twice.
    StackLimitExceeded = 17,
    /// No transaction with that id.
    TransactionNotFound = 18,
    /// The transaction was reversed already.
    AlreadyReversed = 19,
    /// The transaction cannot be reversed (a reversal, or its items changed since).
    NotReversible = 20,
    /// An amount would leave the representable range of a system account.
    AmountOverflow = 21,
    /// No store product with that id for that platform in the current catalog.
    UnknownProduct = 22,
    /// The store transaction was already redeemed, by another player.
    ReceiptAlreadyRedeemed = 23,
    /// No redeemed store transaction with that id (a refund for a purchase never redeemed).
    StoreTransactionNotFound = 24,
}

impl RejectionCode {
    /// Every code, in numeric order.
    pub const ALL: [RejectionCode; 24] = [
        Self::IdempotencyKeyReused,
        Self::UnknownOffer,
        Self::UnknownItem,
        Self::UnknownCurrency,
        Self::UnknownReward,
        Self::NotAvailable,
        Self::PriceChanged,
        Self::LimitReached,
        Self::RateLimited,
        Self::NotUpgradable,
        Self::LevelChanged,
        Self::MaxLevelReached,
        Self::NotConsumable,
        Self::InsufficientFunds,
        Self::InsufficientItems,
        Self::CapExceeded,
        Self::StackLimitExceeded,
        Self::TransactionNotFound,
        Self::AlreadyReversed,
        Self::NotReversible,
        Self::AmountOverflow,
        Self::UnknownProduct,
        Self::ReceiptAlreadyRedeemed,
        Self::StoreTransactionNotFound,
    ];

    /// The stable SCREAMING_CASE name, used as the `reason` of the gRPC `ErrorInfo`.
    pub fn name(self) -> &'static str {
        match self {
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::UnknownOffer => "UNKNOWN_OFFER",
            Self::UnknownItem => "UNKNOWN_ITEM",
            Self::UnknownCurrency => "UNKNOWN_CURRENCY",
            Self::UnknownReward => "UNKNOWN_REWARD",
            Self::NotAvailable => "NOT_AVAILABLE",
            Self::PriceChanged => "PRICE_CHANGED",
            Self::LimitReached => "LIMIT_REACHED",
            Self::RateLimited => "RATE_LIMITED",
            Self::NotUpgradable => "NOT_UPGRADABLE",
            Self::LevelChanged => "LEVEL_CHANGED",
            Self::MaxLevelReached => "MAX_LEVEL_REACHED",
            Self::NotConsumable => "NOT_CONSUMABLE",
            Self::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Self::InsufficientItems => "INSUFFICIENT_ITEMS",
            Self::CapExceeded => "CAP_EXCEEDED",
            Self::StackLimitExceeded => "STACK_LIMIT_EXCEEDED",
            Self::TransactionNotFound => "TRANSACTION_NOT_FOUND",
            Self::AlreadyReversed => "ALREADY_REVERSED",
            Self::NotReversible => "NOT_REVERSIBLE",
            Self::AmountOverflow => "AMOUNT_OVERFLOW",
            Self::UnknownProduct => "UNKNOWN_PRODUCT",
            Self::ReceiptAlreadyRedeemed => "RECEIPT_ALREADY_REDEEMED",
            Self::StoreTransactionNotFound => "STORE_TRANSACTION_NOT_FOUND",
        }
    }

    /// The code with that stable name.
    pub fn from_name(name: &str) -> Option<RejectionCode> {
        Self::ALL.into_iter().find(|code| code.name() == name)
    }
}

/// A refused command: a stable code and a message a developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
    /// For `RateLimited`: milliseconds until a retry can succeed.
    pub retry_after_ms: Option<i64>,
}

impl Rejection {
    /// A rejection with a message.
    pub fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_numbers_are_dense() {
        for (index, code) in RejectionCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, index + 1);
            assert_eq!(RejectionCode::from_name(code.name()), Some(code));
        }
    }
}
