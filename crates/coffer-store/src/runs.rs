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
//! same row, and whichever copy is read is right; only a history chunk may come shorter from a
//! half-written run, and then the longer holds it (merges keep the longer).
//!
//! History is written as chunks ([`HISTORY_CHUNKS`]): one row per player and generation with
//! the ids of its consecutive versions, so a checkpoint inserts (and a merge folds) a row per
//! player touched rather than per transaction. Rows an import or an earlier version wrote one
//! per version ([`HISTORY`]) are read beside them.

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

/// (player, version) → transaction id: history and Subscribe catch-up, as files before history
/// chunks wrote it, and as an import writes it. Read alongside [`HISTORY_CHUNKS`].
pub(crate) const HISTORY: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("account_history");
/// (player, first version) → the ids of that player's transactions from that version on, one
/// after the other (see [`encode_history_chunk`]): what a checkpoint writes, one row per player a
/// generation touched rather than one per transaction (a player's versions in one generation
/// are consecutive, so one row holds them all). A player's chunks never overlap.
pub(crate) const HISTORY_CHUNKS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("account_history_chunks");
/// Bytes of one transaction id in a history chunk.
const CHUNK_ID_BYTES: usize = 8;
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
        player_rows_after(table, after)
    }

    fn insert(
        table: &mut Table<'_, Self::Key, Self::Value>,
        (player, version): &(String, u64),
        id: &u64,
    ) -> Result<(), StorageError> {
        table.insert((player.as_str(), *version), *id).map(drop)
    }
}

/// The rows of a table keyed by (player, version) after `after` (all with `None`).
fn player_rows_after<'t, V: redb::Value + 'static>(
    table: &'t impl ReadableTable<(&'static str, u64), V>,
    after: Option<&(String, u64)>,
) -> Result<redb::Range<'t, (&'static str, u64), V>, StorageError> {
    match after {
        None => table.range::<(&str, u64)>(..),
        Some((player, version)) => table.range::<(&str, u64)>((
            Bound::Excluded((player.as_str(), *version)),
            Bound::Unbounded,
        )),
    }
}

/// Rows of the `account_history_chunks` table.
pub(crate) struct HistoryChunkRows;

impl RunRows for HistoryChunkRows {
    type Key = (&'static str, u64);
    type Value = &'static [u8];
    type OwnedKey = (String, u64);
    type OwnedValue = Vec<u8>;
    const MAIN: TableDefinition<'static, Self::Key, Self::Value> = HISTORY_CHUNKS;
    const RUN_PREFIX: &'static str = "account_history_chunks_run_";

    fn owned(
        key: AccessGuard<'_, Self::Key>,
        value: AccessGuard<'_, Self::Value>,
    ) -> ((String, u64), Vec<u8>) {
        let (player, first_version) = key.value();
        ((player.to_owned(), first_version), value.value().to_vec())
    }

    fn rows_after<'t>(
        table: &'t impl ReadableTable<Self::Key, Self::Value>,
        after: Option<&(String, u64)>,
    ) -> Result<redb::Range<'t, Self::Key, Self::Value>, StorageError> {
        player_rows_after(table, after)
    }

    /// Keeps the longer of two chunks under one key. A checkpoint cut short by a crash leaves
    /// its run part-written; recovery folds every journal record after the last complete
    /// checkpoint into one generation, so it may write a longer chunk under the same key into
    /// another run. Both hold the same ids for the versions they share, so the longer holds
    /// the shorter: it must win whichever comes last in a merge.
    fn insert(
        table: &mut Table<'_, Self::Key, Self::Value>,
        (player, first_version): &(String, u64),
        ids: &Vec<u8>,
    ) -> Result<(), StorageError> {
        let key = (player.as_str(), *first_version);
        if let Some(held) = table.get(key)?
            && held.value().len() >= ids.len()
        {
            return Ok(());
        }
        table.insert(key, ids.as_slice()).map(drop)
    }
}

/// A history chunk's value: each transaction id, little-endian, in version order.
pub(crate) fn encode_history_chunk(ids: impl ExactSizeIterator<Item = u64>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ids.len() * CHUNK_ID_BYTES);
    for id in ids {
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    bytes
}

