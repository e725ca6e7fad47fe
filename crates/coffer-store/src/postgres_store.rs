//! PostgreSQL storage, for several stateless Coffer nodes sharing one database (PostgreSQL or a
//! compatible distributed database). Each node still batches: one database transaction per
//! batch. Batches from all nodes are serialized on the single `ledger_head` row, taken first in
//! every write, which keeps transaction ids dense and the ledger in one total order; account rows
//! are then locked `FOR UPDATE` in sorted order. After each commit a `NOTIFY` tells the other
//! nodes, so their `Subscribe` streams see every change.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use coffer_core::{
    AccountId, AccountState, BatchResult, Catalog, Command, IdempotencyKey, LoadedState,
    StoredOutcome, Transaction, TransactionRecord, Verifier, VerifyReport,
};

use crate::record::{decode, decode_transaction, encode};
use crate::{
    IMPORT_CHUNK_LEN, LedgerRecord, Store, StoreError, StoredCatalog, check_import_order,
    prepare_and_apply,
};

/// The channel commits are announced on.
pub const COMMIT_CHANNEL: &str = "coffer_commits";
/// Idle read connections kept open.
pub const READ_POOL_LEN_MAX: usize = 8;
/// Transactions loaded per query while verifying or catching up.
const SCAN_PAGE_LEN: i64 = 10_000;
/// Serializes schema migrations across nodes starting at once.
const MIGRATION_LOCK_KEY: i64 = 0x00c0_ffe0;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS coffer_ledger_head (
    id INT PRIMARY KEY CHECK (id = 1),
    next_transaction_id BIGINT NOT NULL
);
INSERT INTO coffer_ledger_head (id, next_transaction_id) VALUES (1, 1) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS coffer_accounts (
    account_id TEXT PRIMARY KEY,
    state BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS coffer_transactions (
    id BIGINT PRIMARY KEY,
    body BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS coffer_account_history (
    account_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    transaction_id BIGINT NOT NULL,
    PRIMARY KEY (account_id, version)
);
CREATE TABLE IF NOT EXISTS coffer_idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    outcome BYTEA NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS coffer_reversals (
    original_id BIGINT PRIMARY KEY,
    reversal_id BIGINT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS coffer_catalog (
    id INT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL,
    source TEXT NOT NULL
);
";

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> Self {
        StoreError::Postgres(error.to_string())
    }
}

fn id_i64(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::Corrupt {
        what: "id".to_owned(),
        detail: format!("{id} exceeds BIGINT"),
    })
}

/// The PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    url: String,
    writer: Mutex<Client>,
    readers: Mutex<Vec<Client>>,
}

