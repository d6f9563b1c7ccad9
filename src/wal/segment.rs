//! One segment file: its name, creation protocol, mapping and seek index.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::format::{Lsn, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::io::{FileSystem, LogFile, Mapping};

use super::error::{Result, WalError};
use crate::sync::{MutexExt, RwLockExt};

/// Every this many records of a segment, the seek index keeps the record's offset.
pub const SPARSE_INDEX_STRIDE: u64 = 64;

const SEGMENT_SUFFIX: &str = ".seg";
const TEMP_SUFFIX: &str = ".seg.tmp";
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// File name of the segment whose first record is `first_lsn`; zero-padded so that a directory
/// listing is in LSN order.
#[must_use]
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN encoded in a segment file name, if `name` is one.
#[must_use]
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a segment file left half-created (or prepared and unused) by a crash.
#[must_use]
pub fn is_temp_segment_name(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
}

/// Name of the `n`-th blank file the preparer keeps ready for a rotation. Each gets its own name:
/// the next one is created while the last may still be on its way to its final name.
#[must_use]
pub fn prepared_file_name(n: u64) -> String {
    format!("prepared-{n:06}{TEMP_SUFFIX}")
}

/// A preallocated (and optionally zero-filled) file under a temporary name, ready to become the
/// next segment with one small header write.
#[derive(Debug)]
pub(crate) struct BlankSegment {
    pub file: Arc<dyn LogFile>,
    pub temp_path: PathBuf,
    pub capacity_bytes: u64,
}

impl BlankSegment {
    /// Creates the file, reserves its space and makes the reservation durable. On failure the
    /// file is removed again, so the next attempt (same name) can succeed once there is room.
    pub(crate) fn prepare(
        fs: &dyn FileSystem,
        temp_path: PathBuf,
        capacity_bytes: u64,
        zero_fill: bool,
    ) -> Result<Self> {
        let result = Self::prepare_once(fs, &temp_path, capacity_bytes, zero_fill);
        if result.is_err() {
            // Best effort: a leftover only costs the next attempt an "exists" error.
            let _ = fs.remove(&temp_path);
        }
        result.map(|file| Self {
            file,
            temp_path,
            capacity_bytes,
        })
    }

    fn prepare_once(
        fs: &dyn FileSystem,
        temp_path: &Path,
        capacity_bytes: u64,
        zero_fill: bool,
    ) -> Result<Arc<dyn LogFile>> {
        assert!(
            capacity_bytes >= SEGMENT_HEADER_BYTES as u64,
            "segment smaller than its header"
        );
        let io = |op| move |e| WalError::io(op, temp_path, e);
        let file = fs.create(temp_path).map_err(io("create"))?;
        file.allocate(capacity_bytes).map_err(io("fallocate"))?;
        if zero_fill {
            // Writing the zeros turns unwritten extents into written ones, so later fdatasyncs
            // of records need no extent conversion in the file system's journal.
            let zeros = vec![0u8; ZERO_CHUNK_BYTES];
            let mut offset = 0;
            while offset < capacity_bytes {
                let n = usize::try_from(capacity_bytes - offset)
                    .map_or(zeros.len(), |n| n.min(zeros.len()));
                file.write_all_at(&zeros[..n], offset)
                    .map_err(io("zero-fill"))?;
                offset += n as u64;
            }
        }
        file.sync_data().map_err(io("fdatasync"))?;
        Ok(file)
    }
}

#[derive(Debug)]
enum View {
    /// A shared mapping shows later writes by itself.
    Live(Arc<dyn Mapping>),
    /// A copy (simulated files): remapped when a reader needs bytes written after it was made.
    Snapshot(RwLock<(Arc<dyn Mapping>, u64)>),
}

