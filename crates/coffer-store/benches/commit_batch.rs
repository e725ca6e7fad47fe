//! The store's cost per durable commit: `RedbStore::commit_batch` of 1, 64 and 1,024 purchases
//! by distinct, already opened players, on a real redb file in a temporary directory, beside
//! the baseline of a bare durable redb commit of one key (the fsync cost every batch pays).
//! A commit is the batch's journal record; the checkpointer thread folds generations into the
//! indexed tables meanwhile, so its cost shows as far as it competes for the CPU and the disk.
//!
//! `cargo bench -p coffer-store --bench commit_batch`

use std::sync::atomic::{AtomicU64, Ordering};

use coffer_core::{Catalog, Command, IdempotencyKey, Operation};
use coffer_store::{RedbStore, Store};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use redb::{Durability, TableDefinition};

const CATALOG: &str = r#"
version = 1
[currencies.coins]
decimals = 0
max_balance_minor_units = 1_000_000_000_000
initial_balance_minor_units = 1_000_000_000
[currencies.gems]
decimals = 0
max_balance_minor_units = 1_000_000_000_000
[offers.gem]
price = { coins = 3 }
currencies = { gems = 1 }
"#;

const NOW_UNIX_MS: i64 = 1_795_000_000_000;

const BASELINE: TableDefinition<u64, u64> = TableDefinition::new("baseline");

/// Idempotency keys are never reused, so every measured purchase is new work, not a replay.
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// One purchase by each of `len` distinct players, with fresh idempotency keys.
fn purchases(len: usize) -> Vec<Command> {
    (0..len)
        .map(|n| {
            let player_id = format!("player-{n}");
            let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            Command {
                idempotency_key: IdempotencyKey::player(&player_id, format!("k{key}")),
                operation: Operation::Purchase {
                    player_id: player_id.into(),
                    offer_id: "gem".into(),
                    expected_price: [("coins".into(), 3)].into(),
                },
                caller: "bench".into(),
                reason: Default::default(),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let catalog = Catalog::from_toml(CATALOG).expect("bench catalog is valid");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut group = c.benchmark_group("redb");

    let baseline = redb::Database::create(dir.path().join("baseline.redb")).unwrap();
    let mut value = 0u64;
    group.bench_function("durable_commit_of_one_key (baseline)", |b| {
        b.iter(|| {
            value += 1;
            let mut txn = baseline.begin_write().unwrap();
            txn.set_durability(Durability::Immediate).unwrap();
            txn.set_two_phase_commit(true);
            txn.open_table(BASELINE).unwrap().insert(0, value).unwrap();
            txn.commit().unwrap();
        })
    });

    let store = RedbStore::open(&dir.path().join("store")).expect("opening the store");
    // Open every player once, so the measured batches are plain purchases, not openings.
    let opened = store
        .commit_batch(&purchases(1_024), &catalog, NOW_UNIX_MS)
        .unwrap();
    assert!(opened.outcomes.iter().all(Result::is_ok));
    for len in [1, 64, 1_024] {
        let check = store
            .commit_batch(&purchases(len), &catalog, NOW_UNIX_MS)
            .unwrap();
        assert_eq!(
            check.changes.transactions.len(),
            len,
            "one purchase each, no opening"
        );
        group.throughput(Throughput::Elements(len as u64));
        group.bench_function(format!("commit_batch/{len}_purchases"), |b| {
            b.iter_batched(
                || purchases(len),
                |commands| {
                    let result = store
                        .commit_batch(&commands, &catalog, NOW_UNIX_MS)
                        .unwrap();
                    debug_assert!(result.outcomes.iter().all(Result::is_ok));
                    result
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
