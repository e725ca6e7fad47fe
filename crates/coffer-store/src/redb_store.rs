//! The embedded default: one redb file. Every batch is one write transaction with
//! `Durability::Immediate` and two-phase commit, so an acknowledged batch survives power loss.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use coffer_core::{
    AccountId, AccountState, BatchResult, Catalog, Command, IdempotencyKey, LoadedState,
    StoredOutcome, Transaction, TransactionRecord, Verifier, VerifyReport,
};

use crate::faults::{FaultyFile, StorageFaults};
use crate::record::{decode, encode};
use crate::{
    IMPORT_CHUNK_LEN, LedgerRecord, Store, StoreError, StoredCatalog, check_import_order,
    prepare_and_apply,
};

/// The database file inside the data directory.
pub const DATABASE_FILE_NAME: &str = "coffer.redb";

/// Account name → encoded `AccountState`.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// Transaction id → encoded `Transaction`. Ids are dense and increasing, so appends are sequential.
const TRANSACTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("transactions");
/// (player, version) → transaction id: history and Subscribe catch-up.
const HISTORY: TableDefinition<(&str, u64), u64> = TableDefinition::new("account_history");
/// (scope, key) → encoded `StoredOutcome`.
const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency");
/// Original transaction id → id of its reversal.
const REVERSALS: TableDefinition<u64, u64> = TableDefinition::new("reversals");
/// Named values: `next_transaction_id`, `catalog`.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const NEXT_TRANSACTION_ID: &str = "next_transaction_id";
const CATALOG: &str = "catalog";

/// Most account states kept in [`AccountCache`] (a few hundred bytes each).
pub const ACCOUNT_CACHE_LEN_MAX: usize = 262_144;

/// The redb-backed [`Store`].
pub struct RedbStore {
    /// `None` while a reopen after an I/O error has not succeeded yet.
    db: RwLock<Option<Arc<Database>>>,
    /// Set by a failed write: redb refuses further work after an I/O error until the database
    /// is opened again, which also recovers the last durable commit from the file.
    broken: AtomicBool,
    path: PathBuf,
    faults: Option<StorageFaults>,
    two_phase_commit: bool,
    accounts: Mutex<AccountCache>,
}

/// How a [`RedbStore`] commits.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// Every commit is durable (`fsync`ed) before it is acknowledged either way. With two-phase
    /// commit redb writes and syncs the data, then flips and syncs the commit slot (two syncs);
    /// without it, one sync covers data and a checksummed commit slot, and recovery falls back
    /// to the previous slot if the checksum does not match. redb's documentation names one
    /// weakness of the one-sync form: a workload crafted to collide the (non-cryptographic)
    /// checksum, together with a crash at the right moment.
    pub two_phase_commit: bool,
    /// Puts every file operation behind this fault switch (reliability tests only).
    pub faults: Option<StorageFaults>,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            two_phase_commit: TWO_PHASE_COMMIT_DEFAULT,
            faults: None,
        }
    }
}

/// Whether commits use redb's two-phase commit unless told otherwise.
pub const TWO_PHASE_COMMIT_DEFAULT: bool = true;

/// Account states as of the last commit, for the writer. The system accounts are in every batch
/// and players buy in bursts, so most loads never reach the B-tree. Only `commit_batch` uses it,
/// and it learns a batch's states only after that batch's commit succeeded, so it never holds
/// anything that is not on disk. This process is the file's only writer (redb locks the file).
#[derive(Default)]
struct AccountCache {
    states: HashMap<AccountId, Option<AccountState>>,
}

impl AccountCache {
    fn remember(&mut self, id: &AccountId, state: Option<AccountState>) {
        if self.states.len() >= ACCOUNT_CACHE_LEN_MAX && !self.states.contains_key(id) {
            // Forgetting players wholesale is crude but O(1) amortized; system accounts stay.
            self.states.retain(|id, _| id.is_system());
        }
        self.states.insert(id.clone(), state);
    }
}

