//! The segmented write-ahead log: append with group commit, recovery of the tail, reads by LSN
//! as zero-copy slices of mapped segments, tail-follow and retention.

mod compaction;
mod compare;
mod digest;
mod epochs;
mod error;
mod pinned;
mod preparer;
mod reader;
mod receiving;
mod recovery;
mod reset;
mod rewind;
mod segment;
mod shipping;
mod writer;

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::format::{
    Epoch, Lsn, RECORD_PAYLOAD_MAX_BYTES, RecordKind, RecordMeta, SEGMENT_HEADER_BYTES,
    SegmentHeader, encode_record, encoded_record_bytes,
};
use crate::io::{DirLock, FileSystem, RealFs};

pub use compaction::{Compacted, SealedSegment};
pub use compare::{Comparison, Divergence, SegmentComparison, SegmentOutcome, compare_dirs};
pub use epochs::EPOCH_HISTORY_FILE;
pub use error::{Result, WalError};
pub use pinned::{PinnedLog, PinnedRecords};
pub use reader::{Payload, Record, RecordLocation, WalIter};
pub use receiving::PayloadCheck;
pub use recovery::{SegmentReport, SegmentStatus};
pub use rewind::ROLLBACK_DIR;
pub use segment::{SPARSE_INDEX_STRIDE, parse_segment_file_name, segment_file_name};
pub use shipping::{ShipChunk, ShipPosition};
pub use writer::{Durability, SYNC_SIZE_BUCKETS};

use crate::sync::{MutexExt, RwLockExt};
use preparer::SegmentPreparer;
use recovery::Analysis;
use segment::Segment;
use writer::{GroupCommit, PendingWrite, WriterState};

/// Default size at which segments are rotated.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// An empty file a log leaves in its directory when it closes after a final sync that
/// succeeded, and that opening removes (durably) before the log can write: while it exists,
/// nothing was written since the last successful sync, so recovery need not write the tail
/// again (`docs/design.md`, "fsync failure is fatal").
pub const CLEAN_CLOSE_FILE: &str = "clean-close";
/// Default interval of the background sync for [`Durability::Buffered`] writes.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 5;

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rotation size of segment files (default 64 MiB, at least 4 KiB). A batch larger than
    /// this gets a segment of its own, sized to fit.
    pub segment_bytes: u64,
    /// Largest record payload accepted (default and maximum 1 GiB).
    pub record_payload_max_bytes: u32,
    /// Largest encoded batch accepted (default 1 GiB).
    pub batch_bytes_max: u64,
    /// Interval of the background sync for `Buffered` writes (default 5 ms, 1..=60000).
    pub flush_interval_ms: u64,
    /// Write zeros over new segments instead of only reserving space (default off: no gain
    /// measured on ext4 here, and it doubles the bytes written; see
    /// `docs/design.md` for the measurement).
    pub zero_fill_segments: bool,
    /// Prepare the next segment file in a background thread, so rotation does not make writers
    /// wait for preallocation and zero-filling (default on).
    pub prepare_next_segment: bool,
    /// The cluster this log belongs to: checked against existing segments; a new log takes it
    /// (or a random one when `None`).
    pub cluster_id: Option<u128>,
    /// The file layer (default: the real file system).
    pub fs: Arc<dyn FileSystem>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            record_payload_max_bytes: RECORD_PAYLOAD_MAX_BYTES,
            batch_bytes_max: 1 << 30,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            zero_fill_segments: false,
            prepare_next_segment: true,
            cluster_id: None,
            fs: Arc::new(RealFs),
        }
    }
}

impl Options {
    fn validate(&self) -> Result<()> {
        let bad = |name, reason: &str| {
            Err(WalError::InvalidOption {
                name,
                reason: reason.to_owned(),
            })
        };
        if self.segment_bytes < 4096 {
            return bad("segment_bytes", "must be at least 4096");
        }
        if self.record_payload_max_bytes > RECORD_PAYLOAD_MAX_BYTES {
            return bad("record_payload_max_bytes", "must be at most 1 GiB");
        }
        if !(1..=60_000).contains(&self.flush_interval_ms) {
            return bad("flush_interval_ms", "must be within 1..=60000");
        }
        Ok(())
    }
}

/// One record to append.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// What the record means to the layer above.
    pub kind: RecordKind,
    /// The bytes.
    pub payload: &'a [u8],
}

