//! The journal on disk: a directory of segment files holding CRC-framed records, appended in
//! sequence order and made durable with one `fdatasync` per batch. Nothing but the batch's
//! bytes is written on the request path: no pages, no tree, no allocator, so a commit costs a
//! `pwrite` and the disk's flush.
//!
//! Writing and syncing are separate steps, so the writer can prepare its next batch while the
//! disk flushes the last one ([`JournalWriter::write`], then [`JournalSync::sync`] from another
//! thread); a batch counts as committed only once a sync that started after its write returned.
//!
//! A record is `[crc32 u32][payload length u32][seq u64][payload]`, little-endian, the CRC
//! covering everything after itself. A segment is named after the sequence number of its first
//! record. Segments whose records are all checkpointed are renamed to be the next segment
//! (recycled, so steady-state writes overwrite blocks the file already has instead of growing
//! it, which spares the file system a metadata update per `fdatasync`). Where no segment can be
//! recycled (a fresh journal, or one growing while checkpoints lag), a new segment is renamed
//! from a spare that a background thread zero-filled and synced beforehand, for the same
//! reason; a journal that had to start a segment by growing a file moves to the spare as soon
//! as it is ready. Reading a segment stops at the first record that is torn, damaged, or not
//! the next in sequence: the bytes after the last record are never written, zeros of a spare,
//! or left from the segment's previous life, and records from an earlier life always carry
//! older sequence numbers.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::StoreError;
use crate::faults::StorageFaults;

/// The journal's directory inside the data directory.
pub const JOURNAL_DIR_NAME: &str = "coffer-journal";

/// A segment takes records until it holds this many bytes, then the journal moves to the next
/// one. Larger segments mean fewer renames and directory syncs; the journal holds a few of them
/// (everything not yet checkpointed, see `FROZEN_GENERATIONS_MAX`).
pub(crate) const SEGMENT_BYTES_TARGET: u64 = 64 << 20;

/// A fully checkpointed segment at least this long is recycled; a shorter one (left when the
/// journal moved from a growing file to a spare) is removed, since writing past its end would
/// grow it again.
const RECYCLED_SEGMENT_BYTES_MIN: u64 = SEGMENT_BYTES_TARGET / 2;

/// A journal asks for a spare once its growing segment holds this many bytes: a store that
/// writes less (a short test, a quiet server) never spends a segment's worth of disk writes on
/// one, and a busy one has its spare within a second or two.
const SPARE_WANTED_AFTER_BYTES: u64 = 1 << 20;

/// The spare is zero-filled in pieces of this size, each synced before the next and followed
/// by a pause, so the disk never has more than one piece of zeros queued ahead of a journal
/// sync and is free for journal syncs between pieces.
const SPARE_FILL_CHUNK_BYTES: usize = 256 << 10;
const SPARE_FILL_PAUSE_MS: u64 = 5;

/// The zero-filled file the next new segment is renamed from, and the name it is filled under
/// until it is complete. Neither ends in [`SEGMENT_SUFFIX`], so readers never take either for a
/// segment; a spare outlives the journal (it is ready at the next start).
const SPARE_NAME: &str = "spare-segment.zeroed";
const SPARE_FILLING_NAME: &str = "spare-segment.filling";

const SEGMENT_SUFFIX: &str = ".log";
const RECORD_HEADER_BYTES: usize = 16;
/// The largest payload a record may carry; a larger length field is damage, not a record.
const RECORD_PAYLOAD_BYTES_MAX: usize = 1 << 30;

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

pub(crate) fn journal_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Journal {
        path: path.display().to_string(),
        source,
    }
}

/// The first sequence numbers of the segments in `dir`, oldest first.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| journal_error(dir, e))? {
        let entry = entry.map_err(|e| journal_error(dir, e))?;
        let name = entry.file_name();
        let Some(first_seq) = name
            .to_str()
            .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push(first_seq);
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Makes the directory's entries (created, renamed, removed files) durable.
fn sync_directory(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| journal_error(dir, e))
}

fn record_checksum(rest_of_record: &[u8]) -> u32 {
    crc32fast::hash(rest_of_record)
}

