//! Property tests: random sequences of commands, in random batches, keep every ledger
//! invariant; rejections change nothing; retries replay; batching never changes outcomes.

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_core::*;
use proptest::prelude::*;

const CATALOG: &str = r#"
version = 1
[currencies.coins]
decimals = 0
max_balance_minor_units = 500
initial_balance_minor_units = 50
[currencies.gems]
decimals = 0
initial_balance_minor_units = 2
[items.potion]
kind = "stackable"
max_stack = 5
[items.sword]
kind = "unique"
[items.boots]
kind = "upgradable"
level_prices = [{ coins = 10 }, { coins = 20, gems = 1 }, { coins = 40 }]
[bundles.pack]
currencies = { coins = 30 }
items = { potion = 2 }
[offers.potion]
price = { coins = 7 }
items = { potion = 1 }
[offers.sword]
price = { coins = 60 }
items = { sword = 1 }
[offers.pack]
price = { gems = 1 }
bundle = "pack"
limit_per_player = 2
[offers.gems]
price = { coins = 100 }
currencies = { gems = 3 }
[rewards.coin]
currencies = { coins = 5 }
rate_limit = { count = 3, window_seconds = 10 }
[store_products.sandbox.coins_40]
currencies = { coins = 40 }
[store_products.sandbox.pack]
bundle = "pack"
[store_products.apple.gems]
currencies = { gems = 4 }
items = { sword = 1 }
"#;

const PLAYERS: [&str; 3] = ["p0", "p1", "p2"];

/// An in-memory stand-in for storage: what a real store would hold.
#[derive(Clone, Debug, Default, PartialEq)]
struct Memory {
    accounts: BTreeMap<AccountId, AccountState>,
    transactions: BTreeMap<u64, Arc<Transaction>>,
    reversals: BTreeMap<u64, u64>,
    idempotency: BTreeMap<IdempotencyKey, StoredOutcome>,
}

impl Memory {
    fn next_id(&self) -> u64 {
        self.transactions.len() as u64 + 1
    }

    fn run(&mut self, commands: &[Command], catalog: &Catalog, now: i64) -> Vec<Outcome> {
        let mut loaded = LoadedState {
            next_transaction_id: self.next_id(),
            ..LoadedState::default()
        };
        for _ in 0..=limits::PREFETCH_ROUNDS_MAX {
            let missing = needed(commands, &loaded);
            if missing.is_empty() {
                break;
            }
            for id in missing.accounts {
                loaded
                    .accounts
                    .insert(id.clone(), self.accounts.get(&id).cloned().map(Arc::new));
            }
            for key in missing.idempotency_keys {
                loaded
                    .idempotency
                    .insert(key.clone(), self.idempotency.get(&key).cloned());
            }
            for id in missing.transactions {
                let record = self.transactions.get(&id).map(|t| TransactionRecord {
                    transaction: t.clone(),
                    reversed_by: self.reversals.get(&id).copied(),
                });
                loaded.transactions.insert(id, record);
            }
        }
        let result = apply_batch(loaded, catalog, now, commands);
        let changes = result.changes;
        assert_eq!(
            changes.next_transaction_id,
            self.next_id() + changes.transactions.len() as u64
        );
        let states = changes.accounts.into_iter();
        self.accounts
            .extend(states.map(|(id, state)| (id, Arc::unwrap_or_clone(state))));
        for transaction in changes.transactions {
            assert!(
                self.transactions
                    .insert(transaction.id, transaction)
                    .is_none(),
                "transaction ids are never reused"
            );
        }
        self.reversals.extend(changes.reversals);
        self.idempotency.extend(changes.idempotency);
        result.outcomes
    }

    fn verify(&self, catalog: &Catalog) -> VerifyReport {
        let mut verifier = Verifier::new(catalog);
        for transaction in self.transactions.values() {
            verifier.transaction(transaction);
        }
        for (id, state) in &self.accounts {
            verifier.account(id, state);
        }
        verifier.finish()
    }
}

fn catalog() -> Catalog {
    Catalog::from_toml(CATALOG).unwrap()
}

fn platform() -> impl Strategy<Value = StorePlatform> {
    prop::sample::select(vec![StorePlatform::Sandbox, StorePlatform::Apple])
}

