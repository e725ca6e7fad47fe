//! The state machine: given the state a batch of commands needs, the catalog and `now`, it
//! applies the commands in order and returns one outcome each plus the changes to commit.
//!
//! Storage calls [`needed`] until it returns nothing (a bounded number of rounds, as a reversal
//! names a transaction whose accounts are only known once it is loaded), then [`apply_batch`].
//! Nothing here reads a clock, a file or a socket: the same input gives the same output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use compact_str::ToCompactString;

use crate::account::AccountState;
use crate::catalog::{Amounts, Catalog, Contents, ItemKind};
use crate::command::{
    Command, ExecuteStep, IdempotencyKey, Operation, RefundPolicy, StoredOutcome,
};
use crate::ids::{AccountId, Name, SystemAccount};
use crate::ledger::{ItemMovement, Posting, Transaction, TransactionKind};
use crate::limits::{
    AMOUNT_MINOR_UNITS_MAX, BATCH_LEN_MAX, ITEM_QUANTITY_MAX, PREFETCH_ROUNDS_MAX,
};
use crate::rejection::{Rejection, RejectionCode};

/// A stored transaction and, once it has been reversed, the id of its reversal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub transaction: Arc<Transaction>,
    pub reversed_by: Option<u64>,
}

/// Keys a batch needs that have not been loaded yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefetch {
    pub accounts: BTreeSet<AccountId>,
    pub idempotency_keys: BTreeSet<IdempotencyKey>,
    pub transactions: BTreeSet<u64>,
}

impl Prefetch {
    /// True when everything the batch needs is loaded.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.idempotency_keys.is_empty() && self.transactions.is_empty()
    }
}

/// State loaded for a batch. `None` records a key that was looked up and does not exist.
/// Account states are shared with whoever loaded them: a command copies only what it changes.
#[derive(Debug, Clone, Default)]
pub struct LoadedState {
    pub accounts: BTreeMap<AccountId, Option<Arc<AccountState>>>,
    pub idempotency: BTreeMap<IdempotencyKey, Option<StoredOutcome>>,
    pub transactions: BTreeMap<u64, Option<TransactionRecord>>,
    /// The id the next transaction gets (ids start at 1 and have no gaps).
    pub next_transaction_id: u64,
}

/// Everything one batch changes, to be written in one durable commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchChanges {
    /// Final state of every account the batch changed.
    pub accounts: BTreeMap<AccountId, Arc<AccountState>>,
    /// New transactions, in ascending id order.
    pub transactions: Vec<Arc<Transaction>>,
    /// (original transaction id, reversal transaction id).
    pub reversals: Vec<(u64, u64)>,
    /// New idempotency outcomes.
    pub idempotency: Vec<(IdempotencyKey, StoredOutcome)>,
    pub next_transaction_id: u64,
}

/// The result of one command: its transaction (the original one, for a retry), or a rejection.
pub type Outcome = Result<Arc<Transaction>, Rejection>;

/// The outcomes of a batch, in command order, and the changes to commit.
#[derive(Debug, Clone)]
pub struct BatchResult {
    pub outcomes: Vec<Outcome>,
    pub changes: BatchChanges,
}

/// What is still missing from `loaded` to apply `commands`. Call until it is empty; at most
/// [`PREFETCH_ROUNDS_MAX`] rounds are ever needed.
pub fn needed(commands: &[Command], loaded: &LoadedState) -> Prefetch {
    let mut prefetch = Prefetch::default();
    for account in SystemAccount::ALL {
        let id = AccountId::system(account);
        if !loaded.accounts.contains_key(&id) {
            prefetch.accounts.insert(id);
        }
    }
    let want_account = |id: AccountId, prefetch: &mut Prefetch| {
        if !loaded.accounts.contains_key(&id) {
            prefetch.accounts.insert(id);
        }
    };
    let want_transaction = |id: u64, prefetch: &mut Prefetch| {
        if !loaded.transactions.contains_key(&id) {
            prefetch.transactions.insert(id);
        }
    };
    for command in commands {
        let key = command.effective_key();
        match loaded.idempotency.get(key.as_ref()) {
            None => {
                prefetch.idempotency_keys.insert(key.into_owned());
            }
            Some(Some(StoredOutcome { result: Ok(id), .. })) => {
                want_transaction(*id, &mut prefetch)
            }
            Some(_) => {}
        }
        for player in command.operation.players() {
            // A player's account id is the player id: look it up before allocating one.
            if !loaded.accounts.contains_key(player) {
                want_account(AccountId::player(player), &mut prefetch);
            }
        }
        if let Operation::Reverse { transaction_id } = command.operation {
            match loaded.transactions.get(&transaction_id) {
                None => want_transaction(transaction_id, &mut prefetch),
                Some(Some(record)) => {
                    for account in accounts_of(&record.transaction) {
                        want_account(account, &mut prefetch);
                    }
                }
                Some(None) => {}
            }
        }
        // A refund finds its redemption through the purchase's key, then its transaction,
        // then the accounts that transaction touched: three rounds.
        if let Operation::RefundStoreTransaction {
            platform,
            store_transaction_id,
            ..
        } = &command.operation
        {
            let key = IdempotencyKey::store(*platform, store_transaction_id);
            match loaded.idempotency.get(&key) {
                None => {
                    prefetch.idempotency_keys.insert(key);
                }
                Some(Some(StoredOutcome { result: Ok(id), .. })) => {
                    match loaded.transactions.get(id) {
                        None => want_transaction(*id, &mut prefetch),
                        Some(Some(record)) => {
                            for account in accounts_of(&record.transaction) {
                                want_account(account, &mut prefetch);
                            }
                        }
                        Some(None) => {}
                    }
                }
                Some(_) => {}
            }
        }
    }
    prefetch
}