/// The (version, transaction id) pairs of the chunk that starts at `first_version`.
pub(crate) fn history_chunk_entries(
    first_version: u64,
    bytes: &[u8],
) -> Result<impl DoubleEndedIterator<Item = (u64, u64)> + '_, StoreError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(CHUNK_ID_BYTES) {
        return Err(StoreError::Corrupt {
            what: format!("history chunk from version {first_version}"),
            detail: format!(
                "{} bytes, not a positive multiple of {CHUNK_ID_BYTES}",
                bytes.len()
            ),
        });
    }
    Ok(bytes
        .chunks_exact(CHUNK_ID_BYTES)
        .enumerate()
        .map(move |(offset, id)| {
            let id = u64::from_le_bytes(id.try_into().expect("chunks_exact"));
            (first_version + offset as u64, id)
        }))
}

/// Adds to `found` the (version, transaction id) pairs of `player` with versions in
/// `from..=to` that `table` holds: at most `limit` of the newest (`newest: true`) or oldest.
pub(crate) fn chunk_history(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    player: &str,
    (from, to): (u64, u64),
    newest: bool,
    limit: usize,
    found: &mut Vec<(u64, u64)>,
) -> Result<(), StoreError> {
    let mut taken = 0;
    if newest {
        // A player's chunks never overlap: once one starts at or below `from`, every earlier
        // one ends below it.
        for chunk in table.range((player, 0)..=(player, to))?.rev() {
            let (key, ids) = chunk?;
            let first_version = key.value().1;
            for (version, id) in history_chunk_entries(first_version, ids.value())?.rev() {
                if (from..=to).contains(&version) && taken < limit {
                    found.push((version, id));
                    taken += 1;
                }
            }
            if first_version <= from || taken == limit {
                break;
            }
        }
    } else {
        // The chunk that holds `from` may start below it.
        let start = match table.range((player, 0)..=(player, from))?.next_back() {
            Some(chunk) => chunk?.0.value().1,
            None => from,
        };
        for chunk in table.range((player, start)..=(player, to))? {
            let (key, ids) = chunk?;
            for (version, id) in history_chunk_entries(key.value().1, ids.value())? {
                if (from..=to).contains(&version) && taken < limit {
                    found.push((version, id));
                    taken += 1;
                }
            }
            if taken == limit {
                break;
            }
        }
    }
    Ok(())
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
    HistoryChunks(Option<(String, u64)>),
    Idempotency(Option<(String, String)>),
    /// Every row is in the main tables: the runs go.
    Drop,
}

/// A merge of the runs a snapshot held into the main tables, in bounded commits. Runs
/// checkpointed while it goes on are left to the next merge.
#[derive(Debug)]
pub(crate) struct Merge {
    history_runs: Vec<String>,
    history_chunk_runs: Vec<String>,
    idempotency_runs: Vec<String>,
    stage: Stage,
}

impl Merge {
    /// A merge of the runs `tables` lists.
    pub fn of(tables: impl Iterator<Item = UntypedTableHandle>) -> Merge {
        let tables: Vec<UntypedTableHandle> = tables.collect();
        Merge {
            history_runs: HistoryRows::runs_among(tables.iter().cloned()),
            history_chunk_runs: HistoryChunkRows::runs_among(tables.iter().cloned()),
            idempotency_runs: IdempotencyRows::runs_among(tables.into_iter()),
            stage: Stage::History(None),
        }
    }

    /// Runs this merge folds (of the kind with most of them).
    pub fn runs(&self) -> usize {
        self.history_runs
            .len()
            .max(self.history_chunk_runs.len())
            .max(self.idempotency_runs.len())
    }