/// True when a claw-back refund took `currency` from `account`: the one way a player balance
/// may be below zero.
fn clawed_back(memory: &Memory, account: &AccountId, currency: &str) -> bool {
    memory.transactions.values().any(|t| {
        matches!(
            t.kind,
            TransactionKind::StoreRefund {
                policy: RefundPolicy::ClawBack,
                ..
            }
        ) && t
            .postings
            .iter()
            .any(|p| &p.account == account && p.currency == currency && p.amount_minor_units < 0)
    })
}

fn player() -> impl Strategy<Value = String> {
    prop::sample::select(&PLAYERS[..]).prop_map(str::to_owned)
}

fn amounts() -> impl Strategy<Value = Amounts> {
    prop::collection::btree_map(
        prop_oneof![6 => Just("coins".into()), 3 => Just("gems".into()), 1 => Just("gold".into())],
        1i64..40,
        0..3,
    )
}

fn contents() -> impl Strategy<Value = Contents> {
    let items = prop::collection::btree_map(
        prop::sample::select(vec!["potion".into(), "sword".into(), "boots".into()]),
        1u64..3,
        0..2,
    );
    (amounts(), items).prop_map(|(currencies, items)| Contents { currencies, items })
}

fn operation() -> impl Strategy<Value = Operation> {
    let offer = prop::sample::select(vec!["potion", "potion", "sword", "pack", "gems", "nothing"]);
    let item = prop::sample::select(vec!["boots", "boots", "potion", "sword", "nothing"]);
    let honest = || prop::bool::weighted(0.85);
    prop_oneof![
        4 => (player(), offer, honest()).prop_map(|(player_id, offer_id, honest)| {
            let price: Amounts = match (offer_id, honest) {
                ("potion", true) => [("coins".into(), 7)].into(),
                ("sword", true) => [("coins".into(), 60)].into(),
                ("pack", true) => [("gems".into(), 1)].into(),
                ("gems", true) => [("coins".into(), 100)].into(),
                _ => [("coins".into(), 1)].into(),
            };
            Operation::Purchase { player_id: player_id.into(), offer_id: offer_id.into(), expected_price: price }
        }),
        3 => (player(), item.clone(), 1u32..5, honest()).prop_map(|(player_id, item_id, target_level, honest)| {
            let price: Amounts = match (target_level, honest) {
                (1, true) => [("coins".into(), 10)].into(),
                (2, true) => [("coins".into(), 20), ("gems".into(), 1)].into(),
                (3, true) => [("coins".into(), 40)].into(),
                _ => [("coins".into(), 5)].into(),
            };
            Operation::Upgrade { player_id: player_id.into(), item_id: item_id.into(), target_level, expected_price: price }
        }),
        2 => (player(), item.clone(), 1u64..4).prop_map(|(player_id, item_id, quantity)| Operation::Consume { player_id: player_id.into(), item_id: item_id.into(), quantity }),
        3 => (player(), prop::sample::select(vec!["coin", "nothing"])).prop_map(|(player_id, r)| Operation::ClaimReward { player_id: player_id.into(), reward_id: r.into() }),
        2 => (player(), contents()).prop_map(|(player_id, contents)| Operation::Grant { player_id: player_id.into(), contents }),
        2 => (player(), contents()).prop_map(|(player_id, contents)| Operation::Revoke { player_id: player_id.into(), contents }),
        2 => (1u64..40).prop_map(|transaction_id| Operation::Reverse { transaction_id }),
        3 => (player(), platform(), 0u8..6, prop::sample::select(vec!["coins_40", "pack", "gems", "nope"]), 1u32..3)
            .prop_map(|(player_id, platform, transaction, product, quantity)| Operation::RedeemReceipt {
                player_id: player_id.into(),
                purchase: StorePurchase {
                    platform,
                    store_transaction_id: format!("t{transaction}"),
                    product_id: product.to_owned(),
                    quantity,
                    price_minor_units: Some(199),
                    currency_code: Some("USD".into()),
                    environment: "sandbox".into(),
                    purchased_at_unix_ms: 1,
                },
            }),
        2 => (platform(), 0u8..6, prop::bool::ANY, prop::bool::weighted(0.7))
            .prop_map(|(platform, transaction, revoke, claw_back)| Operation::RefundStoreTransaction {
                platform,
                store_transaction_id: format!("t{transaction}"),
                kind: if revoke { StoreRefundKind::Revoke } else { StoreRefundKind::Refund },
                policy: if claw_back { RefundPolicy::ClawBack } else { RefundPolicy::ReverseIfPossible },
            }),
        1 => prop::collection::vec(
                prop_oneof![
                    (player(), contents()).prop_map(|(player_id, contents)| ExecuteStep::Grant { player_id: player_id.into(), contents }),
                    (player(), contents()).prop_map(|(player_id, contents)| ExecuteStep::Revoke { player_id: player_id.into(), contents }),
                    (player(), player(), contents()).prop_map(|(from_player_id, to_player_id, contents)| ExecuteStep::Transfer { from_player_id: from_player_id.into(), to_player_id: to_player_id.into(), contents }),
                ],
                1..4,
            ).prop_map(|steps| Operation::Execute { steps }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    // Few keys, so retries and key reuse with other requests happen often.
    (operation(), 0u8..40).prop_map(|(operation, key)| {
        let key = format!("k{key}");
        let idempotency_key = match operation.players().next() {
            Some(player) => IdempotencyKey::player(player, &key),
            None => IdempotencyKey::admin(&key),
        };
        Command {
            idempotency_key,
            operation,
            caller: "test".into(),
            reason: Default::default(),
        }
    })
}

/// Commands with the time each is applied at (ms, non-decreasing) and batch boundaries.
fn schedule() -> impl Strategy<Value = Vec<(Command, u16, bool)>> {
    prop::collection::vec((command(), 0u16..4_000, prop::bool::weighted(0.3)), 1..80)
}

fn batches(schedule: &[(Command, u16, bool)]) -> Vec<(Vec<Command>, i64)> {
    let mut batches = Vec::new();
    let mut now = 1_000_000i64;
    let mut current = Vec::new();
    for (command, step_ms, ends_batch) in schedule {
        current.push(command.clone());
        if *ends_batch {
            now += i64::from(*step_ms);
            batches.push((std::mem::take(&mut current), now));
        }
    }
    if !current.is_empty() {
        batches.push((current, now + 1));
    }
    batches
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_keep_every_invariant(schedule in schedule()) {
        let catalog = catalog();
        let mut memory = Memory::default();
        for (batch, now) in batches(&schedule) {
            let outcomes = memory.run(&batch, &catalog, now);
            prop_assert_eq!(outcomes.len(), batch.len());
            for transaction in outcomes.iter().flatten() {
                prop_assert!(transaction.is_balanced());
            }
            let report = memory.verify(&catalog);
            prop_assert!(report.is_clean(), "{:?}", report.violations);
            for (id, state) in memory.accounts.iter().filter(|(id, _)| !id.is_system()) {
                for (currency, balance) in &state.balances {
                    prop_assert!(*balance <= catalog.balance_cap(currency));
                    prop_assert!(*balance >= 0 || clawed_back(&memory, id, currency), "{id} holds {balance} {currency}");
                }
                for (item, holding) in &state.items {
                    prop_assert!(holding.quantity >= 1 && holding.quantity <= catalog.items[item].quantity_max());
                }
            }
        }
    }

    #[test]
    fn a_rejected_command_changes_nothing_but_its_idempotency_record(schedule in schedule()) {
        let catalog = catalog();
        let mut memory = Memory::default();
        for (index, (command, _, _)) in schedule.iter().enumerate() {
            let before = memory.clone();
            let outcome = memory.run(std::slice::from_ref(command), &catalog, 1_000 + index as i64).remove(0);
            if let Err(rejection) = outcome {
                prop_assert_eq!(&memory.accounts, &before.accounts, "{}", rejection);
                prop_assert_eq!(&memory.transactions, &before.transactions);
                prop_assert_eq!(&memory.reversals, &before.reversals);
            }
        }
    }

    #[test]
    fn a_retry_returns_the_original_outcome(schedule in schedule()) {
        let catalog = catalog();
        let mut memory = Memory::default();
        for (index, (command, _, _)) in schedule.iter().enumerate() {
            let now = 1_000 + index as i64;
            let first = memory.run(std::slice::from_ref(command), &catalog, now).remove(0);
            let before = memory.clone();
            let retry = memory.run(std::slice::from_ref(command), &catalog, now + 50_000).remove(0);
            match &first {
                Err(rejection) if rejection.code == RejectionCode::IdempotencyKeyReused => {
                    prop_assert_eq!(retry.unwrap_err().code, RejectionCode::IdempotencyKeyReused);
                }
                _ => prop_assert_eq!(&retry, &first),
            }
            prop_assert_eq!(&memory, &before, "a retry commits nothing");
        }
    }

    #[test]
    fn batching_never_changes_outcomes(schedule in schedule()) {
        let catalog = catalog();
        let mut batched = Memory::default();
        let mut one_by_one = Memory::default();
        for (batch, now) in batches(&schedule) {
            let together = batched.run(&batch, &catalog, now);
            let alone: Vec<Outcome> = batch.iter().flat_map(|c| one_by_one.run(std::slice::from_ref(c), &catalog, now)).collect();
            prop_assert_eq!(together, alone);
        }
        prop_assert_eq!(batched, one_by_one);
    }
}

#[test]
fn verifier_catches_a_tampered_balance() {
    let catalog = catalog();
    let mut memory = Memory::default();
    let grant = Command {
        idempotency_key: IdempotencyKey::admin("g"),
        operation: Operation::Grant {
            player_id: "p0".into(),
            contents: Contents {
                currencies: [("coins".into(), 5)].into(),
                items: BTreeMap::new(),
            },
        },
        caller: "test".into(),
        reason: Default::default(),
    };
    memory.run(&[grant], &catalog, 1).remove(0).unwrap();
    assert!(memory.verify(&catalog).is_clean());
    memory
        .accounts
        .get_mut(&AccountId::player("p0"))
        .unwrap()
        .balances
        .insert("coins".into(), 56);
    let report = memory.verify(&catalog);
    assert!(!report.is_clean());
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("differ from the ledger replay")),
        "{:?}",
        report.violations
    );
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("coins sums to 1")),
        "{:?}",
        report.violations
    );
}