/// The record at `offset` of `bytes`: its sequence number, payload and the offset after it;
/// `None` if there is no intact record there.
fn parse_record(bytes: &[u8], offset: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(offset..offset.checked_add(RECORD_HEADER_BYTES)?)?;
    let crc = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let payload_len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if payload_len > RECORD_PAYLOAD_BYTES_MAX {
        return None;
    }
    let end = offset + RECORD_HEADER_BYTES + payload_len;
    let covered = bytes.get(offset + 4..end)?;
    if record_checksum(covered) != crc {
        return None;
    }
    Some((seq, &bytes[offset + RECORD_HEADER_BYTES..end], end))
}

/// Reads the journal in `dir` and calls `each` with every record from `from_seq` on, in order
/// (0: from the first record, whatever its number). A record after `from_seq` that does not
/// follow the one before it means records were lost: that is an error, not a torn tail.
pub(crate) fn read_journal(
    dir: &Path,
    from_seq: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut next_seq = from_seq;
    for first_seq in list_segments(dir)? {
        let path = segment_path(dir, first_seq);
        let bytes = std::fs::read(&path).map_err(|e| journal_error(&path, e))?;
        let mut offset = 0;
        let mut seq = first_seq;
        while let Some((record_seq, payload, after)) = parse_record(&bytes, offset) {
            if record_seq != seq {
                break;
            }
            if seq >= from_seq {
                if next_seq == 0 {
                    next_seq = seq;
                }
                if seq != next_seq {
                    return Err(StoreError::Corrupt {
                        what: format!("journal segment {}", path.display()),
                        detail: format!(
                            "record {seq} where {next_seq} was expected: records are missing"
                        ),
                    });
                }
                each(seq, payload)?;
                next_seq = seq + 1;
            }
            seq += 1;
            offset = after;
        }
    }
    Ok(())
}

