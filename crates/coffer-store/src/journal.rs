//! The redb store's write path in two steps. A batch is acknowledged once one journal record
//! (its transactions, account states, reversals and idempotency outcomes) is durable in the
//! journal file: a single append under a sequential key, whatever the batch touched. Its changes
//! then live in memory, in the [`Overlay`], until a checkpoint folds them into the indexed tables
//! of the ledger file in one large write, where rows with random keys (accounts, history,
//! idempotency) that many batches touched share their page writes.
//!
//! Reads look at the overlay first, then at the ledger file; recovery folds the journal records
//! after the last checkpoint into the ledger file before anything is served.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque, btree_map};
use std::ops::RangeBounds;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use coffer_core::{
    AccountId, AccountState, BatchChanges, IdempotencyKey, StoredOutcome, Transaction,
};
use serde::Deserialize;

use crate::StoreError;
use crate::record::{decode, encode, encode_into};

/// Changes (transactions + idempotency outcomes + account states) a generation holds before the
/// writer freezes it for a checkpoint, while generations are not stretched; a stretched one may
/// hold as many times more as its age limit is longer (see [`generation_weight_limit`]).
/// Larger generations share more page writes per checkpoint and cost more memory (several
/// hundred bytes per purchase: its encoded transaction, ≈ 140 bytes, and account state, ≈ 30
/// bytes, and the map entries and keys around them) and a longer recovery. Sized so that the age
/// limit, not this bound, ends a generation at peak load (≈ 20k purchases/s × 3 changes × 4 s);
/// bulk loads (growing the data by `Execute`) reach it first.
pub const GENERATION_WEIGHT_MAX: usize = 262_144;

/// How many times the checkpoint interval a generation may stay open at most.
pub const GENERATION_STRETCH_MAX: u32 = 8;

/// A checkpoint that wrote more page bytes than this per change it folded in was rewriting
/// leaves that few of its changes shared: the next generation stays open twice as long (up to
/// [`GENERATION_STRETCH_MAX`] times the interval). At a million players the tables are so large
/// that a 4-s generation's rows land on nearly as many leaves as there are rows, and a
/// checkpoint rewrites most of the tables whatever its size: 1–1.5 KiB per change measured,
/// against 0.1–0.4 KiB with ten thousand players.
pub const STRETCH_ABOVE_BYTES_PER_CHANGE: u64 = 512;

/// Below this many page bytes per change, checkpoints share their pages well, and generations
/// shrink back toward the interval (less memory, shorter recovery).
pub const SHRINK_BELOW_BYTES_PER_CHANGE: u64 = 128;

/// The changes a generation may hold with this age limit: [`GENERATION_WEIGHT_MAX`] scaled by
/// how far the limit is stretched beyond the interval, so memory grows only where stretching
/// pays for it.
pub fn generation_weight_limit(age_limit: Duration, interval: Duration) -> usize {
    let stretch = (age_limit.as_millis() / interval.as_millis().max(1))
        .clamp(1, u128::from(GENERATION_STRETCH_MAX));
    GENERATION_WEIGHT_MAX * stretch as usize
}

/// The age at which the next generation is frozen, after a checkpoint that wrote
/// `written_bytes` of pages for a generation of `changes` changes; `current` is the age limit
/// that generation had, `interval` the configured checkpoint interval. A checkpoint's cost is
/// its count of distinct leaves; once that stops growing with its changes (a large table), a
/// longer generation spreads the same rewrite over more changes.
pub fn next_generation_age(
    current: Duration,
    interval: Duration,
    written_bytes: u64,
    changes: usize,
) -> Duration {
    let longest = interval * GENERATION_STRETCH_MAX;
    let per_change = written_bytes / (changes.max(1) as u64);
    let next = if per_change > STRETCH_ABOVE_BYTES_PER_CHANGE {
        current * 2
    } else if per_change < SHRINK_BELOW_BYTES_PER_CHANGE {
        current / 2
    } else {
        current
    };
    next.clamp(interval, longest)
}

/// Frozen generations waiting for their checkpoint before the writer waits (back-pressure): the
/// writer never runs further ahead of the ledger file than this plus the active generation.
pub const FROZEN_GENERATIONS_MAX: usize = 2;

/// A transaction as the ledger file's transactions table stores it (postcard). The overlay
/// keeps transactions encoded: a purchase is ≈ 140 bytes so against ≈ 1.5 KiB in 17 allocations
/// as a [`Transaction`] (its maps and strings), and a checkpoint writes the bytes as they are
/// instead of encoding every transaction again.
pub(crate) type EncodedTransaction = Box<[u8]>;