#[test]
fn generated_schedules_mostly_do_something() {
    use proptest::strategy::ValueTree;
    let catalog = catalog();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut committed, mut rejected, mut replayed_kinds) =
        (0, 0, std::collections::BTreeSet::new());
    for _ in 0..64 {
        let schedule = schedule().new_tree(&mut runner).unwrap().current();
        let mut memory = Memory::default();
        for (batch, now) in batches(&schedule) {
            for outcome in memory.run(&batch, &catalog, now) {
                match outcome {
                    Ok(_) => committed += 1,
                    Err(_) => rejected += 1,
                }
            }
        }
        replayed_kinds.extend(memory.transactions.values().map(|t| t.kind.name()));
    }
    // The generator must exercise success paths of every kind, not only rejections.
    assert!(
        committed * 4 > committed + rejected,
        "only {committed} of {} commands committed",
        committed + rejected
    );
    for kind in [
        "opening",
        "purchase",
        "upgrade",
        "consume",
        "reward_claim",
        "grant",
        "revoke",
        "execute",
        "reversal",
        "store_redemption",
        "store_refund",
    ] {
        assert!(
            replayed_kinds.contains(kind),
            "no {kind} transaction was generated: {replayed_kinds:?}"
        );
    }
}

fn redeem(player_id: &str, platform: StorePlatform, transaction: &str, product: &str) -> Command {
    Command {
        idempotency_key: IdempotencyKey::player(player_id, "client-key"),
        operation: Operation::RedeemReceipt {
            player_id: player_id.into(),
            purchase: StorePurchase {
                platform,
                store_transaction_id: transaction.to_owned(),
                product_id: product.to_owned(),
                quantity: 1,
                price_minor_units: Some(499),
                currency_code: Some("EUR".into()),
                environment: "sandbox".into(),
                purchased_at_unix_ms: 7,
            },
        },
        caller: "test".into(),
        reason: Default::default(),
    }
}

