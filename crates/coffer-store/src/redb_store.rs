//! The embedded default: a redb file and a journal directory in the data directory. A batch is
//! acknowledged once its journal record is appended to `coffer-journal/` and `fdatasync`ed, so an
//! acknowledged batch survives power loss. A checkpointer thread folds journaled changes into the
//! indexed tables of `coffer.redb` in large commits, off the request path; until then reads find
//! them in memory (see [`crate::journal`] and [`crate::journal_file`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, UntypedTableHandle,
};

use coffer_core::{
    AccountId, AccountState, BatchResult, Catalog, Command, LoadedState, StoredOutcome,
    Transaction, TransactionRecord, Verifier, VerifyReport,
};

use crate::faults::StorageFaults;
use crate::journal::{
    EncodedChanges, FROZEN_GENERATIONS_MAX, Generation, Overlay, Signal, changes_nothing,
    decode_record, encode_record_into, generation_weight_limit, keep_ends, next_generation_age,
};
use crate::journal_file::{
    JOURNAL_DIR_NAME, JournalSync, JournalWriter, journal_error, read_journal,
};
use crate::known_keys::KnownKeys;
use crate::ledger_file::LedgerFile;
use crate::record::{decode, decode_transaction, encode, encode_into};
use crate::runs::{
    HISTORY, HISTORY_CHUNKS, HistoryChunkRows, HistoryRows, IDEMPOTENCY, IdempotencyRows, Merge,
    RUNS_MERGE_AT_DEFAULT, ReadTable, RunRows, chunk_history, distinct, encode_history_chunk,
    merge_due, merge_urgent,
};
use crate::transaction_chunks::{
    StoredTransactions, TRANSACTION_CHUNKS, TRANSACTIONS, TRANSACTIONS_PER_CHUNK, encode_chunk,
};
use crate::{
    CheckpointStatus, CommitTicket, IMPORT_CHUNK_LEN, LedgerRecord, Store, StoreError,
    StoredCatalog, check_import_order, prepare_and_apply,
};

/// The ledger file inside the data directory: the indexed tables, as of the last checkpoint.
pub const DATABASE_FILE_NAME: &str = "coffer.redb";

/// Account name → encoded `AccountState`.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// Original transaction id → id of its reversal.
const REVERSALS: TableDefinition<u64, u64> = TableDefinition::new("reversals");
/// The journal of earlier versions: a redb file with one table of records (the same encoding as
/// a segment's records). Folded into the ledger file and removed at open.
const LEGACY_JOURNAL_FILE_NAME: &str = "coffer-journal.redb";
const LEGACY_JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// Named values: `next_transaction_id`, `catalog`, `journal_applied_through`.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const NEXT_TRANSACTION_ID: &str = "next_transaction_id";
const CATALOG: &str = "catalog";
/// The sequence number of the newest journal record the ledger file's tables include.
const JOURNAL_APPLIED_THROUGH: &str = "journal_applied_through";

/// How long a change waits in memory before a checkpoint (it is durable in the journal all
/// along), unless generations are stretched (see [`next_generation_age`]). At a million players
/// a checkpoint's cost is its count of distinct leaves, and 4 s generations share them: purchases
/// at 1M reached 95 % of the 10k rate against 69–82 % with 1 s generations (separate server,
/// 30-s phases, alternating), at the same rate at 10k.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 4_000;
/// How often waiting threads look again, in case a wake-up raced with a failure.
const WAIT_POLL_MS: u64 = 50;
/// Rows a checkpoint writes per durable commit. Every commit costs two syncs (one with
/// one-phase commit) and rewrites the branch pages above the leaves it touched, so the count of
/// commits, not their size, is what loads a disk that limits operations per second: at 256 rows
/// a peak-load checkpointer issued ≈ 7–8.5k write operations per second against ≈ 3–4.3k at
/// 4,096, and spent ≈ 20 % more CPU per purchase. Commits stay bounded (a few MiB of pages), so a
/// checkpoint's sync never holds the journal's syncs (the request path) for long.
const CHECKPOINT_ROWS_PER_COMMIT: usize = 4_096;

/// A batch write or journal sync that takes longer than this is logged with where its time
/// went: the request path normally takes well under a millisecond for either, so a step this
/// slow is a stall every request in flight waited for.
const SLOW_STEP_WARN_MS: u64 = 20;

/// Whether the ledger file's commits use redb's two-phase commit unless told otherwise.
pub const TWO_PHASE_COMMIT_DEFAULT: bool = true;

/// How a [`RedbStore`] commits.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// How the ledger file commits (checkpoints, catalog saves, imports; the journal on the
    /// request path is not a redb file and takes one `fdatasync` per batch either way). Every
    /// commit is durable (`fsync`ed) either way. With two-phase
    /// commit redb writes and syncs the data, then flips and syncs the commit slot (two syncs);
    /// without it, one sync covers data and a checksummed commit slot, and recovery falls back
    /// to the previous slot if the checksum does not match. redb's documentation names one
    /// weakness of the one-sync form: a workload crafted to collide the (non-cryptographic)
    /// checksum, together with a crash at the right moment.
    pub two_phase_commit: bool,
    /// A change is folded into the ledger file's tables this long after its commit (sooner, once
    /// enough changes have gathered; up to [`crate::GENERATION_STRETCH_MAX`] times later while
    /// checkpoints rewrite many pages per change). Shorter means less to recover after a crash
    /// and more, smaller checkpoints.
    pub checkpoint_interval_ms: u64,
    /// Runs of history and idempotency rows (one per checkpoint) that start a merge into the
    /// main tables (see `runs.rs`).
    pub runs_merge_at: usize,
    /// Puts every file operation behind this fault switch (reliability tests only).
    pub faults: Option<StorageFaults>,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            two_phase_commit: TWO_PHASE_COMMIT_DEFAULT,
            checkpoint_interval_ms: CHECKPOINT_INTERVAL_MS_DEFAULT,
            runs_merge_at: RUNS_MERGE_AT_DEFAULT,
            faults: None,
        }
    }
}

/// The redb-backed [`Store`].
pub struct RedbStore {
    shared: Arc<Shared>,
    checkpointer: Option<JoinHandle<()>>,
}

/// The open ledger file and journal.
struct Databases {
    ledger: Database,
    /// Held by the writer for a whole batch.
    journal: Mutex<JournalWriter>,
    /// The idempotency keys the ledger file may hold; the writer takes it after `journal`.
    known_keys: Mutex<KnownKeys>,
    journal_sync: Arc<JournalSync>,
    /// Which opening of the files this is: a batch written before a reopen cannot be confirmed
    /// after it.
    epoch: u64,
}

/// What the store's callers and its checkpointer thread share. Lock order, where several are
/// held: `checkpoint_gate`, `databases`, `Databases::journal`, `Databases::known_keys`,
/// `overlay`, and `Signal`'s lock only alone or last (waiters read the overlay inside it; nobody
/// holds the overlay while notifying).
struct Shared {
    /// `None` while a reopen after an I/O error has not succeeded yet.
    databases: RwLock<Option<Arc<Databases>>>,
    /// Set by a failed write: redb refuses further work after an I/O error until the database
    /// is opened again, which also recovers the last durable commit from the files.
    broken: AtomicBool,
    overlay: RwLock<Overlay>,
    /// The newest journal record written (0 before the first); kept apart from the journal's
    /// own counter so metrics never wait for the writer's journal lock.
    journaled_through: AtomicU64,
    /// The newest journal record known to be durable.
    synced_through: AtomicU64,
    /// One `fdatasync` of the journal at a time; whoever waits behind it finds its record
    /// synced by it or syncs again.
    sync_gate: Mutex<()>,
    /// Openings of the files so far.
    epochs: AtomicU64,
    /// The newest journal record the ledger file includes.
    checkpointed_through: AtomicU64,
    checkpoint_clock: Mutex<CheckpointClock>,
    /// Held for a whole checkpoint, and by a reopen, so the two never overlap.
    checkpoint_gate: Mutex<()>,
    signal: Signal,
    stopping: AtomicBool,
    /// Cleared when the checkpointer thread ends, however it ends, so nobody waits for it then.
    checkpointer_running: AtomicBool,
    ledger_path: PathBuf,
    journal_dir: PathBuf,
    two_phase_commit: bool,
    checkpoint_interval: Duration,
    /// The age at which the active generation is frozen: the interval, stretched while
    /// checkpoints rewrite many pages per change (see [`next_generation_age`]). Milliseconds.
    generation_age_limit_ms: AtomicU64,
    /// Bytes written to the ledger file since the store opened (every opening of it).
    ledger_written_bytes: Arc<AtomicU64>,
    runs_merge_at: usize,
    /// Runs the ledger file holds (of the kind with more), as of the checkpointer's last look.
    runs: AtomicUsize,
    /// Whether a merge of runs is under way.
    merging: AtomicBool,
    faults: Option<StorageFaults>,
}