fn accounts_of(transaction: &Transaction) -> BTreeSet<AccountId> {
    let postings = transaction.postings.iter().map(|p| p.account.clone());
    let movements = transaction.item_movements.iter().map(|m| m.account.clone());
    postings.chain(movements).collect()
}

/// Applies `commands` in order. One rejected command does not affect the others.
///
/// Panics if `loaded` lacks something [`needed`] asked for: that is a storage bug, never input.
pub fn apply_batch(
    loaded: LoadedState,
    catalog: &Catalog,
    now_unix_ms: i64,
    commands: &[Command],
) -> BatchResult {
    assert!(
        commands.len() <= BATCH_LEN_MAX,
        "batch of {} commands",
        commands.len()
    );
    // Storage guarantees this (`prepare_and_apply`); checked in debug builds only, because it
    // repeats the whole prefetch on the writer's hot path.
    debug_assert!(
        needed(commands, &loaded).is_empty(),
        "batch applied before its state was loaded"
    );
    assert!(
        loaded.next_transaction_id >= 1,
        "transaction ids start at 1"
    );
    let _ = PREFETCH_ROUNDS_MAX;

    let mut working = Working {
        catalog,
        now_unix_ms,
        accounts: loaded.accounts,
        idempotency: loaded.idempotency,
        transactions: loaded.transactions,
        changed: BTreeSet::new(),
        changes: BatchChanges {
            next_transaction_id: loaded.next_transaction_id,
            ..BatchChanges::default()
        },
    };
    let outcomes = commands
        .iter()
        .map(|command| working.apply(command))
        .collect();
    let Working {
        mut accounts,
        mut changes,
        changed,
        ..
    } = working;
    for id in changed {
        let state = accounts
            .remove(&id)
            .flatten()
            .expect("a changed account exists");
        changes.accounts.insert(id, state);
    }
    debug_assert!(changes.transactions.iter().all(|t| t.is_balanced()));
    BatchResult { outcomes, changes }
}

struct Working<'c> {
    catalog: &'c Catalog,
    now_unix_ms: i64,
    accounts: BTreeMap<AccountId, Option<Arc<AccountState>>>,
    idempotency: BTreeMap<IdempotencyKey, Option<StoredOutcome>>,
    transactions: BTreeMap<u64, Option<TransactionRecord>>,
    changed: BTreeSet<AccountId>,
    changes: BatchChanges,
}