fn refund(platform: StorePlatform, transaction: &str, policy: RefundPolicy) -> Command {
    Command {
        idempotency_key: IdempotencyKey::admin("notification"),
        operation: Operation::RefundStoreTransaction {
            platform,
            store_transaction_id: transaction.to_owned(),
            kind: StoreRefundKind::Refund,
            policy,
        },
        caller: "test".into(),
        reason: Default::default(),
    }
}

fn spend_coins(player_id: &str, key: &str, coins: i64) -> Command {
    Command {
        idempotency_key: IdempotencyKey::player(player_id, key),
        operation: Operation::Revoke {
            player_id: player_id.into(),
            contents: Contents {
                currencies: [("coins".into(), coins)].into(),
                items: BTreeMap::new(),
            },
        },
        caller: "test".into(),
        reason: Default::default(),
    }
}

fn balance(memory: &Memory, player_id: &str, currency: &str) -> i64 {
    memory.accounts[&AccountId::player(player_id)].balance(currency)
}

#[test]
fn a_store_transaction_is_redeemed_once_across_all_players() {
    let catalog = catalog();
    let mut memory = Memory::default();
    let first = memory
        .run(
            &[redeem("p0", StorePlatform::Sandbox, "t1", "coins_40")],
            &catalog,
            1,
        )
        .remove(0)
        .unwrap();
    assert_eq!(
        first.kind,
        TransactionKind::StoreRedemption {
            platform: StorePlatform::Sandbox,
            store_transaction_id: "t1".into(),
            product_id: "coins_40".into()
        }
    );
    assert_eq!(first.metadata["price_minor_units"], "499");
    assert_eq!(first.metadata["price_currency"], "EUR");
    assert!(
        first
            .postings
            .iter()
            .any(|p| p.account.as_str() == "system:store:sandbox" && p.amount_minor_units == -40)
    );
    assert_eq!(balance(&memory, "p0", "coins"), 90);

    // The same player, even with another client key, gets the original transaction back.
    let mut again = redeem("p0", StorePlatform::Sandbox, "t1", "coins_40");
    again.idempotency_key = IdempotencyKey::player("p0", "another-key");
    let before = memory.clone();
    assert_eq!(memory.run(&[again], &catalog, 2).remove(0).unwrap(), first);
    assert_eq!(memory, before);

    // Another player is refused and nothing changes.
    let stolen = memory
        .run(
            &[redeem("p1", StorePlatform::Sandbox, "t1", "coins_40")],
            &catalog,
            3,
        )
        .remove(0)
        .unwrap_err();
    assert_eq!(stolen.code, RejectionCode::ReceiptAlreadyRedeemed);
    assert_eq!(memory, before);

    // The same id in another store is another purchase.
    memory
        .run(
            &[redeem("p1", StorePlatform::Apple, "t1", "gems")],
            &catalog,
            4,
        )
        .remove(0)
        .unwrap();
    assert!(memory.verify(&catalog).is_clean());
}