impl PostgresStore {
    /// Connects to `url` (e.g. `postgres://postgres@127.0.0.1:5432/coffer`) and runs the embedded
    /// schema migrations.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let mut writer = Client::connect(url, NoTls)?;
        let mut txn = writer.transaction()?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
        txn.batch_execute(SCHEMA)?;
        txn.commit()?;
        Ok(PostgresStore {
            url: url.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn read<T>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().expect("reader pool poisoned").pop();
        let mut client = match pooled {
            Some(client) if !client.is_closed() => client,
            _ => Client::connect(&self.url, NoTls)?,
        };
        let result = work(&mut client);
        let mut readers = self.readers.lock().expect("reader pool poisoned");
        if readers.len() < READ_POOL_LEN_MAX && !client.is_closed() {
            readers.push(client);
        }
        result
    }

    fn transactions_by_id(
        client: &mut impl postgres::GenericClient,
        ids: &[i64],
    ) -> Result<Vec<Transaction>, StoreError> {
        let rows = client.query(
            "SELECT id, body FROM coffer_transactions WHERE id = ANY($1)",
            &[&ids],
        )?;
        let mut by_id: std::collections::HashMap<i64, Transaction> =
            std::collections::HashMap::new();
        for row in rows {
            by_id.insert(row.get(0), decode("transaction", row.get::<_, &[u8]>(1))?);
        }
        ids.iter()
            .map(|id| {
                by_id.remove(id).ok_or_else(|| StoreError::Corrupt {
                    what: format!("history entry for transaction {id}"),
                    detail: "the transaction is missing".to_owned(),
                })
            })
            .collect()
    }
}

impl Store for PostgresStore {
    fn commit_batch(
        &self,
        commands: &[Command],
        catalog: &Catalog,
        now_unix_ms: i64,
    ) -> Result<BatchResult, StoreError> {
        let mut client = self.writer.lock().expect("writer connection poisoned");
        if client.is_closed() {
            *client = Client::connect(&self.url, NoTls)?;
        }
        let mut txn = client.transaction()?;
        // Taken first by every batch of every node: the one total order of the ledger.
        let head = txn.query_one(
            "SELECT next_transaction_id FROM coffer_ledger_head WHERE id = 1 FOR UPDATE",
            &[],
        )?;
        let next_transaction_id: i64 = head.get(0);
        let loaded = LoadedState {
            next_transaction_id: next_transaction_id as u64,
            ..LoadedState::default()
        };
        let result = prepare_and_apply(
            commands,
            catalog,
            now_unix_ms,
            loaded,
            |missing, loaded| {
                // BTreeSet iteration is sorted: account locks are always taken in one order.
                let names: Vec<&str> = missing.accounts.iter().map(AccountId::as_str).collect();
                let rows = txn.query(
                "SELECT account_id, state FROM coffer_accounts WHERE account_id = ANY($1) ORDER BY account_id FOR UPDATE",
                &[&names],
            )?;
                let mut found = std::collections::HashMap::new();
                for row in rows {
                    found.insert(
                        row.get::<_, String>(0),
                        decode::<AccountState>("account", row.get::<_, &[u8]>(1))?,
                    );
                }
                for id in &missing.accounts {
                    loaded
                        .accounts
                        .insert(id.clone(), found.remove(id.as_str()).map(Arc::new));
                }
                let scopes: Vec<&str> = missing
                    .idempotency_keys
                    .iter()
                    .map(|k| k.scope.as_str())
                    .collect();
                let keys: Vec<&str> = missing
                    .idempotency_keys
                    .iter()
                    .map(|k| k.key.as_str())
                    .collect();
                let rows = txn.query(
                "SELECT i.scope, i.key, i.outcome FROM coffer_idempotency i \
                 JOIN UNNEST($1::text[], $2::text[]) AS k(scope, key) ON i.scope = k.scope AND i.key = k.key",
                &[&scopes, &keys],
            )?;
                // Keyed like the prefetch, so each lookup takes the key as it is: no strings
                // built per key on the writer's path.
                let mut outcomes = std::collections::HashMap::new();
                for row in rows {
                    let outcome: StoredOutcome =
                        decode("idempotency outcome", row.get::<_, &[u8]>(2))?;
                    let key = IdempotencyKey {
                        scope: row.get::<_, &str>(0).into(),
                        key: row.get::<_, &str>(1).into(),
                    };
                    outcomes.insert(key, outcome);
                }
                for key in missing.idempotency_keys {
                    let outcome = outcomes.remove(&key);
                    loaded.idempotency.insert(key, outcome);
                }
                let ids: Vec<i64> = missing.transactions.iter().map(|id| *id as i64).collect();
                let rows = txn.query(
                    "SELECT t.id, t.body, r.reversal_id FROM coffer_transactions t \
                 LEFT JOIN coffer_reversals r ON r.original_id = t.id WHERE t.id = ANY($1)",
                    &[&ids],
                )?;
                let mut records = std::collections::HashMap::new();
                for row in rows {
                    let record = TransactionRecord {
                        transaction: decode_transaction(row.get::<_, &[u8]>(1))?,
                        reversed_by: row.get::<_, Option<i64>>(2).map(|id| id as u64),
                    };
                    records.insert(row.get::<_, i64>(0) as u64, record);
                }
                for id in &missing.transactions {
                    loaded.transactions.insert(*id, records.remove(id));
                }
                Ok(())
            },
        )?;

        let changes = &result.changes;
        let names: Vec<&str> = changes.accounts.keys().map(AccountId::as_str).collect();
        let states: Vec<Vec<u8>> = changes
            .accounts
            .values()
            .map(|state| encode(&**state))
            .collect();
        txn.execute(
            "INSERT INTO coffer_accounts (account_id, state) SELECT * FROM UNNEST($1::text[], $2::bytea[]) \
             ON CONFLICT (account_id) DO UPDATE SET state = EXCLUDED.state",
            &[&names, &states],
        )?;
        let mut ids = Vec::with_capacity(changes.transactions.len());
        let mut bodies = Vec::with_capacity(changes.transactions.len());
        let (mut history_accounts, mut history_versions, mut history_ids) =
            (Vec::new(), Vec::new(), Vec::new());
        for transaction in &changes.transactions {
            let id = id_i64(transaction.id)?;
            ids.push(id);
            bodies.push(encode(&**transaction));
            for (account, version) in &transaction.account_versions {
                history_accounts.push(account.as_str());
                history_versions.push(id_i64(*version)?);
                history_ids.push(id);
            }
        }
        txn.execute("INSERT INTO coffer_transactions (id, body) SELECT * FROM UNNEST($1::int8[], $2::bytea[])", &[&ids, &bodies])?;
        txn.execute(
            "INSERT INTO coffer_account_history (account_id, version, transaction_id) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[])",
            &[&history_accounts, &history_versions, &history_ids],
        )?;
        let originals: Vec<i64> = changes.reversals.iter().map(|(o, _)| *o as i64).collect();
        let reversals: Vec<i64> = changes.reversals.iter().map(|(_, r)| *r as i64).collect();
        txn.execute(
            "INSERT INTO coffer_reversals (original_id, reversal_id) SELECT * FROM UNNEST($1::int8[], $2::int8[])",
            &[&originals, &reversals],
        )?;
        let scopes: Vec<&str> = changes
            .idempotency
            .iter()
            .map(|(k, _)| k.scope.as_str())
            .collect();
        let keys: Vec<&str> = changes
            .idempotency
            .iter()
            .map(|(k, _)| k.key.as_str())
            .collect();
        let outcomes: Vec<Vec<u8>> = changes.idempotency.iter().map(|(_, o)| encode(o)).collect();
        txn.execute(
            "INSERT INTO coffer_idempotency (scope, key, outcome) SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[])",
            &[&scopes, &keys, &outcomes],
        )?;
        let next = id_i64(changes.next_transaction_id)?;
        txn.execute(
            "UPDATE coffer_ledger_head SET next_transaction_id = $1 WHERE id = 1",
            &[&next],
        )?;
        if let Some(last) = changes.transactions.last() {
            // Delivered to listening nodes when (and only if) the transaction commits.
            txn.execute(
                "SELECT pg_notify($1, $2)",
                &[&COMMIT_CHANNEL, &last.id.to_string()],
            )?;
        }
        txn.commit()?;
        Ok(result)
    }

