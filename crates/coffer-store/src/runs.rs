//! Sorted runs: how a checkpoint writes history and idempotency rows without rewriting a leaf
//! per player. Both tables are keyed by player, so folding a generation straight into them
//! rewrites about one leaf per player it touched, in each table, however few rows it adds
//! there: as the tables grew, every checkpoint grew with them (after 10-s phases at 37k
//! purchases/s, 0.5 s of checkpoint work in the first, 2.1 s in the third).
//!
//! Instead a checkpoint writes a generation's rows of each into a table of their own, a *run*,
//! in key order into an empty tree: pages are filled once, in sequence. Once
//! [`RUNS_MERGE_AT_DEFAULT`] runs have gathered, the checkpointer merges them into the main
//! tables in key order, one bounded commit at a time between checkpoints, so each leaf of a main
//! table is rewritten once for all of them; the last commit drops the runs. Readers look in the
//! main table and in every run of their snapshot. Rows never change once written (a history
//! entry names its transaction, an idempotency key keeps its first outcome), so a row found
//! twice (a merge part-way, or a run a crash left half-written that recovery wrote again) is the
//! same row, and whichever copy is read is right.

use std::ops::Bound;

use itertools::Itertools;
use redb::{
    AccessGuard, Database, Durability, ReadableTable, StorageError, Table, TableDefinition,
    TableHandle, UntypedTableHandle, WriteTransaction,
};

use crate::StoreError;

/// Runs that start a merge. More runs mean fewer, larger merges (a main table's leaves are
/// rewritten once per merge) and more tables for each history read and idempotency lookup
/// that misses the key filter to look in.
pub const RUNS_MERGE_AT_DEFAULT: usize = 8;

/// Runs past which the checkpointer merges even while frozen generations wait for their
/// checkpoint (the writer then waits for room, rather than reads slowing without bound), as a
/// multiple of the runs that start a merge.
const RUNS_FORCE_MERGE_FACTOR: usize = 2;

/// (player, version) → transaction id: history and Subscribe catch-up.
pub(crate) const HISTORY: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("account_history");
/// (scope, key) → encoded `StoredOutcome`.
pub(crate) const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("idempotency");

/// A table whose rows checkpoints write as runs: how its rows are read, ordered and written
/// back.
pub(crate) trait RunRows {
    type Key: redb::Key + 'static;
    type Value: redb::Value + 'static;
    type OwnedKey: Ord;
    type OwnedValue;
    /// The main table, which merges fold runs into.
    const MAIN: TableDefinition<'static, Self::Key, Self::Value>;
    /// Run tables are named this followed by the run's number, zero-padded, so names sort as
    /// numbers do.
    const RUN_PREFIX: &'static str;

    fn owned(
        key: AccessGuard<'_, Self::Key>,
        value: AccessGuard<'_, Self::Value>,
    ) -> (Self::OwnedKey, Self::OwnedValue);

    /// The rows of `table` after `after` (all with `None`), in key order.
    fn rows_after<'t>(
        table: &'t impl ReadableTable<Self::Key, Self::Value>,
        after: Option<&Self::OwnedKey>,
    ) -> Result<redb::Range<'t, Self::Key, Self::Value>, StorageError>;

    fn insert(
        table: &mut Table<'_, Self::Key, Self::Value>,
        key: &Self::OwnedKey,
        value: &Self::OwnedValue,
    ) -> Result<(), StorageError>;

    /// The name of run `run`'s table.
    fn run_name(run: u64) -> String {
        format!("{}{run:020}", Self::RUN_PREFIX)
    }

    fn run(name: &str) -> TableDefinition<'_, Self::Key, Self::Value> {
        TableDefinition::new(name)
    }

    /// The names of the runs among `tables`, oldest first.
    fn runs_among(tables: impl Iterator<Item = UntypedTableHandle>) -> Vec<String> {
        let mut names: Vec<String> = tables
            .map(|table| table.name().to_owned())
            .filter(|name| name.starts_with(Self::RUN_PREFIX))
            .collect();
        names.sort_unstable();
        names
    }
}

