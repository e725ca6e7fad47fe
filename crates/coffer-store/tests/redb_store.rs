//! The redb store on real files: commits survive reopening, indexes answer history, a second
//! process cannot open the same database.

use std::collections::BTreeMap;

use coffer_core::{
    AccountId, Catalog, Command, Contents, IdempotencyKey, Operation, RejectionCode,
};
use coffer_store::{
    Fault, RedbOptions, RedbStore, StorageFaults, Store, StoreError, StoredCatalog,
};

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
            player_id: player.into(),
            offer_id: "potion".into(),
            expected_price: [("coins".into(), 4)].into(),
        },
        caller: "test".into(),
        reason: Default::default(),
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
            player_id: "ann".into(),
            contents: Contents {
                currencies: [("coins".into(), 5)].into(),
                items: BTreeMap::new(),
            },
        },
        caller: "test".into(),
        reason: "gift".into(),
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
        caller: "test".into(),
        reason: Default::default(),
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

fn grant(player: &str, key: &str, coins: i64) -> Command {
    Command {
        idempotency_key: IdempotencyKey::admin(key),
        operation: Operation::Grant {
            player_id: player.into(),
            contents: Contents {
                currencies: [("coins".into(), coins)].into(),
                items: BTreeMap::new(),
            },
        },
        caller: "test".into(),
        reason: Default::default(),
    }
}

fn ids(transactions: &[coffer_core::Transaction]) -> Vec<u64> {
    transactions.iter().map(|t| t.id).collect()
}

/// Grants to other players in each batch of the checkpoint test.
const CROWD_GRANTS_PER_BATCH: usize = 60;

fn frequent_checkpoints() -> RedbOptions {
    RedbOptions {
        checkpoint_interval_ms: 1,
        ..RedbOptions::default()
    }
}

#[test]
fn reads_see_every_committed_batch_while_checkpoints_run() {
    reads_see_every_committed_batch(frequent_checkpoints());
}

/// Checkpoints write history and idempotency rows as runs, and merges fold them into the main
/// tables: reads must find every row wherever it is, before, during and after a merge, and
/// after reopening.
#[test]
fn reads_see_every_committed_batch_while_runs_are_merged() {
    let merges = reads_see_every_committed_batch(RedbOptions {
        runs_merge_at: 2,
        ..frequent_checkpoints()
    });
    assert!(merges > 0, "runs were merged while reads were checked");
}