/// An account state as the ledger file's accounts table stores it (postcard), kept encoded in
/// the overlay for the same reasons: ≈ 30 bytes against ≈ 1.3 KiB decoded (its maps and
/// strings). With a million players nearly every purchase of a generation adds the state of an
/// account no other purchase touched, so decoded states were most of a generation's memory.
pub(crate) type EncodedAccount = Box<[u8]>;

/// What the overlay keeps of a batch's journal record: each transaction's and each account
/// state's bytes in it, in the order of the batch's changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EncodedChanges {
    pub transactions: Vec<EncodedTransaction>,
    pub accounts: Vec<EncodedAccount>,
}

impl EncodedChanges {
    /// Each transaction and account state of a batch encoded alone, for a batch that was
    /// decoded from its record.
    pub(crate) fn of(changes: &BatchChanges) -> EncodedChanges {
        let alone = |bytes: Vec<u8>| bytes.into_boxed_slice();
        EncodedChanges {
            transactions: (changes.transactions.iter())
                .map(|transaction| alone(encode(&**transaction)))
                .collect(),
            accounts: (changes.accounts.values())
                .map(|state| alone(encode(&**state)))
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct JournalRecord {
    transactions: Vec<Transaction>,
    accounts: BTreeMap<AccountId, AccountState>,
    reversals: Vec<(u64, u64)>,
    idempotency: Vec<(IdempotencyKey, StoredOutcome)>,
    next_transaction_id: u64,
}

/// Appends the journal record of a batch's changes to `out` and returns each transaction's and
/// each account state's encoding, copied from the record: the overlay keeps those bytes.
///
/// The record is written field by field in [`JournalRecord`]'s order. Postcard puts a struct's
/// fields, a sequence's elements and a map's keys and values one after the other with nothing
/// between them, and a sequence's or map's length is the same varint as that number encoded
/// alone, so this is the encoding of the record as a whole (a test decodes it as one), and each
/// transaction's and state's bytes in it are its encoding alone.
pub(crate) fn encode_record_into(changes: &BatchChanges, out: &mut Vec<u8>) -> EncodedChanges {
    let mut encoded = EncodedChanges {
        transactions: Vec::with_capacity(changes.transactions.len()),
        accounts: Vec::with_capacity(changes.accounts.len()),
    };
    encode_into(&(changes.transactions.len() as u64), out);
    for transaction in &changes.transactions {
        let start = out.len();
        encode_into(&**transaction, out);
        encoded.transactions.push(Box::from(&out[start..]));
    }
    encode_into(&(changes.accounts.len() as u64), out);
    for (id, state) in &changes.accounts {
        encode_into(id, out);
        let start = out.len();
        encode_into(&**state, out);
        encoded.accounts.push(Box::from(&out[start..]));
    }
    encode_into(&changes.reversals, out);
    encode_into(&changes.idempotency, out);
    encode_into(&changes.next_transaction_id, out);
    encoded
}

/// A batch's changes from its journal record.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<BatchChanges, StoreError> {
    let record: JournalRecord = decode("journal record", bytes)?;
    Ok(BatchChanges {
        accounts: record
            .accounts
            .into_iter()
            .map(|(id, state)| (id, Arc::new(state)))
            .collect(),
        transactions: record.transactions.into_iter().map(Arc::new).collect(),
        reversals: record.reversals,
        idempotency: record.idempotency,
        next_transaction_id: record.next_transaction_id,
    })
}

/// True when a batch changed nothing, so it needs no journal record (every command was a retry
/// answered from an outcome that is already durable).
pub(crate) fn changes_nothing(changes: &BatchChanges) -> bool {
    changes.transactions.is_empty()
        && changes.accounts.is_empty()
        && changes.reversals.is_empty()
        && changes.idempotency.is_empty()
}

/// A value and the journal record that wrote it. The writer builds on it at once; a reader
/// returns it only once that record is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written<T> {
    pub seq: u64,
    pub value: T,
}

/// A generation's hash map. The writer adds to it on the request path, so it grows by moving a
/// few entries per insert (griddle's incremental resize) rather than all at once: a std
/// `HashMap` of idempotency outcomes growing from 57k to 115k entries stopped the writer for
/// 44 ms in a half-peak run while every request in flight waited (most of it the kernel zeroing
/// the new table's huge pages, which the binaries now turn off; the move itself still grows
/// with the map, and maps at a million players hold far more). Idempotency keys come from
/// clients, so the hasher stays std's randomly keyed SipHash.
pub(crate) type GenerationMap<K, V> = griddle::HashMap<K, V, RandomState>;

fn generation_map<K, V>(capacity: usize) -> GenerationMap<K, V> {
    GenerationMap::with_capacity_and_hasher(capacity, RandomState::new())
}

/// The changes of consecutive journal records, newest value per key, as the ledger file's
/// tables will hold them after a checkpoint. The writer adds each batch as soon as its record
/// is written, before it is durable: entries carry their record's sequence number so readers
/// can wait for it (see [`Overlay`]).
#[derive(Debug, Default)]
pub(crate) struct Generation {
    /// Sequence number of the newest journal record absorbed; 0 while empty.
    pub last_seq: u64,
    pub next_transaction_id: u64,
    pub transactions: BTreeMap<u64, Written<EncodedTransaction>>,
    /// Original transaction id → id of its reversal.
    pub reversals: BTreeMap<u64, Written<u64>>,
    pub accounts: GenerationMap<AccountId, Written<EncodedAccount>>,
    /// Player → version → transaction id (read through `transactions`, which says when).
    pub history: GenerationMap<AccountId, BTreeMap<u64, u64>>,
    /// Read by the writer only.
    pub idempotency: GenerationMap<IdempotencyKey, StoredOutcome>,
    weight: usize,
    started: Option<Instant>,
}

impl Generation {
    pub fn is_empty(&self) -> bool {
        self.last_seq == 0
    }

