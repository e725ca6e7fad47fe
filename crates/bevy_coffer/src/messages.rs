//! Request messages a game writes, and the outcome messages the plugin writes back.

use bevy::prelude::Message;
use coffer_client::{Rejection, pb};

/// Buy an offer. Write it with `MessageWriter<Purchase>`; a [`RequestCompleted`] or
/// [`RequestFailed`] follows.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// Catalog id of the offer.
    pub offer_id: String,
    /// The price the player saw, as `(currency_id, amount_minor_units)`. `None` quotes the
    /// price in the plugin's [`Catalog`](crate::Catalog) resource.
    pub expected_price: Option<Vec<(String, i64)>>,
}

impl Purchase {
    /// Buy `offer_id` at the price of the catalog the player sees.
    pub fn offer(offer_id: impl Into<String>) -> Self {
        Purchase {
            offer_id: offer_id.into(),
            expected_price: None,
        }
    }

    /// Quote this price instead of the catalog's.
    pub fn at_price(mut self, price: &[(&str, i64)]) -> Self {
        self.expected_price = Some(
            price
                .iter()
                .map(|(currency, amount)| ((*currency).to_owned(), *amount))
                .collect(),
        );
        self
    }
}

/// Raise an upgradable item one level (level 1 buys it).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Catalog id of the item.
    pub item_id: String,
    /// The level to reach. `None` means the level after the one in the
    /// [`Inventory`](crate::Inventory).
    pub target_level: Option<u32>,
    /// The price the player saw. `None` quotes the catalog's price of the target level.
    pub expected_price: Option<Vec<(String, i64)>>,
}

impl Upgrade {
    /// Raise `item_id` to its next level at the catalog's price.
    pub fn next_level(item_id: impl Into<String>) -> Self {
        Upgrade {
            item_id: item_id.into(),
            target_level: None,
            expected_price: None,
        }
    }
}

/// Use up items (for example drink a potion).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct Consume {
    /// Catalog id of the item.
    pub item_id: String,
    /// How many.
    pub quantity: u64,
}

impl Consume {
    /// Use up `quantity` of `item_id`.
    pub fn item(item_id: impl Into<String>, quantity: u64) -> Self {
        Consume {
            item_id: item_id.into(),
            quantity,
        }
    }
}

/// Claim a rate-limited reward (for example a coin picked up in the world).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct ClaimReward {
    /// Catalog id of the reward.
    pub reward_id: String,
}

impl ClaimReward {
    /// Claim `reward_id`.
    pub fn reward(reward_id: impl Into<String>) -> Self {
        ClaimReward {
            reward_id: reward_id.into(),
        }
    }
}

/// Redeem a real-money store receipt: what the platform store gave the game after a purchase
/// (Apple's StoreKit 2 `jwsRepresentation`, Google's purchase data and signature, or a sandbox
/// receipt). The server verifies it and credits what the store product grants, once per store
/// transaction: sending the same receipt again completes with the original transaction and
/// credits nothing more. A receipt that does not verify fails with
/// [`CofferError::ReceiptRefused`].
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct RedeemReceipt {
    /// The store the receipt comes from.
    pub platform: pb::StorePlatform,
    /// The receipt as the store gave it.
    pub payload: String,
}

impl RedeemReceipt {
    /// Redeem `payload` from `platform`.
    pub fn new(platform: pb::StorePlatform, payload: impl Into<String>) -> Self {
        RedeemReceipt {
            platform,
            payload: payload.into(),
        }
    }

    /// Redeem a receipt of Coffer's sandbox store (development servers).
    pub fn sandbox(payload: impl Into<String>) -> Self {
        RedeemReceipt::new(pb::StorePlatform::Sandbox, payload)
    }
}

/// Any request, as carried back in an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CofferRequest {
    /// A [`Purchase`].
    Purchase(Purchase),
    /// An [`Upgrade`].
    Upgrade(Upgrade),
    /// A [`Consume`].
    Consume(Consume),
    /// A [`ClaimReward`].
    ClaimReward(ClaimReward),
    /// A [`RedeemReceipt`].
    RedeemReceipt(RedeemReceipt),
}

/// A request the server committed. When it is read, [`Wallet`](crate::Wallet) and
/// [`Inventory`](crate::Inventory) already include the transaction.
#[derive(Message, Debug, Clone)]
pub struct RequestCompleted {
    /// What was asked.
    pub request: CofferRequest,
    /// The idempotency key it was sent (and retried) with.
    pub idempotency_key: String,
    /// The committed transaction.
    pub transaction: pb::Transaction,
}

/// A request that did not change anything.
#[derive(Message, Debug, Clone)]
pub struct RequestFailed {
    /// What was asked.
    pub request: CofferRequest,
    /// The idempotency key it was sent with.
    pub idempotency_key: String,
    /// Why.
    pub error: CofferError,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CofferError {
    /// The ledger refused it; `rejection` is the stable reason to `match` on.
    Rejected {
        /// The reason.
        rejection: Rejection,
        /// The server's explanation.
        message: String,
        /// For rate limits: milliseconds until a new attempt can succeed.
        retry_after_ms: Option<i64>,
    },
    /// The server could not be reached within the reconnect policy's budget. Nothing was
    /// committed under this key yet; a new request gets a new key.
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// The store receipt of a [`RedeemReceipt`] did not verify, or comes from a store this
    /// server does not accept. Nothing was credited.
    ReceiptRefused {
        /// The server's stable reason, e.g. `BAD_SIGNATURE`, `WRONG_ENVIRONMENT`, `MALFORMED`,
        /// `PLATFORM_NOT_CONFIGURED`, `REVOKED`.
        reason: String,
        /// The server's explanation.
        message: String,
    },
    /// The server refused the request as malformed, or answered with an unexpected error.
    Invalid {
        /// The server's explanation.
        message: String,
    },
    /// Too many requests are waiting or in flight; this one was not sent.
    Busy,
    /// The plugin's settings are unusable (bad endpoint or token); nothing is sent.
    Misconfigured {
        /// What is wrong.
        message: String,
    },
}

impl CofferError {
    /// The ledger's rejection, when it was one.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            CofferError::Rejected { rejection, .. } => Some(*rejection),
            _ => None,
        }
    }

    /// The stable reason to show or log: the rejection's name without its `REJECTION_` prefix
    /// (`INSUFFICIENT_FUNDS`), or a refused receipt's reason (`BAD_SIGNATURE`).
    pub fn reason(&self) -> Option<&str> {
        match self {
            CofferError::Rejected { rejection, .. } => {
                Some(rejection.as_str_name().trim_start_matches("REJECTION_"))
            }
            CofferError::ReceiptRefused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl std::fmt::Display for CofferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CofferError::Rejected {
                rejection, message, ..
            } => write!(f, "{}: {message}", rejection.as_str_name()),
            CofferError::Unavailable { attempts, message } => {
                write!(f, "server unavailable after {attempts} attempts: {message}")
            }
            CofferError::ReceiptRefused { reason, message } => {
                write!(f, "receipt refused ({reason}): {message}")
            }
            CofferError::Invalid { message } => write!(f, "invalid request: {message}"),
            CofferError::Busy => write!(f, "too many requests in flight"),
            CofferError::Misconfigured { message } => write!(f, "misconfigured: {message}"),
        }
    }
}

impl std::error::Error for CofferError {}