    fn save_catalog(&self, catalog: &StoredCatalog) -> Result<(), StoreError> {
        let mut client = self.writer.lock().expect("writer connection poisoned");
        let version = id_i64(catalog.version)?;
        client.execute(
            "INSERT INTO coffer_catalog (id, version, source) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, source = EXCLUDED.source",
            &[&version, &catalog.source_toml],
        )?;
        Ok(())
    }

    fn stored_catalog(&self) -> Result<Option<StoredCatalog>, StoreError> {
        self.read(|client| {
            let row = client.query_opt(
                "SELECT version, source FROM coffer_catalog WHERE id = 1",
                &[],
            )?;
            Ok(row.map(|row| StoredCatalog {
                version: row.get::<_, i64>(0) as u64,
                source_toml: row.get(1),
            }))
        })
    }

    fn account(&self, id: &AccountId) -> Result<Option<AccountState>, StoreError> {
        self.read(|client| {
            let row = client.query_opt(
                "SELECT state FROM coffer_accounts WHERE account_id = $1",
                &[&id.as_str()],
            )?;
            row.map(|row| decode("account", row.get::<_, &[u8]>(0)))
                .transpose()
        })
    }

    fn transaction(&self, id: u64) -> Result<Option<TransactionRecord>, StoreError> {
        let id = id_i64(id)?;
        self.read(|client| {
            let row = client.query_opt(
                "SELECT t.body, r.reversal_id FROM coffer_transactions t \
                 LEFT JOIN coffer_reversals r ON r.original_id = t.id WHERE t.id = $1",
                &[&id],
            )?;
            row.map(|row| {
                Ok(TransactionRecord {
                    transaction: decode_transaction(row.get::<_, &[u8]>(0))?,
                    reversed_by: row.get::<_, Option<i64>>(1).map(|id| id as u64),
                })
            })
            .transpose()
        })
    }

    fn history_before(
        &self,
        player: &AccountId,
        before_version: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let before = i64::try_from(before_version).unwrap_or(i64::MAX);
        self.read(|client| {
            let rows = client.query(
                "SELECT transaction_id FROM coffer_account_history WHERE account_id = $1 AND version < $2 \
                 ORDER BY version DESC LIMIT $3",
                &[&player.as_str(), &before, &(limit as i64)],
            )?;
            let ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
            Self::transactions_by_id(client, &ids)
        })
    }

    fn history_after(
        &self,
        player: &AccountId,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let Ok(after) = i64::try_from(after_version) else {
            return Ok(Vec::new());
        };
        self.read(|client| {
            let rows = client.query(
                "SELECT transaction_id FROM coffer_account_history WHERE account_id = $1 AND version > $2 \
                 ORDER BY version ASC LIMIT $3",
                &[&player.as_str(), &after, &(limit as i64)],
            )?;
            let ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
            Self::transactions_by_id(client, &ids)
        })
    }