/// An open segment of the log.
#[derive(Debug)]
pub struct Segment {
    /// Where the file lives.
    pub path: PathBuf,
    /// The decoded header.
    pub header: SegmentHeader,
    /// The open file (writable for the log's own segments).
    pub file: Arc<dyn LogFile>,
    /// Size the file was preallocated to; records never extend past it.
    pub capacity_bytes: u64,
    /// LSN of the last record placed in this segment, or `first_lsn - 1` when none.
    last_lsn: AtomicU64,
    /// Offset up to which bytes have been handed to the file.
    written_end: AtomicU64,
    view: View,
    sparse_index: Mutex<Vec<(Lsn, u64)>>,
    /// Held by each `fdatasync` of the file (see [`Segment::sync`]).
    sync_lock: Mutex<()>,
    /// Set once an `fdatasync` of the file failed.
    sync_failed: AtomicBool,
}

impl Segment {
    /// Creates, preallocates and names a new segment durably, all in the caller's thread.
    pub(crate) fn create(
        fs: &dyn FileSystem,
        dir: &Path,
        header: SegmentHeader,
        capacity_bytes: u64,
        zero_fill: bool,
    ) -> Result<Self> {
        let temp = dir.join(format!("{:020}{TEMP_SUFFIX}", header.first_lsn));
        let blank = BlankSegment::prepare(fs, temp, capacity_bytes, zero_fill)?;
        Self::install(fs, dir, blank, header)
    }

    /// Turns a prepared blank file into the segment described by `header`: header, sync,
    /// rename, directory sync.
    pub(crate) fn install(
        fs: &dyn FileSystem,
        dir: &Path,
        blank: BlankSegment,
        header: SegmentHeader,
    ) -> Result<Self> {
        let BlankSegment {
            file,
            temp_path,
            capacity_bytes,
        } = blank;
        let path = dir.join(segment_file_name(header.first_lsn));
        let temp_ref = &temp_path;
        let io = |op| move |e| WalError::io(op, temp_ref, e);
        file.write_all_at(&header.encode(), 0)
            .map_err(io("write header of"))?;
        // IMPORTANT: the header and size must be durable before the file gets its final name,
        // or a crash could leave a named segment without a valid header.
        file.sync_data().map_err(io("fdatasync"))?;
        fs.rename(&temp_path, &path).map_err(io("rename"))?;
        // IMPORTANT: sync the directory after the rename, or the new name may vanish at power
        // loss while records in it were acknowledged.
        fs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync directory", dir, e))?;
        Self::from_parts(
            fs,
            path,
            header,
            file,
            capacity_bytes,
            SEGMENT_HEADER_BYTES as u64,
            Vec::new(),
        )
    }

    /// Wraps an existing, already validated segment file.
    pub(crate) fn from_parts(
        fs: &dyn FileSystem,
        path: PathBuf,
        header: SegmentHeader,
        file: Arc<dyn LogFile>,
        capacity_bytes: u64,
        written_end: u64,
        sparse_index: Vec<(Lsn, u64)>,
    ) -> Result<Self> {
        let mapping = file.map().map_err(|e| WalError::io("mmap", &path, e))?;
        let view = if fs.mappings_are_live() {
            View::Live(mapping)
        } else {
            View::Snapshot(RwLock::new((mapping, written_end)))
        };
        Ok(Self {
            path,
            header,
            file,
            capacity_bytes,
            last_lsn: AtomicU64::new(header.first_lsn - 1),
            written_end: AtomicU64::new(written_end),
            view,
            sparse_index: Mutex::new(sparse_index),
            sync_lock: Mutex::new(()),
            sync_failed: AtomicBool::new(false),
        })
    }