impl Working<'_> {
    fn apply(&mut self, command: &Command) -> Outcome {
        let fingerprint = command.fingerprint();
        let key = command.effective_key();
        let previous = self.idempotency[key.as_ref()].clone();
        if let Some(stored) = previous {
            if stored.fingerprint != fingerprint
                && let Some(outcome) = self.store_replay(command, &stored)
            {
                return outcome;
            }
            if stored.fingerprint != fingerprint {
                return Err(Rejection::new(
                    RejectionCode::IdempotencyKeyReused,
                    format!(
                        "idempotency key {:?} was already used for a different request; \
                         use a new key for a new request",
                        command.idempotency_key.key
                    ),
                ));
            }
            return match stored.result {
                Err(rejection) => Err(rejection),
                Ok(id) => match self.transactions.get(&id) {
                    Some(Some(record)) => Ok(record.transaction.clone()),
                    _ => unreachable!("transaction {id} of a stored outcome was not loaded"),
                },
            };
        }

        let mut draft = Draft::new(self.catalog, &self.accounts);
        let mut reverses = None;
        let kind = match self.open_and_run(&mut draft, &command.operation) {
            Ok(kind) => kind,
            Err(rejection) => {
                self.record_rejection(command, fingerprint, &rejection);
                return Err(rejection);
            }
        };
        if let TransactionKind::Reversal { reverses: id }
        | TransactionKind::StoreRefund { reverses: id, .. } = kind
        {
            reverses = Some(id);
        }
        if let Err(rejection) = draft.check_bounds() {
            self.record_rejection(command, fingerprint, &rejection);
            return Err(rejection);
        }

        let Draft {
            touched,
            opened,
            opening_postings,
            postings,
            item_movements,
            metadata: operation_metadata,
            ..
        } = draft;
        let mut versions: BTreeMap<AccountId, u64> = BTreeMap::new();
        for (player, postings) in opened.iter().zip(opening_postings) {
            let id = self.next_id();
            versions.insert(player.clone(), 1);
            self.push_transaction(Arc::new(Transaction {
                id,
                kind: TransactionKind::Opening,
                created_at_unix_ms: self.now_unix_ms,
                postings,
                item_movements: Vec::new(),
                account_versions: BTreeMap::from([(player.clone(), 1)]),
                metadata: BTreeMap::from([(Name::const_new("caller"), Name::const_new("coffer"))]),
            }));
        }
        let id = self.next_id();
        let mut account_versions = BTreeMap::new();
        for (account, mut state) in touched {
            if !account.is_system() {
                state.version = versions.get(&account).copied().unwrap_or(state.version) + 1;
                account_versions.insert(account.clone(), state.version);
            }
            // Every account a draft touches was loaded (`needed` asked for it), so its slot
            // exists; `changed` keeps the draft's copy of the id rather than another.
            *self
                .accounts
                .get_mut(&account)
                .expect("a touched account was loaded") = Some(Arc::new(state));
            self.changed.insert(account);
        }
        let mut metadata = BTreeMap::from([
            (Name::const_new("caller"), command.caller.clone()),
            (
                Name::const_new("idempotency_key"),
                command.idempotency_key.key.clone(),
            ),
        ]);
        if !command.reason.is_empty() {
            metadata.insert(Name::const_new("reason"), command.reason.clone());
        }
        metadata.extend(operation_metadata);
        let transaction = Arc::new(Transaction {
            id,
            kind,
            created_at_unix_ms: self.now_unix_ms,
            postings,
            item_movements,
            account_versions,
            metadata,
        });
        assert!(
            transaction.is_balanced(),
            "unbalanced transaction {transaction:?}"
        );
        if let Some(original) = reverses {
            let record = self
                .transactions
                .get_mut(&original)
                .and_then(Option::as_mut);
            record.expect("reversed transaction was loaded").reversed_by = Some(id);
            self.changes.reversals.push((original, id));
        }
        self.push_transaction(Arc::clone(&transaction));
        self.record(command, fingerprint, Ok(id));
        Ok(transaction)
    }

    /// A store operation whose key (the store transaction) was used by a different request:
    /// a purchase redeemed again by its own player returns the original transaction, by another
    /// player is refused; a refund notified again (say under another policy) returns the
    /// original refund. Nothing is recorded, so nothing changes. `None` for other operations.
    fn store_replay(&self, command: &Command, stored: &StoredOutcome) -> Option<Outcome> {
        let original = match stored.result {
            Ok(id) => match self.transactions.get(&id) {
                Some(Some(record)) => record.transaction.clone(),
                _ => unreachable!("transaction {id} of a stored outcome was not loaded"),
            },
            // Store operations never store rejections; a stored one predates that rule.
            Err(ref rejection) => return Some(Err(rejection.clone())),
        };
        match &command.operation {
            Operation::RedeemReceipt {
                player_id,
                purchase,
            } => {
                if original
                    .account_versions
                    .contains_key(&AccountId::player(player_id))
                {
                    return Some(Ok(original));
                }
                Some(Err(Rejection::new(
                    RejectionCode::ReceiptAlreadyRedeemed,
                    format!(
                        "{} store transaction {:?} was already redeemed by another player (transaction {})",
                        purchase.platform, purchase.store_transaction_id, original.id
                    ),
                )))
            }
            Operation::RefundStoreTransaction { .. } => Some(Ok(original)),
            _ => None,
        }
    }

    fn record_rejection(
        &mut self,
        command: &Command,
        fingerprint: [u8; 32],
        rejection: &Rejection,
    ) {
        if command.stores_rejections() {
            self.record(command, fingerprint, Err(rejection.clone()));
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.changes.next_transaction_id;
        self.changes.next_transaction_id += 1;
        id
    }

    fn push_transaction(&mut self, transaction: Arc<Transaction>) {
        self.transactions.insert(
            transaction.id,
            Some(TransactionRecord {
                transaction: Arc::clone(&transaction),
                reversed_by: None,
            }),
        );
        self.changes.transactions.push(transaction);
    }

    fn record(&mut self, command: &Command, fingerprint: [u8; 32], result: Result<u64, Rejection>) {
        let outcome = StoredOutcome {
            fingerprint,
            result,
        };
        let key = command.effective_key();
        // `apply` looked this key up first, so its slot exists: filling it needs no copy of
        // the key (inserting one would allocate a copy only to drop it).
        let slot = self
            .idempotency
            .get_mut(key.as_ref())
            .expect("the idempotency key of an applied command was loaded");
        *slot = Some(outcome.clone());
        self.changes.idempotency.push((key.into_owned(), outcome));
    }

    fn open_and_run(
        &self,
        draft: &mut Draft<'_>,
        operation: &Operation,
    ) -> Result<TransactionKind, Rejection> {
        for player in operation.players() {
            draft.open_if_new(&AccountId::player(player))?;
        }
        self.run(draft, operation)
    }

    fn run(
        &self,
        draft: &mut Draft<'_>,
        operation: &Operation,
    ) -> Result<TransactionKind, Rejection> {
        let shop = AccountId::system(SystemAccount::Shop);
        let grants = AccountId::system(SystemAccount::Grants);
        match operation {
            Operation::Purchase {
                player_id,
                offer_id,
                expected_price,
            } => {
                let offer = self.catalog.offers.get(offer_id).ok_or_else(|| {
                    Rejection::new(
                        RejectionCode::UnknownOffer,
                        format!(
                            "no offer {offer_id:?} in catalog version {}",
                            self.catalog.version
                        ),
                    )
                })?;
                if let Some(from) = offer.available_from_unix_ms
                    && self.now_unix_ms < from
                {
                    return Err(Rejection::new(
                        RejectionCode::NotAvailable,
                        format!("offer {offer_id:?} is not available before {from} (unix ms)"),
                    ));
                }
                if let Some(until) = offer.available_until_unix_ms
                    && self.now_unix_ms >= until
                {
                    return Err(Rejection::new(
                        RejectionCode::NotAvailable,
                        format!("offer {offer_id:?} ended at {until} (unix ms)"),
                    ));
                }
                check_price(expected_price, &offer.price, || {
                    format!("offer {offer_id:?}")
                })?;
                let player = AccountId::player(player_id);
                let bought = draft
                    .account(&player)
                    .offer_purchases
                    .get(offer_id)
                    .copied()
                    .unwrap_or(0);
                if let Some(limit) = offer.limit_per_player
                    && bought >= limit
                {
                    return Err(Rejection::new(
                        RejectionCode::LimitReached,
                        format!(
                            "offer {offer_id:?} can be bought {limit} time(s) per player, and this player has bought it {bought} time(s)"
                        ),
                    ));
                }
                draft.transfer_amounts(&player, &shop, &offer.price)?;
                draft.transfer_contents(&shop, &player, &offer.grants)?;
                set_keyed(
                    &mut draft.account(&player).offer_purchases,
                    offer_id,
                    bought + 1,
                );
                Ok(TransactionKind::Purchase {
                    offer_id: offer_id.clone(),
                })
            }
            Operation::Upgrade {
                player_id,
                item_id,
                target_level,
                expected_price,
            } => {
                let item = self
                    .catalog
                    .items
                    .get(item_id)
                    .ok_or_else(|| unknown_item(item_id))?;
                let ItemKind::Upgradable { levels } = &item.kind else {
                    return Err(Rejection::new(
                        RejectionCode::NotUpgradable,
                        format!("item {item_id:?} has no levels"),
                    ));
                };
                let player = AccountId::player(player_id);
                let level = draft.account(&player).holding(item_id).level;
                let level_max = levels.len() as u32;
                if level >= level_max {
                    return Err(Rejection::new(
                        RejectionCode::MaxLevelReached,
                        format!("item {item_id:?} is at its top level {level_max}"),
                    ));
                }
                if *target_level != level + 1 {
                    return Err(Rejection::new(
                        RejectionCode::LevelChanged,
                        format!(
                            "item {item_id:?} is at level {level}; the next level is {}, not {target_level}",
                            level + 1
                        ),
                    ));
                }
                let price = &levels[level as usize];
                check_price(expected_price, price, || {
                    format!("level {target_level} of {item_id:?}")
                })?;
                draft.transfer_amounts(&player, &shop, price)?;
                let quantity_delta = if level == 0 { 1 } else { 0 };
                draft.move_item(&player, item_id, quantity_delta, Some(*target_level))?;
                Ok(TransactionKind::Upgrade {
                    item_id: item_id.clone(),
                    level: *target_level,
                })
            }
            Operation::Consume {
                player_id,
                item_id,
                quantity,
            } => {
                let item = self
                    .catalog
                    .items
                    .get(item_id)
                    .ok_or_else(|| unknown_item(item_id))?;
                if matches!(item.kind, ItemKind::Upgradable { .. }) {
                    return Err(Rejection::new(
                        RejectionCode::NotConsumable,
                        format!("item {item_id:?} is upgradable and cannot be consumed"),
                    ));
                }
                let player = AccountId::player(player_id);
                draft.move_item(&player, item_id, -quantity_i64(*quantity), None)?;
                Ok(TransactionKind::Consume {
                    item_id: item_id.clone(),
                })
            }
            Operation::ClaimReward {
                player_id,
                reward_id,
            } => {
                let reward = self.catalog.rewards.get(reward_id).ok_or_else(|| {
                    Rejection::new(
                        RejectionCode::UnknownReward,
                        format!(
                            "no reward {reward_id:?} in catalog version {}",
                            self.catalog.version
                        ),
                    )
                })?;
                let player = AccountId::player(player_id);
                let window_start = self.now_unix_ms - reward.rate_limit_window_ms;
                let mut claims = draft
                    .account(&player)
                    .reward_claims_unix_ms
                    .get(reward_id)
                    .cloned()
                    .unwrap_or_default();
                claims.retain(|at| *at > window_start);
                let limit = reward.rate_limit_count as usize;
                if claims.len() >= limit {
                    let oldest_blocking = claims[claims.len() - limit];
                    let mut rejection = Rejection::new(
                        RejectionCode::RateLimited,
                        format!(
                            "reward {reward_id:?} may be claimed {limit} time(s) per {} s",
                            reward.rate_limit_window_ms / 1000
                        ),
                    );
                    rejection.retry_after_ms =
                        Some(oldest_blocking + reward.rate_limit_window_ms - self.now_unix_ms);
                    return Err(rejection);
                }
                claims.push(self.now_unix_ms);
                draft.transfer_contents(
                    &AccountId::system(SystemAccount::Rewards),
                    &player,
                    &reward.grants,
                )?;
                draft
                    .account(&player)
                    .reward_claims_unix_ms
                    .insert(reward_id.clone(), claims);
                Ok(TransactionKind::RewardClaim {
                    reward_id: reward_id.clone(),
                })
            }
            Operation::Grant {
                player_id,
                contents,
            } => {
                draft.transfer_contents(&grants, &AccountId::player(player_id), contents)?;
                Ok(TransactionKind::Grant)
            }
            Operation::Revoke {
                player_id,
                contents,
            } => {
                draft.transfer_contents(&AccountId::player(player_id), &grants, contents)?;
                Ok(TransactionKind::Revoke)
            }
            Operation::Execute { steps } => {
                for step in steps {
                    match step {
                        ExecuteStep::Grant {
                            player_id,
                            contents,
                        } => draft.transfer_contents(
                            &grants,
                            &AccountId::player(player_id),
                            contents,
                        )?,
                        ExecuteStep::Revoke {
                            player_id,
                            contents,
                        } => draft.transfer_contents(
                            &AccountId::player(player_id),
                            &grants,
                            contents,
                        )?,
                        ExecuteStep::Transfer {
                            from_player_id,
                            to_player_id,
                            contents,
                        } => draft.transfer_contents(
                            &AccountId::player(from_player_id),
                            &AccountId::player(to_player_id),
                            contents,
                        )?,
                    }
                }
                Ok(TransactionKind::Execute)
            }
            Operation::RedeemReceipt {
                player_id,
                purchase,
            } => {
                let platform = purchase.platform;
                let product = self
                    .catalog
                    .store_product(platform, &purchase.product_id)
                    .ok_or_else(|| {
                        Rejection::new(
                            RejectionCode::UnknownProduct,
                            format!(
                                "no store product {:?} for platform {platform} in catalog version {}; add [store_products.{platform}.\"{}\"]",
                                purchase.product_id, self.catalog.version, purchase.product_id
                            ),
                        )
                    })?;
                let grants = multiply(&product.grants, purchase.quantity)?;
                let store = AccountId::system(SystemAccount::Store(platform));
                draft.transfer_contents(&store, &AccountId::player(player_id), &grants)?;
                draft.note("platform", platform.name());
                draft.note("store_transaction_id", &purchase.store_transaction_id);
                draft.note("product_id", &purchase.product_id);
                draft.note("quantity", purchase.quantity.to_compact_string());
                draft.note("environment", &purchase.environment);
                draft.note(
                    "purchased_at_unix_ms",
                    purchase.purchased_at_unix_ms.to_compact_string(),
                );
                if let Some(price) = purchase.price_minor_units {
                    draft.note("price_minor_units", price.to_compact_string());
                }
                if let Some(currency) = &purchase.currency_code {
                    draft.note("price_currency", currency);
                }
                Ok(TransactionKind::StoreRedemption {
                    platform,
                    store_transaction_id: purchase.store_transaction_id.clone(),
                    product_id: purchase.product_id.clone(),
                })
            }
            Operation::RefundStoreTransaction {
                platform,
                store_transaction_id,
                kind,
                policy,
            } => {
                let not_found = || {
                    Rejection::new(
                        RejectionCode::StoreTransactionNotFound,
                        format!(
                            "{platform} store transaction {store_transaction_id:?} was never redeemed"
                        ),
                    )
                };
                let key = IdempotencyKey::store(*platform, store_transaction_id);
                let Some(Some(StoredOutcome { result: Ok(id), .. })) = self.idempotency.get(&key)
                else {
                    return Err(not_found());
                };
                let Some(Some(record)) = self.transactions.get(id) else {
                    return Err(not_found());
                };
                if let Some(by) = record.reversed_by {
                    return Err(Rejection::new(
                        RejectionCode::AlreadyReversed,
                        format!(
                            "the redemption of {platform} store transaction {store_transaction_id:?} (transaction {id}) was reversed by transaction {by}"
                        ),
                    ));
                }
                let original = &record.transaction;
                debug_assert!(matches!(
                    original.kind,
                    TransactionKind::StoreRedemption { .. }
                ));
                let store = AccountId::system(SystemAccount::Store(*platform));
                // Currencies: back to the store account, in full under both policies; only
                // claw-back lets the balance end below zero (checked in `check_bounds`).
                for posting in &original.postings {
                    if posting.account.is_system() {
                        continue;
                    }
                    draft.post(
                        &posting.account,
                        &posting.currency,
                        -posting.amount_minor_units,
                    )?;
                    draft.post(&store, &posting.currency, posting.amount_minor_units)?;
                }
                for movement in &original.item_movements {
                    if movement.account.is_system() || movement.quantity_delta <= 0 {
                        continue;
                    }
                    let held = draft.account(&movement.account).holding(&movement.item);
                    let take = match policy {
                        // Items cannot be owed: take back what is still held.
                        RefundPolicy::ClawBack => {
                            movement.quantity_delta.min(quantity_i64(held.quantity))
                        }
                        RefundPolicy::ReverseIfPossible => movement.quantity_delta,
                    };
                    if take > 0 {
                        let level = Some(held.level).filter(|l| *l > 0);
                        draft.move_item(&movement.account, &movement.item, -take, level)?;
                    }
                }
                draft.negative_allowed = *policy == RefundPolicy::ClawBack;
                draft.note("platform", platform.name());
                draft.note("store_transaction_id", store_transaction_id);
                draft.note("refund_kind", kind.name());
                draft.note("refund_policy", policy.name());
                Ok(TransactionKind::StoreRefund {
                    platform: *platform,
                    store_transaction_id: store_transaction_id.clone(),
                    reverses: *id,
                    policy: *policy,
                })
            }
            Operation::Reverse { transaction_id } => {
                let record = match self.transactions.get(transaction_id) {
                    Some(Some(record)) => record,
                    _ => {
                        return Err(Rejection::new(
                            RejectionCode::TransactionNotFound,
                            format!("no transaction {transaction_id}"),
                        ));
                    }
                };
                if let Some(by) = record.reversed_by {
                    return Err(Rejection::new(
                        RejectionCode::AlreadyReversed,
                        format!("transaction {transaction_id} was reversed by transaction {by}"),
                    ));
                }
                let original = &record.transaction;
                if let TransactionKind::Reversal { .. } | TransactionKind::StoreRefund { .. } =
                    original.kind
                {
                    return Err(Rejection::new(
                        RejectionCode::NotReversible,
                        format!(
                            "transaction {transaction_id} is a {}; reversals and store refunds are final",
                            original.kind.name()
                        ),
                    ));
                }
                for posting in &original.postings {
                    draft.post(
                        &posting.account,
                        &posting.currency,
                        -posting.amount_minor_units,
                    )?;
                }
                for movement in original.item_movements.iter().rev() {
                    let held = draft.account(&movement.account).holding(&movement.item);
                    if held.level != movement.level_after {
                        return Err(Rejection::new(
                            RejectionCode::NotReversible,
                            format!(
                                "item {:?} of {} is at level {}, no longer at level {} set by transaction {transaction_id}",
                                movement.item, movement.account, held.level, movement.level_after
                            ),
                        ));
                    }
                    draft.move_item(
                        &movement.account,
                        &movement.item,
                        -movement.quantity_delta,
                        Some(movement.level_before),
                    )?;
                }
                if let TransactionKind::Purchase { offer_id } = &original.kind {
                    for account in original.account_versions.keys() {
                        let counts = &mut draft.account(account).offer_purchases;
                        if let Some(count) = counts.get_mut(offer_id) {
                            *count = count.saturating_sub(1);
                            if *count == 0 {
                                counts.remove(offer_id);
                            }
                        }
                    }
                }
                Ok(TransactionKind::Reversal {
                    reverses: *transaction_id,
                })
            }
        }
    }
}