    fn transactions_after(
        &self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        let after = id_i64(after_id)?;
        self.read(|client| {
            let rows = client.query(
                "SELECT body FROM coffer_transactions WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &(limit as i64)],
            )?;
            rows.iter()
                .map(|row| decode("transaction", row.get::<_, &[u8]>(0)))
                .collect()
        })
    }

    fn verify(&self, catalog: &Catalog) -> Result<VerifyReport, StoreError> {
        self.read(|client| {
            // One snapshot for the whole replay.
            let mut txn = snapshot(client)?;
            let mut verifier = Verifier::new(catalog);
            scan_transactions(&mut txn, &mut |transaction, _| {
                verifier.transaction(&transaction);
                Ok(())
            })?;
            scan_accounts(&mut txn, &mut |name, state| {
                verifier.account(&AccountId::from_stored(&name), &state);
                Ok(())
            })?;
            let next: i64 = txn
                .query_one(
                    "SELECT next_transaction_id FROM coffer_ledger_head WHERE id = 1",
                    &[],
                )?
                .get(0);
            txn.commit()?;
            let mut report = verifier.finish();
            if next as u64 != report.transactions_checked + 1 {
                report.violation_count += 1;
                report.violations.push(format!(
                    "next transaction id is {next}, but {} transactions are stored",
                    report.transactions_checked
                ));
            }
            Ok(report)
        })
    }

