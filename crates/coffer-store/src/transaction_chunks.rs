//! Transactions as the ledger file stores them: consecutive transactions in chunks, one row
//! each, rather than a row per transaction.
//!
//! Why: a checkpoint inserted one row per transaction into `transactions`, and each insert is a
//! descent of the B-tree and a change of its last leaf however small the row (about a fifth of
//! the checkpointer's instructions per purchase, under callgrind). A generation's transactions
//! have consecutive ids, so a checkpoint now writes them [`TRANSACTIONS_PER_CHUNK`] to a row of
//! `transaction_chunks`, keyed by the first id. Chunks never overlap (a generation's ids follow
//! the one before's; a generation written twice, after a crash, writes the same chunks), so the
//! chunk that may hold an id is the last one starting at or below it. Rows one per transaction
//! (files before chunks, and imports, which still write them) are read beside the chunks.

use itertools::Itertools;
use redb::{ReadOnlyTable, ReadTransaction, TableDefinition};

use crate::StoreError;

/// Transaction id → encoded `Transaction`, one row each.
pub(crate) const TRANSACTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("transactions");
/// First transaction id → that transaction and the ones after it (see [`encode_chunk`]).
pub(crate) const TRANSACTION_CHUNKS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("transaction_chunks");

/// Transactions a chunk holds at most: a sixteenth of the inserts, and a chunk of purchases
/// (≈ 170 bytes each) still fits a 4 KiB page, so a read of one transaction touches one page.
pub(crate) const TRANSACTIONS_PER_CHUNK: usize = 16;

/// Bytes of the length that goes before each transaction in a chunk.
const LENGTH_BYTES: usize = 4;

/// A chunk's value: each encoded transaction after its length (u32, little-endian), in id order.
pub(crate) fn encode_chunk<'a>(transactions: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for transaction in transactions {
        let length = u32::try_from(transaction.len()).expect("a transaction under 4 GiB");
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(transaction);
    }
    bytes
}

/// The (id, encoded transaction) pairs of the chunk that starts at `first_id`, in id order.
pub(crate) fn chunk_entries(
    first_id: u64,
    bytes: &[u8],
) -> impl Iterator<Item = Result<(u64, &[u8]), StoreError>> {
    let mut rest = bytes;
    let mut id = first_id;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let corrupt = |detail: String| StoreError::Corrupt {
            what: format!("transaction chunk from id {first_id}"),
            detail,
        };
        let Some((length, after)) = rest.split_first_chunk::<LENGTH_BYTES>() else {
            rest = &[];
            return Some(Err(corrupt(format!("{} bytes left over", bytes.len()))));
        };
        let length = u32::from_le_bytes(*length) as usize;
        if after.len() < length {
            rest = &[];
            return Some(Err(corrupt(format!(
                "transaction {id} is {length} bytes long; {} are left",
                after.len()
            ))));
        }
        let (transaction, next) = after.split_at(length);
        rest = next;
        id += 1;
        Some(Ok((id - 1, transaction)))
    })
}

/// The ledger file's transactions in one read snapshot: chunks and rows alike.
pub(crate) struct StoredTransactions {
    rows: ReadOnlyTable<u64, &'static [u8]>,
    chunks: ReadOnlyTable<u64, &'static [u8]>,
}

/// An encoded transaction read out of the ledger file, with its id.
pub(crate) type StoredTransaction = Result<(u64, Vec<u8>), StoreError>;

impl StoredTransactions {
    pub fn open(txn: &ReadTransaction) -> Result<StoredTransactions, StoreError> {
        Ok(StoredTransactions {
            rows: txn.open_table(TRANSACTIONS)?,
            chunks: txn.open_table(TRANSACTION_CHUNKS)?,
        })
    }

    /// Transaction `id`, encoded, if the ledger file holds it.
    pub fn get(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(chunk) = self.chunks.range(..=id)?.next_back() {
            let (first_id, bytes) = chunk?;
            for entry in chunk_entries(first_id.value(), bytes.value()) {
                let (entry_id, transaction) = entry?;
                if entry_id == id {
                    return Ok(Some(transaction.to_vec()));
                }
            }
        }
        Ok(self.rows.get(id)?.map(|bytes| bytes.value().to_vec()))
    }

