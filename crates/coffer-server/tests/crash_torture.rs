//! Crash torture (issue #8): the real `coffer` binary on one redb data directory, driven by many
//! concurrent clients, killed with SIGKILL at a random moment, restarted, again and again.
//!
//! Some cycles also kill a server while it is still starting (opening the crashed database).
//!
//! After every restart the test checks, against its own record of every request it made:
//! - every acknowledged transaction is in the ledger, unchanged (new ones are read every cycle;
//!   older ones are fetched again by a sample each cycle and all every `FULL_READ_EVERY` cycles);
//! - every request whose answer was lost in the kill, retried with its idempotency key, resolves
//!   to exactly one outcome, and a sample of acknowledged requests replays their original answer;
//! - no idempotency key is applied twice, and no transaction exists that no request asked for;
//! - `VerifyLedger` is clean;
//! - per currency, all accounts (system ones included) sum to exactly zero, each player's balance
//!   equals the sum of their postings, and equals what the test computes on its own from the
//!   outcomes of its requests (items and upgrade levels likewise).
//!
//! `COFFER_TORTURE_CYCLES` sets the number of kill/restart cycles (default 50);
//! `COFFER_TORTURE_SEED` replays a seed printed by an earlier run. The seed fixes every kill
//! delay and each client task's sequence of requests; timing still decides how far each task
//! gets before a kill, and so exactly which requests it cuts off.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coffer_client::{ClientError, CofferClient, Rejection, balance, holding, money, pb};

const CYCLES_DEFAULT: usize = 50;
/// Concurrent client tasks; each owns `PLAYERS_PER_TASK` players and is their only source of
/// purchases, upgrades and claims, so it knows their upgrade level.
const TASKS: usize = 24;
const PLAYERS_PER_TASK: usize = 2;
/// A kill lands uniformly in `0..=KILL_DELAY_MS_MAX` after the load starts.
const KILL_DELAY_MS_MAX: u64 = 400;
/// One cycle in `STARTUP_KILL_ONE_IN` also kills a server while it is still opening the database.
const STARTUP_KILL_ONE_IN: u64 = 6;
const STARTUP_KILL_DELAY_MS_MAX: u64 = 40;
/// Cycles between two complete re-reads of the ledger (in between: what is new, and a sample).
const FULL_READ_EVERY: usize = 10;
/// Acknowledged requests replayed, and old transactions fetched again, after each restart.
const REPLAY_SAMPLE_LEN: usize = 24;
/// Bounds on loops that would otherwise wait on the server forever.
const OPS_PER_TASK_PER_CYCLE_MAX: usize = 100_000;
const TRANSIENT_RETRIES_MAX: usize = 200;
const HISTORY_PAGE_LEN: u32 = 500;
const HISTORY_PAGES_MAX: usize = 100_000;
/// A guard against a hung call, not an assertion on speed: a call cut off by the kill normally
/// fails at once when its connection resets.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

const CATALOG_TOML: &str = r#"
version = 1

[currencies.coins]
name = "Coins"
decimals = 0
max_balance_minor_units = 10_000_000
initial_balance_minor_units = 100

[currencies.gems]
name = "Gems"
decimals = 0
max_balance_minor_units = 1_000_000
initial_balance_minor_units = 5

[items.potion]
name = "Potion"
kind = "stackable"
max_stack = 1_000

[items.sword]
name = "Sword"
kind = "unique"

[items.boots]
name = "Boots"
kind = "upgradable"
level_prices = [
    { coins = 20 },
    { coins = 40 },
    { coins = 80 },
    { coins = 160, gems = 1 },
    { coins = 320, gems = 2 },
]

[offers.potion]
name = "Potion"
price = { coins = 10 }
items = { potion = 1 }

[offers.sword]
name = "Sword"
price = { coins = 150 }
items = { sword = 1 }

[offers.gem_pouch]
name = "Gem pouch"
price = { coins = 50 }
currencies = { gems = 1 }

[offers.starter]
name = "Starter"
price = { gems = 5 }
currencies = { coins = 200 }
items = { potion = 3 }
limit_per_player = 1

[rewards.pickup]
name = "Pickup"
currencies = { coins = 1 }
rate_limit = { count = 1_000, window_seconds = 60 }

[rewards.daily]
name = "Daily"
currencies = { coins = 50, gems = 1 }
rate_limit = { count = 1, window_seconds = 86_400 }
"#;

// The test's own reading of `CATALOG_TOML`, from which it computes balances independently of
// the server. A mismatch between the two makes the model check fail, never pass.
const CURRENCIES: [&str; 2] = ["coins", "gems"];
const INITIAL_BALANCES: [(&str, i64); 2] = [("coins", 100), ("gems", 5)];

struct OfferModel {
    id: &'static str,
    price: &'static [(&'static str, i64)],
    currencies: &'static [(&'static str, i64)],
    items: &'static [(&'static str, i64)],
}