    /// Adds journal record `seq`, encoding its transactions and account states (a record read
    /// back at recovery).
    pub fn absorb(&mut self, seq: u64, changes: &BatchChanges) {
        self.absorb_encoded(seq, changes, EncodedChanges::of(changes));
    }

    /// Adds journal record `seq`, whose transactions and account states `encoded` holds in
    /// order (as [`encode_record_into`] returned them); records must arrive in sequence order.
    pub fn absorb_encoded(&mut self, seq: u64, changes: &BatchChanges, encoded: EncodedChanges) {
        assert!(seq > self.last_seq, "journal records are absorbed in order");
        assert_eq!(
            encoded.transactions.len(),
            changes.transactions.len(),
            "one encoding per transaction"
        );
        assert_eq!(
            encoded.accounts.len(),
            changes.accounts.len(),
            "one encoding per account state"
        );
        self.last_seq = seq;
        self.next_transaction_id = changes.next_transaction_id;
        self.started.get_or_insert_with(Instant::now);
        for (transaction, value) in changes.transactions.iter().zip(encoded.transactions) {
            for (account, version) in &transaction.account_versions {
                self.history
                    .entry(account.clone())
                    .or_default()
                    .insert(*version, transaction.id);
            }
            self.transactions
                .insert(transaction.id, Written { seq, value });
        }
        for (original, reversal) in &changes.reversals {
            let value = *reversal;
            self.reversals.insert(*original, Written { seq, value });
        }
        for (id, value) in changes.accounts.keys().zip(encoded.accounts) {
            self.accounts.insert(id.clone(), Written { seq, value });
        }
        for (key, outcome) in &changes.idempotency {
            self.idempotency.insert(key.clone(), outcome.clone());
        }
        self.weight +=
            changes.transactions.len() + changes.idempotency.len() + changes.accounts.len();
    }

    /// Changes absorbed: transactions, idempotency outcomes and account states.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// An empty generation whose maps have room for as many entries as `previous` ended with.
    /// At a steady rate it then never grows them: growing a map of ~100k entries rehashes all
    /// of them at once, milliseconds in which the writer prepares no batch and every request in
    /// flight waits.
    fn sized_like(previous: &Generation) -> Generation {
        Generation {
            accounts: generation_map(previous.accounts.len()),
            history: generation_map(previous.history.len()),
            idempotency: generation_map(previous.idempotency.len()),
            ..Generation::default()
        }
    }

