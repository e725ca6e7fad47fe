//! The ledger file's rows that belong to one account, side by side under one key prefix: the
//! account's state, its history index and the outcomes of idempotency keys in its scope. A
//! purchase changes one player's state, adds one history entry and one key outcome; with a table
//! per kind of row a checkpoint rewrote three random leaf pages per player it touched, clustered
//! it rewrites about one. At a million players those page writes were most of a checkpoint's work.
//!
//! A key is `(cluster, suffix)`: the cluster is an account name, or an idempotency scope that no
//! player owns (`admin`, `store:apple`…); the suffix starts with the kind of row.

use std::borrow::Cow;

use redb::TableDefinition;

use crate::StoreError;

pub(crate) const ACCOUNT_ROWS: TableDefinition<(&str, &[u8]), &[u8]> =
    TableDefinition::new("account_rows");

const KIND_STATE: u8 = 0;
/// Followed by the account version, big-endian so versions sort in order; the value is the
/// transaction id, big-endian.
const KIND_HISTORY: u8 = 1;
/// An idempotency key in the scope `player:<cluster>`, followed by the key.
const KIND_PLAYER_KEY: u8 = 2;
/// An idempotency key in the scope `<cluster>`, followed by the key.
const KIND_SCOPE_KEY: u8 = 3;

const PLAYER_SCOPE_PREFIX: &str = "player:";

/// The suffix of an account's state row.
pub(crate) const STATE_SUFFIX: &[u8] = &[KIND_STATE];

/// The suffix of the history row of an account's `version`.
pub(crate) fn history_suffix(version: u64) -> [u8; 9] {
    let mut suffix = [KIND_HISTORY; 9];
    suffix[1..].copy_from_slice(&version.to_be_bytes());
    suffix
}

/// The value of a history row.
pub(crate) fn history_value(transaction_id: u64) -> [u8; 8] {
    transaction_id.to_be_bytes()
}

/// The cluster and suffix of an idempotency key's row: next to the player's other rows when the
/// player chose the key.
pub(crate) fn idempotency_row_key<'a>(scope: &'a str, key: &str) -> (&'a str, Vec<u8>) {
    let (cluster, kind) = match scope.strip_prefix(PLAYER_SCOPE_PREFIX) {
        Some(player) => (player, KIND_PLAYER_KEY),
        None => (scope, KIND_SCOPE_KEY),
    };
    let mut suffix = Vec::with_capacity(1 + key.len());
    suffix.push(kind);
    suffix.extend_from_slice(key.as_bytes());
    (cluster, suffix)
}

/// One row, read back.
pub(crate) enum AccountRow<'a> {
    State {
        account: &'a str,
        encoded: &'a [u8],
    },
    History {
        version: u64,
        transaction_id: u64,
    },
    Idempotency {
        scope: Cow<'a, str>,
        key: &'a str,
        encoded: &'a [u8],
    },
}

impl<'a> AccountRow<'a> {
    pub(crate) fn parse(
        cluster: &'a str,
        suffix: &'a [u8],
        value: &'a [u8],
    ) -> Result<AccountRow<'a>, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt {
            what: format!("row of {cluster:?}"),
            detail: detail.to_owned(),
        };
        let key = || std::str::from_utf8(&suffix[1..]).map_err(|_| corrupt("key is not UTF-8"));
        match suffix.first() {
            Some(&KIND_STATE) if suffix.len() == 1 => Ok(AccountRow::State {
                account: cluster,
                encoded: value,
            }),
            Some(&KIND_HISTORY) => {
                let version = suffix[1..]
                    .try_into()
                    .map_err(|_| corrupt("history version is not 8 bytes"))?;
                let transaction_id = value
                    .try_into()
                    .map_err(|_| corrupt("history transaction id is not 8 bytes"))?;
                Ok(AccountRow::History {
                    version: u64::from_be_bytes(version),
                    transaction_id: u64::from_be_bytes(transaction_id),
                })
            }
            Some(&KIND_PLAYER_KEY) => Ok(AccountRow::Idempotency {
                scope: Cow::Owned(format!("{PLAYER_SCOPE_PREFIX}{cluster}")),
                key: key()?,
                encoded: value,
            }),
            Some(&KIND_SCOPE_KEY) => Ok(AccountRow::Idempotency {
                scope: Cow::Borrowed(cluster),
                key: key()?,
                encoded: value,
            }),
            _ => Err(corrupt("unknown kind of row")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_row_reads_back_as_written_and_history_sorts_by_version() {
        let state = AccountRow::parse("ann", STATE_SUFFIX, b"s").unwrap();
        assert!(matches!(
            state,
            AccountRow::State {
                account: "ann",
                encoded: b"s"
            }
        ));

        let value = history_value(42);
        let suffix = history_suffix(7);
        let history = AccountRow::parse("ann", &suffix, &value).unwrap();
        assert!(matches!(
            history,
            AccountRow::History {
                version: 7,
                transaction_id: 42
            }
        ));
        assert!(history_suffix(255) < history_suffix(256));
        assert!(STATE_SUFFIX < &history_suffix(0)[..]);

        let (cluster, suffix) = idempotency_row_key("player:ann", "k1");
        assert_eq!(
            cluster, "ann",
            "a player's keys sit with the player's account"
        );
        let AccountRow::Idempotency { scope, key, .. } =
            AccountRow::parse(cluster, &suffix, b"o").unwrap()
        else {
            panic!("not an idempotency row");
        };
        assert_eq!((scope.as_ref(), key), ("player:ann", "k1"));

        // A scope no player owns stays apart from a player with the same name.
        let (cluster, suffix) = idempotency_row_key("admin", "k1");
        assert_eq!(cluster, "admin");
        assert_ne!(suffix, idempotency_row_key("player:admin", "k1").1);
        let AccountRow::Idempotency { scope, key, .. } =
            AccountRow::parse(cluster, &suffix, b"o").unwrap()
        else {
            panic!("not an idempotency row");
        };
        assert_eq!((scope.as_ref(), key), ("admin", "k1"));

        assert!(AccountRow::parse("ann", &[9], b"").is_err());
        assert!(AccountRow::parse("ann", &[KIND_HISTORY, 1], b"").is_err());
    }
}
