//! Background compaction, in the manner of Kafka's compacted topics: sealed segments are
//! rewritten keeping the newest record of each key (and deletes younger than a horizon), with
//! their LSNs, so the log stays readable by LSN and space stays near the live data.
//!
//! IMPORTANT: every record of a key written after the settled LSN (what every replica holding
//! a retention slot has) is kept too. A newer write that no replica has yet may be cut by a
//! rewind after a failover, and the acknowledged record it superseded must still be there.
//!
//! Each pass starts at the beginning of the log. That is what makes dropping an old delete
//! safe: every older put of its key lies before it, in segments this pass (or an earlier one)
//! has already rewritten without that put, so no replay can resurrect the key.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::format::kv::{KvOp, decode_kv};
use crate::format::{Lsn, RECORD_PAYLOAD_MAX_BYTES, encoded_record_bytes};
use crate::wal::{Record, SealedSegment};

use super::error::Result;
use super::{Store, index::Index};
use crate::sync::{MutexExt, RwLockExt};

/// How background compaction runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionOptions {
    /// Run passes in a background thread (default on).
    pub enabled: bool,
    /// How often the thread checks whether a pass is due, in milliseconds (default 1000).
    pub check_interval_ms: u64,
    /// Start a pass when at least this fraction of the sealed log is dead (default 0.3: a pass
    /// starts at 1.43× the live data, leaving room under 2× for writes during the pass).
    pub dirty_ratio_min: f64,
    /// Rewrite at most this many bytes per second (default 64 MiB/s; 0 = unlimited).
    pub bytes_per_sec: u64,
    /// Keep deletes of the last this many LSNs, so readers of the log (replicas) that are at
    /// most this far behind still see them (default 1,000,000).
    pub tombstone_horizon_lsns: u64,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            check_interval_ms: 1000,
            dirty_ratio_min: 0.3,
            bytes_per_sec: 64 << 20,
            tombstone_horizon_lsns: 1_000_000,
        }
    }
}

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Groups of segments rewritten.
    pub groups: usize,
    /// Segment files replaced.
    pub segments_in: usize,
    /// Record bytes read.
    pub bytes_in: u64,
    /// Record bytes written.
    pub bytes_out: u64,
}

/// What a pass judges records against.
struct Judge {
    /// Deletes at or before it may be dropped.
    horizon: Lsn,
    /// The index speaks only for records up to it (when the pass began); anything later is kept.
    applied: Lsn,
    /// Records after it may still be rewound (see `Store::compact`).
    settled: Lsn,
    /// The keys of the put and delete records in `(settled, scanned_to]`: every record of
    /// them is kept.
    unsettled: HashSet<Vec<u8>>,
    scanned_to: Lsn,
    /// A scan of new records failed: nothing is judged dead any more.
    blind: bool,
}

impl Judge {
    /// Takes in the keys written since the last look, up to `applied_now`. Called with the
    /// index read lock held: the applier moves the applied LSN under the write lock, so the
    /// index then shows exactly the records up to `applied_now`, and each key it shows
    /// written after `settled` is in the set before that key's older records are judged.
    fn catch_up(&mut self, wal: &crate::Wal, applied_now: Lsn) {
        if self.blind || applied_now <= self.scanned_to {
            return;
        }
        match keys_written(wal, self.scanned_to, applied_now, &mut self.unsettled) {
            Ok(()) => self.scanned_to = applied_now,
            Err(_) => self.blind = true,
        }
    }

    /// Whether a record is still needed: the newest put of a live key, or a delete younger
    /// than the horizon whose key has not been written since, or any record of a key written
    /// after the settled LSN (that write may still be rewound, and then the older record is
    /// the key's value).
    fn is_needed(&self, index: &Index, record: &Record) -> bool {
        if self.blind || record.lsn > self.applied {
            return true;
        }
        match decode_kv(record.kind, &record.payload, RECORD_PAYLOAD_MAX_BYTES) {
            Ok(KvOp::Put { key, .. } | KvOp::Delete { key }) if self.unsettled.contains(key) => {
                true
            }
            Ok(KvOp::Put { key, .. }) => index.get(key).is_some_and(|l| l.lsn == record.lsn),
            Ok(KvOp::Delete { key }) => record.lsn > self.horizon && index.get(key).is_none(),
            // Not a key-value record: not ours to judge, keep it.
            Err(_) => true,
        }
    }
}