/// Commits batches with frequent checkpoints and checks every read against a model after each;
/// returns how often the runs in the ledger file were seen to shrink (a merge ended).
fn reads_see_every_committed_batch(options: RedbOptions) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::from_toml(CATALOG).unwrap();
    let store = RedbStore::open_with(dir.path(), options.clone()).unwrap();
    let mut runs_seen = 0;
    let mut merges_seen = 0;
    let mut batches = Vec::new();
    let players = ["ann", "ben", "cat", "dan"];
    // The model: each player's transaction ids in order, and their balance.
    let mut history: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut coins: BTreeMap<&str, i64> = BTreeMap::new();
    let mut last_id = 0;
    let mut checkpoints_seen = 0;
    for round in 0..300u64 {
        let player = players[(round * 7 % 4) as usize];
        // Other players' grants make each batch a few hundred rows, so checkpoints span
        // several commits and reads run while one is half written.
        let mut batch = vec![
            grant(player, &format!("g{round}"), 5),
            purchase(player, &format!("p{round}")),
        ];
        batch.extend(
            (0..CROWD_GRANTS_PER_BATCH)
                .map(|i| grant(&format!("crowd{i}"), &format!("c{round}-{i}"), 1)),
        );
        let result = store.commit_batch(&batch, &catalog, round as i64).unwrap();
        for transaction in &result.changes.transactions {
            if transaction
                .account_versions
                .contains_key(&AccountId::player(player))
            {
                history.entry(player).or_default().push(transaction.id);
            }
        }
        coins.insert(
            player,
            result.changes.accounts[&AccountId::player(player)].balance("coins"),
        );

        let id = AccountId::player(player);
        let state = store.account(&id).unwrap().unwrap();
        assert_eq!(state.balance("coins"), coins[player], "round {round}");
        let expected = &history[player];
        let mut newest_first = expected.clone();
        newest_first.reverse();
        assert_eq!(
            ids(&store.history_before(&id, u64::MAX, 1_000).unwrap()),
            newest_first
        );
        assert_eq!(
            ids(&store.history_before(&id, state.version, 3).unwrap()),
            newest_first
                .iter()
                .skip(1)
                .take(3)
                .copied()
                .collect::<Vec<_>>(),
            "the three before the newest"
        );
        assert_eq!(
            ids(&store.history_after(&id, 1, 1_000).unwrap()),
            expected[1..]
        );
        let new = store.transactions_after(last_id, 1_000).unwrap();
        assert_eq!(
            ids(&new),
            (last_id + 1..=result.changes.next_transaction_id - 1).collect::<Vec<_>>()
        );
        last_id = result.changes.next_transaction_id - 1;
        assert_eq!(
            store.transaction(last_id).unwrap().unwrap().transaction.id,
            last_id
        );
        // Retrying the batch answers from the stored outcomes, journaled or checkpointed.
        let retry = store.commit_batch(&batch, &catalog, round as i64).unwrap();
        assert!(retry.changes.transactions.is_empty(), "round {round}");
        assert_eq!(retry.outcomes, result.outcomes, "round {round}");
        batches.push((batch, result.outcomes));
        let runs = store.checkpoint_status().unwrap().sorted_runs;
        if runs < runs_seen {
            merges_seen += 1;
        }
        runs_seen = runs;
        if round % 10 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        if store.checkpointed_through() > 0
            && store.checkpointed_through() < store.journaled_through()
        {
            checkpoints_seen += 1;
        }
    }
    assert!(
        checkpoints_seen > 0,
        "reads were checked while some batches were checkpointed and others not"
    );
    let report = store.verify(&catalog).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    assert_eq!(
        store.checkpointed_through(),
        store.journaled_through(),
        "verify folds everything into the ledger file first"
    );
    drop(store);

    // Reopened, wherever a merge left the rows: every history whole, every retry answered.
    let store = RedbStore::open_with(dir.path(), options).unwrap();
    for player in players {
        let id = AccountId::player(player);
        let mut newest_first = history[player].clone();
        newest_first.reverse();
        assert_eq!(
            ids(&store.history_before(&id, u64::MAX, 1_000).unwrap()),
            newest_first
        );
    }
    for (round, (batch, outcomes)) in batches.iter().enumerate() {
        let retry = store.commit_batch(batch, &catalog, round as i64).unwrap();
        assert!(retry.changes.transactions.is_empty(), "round {round}");
        assert_eq!(&retry.outcomes, outcomes, "round {round}");
    }
    merges_seen
}

/// The writer skips the table lookup of a key its filter of known keys does not hold (see
/// `known_keys.rs`): a key that reached the table by any path must still be found.
#[test]
fn a_retry_finds_its_outcome_once_checkpointed_after_reopening_and_after_an_import() {
    let catalog = Catalog::from_toml(CATALOG).unwrap();
    let retry_of = |store: &RedbStore, first: u64| {
        let retry = store
            .commit_batch(&[purchase("ann", "k")], &catalog, 3)
            .unwrap();
        assert!(
            retry.changes.transactions.is_empty(),
            "nothing applied again"
        );
        assert_eq!(retry.outcomes[0].as_ref().unwrap().id, first);
    };
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let store = RedbStore::open_with(dir.path(), frequent_checkpoints()).unwrap();
        let result = store
            .commit_batch(&[purchase("ann", "k")], &catalog, 1)
            .unwrap();
        let first = result.outcomes[0].as_ref().unwrap().id;
        // A batch after it, so the key's generation is not the newest.
        store
            .commit_batch(&[purchase("ben", "k")], &catalog, 2)
            .unwrap();
        // Verifying checkpoints everything first: the key is in the table, in no generation.
        assert!(store.verify(&catalog).unwrap().is_clean());
        assert_eq!(store.checkpointed_through(), store.journaled_through());
        retry_of(&store, first);
        first
    };
    let store = RedbStore::open(dir.path()).unwrap();
    retry_of(&store, first);

    let mut records = Vec::new();
    store
        .export(&mut |record| {
            records.push(record);
            Ok(())
        })
        .unwrap();
    let imported_dir = tempfile::tempdir().unwrap();
    let imported = RedbStore::open(imported_dir.path()).unwrap();
    imported.import(&mut records.into_iter().map(Ok)).unwrap();
    retry_of(&imported, first);
}