impl RedbStore {
    /// Opens (or creates) `coffer.redb` in `data_dir`, creating the directory if needed.
    pub fn open(data_dir: &Path) -> Result<RedbStore, StoreError> {
        Self::open_with(data_dir, RedbOptions::default())
    }

    /// Like [`RedbStore::open`], with these options.
    pub fn open_with(data_dir: &Path, options: RedbOptions) -> Result<RedbStore, StoreError> {
        let RedbOptions {
            two_phase_commit,
            faults,
        } = options;
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDirectory {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(DATABASE_FILE_NAME);
        let db = open_database(&path, faults.as_ref())?;
        let store = RedbStore {
            db: RwLock::new(Some(Arc::new(db))),
            broken: AtomicBool::new(false),
            path,
            faults,
            two_phase_commit,
            accounts: Mutex::default(),
        };
        store.create_tables()?;
        Ok(store)
    }

    /// The open database, reopened first if a write failed since.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            self.reopen()?;
        }
        match &*self.db.read().expect("database lock poisoned") {
            Some(db) => Ok(Arc::clone(db)),
            None => Err(StoreError::Reopening),
        }
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().expect("database lock poisoned");
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        // The old handle must close (and release the file lock) before the file opens again.
        if let Some(old) = slot.take()
            && let Err(still_used) = Arc::try_unwrap(old)
        {
            *slot = Some(still_used);
            return Err(StoreError::Reopening);
        }
        let db = open_database(&self.path, self.faults.as_ref())?;
        *slot = Some(Arc::new(db));
        self.broken.store(false, Ordering::SeqCst);
        tracing::warn!(path = %self.path.display(), "database reopened after a storage error");
        Ok(())
    }

    /// Records that a write failed: the next call reopens the database, and the account cache
    /// is dropped, as the file (not this process) now says what was committed.
    fn write_failed(&self, error: StoreError) -> StoreError {
        self.broken.store(true, Ordering::SeqCst);
        self.accounts
            .lock()
            .expect("account cache poisoned")
            .states
            .clear();
        error
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(ACCOUNTS)?;
        txn.open_table(TRANSACTIONS)?;
        txn.open_table(HISTORY)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(REVERSALS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }

    fn read_transactions(
        table: &impl ReadableTable<u64, &'static [u8]>,
        ids: impl Iterator<Item = u64>,
    ) -> Result<Vec<Transaction>, StoreError> {
        let mut transactions = Vec::new();
        for id in ids {
            let bytes = table.get(id)?.ok_or_else(|| StoreError::Corrupt {
                what: format!("history entry for transaction {id}"),
                detail: "the transaction is missing".to_owned(),
            })?;
            transactions.push(decode("transaction", bytes.value())?);
        }
        Ok(transactions)
    }
}

