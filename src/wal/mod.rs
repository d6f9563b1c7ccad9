//! The segmented write-ahead log: append with group commit, recovery of the tail, reads by LSN
//! as zero-copy slices of mapped segments, tail-follow and retention.
//!
//! Every public method of [`Wal`] is declared in this file, grouped by topic, so it reads as
//! the table of contents of what a log can do; the files behind it hold the mechanism as free
//! functions and helper types: opening and closing (`lifecycle.rs`), appending (`append.rs`),
//! group commit (`writer.rs`), reads (`reader.rs`), shipping and receiving (`shipping.rs`,
//! `receiving.rs`), epochs and rewind (`epochs.rs`, `rewind.rs`, `reset.rs`), retention and
//! compaction (`retention.rs`, `compaction.rs`), digests (`digest.rs`) and pinned views for
//! snapshots (`pinned.rs`).

mod append;
mod compaction;
mod compare;
mod digest;
mod epochs;
mod error;
mod lifecycle;
mod pinned;
mod preparer;
mod reader;
mod receiving;
mod recovery;
mod reset;
mod retention;
mod rewind;
mod segment;
mod shipping;
mod writer;

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::format::epochs::EpochHistory;
use crate::format::{Epoch, Lsn, RECORD_PAYLOAD_MAX_BYTES, RecordKind, SEGMENT_HEADER_BYTES};
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
use segment::Segment;
use writer::GroupCommit;

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

// The front door: everything a log can do, by topic. Short bodies are here; the others
// delegate to the mechanism files (one per topic), which hold no methods of `Wal`.
impl Wal {
    // Lifecycle: opening, closing, and what the log is.