const OFFERS: [OfferModel; 4] = [
    OfferModel {
        id: "potion",
        price: &[("coins", 10)],
        currencies: &[],
        items: &[("potion", 1)],
    },
    OfferModel {
        id: "sword",
        price: &[("coins", 150)],
        currencies: &[],
        items: &[("sword", 1)],
    },
    OfferModel {
        id: "gem_pouch",
        price: &[("coins", 50)],
        currencies: &[("gems", 1)],
        items: &[],
    },
    OfferModel {
        id: "starter",
        price: &[("gems", 5)],
        currencies: &[("coins", 200)],
        items: &[("potion", 3)],
    },
];

const BOOTS: &str = "boots";
/// `BOOTS_LEVEL_PRICES[i]` buys level `i + 1`.
const BOOTS_LEVEL_PRICES: [&[(&str, i64)]; 5] = [
    &[("coins", 20)],
    &[("coins", 40)],
    &[("coins", 80)],
    &[("coins", 160), ("gems", 1)],
    &[("coins", 320), ("gems", 2)],
];

const REWARDS: [(&str, &[(&str, i64)]); 2] = [
    ("pickup", &[("coins", 1)]),
    ("daily", &[("coins", 50), ("gems", 1)]),
];

/// Items the model counts (the upgradable item is checked by level).
const COUNTED_ITEMS: [&str; 2] = ["potion", "sword"];

/// SplitMix64: a seeded, dependency-free generator; quality is ample for picking requests.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }

    fn range(&mut self, low: i64, high_inclusive: i64) -> i64 {
        assert!(low <= high_inclusive);
        low + self.below((high_inclusive - low + 1) as u64) as i64
    }

    /// An independent stream of the seed, so that what one stream draws (which depends on how
    /// far the load got before a kill) never shifts another.
    fn stream(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xd134_2543_de82_ef95));
        rng.next_u64();
        rng
    }
}

/// One step of an admin `Execute`.
#[derive(Debug, Clone)]
enum Step {
    Grant {
        player: String,
        coins: i64,
    },
    Transfer {
        from: String,
        to: String,
        coins: i64,
        potions: i64,
    },
}

/// A request the test made, in the test's own terms.
#[derive(Debug, Clone)]
enum Request {
    Grant {
        player: String,
        coins: i64,
        gems: i64,
        potions: i64,
    },
    Revoke {
        player: String,
        coins: i64,
        potions: i64,
    },
    Purchase {
        player: String,
        offer: usize,
    },
    Upgrade {
        player: String,
        target_level: u32,
    },
    Consume {
        player: String,
        potions: i64,
    },
    Claim {
        player: String,
        reward: usize,
    },
    Execute {
        steps: Vec<Step>,
    },
}

fn contents(currencies: &[(&str, i64)], items: &[(&str, i64)]) -> pb::Contents {
    pb::Contents {
        currencies: money(
            &currencies
                .iter()
                .copied()
                .filter(|(_, amount)| *amount != 0)
                .collect::<Vec<_>>(),
        ),
        items: items
            .iter()
            .filter(|(_, quantity)| *quantity != 0)
            .map(|(item, quantity)| pb::ItemQuantity {
                item_id: (*item).to_owned(),
                quantity: *quantity as u64,
            })
            .collect(),
    }
}

impl Request {
    async fn send(
        &self,
        client: &mut CofferClient,
        key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        match self {
            Request::Grant {
                player,
                coins,
                gems,
                potions,
            } => {
                client
                    .grant(
                        player,
                        contents(
                            &[("coins", *coins), ("gems", *gems)],
                            &[("potion", *potions)],
                        ),
                        "torture grant",
                        key,
                    )
                    .await
            }
            Request::Revoke {
                player,
                coins,
                potions,
            } => {
                client
                    .revoke(
                        player,
                        contents(&[("coins", *coins)], &[("potion", *potions)]),
                        "torture revoke",
                        key,
                    )
                    .await
            }
            Request::Purchase { player, offer } => {
                let offer = &OFFERS[*offer];
                client.purchase(player, offer.id, offer.price, key).await
            }
            Request::Upgrade {
                player,
                target_level,
            } => {
                let price = BOOTS_LEVEL_PRICES[*target_level as usize - 1];
                client
                    .upgrade(player, BOOTS, *target_level, price, key)
                    .await
            }
            Request::Consume { player, potions } => {
                client.consume(player, "potion", *potions as u64, key).await
            }
            Request::Claim { player, reward } => {
                client.claim_reward(player, REWARDS[*reward].0, key).await
            }
            Request::Execute { steps } => {
                let operations = steps
                    .iter()
                    .map(|step| pb::Operation {
                        operation: Some(match step {
                            Step::Grant { player, coins } => {
                                pb::operation::Operation::Grant(pb::GrantOperation {
                                    player_id: player.clone(),
                                    contents: Some(contents(&[("coins", *coins)], &[])),
                                })
                            }
                            Step::Transfer {
                                from,
                                to,
                                coins,
                                potions,
                            } => pb::operation::Operation::Transfer(pb::TransferOperation {
                                from_player_id: from.clone(),
                                to_player_id: to.clone(),
                                contents: Some(contents(
                                    &[("coins", *coins)],
                                    &[("potion", *potions)],
                                )),
                            }),
                        }),
                    })
                    .collect();
                client.execute(operations, "torture execute", key).await
            }
        }
    }