    pub fn age(&self) -> Duration {
        self.started
            .map_or(Duration::ZERO, |started| started.elapsed())
    }
}

/// Everything journaled but not yet checkpointed: the active generation, which the writer adds
/// every written batch to, and frozen ones (oldest first) that the checkpointer is folding into
/// the ledger file. A generation leaves only after its checkpoint committed, so every durable
/// change is always in the overlay or in the ledger file, and the overlay's value is the newer
/// one.
///
/// The writer sees every batch it wrote, durable or not: its next batch builds on them. A
/// reader gets, with what it found, the newest journal record that found it came from, and
/// returns only once that record is durable; so no reader ever returns a batch before its commit
/// is on disk, and a durable batch never waits for a merge to become visible.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    pub active: Generation,
    pub frozen: VecDeque<Arc<Generation>>,
}

impl Overlay {
    fn newest_first(&self) -> impl Iterator<Item = &Generation> {
        std::iter::once(&self.active).chain(self.frozen.iter().rev().map(|g| &**g))
    }

    /// Moves the active generation to the frozen ones; returns the sequence number it covers.
    pub fn freeze(&mut self) -> Option<u64> {
        if self.active.is_empty() {
            return None;
        }
        let next = Generation::sized_like(&self.active);
        let generation = std::mem::replace(&mut self.active, next);
        let last_seq = generation.last_seq;
        self.frozen.push_back(Arc::new(generation));
        Some(last_seq)
    }

    /// The next transaction id, when any journal record is not checkpointed yet.
    pub fn next_transaction_id(&self) -> Option<u64> {
        self.newest_first()
            .find(|g| !g.is_empty())
            .map(|g| g.next_transaction_id)
    }

    pub fn account(&self, id: &AccountId) -> Option<&Written<EncodedAccount>> {
        self.newest_first().find_map(|g| g.accounts.get(id))
    }

    pub fn idempotency(&self, key: &IdempotencyKey) -> Option<&StoredOutcome> {
        self.newest_first().find_map(|g| g.idempotency.get(key))
    }

    pub fn transaction(&self, id: u64) -> Option<&Written<EncodedTransaction>> {
        self.newest_first().find_map(|g| g.transactions.get(&id))
    }

    pub fn reversal(&self, id: u64) -> Option<Written<u64>> {
        self.newest_first()
            .find_map(|g| g.reversals.get(&id).cloned())
    }

    /// A player's transactions with versions in `versions`, by version: at most `limit` of the
    /// newest (`newest: true`) or of the oldest; with the journal record to wait for before
    /// returning them (the newest of every entry looked at, so it covers them all).
    pub fn history(
        &self,
        player: &AccountId,
        versions: impl RangeBounds<u64> + Clone,
        newest: bool,
        limit: usize,
    ) -> Result<(BTreeMap<u64, Transaction>, u64), StoreError> {
        let mut found = BTreeMap::new();
        let mut written_by = 0;
        for generation in self.newest_first() {
            let Some(entries) = generation.history.get(player) else {
                continue;
            };
            let range = entries.range(versions.clone());
            let picked: Vec<(&u64, &u64)> = if newest {
                range.rev().take(limit).collect()
            } else {
                range.take(limit).collect()
            };
            for (version, id) in picked {
                if let Some(transaction) = generation.transactions.get(id) {
                    written_by = written_by.max(transaction.seq);
                    if let btree_map::Entry::Vacant(entry) = found.entry(*version) {
                        entry.insert(decode("transaction", &transaction.value)?);
                    }
                }
            }
        }
        keep_ends(&mut found, newest, limit);
        Ok((found, written_by))
    }

    /// Transactions with ids in `ids`, at most `limit` of the lowest; with the journal record
    /// to wait for before returning them (as for [`Overlay::history`]).
    pub fn transactions_in(
        &self,
        ids: impl RangeBounds<u64> + Clone,
        limit: usize,
    ) -> Result<(BTreeMap<u64, Transaction>, u64), StoreError> {
        let mut found = BTreeMap::new();
        let mut written_by = 0;
        for generation in self.newest_first() {
            for (id, transaction) in generation.transactions.range(ids.clone()).take(limit) {
                written_by = written_by.max(transaction.seq);
                if let btree_map::Entry::Vacant(entry) = found.entry(*id) {
                    entry.insert(decode("transaction", &transaction.value)?);
                }
            }
        }
        keep_ends(&mut found, false, limit);
        Ok((found, written_by))
    }
}

/// Keeps the `limit` highest (`newest`) or lowest keys of `map`.
pub(crate) fn keep_ends<V>(map: &mut BTreeMap<u64, V>, newest: bool, limit: usize) {
    while map.len() > limit {
        if newest {
            map.pop_first();
        } else {
            map.pop_last();
        }
    }
}