    /// Opens (or creates) the log in `dir`, recovering a torn tail.
    ///
    /// # Errors
    /// Corruption that is not a torn tail (nothing is changed on disk then), a directory locked
    /// by another process, a cluster-id mismatch, or I/O errors.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Self> {
        lifecycle::open(dir.as_ref(), options)
    }

    /// Syncs and closes the log.
    ///
    /// # Errors
    /// A poisoned log or a failed final sync.
    pub fn close(mut self) -> Result<()> {
        lifecycle::shutdown(&mut self)
    }

    /// What recovery found in each segment when the log was opened.
    #[must_use]
    pub fn recovery_report(&self) -> &[SegmentReport] {
        &self.recovery
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

    /// The cluster this log belongs to.
    #[must_use]
    pub fn cluster_id(&self) -> u128 {
        self.shared.cluster_id()
    }

    /// The rotation size of segment files.
    #[must_use]
    pub fn segment_bytes(&self) -> u64 {
        self.shared.options.segment_bytes
    }

    // Writing: LSNs are assigned under one lock, then one group commit serves every waiter.

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
        let (state, range) = append::enqueue(self, entries)?;
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
        Ok(append::enqueue(self, entries)?.1)
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

    /// Makes every record written so far durable.
    ///
    /// # Errors
    /// A poisoned log or a failed `fdatasync` (which poisons it).
    pub fn sync(&self) -> Result<()> {
        self.shared.commit.sync_written()
    }

    // Reading: by LSN, at a known location, and following the durable tail.

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

    /// Blocks until records past `after` are durable or `timeout` passes; returns the durable
    /// LSN (equal to `after` or lower on timeout).
    ///
    /// # Errors
    /// A poisoned or closed log.
    pub fn tail(&self, after: Lsn, timeout: Duration) -> Result<Lsn> {
        self.shared.commit.wait_durable_past(after, timeout)
    }

    /// The digest of the segment holding `lsn`, over its records up to `lsn`; `None` when
    /// `lsn` is not written here, or its segment was compacted (its LSNs have gaps, so it is
    /// no copy of anything and is not compared).
    ///
    /// # Errors
    /// Read errors.
    pub fn digest_at(&self, lsn: Lsn) -> Result<Option<u64>> {
        digest::digest_at(self, lsn)
    }

    // Positions and counters.

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

    /// Why the log refuses writes, if a failed write or sync poisoned it (`WalError::Poisoned`):
    /// it stays so until reopened.
    #[must_use]
    pub fn poisoned(&self) -> Option<WalError> {
        let state = self.shared.commit.lock();
        let (op, source) = state.poisoned.as_ref()?;
        Some(WalError::Poisoned {
            op,
            source: Arc::clone(source),
        })
    }

    /// The epoch of the newest record (or of the active segment, when it has none).
    #[must_use]
    pub fn epoch(&self) -> crate::format::Epoch {
        self.shared.commit.lock().epoch
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

    // Shipping (primary side): byte ranges of segment files, and a frozen view for snapshots.

    /// The shipping position just after record `after` (0: from the start of the log).
    /// The caller must first make sure `after` is a record of this log's history (compare
    /// epochs): a receiver that holds records this log never wrote has diverged, and is not
    /// helped by shipping.
    ///
    /// # Errors
    /// `NotRetained` when record `after` (or, for 0, the log's start) is not here: gone, so
    /// the receiver needs a snapshot, or never written. Read errors.
    pub fn ship_position_after(&self, after: Lsn) -> Result<ShipPosition> {
        shipping::ship_position_after(self, after)
    }

    /// The next range to ship from `position`, at most `max_bytes` long and within one
    /// segment, of records durable here; `None` when everything durable has been shipped.
    /// A record longer than `max_bytes` comes in several chunks.
    ///
    /// # Errors
    /// `NotRetained` when the position's records are gone (retention, or compaction rewrote
    /// or merged its segment): the receiver needs a snapshot. Read errors (every record is
    /// checked before it ships).
    ///
    /// # Panics
    /// If `max_bytes` is 0.
    pub fn ship_chunk(
        &self,
        position: &ShipPosition,
        max_bytes: usize,
    ) -> Result<Option<ShipChunk>> {
        shipping::ship_chunk(self, position, max_bytes)
    }

    /// Seals the active segment at the last written LSN `S` (the next record starts a new
    /// segment at `S + 1`), pins every segment holding records up to `S`, and waits until they
    /// are durable. Appends wait only for the rotation, as at any segment roll.
    ///
    /// # Errors
    /// A poisoned or closed log, a failed rotation or sync.
    pub fn seal_and_pin(&self) -> Result<PinnedLog> {
        pinned::seal_and_pin(self)
    }

    // Receiving (replica side): a byte-identical copy of the primary's segments.

    /// Replica side: the primary starts (or resumes) shipping the segment `header` describes,
    /// whose file there is `capacity` bytes. A new segment must start at the next LSN (or just
    /// past the range a compacted active segment covers); a resumed one must be the active
    /// segment, with the same header. A log without records takes the primary's cluster id:
    /// its own empty first segment is replaced.
    ///
    /// # Errors
    /// `Shipment` when the header does not continue this log (nothing is changed then);
    /// `BadHeader`; I/O errors creating the segment.
    pub fn receive_segment(
        &self,
        header: &[u8; SEGMENT_HEADER_BYTES],
        capacity: u64,
    ) -> Result<()> {
        receiving::receive_segment(self, header, capacity)
    }

    /// Replica side: a whole compacted segment (its header, file size and every record),
    /// installed in one step: written, synced and only then named, so a crash leaves all of it
    /// or none. A compacted segment has LSN gaps, so only its successor's header proves it
    /// complete; the receiver holds it until then.
    ///
    /// # Errors
    /// `Shipment` when the segment does not continue this log or its records fail their
    /// checks (nothing is changed then); I/O errors.
    pub fn receive_compacted(
        &self,
        header: &[u8; SEGMENT_HEADER_BYTES],
        capacity: u64,
        records: &[u8],
        check: PayloadCheck<'_>,
    ) -> Result<()> {
        receiving::receive_compacted(self, header, capacity, records, check)
    }

    /// Replica side: checks the records at the start of `bytes`, shipped for `offset` of
    /// segment `segment` (the active one), and queues every whole batch among them for
    /// writing. Returns how many bytes were taken (the rest, an incomplete record or batch,
    /// must be offered again with more bytes) and the last LSN queued (0 when none).
    /// [`Wal::wait_for`] then writes and syncs them.
    ///
    /// # Errors
    /// `Shipment` when the bytes are not the records that come next here (a bad CRC, an LSN
    /// out of order, an epoch going back, the wrong segment or offset): nothing is queued.
    pub fn receive_records(
        &self,
        segment: Lsn,
        offset: u64,
        bytes: &[u8],
        check: PayloadCheck<'_>,
    ) -> Result<(usize, Lsn)> {
        receiving::receive_records(self, segment, offset, bytes, check)
    }

    /// Replica side: where the next received record goes (active segment, offset).
    #[must_use]
    pub fn receive_position(&self) -> (Lsn, u64) {
        let state = self.shared.commit.lock();
        (state.active.first_lsn(), state.active_end)
    }

    /// Removes every record and segment file and starts an empty log at LSN 1 (keeping the
    /// cluster id until a base adopts another). Waits for writes and syncs in flight.
    ///
    /// # Errors
    /// A poisoned or closed log, or I/O errors (the log is then poisoned: reopen it).
    pub fn reset(&self) -> Result<()> {
        reset::reset(self)
    }

    // Epochs and rewind: promotion, adopting a primary's history, cutting a diverged tail.

    /// The epochs this log knows, oldest first.
    #[must_use]
    pub fn epoch_history(&self) -> EpochHistory {
        self.shared.history.locked().clone()
    }

    /// The highest epoch this log knows (of its records, or of its history).
    #[must_use]
    pub fn highest_epoch(&self) -> Epoch {
        let history = self.epoch_history().latest().epoch;
        history.max(self.epoch())
    }

    /// Starts `epoch` at the next LSN (a promotion): records it durably in the history, then
    /// starts a segment of that epoch, so every record from here on carries it. Returns the
    /// epoch's first LSN.
    ///
    /// # Errors
    /// An epoch not above every epoch this log knows; a poisoned or closed log; I/O errors.
    pub fn begin_epoch(&self, epoch: Epoch) -> Result<Lsn> {
        epochs::begin_epoch(self, epoch)
    }

    /// Takes `history` (the primary's) as this log's own, durably, when it differs. The caller
    /// has checked that this log is a prefix of the primary's.
    ///
    /// # Errors
    /// A history whose newest epoch is older than this log's; I/O errors.
    pub fn adopt_history(&self, history: &EpochHistory) -> Result<()> {
        epochs::adopt_history(self, history)
    }

    /// Saves the records after `after` to a new file under `DIR/rollback/`, in segment format
    /// (`shiplog inspect` reads it): `rollback-<first LSN>-<last LSN>-epoch<epoch>.seg`.
    /// Returns its path, or `None` when there is nothing after `after`.
    ///
    /// # Errors
    /// Records that cannot be read; I/O errors.
    pub fn save_tail(&self, after: Lsn) -> Result<Option<PathBuf>> {
        rewind::save_tail(self, after)
    }

    /// Cuts every record after `fork`: the log then ends at `fork`, and its next record is
    /// `fork + 1`. Nothing happens when the log ends at or before `fork`.
    ///
    /// # Errors
    /// `CannotRewind` when `fork` is 0, before the retained log, or the records after it
    /// include a compacted segment (nothing is changed then: empty the log instead); a
    /// poisoned or closed log; I/O errors (the log is then poisoned: reopen it).
    pub fn truncate_after(&self, fork: Lsn) -> Result<()> {
        rewind::truncate_after(self, fork)
    }

    /// Replica side, before following a primary: an active segment without records that this
    /// log started itself (a promotion whose epoch wrote nothing, or a rotation) is not
    /// necessarily its new primary's; removes it, so the log ends with the segment holding its
    /// last record, which the primary resends the header of when shipping resumes. Nothing
    /// happens when the active segment holds records, or when the one before it is compacted.
    ///
    /// # Errors
    /// A poisoned or closed log; I/O errors.
    pub fn drop_empty_tail(&self) -> Result<()> {
        rewind::drop_empty_tail(self)
    }

    // Retention and compaction: whole segments go from the front; sealed runs are rewritten.

    /// Removes whole segments whose records are all below `lsn` (never the active segment nor
    /// records that are not yet durable). Returns how many files were removed.
    ///
    /// # Errors
    /// I/O errors; files removed before the error stay removed, the others stay in the log.
    pub fn remove_before(&self, lsn: Lsn) -> Result<usize> {
        retention::remove_before(self, lsn)
    }

    /// Sealed segments (every segment but the one being appended to whose records are all
    /// durable), in LSN order from the start of the log.
    #[must_use]
    pub fn sealed_segments(&self) -> Vec<SealedSegment> {
        compaction::sealed_segments(self)
    }

    /// Rewrites the sealed segments covering exactly `first..=last` into one compacted segment
    /// holding the records for which `keep` returns true, writing at most `bytes_per_sec`.
    /// `keep` may judge a record by later records (anything written so far): everything
    /// written is made durable before the new segment replaces the old ones.
    ///
    /// Until [`Wal::release_compacted`] is called, reads at the old offsets still find the old
    /// records, so a caller can move its index entries in small steps.
    ///
    /// # Errors
    /// A range that is not a run of sealed segments, or I/O errors (the log is unchanged unless
    /// the new segment was installed, which is all or nothing across a crash).
    pub fn compact_range(
        &self,
        first: Lsn,
        last: Lsn,
        keep: impl FnMut(&Record) -> bool,
        bytes_per_sec: u64,
    ) -> Result<Compacted> {
        compaction::compact_range(self, first, last, keep, bytes_per_sec)
    }

    /// Forgets the segments replaced by compaction: reads at their offsets stop resolving.
    pub fn release_compacted(&self) {
        self.shared.retired.write_locked().clear();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if self.flusher.is_some() {
            let _ = lifecycle::shutdown(self);
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