/// How many intact records the journal in `dir` holds (for tools and tests; 0 when there is no
/// journal).
pub fn journal_record_count(dir: &Path) -> Result<u64, StoreError> {
    if !dir.exists() {
        return Ok(0);
    }
    let mut count = 0;
    read_journal(dir, 0, |_, _| {
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// What a sync makes durable: the current segment and the newest record written to it.
#[derive(Debug, Clone)]
struct SyncTarget {
    file: Arc<File>,
    first_seq: u64,
    written_through: u64,
}

/// The syncing end of the journal: `fdatasync` of everything written so far. Records in older
/// segments were synced by the writer before it moved on from them.
#[derive(Debug)]
pub(crate) struct JournalSync {
    dir: PathBuf,
    faults: Option<StorageFaults>,
    target: Mutex<SyncTarget>,
}

impl JournalSync {
    /// Makes every record written before this call durable; returns the newest one's sequence
    /// number.
    pub fn sync(&self) -> Result<u64, StoreError> {
        let target = self.target.lock().expect("sync target poisoned").clone();
        let failed = |e| journal_error(&segment_path(&self.dir, target.first_seq), e);
        if let Some(faults) = &self.faults {
            faults.before_sync().map_err(failed)?;
        }
        target.file.sync_data().map_err(failed)?;
        Ok(target.written_through)
    }
}

/// Where the spare segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpareState {
    /// Not asked for yet (see [`SPARE_WANTED_AFTER_BYTES`]).
    Idle,
    /// Being filled (or about to be).
    Wanted,
    /// Complete and synced under [`SPARE_NAME`].
    Ready,
    /// Filling failed; the journal grows files instead.
    Failed,
    /// The journal is closing.
    Stopping,
}

#[derive(Debug)]
struct SpareShared {
    dir: PathBuf,
    state: Mutex<SpareState>,
    changed: Condvar,
}

/// A zero-filled, synced segment-sized file kept ready by a background thread. Records written
/// over blocks a file already has need only a data flush; records that grow a file make every
/// `fdatasync` commit the file system's journal too, which in ext4 also waits for other files'
/// new blocks (the ledger file's checkpoint writes) to reach the disk. Measured here: a 4 KiB
/// write + `fdatasync` took 0.40 ms (p50) growing a file, 0.22 ms over written blocks.
#[derive(Debug)]
struct SpareSegment {
    shared: Arc<SpareShared>,
    filler: Option<JoinHandle<()>>,
}

impl SpareSegment {
    /// Takes the spare left in `dir` if it is complete, and starts the thread that fills the
    /// next one whenever it is taken.
    fn start(dir: &Path) -> SpareSegment {
        let complete = std::fs::metadata(dir.join(SPARE_NAME))
            .is_ok_and(|meta| meta.len() == SEGMENT_BYTES_TARGET);
        let shared = Arc::new(SpareShared {
            dir: dir.to_owned(),
            state: Mutex::new(if complete {
                SpareState::Ready
            } else {
                SpareState::Idle
            }),
            changed: Condvar::new(),
        });
        let filler_shared = Arc::clone(&shared);
        let filler = std::thread::Builder::new()
            .name("coffer-journal-spare".to_owned())
            .spawn(move || fill_spares(&filler_shared))
            .map_err(|error| {
                tracing::warn!(%error, "no spare journal segments: new segments grow instead");
                *shared.state.lock().expect("spare state poisoned") = SpareState::Failed;
            })
            .ok();
        SpareSegment { shared, filler }
    }

    fn is_ready(&self) -> bool {
        *self.shared.state.lock().expect("spare state poisoned") == SpareState::Ready
    }

    /// Asks the filler for a spare if none was asked for yet.
    fn want(&self) {
        let mut state = self.shared.state.lock().expect("spare state poisoned");
        if *state == SpareState::Idle {
            *state = SpareState::Wanted;
            self.shared.changed.notify_all();
        }
    }

    /// Renames the spare to `path` if it is ready (and has the next one filled); false if not.
    fn take(&self, path: &Path) -> Result<bool, StoreError> {
        let mut state = self.shared.state.lock().expect("spare state poisoned");
        if *state != SpareState::Ready {
            return Ok(false);
        }
        let spare = self.shared.dir.join(SPARE_NAME);
        std::fs::rename(&spare, path).map_err(|e| journal_error(&spare, e))?;
        *state = SpareState::Wanted;
        self.shared.changed.notify_all();
        Ok(true)
    }
}

impl Drop for SpareSegment {
    /// Stops the filler between two pieces; a half-filled spare is filled again next time.
    fn drop(&mut self) {
        *self.shared.state.lock().expect("spare state poisoned") = SpareState::Stopping;
        self.shared.changed.notify_all();
        if let Some(filler) = self.filler.take()
            && filler.join().is_err()
        {
            tracing::error!("the journal's spare segment filler panicked");
        }
    }
}

/// The filler thread: fills a spare whenever one is wanted, until the journal closes.
fn fill_spares(shared: &SpareShared) {
    loop {
        {
            let mut state = shared.state.lock().expect("spare state poisoned");
            while matches!(*state, SpareState::Idle | SpareState::Ready) {
                state = shared.changed.wait(state).expect("spare state poisoned");
            }
            if *state != SpareState::Wanted {
                return;
            }
        }
        let stopping =
            || *shared.state.lock().expect("spare state poisoned") == SpareState::Stopping;
        match fill_spare(&shared.dir, stopping) {
            Ok(true) => {
                let mut state = shared.state.lock().expect("spare state poisoned");
                if *state == SpareState::Wanted {
                    *state = SpareState::Ready;
                }
            }
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(%error, "filling a spare journal segment failed: new segments grow instead");
                let mut state = shared.state.lock().expect("spare state poisoned");
                if *state == SpareState::Wanted {
                    *state = SpareState::Failed;
                }
                return;
            }
        }
    }
}

/// Writes a segment's worth of zeros under [`SPARE_FILLING_NAME`], piece by synced piece, then
/// renames it to [`SPARE_NAME`]; false if `stopping` said to give up first.
fn fill_spare(dir: &Path, stopping: impl Fn() -> bool) -> Result<bool, StoreError> {
    let filling = dir.join(SPARE_FILLING_NAME);
    let failed = |e| journal_error(&filling, e);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&filling)
        .map_err(failed)?;
    let zeros = vec![0u8; SPARE_FILL_CHUNK_BYTES];
    let mut filled = 0u64;
    while filled < SEGMENT_BYTES_TARGET {
        if stopping() {
            return Ok(false);
        }
        let piece = (SEGMENT_BYTES_TARGET - filled).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..piece], filled).map_err(failed)?;
        file.sync_data().map_err(failed)?;
        filled += piece as u64;
        std::thread::sleep(std::time::Duration::from_millis(SPARE_FILL_PAUSE_MS));
    }
    file.sync_all().map_err(failed)?;
    let spare = dir.join(SPARE_NAME);
    std::fs::rename(&filling, &spare).map_err(failed)?;
    Ok(true)
}

