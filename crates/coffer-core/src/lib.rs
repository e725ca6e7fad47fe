//! Coffer's domain core: the ledger rules, the catalog, pricing and every invariant about money.
//!
//! It is a deterministic state machine. Storage loads the state a batch of commands needs
//! ([`needed`]), the core applies the batch ([`apply_batch`]) and returns one outcome per command
//! plus the changes to commit. It never reads a clock, a file or a socket: time is an argument.
//! The [`Verifier`] replays the ledger and checks that the stored state matches it.

#![forbid(unsafe_code)]

mod account;
mod catalog;
mod command;
mod ids;
mod ledger;
pub mod limits;
mod rejection;
mod state_machine;
mod verify;

pub use account::{AccountState, ItemHolding};
pub use catalog::{
    Amounts, Bundle, Catalog, CatalogError, Contents, Currency, Item, ItemKind, Offer, Reward,
    StoreProduct,
};
pub use command::{
    Command, ExecuteStep, IdempotencyKey, Operation, RefundPolicy, StorePurchase, StoreRefundKind,
    StoredOutcome,
};
pub use ids::{
    AccountId, CurrencyId, IdError, ItemId, Name, OfferId, PlayerId, RewardId, StorePlatform,
    SystemAccount, check_id,
};
pub use ledger::{ItemMovement, Posting, Transaction, TransactionKind};
pub use rejection::{Rejection, RejectionCode};
pub use state_machine::{
    BatchChanges, BatchResult, LoadedState, Outcome, Prefetch, TransactionRecord, apply_batch,
    needed,
};
pub use verify::{VIOLATIONS_LISTED_MAX, Verifier, VerifyReport};