/// The LSNs a batch was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsnRange {
    /// First LSN of the batch.
    pub first: Lsn,
    /// Last LSN of the batch.
    pub last: Lsn,
}

/// Counters for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalStats {
    /// First retained LSN.
    pub first_lsn: Lsn,
    /// Last LSN handed to the OS.
    pub written_lsn: Lsn,
    /// Last LSN on stable storage.
    pub durable_lsn: Lsn,
    /// Segment files.
    pub segments: usize,
    /// `fdatasync` calls made by group commit since open.
    pub syncs: u64,
    /// Bytes of segment files (their preallocated sizes).
    pub file_bytes: u64,
    /// Bytes of records handed to the OS since open.
    pub bytes_written: u64,
    /// How many records each group-commit sync made durable: bucket `i` counts syncs of up to
    /// `2^i` records (the last bucket, more).
    pub records_per_sync: [u64; SYNC_SIZE_BUCKETS],
    /// Records made durable by group-commit syncs since open.
    pub records_synced: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    dir: PathBuf,
    options: Options,
    /// Fixed, except that an empty replica takes its primary's (`Wal::receive_segment`).
    cluster_id: Mutex<u128>,
    segments: RwLock<Vec<Arc<Segment>>>,
    commit: GroupCommit,
    stop_flusher: AtomicBool,
    /// Serialises retention and compaction so file removals happen in order.
    retention: Mutex<()>,
    /// Segments replaced by compaction, still readable at their old offsets until released.
    retired: RwLock<Vec<Arc<Segment>>>,
    /// The last log digest computed (`Wal::digest_at`).
    digest: Mutex<Vec<digest::DigestCache>>,
    /// The epochs this log knows (`DIR/epoch-history`).
    history: Mutex<crate::format::epochs::EpochHistory>,
}

impl Shared {
    fn cluster_id(&self) -> u128 {
        *self.cluster_id.locked()
    }

    /// The segment list, for reading.
    fn segments(&self) -> RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read_locked()
    }

    /// The segment list, for changing.
    fn segments_mut(&self) -> RwLockWriteGuard<'_, Vec<Arc<Segment>>> {
        self.segments.write_locked()
    }
}

/// The sealed segments at the front of `segments` whose records are all durable: every
/// segment but the active one, up to the first with a record past `durable`.
fn sealed_prefix(segments: &[Arc<Segment>], durable: Lsn) -> &[Arc<Segment>] {
    let sealed = &segments[..segments.len().saturating_sub(1)];
    let count = sealed
        .iter()
        .take_while(|s| s.last_lsn() <= durable)
        .count();
    &sealed[..count]
}

/// An open write-ahead log. Cheap to share across threads by reference (`&Wal` is `Sync`).
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    preparer: Option<SegmentPreparer>,
    recovery: Vec<SegmentReport>,
    _lock: Box<dyn DirLock>,
}

pub(crate) fn random_u32() -> u32 {
    let [a, b, c, d, ..] = random_u64().to_le_bytes();
    u32::from_le_bytes([a, b, c, d])
}