    /// What the request does to the players it names when it commits.
    fn apply_to(&self, model: &mut Model) {
        match self {
            Request::Grant {
                player,
                coins,
                gems,
                potions,
            } => {
                let p = model.open(player);
                p.add("coins", *coins);
                p.add("gems", *gems);
                p.add_item("potion", *potions);
            }
            Request::Revoke {
                player,
                coins,
                potions,
            } => {
                let p = model.open(player);
                p.add("coins", -coins);
                p.add_item("potion", -potions);
            }
            Request::Purchase { player, offer } => {
                let offer = &OFFERS[*offer];
                let p = model.open(player);
                for (currency, amount) in offer.price {
                    p.add(currency, -amount);
                }
                for (currency, amount) in offer.currencies {
                    p.add(currency, *amount);
                }
                for (item, quantity) in offer.items {
                    p.add_item(item, *quantity);
                }
            }
            Request::Upgrade {
                player,
                target_level,
            } => {
                let p = model.open(player);
                for (currency, amount) in BOOTS_LEVEL_PRICES[*target_level as usize - 1] {
                    p.add(currency, -amount);
                }
                p.boots_level = p.boots_level.max(*target_level);
            }
            Request::Consume { player, potions } => {
                model.open(player).add_item("potion", -potions);
            }
            Request::Claim { player, reward } => {
                let p = model.open(player);
                for (currency, amount) in REWARDS[*reward].1 {
                    p.add(currency, *amount);
                }
            }
            Request::Execute { steps } => {
                for step in steps {
                    match step {
                        Step::Grant { player, coins } => model.open(player).add("coins", *coins),
                        Step::Transfer {
                            from,
                            to,
                            coins,
                            potions,
                        } => {
                            let sender = model.open(from);
                            sender.add("coins", -coins);
                            sender.add_item("potion", -potions);
                            let receiver = model.open(to);
                            receiver.add("coins", *coins);
                            receiver.add_item("potion", *potions);
                        }
                    }
                }
            }
        }
    }
}

/// What the test expects one player to hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Expected {
    balances: BTreeMap<String, i64>,
    items: BTreeMap<String, i64>,
    boots_level: u32,
}

impl Expected {
    fn add(&mut self, currency: &str, amount: i64) {
        *self.balances.entry(currency.to_owned()).or_default() += amount;
    }

    fn add_item(&mut self, item: &str, quantity: i64) {
        *self.items.entry(item.to_owned()).or_default() += quantity;
    }
}

/// Expected holdings of every player that has at least one committed request.
#[derive(Default)]
struct Model {
    players: BTreeMap<String, Expected>,
}

impl Model {
    /// A player's first committed request opens them with the catalog's initial balances.
    fn open(&mut self, player: &str) -> &mut Expected {
        self.players.entry(player.to_owned()).or_insert_with(|| {
            let mut opened = Expected::default();
            for (currency, amount) in INITIAL_BALANCES {
                opened.add(currency, amount);
            }
            opened
        })
    }

    fn of(records: &[Record]) -> Model {
        let mut model = Model::default();
        for record in records {
            if let Outcome::Committed(_) = record.outcome {
                record.request.apply_to(&mut model);
            }
        }
        model
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Committed(pb::Transaction),
    Rejected(Rejection),
    /// The answer was lost (the kill cut the call off); the error is kept for the report.
    InFlight(String),
}

#[derive(Debug, Clone)]
struct Record {
    key: String,
    request: Request,
    outcome: Outcome,
}

/// Where a failure happened, printed with every assertion.
#[derive(Clone, Copy)]
struct Context {
    seed: u64,
    cycle: usize,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} (replay: COFFER_TORTURE_SEED={}), cycle {}",
            self.seed, self.seed, self.cycle
        )
    }
}

/// A `coffer` process on the torture data directory, killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    endpoint: String,
    admin_key: String,
}

/// Checkpoint intervals the cycles take turns with, so kills land while a change is only in the
/// journal, while a checkpoint is being written and between the two.
const CHECKPOINT_INTERVALS_MS: [u64; 3] = [1, 25, 1_000];

impl Server {
    fn spawn(data_dir: &Path, catalog: &Path, context: Context) -> Child {
        let checkpoint_interval_ms =
            CHECKPOINT_INTERVALS_MS[context.cycle % CHECKPOINT_INTERVALS_MS.len()];
        Command::new(env!("CARGO_BIN_EXE_coffer"))
            .arg("--redb-checkpoint-interval-ms")
            .arg(checkpoint_interval_ms.to_string())
            .arg("--listen-addr")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--catalog")
            .arg(catalog)
            .env("COFFER_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting coffer")
    }