#[test]
fn an_unknown_product_is_refused_and_redeemable_once_the_catalog_has_it() {
    let catalog = catalog();
    let mut memory = Memory::default();
    let command = redeem("p0", StorePlatform::Sandbox, "t1", "gems");
    let rejection = memory
        .run(std::slice::from_ref(&command), &catalog, 1)
        .remove(0)
        .unwrap_err();
    assert_eq!(rejection.code, RejectionCode::UnknownProduct);
    assert!(memory.transactions.is_empty() && memory.idempotency.is_empty());
    let fixed = Catalog::from_toml(&format!(
        "{CATALOG}\n[store_products.sandbox.gems]\ncurrencies = {{ gems = 1 }}\n"
    ))
    .unwrap();
    memory.run(&[command], &fixed, 2).remove(0).unwrap();
    assert_eq!(balance(&memory, "p0", "gems"), 3);
}

#[test]
fn a_claw_back_takes_spent_currency_below_zero_once_and_the_verifier_accepts_it() {
    let catalog = catalog();
    let mut memory = Memory::default();
    memory
        .run(
            &[redeem("p0", StorePlatform::Sandbox, "t1", "coins_40")],
            &catalog,
            1,
        )
        .remove(0)
        .unwrap();
    memory
        .run(&[spend_coins("p0", "spend", 80)], &catalog, 2)
        .remove(0)
        .unwrap();
    assert_eq!(balance(&memory, "p0", "coins"), 10);

    // Reverse-if-possible refuses: the player spent the coins.
    let refused = memory
        .run(
            &[refund(
                StorePlatform::Sandbox,
                "t1",
                RefundPolicy::ReverseIfPossible,
            )],
            &catalog,
            3,
        )
        .remove(0)
        .unwrap_err();
    assert_eq!(refused.code, RejectionCode::InsufficientFunds);

    let clawed = memory
        .run(
            &[refund(StorePlatform::Sandbox, "t1", RefundPolicy::ClawBack)],
            &catalog,
            4,
        )
        .remove(0)
        .unwrap();
    assert_eq!(balance(&memory, "p0", "coins"), -30);
    assert_eq!(clawed.metadata["refund_policy"], "claw_back");
    let report = memory.verify(&catalog);
    assert!(report.is_clean(), "{:?}", report.violations);

    // A second notice (whatever the policy) returns the first refund and changes nothing.
    let before = memory.clone();
    for policy in [RefundPolicy::ClawBack, RefundPolicy::ReverseIfPossible] {
        let again = memory
            .run(&[refund(StorePlatform::Sandbox, "t1", policy)], &catalog, 5)
            .remove(0)
            .unwrap();
        assert_eq!(again, clawed);
    }
    assert_eq!(memory, before);

    // The debt blocks spending, and credits pay it off first.
    let spend = memory
        .run(&[spend_coins("p0", "spend-2", 1)], &catalog, 6)
        .remove(0)
        .unwrap_err();
    assert_eq!(spend.code, RejectionCode::InsufficientFunds);
    memory
        .run(
            &[redeem("p0", StorePlatform::Sandbox, "t2", "coins_40")],
            &catalog,
            7,
        )
        .remove(0)
        .unwrap();
    assert_eq!(balance(&memory, "p0", "coins"), 10);
    // An admin cannot reverse the refund (which would grant the coins back).
    let reverse = Command {
        idempotency_key: IdempotencyKey::admin("undo-refund"),
        operation: Operation::Reverse {
            transaction_id: clawed.id,
        },
        caller: "test".into(),
        reason: Default::default(),
    };
    assert_eq!(
        memory
            .run(&[reverse], &catalog, 8)
            .remove(0)
            .unwrap_err()
            .code,
        RejectionCode::NotReversible
    );
    assert!(memory.verify(&catalog).is_clean());
}