/// The writing end of the journal, owned by the one writer.
pub(crate) struct JournalWriter {
    /// First sequence numbers of the segments on disk, oldest first; the last one is `file`.
    segments: VecDeque<u64>,
    file: Arc<File>,
    sync: Arc<JournalSync>,
    /// Bytes of the current segment's records, where the next record goes.
    written_bytes: u64,
    /// True when the current segment grows its file as records arrive (no spare was ready).
    growing: bool,
    next_seq: u64,
    record: Vec<u8>,
    /// `None` in tests of the segment rules, which must not depend on the filler's timing.
    spare: Option<SpareSegment>,
}

impl JournalWriter {
    /// Removes every segment in `dir` (the caller has folded what they hold into the ledger
    /// file) and starts an empty journal whose first record will be `next_seq`.
    pub fn start_empty(
        dir: &Path,
        faults: Option<StorageFaults>,
        next_seq: u64,
    ) -> Result<JournalWriter, StoreError> {
        Self::start_empty_with(dir, faults, next_seq, true)
    }

    /// [`JournalWriter::start_empty`], with or without spare segments.
    fn start_empty_with(
        dir: &Path,
        faults: Option<StorageFaults>,
        next_seq: u64,
        spares: bool,
    ) -> Result<JournalWriter, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| journal_error(dir, e))?;
        for first_seq in list_segments(dir)? {
            let path = segment_path(dir, first_seq);
            std::fs::remove_file(&path).map_err(|e| journal_error(&path, e))?;
        }
        let spare = spares.then(|| SpareSegment::start(dir));
        let path = segment_path(dir, next_seq);
        let growing = match &spare {
            Some(spare) => !spare.take(&path)?,
            None => true,
        };
        let file = Arc::new(open_segment(&path)?);
        sync_directory(dir)?;
        let sync = Arc::new(JournalSync {
            dir: dir.to_owned(),
            faults,
            target: Mutex::new(SyncTarget {
                file: Arc::clone(&file),
                first_seq: next_seq,
                written_through: next_seq - 1,
            }),
        });
        Ok(JournalWriter {
            segments: VecDeque::from([next_seq]),
            file,
            sync,
            written_bytes: 0,
            growing,
            next_seq,
            record: Vec::new(),
            spare,
        })
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The syncing end, for the thread that waits for durability.
    pub fn sync_handle(&self) -> Arc<JournalSync> {
        Arc::clone(&self.sync)
    }

    /// Writes one record, whose payload `encode` writes, and returns its sequence number. It
    /// is durable after the next [`JournalSync::sync`]. `checkpointed_through` tells which old
    /// segments may be recycled.
    pub fn write(
        &mut self,
        checkpointed_through: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        self.record.clear();
        self.record.resize(RECORD_HEADER_BYTES, 0);
        encode(&mut self.record);
        let payload_len = self.record.len() - RECORD_HEADER_BYTES;
        if payload_len > RECORD_PAYLOAD_BYTES_MAX {
            return Err(StoreError::Corrupt {
                what: "journal record".to_owned(),
                detail: format!(
                    "{payload_len} bytes is more than a record holds ({RECORD_PAYLOAD_BYTES_MAX})"
                ),
            });
        }
        self.record[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.record[8..16].copy_from_slice(&seq.to_le_bytes());
        let crc = record_checksum(&self.record[4..]);
        self.record[0..4].copy_from_slice(&crc.to_le_bytes());

        let record_bytes = self.record.len() as u64;
        let full = self.written_bytes + record_bytes > SEGMENT_BYTES_TARGET;
        let spare_ready = || self.spare.as_ref().is_some_and(SpareSegment::is_ready);
        if self.written_bytes > 0 && (full || (self.growing && spare_ready())) {
            self.next_segment(seq, checkpointed_through)?;
        }
        let path = || {
            segment_path(
                &self.sync.dir,
                *self.segments.back().expect("a current segment"),
            )
        };
        if let Some(faults) = &self.sync.faults {
            faults
                .before_write()
                .map_err(|e| journal_error(&path(), e))?;
        }
        self.file
            .write_all_at(&self.record, self.written_bytes)
            .map_err(|e| journal_error(&path(), e))?;
        self.written_bytes += record_bytes;
        if self.growing
            && self.written_bytes >= SPARE_WANTED_AFTER_BYTES
            && let Some(spare) = &self.spare
        {
            spare.want();
        }
        self.next_seq = seq + 1;
        self.sync
            .target
            .lock()
            .expect("sync target poisoned")
            .written_through = seq;
        Ok(seq)
    }

    /// Starts the segment whose first record is `first_seq`: the oldest segment, renamed, if
    /// all its records are checkpointed and it is not short (other such segments are removed),
    /// else the spare if it is ready, else a new file that grows.
    fn next_segment(
        &mut self,
        first_seq: u64,
        checkpointed_through: u64,
    ) -> Result<(), StoreError> {
        // The writer waits for all of this (two syncs and renames); the debug log says how long.
        let started = std::time::Instant::now();
        // The sync thread only syncs the current segment: the old one's records are made
        // durable here, before the switch.
        self.sync.sync()?;
        // A segment is fully checkpointed when the segment after it starts at or before the
        // record after the checkpoint; for the current one, that is the record being written.
        let fully_checkpointed = |segments: &VecDeque<u64>| {
            let after_oldest = segments.get(1).copied().unwrap_or(first_seq);
            after_oldest <= checkpointed_through + 1
        };
        let path = segment_path(&self.sync.dir, first_seq);
        let mut recycled = None;
        while fully_checkpointed(&self.segments) {
            let oldest = self.segments.pop_front().expect("checked above");
            let oldest_path = segment_path(&self.sync.dir, oldest);
            let oldest_bytes = std::fs::metadata(&oldest_path)
                .map_err(|e| journal_error(&oldest_path, e))?
                .len();
            if recycled.is_none() && oldest_bytes >= RECYCLED_SEGMENT_BYTES_MIN {
                std::fs::rename(&oldest_path, &path).map_err(|e| journal_error(&oldest_path, e))?;
                recycled = Some(oldest);
            } else {
                std::fs::remove_file(&oldest_path).map_err(|e| journal_error(&oldest_path, e))?;
            }
            if self.segments.is_empty() {
                break;
            }
        }
        self.growing = match (recycled, &self.spare) {
            (Some(_), _) => false,
            (None, Some(spare)) => !spare.take(&path)?,
            (None, None) => true,
        };
        let file = Arc::new(open_segment(&path)?);
        // The new name must be durable before an acknowledged record lives under it.
        sync_directory(&self.sync.dir)?;
        self.file = Arc::clone(&file);
        self.written_bytes = 0;
        self.segments.push_back(first_seq);
        let mut target = self.sync.target.lock().expect("sync target poisoned");
        target.file = file;
        target.first_seq = first_seq;
        tracing::debug!(
            first_seq,
            recycled = recycled.is_some(),
            growing = self.growing,
            elapsed_us = started.elapsed().as_micros() as u64,
            "journal segment started"
        );
        Ok(())
    }

    /// At a clean stop, with every record checkpointed: removes the segments, so the ledger
    /// file alone holds the ledger.
    pub fn remove_all(&mut self) -> Result<(), StoreError> {
        for first_seq in self.segments.drain(..) {
            let path = segment_path(&self.sync.dir, first_seq);
            std::fs::remove_file(&path).map_err(|e| journal_error(&path, e))?;
        }
        sync_directory(&self.sync.dir)
    }
}