    /// Starts a server and waits for its address and development admin key.
    fn start(data_dir: &Path, catalog: &Path, context: Context) -> Server {
        let mut child = Server::spawn(data_dir, catalog, context);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut endpoint = None;
        let mut admin_key = None;
        while admin_key.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait();
                panic!(
                    "[{context}] coffer did not start on the crashed data directory \
                     (exit {status:?}); its stderr is above"
                );
            };
            if let Some(rest) = line.strip_prefix("coffer listening on ") {
                endpoint = rest
                    .split_whitespace()
                    .next()
                    .map(|a| format!("http://{a}"));
            } else if let Some(key) = line.trim().strip_prefix("development admin key: ") {
                admin_key = Some(key.to_owned());
            }
        }
        // Keep reading: a server whose stdout is closed would fail its next print.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            endpoint: endpoint.expect("the address comes before the key"),
            admin_key: admin_key.unwrap(),
        }
    }

    async fn client(&self) -> CofferClient {
        CofferClient::connect(self.endpoint.clone())
            .await
            .unwrap()
            .with_token(&self.admin_key)
            .unwrap()
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping coffer");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a request, retrying only answers that say nothing was decided.
async fn settle(
    client: &mut CofferClient,
    record: &Record,
    context: Context,
) -> Result<pb::Transaction, Rejection> {
    for _ in 0..TRANSIENT_RETRIES_MAX {
        match tokio::time::timeout(CALL_TIMEOUT, record.request.send(client, &record.key)).await {
            Ok(Ok(transaction)) => return Ok(transaction),
            Ok(Err(ClientError::Rejected { rejection, .. })) => return Err(rejection),
            Ok(Err(error)) if error.is_transient() => {}
            Ok(Err(error)) => panic!(
                "[{context}] retrying key {:?} ({:?}) failed: {error}",
                record.key, record.request
            ),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "[{context}] key {:?} still undecided after {TRANSIENT_RETRIES_MAX} retries",
        record.key
    )
}

/// What became of the requests one kill cut off.
#[derive(Debug, Default, Clone, Copy)]
struct Resolution {
    /// Committed before the kill, answer lost: the retry returned the stored transaction.
    committed_unanswered: usize,
    /// Not committed before the kill: the retry applied them.
    applied_on_retry: usize,
    /// Refused (before the kill, answer lost, or on the retry).
    rejected: usize,
    /// Acknowledged requests replayed.
    replayed: usize,
}

impl std::ops::AddAssign for Resolution {
    fn add_assign(&mut self, other: Resolution) {
        self.committed_unanswered += other.committed_unanswered;
        self.applied_on_retry += other.applied_on_retry;
        self.rejected += other.rejected;
        self.replayed += other.replayed;
    }
}

/// Check (2): every request cut off by the last kill resolves to one outcome, the same on a
/// second retry; a sample of acknowledged requests replays its original answer.
/// `transactions_at_restart` is the ledger's length before any retry.
async fn resolve_and_replay(
    client: &CofferClient,
    records: &mut [Record],
    transactions_at_restart: u64,
    rng: &mut Rng,
    context: Context,
) -> Resolution {
    let mut resolution = Resolution::default();
    let cut_off: Vec<usize> = (0..records.len())
        .filter(|&i| matches!(records[i].outcome, Outcome::InFlight(_)))
        .collect();
    // Concurrently, like the clients that lost their answers would retry.
    let retries = cut_off.iter().map(|&i| {
        let (mut client, record) = (client.clone(), &records[i]);
        async move {
            let first = settle(&mut client, record, context).await;
            let second = settle(&mut client, record, context).await;
            (first, second)
        }
    });
    let answers = futures::future::join_all(retries).await;
    for (&i, (first, second)) in cut_off.iter().zip(answers) {
        let record = &mut records[i];
        assert_eq!(
            first, second,
            "[{context}] key {:?} (cut off by the kill: {:?}) gave two different outcomes",
            record.key, record.outcome
        );
        record.outcome = match first {
            Ok(transaction) if transaction.id <= transactions_at_restart => {
                resolution.committed_unanswered += 1;
                Outcome::Committed(transaction)
            }
            Ok(transaction) => {
                resolution.applied_on_retry += 1;
                Outcome::Committed(transaction)
            }
            Err(rejection) => {
                resolution.rejected += 1;
                Outcome::Rejected(rejection)
            }
        };
    }
    if records.is_empty() {
        return resolution;
    }
    let sample: Vec<usize> = (0..REPLAY_SAMPLE_LEN)
        .map(|_| rng.below(records.len() as u64) as usize)
        .collect();
    let replays = sample.iter().map(|&i| {
        let (mut client, record) = (client.clone(), &records[i]);
        async move { settle(&mut client, record, context).await }
    });
    let answers = futures::future::join_all(replays).await;
    for (&i, again) in sample.iter().zip(answers) {
        let record = &records[i];
        let again = match again {
            Ok(transaction) => Outcome::Committed(transaction),
            Err(rejection) => Outcome::Rejected(rejection),
        };
        assert_eq!(
            again, record.outcome,
            "[{context}] acknowledged key {:?} ({:?}) answered differently after a restart",
            record.key, record.request
        );
        resolution.replayed += 1;
    }
    resolution
}

/// How many transactions the ledger holds (ids are dense from 1, as the audit checks), found with
/// `GetTransaction` probes: cheaper than a verifier run, whose cost grows with the ledger.
async fn ledger_len(client: &CofferClient, context: Context) -> u64 {
    let mut admin = client.admin_raw();
    let mut exists = async |id: u64| -> bool {
        match admin
            .get_transaction(pb::GetTransactionRequest { transaction_id: id })
            .await
        {
            Ok(_) => true,
            Err(status) if status.code() == tonic::Code::NotFound => false,
            Err(status) => panic!("[{context}] GetTransaction {id}: {status}"),
        }
    };
    // Invariant: `low` exists (or is 0), `high` does not.
    let (mut low, mut high) = (0u64, 1u64);
    while exists(high).await {
        low = high;
        high = high.checked_mul(2).expect("a ledger shorter than 2^63");
    }
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if exists(middle).await {
            low = middle;
        } else {
            high = middle;
        }
    }
    low
}

/// The verifier's verdict; returns the number of transactions it checked.
async fn verify_clean(client: &mut CofferClient, context: Context, when: &str) -> u64 {
    let report = client
        .verify_ledger()
        .await
        .unwrap_or_else(|e| panic!("[{context}] VerifyLedger {when}: {e}"));
    assert!(
        report.clean,
        "[{context}] {when}, the verifier found {} violations: {:#?}",
        report.violation_count, report.violations
    );
    report.transactions_checked
}

/// The test's copy of the ledger, read through the players' histories (every transaction
/// touches a player). Transactions never change, so most cycles read only what is new and fetch
/// a sample of older ones again; every `FULL_READ_EVERY` cycles, and at the end, everything is
/// read again and compared with the copy.
#[derive(Default)]
struct LedgerCopy {
    transactions: BTreeMap<u64, pb::Transaction>,
    /// Per player: their newest version read, which is also how many transactions they have.
    history_lens: BTreeMap<String, u64>,
}

impl LedgerCopy {
    fn insert(&mut self, transaction: pb::Transaction, context: Context) {
        match self.transactions.get(&transaction.id) {
            Some(seen) => assert_eq!(
                seen, &transaction,
                "[{context}] transaction {} changed, or differs between two players' histories",
                transaction.id
            ),
            None => {
                self.transactions.insert(transaction.id, transaction);
            }
        }
    }

    /// Reads each player's history, newest first, down to what was read before (`full`: all).
    async fn refresh(
        &mut self,
        client: &mut CofferClient,
        players: &[String],
        full: bool,
        context: Context,
    ) {
        let mut seen_ids = BTreeSet::new();
        for player in players {
            let known = match full {
                true => 0,
                false => self.history_lens.get(player).copied().unwrap_or(0),
            };
            let (mut newest, mut read) = (None, 0u64);
            let mut token = String::new();
            'pages: for page in 0.. {
                assert!(page < HISTORY_PAGES_MAX);
                let (transactions, next) = client
                    .transactions(player, HISTORY_PAGE_LEN, &token)
                    .await
                    .unwrap_or_else(|e| panic!("[{context}] history of {player}: {e}"));
                for transaction in transactions {
                    let version = transaction
                        .account_versions
                        .iter()
                        .find(|v| v.account_id == *player)
                        .map(|v| v.version)
                        .unwrap_or_else(|| {
                            panic!(
                                "[{context}] transaction {} in {player}'s history has no version \
                                 of theirs",
                                transaction.id
                            )
                        });
                    newest.get_or_insert(version);
                    if version <= known {
                        break 'pages;
                    }
                    read += 1;
                    seen_ids.insert(transaction.id);
                    self.insert(transaction, context);
                }
                if next.is_empty() {
                    break;
                }
                token = next;
            }
            let newest = newest.unwrap_or(0);
            assert_eq!(
                newest,
                known + read,
                "[{context}] {player}'s history has a gap: versions up to {newest}, {known} read \
                 before and {read} now"
            );
            self.history_lens.insert(player.clone(), newest);
        }
        if full {
            for id in self.transactions.keys() {
                assert!(
                    seen_ids.contains(id),
                    "[{context}] transaction {id} is no longer in any history"
                );
            }
        }
    }

    /// Fetches `sample_len` known transactions by id and compares them with the copy.
    async fn recheck_sample(
        &self,
        client: &CofferClient,
        sample_len: usize,
        rng: &mut Rng,
        context: Context,
    ) {
        let Some(&last_id) = self.transactions.keys().next_back() else {
            return;
        };
        let mut admin = client.admin_raw();
        for _ in 0..sample_len {
            let id = 1 + rng.below(last_id);
            let stored = admin
                .get_transaction(pb::GetTransactionRequest { transaction_id: id })
                .await
                .unwrap_or_else(|e| panic!("[{context}] GetTransaction {id}: {e}"))
                .into_inner()
                .transaction;
            assert_eq!(
                stored.as_ref(),
                self.transactions.get(&id),
                "[{context}] transaction {id} changed"
            );
        }
    }
}

