//! The ledger verifier: replays every transaction and compares the result with the stored
//! accounts. Storage feeds it transactions in id order and then every account, so it works in
//! one pass over a database of any size (memory grows with the number of accounts).
//!
//! Player balances stay within `0..=cap`, with one exception: a store refund under the
//! claw-back policy takes back what the purchase granted even if it was spent, leaving a debt
//! (a negative balance). The replay checks that every transaction that lowers a player balance
//! below zero is such a claw-back, and an account may hold a negative balance only in a
//! currency a claw-back took below zero.

use std::collections::{BTreeMap, BTreeSet};

use crate::account::{AccountState, ItemHolding};
use crate::catalog::Catalog;
use crate::command::RefundPolicy;
use crate::ids::{AccountId, CurrencyId, ItemId};
use crate::ledger::{Transaction, TransactionKind};

/// The most violations a report lists; the count is exact beyond it.
pub const VIOLATIONS_LISTED_MAX: usize = 100;

/// What the verifier found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub transactions_checked: u64,
    pub accounts_checked: u64,
    pub violation_count: u64,
    /// The first [`VIOLATIONS_LISTED_MAX`] violations, each a sentence naming what is wrong.
    pub violations: Vec<String>,
    /// Sum over all stored accounts per currency (zero when the ledger is sound).
    pub totals_minor_units: BTreeMap<CurrencyId, i128>,
}

impl VerifyReport {
    /// True when no invariant is broken.
    pub fn is_clean(&self) -> bool {
        self.violation_count == 0
    }
}

#[derive(Default)]
struct Replayed {
    balances: BTreeMap<CurrencyId, i128>,
    /// Currencies a claw-back refund left below zero: the only way a player balance may be
    /// negative.
    clawed_back: BTreeSet<CurrencyId>,
    items: BTreeMap<ItemId, ItemHolding>,
    version: u64,
}

/// Feed with [`Verifier::transaction`] in id order, then [`Verifier::account`] for every stored
/// account, then [`Verifier::finish`].
pub struct Verifier<'c> {
    catalog: &'c Catalog,
    replayed: BTreeMap<AccountId, Replayed>,
    seen_accounts: BTreeSet<AccountId>,
    report: VerifyReport,
}

impl<'c> Verifier<'c> {
    /// A verifier checking caps against `catalog`.
    pub fn new(catalog: &'c Catalog) -> Self {
        Verifier {
            catalog,
            replayed: BTreeMap::new(),
            seen_accounts: BTreeSet::new(),
            report: VerifyReport::default(),
        }
    }

    fn violation(&mut self, message: String) {
        self.report.violation_count += 1;
        if self.report.violations.len() < VIOLATIONS_LISTED_MAX {
            self.report.violations.push(message);
        }
    }

    /// Replays one transaction. Ids must be 1, 2, 3, … with no gap.
    pub fn transaction(&mut self, transaction: &Transaction) {
        let expected_id = self.report.transactions_checked + 1;
        self.report.transactions_checked += 1;
        if transaction.id != expected_id {
            self.violation(format!(
                "transaction id {} where {expected_id} was expected",
                transaction.id
            ));
        }
        for (currency, sum) in transaction.sums_per_currency() {
            if sum != 0 {
                self.violation(format!(
                    "transaction {} postings of {currency} sum to {sum}, not 0",
                    transaction.id
                ));
            }
        }
        let claw_back = matches!(
            transaction.kind,
            TransactionKind::StoreRefund {
                policy: RefundPolicy::ClawBack,
                ..
            }
        );
        let mut net: BTreeMap<(&AccountId, &str), i128> = BTreeMap::new();
        for posting in &transaction.postings {
            let account = self.replayed.entry(posting.account.clone()).or_default();
            *account
                .balances
                .entry(posting.currency.clone())
                .or_default() += i128::from(posting.amount_minor_units);
            *net.entry((&posting.account, posting.currency.as_str()))
                .or_default() += i128::from(posting.amount_minor_units);
        }
        // Only a claw-back may lower a player balance below zero; any other transaction that
        // lowers one must leave it at zero or above (the core's rule in `check_bounds`).
        let mut balance_errors = Vec::new();
        for ((account_id, currency), amount) in net {
            if account_id.is_system() || amount >= 0 {
                continue;
            }
            let account = self.replayed.entry(account_id.clone()).or_default();
            let balance = account.balances.get(currency).copied().unwrap_or(0);
            if balance >= 0 {
                continue;
            }
            if claw_back {
                account.clawed_back.insert(CurrencyId::new(currency));
            } else {
                balance_errors.push(format!(
                    "transaction {} ({}) leaves {account_id} with {balance} {currency}; only a claw-back may",
                    transaction.id,
                    transaction.kind.name()
                ));
            }
        }
        for error in balance_errors {
            self.violation(error);
        }
        let mut movement_errors = Vec::new();
        for movement in &transaction.item_movements {
            let account = self.replayed.entry(movement.account.clone()).or_default();
            let holding = account.items.entry(movement.item.clone()).or_default();
            if holding.level != movement.level_before {
                movement_errors.push(format!(
                    "transaction {} moves item {} of {} from level {}, replay has level {}",
                    transaction.id,
                    movement.item,
                    movement.account,
                    movement.level_before,
                    holding.level
                ));
            }
            let quantity = i128::from(holding.quantity) + i128::from(movement.quantity_delta);
            if quantity < 0 {
                movement_errors.push(format!(
                    "transaction {} leaves {} with {quantity} of item {}",
                    transaction.id, movement.account, movement.item
                ));
            }
            holding.quantity = quantity.max(0) as u64;
            holding.level = movement.level_after;
        }
        for (account_id, version) in &transaction.account_versions {
            let account = self.replayed.entry(account_id.clone()).or_default();
            if *version != account.version + 1 {
                movement_errors.push(format!(
                    "transaction {} sets {account_id} to version {version}, replay is at version {}",
                    transaction.id, account.version
                ));
            }
            account.version = *version;
        }
        for error in movement_errors {
            self.violation(error);
        }
    }