fn unknown_item(item_id: &str) -> Rejection {
    Rejection::new(
        RejectionCode::UnknownItem,
        format!("no item {item_id:?} in the catalog"),
    )
}

/// `contents` times `quantity` units, refused when an amount leaves the representable range.
fn multiply(contents: &Contents, quantity: u32) -> Result<Contents, Rejection> {
    let overflow = || {
        Rejection::new(
            RejectionCode::AmountOverflow,
            format!("{quantity} units of the product grant more than can be represented"),
        )
    };
    let mut result = Contents::default();
    for (currency, amount) in &contents.currencies {
        let total = amount
            .checked_mul(i64::from(quantity))
            .filter(|t| *t <= AMOUNT_MINOR_UNITS_MAX)
            .ok_or_else(overflow)?;
        result.currencies.insert(currency.clone(), total);
    }
    for (item, count) in &contents.items {
        let total = count
            .checked_mul(u64::from(quantity))
            .filter(|t| *t <= ITEM_QUANTITY_MAX)
            .ok_or_else(overflow)?;
        result.items.insert(item.clone(), total);
    }
    Ok(result)
}

/// Sets `map[key]`, copying the key only when it is new: `BTreeMap::insert` wants an owned key
/// even to replace a value, and a purchase replaces up to four (two balances, the item held and
/// the offer's purchase count).
fn set_keyed<V>(map: &mut BTreeMap<Name, V>, key: &str, value: V) {
    match map.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            map.insert(Name::new(key), value);
        }
    }
}

