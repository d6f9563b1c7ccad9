//! The key-value engine on the log. The log is the database: an in-memory ordered index maps
//! each live key to the record holding its newest value, and reads return views of the mapped
//! segment instead of copies.

mod batch;
mod checkpoint;
mod compaction;
mod error;
mod frozen;
mod index;
mod key;
mod restore;
mod rewind;
mod value;
mod verify;

use std::ops::{Bound, Deref, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError};

use crate::format::kv::{KIND_DELETE, KIND_PUT, KvOp, decode_kv, encode_delete, encode_put};
use crate::format::{Lsn, RECORD_PAYLOAD_MAX_BYTES};
use crate::wal::{self, Durability, Entry, Record, Wal, WalIter};

pub use batch::WriteBatch;
pub use checkpoint::{CHECKPOINT_FILE_NAME, CheckpointStatus};
pub use compaction::{CompactionOptions, CompactionStats};
pub use error::{DbError, Result};
pub use frozen::FrozenState;
pub use restore::RESTORE_MARKER_FILE_NAME;
pub use value::Value;
pub use verify::{CheckpointVerdict, SegmentUsage, StoreReport, verify_store};

use crate::sync::{MutexExt, RwLockExt};
use compaction::Compactor;
use index::{Index, Location};

/// Default largest key: 64 KiB.
pub const DEFAULT_KEY_MAX_BYTES: u32 = 64 << 10;
/// Default largest value: 512 MiB (Redis' `proto-max-bulk-len`).
pub const DEFAULT_VALUE_MAX_BYTES: u32 = 512 << 20;

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Options of the underlying log.
    pub wal: wal::Options,
    /// Durability of writes that do not name one (default `Sync`).
    pub durability: Durability,
    /// Largest key accepted (default 64 KiB, at most 1 GiB).
    pub key_max_bytes: u32,
    /// Largest value accepted (default 512 MiB, at most 1 GiB minus the key).
    pub value_max_bytes: u32,
    /// Background compaction.
    pub compaction: CompactionOptions,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            wal: wal::Options::default(),
            durability: Durability::Sync,
            key_max_bytes: DEFAULT_KEY_MAX_BYTES,
            value_max_bytes: DEFAULT_VALUE_MAX_BYTES,
            compaction: CompactionOptions::default(),
        }
    }
}

/// Counters describing a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbStats {
    /// Keys with a value.
    pub live_keys: u64,
    /// Bytes of those keys and their values.
    pub live_bytes: u64,
    /// Bytes of segment files on disk.
    pub disk_bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Last LSN applied and visible to readers.
    pub last_lsn: Lsn,
    /// Last LSN on stable storage.
    pub durable_lsn: Lsn,
}

/// Replays the log into the index, in LSN order, one complete batch at a time.
#[derive(Debug, Default)]
struct Applier {
    cursor: Option<WalIter>,
}

/// An open key-value store: the [`Store`] plus its background compaction thread. Every
/// operation is a method of [`Store`], reached through `Deref`.
#[derive(Debug)]
pub struct Db {
    store: Arc<Store>,
    compactor: Option<Compactor>,
}

impl Deref for Db {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Db {
    /// Opens (or creates) the store in `dir`, recovering the log and rebuilding the index, and
    /// starts background compaction if enabled.
    ///
    /// # Errors
    /// Invalid options, log recovery errors (corruption is reported, never skipped), or a
    /// record that is not a valid key-value operation.
    pub fn open(dir: impl AsRef<Path>, options: DbOptions) -> Result<Self> {
        let store = Arc::new(Store::open(dir, options)?);
        let compactor = store
            .options
            .compaction
            .enabled
            .then(|| Compactor::start(&store));
        Ok(Self { store, compactor })
    }

