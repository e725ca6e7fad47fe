//! Identifiers: accounts (players and named system accounts) and catalog ids.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::limits::ID_LEN_MAX;

/// An identifier or short label. Up to 24 bytes it is kept inline, so copying one allocates
/// nothing, and catalog ids and most player ids are that short: a purchase copies its player,
/// offer and currency ids into the account state, postings and history it writes, and
/// allocations freed on another thread than made them cost more than the copy.
pub use compact_str::CompactString as Name;

/// Currency id as written in the catalog, e.g. `coins`.
pub type CurrencyId = Name;
/// Item id as written in the catalog, e.g. `speed_boots`.
pub type ItemId = Name;
/// Offer id as written in the catalog.
pub type OfferId = Name;
/// Reward id as written in the catalog.
pub type RewardId = Name;
/// A player id.
pub type PlayerId = Name;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than [`ID_LEN_MAX`] bytes.
    #[error("must be at most {ID_LEN_MAX} bytes, got {0}")]
    TooLong(usize),
    /// The id contains a character outside `A-Z a-z 0-9 _ - . @`.
    #[error("may contain only ASCII letters, digits, '_', '-', '.' and '@', found {0:?}")]
    BadCharacter(char),
}

/// Checks an id (player, currency, item, offer, reward, bundle). Colons are excluded so that no
/// player id can ever spell a `system:` account.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > ID_LEN_MAX {
        return Err(IdError::TooLong(id.len()));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')))
    {
        Some(c) => Err(IdError::BadCharacter(c)),
        None => Ok(()),
    }
}

/// A real-money store whose purchases Coffer redeems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StorePlatform {
    /// Apple App Store.
    Apple,
    /// Google Play.
    Google,
    /// Coffer's own signed test store (development and the demo game).
    Sandbox,
}

impl StorePlatform {
    /// Every platform, in a fixed order.
    pub const ALL: [StorePlatform; 3] = [Self::Apple, Self::Google, Self::Sandbox];

    /// The lower-case name used in the catalog, account names and idempotency scopes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Apple => "apple",
            Self::Google => "google",
            Self::Sandbox => "sandbox",
        }
    }

    /// The platform with that lower-case name.
    pub fn from_name(name: &str) -> Option<StorePlatform> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for StorePlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The system accounts value moves to and from. Players' accounts are the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SystemAccount {
    /// Receives purchase prices, pays out currency sold in offers.
    Shop,
    /// Pays out claimed rewards.
    Rewards,
    /// Pays admin grants and opening balances; receives revocations.
    Grants,
    /// Pays out what real-money purchases in one store grant; receives refunds' claw-backs.
    Store(StorePlatform),
}

impl SystemAccount {
    /// Every system account, for verifiers and listings.
    pub const ALL: [SystemAccount; 6] = [
        Self::Shop,
        Self::Rewards,
        Self::Grants,
        Self::Store(StorePlatform::Apple),
        Self::Store(StorePlatform::Google),
        Self::Store(StorePlatform::Sandbox),
    ];

    /// The account name as stored and shown, e.g. `system:shop`, `system:store:apple`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shop => "system:shop",
            Self::Rewards => "system:rewards",
            Self::Grants => "system:grants",
            Self::Store(StorePlatform::Apple) => "system:store:apple",
            Self::Store(StorePlatform::Google) => "system:store:google",
            Self::Store(StorePlatform::Sandbox) => "system:store:sandbox",
        }
    }
}

/// An account in the ledger: `system:<name>` or a player id.
///
/// Copying one allocates nothing: a system account's name points to a constant, and a player's
/// is inline (see [`Name`]). Every purchase copies its accounts into postings and versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountId(Name);

impl AccountId {
    /// The account of a player. The caller has checked the id with [`check_id`].
    pub fn player(player_id: &str) -> Self {
        debug_assert!(
            check_id(player_id).is_ok(),
            "unchecked player id {player_id:?}"
        );
        AccountId(Name::new(player_id))
    }

    /// The account of a system ledger.
    pub fn system(account: SystemAccount) -> Self {
        AccountId(Name::const_new(account.name()))
    }

    /// Parses a stored account name back into an id.
    pub fn from_stored(name: &str) -> Self {
        match SystemAccount::ALL.into_iter().find(|a| a.name() == name) {
            Some(account) => AccountId::system(account),
            None => AccountId(Name::new(name)),
        }
    }

    /// True for `system:*` accounts, which may go negative and have no version history.
    pub fn is_system(&self) -> bool {
        self.0.starts_with("system:")
    }

    /// The account name, e.g. `alice` or `system:shop`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by account can be searched with a player id without allocating an `AccountId`:
/// the id is the name, and the derived order, equality and hash are its `str`'s (a `Name` hashes
/// and orders as the `str` it holds).
impl std::borrow::Borrow<str> for AccountId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