/// Checks (1), (3) and (4) and the ledger side of (2). Returns the number of transactions.
async fn audit(
    client: &mut CofferClient,
    copy: &mut LedgerCopy,
    records: &[Record],
    players: &[String],
    full: bool,
    rng: &mut Rng,
    context: Context,
) -> u64 {
    let by_key: BTreeMap<&str, &Record> = records.iter().map(|r| (r.key.as_str(), r)).collect();
    assert_eq!(by_key.len(), records.len(), "the test reused a key");
    if !full {
        copy.recheck_sample(client, REPLAY_SAMPLE_LEN, rng, context)
            .await;
    }
    copy.refresh(client, players, full, context).await;
    let ledger = &copy.transactions;
    let history_lens = &copy.history_lens;

    let transactions_checked = verify_clean(client, context, "after the retries").await;
    assert_eq!(
        transactions_checked,
        ledger.len() as u64,
        "[{context}] the players' histories hold {} transactions, the verifier checked {}",
        ledger.len(),
        transactions_checked
    );
    assert_eq!(
        ledger.keys().copied().collect::<Vec<_>>(),
        (1..=ledger.len() as u64).collect::<Vec<_>>(),
        "[{context}] transaction ids are not dense"
    );

    // Every transaction is an opening or the one application of one of the test's keys.
    let mut applied_keys = BTreeSet::new();
    let mut opened = BTreeSet::new();
    let mut posted: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut moved: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (id, transaction) in ledger {
        for posting in &transaction.postings {
            *posted
                .entry((posting.account_id.clone(), posting.currency_id.clone()))
                .or_default() += posting.amount_minor_units;
        }
        for movement in &transaction.item_movements {
            *moved
                .entry((movement.account_id.clone(), movement.item_id.clone()))
                .or_default() += movement.quantity_delta;
        }
        if transaction.kind == pb::TransactionKind::Opening as i32 {
            for account in &transaction.account_versions {
                assert!(
                    opened.insert(account.account_id.clone()),
                    "[{context}] {} was opened twice (transaction {id})",
                    account.account_id
                );
            }
            continue;
        }
        let key = transaction
            .metadata
            .get("idempotency_key")
            .unwrap_or_else(|| panic!("[{context}] transaction {id} has no idempotency key"));
        assert!(
            applied_keys.insert(key.clone()),
            "[{context}] key {key:?} was applied twice (again in transaction {id})"
        );
        let Some(record) = by_key.get(key.as_str()) else {
            panic!("[{context}] transaction {id} applies key {key:?}, which no request used")
        };
        match &record.outcome {
            Outcome::Committed(acknowledged) if acknowledged.id == *id => {}
            other => panic!(
                "[{context}] transaction {id} applies key {key:?} whose outcome was {other:?}"
            ),
        }
    }

    // (1) every acknowledged transaction is present and unchanged.
    for record in records {
        if let Outcome::Committed(acknowledged) = &record.outcome {
            match ledger.get(&acknowledged.id) {
                Some(stored) if stored == acknowledged => {}
                stored => panic!(
                    "[{context}] key {:?}: acknowledged transaction {acknowledged:?} is now {stored:?}",
                    record.key
                ),
            }
        }
    }

    // (4) conservation: all accounts sum to zero per currency.
    for currency in CURRENCIES {
        let total: i64 = posted
            .iter()
            .filter(|((_, c), _)| c == currency)
            .map(|(_, amount)| amount)
            .sum();
        assert_eq!(
            total, 0,
            "[{context}] {currency} is not conserved across all accounts"
        );
    }

    // (4) every player holds what their postings say, and what the test's own records imply.
    let model = Model::of(records);
    for player in players {
        let wallet = client
            .wallet(player)
            .await
            .unwrap_or_else(|e| panic!("[{context}] wallet of {player}: {e}"));
        let expected = model.players.get(player);
        assert_eq!(
            expected.is_some(),
            opened.contains(player),
            "[{context}] {player}: opened in the ledger vs. by the test's records"
        );
        assert_eq!(
            wallet.version, history_lens[player],
            "[{context}] {player}: wallet version vs. history length"
        );
        let Some(expected) = expected else {
            assert_eq!(wallet.version, 0, "[{context}] {player} was never opened");
            continue;
        };
        for currency in CURRENCIES {
            let held = balance(&wallet, currency);
            let from_postings = posted
                .get(&(player.clone(), currency.to_owned()))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                held, from_postings,
                "[{context}] {player}: {currency} balance vs. the sum of their postings"
            );
            assert_eq!(
                held,
                expected.balances.get(currency).copied().unwrap_or(0),
                "[{context}] {player}: {currency} balance vs. the test's records"
            );
        }
        for item in COUNTED_ITEMS {
            let held = holding(&wallet, item).0 as i64;
            let from_movements = moved
                .get(&(player.clone(), item.to_owned()))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                held, from_movements,
                "[{context}] {player}: {item} count vs. the sum of their item movements"
            );
            assert_eq!(
                held,
                expected.items.get(item).copied().unwrap_or(0),
                "[{context}] {player}: {item} count vs. the test's records"
            );
        }
        assert_eq!(
            holding(&wallet, BOOTS).1,
            expected.boots_level,
            "[{context}] {player}: boots level vs. the test's records"
        );
    }
    ledger.len() as u64
}