/// Opens the file, through the fault switch when there is one.
fn open_database(path: &Path, faults: Option<&StorageFaults>) -> Result<Database, StoreError> {
    let opened = match faults {
        None => Database::create(path),
        Some(faults) => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(redb::DatabaseError::from)
            .and_then(|file| FaultyFile::new(file, faults.clone()))
            .and_then(|file| Database::builder().create_with_backend(file)),
    };
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

impl RedbStore {
    fn try_commit_batch(
        &self,
        commands: &[Command],
        catalog: &Catalog,
        now_unix_ms: i64,
    ) -> Result<BatchResult, StoreError> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_two_phase_commit(self.two_phase_commit);
        let mut cache = self.accounts.lock().expect("account cache poisoned");
        let mut fetched = Vec::new();
        let result = {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            let mut transactions = txn.open_table(TRANSACTIONS)?;
            let mut history = txn.open_table(HISTORY)?;
            let mut idempotency = txn.open_table(IDEMPOTENCY)?;
            let mut reversals = txn.open_table(REVERSALS)?;
            let mut meta = txn.open_table(META)?;

            let next_transaction_id = match meta.get(NEXT_TRANSACTION_ID)? {
                Some(bytes) => decode("next transaction id", bytes.value())?,
                None => 1u64,
            };
            let loaded = LoadedState {
                next_transaction_id,
                ..LoadedState::default()
            };
            let result =
                prepare_and_apply(commands, catalog, now_unix_ms, loaded, |missing, loaded| {
                    for id in &missing.accounts {
                        let state = match cache.states.get(id) {
                            Some(state) => state.clone(),
                            None => {
                                let state = match accounts.get(id.as_str())? {
                                    Some(bytes) => {
                                        Some(decode::<AccountState>("account", bytes.value())?)
                                    }
                                    None => None,
                                };
                                fetched.push((id.clone(), state.clone()));
                                state
                            }
                        };
                        loaded.accounts.insert(id.clone(), state);
                    }
                    for key in &missing.idempotency_keys {
                        let outcome =
                            match idempotency.get((key.scope.as_str(), key.key.as_str()))? {
                                Some(bytes) => Some(decode::<StoredOutcome>(
                                    "idempotency outcome",
                                    bytes.value(),
                                )?),
                                None => None,
                            };
                        loaded.idempotency.insert(key.clone(), outcome);
                    }
                    for id in &missing.transactions {
                        let record = match transactions.get(*id)? {
                            Some(bytes) => Some(TransactionRecord {
                                transaction: decode("transaction", bytes.value())?,
                                reversed_by: reversals.get(*id)?.map(|v| v.value()),
                            }),
                            None => None,
                        };
                        loaded.transactions.insert(*id, record);
                    }
                    Ok(())
                })?;

            let changes = &result.changes;
            for (id, state) in &changes.accounts {
                accounts.insert(id.as_str(), encode(state).as_slice())?;
            }
            for transaction in &changes.transactions {
                transactions.insert(transaction.id, encode(transaction).as_slice())?;
                for (account, version) in &transaction.account_versions {
                    history.insert((account.as_str(), *version), transaction.id)?;
                }
            }
            for (original, reversal) in &changes.reversals {
                reversals.insert(*original, *reversal)?;
            }
            for (IdempotencyKey { scope, key }, outcome) in &changes.idempotency {
                idempotency.insert((scope.as_str(), key.as_str()), encode(outcome).as_slice())?;
            }
            meta.insert(
                NEXT_TRANSACTION_ID,
                encode(&changes.next_transaction_id).as_slice(),
            )?;
            result
        };
        txn.commit()?;
        for (id, state) in fetched {
            cache.remember(&id, state);
        }
        for (id, state) in &result.changes.accounts {
            cache.remember(id, Some(state.clone()));
        }
        Ok(result)
    }

    fn try_save_catalog(&self, catalog: &StoredCatalog) -> Result<(), StoreError> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_two_phase_commit(self.two_phase_commit);
        {
            let mut meta = txn.open_table(META)?;
            let value = encode(&(catalog.version, catalog.source_toml.as_str()));
            meta.insert(CATALOG, value.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn commit_batch(
        &self,
        commands: &[Command],
        catalog: &Catalog,
        now_unix_ms: i64,
    ) -> Result<BatchResult, StoreError> {
        self.try_commit_batch(commands, catalog, now_unix_ms)
            .map_err(|error| self.write_failed(error))
    }

    fn save_catalog(&self, catalog: &StoredCatalog) -> Result<(), StoreError> {
        self.try_save_catalog(catalog)
            .map_err(|error| self.write_failed(error))
    }

    fn stored_catalog(&self) -> Result<Option<StoredCatalog>, StoreError> {
        let txn = self.db()?.begin_read()?;
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
        let txn = self.db()?.begin_read()?;
        let accounts = txn.open_table(ACCOUNTS)?;
        match accounts.get(id.as_str())? {
            Some(bytes) => Ok(Some(decode("account", bytes.value())?)),
            None => Ok(None),
        }
    }

    fn transaction(&self, id: u64) -> Result<Option<TransactionRecord>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let transactions = txn.open_table(TRANSACTIONS)?;
        let reversals = txn.open_table(REVERSALS)?;
        let Some(bytes) = transactions.get(id)? else {
            return Ok(None);
        };
        Ok(Some(TransactionRecord {
            transaction: decode("transaction", bytes.value())?,
            reversed_by: reversals.get(id)?.map(|v| v.value()),
        }))
    }

    fn history_before(
        &self,
        player: &AccountId,
        before_version: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let history = txn.open_table(HISTORY)?;
        let transactions = txn.open_table(TRANSACTIONS)?;
        let name = player.as_str();
        let mut ids = Vec::with_capacity(limit);
        for entry in history
            .range((name, 0)..(name, before_version))?
            .rev()
            .take(limit)
        {
            ids.push(entry?.1.value());
        }
        Self::read_transactions(&transactions, ids.into_iter())
    }

    fn history_after(
        &self,
        player: &AccountId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let history = txn.open_table(HISTORY)?;
        let transactions = txn.open_table(TRANSACTIONS)?;
        let name = player.as_str();
        let Some(start) = after_version.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::with_capacity(limit);
        for entry in history.range((name, start)..=(name, u64::MAX))?.take(limit) {
            ids.push(entry?.1.value());
        }
        Self::read_transactions(&transactions, ids.into_iter())
    }

    fn transactions_after(
        &self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let transactions = txn.open_table(TRANSACTIONS)?;
        let Some(start) = after_id.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::with_capacity(limit.min(1024));
        for entry in transactions.range(start..)?.take(limit) {
            found.push(decode("transaction", entry?.1.value())?);
        }
        Ok(found)
    }

    fn verify(&self, catalog: &Catalog) -> Result<VerifyReport, StoreError> {
        let txn = self.db()?.begin_read()?;
        let transactions = txn.open_table(TRANSACTIONS)?;
        let accounts = txn.open_table(ACCOUNTS)?;
        let meta = txn.open_table(META)?;
        let mut verifier = Verifier::new(catalog);
        for entry in transactions.iter()? {
            let (_, bytes) = entry?;
            verifier.transaction(&decode::<Transaction>("transaction", bytes.value())?);
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
        let txn = self.db()?.begin_read()?;
        let meta = txn.open_table(META)?;
        if let Some(bytes) = meta.get(CATALOG)? {
            let (version, source_toml): (u64, String) = decode("catalog", bytes.value())?;
            sink(LedgerRecord::Catalog {
                version,
                source_toml,
            })?;
        }
        let transactions = txn.open_table(TRANSACTIONS)?;
        let reversals = txn.open_table(REVERSALS)?;
        for entry in transactions.iter()? {
            let (id, bytes) = entry?;
            let reversed_by = reversals.get(id.value())?.map(|v| v.value());
            sink(LedgerRecord::Transaction {
                transaction: decode("transaction", bytes.value())?,
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
        for entry in txn.open_table(IDEMPOTENCY)?.iter()? {
            let (key, bytes) = entry?;
            let (scope, key) = key.value();
            sink(LedgerRecord::Idempotency {
                scope: scope.to_owned(),
                key: key.to_owned(),
                outcome: decode("idempotency outcome", bytes.value())?,
            })?;
        }
        Ok(())
    }

    fn import(
        &self,
        records: &mut dyn Iterator<Item = Result<LedgerRecord, StoreError>>,
    ) -> Result<u64, StoreError> {
        {
            let txn = self.db()?.begin_read()?;
            if txn.open_table(META)?.get(NEXT_TRANSACTION_ID)?.is_some()
                || txn.open_table(ACCOUNTS)?.iter()?.next().is_some()
            {
                return Err(StoreError::NotEmpty);
            }
        }
        let mut next_id = 1u64;
        let mut records = records.peekable();
        while records.peek().is_some() {
            let mut txn = self.db()?.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut meta = txn.open_table(META)?;
                let mut transactions = txn.open_table(TRANSACTIONS)?;
                let mut history = txn.open_table(HISTORY)?;
                let mut reversals = txn.open_table(REVERSALS)?;
                let mut accounts = txn.open_table(ACCOUNTS)?;
                let mut idempotency = txn.open_table(IDEMPOTENCY)?;
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