    /// Stops compaction, checkpoints the index, syncs and closes the store.
    ///
    /// # Errors
    /// A failed checkpoint or final sync.
    pub fn close(mut self) -> Result<()> {
        if let Some(mut compactor) = self.compactor.take() {
            compactor.stop();
        }
        self.store.checkpoint()?;
        self.store.sync()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(mut compactor) = self.compactor.take() {
            compactor.stop();
        }
    }
}

/// The key-value store's state and operations, shared with the compaction thread. Every
/// public method is declared in this file, grouped by topic; compaction, snapshots, restore
/// and rewind delegate to their own files.
#[derive(Debug)]
pub struct Store {
    wal: Wal,
    index: RwLock<Index>,
    applier: Mutex<Applier>,
    /// Every LSN at or below this is reflected in the index.
    applied_lsn: AtomicU64,
    options: DbOptions,
    checkpoint_status: CheckpointStatus,
    /// Serialises compaction passes and checkpoints.
    maintenance: Mutex<()>,
    /// Compaction leaves alone every segment holding this LSN or later (replicas' retention).
    compaction_hold: AtomicU64,
    /// A restore from a snapshot is under way or was interrupted (`restore.rs`).
    restoring: AtomicBool,
}

impl Store {
    fn open(dir: impl AsRef<Path>, options: DbOptions) -> Result<Self> {
        let invalid = |name, reason: &str| DbError::InvalidOption {
            name,
            reason: reason.to_owned(),
        };
        if options.key_max_bytes > RECORD_PAYLOAD_MAX_BYTES {
            return Err(invalid("key_max_bytes", "must be at most 1 GiB"));
        }
        if u64::from(options.key_max_bytes) + u64::from(options.value_max_bytes) + 4
            > u64::from(RECORD_PAYLOAD_MAX_BYTES)
        {
            return Err(invalid(
                "value_max_bytes",
                "key and value together must fit in 1 GiB",
            ));
        }
        let restoring = restore::clear_unfinished(options.wal.fs.as_ref(), dir.as_ref())?;
        let wal = Wal::open(dir, options.wal.clone())?;
        let (loaded, checkpoint_status) = checkpoint::load(wal.fs().as_ref(), wal.dir(), &wal);
        if matches!(checkpoint_status, CheckpointStatus::Ignored(_)) {
            // A rejected checkpoint must not come back into play later (say after its LSNs are
            // reused past a power loss): remove it for good.
            checkpoint::remove(wal.fs().as_ref(), wal.dir())?;
        }
        let (index, applied) = loaded.unwrap_or_else(|| (Index::default(), wal.first_lsn() - 1));
        let db = Self {
            wal,
            index: RwLock::new(index),
            applier: Mutex::new(Applier::default()),
            applied_lsn: AtomicU64::new(applied),
            options,
            checkpoint_status,
            maintenance: Mutex::new(()),
            compaction_hold: AtomicU64::new(Lsn::MAX),
            restoring: AtomicBool::new(restoring),
        };
        let replayed_from = db.applied_lsn.load(Ordering::Acquire);
        db.catch_up(db.wal.written_lsn())?;
        // A long replay grew the tree one insert at a time; repack it once.
        if db.applied_lsn.load(Ordering::Acquire) - replayed_from > 100_000 {
            db.index.write_locked().repack();
        }
        Ok(db)
    }

    // Writing: each write is appended to the log, then applied to the index.

    /// Sets `key` to `value` with the default durability; returns the commit LSN.
    ///
    /// # Errors
    /// Size limits or log errors.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<Lsn> {
        self.put_with(key, value, self.options.durability)
    }

    /// Sets `key` to `value` with the given durability; returns the commit LSN.
    ///
    /// # Errors
    /// Size limits or log errors.
    pub fn put_with(&self, key: &[u8], value: &[u8], durability: Durability) -> Result<Lsn> {
        self.check_sizes(key.len(), value.len())?;
        let mut payload = Vec::with_capacity(4 + key.len() + value.len());
        encode_put(&mut payload, key, value);
        let lsn = self.wal.append(KIND_PUT, &payload, durability)?;
        self.catch_up(lsn)?;
        Ok(lsn)
    }

    /// Removes `key` (a no-op for a missing key, still logged) with the default durability.
    ///
    /// # Errors
    /// Size limits or log errors.
    pub fn delete(&self, key: &[u8]) -> Result<Lsn> {
        self.delete_with(key, self.options.durability)
    }