/// A row of `R` read out of a table, key and value owned; or why it could not be read.
pub(crate) type ReadRow<R> =
    Result<(<R as RunRows>::OwnedKey, <R as RunRows>::OwnedValue), StoreError>;

/// The main table of `R`, or one of its runs, in a read snapshot.
pub(crate) type ReadTable<R> = redb::ReadOnlyTable<<R as RunRows>::Key, <R as RunRows>::Value>;

/// Rows of the `account_history` table.
pub(crate) struct HistoryRows;

impl RunRows for HistoryRows {
    type Key = (&'static str, u64);
    type Value = u64;
    type OwnedKey = (String, u64);
    type OwnedValue = u64;
    const MAIN: TableDefinition<'static, Self::Key, Self::Value> = HISTORY;
    const RUN_PREFIX: &'static str = "account_history_run_";

    fn owned(key: AccessGuard<'_, Self::Key>, value: AccessGuard<'_, u64>) -> ((String, u64), u64) {
        let (player, version) = key.value();
        ((player.to_owned(), version), value.value())
    }

    fn rows_after<'t>(
        table: &'t impl ReadableTable<Self::Key, Self::Value>,
        after: Option<&(String, u64)>,
    ) -> Result<redb::Range<'t, Self::Key, Self::Value>, StorageError> {
        match after {
            None => table.range::<(&str, u64)>(..),
            Some((player, version)) => table.range::<(&str, u64)>((
                Bound::Excluded((player.as_str(), *version)),
                Bound::Unbounded,
            )),
        }
    }

    fn insert(
        table: &mut Table<'_, Self::Key, Self::Value>,
        (player, version): &(String, u64),
        id: &u64,
    ) -> Result<(), StorageError> {
        table.insert((player.as_str(), *version), *id).map(drop)
    }
}

/// Rows of the `idempotency` table.
pub(crate) struct IdempotencyRows;

impl RunRows for IdempotencyRows {
    type Key = (&'static str, &'static str);
    type Value = &'static [u8];
    type OwnedKey = (String, String);
    type OwnedValue = Vec<u8>;
    const MAIN: TableDefinition<'static, Self::Key, Self::Value> = IDEMPOTENCY;
    const RUN_PREFIX: &'static str = "idempotency_run_";

    fn owned(
        key: AccessGuard<'_, Self::Key>,
        value: AccessGuard<'_, Self::Value>,
    ) -> ((String, String), Vec<u8>) {
        let (scope, key) = key.value();
        ((scope.to_owned(), key.to_owned()), value.value().to_vec())
    }

    fn rows_after<'t>(
        table: &'t impl ReadableTable<Self::Key, Self::Value>,
        after: Option<&(String, String)>,
    ) -> Result<redb::Range<'t, Self::Key, Self::Value>, StorageError> {
        match after {
            None => table.range::<(&str, &str)>(..),
            Some((scope, key)) => table.range::<(&str, &str)>((
                Bound::Excluded((scope.as_str(), key.as_str())),
                Bound::Unbounded,
            )),
        }
    }

    fn insert(
        table: &mut Table<'_, Self::Key, Self::Value>,
        (scope, key): &(String, String),
        outcome: &Vec<u8>,
    ) -> Result<(), StorageError> {
        table
            .insert((scope.as_str(), key.as_str()), outcome.as_slice())
            .map(drop)
    }
}

