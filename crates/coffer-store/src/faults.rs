//! Storage faults on demand, for reliability tests: a redb storage backend for the ledger file,
//! and a check before every journal write and sync, passing every call to the real file until
//! told to fail writes, syncs, or to behave like a full disk. The server must then answer
//! UNAVAILABLE, acknowledge nothing it did not commit and recover once the fault clears; tests
//! flip the switch while real clients keep calling.

use std::fs::File;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use redb::StorageBackend;
use redb::backends::FileBackend;

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

/// The real file behind a [`StorageFaults`] switch.
#[derive(Debug)]
pub(crate) struct FaultyFile {
    file: FileBackend,
    faults: StorageFaults,
}

impl FaultyFile {
    pub(crate) fn new(
        file: File,
        faults: StorageFaults,
    ) -> Result<FaultyFile, redb::DatabaseError> {
        Ok(FaultyFile {
            file: FileBackend::new(file)?,
            faults,
        })
    }
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.faults.current() == Fault::DiskFull && len > self.file.len()? {
            return Err(self
                .faults
                .fail(std::io::ErrorKind::StorageFull, "disk full"));
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.faults.before_sync()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.faults.before_write()?;
        self.file.write(offset, data)
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