/// A wake-up call between the writer, the checkpointer and callers waiting for a checkpoint.
/// Waiters check their condition under the mutex and every state change is followed by
/// `notify`, which takes the mutex, so no wake-up is lost.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    lock: Mutex<()>,
    changed: Condvar,
}

impl Signal {
    pub fn notify(&self) {
        let _guard = self.lock.lock().expect("signal lock poisoned");
        self.changed.notify_all();
    }

    /// Waits until `done()` holds or `timeout` passes; returns whether it holds.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock().expect("signal lock poisoned");
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .expect("signal lock poisoned")
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::{Posting, TransactionKind};

    fn transaction(id: u64, player: &str, version: u64) -> Transaction {
        Transaction {
            id,
            kind: TransactionKind::Grant,
            created_at_unix_ms: 1,
            postings: vec![Posting {
                account: AccountId::player(player),
                currency: "coins".into(),
                amount_minor_units: 5,
            }],
            item_movements: Vec::new(),
            account_versions: [(AccountId::player(player), version)].into(),
            metadata: BTreeMap::new(),
        }
    }

    fn changes(transactions: Vec<Transaction>) -> BatchChanges {
        let next_transaction_id = transactions.last().map_or(1, |t| t.id + 1);
        BatchChanges {
            transactions: transactions.into_iter().map(Arc::new).collect(),
            next_transaction_id,
            ..BatchChanges::default()
        }
    }

    #[test]
    fn a_journal_record_decodes_to_the_changes_it_was_made_from() {
        // Two transactions and two account states of different lengths: each one's bytes must
        // be cut where it ends.
        let mut batch = changes(vec![
            transaction(7, "ann", 3),
            transaction(8, "a-much-longer-player-id", 1),
        ]);
        let holding = AccountState {
            balances: [("coins".into(), 1_234_567)].into(),
            version: 3,
            ..AccountState::default()
        };
        batch
            .accounts
            .insert(AccountId::player("ann"), Arc::new(holding));
        batch
            .accounts
            .insert(AccountId::player("a-much-longer-player-id"), Arc::default());
        batch.reversals.push((2, 7));
        batch.idempotency.push((
            IdempotencyKey::player("ann", "k"),
            StoredOutcome {
                fingerprint: [9; 32],
                result: Ok(7),
            },
        ));
        let mut bytes = Vec::new();
        let encoded = encode_record_into(&batch, &mut bytes);
        assert_eq!(decode_record(&bytes).unwrap(), batch);
        assert_eq!(encoded, EncodedChanges::of(&batch));
        for (bytes, transaction) in encoded.transactions.iter().zip(&batch.transactions) {
            let alone: Transaction = decode("transaction", bytes).unwrap();
            assert_eq!(alone, **transaction);
        }
        for (bytes, state) in encoded.accounts.iter().zip(batch.accounts.values()) {
            let alone: AccountState = decode("account", bytes).unwrap();
            assert_eq!(alone, **state);
        }
    }