/// The rows of `tables` (each in key order) after `after`, merged into key order; a key in
/// several tables comes once from each.
pub(crate) fn merged<'t, R: RunRows, T: ReadableTable<R::Key, R::Value>>(
    tables: &'t [T],
    after: Option<&R::OwnedKey>,
) -> Result<impl Iterator<Item = ReadRow<R>> + use<'t, R, T>, StoreError> {
    let ranges = tables
        .iter()
        .map(|table| R::rows_after(table, after))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ranges
        .into_iter()
        .map(|range| {
            range.map(|row| {
                let (key, value) = row?;
                Ok(R::owned(key, value))
            })
        })
        .kmerge_by(|a: &ReadRow<R>, b| match (a, b) {
            (Ok((a, _)), Ok((b, _))) => a < b,
            // An error comes out first, so it ends whatever reads the rows.
            (Err(_), _) => true,
            (Ok(_), Err(_)) => false,
        }))
}

/// The rows of `tables` in key order, each key once.
pub(crate) fn distinct<'t, R: RunRows, T: ReadableTable<R::Key, R::Value>>(
    tables: &'t [T],
) -> Result<impl Iterator<Item = ReadRow<R>> + use<'t, R, T>, StoreError> {
    Ok(merged::<R, T>(tables, None)?
        .dedup_by(|a, b| matches!((a, b), (Ok((a, _)), Ok((b, _))) if a == b)))
}

/// When the checkpointer merges runs, given how many a snapshot holds.
pub(crate) fn merge_due(runs: usize, merge_at: usize) -> bool {
    runs >= merge_at.max(1)
}

/// Whether runs piled up so far that the checkpointer merges them before the generations that
/// wait for it.
pub(crate) fn merge_urgent(runs: usize, merge_at: usize) -> bool {
    runs >= merge_at.max(1) * RUNS_FORCE_MERGE_FACTOR
}

/// Where a merge is: which table it folds, and the last key it folded.
#[derive(Debug)]
enum Stage {
    History(Option<(String, u64)>),
    Idempotency(Option<(String, String)>),
    /// Every row is in the main tables: the runs go.
    Drop,
}

/// A merge of the runs a snapshot held into the main tables, in bounded commits. Runs
/// checkpointed while it goes on are left to the next merge.
#[derive(Debug)]
pub(crate) struct Merge {
    history_runs: Vec<String>,
    idempotency_runs: Vec<String>,
    stage: Stage,
}

impl Merge {
    /// A merge of the runs `tables` lists.
    pub fn of(tables: impl Iterator<Item = UntypedTableHandle>) -> Merge {
        let tables: Vec<UntypedTableHandle> = tables.collect();
        Merge {
            history_runs: HistoryRows::runs_among(tables.iter().cloned()),
            idempotency_runs: IdempotencyRows::runs_among(tables.into_iter()),
            stage: Stage::History(None),
        }
    }

    /// Runs this merge folds (of the kind with more of them).
    pub fn runs(&self) -> usize {
        self.history_runs.len().max(self.idempotency_runs.len())
    }

    /// Folds up to `rows_max` more rows into the main tables in one durable commit, or drops
    /// the runs once all are in; true when the merge is over. After an error the merge must
    /// start over (a commit that failed may have moved it on).
    pub fn step(
        &mut self,
        ledger: &Database,
        two_phase_commit: bool,
        rows_max: usize,
    ) -> Result<bool, StoreError> {
        let mut txn = ledger.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_two_phase_commit(two_phase_commit);
        let over = match &mut self.stage {
            Stage::History(after) => {
                if fold::<HistoryRows>(&txn, &self.history_runs, after, rows_max)? {
                    self.stage = Stage::Idempotency(None);
                }
                false
            }
            Stage::Idempotency(after) => {
                if fold::<IdempotencyRows>(&txn, &self.idempotency_runs, after, rows_max)? {
                    self.stage = Stage::Drop;
                }
                false
            }
            Stage::Drop => {
                for name in &self.history_runs {
                    txn.delete_table(HistoryRows::run(name))?;
                }
                for name in &self.idempotency_runs {
                    txn.delete_table(IdempotencyRows::run(name))?;
                }
                true
            }
        };
        txn.commit()?;
        Ok(over)
    }
}