    fn export(
        &self,
        sink: &mut dyn FnMut(LedgerRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.read(|client| {
            let mut txn = snapshot(client)?;
            if let Some(row) = txn.query_opt("SELECT version, source FROM coffer_catalog WHERE id = 1", &[])? {
                sink(LedgerRecord::Catalog { version: row.get::<_, i64>(0) as u64, source_toml: row.get(1) })?;
            }
            scan_transactions(&mut txn, &mut |transaction, reversed_by| sink(LedgerRecord::Transaction { transaction, reversed_by }))?;
            scan_accounts(&mut txn, &mut |account_id, state| sink(LedgerRecord::Account { account_id, state }))?;
            let (mut after_scope, mut after_key) = (String::new(), String::new());
            loop {
                let rows = txn.query(
                    "SELECT scope, key, outcome FROM coffer_idempotency WHERE (scope, key) > ($1, $2) ORDER BY scope, key LIMIT $3",
                    &[&after_scope, &after_key, &SCAN_PAGE_LEN],
                )?;
                for row in &rows {
                    after_scope = row.get(0);
                    after_key = row.get(1);
                    sink(LedgerRecord::Idempotency {
                        scope: after_scope.clone(),
                        key: after_key.clone(),
                        outcome: decode("idempotency outcome", row.get::<_, &[u8]>(2))?,
                    })?;
                }
                if (rows.len() as i64) < SCAN_PAGE_LEN {
                    break;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    fn import(
        &self,
        records: &mut dyn Iterator<Item = Result<LedgerRecord, StoreError>>,
    ) -> Result<u64, StoreError> {
        let mut client = self.writer.lock().expect("writer connection poisoned");
        let head: i64 = client
            .query_one(
                "SELECT next_transaction_id FROM coffer_ledger_head WHERE id = 1",
                &[],
            )?
            .get(0);
        let accounts: i64 = client
            .query_one("SELECT count(*) FROM coffer_accounts", &[])?
            .get(0);
        if head != 1 || accounts != 0 {
            return Err(StoreError::NotEmpty);
        }
        let mut next_id = 1u64;
        let mut records = records.peekable();
        while records.peek().is_some() {
            let mut txn = client.transaction()?;
            for record in records.by_ref().take(IMPORT_CHUNK_LEN) {
                match record? {
                    LedgerRecord::Catalog {
                        version,
                        source_toml,
                    } => {
                        txn.execute(
                            "INSERT INTO coffer_catalog (id, version, source) VALUES (1, $1, $2) \
                             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, source = EXCLUDED.source",
                            &[&id_i64(version)?, &source_toml],
                        )?;
                    }
                    LedgerRecord::Transaction {
                        transaction,
                        reversed_by,
                    } => {
                        check_import_order(&mut next_id, &transaction)?;
                        let id = id_i64(transaction.id)?;
                        txn.execute(
                            "INSERT INTO coffer_transactions (id, body) VALUES ($1, $2)",
                            &[&id, &encode(&transaction)],
                        )?;
                        for (account, version) in &transaction.account_versions {
                            txn.execute(
                                "INSERT INTO coffer_account_history (account_id, version, transaction_id) VALUES ($1, $2, $3)",
                                &[&account.as_str(), &id_i64(*version)?, &id],
                            )?;
                        }
                        if let Some(reversal) = reversed_by {
                            txn.execute("INSERT INTO coffer_reversals (original_id, reversal_id) VALUES ($1, $2)", &[&id, &id_i64(reversal)?])?;
                        }
                    }
                    LedgerRecord::Account { account_id, state } => {
                        txn.execute(
                            "INSERT INTO coffer_accounts (account_id, state) VALUES ($1, $2)",
                            &[&account_id, &encode(&state)],
                        )?;
                    }
                    LedgerRecord::Idempotency {
                        scope,
                        key,
                        outcome,
                    } => {
                        txn.execute("INSERT INTO coffer_idempotency (scope, key, outcome) VALUES ($1, $2, $3)", &[&scope, &key, &encode(&outcome)])?;
                    }
                }
            }
            txn.execute(
                "UPDATE coffer_ledger_head SET next_transaction_id = $1 WHERE id = 1",
                &[&id_i64(next_id)?],
            )?;
            txn.commit()?;
        }
        Ok(next_id - 1)
    }

    fn commits_elsewhere(&self) -> Option<mpsc::Receiver<u64>> {
        let (sender, receiver) = mpsc::channel();
        let url = self.url.clone();
        std::thread::Builder::new()
            .name("coffer-pg-listener".to_owned())
            .spawn(move || listen(&url, &sender))
            .expect("spawning the listener thread");
        Some(receiver)
    }
}

/// A read-only transaction over one consistent snapshot, for whole-ledger scans.
fn snapshot(client: &mut Client) -> Result<postgres::Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?)
}

/// Every transaction in id order, with the id of its reversal, a page at a time.
fn scan_transactions(
    txn: &mut postgres::Transaction<'_>,
    each: &mut dyn FnMut(Transaction, Option<u64>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut after: i64 = 0;
    loop {
        let rows = txn.query(
            "SELECT t.id, t.body, r.reversal_id FROM coffer_transactions t \
             LEFT JOIN coffer_reversals r ON r.original_id = t.id WHERE t.id > $1 ORDER BY t.id LIMIT $2",
            &[&after, &SCAN_PAGE_LEN],
        )?;
        for row in &rows {
            after = row.get(0);
            each(
                decode("transaction", row.get::<_, &[u8]>(1))?,
                row.get::<_, Option<i64>>(2).map(|id| id as u64),
            )?;
        }
        if (rows.len() as i64) < SCAN_PAGE_LEN {
            return Ok(());
        }
    }
}

/// Every account in name order, a page at a time.
fn scan_accounts(
    txn: &mut postgres::Transaction<'_>,
    each: &mut dyn FnMut(String, AccountState) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut after = String::new();
    loop {
        let rows = txn.query(
            "SELECT account_id, state FROM coffer_accounts WHERE account_id > $1 ORDER BY account_id LIMIT $2",
            &[&after, &SCAN_PAGE_LEN],
        )?;
        for row in &rows {
            after = row.get(0);
            each(after.clone(), decode("account", row.get::<_, &[u8]>(1))?)?;
        }
        if (rows.len() as i64) < SCAN_PAGE_LEN {
            return Ok(());
        }
    }
}

/// Forwards the id of each commit announced on [`COMMIT_CHANNEL`] (by any node), reconnecting
/// after failures. Ends when the receiving side is gone.
fn listen(url: &str, sender: &mpsc::Sender<u64>) {
    loop {
        match Client::connect(url, NoTls).and_then(|mut client| {
            client.batch_execute(&format!("LISTEN {COMMIT_CHANNEL}"))?;
            // After (re)connecting, announce the head so nothing committed meanwhile is missed.
            let head: i64 = client
                .query_one(
                    "SELECT next_transaction_id - 1 FROM coffer_ledger_head WHERE id = 1",
                    &[],
                )?
                .get(0);
            let mut last = head as u64;
            if sender.send(last).is_err() {
                return Ok(());
            }
            let mut notifications = client.notifications();
            let mut iter = notifications.timeout_iter(Duration::from_secs(1));
            loop {
                match iter.next() {
                    Ok(Some(notification)) => {
                        if let Ok(id) = notification.payload().parse::<u64>() {
                            last = last.max(id);
                        }
                        if sender.send(last).is_err() {
                            return Ok(());
                        }
                    }
                    // Quiet for a second: repeat the last id, which finds out whether the
                    // server still listens (and stops this thread when it does not).
                    Ok(None) => {
                        if sender.send(last).is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }) {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "commit listener lost its connection; reconnecting");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