pub(crate) fn random_u64() -> u64 {
    // The standard library seeds RandomState from the OS's random source; that is all the
    // randomness salts and cluster ids need, without another dependency.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    hasher.finish()
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering a torn tail.
    ///
    /// # Errors
    /// Corruption that is not a torn tail (nothing is changed on disk then), a directory locked
    /// by another process, a cluster-id mismatch, or I/O errors.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Self> {
        options.validate()?;
        let dir = dir.as_ref().to_owned();
        let fs = Arc::clone(&options.fs);
        fs.create_dir_all(&dir)
            .map_err(|e| WalError::io("create directory", &dir, e))?;
        let lock = fs
            .lock_dir(&dir)
            .map_err(|e| WalError::Locked(Arc::new(e)))?;
        let mut analysis = recovery::analyze(fs.as_ref(), &dir, true)?;
        if let Some(problem) = analysis.first_problem() {
            return Err(problem.clone());
        }
        let cluster_id = match (analysis.cluster_id, options.cluster_id) {
            (Some(found), Some(expected)) if found != expected => {
                return Err(WalError::ClusterMismatch {
                    file: analysis.segments[0].report.path.clone(),
                    expected,
                    found,
                });
            }
            (Some(found), _) => found,
            (None, Some(id)) => id,
            (None, None) => u128::from(random_u64()) << 64 | u128::from(random_u64()),
        };
        let clean_close = dir.join(CLEAN_CLOSE_FILE);
        let closed_cleanly = fs
            .list(&dir)
            .map_err(|e| WalError::io("list", &dir, e))?
            .iter()
            .any(|name| name == CLEAN_CLOSE_FILE);
        recovery::apply(fs.as_ref(), &dir, &mut analysis, closed_cleanly)?;
        if closed_cleanly {
            // IMPORTANT: gone durably before this log can write, so the file always means
            // "nothing written since the last successful sync".
            fs.remove(&clean_close)
                .map_err(|e| WalError::io("remove", &clean_close, e))?;
            fs.sync_dir(&dir)
                .map_err(|e| WalError::io("fsync directory", &dir, e))?;
        }
        let recovery = analysis.segments.iter().map(|s| s.report.clone()).collect();
        let (segments, next_lsn, epoch, active_end) =
            Self::load(fs.as_ref(), &dir, &options, cluster_id, analysis)?;
        let history = epochs::load_history(fs.as_ref(), &dir, &segments)?;
        let active = Arc::clone(&segments[segments.len() - 1]);
        let state = WriterState {
            next_lsn,
            epoch,
            active,
            active_end,
            pending: Vec::new(),
            writing: false,
            syncing: false,
            dirty: Vec::new(),
            last_written_segment: None,
            poisoned: None,
            closed: false,
            waiters: Vec::new(),
            to_wake: Vec::new(),
        };
        let shared = Arc::new(Shared {
            dir,
            options,
            cluster_id: Mutex::new(cluster_id),
            segments: RwLock::new(segments),
            commit: GroupCommit::new(state, next_lsn - 1),
            stop_flusher: AtomicBool::new(false),
            retention: Mutex::new(()),
            retired: RwLock::new(Vec::new()),
            digest: Mutex::default(),
            history: Mutex::new(history),
        });
        let flusher = Self::spawn_flusher(&shared);
        let options = &shared.options;
        let preparer = options.prepare_next_segment.then(|| {
            SegmentPreparer::start(
                Arc::clone(&options.fs),
                shared.dir.clone(),
                options.segment_bytes,
                options.zero_fill_segments,
            )
        });
        Ok(Self {
            shared,
            flusher: Some(flusher),
            preparer,
            recovery,
            _lock: lock,
        })
    }

    /// Turns recovered files into open segments; creates the first segment of a new log.
    fn load(
        fs: &dyn FileSystem,
        dir: &Path,
        options: &Options,
        cluster_id: u128,
        analysis: Analysis,
    ) -> Result<(Vec<Arc<Segment>>, Lsn, Epoch, u64)> {
        let mut segments = Vec::with_capacity(analysis.segments.len() + 1);
        let mut next_lsn = 1;
        let mut epoch = 1;
        let mut active_end = SEGMENT_HEADER_BYTES as u64;
        for recovered in analysis.segments {
            let segment = Segment::from_parts(
                fs,
                recovered.report.path.clone(),
                recovered.header,
                recovered.file,
                recovered.report.file_bytes,
                recovered.end_offset,
                recovered.sparse_index,
            )?;
            next_lsn = recovered
                .report
                .last_lsn
                .map_or(recovered.header.first_lsn, |l| l + 1);
            segment.set_last_lsn(next_lsn - 1);
            epoch = epoch.max(recovered.header.epoch);
            active_end = recovered.end_offset;
            segments.push(Arc::new(segment));
        }
        // A compacted segment is sealed: appends always go to a segment of their own.
        if segments
            .last()
            .is_none_or(|s| s.header.compacted_through.is_some())
        {
            active_end = SEGMENT_HEADER_BYTES as u64;
            let header = SegmentHeader {
                cluster_id,
                first_lsn: next_lsn,
                epoch,
                salt: random_u32(),
                compacted_through: None,
            };
            segments.push(Arc::new(Segment::create(
                fs,
                dir,
                header,
                options.segment_bytes,
                options.zero_fill_segments,
            )?));
        }
        Ok((segments, next_lsn, epoch, active_end))
    }

    fn spawn_flusher(shared: &Arc<Shared>) -> JoinHandle<()> {
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("shiplog-wal-flush".to_owned())
            .spawn(move || {
                let interval = Duration::from_millis(shared.options.flush_interval_ms);
                while !shared.stop_flusher.load(Ordering::Acquire) {
                    std::thread::park_timeout(interval);
                    if shared.commit.durable() < shared.commit.written()
                        && shared.commit.sync_written().is_err()
                    {
                        // The log is poisoned; every writer now gets the error.
                        return;
                    }
                }
            })
            .expect("spawning the WAL flush thread")
    }

    /// Appends one record, returning its LSN once it has reached `durability`.
    ///
    /// # Errors
    /// Size limits, a poisoned or closed log, or I/O errors.
    pub fn append(&self, kind: RecordKind, payload: &[u8], durability: Durability) -> Result<Lsn> {
        Ok(self
            .append_batch(&[Entry { kind, payload }], durability)?
            .last)
    }

    /// Appends records as one atomic batch: after any crash, all of them are in the log or none.
    ///
    /// # Errors
    /// An empty or oversized batch, a poisoned or closed log, or I/O errors.
    pub fn append_batch(&self, entries: &[Entry<'_>], durability: Durability) -> Result<LsnRange> {
        let (state, range) = self.enqueue(entries)?;
        self.shared.commit.complete(state, range.last, durability)?;
        Ok(range)
    }

    /// Assigns LSNs to `entries` as one atomic batch and queues them, without waiting for them
    /// to be written; [`Wal::wait_for`] then makes them written or durable. This lets a caller
    /// fix the order of several batches (say a pipeline of client commands) and pay for one
    /// write and one sync for all of them.
    ///
    /// # Errors
    /// An empty or oversized batch, a poisoned or closed log, or a failed segment rotation.
    pub fn queue_batch(&self, entries: &[Entry<'_>]) -> Result<LsnRange> {
        Ok(self.enqueue(entries)?.1)
    }

    /// Blocks until every LSN up to `lsn` has reached `durability`, writing and syncing the
    /// queue as needed (shared with every other waiter: one write and one sync serve all).
    ///
    /// # Errors
    /// A poisoned or closed log, or I/O errors (which poison it).
    ///
    /// # Panics
    /// If `lsn` was never assigned (a caller bug: it would wait forever).
    pub fn wait_for(&self, lsn: Lsn, durability: Durability) -> Result<()> {
        self.wait_for_uncut(lsn, durability, self.cuts())
    }

    /// How many times records were cut from the log's end (by a rewind or a reset) since it
    /// was opened. Read it before queueing records and hand it to [`Wal::wait_for_uncut`].
    #[must_use]
    pub fn cuts(&self) -> u64 {
        self.shared.commit.cuts()
    }

    /// [`Wal::wait_for`] for records queued when [`Wal::cuts`] was `cuts`: fails with `Cut`
    /// if the log's end was cut since, instead of waiting for (or reporting as its own)
    /// another record that took the same LSN.
    ///
    /// # Errors
    /// `Cut`, a poisoned or closed log, or I/O errors (which poison it).
    ///
    /// # Panics
    /// If `lsn` was never assigned (a caller bug: it would wait forever).
    pub fn wait_for_uncut(&self, lsn: Lsn, durability: Durability, cuts: u64) -> Result<()> {
        let commit = &self.shared.commit;
        let state = commit.lock();
        if commit.cuts() != cuts {
            return Err(WalError::Cut { lsn });
        }
        assert!(
            lsn < state.next_lsn,
            "wait_for({lsn}) names an LSN that was never assigned"
        );
        commit.complete_uncut(state, lsn, durability, cuts)
    }

    /// Makes every record queued so far written and durable (one group commit shared with
    /// every other waiter). Records cut from the log meanwhile need nothing more.
    ///
    /// # Errors
    /// A poisoned or closed log, or I/O errors (which poison it).
    pub fn sync_queued(&self) -> Result<()> {
        let commit = &self.shared.commit;
        let state = commit.lock();
        let last = state.next_lsn - 1;
        match commit.complete(state, last, Durability::Sync) {
            Err(WalError::Cut { .. }) => Ok(()),
            done => done,
        }
    }

    fn enqueue(&self, entries: &[Entry<'_>]) -> Result<(MutexGuard<'_, WriterState>, LsnRange)> {
        let batch_bytes = self.check_batch(entries)?;
        let commit = &self.shared.commit;
        let mut state = commit.lock();
        state.check_open()?;
        if state.active_end + batch_bytes > state.active.capacity_bytes {
            self.rotate(&mut state, batch_bytes)?;
        }
        let first = state.next_lsn;
        let epoch = state.epoch;
        // Read under the lock that orders LSNs, so it is always below every LSN assigned now.
        let durable_lsn = commit.durable();
        let segment = Arc::clone(&state.active);
        let offset = state.active_end;
        let extends_last = state.pending.last().is_some_and(|w| {
            Arc::ptr_eq(&w.segment, &segment) && w.offset + w.bytes.len() as u64 == offset
        });
        if !extends_last {
            state.pending.push(PendingWrite {
                segment: Arc::clone(&segment),
                offset,
                bytes: Vec::with_capacity(usize::try_from(batch_bytes).unwrap_or(0)),
                last_lsn: 0,
            });
        }
        let last_index = state.pending.len() - 1;
        let buffer = &mut state.pending[last_index];
        let mut lsn = first;
        let mut at = offset;
        for (index, entry) in entries.iter().enumerate() {
            let continues = index + 1 < entries.len();
            segment.note_offset(lsn, at);
            let meta = RecordMeta {
                lsn,
                epoch,
                kind: entry.kind,
                batch_continues: continues,
                durable_lsn,
            };
            encode_record(&mut buffer.bytes, segment.header.salt, &meta, entry.payload);
            at += encoded_record_bytes(entry.payload.len()) as u64;
            lsn += 1;
        }
        let last = lsn - 1;
        buffer.last_lsn = last;
        debug_assert_eq!(at - offset, batch_bytes);
        segment.set_last_lsn(last);
        state.active_end = at;
        state.next_lsn = lsn;
        Ok((state, LsnRange { first, last }))
    }

    fn check_batch(&self, entries: &[Entry<'_>]) -> Result<u64> {
        if entries.is_empty() {
            return Err(WalError::EmptyBatch);
        }
        let max = self.shared.options.record_payload_max_bytes;
        let mut bytes = 0u64;
        for entry in entries {
            let len = entry.payload.len() as u64;
            if len > u64::from(max) {
                return Err(WalError::RecordTooLarge {
                    bytes: len,
                    max: u64::from(max),
                });
            }
            bytes += encoded_record_bytes(entry.payload.len()) as u64;
        }
        if bytes > self.shared.options.batch_bytes_max {
            return Err(WalError::BatchTooLarge {
                records: entries.len(),
                bytes,
                max: self.shared.options.batch_bytes_max,
            });
        }
        Ok(bytes)
    }

    /// Starts a new segment at the next LSN, big enough for `batch_bytes`.
    fn rotate(&self, state: &mut WriterState, batch_bytes: u64) -> Result<()> {
        let options = &self.shared.options;
        let capacity = options
            .segment_bytes
            .max(SEGMENT_HEADER_BYTES as u64 + batch_bytes);
        let header = SegmentHeader {
            cluster_id: self.shared.cluster_id(),
            first_lsn: state.next_lsn,
            epoch: state.epoch,
            salt: random_u32(),
            compacted_through: None,
        };
        let fs = options.fs.as_ref();
        let dir = &self.shared.dir;
        // A failure here leaves nothing assigned: the caller gets the error, the log goes on.
        let segment = match self.preparer.as_ref().and_then(|p| p.take(capacity)) {
            Some(blank) => Segment::install(fs, dir, blank, header)?,
            None => Segment::create(fs, dir, header, capacity, options.zero_fill_segments)?,
        };
        let segment = Arc::new(segment);
        self.shared.segments_mut().push(Arc::clone(&segment));
        state.active = segment;
        state.active_end = SEGMENT_HEADER_BYTES as u64;
        Ok(())
    }

    /// Makes every record written so far durable.
    ///
    /// # Errors
    /// A poisoned log or a failed `fdatasync` (which poisons it).
    pub fn sync(&self) -> Result<()> {
        self.shared.commit.sync_written()
    }

    /// Blocks until records past `after` are durable or `timeout` passes; returns the durable
    /// LSN (equal to `after` or lower on timeout).
    ///
    /// # Errors
    /// A poisoned or closed log.
    pub fn tail(&self, after: Lsn, timeout: Duration) -> Result<Lsn> {
        self.shared.commit.wait_durable_past(after, timeout)
    }

    /// Reads records from `from` up to the last written LSN (as of this call).
    ///
    /// # Errors
    /// `NotRetained` when `from` was removed by retention.
    pub fn iter_from(&self, from: Lsn) -> Result<WalIter> {
        let end = self.shared.commit.written();
        self.read_range(from, end)
    }

    /// Reads records `from..=to`, which must already be written.
    ///
    /// # Errors
    /// `NotRetained` when `from` was removed by retention.
    pub fn read_range(&self, from: Lsn, to: Lsn) -> Result<WalIter> {
        let first = self.first_lsn();
        if from < first {
            return Err(WalError::NotRetained { lsn: from, first });
        }
        let to = to.min(self.shared.commit.written());
        Ok(WalIter::new(Arc::clone(&self.shared), from, to))
    }

    /// Reads record `lsn` stored at byte `offset` of its segment (from
    /// [`Record::location`]) without seeking: one binary search over the segments, one decode.
    ///
    /// # Errors
    /// `NotRetained` when the segment is gone; `Corrupt` when the bytes there are not record
    /// `lsn`.
    pub fn read_at(&self, lsn: Lsn, offset: u64) -> Result<Record> {
        WalIter::read_at(&self.shared, lsn, offset)
    }

    /// Reads one record.
    ///
    /// # Errors
    /// `NotRetained`, or corruption found while reading.
    pub fn read(&self, lsn: Lsn) -> Result<Option<Record>> {
        self.read_range(lsn, lsn)?.next().transpose()
    }

    /// Removes whole segments whose records are all below `lsn` (never the active segment nor
    /// records that are not yet durable). Returns how many files were removed.
    ///
    /// # Errors
    /// I/O errors; files removed before the error stay removed, the others stay in the log.
    pub fn remove_before(&self, lsn: Lsn) -> Result<usize> {
        let _serial = self.shared.retention.locked();
        let durable = self.shared.commit.durable();
        let doomed: Vec<Arc<Segment>> = {
            let mut segments = self.shared.segments_mut();
            let count = sealed_prefix(&segments, durable)
                .iter()
                .take_while(|s| s.last_lsn() < lsn)
                .count();
            segments.drain(..count).collect()
        };
        let fs = self.shared.options.fs.as_ref();
        // IMPORTANT: remove in LSN order, each removal durable before the next, so a crash
        // part-way leaves a log that merely starts later, never one with a gap, even on a
        // file system that commits directory changes out of order (a directory sync per
        // segment: retention removes few, large files).
        for (i, segment) in doomed.iter().enumerate() {
            let (failure, not_removed_from) = match fs.remove(&segment.path) {
                Err(e) => (WalError::io("remove", &segment.path, e), i),
                Ok(()) => match fs.sync_dir(&self.shared.dir) {
                    Err(e) => (WalError::io("fsync directory", &self.shared.dir, e), i + 1),
                    Ok(()) => continue,
                },
            };
            // IMPORTANT: the segments still on disk go back to the front of the list, so a
            // later call removes them first, in order: left out, they would stay on disk while
            // a later, durable removal of a newer segment made a gap behind them.
            let rest = doomed[not_removed_from..].iter().cloned();
            self.shared.segments_mut().splice(0..0, rest);
            return Err(failure);
        }
        Ok(doomed.len())
    }

    /// `(first LSN, file bytes)` of every segment, in LSN order.
    #[must_use]
    pub fn segment_extents(&self) -> Vec<(Lsn, u64)> {
        let segments = self.shared.segments();
        segments
            .iter()
            .map(|s| (s.first_lsn(), s.capacity_bytes))
            .collect()
    }

    /// The rotation size of segment files.
    #[must_use]
    pub fn segment_bytes(&self) -> u64 {
        self.shared.options.segment_bytes
    }

    /// The log's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The file layer the log uses.
    #[must_use]
    pub fn fs(&self) -> &Arc<dyn FileSystem> {
        &self.shared.options.fs
    }

    /// First retained LSN.
    #[must_use]
    pub fn first_lsn(&self) -> Lsn {
        self.shared.segments().first().map_or(1, |s| s.first_lsn())
    }

    /// Last LSN visible to readers.
    #[must_use]
    pub fn written_lsn(&self) -> Lsn {
        self.shared.commit.written()
    }

    /// Last LSN on stable storage.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.commit.durable()
    }

    /// The cluster this log belongs to.
    #[must_use]
    pub fn cluster_id(&self) -> u128 {
        self.shared.cluster_id()
    }

    /// What recovery found in each segment when the log was opened.
    #[must_use]
    pub fn recovery_report(&self) -> &[SegmentReport] {
        &self.recovery
    }

    /// Counters for monitoring.
    #[must_use]
    pub fn stats(&self) -> WalStats {
        let segments = self.shared.segments();
        WalStats {
            // Not `self.first_lsn()`: that reads the list again under this guard (see
            // `shipped_segment`).
            first_lsn: segments.first().map_or(1, |s| s.first_lsn()),
            written_lsn: self.written_lsn(),
            durable_lsn: self.durable_lsn(),
            segments: segments.len(),
            file_bytes: segments.iter().map(|s| s.capacity_bytes).sum(),
            syncs: self.shared.commit.syncs.load(Ordering::Relaxed),
            bytes_written: self.shared.commit.bytes_written.load(Ordering::Relaxed),
            records_synced: self.shared.commit.records_synced.load(Ordering::Relaxed),
            records_per_sync: std::array::from_fn(|i| {
                self.shared.commit.records_per_sync[i].load(Ordering::Relaxed)
            }),
        }
    }

    /// Syncs and closes the log.
    ///
    /// # Errors
    /// A poisoned log or a failed final sync.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let poisoned = self.shared.commit.lock().poisoned.is_some();
        let result = if poisoned { Ok(()) } else { self.sync() };
        {
            let mut state = self.shared.commit.lock();
            state.closed = true;
            self.shared.commit.notify(&mut state);
        }
        self.shared.stop_flusher.store(true, Ordering::Release);
        if let Some(flusher) = self.flusher.take() {
            flusher.thread().unpark();
            let _ = flusher.join();
        }
        if let Some(mut preparer) = self.preparer.take() {
            preparer.stop();
        }
        if !poisoned && result.is_ok() {
            self.mark_clean_close();
        }
        result
    }

    /// Leaves `CLEAN_CLOSE_FILE` after a final sync that succeeded. Best effort: without it,
    /// the next open only does more work.
    fn mark_clean_close(&self) {
        let fs = self.shared.options.fs.as_ref();
        let path = self.shared.dir.join(CLEAN_CLOSE_FILE);
        let marked = match fs.create(&path) {
            Ok(_) => fs.sync_dir(&self.shared.dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = marked {
            tracing::warn!(file = %path.display(), error = %e, "could not mark the log closed cleanly; the next open writes its tail again");
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if self.flusher.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// Reads every complete record of every segment in `dir`, in LSN order, without changing
/// anything or taking the lock; stops at the first corrupt segment. `visit` gets the segment's
/// report, the record and its offset. Returns the segment reports.
///
/// # Errors
/// I/O errors, unreadable headers or a cluster-id mismatch.
pub fn scan_dir(
    fs: &dyn FileSystem,
    dir: &Path,
    mut visit: impl FnMut(&SegmentReport, &crate::format::DecodedRecord<'_>, u64),
) -> Result<Vec<SegmentReport>> {
    let analysis = recovery::analyze(fs, dir, false)?;
    for segment in &analysis.segments {
        if matches!(segment.report.status, SegmentStatus::Corrupt(_)) {
            break;
        }
        let mapping = segment
            .file
            .map()
            .map_err(|e| WalError::io("mmap", &segment.report.path, e))?;
        let bytes = mapping.bytes();
        let end = usize::try_from(segment.end_offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let mut offset = SEGMENT_HEADER_BYTES;
        while offset < end {
            let Ok(record) = crate::format::decode_record(&bytes[offset..end], segment.header.salt)
            else {
                break;
            };
            visit(&segment.report, &record, offset as u64);
            offset += record.encoded_bytes();
        }
    }
    Ok(analysis.segments.into_iter().map(|s| s.report).collect())
}

/// Reads and validates every segment in `dir` without changing anything or taking the lock:
/// the report behind `shiplog verify`.
///
/// # Errors
/// I/O errors, unreadable headers or a cluster-id mismatch.
pub fn verify_dir(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<SegmentReport>> {
    let analysis = recovery::analyze(fs, dir, false)?;
    Ok(analysis.segments.into_iter().map(|s| s.report).collect())
}
