//! The redb store on real files: commits survive reopening, indexes answer history, a second
//! process cannot open the same database.

use std::collections::BTreeMap;

use coffer_core::{AccountId, Catalog, Command, Contents, IdempotencyKey, Operation};
use coffer_store::{RedbStore, Store, StoreError, StoredCatalog};

const CATALOG: &str = r#"
version = 3
[currencies.coins]
decimals = 0
initial_balance_minor_units = 10
[items.potion]
kind = "stackable"
max_stack = 10
[offers.potion]
price = { coins = 4 }
items = { potion = 1 }
"#;

fn purchase(player: &str, key: &str) -> Command {
    Command {
        idempotency_key: IdempotencyKey::player(player, key),
        operation: Operation::Purchase {
            player_id: player.to_owned(),
            offer_id: "potion".to_owned(),
            expected_price: [("coins".to_owned(), 4)].into(),
        },
        caller: "test".to_owned(),
        reason: String::new(),
    }
}

#[test]
fn committed_batches_survive_reopening_with_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::from_toml(CATALOG).unwrap();
    {
        let store = RedbStore::open(dir.path()).unwrap();
        let batch = [
            purchase("ann", "a"),
            purchase("ann", "b"),
            purchase("ann", "c"),
            purchase("ben", "a"),
        ];
        let result = store.commit_batch(&batch, &catalog, 1_000).unwrap();
        let outcomes: Vec<bool> = result.outcomes.iter().map(Result::is_ok).collect();
        assert_eq!(
            outcomes,
            [true, true, false, true],
            "ann can afford two potions, not three"
        );
        store
            .save_catalog(&StoredCatalog {
                version: 3,
                source_toml: CATALOG.to_owned(),
            })
            .unwrap();
    }
    let store = RedbStore::open(dir.path()).unwrap();
    let ann = store.account(&AccountId::player("ann")).unwrap().unwrap();
    assert_eq!(
        (
            ann.balance("coins"),
            ann.holding("potion").quantity,
            ann.version
        ),
        (2, 2, 3)
    );
    let newest_first: Vec<u64> = store
        .history_before(&AccountId::player("ann"), u64::MAX, 10)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(newest_first, [3, 2, 1]);
    let after_first: Vec<u64> = store
        .history_after(&AccountId::player("ann"), 1, 10)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(after_first, [2, 3]);
    assert_eq!(store.stored_catalog().unwrap().unwrap().version, 3);
    let report = store.verify(&catalog).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    assert_eq!(
        report.transactions_checked, 5,
        "two openings and three purchases"
    );

    // The rejection was stored with the batch: a retry after reopening gets it again.
    let retry = store
        .commit_batch(&[purchase("ann", "c")], &catalog, 2_000)
        .unwrap();
    assert!(retry.outcomes[0].is_err());
    assert!(retry.changes.transactions.is_empty());
}

#[test]
fn a_second_open_of_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RedbStore::open(dir.path()).unwrap();
    match RedbStore::open(dir.path()) {
        Err(StoreError::AlreadyOpen(path)) => assert!(path.ends_with("coffer.redb")),
        Err(other) => panic!("expected AlreadyOpen, got {other}"),
        Ok(_) => panic!("the database was opened twice"),
    }
}

#[test]
fn reversal_state_is_read_back_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::from_toml(CATALOG).unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let grant = Command {
        idempotency_key: IdempotencyKey::admin("g"),
        operation: Operation::Grant {
            player_id: "ann".to_owned(),
            contents: Contents {
                currencies: [("coins".to_owned(), 5)].into(),
                items: BTreeMap::new(),
            },
        },
        caller: "test".to_owned(),
        reason: "gift".to_owned(),
    };
    let granted = store
        .commit_batch(&[grant], &catalog, 1)
        .unwrap()
        .outcomes
        .remove(0)
        .unwrap();
    let reverse = |key: &str| Command {
        idempotency_key: IdempotencyKey::admin(key),
        operation: Operation::Reverse {
            transaction_id: granted.id,
        },
        caller: "test".to_owned(),
        reason: String::new(),
    };
    let reversal = store
        .commit_batch(&[reverse("r1")], &catalog, 2)
        .unwrap()
        .outcomes
        .remove(0)
        .unwrap();
    assert_eq!(
        store.transaction(granted.id).unwrap().unwrap().reversed_by,
        Some(reversal.id)
    );
    let again = store
        .commit_batch(&[reverse("r2")], &catalog, 3)
        .unwrap()
        .outcomes
        .remove(0);
    assert_eq!(
        again.unwrap_err().code,
        coffer_core::RejectionCode::AlreadyReversed
    );
    assert!(store.verify(&catalog).unwrap().is_clean());
}
