//! The core's cost per command: a batch of 1,024 purchases by distinct players whose accounts
//! are already loaded, through `apply_batch`, beside two baselines in the same run: the same
//! work for a batch of one, and the `needed` walk that checks the batch's state is loaded.
//! Every result is reported per command (`Throughput::Elements`).
//!
//! `cargo bench -p coffer-core --bench apply_batch`

use std::hint::black_box;

use coffer_core::limits::{BATCH_LEN_MAX, PREFETCH_ROUNDS_MAX};
use coffer_core::{
    AccountState, Catalog, Command, IdempotencyKey, LoadedState, Operation, apply_batch, needed,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const CATALOG: &str = r#"
version = 1
[currencies.coins]
decimals = 0
max_balance_minor_units = 1_000_000_000
[currencies.gems]
decimals = 0
max_balance_minor_units = 1_000_000_000
[offers.gem]
price = { coins = 3 }
currencies = { gems = 1 }
"#;

const NOW_UNIX_MS: i64 = 1_795_000_000_000;

/// One purchase by each of `len` distinct players.
fn purchases(len: usize) -> Vec<Command> {
    (0..len)
        .map(|n| {
            let player_id = format!("player-{n}");
            Command {
                idempotency_key: IdempotencyKey::player(&player_id, "buy-gem-1"),
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

/// Everything `commands` needs, as a store would load it: each player exists with coins to
/// spend, system accounts and idempotency keys are not there yet.
fn preloaded(commands: &[Command]) -> LoadedState {
    let mut loaded = LoadedState {
        next_transaction_id: 1_000_000,
        ..LoadedState::default()
    };
    for _ in 0..=PREFETCH_ROUNDS_MAX {
        let missing = needed(commands, &loaded);
        if missing.is_empty() {
            return loaded;
        }
        for id in missing.accounts {
            let state = (!id.is_system()).then(|| AccountState {
                balances: [("coins".into(), 1_000_000)].into(),
                version: 1,
                ..AccountState::default()
            });
            loaded.accounts.insert(id, state.map(std::sync::Arc::new));
        }
        for key in missing.idempotency_keys {
            loaded.idempotency.insert(key, None);
        }
        for id in missing.transactions {
            loaded.transactions.insert(id, None);
        }
    }
    panic!("the batch still needs state after {PREFETCH_ROUNDS_MAX} rounds");
}

fn bench(c: &mut Criterion) {
    let catalog = Catalog::from_toml(CATALOG).expect("bench catalog is valid");
    let mut group = c.benchmark_group("core");
    for len in [1, BATCH_LEN_MAX] {
        let commands = purchases(len);
        let loaded = preloaded(&commands);
        // Sanity: every purchase in the measured batch succeeds.
        let result = apply_batch(loaded.clone(), &catalog, NOW_UNIX_MS, &commands);
        assert!(result.outcomes.iter().all(Result::is_ok));
        assert_eq!(result.changes.transactions.len(), len);

        group.throughput(Throughput::Elements(len as u64));
        group.bench_function(format!("apply_batch/{len}_purchases"), |b| {
            b.iter_batched(
                || loaded.clone(),
                |loaded| apply_batch(loaded, &catalog, NOW_UNIX_MS, black_box(&commands)),
                BatchSize::LargeInput,
            )
        });
        if len == BATCH_LEN_MAX {
            group.bench_function(format!("needed_when_loaded/{len}_purchases"), |b| {
                b.iter(|| needed(black_box(&commands), black_box(&loaded)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
