//! Storage faults on demand, for reliability tests: a check before every write and sync of the
//! ledger file (in its redb storage backend, `ledger_file.rs`) and of the journal, letting
//! every call reach the real file until told to fail writes, syncs, or to behave like a full
//! disk. The server must then answer UNAVAILABLE, acknowledge nothing it did not commit and
//! recover once the fault clears; tests flip the switch while real clients keep calling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// What the storage does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Every call reaches the file.
    None = 0,
    /// Writes fail with an I/O error.
    WriteError = 1,
    /// `fsync` fails with an I/O error (writes may have reached the page cache).
    SyncError = 2,
    /// Writes and growing the file fail with "no space left on device".
    DiskFull = 3,
}

/// A switch shared by the test and the backend; clones control the same storage.
#[derive(Debug, Clone, Default)]
pub struct StorageFaults {
    fault: Arc<AtomicU8>,
    injected: Arc<AtomicU64>,
}

impl StorageFaults {
    /// Makes every following storage call behave as `fault` says.
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// The fault in force.
    pub fn current(&self) -> Fault {
        match self.fault.load(Ordering::SeqCst) {
            1 => Fault::WriteError,
            2 => Fault::SyncError,
            3 => Fault::DiskFull,
            _ => Fault::None,
        }
    }

    /// How many calls have failed on purpose so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// What a write meets now: an error under `WriteError` and `DiskFull`.
    pub(crate) fn before_write(&self) -> Result<(), std::io::Error> {
        match self.current() {
            Fault::WriteError => Err(self.fail(std::io::ErrorKind::Other, "write failed")),
            Fault::DiskFull => Err(self.fail(std::io::ErrorKind::StorageFull, "disk full")),
            _ => Ok(()),
        }
    }

    /// What growing or shrinking the file from `len` to `new_len` bytes meets now: "no space
    /// left on device" for growth under `DiskFull`.
    pub(crate) fn before_set_len(&self, len: u64, new_len: u64) -> Result<(), std::io::Error> {
        if self.current() == Fault::DiskFull && new_len > len {
            return Err(self.fail(std::io::ErrorKind::StorageFull, "disk full"));
        }
        Ok(())
    }

    /// What an `fsync` meets now: an error under `SyncError`.
    pub(crate) fn before_sync(&self) -> Result<(), std::io::Error> {
        if self.current() == Fault::SyncError {
            return Err(self.fail(std::io::ErrorKind::Other, "fsync failed"));
        }
        Ok(())
    }

    fn fail(&self, kind: std::io::ErrorKind, what: &str) -> std::io::Error {
        self.injected.fetch_add(1, Ordering::SeqCst);
        std::io::Error::new(kind, format!("injected fault: {what}"))
    }
}