/// Adds to `keys` the keys of the put and delete records in `(after, to]` (those still in the
/// log: earlier ones cannot be rewound either).
fn keys_written(
    wal: &crate::Wal,
    after: Lsn,
    to: Lsn,
    keys: &mut HashSet<Vec<u8>>,
) -> crate::wal::Result<()> {
    let from = (after + 1).max(wal.first_lsn());
    if from > to {
        return Ok(());
    }
    for record in wal.read_range(from, to)? {
        let record = record?;
        if let Ok(KvOp::Put { key, .. } | KvOp::Delete { key }) =
            decode_kv(record.kind, &record.payload, RECORD_PAYLOAD_MAX_BYTES)
        {
            keys.insert(key.to_vec());
        }
    }
    Ok(())
}

pub(super) fn compact(store: &Store) -> Result<CompactionStats> {
    let _serial = store.maintenance.locked();
    // IMPORTANT: the index judges liveness, so it must reflect every record it judges: a
    // put written but not yet applied would otherwise look superseded and be dropped.
    store.catch_up(store.wal.durable_lsn())?;
    let applied = store.applied_lsn.load(Ordering::Acquire);
    let horizon = applied.saturating_sub(store.options.compaction.tombstone_horizon_lsns);
    // A replica resumes by reading its last record's segment: that one and every later
    // one stay as they are while a retention slot holds them.
    let hold = store.compaction_hold.load(Ordering::Acquire);
    let sealed: Vec<SealedSegment> = store
        .wal
        .sealed_segments()
        .into_iter()
        .take_while(|s| s.last_lsn <= applied && s.last_lsn < hold)
        .collect();
    let mut stats = CompactionStats::default();
    if sealed.is_empty() {
        // A replica (hold 0), or nothing sealed yet: no need to look at the tail.
        return Ok(stats);
    }
    // IMPORTANT: records the replicas do not all hold yet may be rewound (a failover, then
    // this node rejoining). A put or delete superseded only by such a record is still the
    // key's value if that happens: found by the network-fault schedules, where compaction
    // dropped an acknowledged put superseded by an unreplicated one that was then rolled
    // back, and the key vanished. With no replica, nothing is unsettled.
    let settled = if hold == Lsn::MAX { applied } else { hold };
    let mut unsettled = HashSet::new();
    keys_written(&store.wal, settled, applied, &mut unsettled)?;
    let mut judge = Judge {
        horizon,
        applied,
        settled,
        unsettled,
        scanned_to: applied.max(settled),
        blind: false,
    };
    let mut group: Vec<SealedSegment> = Vec::new();
    let mut group_kept = 0u64;
    let mut group_dropped = 0u64;
    let target = store.options.wal.segment_bytes;
    for segment in sealed {
        let (kept, dropped) = measure(store, &segment, &mut judge)?;
        if !group.is_empty() && group_kept + kept > target {
            compact_group(store, &group, group_dropped, &mut stats, &mut judge)?;
            group.clear();
            group_kept = 0;
            group_dropped = 0;
        }
        group.push(segment);
        group_kept += kept;
        group_dropped += dropped;
    }
    compact_group(store, &group, group_dropped, &mut stats, &mut judge)?;
    Ok(stats)
}

/// Bytes of a segment's records that a pass would keep and drop.
fn measure(store: &Store, segment: &SealedSegment, judge: &mut Judge) -> Result<(u64, u64)> {
    let (mut kept, mut dropped) = (0, 0);
    let mut records = store
        .wal
        .read_range(segment.first_lsn, segment.last_lsn)?
        .peekable();
    while records.peek().is_some() {
        // Judge a chunk per read lock: appliers wait for one chunk at most.
        let chunk: Vec<Record> = records
            .by_ref()
            .take(256)
            .collect::<std::result::Result<_, _>>()?;
        let index = store.index.read_locked();
        judge.catch_up(&store.wal, store.applied_lsn.load(Ordering::Acquire));
        for record in &chunk {
            let bytes = encoded_record_bytes(record.payload.len()) as u64;
            if judge.is_needed(&index, record) {
                kept += bytes;
            } else {
                dropped += bytes;
            }
        }
    }
    Ok((kept, dropped))
}