    /// Removes `key` with the given durability; returns the commit LSN.
    ///
    /// # Errors
    /// Size limits or log errors.
    pub fn delete_with(&self, key: &[u8], durability: Durability) -> Result<Lsn> {
        self.check_sizes(key.len(), 0)?;
        let mut payload = Vec::with_capacity(4 + key.len());
        encode_delete(&mut payload, key);
        let lsn = self.wal.append(KIND_DELETE, &payload, durability)?;
        self.catch_up(lsn)?;
        Ok(lsn)
    }

    /// Applies a batch atomically with the default durability; returns its last LSN (`None`
    /// for an empty batch, which writes nothing).
    ///
    /// # Errors
    /// Size limits or log errors; on error nothing of the batch is applied.
    pub fn write_batch(&self, batch: &WriteBatch) -> Result<Option<Lsn>> {
        self.write_batch_with(batch, self.options.durability)
    }

    /// Applies a batch atomically with the given durability; returns its last LSN.
    ///
    /// # Errors
    /// Size limits or log errors; on error nothing of the batch is applied.
    pub fn write_batch_with(
        &self,
        batch: &WriteBatch,
        durability: Durability,
    ) -> Result<Option<Lsn>> {
        let cuts = self.wal.cuts();
        let Some(lsn) = self.stage_batch(batch)? else {
            return Ok(None);
        };
        self.commit_through(lsn, cuts, durability)?;
        Ok(Some(lsn))
    }

    /// Fixes the batch's place in the log without waiting for it to be written, durable or
    /// visible; returns its last LSN. [`Store::commit_through`] finishes it. Until then no
    /// reader sees it, so a caller that reads its own staged writes must keep them itself.
    ///
    /// # Errors
    /// Size limits or log errors; on error nothing of the batch is in the log.
    pub fn stage_batch(&self, batch: &WriteBatch) -> Result<Option<Lsn>> {
        self.check_sizes(batch.key_bytes_max, batch.value_bytes_max)?;
        if batch.is_empty() {
            return Ok(None);
        }
        let entries: Vec<Entry<'_>> = batch
            .ops
            .iter()
            .map(|(kind, payload)| Entry {
                kind: *kind,
                payload,
            })
            .collect();
        Ok(Some(self.wal.queue_batch(&entries)?.last))
    }

    /// Brings every write up to `lsn` (staged or not) to `durability` and makes it visible.
    /// `cuts` is [`Wal::cuts`] read before the writes were staged: if the log's end was cut
    /// since (a rewind or a restore), `lsn` may name another record, and this fails instead.
    ///
    /// # Errors
    /// `Cut` (the staged writes may be gone), or log errors (a failed sync poisons the log:
    /// the staged writes are then not durable).
    pub fn commit_through(&self, lsn: Lsn, cuts: u64, durability: Durability) -> Result<()> {
        self.wal.wait_for_uncut(lsn, durability, cuts)?;
        self.catch_up(lsn)
    }

    fn check_sizes(&self, key_bytes: usize, value_bytes: usize) -> Result<()> {
        let key_max = self.options.key_max_bytes;
        if key_bytes as u64 > u64::from(key_max) {
            return Err(DbError::KeyTooLarge {
                bytes: key_bytes as u64,
                max: u64::from(key_max),
            });
        }
        let value_max = self.options.value_max_bytes;
        if value_bytes as u64 > u64::from(value_max) {
            return Err(DbError::ValueTooLarge {
                bytes: value_bytes as u64,
                max: u64::from(value_max),
            });
        }
        Ok(())
    }

    // Reading: the index locates a key's record; values are views of the mapped segment.