#[test]
fn checkpoint_status_counts_the_checkpointers_work_not_its_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::from_toml(CATALOG).unwrap();
    let store = RedbStore::open_with(
        dir.path(),
        RedbOptions {
            checkpoint_interval_ms: 3_600_000,
            ..RedbOptions::default()
        },
    )
    .unwrap();
    let batch: Vec<Command> = (0..CROWD_GRANTS_PER_BATCH)
        .map(|i| grant(&format!("crowd{i}"), &format!("c{i}"), 1))
        .collect();
    store.commit_batch(&batch, &catalog, 1).unwrap();
    // The generation is not due for an hour: the checkpointer waits and has done no work.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let waiting = store.checkpoint_status().unwrap();
    assert_eq!(waiting.journal_records_pending, 1);
    assert_eq!(waiting.checkpoint_busy_us_total, 0, "waiting is not work");

    // Verifying folds the batch in through the checkpointer first.
    assert!(store.verify(&catalog).unwrap().is_clean());
    let done = store.checkpoint_status().unwrap();
    assert_eq!(done.journal_records_pending, 0);
    assert!(done.checkpoint_busy_us_total > 0, "{done:?}");
    assert!(
        done.checkpoint_busy_us_total >= done.last_checkpoint_ms * 1_000,
        "the total includes the last checkpoint: {done:?}"
    );
    // Idle again: the total stays where the finished checkpoint left it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(
        store.checkpoint_status().unwrap().checkpoint_busy_us_total,
        done.checkpoint_busy_us_total
    );
}

#[test]
fn a_checkpoint_that_rewrites_pages_for_few_changes_stretches_the_next_generation() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::from_toml(CATALOG).unwrap();
    let interval_ms = 3_600_000;
    let store = RedbStore::open_with(
        dir.path(),
        RedbOptions {
            checkpoint_interval_ms: interval_ms,
            ..RedbOptions::default()
        },
    )
    .unwrap();
    let before = store.checkpoint_status().unwrap();
    assert_eq!(before.generation_age_limit_ms, interval_ms);
    // One grant: a handful of changes, each on a page (and branch pages) of its own.
    store
        .commit_batch(&[grant("solo", "s1", 1)], &catalog, 1)
        .unwrap();
    assert!(store.verify(&catalog).unwrap().is_clean());
    let after = store.checkpoint_status().unwrap();
    let written = after.ledger_written_bytes_total - before.ledger_written_bytes_total;
    assert!(written >= 4096, "the checkpoint wrote pages: {after:?}");
    assert_eq!(
        after.generation_age_limit_ms,
        2 * interval_ms,
        "{written} bytes for a few changes: the next generation may stay open twice as long"
    );
}

/// Set in the child process of the crash test: where it commits before it aborts.
const CRASH_CHILD_DIR: &str = "COFFER_STORE_CRASH_CHILD_DIR";
const CRASH_CHILD_BATCHES: u64 = 40;

fn journal_records(dir: &std::path::Path) -> usize {
    coffer_store::journal_record_count(&dir.join(coffer_store::JOURNAL_DIR_NAME)).unwrap() as usize
}