fn compact_group(
    store: &Store,
    group: &[SealedSegment],
    dropped: u64,
    stats: &mut CompactionStats,
    judge: &mut Judge,
) -> Result<()> {
    // Nothing to drop and nothing to merge: rewriting would only cost I/O.
    let (Some(first), Some(last)) = (group.first(), group.last()) else {
        return Ok(());
    };
    if dropped == 0 && group.len() == 1 {
        return Ok(());
    }
    // A pass can run for seconds (it is throttled): a replica that attached since it began
    // holds its position now, so look at the hold again before each rewrite.
    // A hold that moved below the settled LSN (a replica that registered lower) makes
    // records this pass took as settled rewindable: leave them to the next pass.
    let hold = store.compaction_hold.load(Ordering::Acquire);
    if last.last_lsn >= hold || hold < judge.settled {
        return Ok(());
    }
    forget_checkpoint(store)?;
    let mut kept_puts: Vec<(Vec<u8>, Lsn)> = Vec::new();
    let outcome = store.wal.compact_range(
        first.first_lsn,
        last.last_lsn,
        |record| {
            let index = store.index.read_locked();
            judge.catch_up(&store.wal, store.applied_lsn.load(Ordering::Acquire));
            let needed = judge.is_needed(&index, record);
            if needed
                && let Ok(KvOp::Put { key, .. }) =
                    decode_kv(record.kind, &record.payload, RECORD_PAYLOAD_MAX_BYTES)
            {
                kept_puts.push((key.to_vec(), record.lsn));
            }
            needed
        },
        store.options.compaction.bytes_per_sec,
    )?;
    // Move index entries in small steps: readers and appliers wait for one step at most,
    // and reads at old offsets still resolve until `release_compacted`.
    let offsets: std::collections::HashMap<Lsn, u64> = outcome.moved.iter().copied().collect();
    for chunk in kept_puts.chunks(1024) {
        let mut index = store.index.write_locked();
        for (key, lsn) in chunk {
            if let Some(&offset) = offsets.get(lsn) {
                index.move_record(key, *lsn, offset);
            }
        }
    }
    store.wal.release_compacted();
    if let Some(e) = outcome.cleanup_error {
        return Err(e.into());
    }
    stats.groups += 1;
    stats.segments_in += outcome.segments_in;
    stats.bytes_in += outcome.bytes_in;
    stats.bytes_out += outcome.bytes_out;
    Ok(())
}

/// Removes the index checkpoint before segments change under it: its offsets would point
/// into replaced files. The next checkpoint (at close) is written against the new ones.
fn forget_checkpoint(store: &Store) -> Result<()> {
    // IMPORTANT: the removal is durable before any segment is replaced.
    Ok(super::checkpoint::remove(
        store.wal.fs().as_ref(),
        store.wal.dir(),
    )?)
}

pub(super) fn dirty_ratio(store: &Store) -> f64 {
    let sealed: u64 = store
        .wal
        .sealed_segments()
        .iter()
        .map(|s| s.record_bytes)
        .sum();
    let total = sealed.max(1);
    let (live_keys, live_bytes) = {
        let index = store.index.read_locked();
        (index.len() as u64, index.live_bytes())
    };
    // Each live key costs its key and value plus a record and payload header.
    let live = live_bytes + live_keys * encoded_record_bytes(4) as u64;
    #[expect(clippy::cast_precision_loss, reason = "a ratio for a threshold")]
    let ratio = 1.0 - (live.min(total) as f64 / total as f64);
    if sealed == 0 { 0.0 } else { ratio }
}

/// The background thread that runs a pass when the log is dirty enough.
#[derive(Debug)]
pub(crate) struct Compactor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    pub fn start(store: &Arc<Store>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (store, flag) = (Arc::clone(store), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("shiplog-compact".to_owned())
            .spawn(move || {
                let interval =
                    Duration::from_millis(store.options.compaction.check_interval_ms.max(1));
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(interval);
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    if store.dirty_ratio() >= store.options.compaction.dirty_ratio_min {
                        // A failed pass changed nothing it did not finish, and the log reports
                        // its own poisoning to writers: try again next interval.
                        let _ = store.compact();
                    }
                }
            })
            .expect("spawning the compaction thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