/// Picks a request for one of the task's players; `levels` is what the task knows of their boots.
fn pick(rng: &mut Rng, own: &[String], everyone: &[String], levels: &[u32]) -> Request {
    let index = rng.below(own.len() as u64) as usize;
    let player = own[index].clone();
    match rng.below(100) {
        0..10 => Request::Grant {
            player,
            coins: rng.range(1, 300),
            gems: rng.range(0, 3),
            potions: rng.range(0, 2),
        },
        10..16 => Request::Revoke {
            player,
            coins: rng.range(1, 200),
            potions: rng.range(0, 1),
        },
        16..46 => Request::Purchase {
            player,
            offer: rng.below(OFFERS.len() as u64) as usize,
        },
        46..56 if (levels[index] as usize) < BOOTS_LEVEL_PRICES.len() => Request::Upgrade {
            player,
            target_level: levels[index] + 1,
        },
        46..64 => Request::Consume {
            player,
            potions: rng.range(1, 2),
        },
        64..80 => Request::Claim {
            player,
            reward: rng.below(REWARDS.len() as u64) as usize,
        },
        _ => {
            let mut to = everyone[rng.below(everyone.len() as u64) as usize].clone();
            if to == player {
                to = everyone
                    [(everyone.iter().position(|p| *p == player).unwrap() + 1) % everyone.len()]
                .clone();
            }
            let mut steps = vec![Step::Transfer {
                from: player.clone(),
                to: to.clone(),
                coins: rng.range(1, 120),
                potions: rng.range(0, 1),
            }];
            // Sometimes a grant in the same transaction: all or nothing with the transfer.
            if rng.below(3) == 0 {
                steps.push(Step::Grant {
                    player: to,
                    coins: rng.range(1, 50),
                });
            }
            Request::Execute { steps }
        }
    }
}