#[test]
fn a_crash_before_the_checkpoint_loses_no_acknowledged_batch() {
    let catalog = Catalog::from_toml(CATALOG).unwrap();
    if let Ok(dir) = std::env::var(CRASH_CHILD_DIR) {
        // The child: commits with checkpoints an hour apart, then dies without any cleanup.
        let options = RedbOptions {
            checkpoint_interval_ms: 3_600_000,
            ..RedbOptions::default()
        };
        let store = RedbStore::open_with(std::path::Path::new(&dir), options).unwrap();
        for batch in 0..CRASH_CHILD_BATCHES {
            store
                .commit_batch(&[grant("ann", &format!("g{batch}"), 1)], &catalog, 1)
                .unwrap();
        }
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_crash_before_the_checkpoint_loses_no_acknowledged_batch",
            "--nocapture",
        ])
        .env(CRASH_CHILD_DIR, dir.path())
        .output()
        .unwrap();
    assert!(!child.status.success(), "the child aborts after committing");
    assert_eq!(
        journal_records(dir.path()),
        CRASH_CHILD_BATCHES as usize,
        "every batch is only in the journal when the process dies"
    );

    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(
        store.checkpointed_through(),
        CRASH_CHILD_BATCHES,
        "opening folds the journal into the ledger file"
    );
    let ann = store.account(&AccountId::player("ann")).unwrap().unwrap();
    assert_eq!(ann.balance("coins"), 10 + CRASH_CHILD_BATCHES as i64);
    assert_eq!(
        store
            .history_before(&AccountId::player("ann"), u64::MAX, 1_000)
            .unwrap()
            .len() as u64,
        CRASH_CHILD_BATCHES + 1,
        "the opening and every grant"
    );
    let retry = store
        .commit_batch(&[grant("ann", "g0", 1)], &catalog, 2)
        .unwrap();
    assert!(
        retry.changes.transactions.is_empty(),
        "the key was recovered with its batch"
    );
    let next = store
        .commit_batch(&[grant("ann", "after", 1)], &catalog, 2)
        .unwrap();
    assert_eq!(next.changes.transactions[0].id, CRASH_CHILD_BATCHES + 2);
    let report = store.verify(&catalog).unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    drop(store);
    assert_eq!(
        journal_records(dir.path()),
        0,
        "a clean stop leaves no journal records"
    );
}

#[test]
fn a_written_batch_is_built_on_by_the_next_but_read_only_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::from_toml(CATALOG).unwrap();
    let faults = StorageFaults::default();
    let options = RedbOptions {
        faults: Some(faults.clone()),
        ..RedbOptions::default()
    };
    let store = RedbStore::open_with(dir.path(), options).unwrap();
    let ann = AccountId::player("ann");

    // Two batches written back to back, neither waited for: the second sees the first (ann
    // can afford two potions with her 10 coins, so the third purchase is refused).
    let (first, first_ticket) = store
        .write_batch(&[purchase("ann", "a"), purchase("ann", "b")], &catalog, 1)
        .unwrap();
    assert!(first.outcomes.iter().all(Result::is_ok));
    let (second, second_ticket) = store
        .write_batch(&[purchase("ann", "c")], &catalog, 2)
        .unwrap();
    assert_eq!(
        second.outcomes[0].as_ref().unwrap_err().code,
        RejectionCode::InsufficientFunds,
        "the second batch is applied on top of the written first one"
    );
    // A retry of a written purchase answers from its written outcome.
    let (retry, retry_ticket) = store
        .write_batch(&[purchase("ann", "a")], &catalog, 3)
        .unwrap();
    assert_eq!(
        retry.outcomes[0].as_ref().unwrap().id,
        first.outcomes[0].as_ref().unwrap().id
    );
    assert_eq!(store.journaled_through(), 2, "the retry wrote nothing");

    // A reader that finds them returns them only once their journal record is durable: while
    // every fsync fails it gets an error, never the batches.
    faults.set(Fault::SyncError);
    assert!(store.account(&ann).is_err());
    assert!(store.transaction(1).is_err());
    assert!(store.history_before(&ann, u64::MAX, 10).is_err());
    assert!(store.transactions_after(0, 10).is_err());
    assert!(faults.injected() > 0, "the readers asked for a sync");

    // Once the disk works again the store reopens and recovers what reached the journal; the
    // tickets of the earlier opening can no longer be confirmed, only retried.
    faults.set(Fault::None);
    let recovered = store.account(&ann).unwrap().unwrap();
    assert_eq!(recovered.balance("coins"), 2);
    assert!(store.transaction(1).unwrap().is_some());
    assert_eq!(store.history_before(&ann, u64::MAX, 10).unwrap().len(), 3);
    assert!(matches!(
        store.wait_durable(first_ticket),
        Err(StoreError::Reopening)
    ));
    assert!(matches!(
        store.wait_durable(second_ticket),
        Err(StoreError::Reopening)
    ));
    assert_eq!(
        retry_ticket, second_ticket,
        "a batch that wrote nothing waits for the newest record written before it"
    );

    // On the reopened files, a reader that meets a written batch makes it durable and answers.
    let (bought, ticket) = store
        .write_batch(&[purchase("bob", "a")], &catalog, 4)
        .unwrap();
    let bought = bought.outcomes[0].as_ref().unwrap();
    let bob = store.account(&AccountId::player("bob")).unwrap().unwrap();
    assert_eq!(bob.balance("coins"), 6);
    assert_eq!(
        store
            .transaction(bought.id)
            .unwrap()
            .unwrap()
            .transaction
            .id,
        bought.id
    );
    store.wait_durable(ticket).unwrap();
    assert!(store.verify(&catalog).unwrap().is_clean());
}

