//! The ledger file as redb's storage: the real file, whose writes are handed to the disk in
//! pieces of at most [`WRITEBACK_PIECE_BYTES`] before each sync, and, for reliability tests,
//! behind a [`StorageFaults`] switch.
//!
//! Why pieces: a checkpoint commit dirties thousands of scattered pages (megabytes), which redb
//! makes durable with one `fdatasync`. Handed to the disk all at once, they sit in its queue
//! ahead of the journal's next sync, which every acknowledgement waits for: an instrumented
//! build saw journal syncs of 100–800 ms while checkpoints committed, the half-peak latency
//! tail. Written back piece by piece (`sync_file_range`, waiting for each), at most one piece
//! is ever queued ahead of a journal sync, as with the journal's spare segment fill.

use std::fs::File;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::StorageBackend;
use redb::backends::FileBackend;

use crate::faults::StorageFaults;

/// Most bytes of the ledger file handed to the disk at once before a sync: a few hundred
/// microseconds of this disk's bandwidth, so a journal sync queued behind it barely waits.
pub const WRITEBACK_PIECE_BYTES: u64 = 256 << 10;

/// The real ledger file.
#[derive(Debug)]
pub(crate) struct LedgerFile {
    file: FileBackend,
    /// The same open file: `FileBackend` keeps its own to itself.
    writeback: File,
    /// `(offset, length)` of every write since the last sync, in the order written.
    unsynced: Mutex<Vec<(u64, u64)>>,
    /// Bytes written to the file, shared with the store: what a checkpoint cost in pages.
    written_bytes: Arc<AtomicU64>,
    faults: Option<StorageFaults>,
}

impl LedgerFile {
    pub(crate) fn new(
        file: File,
        faults: Option<StorageFaults>,
        written_bytes: Arc<AtomicU64>,
    ) -> Result<LedgerFile, redb::DatabaseError> {
        let writeback = file.try_clone()?;
        Ok(LedgerFile {
            file: FileBackend::new(file)?,
            writeback,
            unsynced: Mutex::default(),
            written_bytes,
            faults,
        })
    }
}

/// Groups `writes` (`(offset, length)`, any order) into pieces in file order, each covering at
/// most [`WRITEBACK_PIECE_BYTES`] of written bytes (a single larger write is a piece of its
/// own), as `(start, end)` byte ranges. Clean pages between writes may fall inside a range:
/// writeback skips them.
pub(crate) fn writeback_pieces(writes: &mut [(u64, u64)]) -> Vec<(u64, u64)> {
    writes.sort_unstable();
    let mut pieces: Vec<(u64, u64)> = Vec::new();
    let mut piece_bytes = 0;
    for &(offset, length) in writes.iter() {
        let end = offset + length;
        match pieces.last_mut() {
            Some(piece) if piece_bytes + length <= WRITEBACK_PIECE_BYTES => {
                piece.1 = piece.1.max(end);
                piece_bytes += length;
            }
            _ => {
                pieces.push((offset, end));
                piece_bytes = length;
            }
        }
    }
    pieces
}

/// Hands `start..end` of `file` to the disk and waits until it is written (not flushed from the
/// disk's cache: the `fdatasync` after it does that).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn write_back(file: &File, (start, end): (u64, u64)) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    let to_offset = |value: u64| {
        libc::off64_t::try_from(value).map_err(|_| std::io::Error::other("offset out of range"))
    };
    let (offset, length) = (to_offset(start)?, to_offset(end - start)?);
    // SAFETY: the descriptor belongs to `file`, open for the whole call; the call reads and
    // writes none of this process's memory.
    let result = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, length, flags) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the sync alone writes everything back.
#[cfg(not(target_os = "linux"))]
fn write_back(_file: &File, _range: (u64, u64)) -> std::io::Result<()> {
    Ok(())
}

impl StorageBackend for LedgerFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if let Some(faults) = &self.faults {
            faults.before_set_len(self.file.len()?, len)?;
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        if let Some(faults) = &self.faults {
            faults.before_sync()?;
        }
        // Taken even if writeback fails: the store reopens its files after any failed sync.
        let mut writes = std::mem::take(&mut *self.unsynced.lock().expect("ledger file lock"));
        for piece in writeback_pieces(&mut writes) {
            write_back(&self.writeback, piece)?;
        }
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if let Some(faults) = &self.faults {
            faults.before_write()?;
        }
        self.file.write(offset, data)?;
        self.written_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.unsynced
            .lock()
            .expect("ledger file lock")
            .push((offset, data.len() as u64));
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    // Locks are the real file's, so a second process still cannot open the database.
    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    #[test]
    fn scattered_writes_become_pieces_in_file_order_of_at_most_the_piece_size() {
        // Every other page of a 2 MiB region, written backwards: 256 pages of 4 KiB.
        let mut writes: Vec<(u64, u64)> = (0..256).rev().map(|i| (i * 2 * PAGE, PAGE)).collect();
        let pieces = writeback_pieces(&mut writes);
        let pages_per_piece = WRITEBACK_PIECE_BYTES / PAGE;
        assert_eq!(pieces.len() as u64, 256 / pages_per_piece);
        for (n, &(start, end)) in pieces.iter().enumerate() {
            let first_page = n as u64 * pages_per_piece;
            assert_eq!(start, first_page * 2 * PAGE);
            // Its last page is the one before the next piece's first.
            assert_eq!(end, (first_page + pages_per_piece - 1) * 2 * PAGE + PAGE);
        }
    }

    #[test]
    fn every_written_byte_is_in_exactly_one_piece() {
        let mut writes = vec![
            (10 * PAGE, PAGE),
            (0, 3 * PAGE),
            (1 << 30, WRITEBACK_PIECE_BYTES * 3), // one write larger than a piece
            (5 * PAGE, PAGE),
            (5 * PAGE, PAGE), // the same page again
        ];
        let pieces = writeback_pieces(&mut writes);
        for &(offset, length) in &writes {
            let covering = pieces
                .iter()
                .filter(|&&(start, end)| start <= offset && offset + length <= end)
                .count();
            assert_eq!(covering, 1, "write at {offset} of {length} bytes");
        }
        assert!(pieces.windows(2).all(|w| w[0].1 <= w[1].0), "{pieces:?}");
    }

    #[test]
    fn nothing_written_means_nothing_to_write_back() {
        assert!(writeback_pieces(&mut []).is_empty());
    }
}