/// One client task of one cycle.
struct Task {
    client: CofferClient,
    rng: Rng,
    /// Names its keys, with the cycle: `c{cycle}-t{task}-n{n}`.
    task: usize,
    cycle: usize,
    /// The players only this task buys, upgrades and claims for.
    own: Vec<String>,
    /// The boots level of each `own` player.
    levels: Vec<u32>,
    everyone: Arc<Vec<String>>,
    /// Set just before the kill: from then on any failure may be the kill's doing.
    killing: Arc<AtomicBool>,
}

/// One task's load until the kill cuts it off; returns its records, or why it failed.
async fn drive(task: Task) -> Result<Vec<Record>, String> {
    let Task {
        mut client,
        mut rng,
        task,
        cycle,
        own,
        mut levels,
        everyone,
        killing,
    } = task;
    let mut records = Vec::new();
    for n in 0..OPS_PER_TASK_PER_CYCLE_MAX {
        let request = pick(&mut rng, &own, &everyone, &levels);
        let key = format!("c{cycle}-t{task}-n{n}");
        let answer = tokio::time::timeout(CALL_TIMEOUT, request.send(&mut client, &key)).await;
        let outcome = match answer {
            Ok(Ok(transaction)) => Outcome::Committed(transaction),
            Ok(Err(ClientError::Rejected { rejection, .. })) => Outcome::Rejected(rejection),
            Ok(Err(error)) if error.is_transient() || killing.load(Ordering::SeqCst) => {
                Outcome::InFlight(error.to_string())
            }
            Ok(Err(error)) => return Err(format!("key {key:?} ({request:?}): {error}")),
            Err(_) => Outcome::InFlight("no answer".to_owned()),
        };
        if let (
            Outcome::Committed(_),
            Request::Upgrade {
                player,
                target_level,
            },
        ) = (&outcome, &request)
        {
            let index = own.iter().position(|p| p == player).unwrap();
            levels[index] = *target_level;
        }
        let cut_off = matches!(outcome, Outcome::InFlight(_));
        records.push(Record {
            key,
            request,
            outcome,
        });
        if cut_off {
            break;
        }
    }
    Ok(records)
}