fn quantity_i64(quantity: u64) -> i64 {
    // Quantities are bounded by ITEM_QUANTITY_MAX at the edge; saturate rather than wrap if not.
    i64::try_from(quantity).unwrap_or(i64::MAX)
}

/// `what` names the priced thing for the rejection; built only when the price differs.
fn check_price(
    expected: &Amounts,
    actual: &Amounts,
    what: impl FnOnce() -> String,
) -> Result<(), Rejection> {
    if expected == actual {
        return Ok(());
    }
    Err(Rejection::new(
        RejectionCode::PriceChanged,
        format!(
            "the price of {} is {}, the request quoted {}",
            what(),
            show_amounts(actual),
            show_amounts(expected)
        ),
    ))
}

fn show_amounts(amounts: &Amounts) -> String {
    if amounts.is_empty() {
        return "nothing".to_owned();
    }
    let parts: Vec<String> = amounts.iter().map(|(c, a)| format!("{a} {c}")).collect();
    parts.join(" + ")
}

/// The effects of one command, applied to copies of the accounts it touches, so a rejection
/// leaves the batch's working state as it was.
struct Draft<'w> {
    catalog: &'w Catalog,
    base: &'w BTreeMap<AccountId, Option<Arc<AccountState>>>,
    touched: BTreeMap<AccountId, AccountState>,
    /// Players that first appear in this command, and the postings of their opening balances.
    opened: Vec<AccountId>,
    opening_postings: Vec<Vec<Posting>>,
    postings: Vec<Posting>,
    item_movements: Vec<ItemMovement>,
    /// Context the operation adds to the transaction's metadata (store ids, prices).
    metadata: BTreeMap<Name, Name>,
    /// Set only by a claw-back refund: player balances may end below zero.
    negative_allowed: bool,
}