/// How long checkpoints take: the last one, and all of them together with the one in progress
/// and the merges of runs (what the checkpointer worked, apart from what it waited for work).
#[derive(Debug, Default)]
struct CheckpointClock {
    /// The last checkpoint (merges apart).
    last: Duration,
    finished: Duration,
    running_since: Option<std::time::Instant>,
}

impl CheckpointClock {
    fn start(&mut self) {
        self.running_since = Some(std::time::Instant::now());
    }

    /// Ends the work [`CheckpointClock::start`] began (a checkpoint, or a step of a merge);
    /// returns how long it took.
    fn finish(&mut self) -> Duration {
        let since = self
            .running_since
            .take()
            .expect("a checkpoint finishes after it starts");
        let took = since.elapsed();
        self.finished += took;
        took
    }

    fn busy_total(&self) -> Duration {
        self.finished
            + self
                .running_since
                .map_or(Duration::ZERO, |since| since.elapsed())
    }
}

/// Steps a [`StepClock`] tells apart; later laps fold into the last one.
const STEP_LAPS_MAX: usize = 8;

/// Where a step of the request path spent its time, kept only to be logged when the whole
/// took longer than [`SLOW_STEP_WARN_MS`].
struct StepClock {
    started: Instant,
    last: Instant,
    laps: [(&'static str, Duration); STEP_LAPS_MAX],
    len: usize,
}

impl StepClock {
    fn start() -> StepClock {
        let now = Instant::now();
        StepClock {
            started: now,
            last: now,
            laps: [("", Duration::ZERO); STEP_LAPS_MAX],
            len: 0,
        }
    }

    fn lap(&mut self, step: &'static str) {
        self.lap_at(step, Instant::now());
    }

    fn lap_at(&mut self, step: &'static str, now: Instant) {
        if self.len < STEP_LAPS_MAX {
            self.laps[self.len] = (step, now - self.last);
            self.len += 1;
        } else {
            self.laps[STEP_LAPS_MAX - 1].1 += now - self.last;
        }
        self.last = now;
    }

    /// The whole time and each step's, once the whole took [`SLOW_STEP_WARN_MS`] or longer.
    fn slow(&self) -> Option<(u64, String)> {
        let total = self.last - self.started;
        if total < Duration::from_millis(SLOW_STEP_WARN_MS) {
            return None;
        }
        let steps = self.laps[..self.len]
            .iter()
            .map(|(step, took)| format!("{step}={}us", took.as_micros()))
            .collect::<Vec<_>>()
            .join(" ");
        Some((total.as_millis() as u64, steps))
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir`, creating the directory if needed.
    pub fn open(data_dir: &Path) -> Result<RedbStore, StoreError> {
        Self::open_with(data_dir, RedbOptions::default())
    }

    /// Like [`RedbStore::open`], with these options. Journal records left by a crash are
    /// folded into the ledger file before this returns.
    pub fn open_with(data_dir: &Path, options: RedbOptions) -> Result<RedbStore, StoreError> {
        let RedbOptions {
            two_phase_commit,
            checkpoint_interval_ms,
            runs_merge_at,
            faults,
        } = options;
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDirectory {
            path: data_dir.display().to_string(),
            source,
        })?;
        let mut shared = Shared {
            databases: RwLock::new(None),
            broken: AtomicBool::new(false),
            overlay: RwLock::default(),
            journaled_through: AtomicU64::new(0),
            synced_through: AtomicU64::new(0),
            sync_gate: Mutex::new(()),
            epochs: AtomicU64::new(0),
            checkpointed_through: AtomicU64::new(0),
            checkpoint_clock: Mutex::default(),
            checkpoint_gate: Mutex::new(()),
            signal: Signal::default(),
            stopping: AtomicBool::new(false),
            checkpointer_running: AtomicBool::new(true),
            ledger_path: data_dir.join(DATABASE_FILE_NAME),
            journal_dir: data_dir.join(JOURNAL_DIR_NAME),
            two_phase_commit,
            checkpoint_interval: Duration::from_millis(checkpoint_interval_ms.max(1)),
            generation_age_limit_ms: AtomicU64::new(checkpoint_interval_ms.max(1)),
            ledger_written_bytes: Arc::default(),
            runs_merge_at: runs_merge_at.max(1),
            runs: AtomicUsize::new(0),
            merging: AtomicBool::new(false),
            faults,
        };
        let (databases, applied_through) = shared.open_databases()?;
        *shared.databases.get_mut().expect("fresh lock") = Some(Arc::new(databases));
        *shared.journaled_through.get_mut() = applied_through;
        *shared.synced_through.get_mut() = applied_through;

        *shared.checkpointed_through.get_mut() = applied_through;
        let shared = Arc::new(shared);
        let checkpointer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("coffer-checkpoint".to_owned())
                .spawn(move || shared.run_checkpointer())
                .map_err(|source| StoreError::DataDirectory {
                    path: data_dir.display().to_string(),
                    source,
                })?
        };
        Ok(RedbStore {
            shared,
            checkpointer: Some(checkpointer),
        })
    }

    /// Where the ledger file lives.
    pub fn path(&self) -> &Path {
        &self.shared.ledger_path
    }

    /// The journal's directory.
    pub fn journal_dir(&self) -> &Path {
        &self.shared.journal_dir
    }

    /// Sequence number of the newest journal record written (0 before the first).
    pub fn journaled_through(&self) -> u64 {
        self.shared.journaled_through.load(Ordering::SeqCst)
    }

    /// Sequence number of the newest journal record the ledger file's tables include.
    pub fn checkpointed_through(&self) -> u64 {
        self.shared.checkpointed_through.load(Ordering::SeqCst)
    }
}

impl Drop for RedbStore {
    /// Stops the checkpointer, which folds what is left into the ledger file first, so a clean
    /// stop leaves an empty journal and both files closed when this returns.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.signal.notify();
        if let Some(checkpointer) = self.checkpointer.take()
            && checkpointer.join().is_err()
        {
            tracing::error!(
                "the checkpointer thread panicked; the journal is recovered at the next open"
            );
        }
    }
}

/// Opens one file through [`LedgerFile`] (paced writeback, and the fault switch when there is
/// one) and checks every page.
fn open_database(
    path: &Path,
    faults: Option<&StorageFaults>,
    written_bytes: &Arc<AtomicU64>,
) -> Result<Database, StoreError> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(redb::DatabaseError::from)
        .and_then(|file| LedgerFile::new(file, faults.cloned(), Arc::clone(written_bytes)))
        .and_then(|file| Database::builder().create_with_backend(file));
    match opened {
        Ok(mut db) => {
            // Every page's checksum, before anything is served from the file.
            if !db
                .check_integrity()
                .map_err(|e| StoreError::Engine(e.into()))?
            {
                tracing::warn!(path = %path.display(), "database pages were damaged and have been repaired");
            }
            Ok(db)
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            Err(StoreError::AlreadyOpen(path.display().to_string()))
        }
        Err(e) => Err(StoreError::Engine(e.into())),
    }
}

/// Calls `each` with the records of a journal of an earlier version from `from_seq` on, in order.
fn read_legacy_journal(
    path: &Path,
    from_seq: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if !path.exists() {
        return Ok(());
    }
    let journal = Database::open(path).map_err(|e| StoreError::Engine(e.into()))?;
    let txn = journal.begin_read()?;
    let table = match txn.open_table(LEGACY_JOURNAL) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    for entry in table.range(from_seq..)? {
        let (seq, bytes) = entry?;
        each(seq.value(), bytes.value())?;
    }
    Ok(())
}

fn read_meta_u64(txn: &ReadTransaction, name: &str) -> Result<Option<u64>, StoreError> {
    match txn.open_table(META)?.get(name)? {
        Some(bytes) => Ok(Some(decode(name, bytes.value())?)),
        None => Ok(None),
    }
}

/// Niceness of the checkpointer thread. Players feel the writer's and the handlers' latency,
/// not the checkpointer's: it yields the CPU to them and catches up while they wait for the
/// disk (it cannot fall behind without bound: the writer waits for it, see
/// [`FROZEN_GENERATIONS_MAX`]).
const CHECKPOINTER_NICENESS: i32 = 10;

/// Lowers the calling thread's scheduling priority (on Linux, `setpriority` on a thread id
/// affects only that thread); elsewhere it keeps the default.
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), CHECKPOINTER_NICENESS)
    {
        tracing::debug!(%error, "the checkpointer keeps its priority");
    }
}

/// The main table of `R` and every run of it in `txn`'s snapshot, newest run last.
fn main_and_runs<R: RunRows>(txn: &ReadTransaction) -> Result<Vec<ReadTable<R>>, StoreError> {
    let listed: Vec<UntypedTableHandle> = txn.list_tables()?.collect();
    main_and_runs_among::<R>(txn, &listed)
}

/// Like [`main_and_runs`], with the snapshot's tables listed once by the caller.
fn main_and_runs_among<R: RunRows>(
    txn: &ReadTransaction,
    listed: &[UntypedTableHandle],
) -> Result<Vec<ReadTable<R>>, StoreError> {
    let mut tables = vec![txn.open_table(R::MAIN)?];
    for name in R::runs_among(listed.iter().cloned()) {
        tables.push(txn.open_table(R::run(&name))?);
    }
    Ok(tables)
}

/// The outcome stored under (`scope`, `key`) in the main idempotency table or a run.
fn stored_outcome(
    tables: &[ReadTable<IdempotencyRows>],
    scope: &str,
    key: &str,
) -> Result<Option<StoredOutcome>, StoreError> {
    for table in tables {
        if let Some(bytes) = table.get((scope, key))? {
            return Ok(Some(decode("idempotency outcome", bytes.value())?));
        }
    }
    Ok(None)
}

/// Runs in the ledger file: of the kind with more of them.
fn count_runs(ledger: &Database) -> Result<usize, StoreError> {
    Ok(Merge::of(ledger.begin_read()?.list_tables()?).runs())
}

/// Every idempotency key the ledger file holds, read when the files open.
fn read_known_keys(ledger: &Database) -> Result<KnownKeys, StoreError> {
    let started = Instant::now();
    let txn = ledger.begin_read()?;
    let tables = main_and_runs::<IdempotencyRows>(&txn)?;
    let mut keys = 0usize;
    for table in &tables {
        keys = keys.saturating_add(usize::try_from(table.len()?).unwrap_or(usize::MAX));
    }
    let mut known = KnownKeys::with_room_for(keys.saturating_mul(2));
    for table in &tables {
        for entry in table.iter()? {
            let (key, _) = entry?;
            let (scope, key) = key.value();
            known.insert(scope, key);
        }
    }
    tracing::debug!(
        keys,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "idempotency keys read into the key filter"
    );
    Ok(known)
}

/// A generation's rows, each table's in key order.
struct GenerationRows<'a> {
    /// (first id, encoded chunk): the generation's transactions, [`TRANSACTIONS_PER_CHUNK`] to
    /// a row.
    transactions: Vec<(u64, Vec<u8>)>,
    /// (player, first version, encoded chunk): one per player and run of consecutive versions.
    history: Vec<(&'a str, u64, Vec<u8>)>,
    reversals: Vec<(u64, u64)>,
    accounts: Vec<(&'a str, &'a [u8])>,
    idempotency: Vec<(&'a str, &'a str, &'a StoredOutcome)>,
}

impl<'a> GenerationRows<'a> {
    fn of(generation: &'a Generation) -> Self {
        let mut players: Vec<(&str, &BTreeMap<u64, u64>)> = generation
            .history
            .iter()
            .map(|(player, versions)| (player.as_str(), versions))
            .collect();
        players.sort_unstable_by_key(|(player, _)| *player);
        let mut history = Vec::with_capacity(players.len());
        for (player, versions) in players {
            // One generation gives a player consecutive versions; a gap would start a new chunk.
            let mut versions = versions
                .iter()
                .map(|(version, id)| (*version, *id))
                .peekable();
            while let Some((first_version, first_id)) = versions.next() {
                let mut ids = vec![first_id];
                while let Some((_, id)) =
                    versions.next_if(|(version, _)| *version == first_version + ids.len() as u64)
                {
                    ids.push(id);
                }
                history.push((player, first_version, encode_history_chunk(ids.into_iter())));
            }
        }
        let mut accounts: Vec<(&str, &[u8])> = generation
            .accounts
            .iter()
            .map(|(id, state)| (id.as_str(), &*state.value))
            .collect();
        accounts.sort_unstable_by_key(|(id, _)| *id);
        // Most comparisons are between different players' scopes, which their first 16 bytes
        // tell apart with one integer comparison instead of two string comparisons.
        let mut sorted: Vec<(u128, &str, &str, &StoredOutcome)> = generation
            .idempotency
            .iter()
            .map(|(key, outcome)| {
                let (scope, key) = (key.scope.as_str(), key.key.as_str());
                (order_prefix(scope), scope, key, outcome)
            })
            .collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| (a.1, a.2).cmp(&(b.1, b.2))));
        let idempotency = sorted
            .into_iter()
            .map(|(_, scope, key, outcome)| (scope, key, outcome))
            .collect();
        let transactions: Vec<(u64, &[u8])> = generation
            .transactions
            .iter()
            .map(|(id, transaction)| (*id, &*transaction.value))
            .collect();
        let transactions = transactions
            .chunks(TRANSACTIONS_PER_CHUNK)
            .map(|chunk| {
                // A generation's ids are consecutive, so a chunk's are too.
                debug_assert!(chunk.windows(2).all(|pair| pair[1].0 == pair[0].0 + 1));
                let bytes = encode_chunk(chunk.iter().map(|(_, transaction)| *transaction));
                (chunk[0].0, bytes)
            })
            .collect();
        GenerationRows {
            transactions,
            history,
            reversals: generation
                .reversals
                .iter()
                .map(|(original, reversal)| (*original, reversal.value))
                .collect(),
            accounts,
            idempotency,
        }
    }
}

/// The first 16 bytes of `text` as a big-endian number, zero-padded: never in the opposite
/// order of the texts (a text's first bytes order it; a text that is a prefix of another pads
/// with zeros, the smallest byte), so it may decide a comparison when it differs.
fn order_prefix(text: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let len = text.len().min(bytes.len());
    bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
    u128::from_be_bytes(bytes)
}

/// Writes a generation's changes into the ledger file's tables (its history and idempotency
/// rows into runs named after its last journal record), rows in key order, in durable
/// commits of at most [`CHECKPOINT_ROWS_PER_COMMIT`] rows; the last one also records which
/// journal record the tables now include. Until then the generation stays in the overlay, which
/// readers consult first, so they never see a half-written generation; exports and the verifier
/// take their snapshot between checkpoints; and a crash part-way makes recovery write the same
/// rows again (every row is a put of the newest value, so writing it twice changes nothing).
fn write_generation(
    ledger: &Database,
    generation: &Generation,
    two_phase_commit: bool,
) -> Result<(), StoreError> {
    let rows = GenerationRows::of(generation);
    // History and idempotency rows go to runs of their own (see `crate::runs`), in key order.
    let history_run = HistoryChunkRows::run_name(generation.last_seq);
    let idempotency_run = IdempotencyRows::run_name(generation.last_seq);
    let mut done = [0usize; 5];
    loop {
        let mut budget = CHECKPOINT_ROWS_PER_COMMIT;
        let mut take = |table: usize, len: usize| -> std::ops::Range<usize> {
            let from = done[table];
            let to = len.min(from + budget);
            budget -= to - from;
            done[table] = to;
            from..to
        };
        let mut txn = ledger.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_two_phase_commit(two_phase_commit);
        {
            let mut transactions = txn.open_table(TRANSACTION_CHUNKS)?;
            for (first_id, chunk) in &rows.transactions[take(0, rows.transactions.len())] {
                transactions.insert(*first_id, chunk.as_slice())?;
            }
            let history_rows = &rows.history[take(1, rows.history.len())];
            if !history_rows.is_empty() {
                let mut history = txn.open_table(HistoryChunkRows::run(&history_run))?;
                for (player, first_version, ids) in history_rows {
                    history.insert((*player, *first_version), ids.as_slice())?;
                }
            }
            let mut reversals = txn.open_table(REVERSALS)?;
            for (original, reversal) in &rows.reversals[take(2, rows.reversals.len())] {
                reversals.insert(*original, *reversal)?;
            }
            let mut accounts = txn.open_table(ACCOUNTS)?;
            for (id, state) in &rows.accounts[take(3, rows.accounts.len())] {
                accounts.insert(*id, *state)?;
            }
            let idempotency_rows = &rows.idempotency[take(4, rows.idempotency.len())];
            if !idempotency_rows.is_empty() {
                let mut idempotency = txn.open_table(IdempotencyRows::run(&idempotency_run))?;
                // One buffer for every row: a fresh Vec per outcome grew four times per row.
                let mut encoded = Vec::new();
                for (scope, key, outcome) in idempotency_rows {
                    encoded.clear();
                    encode_into(*outcome, &mut encoded);
                    idempotency.insert((*scope, *key), encoded.as_slice())?;
                }
            }
        }
        let finished = done
            == [
                rows.transactions.len(),
                rows.history.len(),
                rows.reversals.len(),
                rows.accounts.len(),
                rows.idempotency.len(),
            ];
        if finished {
            let mut meta = txn.open_table(META)?;
            meta.insert(
                NEXT_TRANSACTION_ID,
                encode(&generation.next_transaction_id).as_slice(),
            )?;
            meta.insert(
                JOURNAL_APPLIED_THROUGH,
                encode(&generation.last_seq).as_slice(),
            )?;
        }
        txn.commit()?;
        if finished {
            return Ok(());
        }
    }
}

impl Shared {
    /// Opens the ledger file, creates missing tables, folds journal records it does not
    /// include yet into it and starts an empty journal. Returns the newest journal record the
    /// ledger file includes.
    fn open_databases(&self) -> Result<(Databases, u64), StoreError> {
        let ledger = open_database(
            &self.ledger_path,
            self.faults.as_ref(),
            &self.ledger_written_bytes,
        )?;
        {
            let mut txn = ledger.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.open_table(ACCOUNTS)?;
            txn.open_table(TRANSACTIONS)?;
            txn.open_table(TRANSACTION_CHUNKS)?;
            txn.open_table(HISTORY)?;
            txn.open_table(HISTORY_CHUNKS)?;
            txn.open_table(IDEMPOTENCY)?;
            txn.open_table(REVERSALS)?;
            txn.open_table(META)?;
            txn.commit()?;
        }
        let applied_through =
            read_meta_u64(&ledger.begin_read()?, JOURNAL_APPLIED_THROUGH)?.unwrap_or(0);
        let mut recovered = Generation::default();
        let legacy_journal = self.ledger_path.with_file_name(LEGACY_JOURNAL_FILE_NAME);
        read_legacy_journal(&legacy_journal, applied_through + 1, |seq, bytes| {
            recovered.absorb(seq, &decode_record(bytes)?);
            Ok(())
        })?;
        if self.journal_dir.exists() {
            read_journal(&self.journal_dir, applied_through + 1, |seq, bytes| {
                recovered.absorb(seq, &decode_record(bytes)?);
                Ok(())
            })?;
        }
        let applied_through = if recovered.is_empty() {
            applied_through
        } else {
            write_generation(&ledger, &recovered, self.two_phase_commit)?;
            tracing::info!(
                transactions = recovered.transactions.len(),
                through_record = recovered.last_seq,
                "journal records recovered into the ledger file"
            );
            recovered.last_seq
        };
        // Everything the journal held is in the ledger file now (durably: the checkpoint's
        // commits are), so its segments, and a journal of an earlier version, can go.
        if legacy_journal.exists() {
            std::fs::remove_file(&legacy_journal).map_err(|e| journal_error(&legacy_journal, e))?;
            tracing::info!(path = %legacy_journal.display(), "journal of an earlier version folded in and removed");
        }
        let journal = JournalWriter::start_empty(
            &self.journal_dir,
            self.faults.clone(),
            applied_through + 1,
        )?;
        self.runs.store(count_runs(&ledger)?, Ordering::SeqCst);
        let known_keys = read_known_keys(&ledger)?;
        Ok((
            Databases {
                ledger,
                journal_sync: journal.sync_handle(),
                journal: Mutex::new(journal),
                known_keys: Mutex::new(known_keys),
                epoch: self.epochs.fetch_add(1, Ordering::SeqCst) + 1,
            },
            applied_through,
        ))
    }

    /// The open files, reopened first if a write failed since.
    fn databases(&self) -> Result<Arc<Databases>, StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            self.reopen()?;
        }
        match &*self.databases.read().expect("database lock poisoned") {
            Some(databases) => Ok(Arc::clone(databases)),
            None => Err(StoreError::Reopening),
        }
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let _no_checkpoint = self
            .checkpoint_gate
            .lock()
            .expect("checkpoint gate poisoned");
        let mut slot = self.databases.write().expect("database lock poisoned");
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        // The old handles must close (and release the file locks) before the files open again.
        if let Some(old) = slot.take()
            && let Err(still_used) = Arc::try_unwrap(old)
        {
            *slot = Some(still_used);
            return Err(StoreError::Reopening);
        }
        let (databases, applied_through) = self.open_databases()?;
        // Everything durable is in the ledger file now; what the overlay held is either there
        // or was never committed.
        self.journaled_through
            .store(applied_through, Ordering::SeqCst);
        self.synced_through.store(applied_through, Ordering::SeqCst);
        *self.overlay.write().expect("overlay lock poisoned") = Overlay::default();
        self.checkpointed_through
            .store(applied_through, Ordering::SeqCst);
        *slot = Some(Arc::new(databases));
        self.broken.store(false, Ordering::SeqCst);
        tracing::warn!(path = %self.ledger_path.display(), "database reopened after a storage error");
        Ok(())
    }

    /// Records that a write failed: the next call reopens the files and recovers. Waiting for a
    /// reopen, or for a checkpointer that stopped (a reopen would not bring it back), is not a
    /// new storage failure.
    fn write_failed(&self, error: StoreError) -> StoreError {
        if !matches!(
            error,
            StoreError::Reopening | StoreError::CheckpointerStopped
        ) {
            self.broken.store(true, Ordering::SeqCst);
            self.signal.notify();
        }
        error
    }

    fn read_overlay(&self) -> RwLockReadGuard<'_, Overlay> {
        self.overlay.read().expect("overlay lock poisoned")
    }

    /// Waits (one poll interval at most) until the checkpointer made `progress` true, or until
    /// something ends the wait early: a write failed, or the checkpointer stopped.
    fn wait_for_checkpointer(&self, mut progress: impl FnMut() -> bool) {
        self.signal
            .wait_until(Duration::from_millis(WAIT_POLL_MS), || {
                self.broken.load(Ordering::SeqCst)
                    || !self.checkpointer_running.load(Ordering::SeqCst)
                    || progress()
            });
    }

    /// Waits while the active generation is full and enough frozen ones wait for their
    /// checkpoint; freezes the active one once there is room.
    fn wait_for_room(&self) -> Result<(), StoreError> {
        let weight_limit =
            generation_weight_limit(self.generation_age_limit(), self.checkpoint_interval);
        loop {
            // The common case, room in the active generation, needs only the read lock.
            if self.read_overlay().active.weight() < weight_limit {
                return Ok(());
            }
            {
                let mut overlay = self.overlay.write().expect("overlay lock poisoned");
                if overlay.active.weight() < weight_limit {
                    return Ok(());
                }
                if overlay.frozen.len() < FROZEN_GENERATIONS_MAX {
                    overlay.freeze();
                    drop(overlay);
                    self.signal.notify();
                    return Ok(());
                }
            }
            if self.broken.load(Ordering::SeqCst) {
                return Err(StoreError::Reopening);
            }
            if !self.checkpointer_running.load(Ordering::SeqCst) {
                return Err(StoreError::CheckpointerStopped);
            }
            self.wait_for_checkpointer(|| {
                self.read_overlay().frozen.len() < FROZEN_GENERATIONS_MAX
            });
        }
    }

    fn write_batch(
        &self,
        commands: &[Command],
        catalog: &Catalog,
        now_unix_ms: i64,
    ) -> Result<(BatchResult, CommitTicket), StoreError> {
        let databases = self.databases()?;
        let mut steps = StepClock::start();
        self.wait_for_room()?;
        steps.lap("room");
        let mut journal = databases.journal.lock().expect("journal lock poisoned");
        let mut known_keys = databases.known_keys.lock().expect("key filter poisoned");
        steps.lap("locks");
        let result = {
            // Held while loading, so no generation leaves the overlay between a miss there
            // and the read of the ledger file (its snapshot is taken under it too).
            let overlay = self.read_overlay();
            let txn = databases.ledger.begin_read()?;
            let accounts = txn.open_table(ACCOUNTS)?;
            // Opened at the first key the filter may hold: most batches need none.
            let mut idempotency = None;
            // Opened at the first transaction not in memory: only retries and reversals of
            // older transactions need one.
            let mut transactions = None;
            let reversals = txn.open_table(REVERSALS)?;
            let next_transaction_id = match overlay.next_transaction_id() {
                Some(id) => id,
                None => read_meta_u64(&txn, NEXT_TRANSACTION_ID)?.unwrap_or(1),
            };
            let loaded = LoadedState {
                next_transaction_id,
                ..LoadedState::default()
            };
            prepare_and_apply(commands, catalog, now_unix_ms, loaded, |missing, loaded| {
                for id in missing.accounts {
                    let state = match overlay.account(&id) {
                        Some(state) => Some(Arc::new(decode("account", &state.value)?)),
                        None => match accounts.get(id.as_str())? {
                            Some(bytes) => Some(Arc::new(decode("account", bytes.value())?)),
                            None => None,
                        },
                    };
                    loaded.accounts.insert(id, state);
                }
                for key in missing.idempotency_keys {
                    let (scope, key_str) = (key.scope.as_str(), key.key.as_str());
                    let outcome = match overlay.idempotency(&key) {
                        Some(outcome) => Some(outcome.clone()),
                        None if !known_keys.may_hold(scope, key_str) => None,
                        None => {
                            let tables = match &mut idempotency {
                                Some(tables) => tables,
                                None => idempotency.insert(main_and_runs::<IdempotencyRows>(&txn)?),
                            };
                            stored_outcome(tables, scope, key_str)?
                        }
                    };
                    loaded.idempotency.insert(key, outcome);
                }
                for id in missing.transactions {
                    let transaction = match overlay.transaction(id) {
                        Some(transaction) => Some(decode_transaction(&transaction.value)?),
                        None => match transactions
                            .get_or_insert(StoredTransactions::open(&txn)?)
                            .get(id)?
                        {
                            Some(bytes) => Some(decode_transaction(&bytes)?),
                            None => None,
                        },
                    };
                    let record = match transaction {
                        Some(transaction) => Some(TransactionRecord {
                            transaction,
                            reversed_by: match overlay.reversal(id) {
                                Some(reversal) => Some(reversal.value),
                                None => reversals.get(id)?.map(|v| v.value()),
                            },
                        }),
                        None => None,
                    };
                    loaded.transactions.insert(id, record);
                }
                Ok(())
            })?
        };
        steps.lap("apply");
        let ticket = |seq| CommitTicket {
            seq,
            epoch: databases.epoch,
        };
        if changes_nothing(&result.changes) {
            // Its answers may rest on batches not durable yet: it is committed with them.
            return Ok((result, ticket(journal.next_seq() - 1)));
        }

        let mut encoded = EncodedChanges::default();
        let seq = journal.write(self.checkpointed_through.load(Ordering::SeqCst), |out| {
            encoded = encode_record_into(&result.changes, out);
        })?;
        self.journaled_through.store(seq, Ordering::SeqCst);
        steps.lap("journal");
        // Before the generation can be checkpointed: from then on the table holds these keys.
        for (key, _) in &result.changes.idempotency {
            known_keys.insert(&key.scope, &key.key);
        }
        steps.lap("keys");
        let mut overlay = self.overlay.write().expect("overlay lock poisoned");
        steps.lap("overlay_lock");
        overlay.active.absorb_encoded(seq, &result.changes, encoded);
        drop(overlay);
        steps.lap("absorb");
        if let Some((total_ms, steps)) = steps.slow() {
            tracing::warn!(
                total_ms,
                batch_len = commands.len(),
                checkpoint_running = self.checkpoint_running(),
                %steps,
                "slow batch write: every request in flight waited"
            );
        }
        Ok((result, ticket(seq)))
    }

    /// Returns once what a reader found in the overlay, the newest of it written by journal
    /// record `seq` (0: nothing) in opening `epoch` of the files, is durable. A sync that fails
    /// here fails like the writer's own: the files are reopened before the next use.
    fn readable(&self, seq: u64, epoch: u64) -> Result<(), StoreError> {
        if seq == 0 {
            return Ok(());
        }
        self.wait_durable(CommitTicket { seq, epoch })
            .map_err(|error| self.write_failed(error))
    }

    /// Returns once the batch of `ticket` is durable, syncing the journal if no one has since
    /// it was written.
    fn wait_durable(&self, ticket: CommitTicket) -> Result<(), StoreError> {
        loop {
            let Some(databases) = self.healthy_databases() else {
                return Err(StoreError::Reopening);
            };
            if databases.epoch != ticket.epoch {
                // Reopening recovered whatever of it reached the disk; only a retry can tell.
                return Err(StoreError::Reopening);
            }
            if self.synced_through.load(Ordering::SeqCst) >= ticket.seq {
                return Ok(());
            }
            let _one_sync = self.sync_gate.lock().expect("sync gate poisoned");
            if self.synced_through.load(Ordering::SeqCst) >= ticket.seq {
                continue;
            }
            let started = Instant::now();
            let through = databases.journal_sync.sync()?;
            let took = started.elapsed();
            if took >= Duration::from_millis(SLOW_STEP_WARN_MS) {
                tracing::warn!(
                    total_ms = took.as_millis() as u64,
                    checkpoint_running = self.checkpoint_running(),
                    "slow journal fdatasync: every request in flight waited (the disk's own \
                     syncs stall like this now and then; see the load generator's disk phase)"
                );
            }
            self.synced_through.store(through, Ordering::SeqCst);
        }
    }

    /// True when the checkpointer has work: a generation due, or a merge of runs.
    fn checkpoint_due(&self) -> bool {
        if self.broken.load(Ordering::SeqCst) {
            return false;
        }
        self.generation_due(&self.read_overlay()) || self.merge_pending()
    }

    /// Whether a generation waits for its checkpoint: a frozen one, or an active one that
    /// waited long enough.
    fn generation_due(&self, overlay: &Overlay) -> bool {
        !overlay.frozen.is_empty()
            || (!overlay.active.is_empty() && overlay.active.age() >= self.generation_age_limit())
    }

    /// Whether a merge of runs is under way or due.
    fn merge_pending(&self) -> bool {
        self.merging.load(Ordering::SeqCst)
            || merge_due(self.runs.load(Ordering::SeqCst), self.runs_merge_at)
    }

    /// Merges runs into the main tables, one bounded commit at a time, while no frozen
    /// generation waits for its checkpoint (or while runs piled up past what reads should
    /// look through); `merge` carries a merge across calls.
    fn merge_runs(&self, merge: &mut Option<Merge>) {
        loop {
            let runs = self.runs.load(Ordering::SeqCst);
            if merge.is_none() && !merge_due(runs, self.runs_merge_at) {
                return;
            }
            // A generation frozen, or due to be, goes first: a merge can wait, the journal and
            // the memory that generations hold should not grow behind it.
            let generation_waits = self.generation_due(&self.read_overlay());
            if self.stopping.load(Ordering::SeqCst)
                || (generation_waits && !merge_urgent(runs, self.runs_merge_at))
            {
                return;
            }
            match self.merge_step(merge) {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    *merge = None;
                    self.merging.store(false, Ordering::SeqCst);
                    tracing::error!(%error, "merging runs failed; the runs stay and the files are reopened");
                    return;
                }
            }
        }
    }

    /// One commit of the merge in `merge` (started first if there is none); false when the
    /// files are not healthy.
    fn merge_step(&self, merge: &mut Option<Merge>) -> Result<bool, StoreError> {
        let Some((_gate, databases)) = self.gated_databases() else {
            return Ok(false);
        };
        let (stepped, _) = self.on_clock(|| {
            let current = match merge {
                Some(current) => current,
                None => {
                    let started = Merge::of(databases.ledger.begin_read()?.list_tables()?);
                    tracing::debug!(runs = started.runs(), "merging runs");
                    self.merging.store(true, Ordering::SeqCst);
                    merge.insert(started)
                }
            };
            if current.step(
                &databases.ledger,
                self.two_phase_commit,
                CHECKPOINT_ROWS_PER_COMMIT,
            )? {
                *merge = None;
                self.runs
                    .store(count_runs(&databases.ledger)?, Ordering::SeqCst);
                self.merging.store(false, Ordering::SeqCst);
                self.signal.notify();
            }
            Ok(())
        });
        drop(databases);
        stepped.map_err(|error| self.write_failed(error))?;
        Ok(true)
    }

    /// The checkpoint gate, held, and the open files, unless a write failed since: what every
    /// piece of checkpointer work (a checkpoint, a step of a merge) starts from.
    fn gated_databases(&self) -> Option<(std::sync::MutexGuard<'_, ()>, Arc<Databases>)> {
        let gate = self
            .checkpoint_gate
            .lock()
            .expect("checkpoint gate poisoned");
        let databases = self.healthy_databases()?;
        Some((gate, databases))
    }

    /// Whether a checkpoint is writing the ledger file right now (for diagnostics).
    fn checkpoint_running(&self) -> bool {
        self.clock().running_since.is_some()
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, CheckpointClock> {
        self.checkpoint_clock
            .lock()
            .expect("checkpoint clock poisoned")
    }

    /// Runs checkpointer work (a checkpoint, or a step of a merge) on the busy clock; returns
    /// what it returned and how long it took.
    fn on_clock<T>(&self, work: impl FnOnce() -> T) -> (T, Duration) {
        self.clock().start();
        let done = work();
        (done, self.clock().finish())
    }

    fn generation_age_limit(&self) -> Duration {
        Duration::from_millis(self.generation_age_limit_ms.load(Ordering::SeqCst))
    }

    fn run_checkpointer(&self) {
        /// Runs when the thread ends, also by a panic.
        struct Ended<'a>(&'a Shared);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.checkpointer_running.store(false, Ordering::SeqCst);
                if !self.0.stopping.load(Ordering::SeqCst) {
                    tracing::error!("the checkpointer stopped; writes fail until a restart");
                }
                self.0.signal.notify();
            }
        }
        let _ended = Ended(self);
        lower_own_priority();
        let mut merge = None;
        loop {
            self.signal
                .wait_until(Duration::from_millis(WAIT_POLL_MS), || {
                    self.stopping.load(Ordering::SeqCst) || self.checkpoint_due()
                });
            let stopping = self.stopping.load(Ordering::SeqCst);
            if !self.broken.load(Ordering::SeqCst) {
                {
                    let mut overlay = self.overlay.write().expect("overlay lock poisoned");
                    if stopping
                        || (overlay.frozen.is_empty()
                            && overlay.active.age() >= self.generation_age_limit())
                    {
                        overlay.freeze();
                    }
                }
                loop {
                    match self.checkpoint_oldest() {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(error) => {
                            tracing::error!(%error, "checkpoint failed; the journal keeps the changes and the files are reopened");
                            break;
                        }
                    }
                }
                self.merge_runs(&mut merge);
            }
            if stopping {
                self.forget_checkpointed_records();
                return;
            }
        }
    }

    /// The open files, unless a write failed since (the checkpointer never reopens them: the
    /// next caller of [`Shared::databases`] does, and recovers).
    fn healthy_databases(&self) -> Option<Arc<Databases>> {
        if self.broken.load(Ordering::SeqCst) {
            return None;
        }
        self.databases
            .read()
            .expect("database lock poisoned")
            .clone()
    }

    /// Folds the oldest frozen generation into the ledger file; false when there is none.
    fn checkpoint_oldest(&self) -> Result<bool, StoreError> {
        let Some((_gate, databases)) = self.gated_databases() else {
            return Ok(false);
        };
        let Some(generation) = self.read_overlay().frozen.front().cloned() else {
            return Ok(false);
        };
        // The writer adds batches before they are durable; the ledger file takes none of them
        // before its journal record is.
        let ticket = CommitTicket {
            seq: generation.last_seq,
            epoch: databases.epoch,
        };
        if let Err(error) = self.wait_durable(ticket) {
            return Err(self.write_failed(error));
        }
        let written_before = self.ledger_written_bytes.load(Ordering::SeqCst);
        let (written, took) = self.on_clock(|| {
            write_generation(&databases.ledger, &generation, self.two_phase_commit)
                .and_then(|()| count_runs(&databases.ledger))
        });
        self.clock().last = took;
        let written_bytes = self.ledger_written_bytes.load(Ordering::SeqCst) - written_before;
        drop(databases);
        match written {
            Ok(runs) => self.runs.store(runs, Ordering::SeqCst),
            Err(error) => return Err(self.write_failed(error)),
        }
        {
            let mut overlay = self.overlay.write().expect("overlay lock poisoned");
            let oldest = overlay.frozen.pop_front();
            assert!(
                oldest.is_some_and(|oldest| Arc::ptr_eq(&oldest, &generation)),
                "only the checkpointer removes frozen generations, oldest first"
            );
        }
        self.checkpointed_through
            .store(generation.last_seq, Ordering::SeqCst);
        let age_limit = next_generation_age(
            self.generation_age_limit(),
            self.checkpoint_interval,
            written_bytes,
            generation.weight(),
        );
        self.generation_age_limit_ms
            .store(age_limit.as_millis() as u64, Ordering::SeqCst);
        self.signal.notify();
        tracing::debug!(
            transactions = generation.transactions.len(),
            accounts = generation.accounts.len(),
            changes = generation.weight(),
            through_record = generation.last_seq,
            checkpoint_ms = took.as_millis() as u64,
            written_bytes,
            next_generation_age_ms = age_limit.as_millis() as u64,
            "checkpoint committed"
        );
        Ok(true)
    }

    /// At a clean stop, once every journal record is checkpointed: removes the journal's
    /// segments, so the ledger file alone holds the ledger.
    fn forget_checkpointed_records(&self) {
        let Some(databases) = self.healthy_databases() else {
            return;
        };
        let mut journal = databases.journal.lock().expect("journal lock poisoned");
        if self.checkpointed_through.load(Ordering::SeqCst) + 1 < journal.next_seq() {
            return;
        }
        if let Err(error) = journal.remove_all() {
            tracing::warn!(%error, "old journal segments stay until the next open");
        }
    }

    /// Folds everything committed so far into the ledger file and returns a snapshot of it
    /// that includes every batch acknowledged before this call. The snapshot is taken between
    /// checkpoints (under the gate), so it never holds part of a generation.
    fn checkpoint_everything(&self) -> Result<(Arc<Databases>, ReadTransaction), StoreError> {
        let target = {
            let mut overlay = self.overlay.write().expect("overlay lock poisoned");
            overlay.freeze();
            overlay.frozen.back().map(|generation| generation.last_seq)
        };
        if let Some(target) = target {
            self.signal.notify();
            while self.checkpointed_through.load(Ordering::SeqCst) < target {
                if self.broken.load(Ordering::SeqCst) {
                    // Reopening recovers every durable journal record into the ledger file.
                    self.databases()?;
                    continue;
                }
                if !self.checkpointer_running.load(Ordering::SeqCst) {
                    return Err(StoreError::CheckpointerStopped);
                }
                self.wait_for_checkpointer(|| {
                    self.checkpointed_through.load(Ordering::SeqCst) >= target
                });
            }
        }
        let databases = self.databases()?;
        let _between_checkpoints = self
            .checkpoint_gate
            .lock()
            .expect("checkpoint gate poisoned");
        let snapshot = databases.ledger.begin_read()?;
        Ok((databases, snapshot))
    }

    fn read_transactions(
        stored: &StoredTransactions,
        ids: impl Iterator<Item = u64>,
    ) -> Result<Vec<Transaction>, StoreError> {
        let mut transactions = Vec::new();
        for id in ids {
            let bytes = stored.get(id)?.ok_or_else(|| StoreError::Corrupt {
                what: format!("history entry for transaction {id}"),
                detail: "the transaction is missing".to_owned(),
            })?;
            transactions.push(decode("transaction", &bytes)?);
        }
        Ok(transactions)
    }

    /// A player's history from the overlay and the ledger file, by version: the `limit`
    /// newest below `before` (`newest: true`) or the `limit` oldest from `from`.
    fn history(
        &self,
        player: &AccountId,
        versions: (u64, u64),
        newest: bool,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let (from, to_inclusive) = versions;
        let databases = self.databases()?;
        let (mut found, written_by) =
            self.read_overlay()
                .history(player, from..=to_inclusive, newest, limit)?;
        self.readable(written_by, databases.epoch)?;
        let txn = databases.ledger.begin_read()?;
        let name = player.as_str();
        // From the main table and every run: `limit` from each covers the `limit` of all.
        let mut stored: Vec<(u64, u64)> = Vec::with_capacity(limit.min(1024));
        // Both kinds of history (rows and chunks) from one listing of the snapshot's tables.
        let listed: Vec<UntypedTableHandle> = txn.list_tables()?.collect();
        for history in main_and_runs_among::<HistoryRows>(&txn, &listed)? {
            let range = history.range((name, from)..=(name, to_inclusive))?;
            let entries: Box<dyn Iterator<Item = _>> = if newest {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for entry in entries.take(limit) {
                let (key, id) = entry?;
                stored.push((key.value().1, id.value()));
            }
        }
        for chunks in main_and_runs_among::<HistoryChunkRows>(&txn, &listed)? {
            chunk_history(
                &chunks,
                name,
                (from, to_inclusive),
                newest,
                limit,
                &mut stored,
            )?;
        }
        // Only the transactions that make the cut are read.
        let mut versions: BTreeMap<u64, Option<u64>> =
            found.keys().map(|version| (*version, None)).collect();
        for (version, id) in stored {
            versions.entry(version).or_insert(Some(id));
        }
        keep_ends(&mut versions, newest, limit);
        let transactions = StoredTransactions::open(&txn)?;
        let to_read: Vec<(u64, u64)> = versions
            .iter()
            .filter_map(|(version, id)| id.map(|id| (*version, id)))
            .collect();
        let read = Self::read_transactions(&transactions, to_read.iter().map(|(_, id)| *id))?;
        for ((version, _), transaction) in to_read.into_iter().zip(read) {
            found.insert(version, transaction);
        }
        keep_ends(&mut found, newest, limit);
        Ok(if newest {
            found.into_values().rev().collect()
        } else {
            found.into_values().collect()
        })
    }
}

impl Store for RedbStore {
    fn commit_batch(
        &self,
        commands: &[Command],
        catalog: &Catalog,
        now_unix_ms: i64,
    ) -> Result<BatchResult, StoreError> {
        let (result, ticket) = self.write_batch(commands, catalog, now_unix_ms)?;
        self.wait_durable(ticket)?;
        Ok(result)
    }

    fn write_batch(
        &self,
        commands: &[Command],
        catalog: &Catalog,
        now_unix_ms: i64,
    ) -> Result<(BatchResult, CommitTicket), StoreError> {
        self.shared
            .write_batch(commands, catalog, now_unix_ms)
            .map_err(|error| self.shared.write_failed(error))
    }

    fn wait_durable(&self, ticket: CommitTicket) -> Result<(), StoreError> {
        self.shared
            .wait_durable(ticket)
            .map_err(|error| self.shared.write_failed(error))
    }

    fn save_catalog(&self, catalog: &StoredCatalog) -> Result<(), StoreError> {
        let saved = (|| {
            let databases = self.shared.databases()?;
            let mut txn = databases.ledger.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.set_two_phase_commit(self.shared.two_phase_commit);
            {
                let mut meta = txn.open_table(META)?;
                let value = encode(&(catalog.version, catalog.source_toml.as_str()));
                meta.insert(CATALOG, value.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })();
        saved.map_err(|error| self.shared.write_failed(error))
    }

    fn stored_catalog(&self) -> Result<Option<StoredCatalog>, StoreError> {
        let txn = self.shared.databases()?.ledger.begin_read()?;
        let meta = txn.open_table(META)?;
        let Some(bytes) = meta.get(CATALOG)? else {
            return Ok(None);
        };
        let (version, source_toml): (u64, String) = decode("catalog", bytes.value())?;
        Ok(Some(StoredCatalog {
            version,
            source_toml,
        }))
    }

    fn account(&self, id: &AccountId) -> Result<Option<AccountState>, StoreError> {
        let databases = self.shared.databases()?;
        let in_memory = self.shared.read_overlay().account(id).cloned();
        if let Some(state) = in_memory {
            self.shared.readable(state.seq, databases.epoch)?;
            return Ok(Some(decode("account", &state.value)?));
        }
        let txn = databases.ledger.begin_read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        match accounts.get(id.as_str())? {
            Some(bytes) => Ok(Some(decode("account", bytes.value())?)),
            None => Ok(None),
        }
    }

    fn transaction(&self, id: u64) -> Result<Option<TransactionRecord>, StoreError> {
        let databases = self.shared.databases()?;
        let (in_memory, reversed_in_memory) = {
            let overlay = self.shared.read_overlay();
            (overlay.transaction(id).cloned(), overlay.reversal(id))
        };
        let written_by = in_memory.as_ref().map_or(0, |t| t.seq);
        let reversal_written_by = reversed_in_memory.as_ref().map_or(0, |r| r.seq);
        self.shared
            .readable(written_by.max(reversal_written_by), databases.epoch)?;
        let txn = databases.ledger.begin_read()?;
        let transaction = match in_memory {
            Some(transaction) => decode_transaction(&transaction.value)?,
            None => match StoredTransactions::open(&txn)?.get(id)? {
                Some(bytes) => decode_transaction(&bytes)?,
                None => return Ok(None),
            },
        };
        let reversed_by = match reversed_in_memory {
            Some(reversal) => Some(reversal.value),
            None => txn.open_table(REVERSALS)?.get(id)?.map(|v| v.value()),
        };
        Ok(Some(TransactionRecord {
            transaction,
            reversed_by,
        }))
    }

    fn checkpoint_status(&self) -> Option<CheckpointStatus> {
        let journaled = self.journaled_through();
        let clock = self.shared.clock();
        Some(CheckpointStatus {
            journal_records_pending: journaled.saturating_sub(self.checkpointed_through()),
            frozen_generations: self.shared.read_overlay().frozen.len() as u64,
            last_checkpoint_ms: clock.last.as_millis() as u64,
            checkpoint_busy_us_total: clock.busy_total().as_micros() as u64,
            ledger_written_bytes_total: self.shared.ledger_written_bytes.load(Ordering::SeqCst),
            generation_age_limit_ms: self.shared.generation_age_limit_ms.load(Ordering::SeqCst),
            sorted_runs: self.shared.runs.load(Ordering::SeqCst) as u64,
            merge_pending: self.shared.merge_pending(),
        })
    }

    fn history_before(
        &self,
        player: &AccountId,
        before_version: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let Some(last) = before_version.checked_sub(1) else {
            return Ok(Vec::new());
        };
        self.shared.history(player, (0, last), true, limit)
    }

    fn history_after(
        &self,
        player: &AccountId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let Some(start) = after_version.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.shared.history(player, (start, u64::MAX), false, limit)
    }

    fn transactions_after(
        &self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let Some(start) = after_id.checked_add(1) else {
            return Ok(Vec::new());
        };
        let databases = self.shared.databases()?;
        let (mut found, written_by) = self.shared.read_overlay().transactions_in(start.., limit)?;
        self.shared.readable(written_by, databases.epoch)?;
        let txn = databases.ledger.begin_read()?;
        let transactions = StoredTransactions::open(&txn)?;
        for entry in transactions.from(start)?.take(limit) {
            let (id, bytes) = entry?;
            if let std::collections::btree_map::Entry::Vacant(slot) = found.entry(id) {
                slot.insert(decode("transaction", &bytes)?);
            }
        }
        keep_ends(&mut found, false, limit);
        Ok(found.into_values().collect())
    }

    fn verify(&self, catalog: &Catalog) -> Result<VerifyReport, StoreError> {
        let (_databases, txn) = self.shared.checkpoint_everything()?;
        let transactions = StoredTransactions::open(&txn)?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let meta = txn.open_table(META)?;
        let mut verifier = Verifier::new(catalog);
        for entry in transactions.from(0)? {
            let (_, bytes) = entry?;
            verifier.transaction(&decode::<Transaction>("transaction", &bytes)?);
        }
        for entry in accounts.iter()? {
            let (name, bytes) = entry?;
            let state: AccountState = decode("account", bytes.value())?;
            verifier.account(&AccountId::from_stored(name.value()), &state);
        }
        let mut report = verifier.finish();
        let next_id: u64 = match meta.get(NEXT_TRANSACTION_ID)? {
            Some(bytes) => decode("next transaction id", bytes.value())?,
            None => 1,
        };
        if next_id != report.transactions_checked + 1 {
            report.violation_count += 1;
            report.violations.push(format!(
                "next transaction id is {next_id}, but {} transactions are stored",
                report.transactions_checked
            ));
        }
        Ok(report)
    }

    fn export(
        &self,
        sink: &mut dyn FnMut(LedgerRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (_databases, txn) = self.shared.checkpoint_everything()?;
        let meta = txn.open_table(META)?;
        if let Some(bytes) = meta.get(CATALOG)? {
            let (version, source_toml): (u64, String) = decode("catalog", bytes.value())?;
            sink(LedgerRecord::Catalog {
                version,
                source_toml,
            })?;
        }
        let transactions = StoredTransactions::open(&txn)?;
        let reversals = txn.open_table(REVERSALS)?;
        for entry in transactions.from(0)? {
            let (id, bytes) = entry?;
            let reversed_by = reversals.get(id)?.map(|v| v.value());
            sink(LedgerRecord::Transaction {
                transaction: decode("transaction", &bytes)?,
                reversed_by,
            })?;
        }
        for entry in txn.open_table(ACCOUNTS)?.iter()? {
            let (name, bytes) = entry?;
            sink(LedgerRecord::Account {
                account_id: name.value().to_owned(),
                state: decode("account", bytes.value())?,
            })?;
        }
        // A key a merge part-way left in both a run and the main table is exported once.
        let idempotency = main_and_runs::<IdempotencyRows>(&txn)?;
        for entry in distinct::<IdempotencyRows, _>(&idempotency)? {
            let ((scope, key), outcome) = entry?;
            sink(LedgerRecord::Idempotency {
                scope,
                key,
                outcome: decode("idempotency outcome", &outcome)?,
            })?;
        }
        Ok(())
    }

    fn import(
        &self,
        records: &mut dyn Iterator<Item = Result<LedgerRecord, StoreError>>,
    ) -> Result<u64, StoreError> {
        let databases = self.shared.databases()?;
        {
            // Journal records are folded in at open, and later ones are in the overlay.
            let txn = databases.ledger.begin_read()?;
            if txn.open_table(META)?.get(NEXT_TRANSACTION_ID)?.is_some()
                || txn.open_table(ACCOUNTS)?.iter()?.next().is_some()
                || self.shared.read_overlay().next_transaction_id().is_some()
            {
                return Err(StoreError::NotEmpty);
            }
        }
        let mut next_id = 1u64;
        let mut records = records.peekable();
        while records.peek().is_some() {
            let mut txn = databases.ledger.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut meta = txn.open_table(META)?;
                let mut transactions = txn.open_table(TRANSACTIONS)?;
                let mut history = txn.open_table(HISTORY)?;
                let mut reversals = txn.open_table(REVERSALS)?;
                let mut accounts = txn.open_table(ACCOUNTS)?;
                let mut idempotency = txn.open_table(IDEMPOTENCY)?;
                let mut known_keys = databases.known_keys.lock().expect("key filter poisoned");
                for record in records.by_ref().take(IMPORT_CHUNK_LEN) {
                    match record? {
                        LedgerRecord::Catalog {
                            version,
                            source_toml,
                        } => {
                            meta.insert(
                                CATALOG,
                                encode(&(version, source_toml.as_str())).as_slice(),
                            )?;
                        }
                        LedgerRecord::Transaction {
                            transaction,
                            reversed_by,
                        } => {
                            check_import_order(&mut next_id, &transaction)?;
                            transactions.insert(transaction.id, encode(&transaction).as_slice())?;
                            for (account, version) in &transaction.account_versions {
                                history.insert((account.as_str(), *version), transaction.id)?;
                            }
                            if let Some(reversal) = reversed_by {
                                reversals.insert(transaction.id, reversal)?;
                            }
                        }
                        LedgerRecord::Account { account_id, state } => {
                            accounts.insert(account_id.as_str(), encode(&state).as_slice())?;
                        }
                        LedgerRecord::Idempotency {
                            scope,
                            key,
                            outcome,
                        } => {
                            known_keys.insert(&scope, &key);
                            idempotency.insert(
                                (scope.as_str(), key.as_str()),
                                encode(&outcome).as_slice(),
                            )?;
                        }
                    }
                }
                meta.insert(NEXT_TRANSACTION_ID, encode(&next_id).as_slice())?;
            }
            txn.commit()?;
        }
        Ok(next_id - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_prefixes_never_order_two_texts_the_other_way() {
        let texts = [
            "",
            "a",
            "a\u{1}",
            "ab",
            "b",
            "player:p1",
            "player:p10",
            "player:p1000000000",
            "player:p1000000001",
            "player:p100000000",
            "player:p2",
            "player:p2x",
            "zz",
        ];
        for a in texts {
            for b in texts {
                let (prefix, full) = (order_prefix(a).cmp(&order_prefix(b)), a.cmp(b));
                assert!(
                    prefix == full || prefix.is_eq(),
                    "{a:?} {b:?}: {prefix:?} {full:?}"
                );
            }
        }
    }
    use coffer_core::{IdempotencyKey, Operation};

    #[test]
    fn a_step_clock_tells_where_a_slow_whole_went_and_stays_quiet_otherwise() {
        let ms = Duration::from_millis;
        let quick_enough = ms(SLOW_STEP_WARN_MS) - Duration::from_micros(1);
        let mut quick = StepClock::start();
        let started = quick.started;
        quick.lap_at("a", started + ms(1));
        quick.lap_at("b", started + quick_enough);
        assert!(quick.slow().is_none());

        let mut slow = StepClock::start();
        let started = slow.started;
        slow.lap_at("quick", started + ms(1));
        slow.lap_at("stall", started + ms(1 + SLOW_STEP_WARN_MS));
        // More steps than it keeps: the later ones fold into the last, 1 ms each.
        for step in 1..=STEP_LAPS_MAX as u64 {
            slow.lap_at("more", started + ms(1 + SLOW_STEP_WARN_MS + step));
        }
        let (total_ms, steps) = slow.slow().expect("slow");
        assert_eq!(total_ms, 1 + SLOW_STEP_WARN_MS + STEP_LAPS_MAX as u64);
        let folded = STEP_LAPS_MAX - 2 - 1;
        let mut expected = format!("quick=1000us stall={}us", SLOW_STEP_WARN_MS * 1_000);
        for _ in 0..folded {
            expected.push_str(" more=1000us");
        }
        expected.push_str(&format!(" more={}us", (STEP_LAPS_MAX - folded) * 1_000));
        assert_eq!(steps, expected);
    }

    #[test]
    fn a_journal_of_the_earlier_redb_format_is_folded_in_and_removed() {
        let catalog = Catalog::from_toml(
            "version = 1\n[currencies.coins]\ndecimals = 0\ninitial_balance_minor_units = 0\n",
        )
        .unwrap();
        let grant = Command {
            idempotency_key: IdempotencyKey::player("ann", "g"),
            operation: Operation::Grant {
                player_id: "ann".into(),
                contents: coffer_core::Contents {
                    currencies: [("coins".into(), 7)].into(),
                    items: Default::default(),
                },
            },
            caller: "test".into(),
            reason: Default::default(),
        };
        // A batch's changes, as an earlier version journaled them.
        let elsewhere = tempfile::tempdir().unwrap();
        let changes = RedbStore::open(elsewhere.path())
            .unwrap()
            .commit_batch(&[grant], &catalog, 1)
            .unwrap()
            .changes;

        let dir = tempfile::tempdir().unwrap();
        drop(RedbStore::open(dir.path()).unwrap());
        {
            let legacy = Database::create(dir.path().join(LEGACY_JOURNAL_FILE_NAME)).unwrap();
            let txn = legacy.begin_write().unwrap();
            let mut record = Vec::new();
            encode_record_into(&changes, &mut record);
            txn.open_table(LEGACY_JOURNAL)
                .unwrap()
                .insert(1, record.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let ann = store.account(&AccountId::player("ann")).unwrap().unwrap();
        assert_eq!(ann.balance("coins"), 7);
        assert!(!dir.path().join(LEGACY_JOURNAL_FILE_NAME).exists());
        assert!(store.verify(&catalog).unwrap().is_clean());
    }
}