fn boots_levels(records: &[Record]) -> BTreeMap<String, u32> {
    Model::of(records)
        .players
        .into_iter()
        .map(|(player, expected)| (player, expected.boots_level))
        .collect()
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_sigkill_and_value_is_conserved() {
    let cycles: usize = env_number("COFFER_TORTURE_CYCLES").unwrap_or(CYCLES_DEFAULT);
    let seed: u64 = env_number("COFFER_TORTURE_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    // Straight to the process stderr, past the harness capture: the seed must always be visible.
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "crash torture: {cycles} cycles, seed {seed} (replay with COFFER_TORTURE_SEED={seed})"
        );
    }
    // Kill moments; samples to re-check; each task's requests (per cycle, from stream 2 on).
    let (mut schedule, mut sampling) = (Rng::stream(seed, 0), Rng::stream(seed, 1));
    let dir = tempfile::tempdir().unwrap();
    let data_dir: PathBuf = dir.path().join("data");
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(&catalog, CATALOG_TOML).unwrap();
    let players: Vec<String> = (0..TASKS * PLAYERS_PER_TASK)
        .map(|i| format!("p{:02}-{}", i / PLAYERS_PER_TASK, i % PLAYERS_PER_TASK))
        .collect();
    let everyone = Arc::new(players.clone());

    let started = Instant::now();
    let mut records: Vec<Record> = Vec::new();
    let mut copy = LedgerCopy::default();
    let mut startup_kills = 0usize;
    let mut resolution = Resolution::default();
    let mut transactions = 0;
    // Where the time goes (reported, never asserted).
    let (mut starting, mut checking, mut loading) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for cycle in 0..=cycles {
        let context = Context { seed, cycle };
        let phase = Instant::now();
        if cycle > 0 && schedule.below(STARTUP_KILL_ONE_IN) == 0 {
            let (data_dir, catalog) = (data_dir.clone(), catalog.clone());
            let delay_ms = schedule.below(STARTUP_KILL_DELAY_MS_MAX + 1);
            tokio::task::spawn_blocking(move || {
                let mut child = Server::spawn(&data_dir, &catalog, context);
                std::thread::sleep(Duration::from_millis(delay_ms));
                child.kill().expect("SIGKILL");
                child.wait().expect("reaping coffer");
            })
            .await
            .unwrap();
            startup_kills += 1;
        }
        let server = {
            let (data_dir, catalog) = (data_dir.clone(), catalog.clone());
            tokio::task::spawn_blocking(move || Server::start(&data_dir, &catalog, context))
                .await
                .unwrap()
        };
        let mut client = server.client().await;
        starting += phase.elapsed();
        let phase = Instant::now();
        let transactions_at_restart = ledger_len(&client, context).await;
        resolution += resolve_and_replay(
            &client,
            &mut records,
            transactions_at_restart,
            &mut sampling,
            context,
        )
        .await;
        let full = cycle % FULL_READ_EVERY == 0 || cycle == cycles;
        transactions = audit(
            &mut client,
            &mut copy,
            &records,
            &players,
            full,
            &mut sampling,
            context,
        )
        .await;
        checking += phase.elapsed();
        if cycle == cycles {
            server.kill();
            break;
        }

        let phase = Instant::now();
        let levels = boots_levels(&records);
        let killing = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let own: Vec<String> =
                players[task * PLAYERS_PER_TASK..(task + 1) * PLAYERS_PER_TASK].to_vec();
            let own_levels = own
                .iter()
                .map(|p| levels.get(p).copied().unwrap_or(0))
                .collect();
            tasks.spawn(drive(Task {
                client: client.clone(),
                rng: Rng::stream(seed, 2 + (cycle * TASKS + task) as u64),
                task,
                cycle,
                own,
                levels: own_levels,
                everyone: everyone.clone(),
                killing: killing.clone(),
            }));
        }
        let kill_delay_ms = schedule.below(KILL_DELAY_MS_MAX + 1);
        tokio::time::sleep(Duration::from_millis(kill_delay_ms)).await;
        killing.store(true, Ordering::SeqCst);
        tokio::task::spawn_blocking(move || server.kill())
            .await
            .unwrap();
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(task_records) => records.extend(task_records),
                Err(failure) => panic!("[{context}] {failure}"),
            }
        }
        loading += phase.elapsed();
    }

    // The last kill left the store stopped: the offline verifier must agree with the server's.
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("verify")
        .arg("--data-dir")
        .arg(&data_dir)
        .env("COFFER_LOG", "error")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && text.contains(&format!("verifier: clean ({transactions} transactions")),
        "seed {seed}: offline verify after the last kill: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let committed = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Committed(_)))
        .count();
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "crash torture: seed {seed}: {cycles} kills during load and {startup_kills} during \
             start-up; {} requests ({committed} committed, {} rejected); cut off by a kill: {} \
             committed with the answer lost, {} applied on retry, {} refused; {} acknowledged \
             answers replayed; {transactions} transactions; every check passed in {:.1} s \
             (starting {:.1} s, checking {:.1} s, load until the kill {:.1} s)",
            records.len(),
            records.len() - committed,
            resolution.committed_unanswered,
            resolution.applied_on_retry,
            resolution.rejected,
            resolution.replayed,
            started.elapsed().as_secs_f64(),
            starting.as_secs_f64(),
            checking.as_secs_f64(),
            loading.as_secs_f64(),
        );
    }
}