impl<'w> Draft<'w> {
    fn new(catalog: &'w Catalog, base: &'w BTreeMap<AccountId, Option<Arc<AccountState>>>) -> Self {
        Draft {
            catalog,
            base,
            touched: BTreeMap::new(),
            opened: Vec::new(),
            opening_postings: Vec::new(),
            postings: Vec::new(),
            item_movements: Vec::new(),
            metadata: BTreeMap::new(),
            negative_allowed: false,
        }
    }

    fn account(&mut self, id: &AccountId) -> &mut AccountState {
        if !self.touched.contains_key(id) {
            let base = self.base;
            let existing = base
                .get(id)
                .unwrap_or_else(|| panic!("account {id} was not loaded"));
            // Players that do not exist yet were opened before the operation ran.
            debug_assert!(
                existing.is_some() || id.is_system(),
                "account {id} used before it was opened"
            );
            let copy = existing.as_deref().cloned().unwrap_or_default();
            self.touched.insert(id.clone(), copy);
        }
        self.touched.get_mut(id).expect("inserted above")
    }

    /// Adds `key = value` to the context this operation records in its transaction's metadata.
    fn note(&mut self, key: &'static str, value: impl Into<Name>) {
        self.metadata.insert(Name::const_new(key), value.into());
    }

    /// A player's first appearance: initial balances from `system:grants`, recorded as their own
    /// transaction ahead of the command's.
    fn open_if_new(&mut self, player: &AccountId) -> Result<(), Rejection> {
        if self.touched.contains_key(player) || matches!(self.base.get(player), Some(Some(_))) {
            return Ok(());
        }
        self.touched.insert(player.clone(), AccountState::default());
        let command_postings = std::mem::take(&mut self.postings);
        let result = self.post_opening_balances(player);
        let opening_postings = std::mem::replace(&mut self.postings, command_postings);
        result?;
        self.opened.push(player.clone());
        self.opening_postings.push(opening_postings);
        Ok(())
    }

