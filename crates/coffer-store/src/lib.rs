//! Coffer's storage: it remembers. It loads the state a batch of commands needs, lets the core
//! decide, and writes the core's transactions, account states, idempotency outcomes and indexes
//! in one durable commit. Reads are served from snapshots and never wait for the writer.
//!
//! [`Store`] is the trait the server talks to; [`RedbStore`] is the embedded default and
//! [`PostgresStore`] serves several nodes sharing one PostgreSQL database.

// Denied, not forbidden: one call, `sync_file_range` in `ledger_file.rs`, has no safe wrapper
// in the crates this workspace uses.
#![deny(unsafe_code)]

mod error;
mod export_file;
mod faults;
mod journal;
mod journal_file;
mod known_keys;
mod ledger_file;
mod postgres_store;
mod record;
mod redb_store;
mod runs;
mod transaction_chunks;

pub use error::StoreError;
pub use export_file::{EXPORT_HEADER, ExportSummary, read_export, write_export};
pub use faults::{Fault, StorageFaults};
pub use journal::{
    FROZEN_GENERATIONS_MAX, GENERATION_STRETCH_MAX, GENERATION_WEIGHT_MAX,
    SHRINK_BELOW_BYTES_PER_CHANGE, STRETCH_ABOVE_BYTES_PER_CHANGE,
};
pub use journal_file::{JOURNAL_DIR_NAME, journal_record_count};
pub use postgres_store::{COMMIT_CHANNEL, PostgresStore};
pub use redb_store::{
    CHECKPOINT_INTERVAL_MS_DEFAULT, DATABASE_FILE_NAME, RedbOptions, RedbStore,
    TWO_PHASE_COMMIT_DEFAULT,
};
pub use runs::RUNS_MERGE_AT_DEFAULT;

use coffer_core::{
    AccountId, AccountState, BatchResult, Catalog, Command, LoadedState, Prefetch, StoredOutcome,
    Transaction, TransactionRecord, VerifyReport, limits::PREFETCH_ROUNDS_MAX,
};

/// One record of a whole-ledger export, written one JSON object per line by `coffer export`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum LedgerRecord {
    /// The catalog in force.
    Catalog { version: u64, source_toml: String },
    /// A transaction and, when reversed, its reversal's id.
    Transaction {
        transaction: Transaction,
        reversed_by: Option<u64>,
    },
    /// An account's state.
    Account {
        account_id: String,
        state: AccountState,
    },
    /// A stored idempotency outcome.
    Idempotency {
        scope: String,
        key: String,
        outcome: StoredOutcome,
    },
}

/// Records an import writes per storage transaction.
pub const IMPORT_CHUNK_LEN: usize = 10_000;

/// Checks that imported transactions arrive as 1, 2, 3, … and returns the next id.
pub(crate) fn check_import_order(
    next_id: &mut u64,
    transaction: &Transaction,
) -> Result<(), StoreError> {
    if transaction.id != *next_id {
        return Err(StoreError::Corrupt {
            what: "export".to_owned(),
            detail: format!(
                "transaction {} where {} was expected (ids must be dense and in order)",
                transaction.id, next_id
            ),
        });
    }
    *next_id += 1;
    Ok(())
}

/// How far the embedded store's checkpoints trail its commits (see `journal.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStatus {
    /// Batches committed to the journal whose changes are not in the indexed tables yet.
    pub journal_records_pending: u64,
    /// Generations frozen and waiting for their checkpoint; the writer waits at
    /// [`FROZEN_GENERATIONS_MAX`].
    pub frozen_generations: u64,
    /// How long the last checkpoint took.
    pub last_checkpoint_ms: u64,
    /// Time spent writing checkpoints since the store opened, the one in progress included;
    /// its rate of growth is how busy the checkpointer is.
    pub checkpoint_busy_us_total: u64,
    /// Bytes of pages written to the ledger file since the store opened (checkpoints, catalog
    /// saves, imports); per change checkpointed, what the checkpoints cost the disk.
    pub ledger_written_bytes_total: u64,
    /// The age at which the open generation is frozen for its checkpoint: the checkpoint
    /// interval, or up to [`GENERATION_STRETCH_MAX`] times it while checkpoints rewrite many
    /// pages per change.
    pub generation_age_limit_ms: u64,
    /// Runs of history and idempotency rows that checkpoints wrote and no merge folded into
    /// the main tables yet; a merge starts at [`RUNS_MERGE_AT_DEFAULT`] unless configured.
    pub sorted_runs: u64,
    /// Whether a merge of runs is under way or due: checkpointer work, like pending records.
    pub merge_pending: bool,
}

/// A catalog as stored: its version and the TOML it was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCatalog {
    pub version: u64,
    pub source_toml: String,
}

/// Where a written batch stands: committed once [`Store::wait_durable`] returns `Ok` for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitTicket {
    /// The batch's journal record (or the newest before it, for a batch that wrote nothing).
    pub(crate) seq: u64,
    /// Which opening of the storage wrote it.
    pub(crate) epoch: u64,
}