    /// Compares one stored account with its replay and checks its bounds.
    pub fn account(&mut self, id: &AccountId, state: &AccountState) {
        self.report.accounts_checked += 1;
        self.seen_accounts.insert(id.clone());
        let replayed = self.replayed.remove(id).unwrap_or_default();
        let mut errors = Vec::new();
        for (currency, balance) in &state.balances {
            *self
                .report
                .totals_minor_units
                .entry(currency.clone())
                .or_default() += i128::from(*balance);
            if !id.is_system() {
                let cap = self.catalog.balance_cap(currency);
                let debt = *balance < 0 && replayed.clawed_back.contains(currency);
                if (*balance < 0 && !debt) || *balance > cap {
                    errors.push(format!(
                        "{id} holds {balance} {currency}, outside 0..={cap}"
                    ));
                }
            }
        }
        let stored: BTreeMap<&str, i128> = state
            .balances
            .iter()
            .map(|(c, b)| (c.as_str(), i128::from(*b)))
            .filter(|(_, b)| *b != 0)
            .collect();
        let replay: BTreeMap<&str, i128> = replayed
            .balances
            .iter()
            .map(|(c, b)| (c.as_str(), *b))
            .filter(|(_, b)| *b != 0)
            .collect();
        if stored != replay {
            errors.push(format!(
                "{id} balances {stored:?} differ from the ledger replay {replay:?}"
            ));
        }
        let replay_items: BTreeMap<&ItemId, &ItemHolding> = replayed
            .items
            .iter()
            .filter(|(_, h)| h.quantity > 0)
            .collect();
        let stored_items: BTreeMap<&ItemId, &ItemHolding> = state.items.iter().collect();
        if stored_items != replay_items {
            errors.push(format!(
                "{id} items {stored_items:?} differ from the ledger replay {replay_items:?}"
            ));
        }
        if state.version != replayed.version {
            errors.push(format!(
                "{id} is at version {}, the ledger replay at {}",
                state.version, replayed.version
            ));
        }
        for error in errors {
            self.violation(error);
        }
    }

    /// Accounts that only the ledger knows about, and per-currency totals, then the report.
    pub fn finish(mut self) -> VerifyReport {
        let missing: Vec<AccountId> = std::mem::take(&mut self.replayed)
            .into_iter()
            .filter(|(_, r)| {
                r.balances.values().any(|b| *b != 0) || r.items.values().any(|h| h.quantity > 0)
            })
            .map(|(id, _)| id)
            .collect();
        for id in missing {
            self.violation(format!("{id} has ledger entries but no stored account"));
        }
        let totals: Vec<(CurrencyId, i128)> = self
            .report
            .totals_minor_units
            .iter()
            .filter(|(_, t)| **t != 0)
            .map(|(c, t)| (c.clone(), *t))
            .collect();
        for (currency, total) in totals {
            self.violation(format!(
                "{currency} sums to {total} over all accounts, not 0"
            ));
        }
        self.report
    }
}