    fn post_opening_balances(&mut self, player: &AccountId) -> Result<(), Rejection> {
        let grants = AccountId::system(SystemAccount::Grants);
        let catalog = self.catalog;
        for currency in catalog.currencies.values() {
            let amount = currency.initial_balance_minor_units;
            if amount > 0 {
                self.post(&grants, &currency.id, -amount)?;
                self.post(player, &currency.id, amount)?;
            }
        }
        Ok(())
    }

    fn post(&mut self, account: &AccountId, currency: &str, amount: i64) -> Result<(), Rejection> {
        if !self.catalog.currencies.contains_key(currency) {
            return Err(Rejection::new(
                RejectionCode::UnknownCurrency,
                format!("no currency {currency:?} in the catalog"),
            ));
        }
        let state = self.account(account);
        let balance = state.balance(currency);
        let next = balance.checked_add(amount).ok_or_else(|| {
            Rejection::new(
                RejectionCode::AmountOverflow,
                format!("balance of {currency} on {account} would overflow"),
            )
        })?;
        if next == 0 {
            state.balances.remove(currency);
        } else {
            set_keyed(&mut state.balances, currency, next);
        }
        self.postings.push(Posting {
            account: account.clone(),
            currency: Name::new(currency),
            amount_minor_units: amount,
        });
        Ok(())
    }