    #[test]
    fn the_newest_generation_answers_first_and_history_merges_across_generations() {
        let mut overlay = Overlay::default();
        overlay.active.absorb(
            1,
            &changes(vec![transaction(1, "ann", 1), transaction(2, "ann", 2)]),
        );
        assert_eq!(overlay.freeze(), Some(1));
        assert_eq!(overlay.freeze(), None, "an empty generation is not frozen");
        overlay
            .active
            .absorb(2, &changes(vec![transaction(3, "ann", 3)]));

        let (newest, _) = overlay
            .history(&AccountId::player("ann"), ..4, true, 2)
            .unwrap();
        assert_eq!(newest.keys().copied().collect::<Vec<_>>(), [2, 3]);
        let (oldest, _) = overlay
            .history(&AccountId::player("ann"), 2.., false, 10)
            .unwrap();
        assert_eq!(oldest.keys().copied().collect::<Vec<_>>(), [2, 3]);
        let (ids, _) = overlay.transactions_in(2.., 1).unwrap();
        assert_eq!(ids.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(overlay.next_transaction_id(), Some(4));
    }

    #[test]
    fn a_new_generation_has_room_for_as_many_entries_as_the_one_frozen_before_it() {
        let mut overlay = Overlay::default();
        let mut batch = changes(
            (1..=500)
                .map(|id| transaction(id, &format!("p{id}"), 1))
                .collect(),
        );
        for id in 1..=500 {
            batch
                .accounts
                .insert(AccountId::player(&format!("p{id}")), Arc::default());
            batch.idempotency.push((
                IdempotencyKey::player(&format!("p{id}"), "k"),
                StoredOutcome {
                    fingerprint: [0; 32],
                    result: Ok(id),
                },
            ));
        }
        overlay.active.absorb(1, &batch);
        assert_eq!(overlay.freeze(), Some(1));

        let next = &overlay.active;
        assert!(next.is_empty());
        assert!(next.accounts.capacity() >= 500);
        assert!(next.history.capacity() >= 500);
        assert!(next.idempotency.capacity() >= 500);

        // Room follows what the last generation held, not what it had room for: after a burst
        // a quiet generation does not pass the burst's size on.
        overlay
            .active
            .absorb(2, &changes(vec![transaction(501, "p1", 2)]));
        assert_eq!(overlay.freeze(), Some(2));
        assert!(overlay.active.history.capacity() < 500);
        assert!(overlay.active.accounts.capacity() < 500);
    }

    #[test]
    fn every_read_names_the_newest_journal_record_its_answer_comes_from() {
        let mut overlay = Overlay::default();
        let ann = AccountId::player("ann");
        let mut first = changes(vec![transaction(1, "ann", 1)]);
        first.accounts.insert(ann.clone(), Arc::default());
        first.reversals.push((9, 1));
        overlay.active.absorb(1, &first);
        assert_eq!(overlay.freeze(), Some(1));
        for seq in 2..=3 {
            let mut later = changes(vec![transaction(seq, "ann", seq)]);
            let state = AccountState {
                version: seq,
                ..AccountState::default()
            };
            later.accounts.insert(ann.clone(), Arc::new(state));
            overlay.active.absorb(seq, &later);
        }

        let account = overlay.account(&ann).expect("ann was written");
        let state: AccountState = decode("account", &account.value).unwrap();
        assert_eq!((account.seq, state.version), (3, 3));
        assert_eq!(overlay.transaction(1).map(|t| t.seq), Some(1));
        assert_eq!(overlay.transaction(3).map(|t| t.seq), Some(3));
        assert_eq!(overlay.reversal(9), Some(Written { seq: 1, value: 1 }));
        let (oldest, written_by) = overlay.history(&ann, ..=2, false, 10).unwrap();
        assert_eq!(oldest.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(written_by, 2, "the answer holds nothing of record 3");
        let (newest, written_by) = overlay.history(&ann, .., true, 10).unwrap();
        assert_eq!(newest.len(), 3);
        assert_eq!(
            newest[&3],
            transaction(3, "ann", 3),
            "decoded as it was written"
        );
        assert_eq!(written_by, 3);
        assert_eq!(overlay.transactions_in(..2, 10).unwrap().1, 1);
        assert_eq!(overlay.next_transaction_id(), Some(4));
    }

    #[test]
    fn generations_stretch_while_checkpoints_rewrite_many_pages_per_change_and_shrink_back() {
        let interval = Duration::from_secs(4);
        let changes = 200_000;
        let per_change = |bytes: u64| bytes * changes as u64;
        // A large table: every change costs the checkpoint a page of its own.
        let mut age = interval;
        let mut ages = Vec::new();
        for _ in 0..5 {
            age = next_generation_age(age, interval, per_change(4096), changes);
            ages.push(age.as_secs());
        }
        assert_eq!(ages, [8, 16, 32, 32, 32], "doubles up to the bound");
        // In between the thresholds the length holds.
        age = next_generation_age(age, interval, per_change(300), changes);
        assert_eq!(age.as_secs(), 32);
        // Pages shared well again: back down, never below the interval.
        let mut ages = Vec::new();
        for _ in 0..4 {
            age = next_generation_age(age, interval, per_change(64), changes);
            ages.push(age.as_secs());
        }
        assert_eq!(ages, [16, 8, 4, 4]);
        // Memory follows the stretch.
        assert_eq!(
            generation_weight_limit(interval, interval),
            GENERATION_WEIGHT_MAX
        );
        assert_eq!(
            generation_weight_limit(interval * 4, interval),
            4 * GENERATION_WEIGHT_MAX
        );
        // An empty generation divides by nothing.
        assert_eq!(next_generation_age(interval, interval, 0, 0), interval);
        assert_eq!(
            next_generation_age(interval, interval, 1 << 20, 0),
            interval * 2
        );
    }
}