/// An import writes a player's history a row per version (as files before history chunks
/// did); checkpoints write a chunk per player and generation, into runs merged into a main
/// table. A read pages through all of them as one history.
#[test]
fn history_pages_through_imported_rows_and_checkpointed_chunks_alike() {
    let catalog = Catalog::from_toml(CATALOG).unwrap();
    let ann = AccountId::player("ann");
    let source_dir = tempfile::tempdir().unwrap();
    let source = RedbStore::open(source_dir.path()).unwrap();
    source
        .commit_batch(&[grant("ann", "s0", 20)], &catalog, 1)
        .unwrap();
    for key in ["a1", "a2", "a3"] {
        let bought = source
            .commit_batch(&[purchase("ann", key)], &catalog, 1)
            .unwrap();
        assert!(bought.outcomes[0].is_ok());
    }
    let mut records = Vec::new();
    source
        .export(&mut |record| {
            records.push(record);
            Ok(())
        })
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions {
        runs_merge_at: 2,
        ..frequent_checkpoints()
    };
    let store = RedbStore::open_with(dir.path(), options).unwrap();
    store.import(&mut records.into_iter().map(Ok)).unwrap();
    // Grants, so ann can keep buying: each batch its own generation and chunk, some merged.
    for batch in 0..6 {
        let keys = [format!("g{batch}"), format!("b{batch}")];
        let commands = [grant("ann", &keys[0], 8), purchase("ann", &keys[1])];
        let result = store.commit_batch(&commands, &catalog, 2).unwrap();
        assert!(result.outcomes.iter().all(Result::is_ok));
        // Verifying checkpoints everything first: each batch its own chunk.
        assert!(store.verify(&catalog).unwrap().is_clean());
    }
    let check = |store: &RedbStore| {
        let everything = store.history_after(&ann, 0, 100).unwrap();
        // The opening, the imported grant and three purchases, then six grant-and-purchase
        // pairs.
        assert_eq!(everything.len(), 1 + 4 + 12);
        let versions: Vec<u64> = everything
            .iter()
            .map(|t| t.account_versions[&ann])
            .collect();
        assert_eq!(versions, (1..=17).collect::<Vec<u64>>());
        for limit in 1..=18 {
            for at in 0..=18u64 {
                let after = store.history_after(&ann, at, limit).unwrap();
                let expected: Vec<u64> = everything
                    .iter()
                    .filter(|t| t.account_versions[&ann] > at)
                    .take(limit)
                    .map(|t| t.id)
                    .collect();
                assert_eq!(ids(&after), expected, "after {at}, limit {limit}");
                let before = store.history_before(&ann, at, limit).unwrap();
                let expected: Vec<u64> = everything
                    .iter()
                    .rev()
                    .filter(|t| t.account_versions[&ann] < at)
                    .take(limit)
                    .map(|t| t.id)
                    .collect();
                assert_eq!(ids(&before), expected, "before {at}, limit {limit}");
            }
        }
    };
    check(&store);
    let status = store.checkpoint_status().unwrap();
    assert!(status.sorted_runs < 6, "chunk runs were merged: {status:?}");
    drop(store);
    check(&RedbStore::open(dir.path()).unwrap());
}