    fn transfer_amounts(
        &mut self,
        from: &AccountId,
        to: &AccountId,
        amounts: &Amounts,
    ) -> Result<(), Rejection> {
        for (currency, amount) in amounts {
            self.post(from, currency, -amount)?;
            self.post(to, currency, *amount)?;
        }
        Ok(())
    }

    fn transfer_contents(
        &mut self,
        from: &AccountId,
        to: &AccountId,
        contents: &Contents,
    ) -> Result<(), Rejection> {
        self.transfer_amounts(from, to, &contents.currencies)?;
        for (item_id, quantity) in &contents.items {
            let quantity = quantity_i64(*quantity);
            let mut level = None;
            if !from.is_system() {
                level = Some(self.account(from).holding(item_id).level);
                self.move_item(from, item_id, -quantity, None)?;
            }
            if !to.is_system() {
                self.move_item(to, item_id, quantity, level.filter(|l| *l > 0))?;
            }
        }
        Ok(())
    }

    /// Adds `quantity_delta` of an item to a player. `level_after` sets the level; without it an
    /// upgradable item that is held is at least at level 1.
    fn move_item(
        &mut self,
        account: &AccountId,
        item_id: &str,
        quantity_delta: i64,
        level_after: Option<u32>,
    ) -> Result<(), Rejection> {
        debug_assert!(!account.is_system(), "system accounts hold no items");
        let item = self
            .catalog
            .items
            .get(item_id)
            .ok_or_else(|| unknown_item(item_id))?;
        let quantity_max = item.quantity_max();
        let upgradable = matches!(item.kind, ItemKind::Upgradable { .. });
        let state = self.account(account);
        let before = state.holding(item_id);
        let quantity = i128::from(before.quantity) + i128::from(quantity_delta);
        if quantity < 0 {
            return Err(Rejection::new(
                RejectionCode::InsufficientItems,
                format!(
                    "{account} holds {} of item {item_id:?}, {} needed",
                    before.quantity, -quantity_delta
                ),
            ));
        }
        if quantity > i128::from(quantity_max) {
            return Err(Rejection::new(
                RejectionCode::StackLimitExceeded,
                format!(
                    "{account} would hold {quantity} of item {item_id:?}; at most {quantity_max} may be held"
                ),
            ));
        }
        let quantity = quantity as u64;
        let level = match (quantity, level_after) {
            (0, _) => 0,
            (_, Some(level)) => level,
            (_, None) if upgradable => before.level.max(1),
            (_, None) => 0,
        };
        if quantity == 0 {
            state.items.remove(item_id);
        } else {
            set_keyed(
                &mut state.items,
                item_id,
                crate::account::ItemHolding { quantity, level },
            );
        }
        self.item_movements.push(ItemMovement {
            account: account.clone(),
            item: Name::new(item_id),
            quantity_delta,
            level_before: before.level,
            level_after: level,
        });
        Ok(())
    }

    /// Every player balance this command posted to must end within 0..=cap.
    fn check_bounds(&self) -> Result<(), Rejection> {
        let posted: BTreeSet<(&AccountId, &str)> = self
            .postings
            .iter()
            .map(|p| (&p.account, p.currency.as_str()))
            .collect();
        for (account, currency) in posted {
            if account.is_system() {
                continue;
            }
            let balance = self.touched[account].balance(currency);
            // A balance below zero is a claw-back's debt. Other commands may leave it as it is
            // or raise it, never lower it (nor take a non-negative balance below zero): the
            // verifier checks the same rule over the ledger.
            let before = match self.base.get(account) {
                Some(Some(state)) => state.balance(currency),
                _ => 0,
            };
            if balance < 0 && balance < before && !self.negative_allowed {
                return Err(Rejection::new(
                    RejectionCode::InsufficientFunds,
                    format!(
                        "{account} is short by {} {currency} (minor units)",
                        -balance
                    ),
                ));
            }
            let cap = self.catalog.balance_cap(currency);
            if balance > cap {
                return Err(Rejection::new(
                    RejectionCode::CapExceeded,
                    format!(
                        "{account} would hold {balance} {currency}; the cap is {cap} (minor units)"
                    ),
                ));
            }
        }
        Ok(())
    }
}