    /// `fdatasync` of the file, one at a time; once one has failed, every later one fails
    /// too. A failed writeback may have dropped pages, and Linux reports the error to one
    /// `fdatasync` caller only: the seal of a segment and the sync role may sync it at the
    /// same moment, and the one that did not see the error must not call the records durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let _one = self.sync_lock.locked();
        if self.sync_failed.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "an earlier fdatasync of this segment failed; restart the process to recover \
                 from what is on disk",
            ));
        }
        let result = self.file.sync_data();
        if result.is_err() {
            self.sync_failed.store(true, Ordering::Release);
        }
        result
    }

    /// LSN of the first record.
    #[must_use]
    pub fn first_lsn(&self) -> Lsn {
        self.header.first_lsn
    }

    /// LSN of the last record placed here (`first_lsn - 1` when empty).
    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn.load(Ordering::Acquire)
    }

    pub(crate) fn set_last_lsn(&self, lsn: Lsn) {
        self.last_lsn.store(lsn, Ordering::Release);
    }

    /// Whether compaction wrote this segment (its records have LSN gaps).
    #[must_use]
    pub fn is_compacted(&self) -> bool {
        self.header.compacted_through.is_some()
    }

    /// Offset just past the last record handed to the file.
    #[must_use]
    pub fn records_end(&self) -> u64 {
        self.written_end.load(Ordering::Acquire)
    }

    pub(crate) fn mark_written(&self, end: u64) {
        self.written_end.fetch_max(end, Ordering::AcqRel);
    }

    /// Notes the offset of `lsn` for seeking, every [`SPARSE_INDEX_STRIDE`] records.
    pub(crate) fn note_offset(&self, lsn: Lsn, offset: u64) {
        if (lsn - self.header.first_lsn).is_multiple_of(SPARSE_INDEX_STRIDE) {
            self.sparse_index.locked().push((lsn, offset));
        }
    }

    /// The seek index entries up to `lsn` (for a copy of this segment cut after `lsn`).
    pub(crate) fn sparse_index_through(&self, lsn: Lsn) -> Vec<(Lsn, u64)> {
        let index = self.sparse_index.locked();
        index
            .iter()
            .copied()
            .take_while(|&(l, _)| l <= lsn)
            .collect()
    }

    /// Name of the temporary file a segment starting at `first_lsn` is built under.
    pub(crate) fn temp_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
        dir.join(format!("{first_lsn:020}{TEMP_SUFFIX}"))
    }

    /// The closest known `(lsn, offset)` at or before `lsn`.
    pub(crate) fn seek_hint(&self, lsn: Lsn) -> (Lsn, u64) {
        let index = self.sparse_index.locked();
        let at = index.partition_point(|&(l, _)| l <= lsn);
        at.checked_sub(1)
            .map_or((self.header.first_lsn, SEGMENT_HEADER_BYTES as u64), |i| {
                index[i]
            })
    }

    /// A mapping that shows at least the bytes before `end`.
    pub(crate) fn view_covering(&self, end: u64) -> Result<Arc<dyn Mapping>> {
        match &self.view {
            View::Live(mapping) => Ok(Arc::clone(mapping)),
            View::Snapshot(lock) => {
                {
                    let current = lock.read_locked();
                    if current.1 >= end {
                        return Ok(Arc::clone(&current.0));
                    }
                }
                let mut current = lock.write_locked();
                let written = self.written_end.load(Ordering::Acquire);
                let mapping = self
                    .file
                    .map()
                    .map_err(|e| WalError::io("mmap", &self.path, e))?;
                *current = (Arc::clone(&mapping), written);
                Ok(mapping)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{SimFs, SimOp};

    #[test]
    fn once_a_sync_of_a_segment_failed_every_later_one_fails() {
        let fs = SimFs::new();
        let header = SegmentHeader {
            cluster_id: 7,
            first_lsn: 1,
            epoch: 1,
            salt: 9,
            compacted_through: None,
        };
        let segment = Segment::create(&fs, Path::new("/log"), header, 4096, false)
            .expect("a segment on an empty simulated disk");
        segment.file.write_all_at(b"record", 64).expect("a write");
        segment.sync().expect("a sync that works");
        fs.fail_nth(SimOp::SyncData, fs.op_count(SimOp::SyncData) + 1, 5);
        assert!(segment.sync().is_err());
        // The disk answers again, as Linux does once it has reported the error to one caller;
        // the segment does not.
        assert!(segment.sync().is_err());
        assert!(segment.sync().is_err());
    }
}