/// Inserts the next rows (at most `rows_max`, after `after`) of `runs` into the main table;
/// true once none are left.
fn fold<R: RunRows>(
    txn: &WriteTransaction,
    runs: &[String],
    after: &mut Option<R::OwnedKey>,
    rows_max: usize,
) -> Result<bool, StoreError> {
    let tables = runs
        .iter()
        .map(|name| txn.open_table(R::run(name)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut main = txn.open_table(R::MAIN)?;
    let mut folded = 0;
    let rows = merged::<R, _>(&tables, after.as_ref())?;
    for row in rows.take(rows_max) {
        let (key, value) = row?;
        R::insert(&mut main, &key, &value)?;
        *after = Some(key);
        folded += 1;
    }
    Ok(folded < rows_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    #[test]
    fn run_names_sort_as_their_numbers() {
        assert!(HistoryRows::run_name(9) < HistoryRows::run_name(10));
        assert!(HistoryRows::run_name(u64::MAX - 1) < HistoryRows::run_name(u64::MAX));
        assert!(!HistoryRows::run_name(1).starts_with(IdempotencyRows::RUN_PREFIX));
        assert!(!IdempotencyRows::run_name(1).starts_with(HistoryRows::RUN_PREFIX));
    }

    #[test]
    fn a_merge_folds_every_run_into_the_main_table_and_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Database::create(dir.path().join("runs.redb")).unwrap();
        // Three runs that overlap in players, one with a row the main table already holds.
        let runs: [&[(&str, u64, u64)]; 3] = [
            &[("ann", 1, 10), ("cat", 1, 11)],
            &[("ann", 2, 12), ("ben", 1, 13), ("cat", 2, 14)],
            &[("ann", 3, 15), ("ben", 1, 13)],
        ];
        let txn = ledger.begin_write().unwrap();
        txn.open_table(HISTORY)
            .unwrap()
            .insert(("ben", 1), 13)
            .unwrap();
        for (run, rows) in runs.iter().enumerate() {
            let name = HistoryRows::run_name(run as u64 + 1);
            let mut table = txn.open_table(HistoryRows::run(&name)).unwrap();
            for (player, version, id) in *rows {
                table.insert((*player, *version), *id).unwrap();
            }
        }
        txn.open_table(IdempotencyRows::run(&IdempotencyRows::run_name(3)))
            .unwrap()
            .insert(("player:ann", "k1"), b"outcome".as_slice())
            .unwrap();
        txn.commit().unwrap();

        let mut merge = Merge::of(ledger.begin_read().unwrap().list_tables().unwrap());
        assert_eq!(merge.runs(), 3);
        // Two rows per commit: the history's seven rows (ben's first version is in two runs)
        // take four commits, the idempotency row one, the drop one.
        let mut commits = 1;
        while !merge.step(&ledger, true, 2).unwrap() {
            commits += 1;
            assert!(commits <= 6, "the merge ends");
        }
        assert_eq!(commits, 6);
        let txn = ledger.begin_read().unwrap();
        let rows: Vec<(String, u64, u64)> = txn
            .open_table(HISTORY)
            .unwrap()
            .iter()
            .unwrap()
            .map(|row| {
                let (key, id) = row.unwrap();
                let (player, version) = key.value();
                (player.to_owned(), version, id.value())
            })
            .collect();
        let expected: Vec<(String, u64, u64)> = [
            ("ann", 1, 10),
            ("ann", 2, 12),
            ("ann", 3, 15),
            ("ben", 1, 13),
            ("cat", 1, 11),
            ("cat", 2, 14),
        ]
        .into_iter()
        .map(|(player, version, id)| (player.to_owned(), version, id))
        .collect();
        assert_eq!(rows, expected);
        let outcome = txn
            .open_table(IDEMPOTENCY)
            .unwrap()
            .get(("player:ann", "k1"))
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        assert_eq!(outcome, b"outcome");
        assert!(
            HistoryRows::runs_among(txn.list_tables().unwrap()).is_empty()
                && IdempotencyRows::runs_among(txn.list_tables().unwrap()).is_empty(),
            "the runs are dropped"
        );
    }

    /// A crash ends a merge part-way: the rows it folded are in the main table and still in the
    /// runs. Reading both gives each row once, and the next merge folds the rest.
    #[test]
    fn a_merge_cut_short_leaves_every_row_readable_and_the_next_one_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Database::create(dir.path().join("runs.redb")).unwrap();
        let txn = ledger.begin_write().unwrap();
        txn.open_table(HISTORY).unwrap();
        for run in 1..=2u64 {
            let name = HistoryRows::run_name(run);
            let mut table = txn.open_table(HistoryRows::run(&name)).unwrap();
            for version in 0..5u64 {
                table
                    .insert(("ann", run * 10 + version), run * 100 + version)
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        let all_rows = |ledger: &Database| -> Vec<(u64, u64)> {
            let txn = ledger.begin_read().unwrap();
            let mut tables = vec![txn.open_table(HISTORY).unwrap()];
            for name in HistoryRows::runs_among(txn.list_tables().unwrap()) {
                tables.push(txn.open_table(HistoryRows::run(&name)).unwrap());
            }
            distinct::<HistoryRows, _>(&tables)
                .unwrap()
                .map(|row| {
                    let ((_, version), id) = row.unwrap();
                    (version, id)
                })
                .collect()
        };
        let before = all_rows(&ledger);
        assert_eq!(before.len(), 10);

        let mut cut_short = Merge::of(ledger.begin_read().unwrap().list_tables().unwrap());
        assert!(!cut_short.step(&ledger, true, 3).unwrap());
        assert!(!cut_short.step(&ledger, true, 3).unwrap());
        drop(cut_short);
        let txn = ledger.begin_read().unwrap();
        assert_eq!(txn.open_table(HISTORY).unwrap().len().unwrap(), 6);
        assert_eq!(HistoryRows::runs_among(txn.list_tables().unwrap()).len(), 2);
        drop(txn);
        assert_eq!(all_rows(&ledger), before, "each row once, wherever it is");

        let mut next = Merge::of(ledger.begin_read().unwrap().list_tables().unwrap());
        while !next.step(&ledger, true, 3).unwrap() {}
        let txn = ledger.begin_read().unwrap();
        assert_eq!(txn.open_table(HISTORY).unwrap().len().unwrap(), 10);
        assert!(HistoryRows::runs_among(txn.list_tables().unwrap()).is_empty());
        drop(txn);
        assert_eq!(all_rows(&ledger), before);
    }

    #[test]
    fn distinct_rows_come_once_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Database::create(dir.path().join("runs.redb")).unwrap();
        let txn = ledger.begin_write().unwrap();
        for (name, keys) in [
            ("idempotency", &["a", "c"][..]),
            ("idempotency_run_1", &["b", "c"][..]),
            ("idempotency_run_2", &["a", "d"][..]),
        ] {
            let mut table = txn
                .open_table(TableDefinition::<(&str, &str), &[u8]>::new(name))
                .unwrap();
            for key in keys {
                table.insert(("s", *key), key.as_bytes()).unwrap();
            }
        }
        txn.commit().unwrap();
        let txn = ledger.begin_read().unwrap();
        let tables: Vec<_> = ["idempotency", "idempotency_run_1", "idempotency_run_2"]
            .into_iter()
            .map(|name| {
                txn.open_table(TableDefinition::<(&str, &str), &[u8]>::new(name))
                    .unwrap()
            })
            .collect();
        let keys: Vec<String> = distinct::<IdempotencyRows, _>(&tables)
            .unwrap()
            .map(|row| row.unwrap().0.1)
            .collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
    }
}