#[test]
fn a_refund_takes_back_held_items_and_refunds_of_unknown_transactions_change_nothing() {
    let catalog = catalog();
    let mut memory = Memory::default();
    let unknown = memory
        .run(
            &[refund(StorePlatform::Apple, "t9", RefundPolicy::ClawBack)],
            &catalog,
            1,
        )
        .remove(0)
        .unwrap_err();
    assert_eq!(unknown.code, RejectionCode::StoreTransactionNotFound);
    assert!(memory.transactions.is_empty() && memory.idempotency.is_empty());

    memory
        .run(
            &[redeem("p0", StorePlatform::Apple, "t9", "gems")],
            &catalog,
            2,
        )
        .remove(0)
        .unwrap();
    assert_eq!(
        memory.accounts[&AccountId::player("p0")]
            .holding("sword")
            .quantity,
        1
    );
    memory
        .run(
            &[refund(
                StorePlatform::Apple,
                "t9",
                RefundPolicy::ReverseIfPossible,
            )],
            &catalog,
            3,
        )
        .remove(0)
        .unwrap();
    let state = &memory.accounts[&AccountId::player("p0")];
    assert_eq!(
        (state.holding("sword").quantity, state.balance("gems")),
        (0, 2)
    );
    assert!(memory.verify(&catalog).is_clean());
}

#[test]
fn verifier_catches_a_negative_balance_that_no_claw_back_explains() {
    let catalog = catalog();
    let mut memory = Memory::default();
    memory
        .run(&[spend_coins("p0", "spend", 50)], &catalog, 1)
        .remove(0)
        .unwrap();
    // Tamper: make the revocation take 60 coins, leaving -10 without a claw-back.
    let transaction = memory.transactions.values_mut().last().unwrap();
    for posting in &mut Arc::make_mut(transaction).postings {
        posting.amount_minor_units = posting.amount_minor_units.signum() * 60;
    }
    for (id, state) in memory.accounts.iter_mut() {
        if id.as_str() == "p0" {
            state.balances.insert("coins".into(), -10);
        } else if id.as_str() == "system:grants" {
            state.balances.insert("coins".into(), 10);
        }
    }
    let report = memory.verify(&catalog);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("only a claw-back may")),
        "{:?}",
        report.violations
    );
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("outside 0..=500")),
        "{:?}",
        report.violations
    );
}