    /// Every transaction from id `start` on, in id order, each once.
    pub fn from(
        &self,
        start: u64,
    ) -> Result<impl Iterator<Item = StoredTransaction> + '_, StoreError> {
        // The chunk holding `start` may begin below it.
        let first_chunk = match self.chunks.range(..=start)?.next_back() {
            Some(chunk) => chunk?.0.value(),
            None => start,
        };
        let chunked = ChunkEntries {
            chunks: self.chunks.range(first_chunk..)?,
            entries: Vec::new().into_iter(),
        }
        .filter(move |entry| !matches!(entry, Ok((id, _)) if *id < start));
        let rows = self.rows.range(start..)?.map(|row| {
            let (id, bytes) = row?;
            Ok((id.value(), bytes.value().to_vec()))
        });
        Ok(chunked
            .merge_by(rows, |a: &StoredTransaction, b| match (a, b) {
                (Ok((a, _)), Ok((b, _))) => a <= b,
                // An error comes out first, so it ends whatever reads the transactions.
                (Err(_), _) => true,
                (Ok(_), Err(_)) => false,
            })
            .dedup_by(|a, b| matches!((a, b), (Ok((a, _)), Ok((b, _))) if a == b)))
    }
}

/// The entries of a range of chunks, owned, in id order.
struct ChunkEntries<'t> {
    chunks: redb::Range<'t, u64, &'static [u8]>,
    entries: std::vec::IntoIter<StoredTransaction>,
}

impl Iterator for ChunkEntries<'_> {
    type Item = StoredTransaction;

    fn next(&mut self) -> Option<StoredTransaction> {
        loop {
            if let Some(entry) = self.entries.next() {
                return Some(entry);
            }
            let entries: Vec<StoredTransaction> = match self.chunks.next()? {
                Ok((first_id, bytes)) => chunk_entries(first_id.value(), bytes.value())
                    .map(|entry| entry.map(|(id, transaction)| (id, transaction.to_vec())))
                    .collect(),
                Err(error) => vec![Err(error.into())],
            };
            self.entries = entries.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase};

    fn stored(ids_in_chunks: &[&[u64]], ids_in_rows: &[u64]) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Database::create(dir.path().join("chunks.redb")).unwrap();
        let txn = ledger.begin_write().unwrap();
        {
            let mut chunks = txn.open_table(TRANSACTION_CHUNKS).unwrap();
            for ids in ids_in_chunks {
                let bodies: Vec<Vec<u8>> =
                    ids.iter().map(|id| vec![*id as u8; *id as usize]).collect();
                let bytes = encode_chunk(bodies.iter().map(Vec::as_slice));
                chunks.insert(ids[0], bytes.as_slice()).unwrap();
            }
            let mut rows = txn.open_table(TRANSACTIONS).unwrap();
            for id in ids_in_rows {
                rows.insert(*id, vec![*id as u8; *id as usize].as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        (dir, ledger)
    }

    #[test]
    fn every_transaction_is_found_by_id_and_in_order_wherever_it_is() {
        // Rows for 1..=3 (an older file), chunks after; 7 also as a row (an import).
        let (_dir, ledger) = stored(&[&[4, 5, 6], &[7], &[8, 9]], &[1, 2, 3, 7]);
        let txn = ledger.begin_read().unwrap();
        let stored = StoredTransactions::open(&txn).unwrap();
        for id in 1..=9u64 {
            assert_eq!(
                stored.get(id).unwrap(),
                Some(vec![id as u8; id as usize]),
                "id {id}"
            );
        }
        assert_eq!(stored.get(0).unwrap(), None);
        assert_eq!(stored.get(10).unwrap(), None);
        for start in 0..=10u64 {
            let ids: Vec<u64> = stored
                .from(start)
                .unwrap()
                .map(|entry| {
                    let (id, bytes) = entry.unwrap();
                    assert_eq!(bytes, vec![id as u8; id as usize]);
                    id
                })
                .collect();
            assert_eq!(
                ids,
                (start.max(1)..=9).collect::<Vec<u64>>(),
                "from {start}"
            );
        }
    }

    #[test]
    fn a_chunk_cut_short_is_corrupt() {
        let bytes = encode_chunk([&b"abc"[..], &b"de"[..]].into_iter());
        let entries: Vec<(u64, &[u8])> = chunk_entries(5, &bytes).map(Result::unwrap).collect();
        assert_eq!(entries, [(5, &b"abc"[..]), (6, &b"de"[..])]);
        assert!(chunk_entries(5, &bytes[..bytes.len() - 1]).any(|entry| entry.is_err()));
        assert!(chunk_entries(5, &bytes[..2]).any(|entry| entry.is_err()));
    }
}