    /// The values of `keys`, all as of one instant (one read of the index), so a concurrent
    /// batch is seen whole or not at all.
    ///
    /// # Errors
    /// Log read errors.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Value>>> {
        let lookup = || -> Vec<Option<Location>> {
            let index = self.index.read_locked();
            keys.iter().map(|k| index.get(k.as_ref())).collect()
        };
        let mut locations = lookup();
        'attempt: loop {
            let mut values = Vec::with_capacity(keys.len());
            for (i, (key, at)) in keys.iter().zip(&locations).enumerate() {
                let Some(at) = *at else {
                    values.push(None);
                    continue;
                };
                match self.value_at(key.as_ref(), at) {
                    Ok(value) => values.push(Some(value)),
                    Err(e) => {
                        // Compaction moved a record between the lookup and the read: look all
                        // keys up again, so the answer still comes from one instant.
                        let again = lookup();
                        if again[i] == locations[i] {
                            return Err(e);
                        }
                        locations = again;
                        continue 'attempt;
                    }
                }
            }
            return Ok(values);
        }
    }

    /// The current value of `key`, as a zero-copy view.
    ///
    /// # Errors
    /// Log read errors (a damaged record is reported, never returned as a value).
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let lookup = || self.index.read_locked().get(key);
        let mut location = lookup();
        loop {
            let Some(at) = location else {
                return Ok(None);
            };
            match self.value_at(key, at) {
                Ok(value) => return Ok(Some(value)),
                Err(e) => {
                    // Compaction may have moved the record between the lookup and the read; a
                    // location that did not change means the error is real.
                    let again = lookup();
                    if again == location {
                        return Err(e);
                    }
                    location = again;
                }
            }
        }
    }

    /// Whether `key` has a value.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        self.index.read_locked().get(key).is_some()
    }

    fn value_at(&self, key: &[u8], location: Location) -> Result<Value> {
        let record = self.wal.read_at(location.lsn, u64::from(location.offset))?;
        match decode_kv(record.kind, &record.payload, RECORD_PAYLOAD_MAX_BYTES) {
            Ok(KvOp::Put { key: stored, .. }) if stored != key => Err(DbError::BadRecord {
                lsn: location.lsn,
                reason: "the index points at a record of another key".to_owned(),
            }),
            Ok(KvOp::Put { value_offset, .. }) => {
                let end = record.payload.len();
                Ok(Value(record.payload.slice(value_offset..end)))
            }
            Ok(KvOp::Delete { .. }) => Err(DbError::BadRecord {
                lsn: location.lsn,
                reason: "the index points at a delete".to_owned(),
            }),
            Err(e) => Err(DbError::BadRecord {
                lsn: location.lsn,
                reason: e.to_string(),
            }),
        }
    }

    /// Keys and values within `range`, in key order, as of one instant: the keys are taken
    /// under one read of the index, so a concurrent batch is seen whole or not at all.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> RangeIter<'_> {
        let start = range.start_bound().map(|k| k.as_ref().to_vec());
        let end = range.end_bound().map(|k| k.as_ref().to_vec());
        self.range_bounds(&start, &end)
    }

    fn range_bounds(&self, start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> RangeIter<'_> {
        let empty = match (start, end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
            _ => false,
        };
        let entries = if empty {
            Vec::new()
        } else {
            self.index
                .read_locked()
                .range(as_slice(start), as_slice(end))
        };
        RangeIter {
            db: self,
            entries: entries.into_iter(),
        }
    }

    /// Keys starting with `prefix` and their values, in key order, as of one instant.
    pub fn scan_prefix(&self, prefix: &[u8]) -> RangeIter<'_> {
        let end = prefix_successor(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        self.range_bounds(&Bound::Included(prefix.to_vec()), &end)
    }

    /// Up to `limit` keys after `start` in key order, without values: a page of a long scan
    /// (one read of the index, holding it only for the page).
    #[must_use]
    pub fn keys_from(&self, start: Bound<&[u8]>, limit: usize) -> Vec<Box<[u8]>> {
        self.index.read_locked().keys_from(start, limit)
    }

    /// Number of live keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.read_locked().len()
    }

    /// Whether the store holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // State, durability and checkpoints.

    /// Counters describing the store.
    #[must_use]
    pub fn stats(&self) -> DbStats {
        let (live_keys, live_bytes) = {
            let index = self.index.read_locked();
            (index.len() as u64, index.live_bytes())
        };
        let wal = self.wal.stats();
        DbStats {
            live_keys,
            live_bytes,
            disk_bytes: wal.file_bytes,
            segments: wal.segments,
            last_lsn: self.applied_lsn.load(Ordering::Acquire),
            durable_lsn: wal.durable_lsn,
        }
    }

    /// The log underneath (for replication and tools).
    #[must_use]
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Makes every write so far durable.
    ///
    /// # Errors
    /// A failed or poisoned log.
    pub fn sync(&self) -> Result<()> {
        Ok(self.wal.sync()?)
    }

    /// Writes the index durably to `index.ckpt`, so the next open replays only the log after
    /// this point. Index updates (not log appends) wait while it is written.
    ///
    /// # Errors
    /// I/O errors; the previous checkpoint, if any, stays in place.
    pub fn checkpoint(&self) -> Result<Lsn> {
        let _serial = self.maintenance.locked();
        // IMPORTANT: stop index application first, then sync: every record the index reflects
        // is then durable, so the checkpoint never names an LSN a power loss could take back
        // (and later reuse for other records).
        let _applier = self.applier.locked();
        self.wal.sync()?;
        let index = self.index.read_locked();
        let applied = self.applied_lsn.load(Ordering::Acquire);
        checkpoint::write(
            self.wal.fs().as_ref(),
            self.wal.dir(),
            self.wal.cluster_id(),
            applied,
            &index,
            &self.wal.segment_extents(),
        )?;
        Ok(applied)
    }

    /// What happened to the index checkpoint when the store was opened.
    #[must_use]
    pub fn checkpoint_status(&self) -> &CheckpointStatus {
        &self.checkpoint_status
    }

    /// The last LSN visible to readers.
    #[must_use]
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn.load(Ordering::Acquire)
    }

    // Applying the log to the index: every write through `catch_up`, a replica's records
    // through `apply_written`.

    /// Makes every record written to the log visible to readers, durable or not, and returns
    /// the last LSN applied. For a replica, whose records are durable on its primary already
    /// (`docs/consistency.md`); a primary's own writes go through [`Store::commit_through`].
    ///
    /// # Errors
    /// Log read errors, or a record that is not a key-value operation.
    pub fn apply_written(&self) -> Result<Lsn> {
        let written = self.wal.written_lsn();
        self.catch_up(written)?;
        Ok(self.applied_lsn.load(Ordering::Acquire))
    }

    /// Applies every written record up to at least `lsn` to the index, in LSN order and whole
    /// batches at a time, so readers never see half a batch.
    fn catch_up(&self, lsn: Lsn) -> Result<()> {
        if self.applied_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let mut applier = match self.applier.try_lock() {
            Ok(applier) => applier,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // Another writer is applying everything written, very likely past `lsn`: give
                // it the core for a moment instead of sleeping on the mutex.
                for _ in 0..16 {
                    std::thread::yield_now();
                    if self.applied_lsn.load(Ordering::Acquire) >= lsn {
                        return Ok(());
                    }
                }
                self.applier.locked()
            }
        };
        let done = self.applied_lsn.load(Ordering::Acquire);
        // Everything durable is applied along with `lsn`, but nothing else: a record written by
        // another thread and not yet durable stays invisible until its own writer (or a later
        // one) gets here, so a reader never sees a `Sync` write that a power loss could take
        // back. Written and durable LSNs both end on batch boundaries, so the range is whole.
        let to = lsn.max(self.wal.durable_lsn()).min(self.wal.written_lsn());
        if done >= lsn || done >= to {
            return Ok(());
        }
        let cursor = match applier.cursor.as_mut() {
            Some(cursor) if cursor.next_lsn() == done + 1 => cursor,
            _ => applier.cursor.insert(self.wal.read_range(done + 1, to)?),
        };
        cursor.extend_to(to);
        let records: Vec<Record> = cursor.by_ref().collect::<std::result::Result<_, _>>()?;
        // The last record is `to` itself, except at the end of a compacted range, whose last
        // LSNs may have been superseded (no record, nothing to apply).
        debug_assert!(records.last().is_none_or(|r| r.lsn <= to));
        debug_assert!(
            records.last().is_none_or(|r| !r.batch_continues),
            "applied half a batch"
        );
        let mut index = self.index.write_locked();
        for record in &records {
            apply(&mut index, record)?;
        }
        self.applied_lsn.store(to, Ordering::Release);
        Ok(())
    }

    // Compaction (`compaction.rs`).

    /// Runs one compaction pass now, whatever the dirty ratio.
    ///
    /// # Errors
    /// Log errors; a pass stopped by an error leaves every group either compacted or untouched.
    pub fn compact(&self) -> Result<CompactionStats> {
        compaction::compact(self)
    }

    /// The fraction of the sealed log's record bytes that are dead, estimated from the index.
    #[must_use]
    pub fn dirty_ratio(&self) -> f64 {
        compaction::dirty_ratio(self)
    }

    /// Keeps compaction away from the segment holding `lsn` and every later one, so a replica
    /// that holds records up to `lsn` can resume from this log (`Lsn::MAX`: no hold).
    pub fn set_compaction_hold(&self, lsn: Lsn) {
        self.compaction_hold.store(lsn, Ordering::Release);
    }

    /// Where compaction stops now (`Lsn::MAX`: nowhere; 0: it rewrites nothing).
    #[must_use]
    pub fn compaction_hold(&self) -> Lsn {
        self.compaction_hold.load(Ordering::Acquire)
    }

    // Snapshots, restore and rewind (`frozen.rs`, `restore.rs`, `rewind.rs`).

    /// Seals the log at its last written LSN and rebuilds the state there from the sealed
    /// segments. Writers go on meanwhile; they wait only for the segment roll.
    ///
    /// # Errors
    /// Log errors, or a record that is not a key-value operation.
    pub fn freeze(&self) -> Result<FrozenState> {
        frozen::freeze(self)
    }

    /// Starts a restore in place: marks it durably, then empties the log and the index.
    /// Readers see an empty store from here on and [`Store::restoring`] says so; the caller
    /// installs the base into [`Store::wal`], applies it, and calls [`Store::finish_restore`].
    ///
    /// # Errors
    /// I/O errors writing the marker or emptying the log.
    pub fn begin_restore(&self) -> Result<()> {
        restore::begin_restore(self)
    }

    /// Ends a restore: everything installed is applied, then the marker goes, durably.
    ///
    /// # Errors
    /// Applying the installed log, or removing the marker.
    pub fn finish_restore(&self) -> Result<()> {
        restore::finish_restore(self)
    }

    /// Whether a restore is under way (or was interrupted): the store holds no usable state.
    #[must_use]
    pub fn restoring(&self) -> bool {
        self.restoring.load(Ordering::Acquire)
    }

    /// Saves the records after `fork` to a rollback file, cuts them from the log and rebuilds
    /// the index. Returns the rollback file (`None`: nothing was after `fork`).
    ///
    /// # Errors
    /// `CannotRewind` (nothing changed, the store still serves its state: empty it with a
    /// restore instead), I/O errors.
    pub fn rewind_to(&self, fork: Lsn) -> Result<Option<PathBuf>> {
        rewind::rewind_to(self, fork)
    }
}