fn open_segment(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| journal_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    fn read_all(dir: &Path, from_seq: u64) -> Vec<(u64, Vec<u8>)> {
        let mut records = Vec::new();
        read_journal(dir, from_seq, |seq, bytes| {
            records.push((seq, bytes.to_vec()));
            Ok(())
        })
        .unwrap();
        records
    }

    #[test]
    fn records_read_back_in_order_from_any_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalWriter::start_empty(dir.path(), None, 5).unwrap();
        for seq in 5..15 {
            assert_eq!(
                journal
                    .write(0, |out| out.extend(payload(seq, 100)))
                    .unwrap(),
                seq
            );
        }
        assert_eq!(journal.sync_handle().sync().unwrap(), 14);
        let records = read_all(dir.path(), 9);
        assert_eq!(records.len(), 6);
        for (seq, bytes) in records {
            assert_eq!(bytes, payload(seq, 100));
        }
        assert_eq!(journal_record_count(dir.path()).unwrap(), 10);
    }

    #[test]
    fn a_torn_or_damaged_tail_ends_the_journal_and_a_fresh_start_ignores_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalWriter::start_empty_with(dir.path(), None, 1, false).unwrap();
        for seq in 1..=3 {
            journal
                .write(0, |out| out.extend(payload(seq, 50)))
                .unwrap();
        }
        let path = segment_path(dir.path(), 1);
        let whole = std::fs::read(&path).unwrap();
        // Torn: the third record only half written.
        std::fs::write(&path, &whole[..whole.len() - 20]).unwrap();
        assert_eq!(read_all(dir.path(), 1).len(), 2);
        // Damaged: one flipped payload bit in the second record.
        let mut damaged = whole.clone();
        damaged[RECORD_HEADER_BYTES + 50 + RECORD_HEADER_BYTES + 7] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        assert_eq!(read_all(dir.path(), 1).len(), 1);
        // A fresh start (after recovery folded record 1 in) removes the damaged segment: the
        // new journal's record 2 is read, the old damaged bytes never.
        drop(journal);
        let mut journal = JournalWriter::start_empty(dir.path(), None, 2).unwrap();
        assert_eq!(journal_record_count(dir.path()).unwrap(), 0);
        journal.write(0, |out| out.extend(payload(2, 9))).unwrap();
        assert_eq!(read_all(dir.path(), 2), [(2, payload(2, 9))]);
    }

    #[test]
    fn recycled_segments_keep_old_bytes_that_are_never_read_as_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalWriter::start_empty_with(dir.path(), None, 1, false).unwrap();
        let big = (SEGMENT_BYTES_TARGET / 3) as usize;
        // Nothing checkpointed: every switch makes a new segment.
        for seq in 1..=4 {
            journal
                .write(0, |out| out.extend(payload(seq, big)))
                .unwrap();
        }
        assert_eq!(list_segments(dir.path()).unwrap(), [1, 3]);
        // Everything checkpointed: the switch at record 5 renames segment 1 to 5 and removes
        // segment 3. Record 5 overwrites old record 1 exactly; old record 2 is still intact
        // after it, but it is not the record after 5.
        journal.write(4, |out| out.extend(payload(5, big))).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), [5]);
        assert_eq!(read_all(dir.path(), 5).len(), 1);
        // A short record over old record 2's header: the rest of it is not read either.
        journal.write(4, |out| out.extend(payload(6, 10))).unwrap();
        let records = read_all(dir.path(), 5);
        assert_eq!(
            records.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [5, 6]
        );
        assert_eq!(records[1].1, payload(6, 10));
    }

    #[test]
    fn a_missing_record_after_the_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalWriter::start_empty(dir.path(), None, 10).unwrap();
        journal.write(0, |out| out.extend(payload(10, 5))).unwrap();
        assert!(matches!(
            read_journal(dir.path(), 8, |_, _| Ok(())),
            Err(StoreError::Corrupt { .. })
        ));
    }

    fn file_bytes(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// Waits (bounded) for the filler to have a complete spare ready.
    fn wait_for_spare(journal: &JournalWriter) {
        let spare = journal.spare.as_ref().expect("a journal with spares");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !spare.is_ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "no spare segment after 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_growing_segment_gives_way_to_a_zero_filled_spare_and_restarts_begin_on_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalWriter::start_empty(dir.path(), None, 1).unwrap();
        let spare_state =
            |journal: &JournalWriter| *journal.spare.as_ref().unwrap().shared.state.lock().unwrap();
        journal.write(0, |out| out.extend(payload(1, 40))).unwrap();
        assert!(journal.growing, "a fresh journal has no spare to begin on");
        assert_eq!(
            spare_state(&journal),
            SpareState::Idle,
            "a journal that wrote little has not asked for a spare"
        );
        let wanted_after = SPARE_WANTED_AFTER_BYTES as usize;
        journal
            .write(0, |out| out.extend(payload(2, wanted_after)))
            .unwrap();
        wait_for_spare(&journal);
        // Once the spare is ready, the next record starts a segment made from it: a file of
        // full length before any record is in it. The grown segment keeps its records.
        journal.write(0, |out| out.extend(payload(3, 40))).unwrap();
        assert_eq!(journal.segments, [1, 3]);
        assert!(!journal.growing);
        let first = segment_path(dir.path(), 1);
        assert!(file_bytes(&first) < SEGMENT_BYTES_TARGET);
        let current = segment_path(dir.path(), 3);
        assert_eq!(file_bytes(&current), SEGMENT_BYTES_TARGET);
        // Writing into the zeros neither grows the file nor ends the segment early, and the
        // zeros after the last record are not read as records.
        for seq in 4..=6 {
            journal
                .write(0, |out| out.extend(payload(seq, 1_000)))
                .unwrap();
        }
        assert_eq!(journal.segments, [1, 3]);
        assert_eq!(file_bytes(&current), SEGMENT_BYTES_TARGET);
        journal.sync_handle().sync().unwrap();
        let records = read_all(dir.path(), 1);
        assert_eq!(
            records.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(records[1].1, payload(2, wanted_after));
        assert_eq!(records[5].1, payload(6, 1_000));

        // The taken spare is replaced at once (the journal is busy); a restart begins on it,
        // and the spare it leaves is never read as a segment.
        wait_for_spare(&journal);
        drop(journal);
        assert_eq!(
            file_bytes(&dir.path().join(SPARE_NAME)),
            SEGMENT_BYTES_TARGET
        );
        let mut journal = JournalWriter::start_empty(dir.path(), None, 7).unwrap();
        assert!(
            !journal.growing,
            "a restart begins on the spare left by the last run"
        );
        assert_eq!(
            file_bytes(&segment_path(dir.path(), 7)),
            SEGMENT_BYTES_TARGET
        );
        journal.write(0, |out| out.extend(payload(7, 10))).unwrap();
        journal.sync_handle().sync().unwrap();
        assert_eq!(read_all(dir.path(), 0), [(7, payload(7, 10))]);
    }

    #[test]
    fn a_short_checkpointed_segment_is_removed_not_recycled() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = JournalWriter::start_empty_with(dir.path(), None, 1, false).unwrap();
        let big = (SEGMENT_BYTES_TARGET / 3) as usize;
        journal.write(0, |out| out.extend(payload(1, 10))).unwrap();
        // Segment 1 ends short, as when the journal leaves a growing file for a spare.
        journal.next_segment(2, 0).unwrap();
        for seq in 2..=4 {
            journal
                .write(0, |out| out.extend(payload(seq, big)))
                .unwrap();
        }
        assert_eq!(list_segments(dir.path()).unwrap(), [1, 2, 4]);
        let second_bytes = file_bytes(&segment_path(dir.path(), 2));
        assert!(file_bytes(&segment_path(dir.path(), 1)) < RECYCLED_SEGMENT_BYTES_MIN);
        assert!(second_bytes >= RECYCLED_SEGMENT_BYTES_MIN);
        // Everything checkpointed at the next switch: segment 1 is too short to take a
        // segment's records without growing, so it goes; segment 2, the oldest long one, is
        // recycled (its file, with its length, becomes segment 5); segment 4 goes.
        journal.next_segment(5, 4).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), [5]);
        assert_eq!(file_bytes(&segment_path(dir.path(), 5)), second_bytes);
        assert!(!journal.growing);
    }
}