    /// Moves past the stages that have no runs to fold, so they cost no commit.
    fn skip_empty_stages(&mut self) {
        loop {
            self.stage = match self.stage {
                Stage::History(None) if self.history_runs.is_empty() => Stage::HistoryChunks(None),
                Stage::HistoryChunks(None) if self.history_chunk_runs.is_empty() => {
                    Stage::Idempotency(None)
                }
                Stage::Idempotency(None) if self.idempotency_runs.is_empty() => Stage::Drop,
                _ => return,
            };
        }
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
        self.skip_empty_stages();
        let mut txn = ledger.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_two_phase_commit(two_phase_commit);
        let over = match &mut self.stage {
            Stage::History(after) => {
                if fold::<HistoryRows>(&txn, &self.history_runs, after, rows_max)? {
                    self.stage = Stage::HistoryChunks(None);
                }
                false
            }
            Stage::HistoryChunks(after) => {
                if fold::<HistoryChunkRows>(&txn, &self.history_chunk_runs, after, rows_max)? {
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
                for name in &self.history_chunk_runs {
                    txn.delete_table(HistoryChunkRows::run(name))?;
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
    let mut rows = merged::<R, _>(&tables, after.as_ref())?.peekable();
    while let Some(row) = rows.next() {
        let (key, value) = row?;
        R::insert(&mut main, &key, &value)?;
        folded += 1;
        // Every copy of a key goes into one commit: the next commit starts after the key, and
        // copies of a history chunk may differ (see `HistoryChunkRows::insert`).
        let next_is_same_key = matches!(rows.peek(), Some(Ok((next, _))) if *next == key);
        *after = Some(key);
        if folded >= rows_max && !next_is_same_key {
            return Ok(rows.peek().is_none());
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    /// Merges every run of `ledger` (there must be `runs`), `rows_max` rows per commit; returns
    /// the merge's commits.
    fn commits_of_a_whole_merge(ledger: &Database, runs: usize, rows_max: usize) -> usize {
        let mut merge = Merge::of(ledger.begin_read().unwrap().list_tables().unwrap());
        assert_eq!(merge.runs(), runs);
        let mut commits = 1;
        while !merge.step(ledger, true, rows_max).unwrap() {
            commits += 1;
            assert!(commits <= 100, "the merge ends");
        }
        commits
    }

    #[test]
    fn run_names_sort_as_their_numbers() {
        assert!(HistoryRows::run_name(9) < HistoryRows::run_name(10));
        assert!(HistoryRows::run_name(u64::MAX - 1) < HistoryRows::run_name(u64::MAX));
        assert!(!HistoryRows::run_name(1).starts_with(IdempotencyRows::RUN_PREFIX));
        assert!(!IdempotencyRows::run_name(1).starts_with(HistoryRows::RUN_PREFIX));
        assert!(!HistoryChunkRows::run_name(1).starts_with(HistoryRows::RUN_PREFIX));
        assert!(!HistoryRows::run_name(1).starts_with(HistoryChunkRows::RUN_PREFIX));
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

        // Two rows per commit, a key's copies in one: the history's seven rows (ben's first
        // version is in two runs) take three commits, the idempotency row one, the drop one.
        assert_eq!(commits_of_a_whole_merge(&ledger, 3, 2), 5);
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

        commits_of_a_whole_merge(&ledger, 2, 3);
        let txn = ledger.begin_read().unwrap();
        assert_eq!(txn.open_table(HISTORY).unwrap().len().unwrap(), 10);
        assert!(HistoryRows::runs_among(txn.list_tables().unwrap()).is_empty());
        drop(txn);
        assert_eq!(all_rows(&ledger), before);
    }

    #[test]
    fn history_chunks_give_every_version_in_range_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Database::create(dir.path().join("chunks.redb")).unwrap();
        // ann's versions 1..=8 in three chunks (transaction id = 10 + version), between players
        // whose names sort next to hers.
        let chunks: [(&str, u64, &[u64]); 5] = [
            ("al", 1, &[1, 2]),
            ("ann", 1, &[11, 12, 13]),
            ("ann", 4, &[14]),
            ("ann", 5, &[15, 16, 17, 18]),
            ("anna", 1, &[99]),
        ];
        let txn = ledger.begin_write().unwrap();
        {
            let mut table = txn.open_table(HISTORY_CHUNKS).unwrap();
            for (player, first_version, ids) in chunks {
                let bytes = encode_history_chunk(ids.iter().copied());
                table
                    .insert((player, first_version), bytes.as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        let txn = ledger.begin_read().unwrap();
        let table = txn.open_table(HISTORY_CHUNKS).unwrap();
        for from in 0..=9u64 {
            for to in from..=9u64 {
                for limit in 1..=9usize {
                    for newest in [true, false] {
                        let mut expected: Vec<(u64, u64)> = (from.max(1)..=to.min(8))
                            .map(|version| (version, 10 + version))
                            .collect();
                        if newest {
                            expected.reverse();
                        }
                        expected.truncate(limit);
                        let mut found = Vec::new();
                        chunk_history(&table, "ann", (from, to), newest, limit, &mut found)
                            .unwrap();
                        assert_eq!(
                            found, expected,
                            "{from}..={to}, limit {limit}, newest {newest}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_history_chunk_of_a_wrong_length_is_corrupt() {
        assert!(history_chunk_entries(1, &[]).is_err());
        assert!(history_chunk_entries(1, &[0; 12]).is_err());
        let entries: Vec<(u64, u64)> =
            history_chunk_entries(7, &encode_history_chunk([40, 41].into_iter()))
                .unwrap()
                .collect();
        assert_eq!(entries, [(7, 40), (8, 41)]);
    }

    #[test]
    fn a_merge_folds_history_chunk_runs_keeps_the_longer_of_two_chunks_and_skips_kinds_without_runs()
     {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Database::create(dir.path().join("runs.redb")).unwrap();
        // ann's first chunk part-written (a crash) and then written whole by recovery into a
        // later run; cat's the other way round; ben's once.
        let runs: [(&str, u64, &[u64]); 5] = [
            ("ann", 1, &[10, 11]),
            ("ann", 1, &[10, 11, 12, 13]),
            ("ben", 1, &[14, 15]),
            ("cat", 1, &[20, 21, 22]),
            ("cat", 1, &[20]),
        ];
        let txn = ledger.begin_write().unwrap();
        for (run, (player, first_version, ids)) in runs.into_iter().enumerate() {
            let name = HistoryChunkRows::run_name(run as u64 + 1);
            let bytes = encode_history_chunk(ids.iter().copied());
            txn.open_table(HistoryChunkRows::run(&name))
                .unwrap()
                .insert((player, first_version), bytes.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        // Five rows at two per commit, a key's copies in one (ann's two, then ben's and cat's
        // two), take two commits, the drop one; the kinds without runs (row-per-version
        // history, idempotency) take none.
        assert_eq!(commits_of_a_whole_merge(&ledger, 5, 2), 3);
        let txn = ledger.begin_read().unwrap();
        assert!(HistoryChunkRows::runs_among(txn.list_tables().unwrap()).is_empty());
        let table = txn.open_table(HISTORY_CHUNKS).unwrap();
        let history = |player: &str| {
            let mut found = Vec::new();
            chunk_history(&table, player, (1, 9), false, 10, &mut found).unwrap();
            found
        };
        assert_eq!(history("ann"), [(1, 10), (2, 11), (3, 12), (4, 13)]);
        assert_eq!(history("ben"), [(1, 14), (2, 15)]);
        assert_eq!(history("cat"), [(1, 20), (2, 21), (3, 22)]);
        drop((table, txn));

        // Whichever order the merge meets them in.
        let txn = ledger.begin_write().unwrap();
        {
            let mut main = txn.open_table(HISTORY_CHUNKS).unwrap();
            let (short, long) = (
                encode_history_chunk([30].into_iter()),
                encode_history_chunk([30, 31].into_iter()),
            );
            for (player, first, second) in [("dan", &long, &short), ("eve", &short, &long)] {
                let key = (player.to_owned(), 1);
                HistoryChunkRows::insert(&mut main, &key, first).unwrap();
                HistoryChunkRows::insert(&mut main, &key, second).unwrap();
                let held = main.get((player, 1)).unwrap().unwrap().value().to_vec();
                assert_eq!(held, long, "{player}");
            }
        }
        txn.commit().unwrap();
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