fn apply(index: &mut Index, record: &Record) -> Result<()> {
    let bad = |reason: String| DbError::BadRecord {
        lsn: record.lsn,
        reason,
    };
    match decode_kv(record.kind, &record.payload, RECORD_PAYLOAD_MAX_BYTES)
        .map_err(|e| bad(e.to_string()))?
    {
        KvOp::Put { key, value, .. } => {
            let offset = u32::try_from(record.location.offset)
                .map_err(|_| bad("offset beyond 4 GiB".into()))?;
            let value_bytes =
                u32::try_from(value.len()).map_err(|_| bad("value beyond 4 GiB".into()))?;
            index.put(
                key,
                Location {
                    lsn: record.lsn,
                    offset,
                    value_bytes,
                },
            );
        }
        KvOp::Delete { key } => index.delete(key),
    }
    Ok(())
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Iterator over `(key, value)` pairs of a range, resolved lazily from a key snapshot.
#[derive(Debug)]
pub struct RangeIter<'a> {
    db: &'a Store,
    entries: std::vec::IntoIter<(Box<[u8]>, Location)>,
}

impl Iterator for RangeIter<'_> {
    type Item = Result<(Box<[u8]>, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, location) = self.entries.next()?;
        match self.db.value_at(&key, location) {
            Ok(value) => Some(Ok((key, value))),
            // Compaction moved the record since the keys were taken: read the key's current
            // value (or skip it, if it was deleted since).
            Err(_) => match self.db.get(&key) {
                Ok(Some(value)) => Some(Ok((key, value))),
                Ok(None) => self.next(),
                Err(e) => Some(Err(e)),
            },
        }
    }
}