impl CommitTicket {
    /// A batch that was durable when its write returned.
    pub const DURABLE: CommitTicket = CommitTicket { seq: 0, epoch: 0 };
}

/// Durable storage for the ledger. Implementations are called by one writer at a time for
/// [`Store::commit_batch`] and by any number of readers for everything else.
pub trait Store: Send + Sync + 'static {
    /// Loads what `commands` need, applies them with the core and commits the result in one
    /// durable write. Returns only after the commit is on disk; on error nothing was committed.
    fn commit_batch(
        &self,
        commands: &[Command],
        catalog: &Catalog,
        now_unix_ms: i64,
    ) -> Result<BatchResult, StoreError>;

    /// The first half of [`Store::commit_batch`] for a pipelined writer: applies and writes the
    /// batch and returns its result before it is durable, so the caller can prepare the next
    /// batch (which builds on this one) while the disk syncs. Nothing may be acknowledged
    /// before [`Store::wait_durable`] returned `Ok` for the ticket; readers do not see the batch
    /// before then either. Storage without the split commits here and returns
    /// [`CommitTicket::DURABLE`].
    fn write_batch(
        &self,
        commands: &[Command],
        catalog: &Catalog,
        now_unix_ms: i64,
    ) -> Result<(BatchResult, CommitTicket), StoreError> {
        Ok((
            self.commit_batch(commands, catalog, now_unix_ms)?,
            CommitTicket::DURABLE,
        ))
    }

    /// Returns once the batch of `ticket` (and every batch written before it) is durable. On
    /// error the batch may or may not have reached the disk: only a retry with the same
    /// idempotency key tells, and batches written after it fail too.
    fn wait_durable(&self, ticket: CommitTicket) -> Result<(), StoreError> {
        debug_assert_eq!(ticket, CommitTicket::DURABLE);
        Ok(())
    }

    /// Stores the catalog in force, so a restart keeps a catalog replaced at run time.
    fn save_catalog(&self, catalog: &StoredCatalog) -> Result<(), StoreError>;

    /// The last catalog saved, if any.
    fn stored_catalog(&self) -> Result<Option<StoredCatalog>, StoreError>;

    /// One account's state, from the latest committed snapshot.
    fn account(&self, id: &AccountId) -> Result<Option<AccountState>, StoreError>;

    /// One transaction and its reversal marker.
    fn transaction(&self, id: u64) -> Result<Option<TransactionRecord>, StoreError>;

    /// A player's transactions with versions below `before_version`, newest first.
    fn history_before(
        &self,
        player: &AccountId,
        before_version: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError>;

    /// A player's transactions with versions above `after_version`, oldest first.
    fn history_after(
        &self,
        player: &AccountId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError>;

    /// Transactions with ids above `after_id`, in id order.
    fn transactions_after(
        &self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError>;

    /// Replays the whole ledger from one snapshot and checks every invariant.
    fn verify(&self, catalog: &Catalog) -> Result<VerifyReport, StoreError>;

    /// Every record of the ledger from one snapshot, in import order: the catalog, transactions
    /// by id, accounts, idempotency outcomes.
    fn export(
        &self,
        sink: &mut dyn FnMut(LedgerRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Loads an export into this store, which must be empty; returns the transactions loaded.
    /// Indexes (history, reversals, the next id) are rebuilt from the records.
    fn import(
        &self,
        records: &mut dyn Iterator<Item = Result<LedgerRecord, StoreError>>,
    ) -> Result<u64, StoreError>;

    /// When other processes may commit to the same database: a channel that receives the id of
    /// the newest transaction committed anywhere, each time it changes (and now and then
    /// repeated). `None` for storage only this process writes.
    fn commits_elsewhere(&self) -> Option<std::sync::mpsc::Receiver<u64>> {
        None
    }

    /// How far checkpoints trail commits, for storage that checkpoints. `None` otherwise.
    fn checkpoint_status(&self) -> Option<CheckpointStatus> {
        None
    }
}

/// The load-then-apply loop every backend shares: ask the core what is missing, let `load` fetch
/// it (recording absent keys as `None`), and apply once nothing is missing.
pub fn prepare_and_apply(
    commands: &[Command],
    catalog: &Catalog,
    now_unix_ms: i64,
    mut loaded: LoadedState,
    mut load: impl FnMut(Prefetch, &mut LoadedState) -> Result<(), StoreError>,
) -> Result<BatchResult, StoreError> {
    for _round in 0..=PREFETCH_ROUNDS_MAX {
        let missing = coffer_core::needed(commands, &loaded);
        if missing.is_empty() {
            return Ok(coffer_core::apply_batch(
                loaded,
                catalog,
                now_unix_ms,
                commands,
            ));
        }
        load(missing, &mut loaded)?;
    }
    unreachable!("a batch needed more than {PREFETCH_ROUNDS_MAX} load rounds")
}
