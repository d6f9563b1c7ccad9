//! Crash-state enumeration and I/O error injection over the simulated file layer, one test per
//! multi-step file protocol. Each protocol runs on a fresh `SimFs` that already holds an
//! acknowledged state; its file operations are counted, then for every operation kind and every
//! `n` up to that count the `n`-th call fails (EIO, and ENOSPC for writes and fallocate), and
//! the power is cut at several points (unsynced data dropped, writes kept in order up to a cut
//! with the next one torn at 512 bytes, or sectors reordered; directory changes not yet synced
//! are lost). Every image must open and hold every acknowledged operation, no phantom data, and
//! no deleted key. In process, each injected error must reach the caller or stop the log
//! (fail-stop), and the same file system reopened after a `kill -9` loses nothing acknowledged.
//!
//! Not here: rewind truncation, enumerated the same way in `tests/wal_epochs_and_rewind.rs`.
//! The checkpoint is the hint file. The snapshot file's own source is read from the real file
//! system in the restore protocol.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};
use std::sync::Arc;

use shiplog::engine::CheckpointStatus;
use shiplog::format::epochs::EpochHistory;
use shiplog::io::{CrashMode, SimFs, SimOp};
use shiplog::snapshot::{
    SNAPSHOTS_DIR, SnapshotBuilds, SnapshotFile, create_snapshot_file_in, install_base,
    read_snapshot, restore_snapshot_with, write_snapshot,
};
use shiplog::{Db, DbOptions, Durability, Entry, Lsn, Wal};

mod lsn_records;
mod ship_chunks;

use lsn_records::{append, history, kind, payload, sim_db_options, sim_options};
use ship_chunks::deliver;

const EIO: i32 = 5;
const ENOSPC: i32 = 28;
const DIR: &str = "/data";

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// A multi-step file protocol and the model of what it acknowledged.
trait Protocol {
    type Handle;
    /// Builds the acknowledged starting state on an empty `fs` (and resets the model).
    fn setup(&mut self, fs: &SimFs) -> Self::Handle;
    /// Runs the protocol, recording in the model what it acknowledged.
    fn run(&mut self, handle: &Self::Handle) -> Result<(), String>;
    /// One more acknowledged write after the run (the disk works again): recorded in the model
    /// if it was acknowledged. Returns whether it was.
    fn follow_up(&mut self, handle: &Self::Handle) -> bool;
    /// Reopens `image` and checks it against the model; `finished`: the run had returned `Ok`
    /// before the image was taken.
    fn check(&self, image: &SimFs, finished: bool) -> Result<(), String>;
}

#[derive(Debug, Default)]
struct Figures {
    /// Runs with one injected fault.
    faults: u64,
    /// Crash images reopened and checked.
    states: u64,
    /// Faults whose error reached the caller.
    returned: u64,
    /// Faults the protocol absorbed (retried or fell back) and still finished.
    absorbed: u64,
    /// Faults after which the log refused the follow-up write (fail-stop).
    fail_stop: u64,
}

fn errnos(op: SimOp) -> &'static [i32] {
    match op {
        SimOp::Write | SimOp::Allocate => &[EIO, ENOSPC],
        _ => &[EIO],
    }
}

/// Unsynced writes up to which every ordered cut is tried; beyond it, a sample of cuts.
const EVERY_CUT_MAX: usize = 40;

/// The images a power loss could leave now: unsynced data dropped; the unsynced writes kept in
/// issue order up to each cut (every one, or a sample of a long run), with the next write lost
/// or torn after one sector; two scatterings of sectors; and every prefix of the directory
/// changes not yet synced.
fn crash_modes(unsynced: usize, dir_changes: usize) -> Vec<CrashMode> {
    let mut modes = vec![CrashMode::DropUnsynced];
    let cuts: Vec<usize> = if unsynced <= EVERY_CUT_MAX {
        (0..=unsynced).collect()
    } else {
        let step = unsynced / EVERY_CUT_MAX;
        (0..=unsynced)
            .filter(|k| k % step == 0 || *k + 1 >= unsynced)
            .collect()
    };
    if unsynced > 0 {
        for whole_writes in cuts {
            for torn_sectors in [0, 1] {
                modes.push(CrashMode::Ordered {
                    whole_writes,
                    torn_sectors,
                });
            }
        }
        modes.push(CrashMode::Scattered { seed: 7 });
        modes.push(CrashMode::Scattered {
            seed: 0x9e37_79b9_7f4a_7c15,
        });
    }
    modes.extend((1..=dir_changes).map(|dir_changes| CrashMode::DirPrefix { dir_changes }));
    // Directory changes committed in any order: every subset of up to six changes (the
    // prefixes are above), a sample of subsets of more.
    if dir_changes >= 2 {
        let masks: Vec<u64> = if dir_changes <= EVERY_SUBSET_MAX {
            (0..1u64 << dir_changes).collect()
        } else {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            (0..64)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
                })
                .collect()
        };
        let is_prefix = |keep: u64| (keep + 1).is_power_of_two();
        modes.extend(
            masks
                .into_iter()
                .filter(|&keep| !is_prefix(keep))
                .map(|keep| CrashMode::DirSubset { keep }),
        );
    }
    modes
}

/// Unsynced directory changes up to which every subset of them is tried.
const EVERY_SUBSET_MAX: usize = 6;

fn check_images<P: Protocol>(
    protocol: &P,
    fs: &SimFs,
    finished: bool,
    figures: &mut Figures,
    context: &str,
) {
    for mode in crash_modes(fs.unsynced_writes(), fs.unsynced_dir_changes()) {
        let image = fs.crash(mode);
        protocol
            .check(&image, finished)
            .unwrap_or_else(|e| panic!("{context}, power loss {mode:?}: {e}"));
        figures.states += 1;
    }
}

/// Runs `protocol` once without faults, then once per (operation, n, errno) with the n-th call
/// of that operation failing, checking crash images and the in-process outcome of each.
fn explore<P: Protocol>(name: &str, protocol: &mut P) -> Figures {
    let mut figures = Figures::default();
    let fs = SimFs::new();
    let handle = protocol.setup(&fs);
    let before = SimOp::ALL.map(|op| fs.op_count(op));
    protocol
        .run(&handle)
        .unwrap_or_else(|e| panic!("{name}: the run without faults failed: {e}"));
    let calls = SimOp::ALL.map(|op| fs.op_count(op));
    check_images(
        protocol,
        &fs,
        true,
        &mut figures,
        &format!("{name}, no fault"),
    );
    drop(handle);
    for (i, op) in SimOp::ALL.into_iter().enumerate() {
        for nth in 1..=calls[i] - before[i] {
            for &errno in errnos(op) {
                let context = format!("{name}: {op:?} #{nth} failing with errno {errno}");
                inject(protocol, (op, nth, errno), false, &mut figures, &context);
                if op == SimOp::SyncData {
                    // Again as Linux can fail it: the dirty pages dropped, the cache still
                    // showing them.
                    let context = format!("{context}, fsyncgate");
                    inject(protocol, (op, nth, errno), true, &mut figures, &context);
                }
            }
        }
    }
    let per_op: Vec<String> = SimOp::ALL
        .iter()
        .enumerate()
        .filter(|&(i, _)| calls[i] > before[i])
        .map(|(i, op)| format!("{op:?} {}", calls[i] - before[i]))
        .collect();
    eprintln!(
        "{name}: operations [{}]; {} faults injected ({} returned, {} absorbed, {} fail-stop), \
         {} crash states explored",
        per_op.join(", "),
        figures.faults,
        figures.returned,
        figures.absorbed,
        figures.fail_stop,
        figures.states
    );
    figures
}

fn inject<P: Protocol>(
    protocol: &mut P,
    (op, nth, errno): (SimOp, u64, i32),
    fsyncgate: bool,
    figures: &mut Figures,
    context: &str,
) {
    let fs = SimFs::new();
    let handle = protocol.setup(&fs);
    let target = fs.op_count(op) + nth;
    fs.fail_nth(op, target, errno);
    fs.set_fsyncgate(fsyncgate);
    let result = protocol.run(&handle);
    assert!(
        fs.op_count(op) >= target,
        "{context}: the run did not reach the call (it is not deterministic)"
    );
    figures.faults += 1;
    match &result {
        Ok(()) => figures.absorbed += 1,
        Err(_) => figures.returned += 1,
    }
    check_images(protocol, &fs, result.is_ok(), figures, context);
    // In process: the disk works again; a write is either refused (the instance stopped) or
    // acknowledged, and then it is as durable as any other.
    if !protocol.follow_up(&handle) {
        figures.fail_stop += 1;
    }
    let killed = fs.process_crash();
    protocol
        .check(&killed, result.is_ok())
        .unwrap_or_else(|e| panic!("{context}, then kill -9 (result {result:?}): {e}"));
    let image = fs.crash(CrashMode::DropUnsynced);
    protocol
        .check(&image, result.is_ok())
        .unwrap_or_else(|e| panic!("{context}, then power loss after the follow-up: {e}"));
    figures.states += 2;
    drop(handle);
}

// ---------------------------------------------------------------------------------------------
// Logs: records with payloads determined by their LSN
// ---------------------------------------------------------------------------------------------

/// What a log may hold after a crash.
#[derive(Debug, Clone)]
struct LogModel {
    /// Last LSN acknowledged durable.
    acked: Lsn,
    /// The LSNs the log may end at (each at least `acked`).
    ends: Vec<RangeInclusive<Lsn>>,
    /// Where the log may start.
    first: RangeInclusive<Lsn>,
}

impl LogModel {
    fn new(acked: Lsn) -> Self {
        Self {
            acked,
            ends: vec![acked..=acked],
            first: 1..=1,
        }
    }

    /// Appends one record durably if the log lets it.
    fn follow_up(&mut self, wal: &Wal) -> bool {
        let lsn = wal.written_lsn() + 1;
        match wal.append(kind(), &payload(lsn), Durability::Sync) {
            Ok(got) => {
                assert_eq!(got, lsn);
                self.acked = lsn;
                self.ends.push(lsn..=lsn);
                true
            }
            Err(_) => false,
        }
    }

    /// Checks an open log: starts and ends where allowed, and every record in between is the
    /// one written at its LSN (no gap, no phantom).
    fn check_records(&self, wal: &Wal) -> Result<(), String> {
        let (first, end) = (wal.first_lsn(), wal.written_lsn());
        if !self.first.contains(&first) {
            return Err(format!(
                "the log starts at {first}, not in {:?}",
                self.first
            ));
        }
        if end < self.acked {
            return Err(format!(
                "acknowledged LSNs {}..={} lost",
                end + 1,
                self.acked
            ));
        }
        if !self.ends.iter().any(|r| r.contains(&end)) {
            return Err(format!("the log ends at {end}, not in {:?}", self.ends));
        }
        for lsn in first..=end {
            let record = wal
                .read(lsn)
                .map_err(|e| format!("LSN {lsn}: {e}"))?
                .ok_or_else(|| format!("LSN {lsn} missing (a gap)"))?;
            if *record.payload != payload(lsn)[..] || record.kind != kind() {
                return Err(format!("LSN {lsn} holds other bytes (a phantom)"));
            }
        }
        if wal.read(end + 1).map_err(|e| e.to_string())?.is_some() {
            return Err(format!("a record past the end {end}"));
        }
        Ok(())
    }

    fn check(&self, image: &SimFs) -> Result<(), String> {
        let wal = Wal::open(DIR, sim_options(image)).map_err(|e| format!("open: {e}"))?;
        self.check_records(&wal)
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Segment roll
// ---------------------------------------------------------------------------------------------

struct SegmentRoll {
    log: LogModel,
}

impl Protocol for SegmentRoll {
    type Handle = Wal;

    fn setup(&mut self, fs: &SimFs) -> Wal {
        let wal = Wal::open(DIR, sim_options(fs)).unwrap();
        append(&wal, 10);
        self.log = LogModel::new(10);
        wal
    }

    fn run(&mut self, wal: &Wal) -> Result<(), String> {
        for _ in 0..120 {
            let lsn = wal.written_lsn() + 1;
            // Attempted: the record may be on disk whatever the call returns.
            let start = *self.log.ends[0].start();
            self.log.ends[0] = start..=lsn;
            let got = wal
                .append(kind(), &payload(lsn), Durability::Sync)
                .map_err(|e| e.to_string())?;
            assert_eq!(got, lsn);
            self.log.acked = lsn;
        }
        Ok(())
    }

    fn follow_up(&mut self, wal: &Wal) -> bool {
        self.log.follow_up(wal)
    }

    fn check(&self, image: &SimFs, _finished: bool) -> Result<(), String> {
        self.log.check(image)
    }
}

#[test]
fn a_crash_or_io_error_at_any_step_of_segment_rolls_keeps_every_acknowledged_record() {
    let mut protocol = SegmentRoll {
        log: LogModel::new(0),
    };
    let figures = explore("segment roll", &mut protocol);
    assert!(figures.faults >= 400, "{figures:?}");
    assert!(figures.states >= 1900, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Group commit of a batch
// ---------------------------------------------------------------------------------------------

const BATCH_BASE: Lsn = 25;
const BATCH_LEN: u64 = 20;

struct GroupCommit {
    log: LogModel,
}

impl Protocol for GroupCommit {
    type Handle = Wal;

    fn setup(&mut self, fs: &SimFs) -> Wal {
        let wal = Wal::open(DIR, sim_options(fs)).unwrap();
        append(&wal, BATCH_BASE);
        self.log = LogModel::new(BATCH_BASE);
        wal
    }

    fn run(&mut self, wal: &Wal) -> Result<(), String> {
        let payloads: Vec<Vec<u8>> = (BATCH_BASE + 1..=BATCH_BASE + BATCH_LEN)
            .map(payload)
            .collect();
        let entries: Vec<Entry<'_>> = payloads
            .iter()
            .map(|p| Entry {
                kind: kind(),
                payload: p,
            })
            .collect();
        // All or nothing: the log ends before the batch or after it, never inside.
        let end = BATCH_BASE + BATCH_LEN;
        self.log.ends.push(end..=end);
        let range = wal
            .append_batch(&entries, Durability::Sync)
            .map_err(|e| e.to_string())?;
        assert_eq!((range.first, range.last), (BATCH_BASE + 1, end));
        self.log.acked = end;
        Ok(())
    }

    fn follow_up(&mut self, wal: &Wal) -> bool {
        self.log.follow_up(wal)
    }

    fn check(&self, image: &SimFs, _finished: bool) -> Result<(), String> {
        self.log.check(image)
    }
}

#[test]
fn a_batch_committed_as_a_group_survives_a_crash_whole_or_not_at_all() {
    let mut protocol = GroupCommit {
        log: LogModel::new(0),
    };
    let figures = explore("group commit", &mut protocol);
    assert!(figures.faults >= 14, "{figures:?}");
    assert!(figures.states >= 60, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------
// 6. Retention deletion
// ---------------------------------------------------------------------------------------------

const RETAINED_LAST: Lsn = 200;
const RETAIN_FROM: Lsn = 170;

struct Retention {
    log: LogModel,
    /// Where the log starts after a finished removal (learnt from the fault-free run).
    first_after: Option<Lsn>,
}

impl Protocol for Retention {
    type Handle = Wal;

    fn setup(&mut self, fs: &SimFs) -> Wal {
        let wal = Wal::open(DIR, sim_options(fs)).unwrap();
        append(&wal, RETAINED_LAST);
        self.log = LogModel::new(RETAINED_LAST);
        wal
    }

    fn run(&mut self, wal: &Wal) -> Result<(), String> {
        let first = *self.first_after.get_or_insert_with(|| {
            // The fault-free run: where whole segments below RETAIN_FROM end.
            wal.segment_extents()
                .iter()
                .map(|&(lsn, _)| lsn)
                .take_while(|&lsn| lsn <= RETAIN_FROM)
                .last()
                .unwrap()
        });
        self.log.first = 1..=first;
        let removed = wal.remove_before(RETAIN_FROM).map_err(|e| e.to_string())?;
        assert!(removed >= 2, "only {removed} segments removed");
        assert_eq!(wal.first_lsn(), first);
        Ok(())
    }

    /// Appends that fill new segments, then retention again up to near the end: it must
    /// remove, in order, whatever a failed call left on disk, so the log never gets a gap
    /// behind the durable removal of a newer segment.
    fn follow_up(&mut self, wal: &Wal) -> bool {
        let mut acknowledged = true;
        for _ in 0..60 {
            acknowledged &= self.log.follow_up(wal);
        }
        if acknowledged && wal.remove_before(wal.written_lsn() - 5).is_ok() {
            self.log.first = 1..=wal.first_lsn();
        }
        acknowledged
    }

    fn check(&self, image: &SimFs, finished: bool) -> Result<(), String> {
        let mut log = self.log.clone();
        if finished {
            // A finished removal is durable.
            let first = *log.first.end();
            log.first = first..=first;
        }
        log.check(image)
    }
}

#[test]
fn a_crash_during_retention_leaves_a_log_that_starts_later_without_a_gap() {
    let mut protocol = Retention {
        log: LogModel::new(0),
        first_after: None,
    };
    let figures = explore("retention", &mut protocol);
    assert!(figures.faults >= 7, "{figures:?}");
    assert!(figures.states >= 40, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------
// 5. Epoch history update
// ---------------------------------------------------------------------------------------------

const EPOCH_BASE: Lsn = 30;

/// The histories the protocol goes through, in order.
fn epoch_histories() -> [EpochHistory; 3] {
    [
        EpochHistory::initial(),
        history(&[(1, 1), (2, EPOCH_BASE + 1)]),
        history(&[(1, 1), (2, EPOCH_BASE + 1), (3, 1000)]),
    ]
}

struct Epochs {
    log: LogModel,
    /// Index in `epoch_histories` of the last history acknowledged, and of the last tried.
    history_acked: usize,
    history_tried: usize,
}

impl Epochs {
    fn append(&mut self, wal: &Wal, count: u64) -> Result<(), String> {
        for _ in 0..count {
            let lsn = wal.written_lsn() + 1;
            let start = *self.log.ends[0].start();
            self.log.ends[0] = start..=lsn;
            wal.append(kind(), &payload(lsn), Durability::Sync)
                .map_err(|e| e.to_string())?;
            self.log.acked = lsn;
        }
        Ok(())
    }
}

impl Protocol for Epochs {
    type Handle = Wal;

    fn setup(&mut self, fs: &SimFs) -> Wal {
        let wal = Wal::open(DIR, sim_options(fs)).unwrap();
        append(&wal, EPOCH_BASE);
        self.log = LogModel::new(EPOCH_BASE);
        self.history_acked = 0;
        self.history_tried = 0;
        wal
    }

    fn run(&mut self, wal: &Wal) -> Result<(), String> {
        let histories = epoch_histories();
        self.history_tried = 1;
        let start = wal.begin_epoch(2).map_err(|e| e.to_string())?;
        assert_eq!(start, EPOCH_BASE + 1);
        self.history_acked = 1;
        self.append(wal, 5)?;
        self.history_tried = 2;
        wal.adopt_history(&histories[2])
            .map_err(|e| e.to_string())?;
        self.history_acked = 2;
        self.append(wal, 5)
    }

    fn follow_up(&mut self, wal: &Wal) -> bool {
        self.log.follow_up(wal)
    }

    fn check(&self, image: &SimFs, _finished: bool) -> Result<(), String> {
        let wal = Wal::open(DIR, sim_options(image)).map_err(|e| format!("open: {e}"))?;
        self.log.check_records(&wal)?;
        let found = wal.epoch_history();
        let histories = epoch_histories();
        let at = histories
            .iter()
            .position(|h| *h == found)
            .ok_or_else(|| format!("a torn or unknown history {found:?}"))?;
        if !(self.history_acked..=self.history_tried).contains(&at) {
            return Err(format!(
                "history #{at} after acknowledging #{} and trying #{}",
                self.history_acked, self.history_tried
            ));
        }
        for lsn in wal.first_lsn()..=wal.written_lsn() {
            let epoch = wal.read(lsn).unwrap().unwrap().epoch;
            if epoch != found.epoch_at(lsn) {
                return Err(format!(
                    "LSN {lsn} of epoch {epoch} under history {found:?}"
                ));
            }
        }
        Ok(())
    }
}

#[test]
fn a_crash_during_an_epoch_change_leaves_the_old_or_the_new_history_never_a_torn_one() {
    let mut protocol = Epochs {
        log: LogModel::new(0),
        history_acked: 0,
        history_tried: 0,
    };
    let figures = explore("epoch history", &mut protocol);
    assert!(figures.faults >= 50, "{figures:?}");
    assert!(figures.states >= 250, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------
// Stores: a model of acknowledged keys
// ---------------------------------------------------------------------------------------------

fn db_options(fs: &SimFs) -> DbOptions {
    let mut options = sim_db_options(fs);
    // Deletes are dropped by compaction as soon as possible: the case where a crash could
    // bring a deleted key back.
    options.compaction.tombstone_horizon_lsns = 0;
    options
}

fn value(key: u32, round: u32) -> Vec<u8> {
    format!("value of {key} in round {round} ")
        .repeat(3)
        .into_bytes()
}

fn key(key: u32) -> Vec<u8> {
    format!("key{key:03}").into_bytes()
}

/// What a store may hold: each key's acknowledged value (`None`: deleted or never written) and
/// the values of writes that failed (they may or may not be there).
#[derive(Debug, Default, Clone)]
struct KvModel {
    acked: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    maybe: BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>>,
}

impl KvModel {
    fn put(&mut self, db: &Db, k: &[u8], v: &[u8]) -> bool {
        match db.put(k, v) {
            Ok(_) => {
                self.acked.insert(k.to_vec(), Some(v.to_vec()));
                self.maybe.remove(k);
                true
            }
            Err(_) => {
                self.maybe
                    .entry(k.to_vec())
                    .or_default()
                    .push(Some(v.to_vec()));
                false
            }
        }
    }

    fn delete(&mut self, db: &Db, k: &[u8]) {
        db.delete(k).unwrap();
        self.acked.insert(k.to_vec(), None);
    }

    /// Overwrites, deletes and fills: several sealed segments with dead records.
    fn fill(&mut self, db: &Db) {
        for round in 0..3 {
            for k in 0..40 {
                self.put(db, &key(k), &value(k, round));
            }
        }
        for k in (0..40).step_by(3) {
            self.delete(db, &key(k));
        }
        for k in 100..130 {
            self.put(db, &key(k), &value(k, 0));
        }
    }

    fn check(&self, db: &Db) -> Result<(), String> {
        for (k, acked) in &self.acked {
            let got = db.get(k).map_err(|e| e.to_string())?.map(|v| v.to_vec());
            let allowed = got == *acked || self.maybe.get(k).is_some_and(|m| m.contains(&got));
            if !allowed {
                let what = match (acked, &got) {
                    (None, Some(_)) => "a deleted key came back",
                    (Some(_), None) => "an acknowledged put was lost",
                    _ => "another value",
                };
                return Err(format!(
                    "{}: {what}: {:?}",
                    String::from_utf8_lossy(k),
                    got.map(|v| String::from_utf8_lossy(&v).into_owned())
                ));
            }
        }
        for k in db.keys_from(Bound::Unbounded, usize::MAX) {
            if !self.acked.contains_key(&*k) && !self.maybe.contains_key(&*k) {
                return Err(format!("phantom key {}", String::from_utf8_lossy(&k)));
            }
        }
        Ok(())
    }

    fn open(image: &SimFs) -> Result<Db, String> {
        Db::open(DIR, db_options(image)).map_err(|e| format!("open: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Compaction swap
// ---------------------------------------------------------------------------------------------

struct Compaction {
    kv: KvModel,
}

impl Protocol for Compaction {
    type Handle = Db;

    fn setup(&mut self, fs: &SimFs) -> Db {
        let db = Db::open(DIR, db_options(fs)).unwrap();
        self.kv = KvModel::default();
        self.kv.fill(&db);
        // A checkpoint that compaction must take away before it moves records.
        db.checkpoint().unwrap();
        self.kv.put(&db, &key(200), &value(200, 0));
        db
    }

    fn run(&mut self, db: &Db) -> Result<(), String> {
        let stats = db.compact().map_err(|e| e.to_string())?;
        assert!(stats.segments_in >= 2, "{stats:?}");
        Ok(())
    }

    fn follow_up(&mut self, db: &Db) -> bool {
        self.kv.put(db, &key(300), &value(300, 0))
    }

    fn check(&self, image: &SimFs, _finished: bool) -> Result<(), String> {
        self.kv.check(&KvModel::open(image)?)
    }
}

#[test]
fn a_crash_during_compaction_keeps_live_data_and_never_resurrects_a_deleted_key() {
    let mut protocol = Compaction {
        kv: KvModel::default(),
    };
    let figures = explore("compaction swap", &mut protocol);
    assert!(figures.faults >= 30, "{figures:?}");
    assert!(figures.states >= 160, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Index checkpoint write
// ---------------------------------------------------------------------------------------------

struct Checkpoint {
    kv: KvModel,
}

impl Protocol for Checkpoint {
    type Handle = Db;

    fn setup(&mut self, fs: &SimFs) -> Db {
        let db = Db::open(DIR, db_options(fs)).unwrap();
        self.kv = KvModel::default();
        self.kv.fill(&db);
        // An older checkpoint the new one replaces; the writes after it are in the log only.
        db.checkpoint().unwrap();
        for k in 0..20 {
            self.kv.put(&db, &key(k), &value(k, 9));
        }
        self.kv.delete(&db, &key(1));
        self.kv.delete(&db, &key(2));
        db
    }

    fn run(&mut self, db: &Db) -> Result<(), String> {
        db.checkpoint().map(|_| ()).map_err(|e| e.to_string())
    }

    fn follow_up(&mut self, db: &Db) -> bool {
        self.kv.put(db, &key(300), &value(300, 0))
    }

    fn check(&self, image: &SimFs, finished: bool) -> Result<(), String> {
        let db = KvModel::open(image)?;
        if finished && !matches!(db.checkpoint_status(), CheckpointStatus::Loaded { .. }) {
            return Err(format!(
                "a finished checkpoint was not used: {:?}",
                db.checkpoint_status()
            ));
        }
        self.kv.check(&db)
    }
}

#[test]
fn a_crash_during_a_checkpoint_write_leaves_the_same_state_with_or_without_it() {
    let mut protocol = Checkpoint {
        kv: KvModel::default(),
    };
    let figures = explore("index checkpoint", &mut protocol);
    assert!(figures.faults >= 8, "{figures:?}");
    assert!(figures.states >= 50, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. Restore in place from a snapshot (a replica's bootstrap): marker, reset, base, unmark
// ---------------------------------------------------------------------------------------------

/// A snapshot of a store of 100 keys, and those keys.
fn snapshot() -> &'static (Vec<u8>, KvModel) {
    static SNAPSHOT: std::sync::OnceLock<(Vec<u8>, KvModel)> = std::sync::OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let fs = SimFs::new();
        let source = Db::open("/source", db_options(&fs)).unwrap();
        let mut model = KvModel::default();
        for k in 500..600 {
            model.put(&source, &key(k), &value(k, 1));
        }
        let mut bytes = Vec::new();
        write_snapshot(&source.freeze().unwrap(), &mut bytes, 1, &mut |_| {}).unwrap();
        (bytes, model)
    })
}

struct Restore {
    /// The store's state before the restore.
    old: KvModel,
    /// Steps acknowledged: 1 = marked (`begin_restore`), 3 = finished.
    acked_steps: u32,
}

impl Protocol for Restore {
    type Handle = Db;

    fn setup(&mut self, fs: &SimFs) -> Db {
        let db = Db::open(DIR, db_options(fs)).unwrap();
        self.old = KvModel::default();
        for k in 0..20 {
            self.old.put(&db, &key(k), &value(k, 0));
        }
        self.old.delete(&db, &key(3));
        self.acked_steps = 0;
        db
    }

    fn run(&mut self, db: &Db) -> Result<(), String> {
        db.begin_restore().map_err(|e| e.to_string())?;
        self.acked_steps = 1;
        let mut source = &snapshot().0[..];
        install_base(db.wal(), &mut source, &mut |_| {}).map_err(|e| e.to_string())?;
        self.acked_steps = 2;
        db.finish_restore().map_err(|e| e.to_string())?;
        self.acked_steps = 3;
        Ok(())
    }

    /// A store under restore takes no writes of its own (a replica's come from its primary):
    /// nothing to try.
    fn follow_up(&mut self, _db: &Db) -> bool {
        true
    }

    fn check(&self, image: &SimFs, finished: bool) -> Result<(), String> {
        let db = KvModel::open(image)?;
        let restored = snapshot().1.check(&db).is_ok() && db.len() == 100;
        if finished || self.acked_steps == 3 {
            return if restored && !db.restoring() {
                Ok(())
            } else {
                Err("a finished restore is not what the store holds".into())
            };
        }
        if db.restoring() {
            // Marked: nothing of a partial base, nor of the old state, is served.
            return if db.is_empty() {
                Ok(())
            } else {
                Err(format!("a store under restore serves {} keys", db.len()))
            };
        }
        if restored {
            return Ok(());
        }
        if self.acked_steps >= 1 {
            return Err("the old state came back after the restore was marked".into());
        }
        self.old.check(&db)
    }
}

#[test]
fn a_crash_during_a_restore_in_place_leaves_the_old_state_an_empty_marked_store_or_the_new_one() {
    let mut protocol = Restore {
        old: KvModel::default(),
        acked_steps: 0,
    };
    let figures = explore("restore in place", &mut protocol);
    assert!(figures.faults >= 50, "{figures:?}");
    assert!(figures.states >= 250, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------
// 8. Snapshot file creation: temporary file, write, fsync, rename, directory sync
// ---------------------------------------------------------------------------------------------

const SNAPSHOT_PATH: &str = "/backups/store.snapshot";

/// Keys and values, in key order.
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// The keys and values of a snapshot file in `image`, if a whole and valid one is at `path`;
/// `Ok(None)` if there is no file; an error for a file that is there but damaged.
fn snapshot_in(image: &SimFs, path: &str) -> Result<Option<Entries>, String> {
    use shiplog::io::FileSystem;
    let Ok(file) = image.open(path.as_ref(), false) else {
        return Ok(None);
    };
    let mut bytes = vec![0; file.size_bytes().unwrap() as usize];
    file.read_exact_at(&mut bytes, 0).unwrap();
    let mut entries = BTreeMap::new();
    read_snapshot(
        &mut &bytes[..],
        &mut |_, entry| {
            entries.insert(entry.key.to_vec(), entry.value.to_vec());
            Ok(())
        },
        &mut |_| {},
    )
    .map_err(|e| format!("{path} is there but not a whole snapshot: {e}"))?;
    Ok(Some(entries))
}

struct SnapshotCreate {
    kv: KvModel,
    /// What the snapshot must hold: the acknowledged state when it was frozen.
    frozen: Entries,
}

impl Protocol for SnapshotCreate {
    type Handle = (Db, SimFs);

    fn setup(&mut self, fs: &SimFs) -> (Db, SimFs) {
        let db = Db::open(DIR, db_options(fs)).unwrap();
        self.kv = KvModel::default();
        self.kv.fill(&db);
        self.frozen = self
            .kv
            .acked
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        (db, fs.clone())
    }

    fn run(&mut self, (db, fs): &(Db, SimFs)) -> Result<(), String> {
        let frozen = db.freeze().map_err(|e| e.to_string())?;
        create_snapshot_file_in(fs, &frozen, SNAPSHOT_PATH.as_ref(), 1, &mut |_| {})
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The store goes on taking writes whatever happened to the snapshot.
    fn follow_up(&mut self, (db, _): &(Db, SimFs)) -> bool {
        self.kv.put(db, &key(300), &value(300, 0))
    }

    fn check(&self, image: &SimFs, finished: bool) -> Result<(), String> {
        self.kv.check(&KvModel::open(image)?)?;
        match snapshot_in(image, SNAPSHOT_PATH)? {
            Some(entries) if entries != self.frozen => Err(format!(
                "the snapshot holds {} keys, not the {} frozen",
                entries.len(),
                self.frozen.len()
            )),
            Some(_) => Ok(()),
            None if finished => Err("a snapshot reported written is not there".into()),
            None => Ok(()),
        }
    }
}

#[test]
fn a_crash_while_a_snapshot_file_is_written_leaves_no_file_or_a_whole_one() {
    let mut protocol = SnapshotCreate {
        kv: KvModel::default(),
        frozen: BTreeMap::new(),
    };
    let figures = explore("snapshot file creation", &mut protocol);
    assert!(figures.faults >= 5, "{figures:?}");
    assert!(figures.states >= 30, "{figures:?}");
}

/// A snapshot written under a bare file name (as `shiplog snapshot create --out x.shsnap`)
/// syncs the current directory, so its name survives a power loss.
#[test]
fn a_snapshot_created_under_a_bare_file_name_survives_a_power_loss() {
    let fs = SimFs::new();
    let db = Db::open(DIR, db_options(&fs)).unwrap();
    let mut kv = KvModel::default();
    kv.fill(&db);
    let frozen = db.freeze().unwrap();
    create_snapshot_file_in(&fs, &frozen, "bare.snapshot".as_ref(), 1, &mut |_| {}).unwrap();
    let image = fs.crash(CrashMode::DropUnsynced);
    let entries = snapshot_in(&image, "bare.snapshot")
        .unwrap()
        .expect("the snapshot's name was lost");
    assert_eq!(entries.len(), db.len());
}

// ---------------------------------------------------------------------------------------------
// 9. Restore of a snapshot file into a new directory: a temporary directory beside the target,
//    its log written and synced, then renamed into place and the parent synced
// ---------------------------------------------------------------------------------------------

const RESTORED: &str = "/stores/restored";

/// The snapshot of `snapshot()` as a file on the real file system (the restore reads its
/// source from there).
fn snapshot_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("source.snapshot"), &snapshot().0).unwrap();
        dir
    });
    Box::leak(dir.path().join("source.snapshot").into_boxed_path())
}

struct DirectoryRestore {
    /// Whether a restore has returned `Ok`.
    acked: bool,
}

impl DirectoryRestore {
    fn restore(fs: &SimFs) -> Result<(), String> {
        restore_snapshot_with(
            snapshot_file(),
            RESTORED.as_ref(),
            sim_options(fs),
            &mut |_| {},
        )
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

impl Protocol for DirectoryRestore {
    type Handle = SimFs;

    fn setup(&mut self, fs: &SimFs) -> SimFs {
        self.acked = false;
        fs.clone()
    }

    fn run(&mut self, fs: &SimFs) -> Result<(), String> {
        Self::restore(fs)?;
        self.acked = true;
        Ok(())
    }

    /// A failed restore is tried again once the disk works: it must clear what the failed
    /// one left and succeed.
    fn follow_up(&mut self, fs: &SimFs) -> bool {
        if !self.acked {
            Self::restore(fs).unwrap_or_else(|e| panic!("a retried restore failed: {e}"));
            self.acked = true;
        }
        true
    }

    fn check(&self, image: &SimFs, finished: bool) -> Result<(), String> {
        use shiplog::io::FileSystem;
        let present = !image.entries(RESTORED.as_ref()).unwrap().is_empty();
        if !present {
            return if finished || self.acked {
                Err("a finished restore is not there".into())
            } else {
                Ok(())
            };
        }
        // Whatever is at the target is the whole snapshot, never a part of it.
        let db = Db::open(RESTORED, db_options(image)).map_err(|e| format!("open: {e}"))?;
        snapshot().1.check(&db)?;
        if db.len() != 100 {
            return Err(format!(
                "the restored store holds {} keys, not 100",
                db.len()
            ));
        }
        Ok(())
    }
}

#[test]
fn a_crash_during_a_restore_into_a_new_directory_leaves_nothing_or_the_whole_snapshot() {
    let mut protocol = DirectoryRestore { acked: false };
    let figures = explore("restore into a new directory", &mut protocol);
    assert!(figures.faults >= 20, "{figures:?}");
    assert!(figures.states >= 100, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------
// 10. A replica receiving the shipped log: its empty first segment replaced by the primary's,
//     records written at the primary's offsets and synced batch by batch, segments created
//     with the primary's headers, and a compacted segment written under a temporary name,
//     synced, renamed into place and the directory synced
// ---------------------------------------------------------------------------------------------

/// Bytes per shipped chunk: small, so batches and records span chunks.
const SHIP_CHUNK: usize = 700;

/// The primary's log: `payload(lsn)` records over several segments, the second and third
/// compacted to every third record.
fn shipping_primary() -> Wal {
    let fs = SimFs::new();
    let primary = Wal::open("/primary", sim_options(&fs)).unwrap();
    append(&primary, 150);
    let sealed = primary.sealed_segments();
    assert!(sealed.len() >= 4, "{} sealed segments", sealed.len());
    primary
        .compact_range(
            sealed[1].first_lsn,
            sealed[2].last_lsn,
            |r| r.lsn % 3 == 0,
            0,
        )
        .unwrap();
    primary
}

struct ReplicaReceive {
    primary: Wal,
    /// What the primary holds at each LSN (`None`: dropped by its compaction).
    expected: Vec<Option<Vec<u8>>>,
    /// Last LSN the replica acknowledged durable, as it reports it to the primary.
    acked: Lsn,
    /// The last LSN offered to the replica: it may hold anything up to it.
    offered: Lsn,
}

impl ReplicaReceive {
    fn new() -> Self {
        let primary = shipping_primary();
        let expected = (0..=primary.durable_lsn())
            .map(|lsn| {
                (lsn > 0)
                    .then(|| primary.read(lsn).unwrap().map(|r| r.payload.to_vec()))
                    .flatten()
            })
            .collect();
        Self {
            primary,
            expected,
            acked: 0,
            offered: 0,
        }
    }

    /// Ships `chunks` chunks (all of the log for `None`) from where `replica` has written to,
    /// as a new session does, acknowledging each batch once it is durable.
    fn ship(&mut self, replica: &Wal, chunks: Option<usize>) -> Result<(), String> {
        let err = |e: shiplog::wal::WalError| e.to_string();
        let mut receiver = shiplog::repl::Receiver::new(1 << 20);
        let mut position = self
            .primary
            .ship_position_after(replica.written_lsn())
            .map_err(err)?;
        let mut shipped = 0;
        while chunks.is_none_or(|n| shipped < n) {
            let Some(chunk) = self
                .primary
                .ship_chunk(&position, SHIP_CHUNK)
                .map_err(err)?
            else {
                break;
            };
            self.offered = self.offered.max(chunk.last_lsn);
            deliver(replica, &mut receiver, &chunk).map_err(err)?;
            // A compacted segment is durable once installed, without a wait.
            self.acked = self.acked.max(replica.durable_lsn());
            position = chunk.next;
            shipped += 1;
        }
        Ok(())
    }
}

impl Protocol for ReplicaReceive {
    type Handle = Wal;

    fn setup(&mut self, fs: &SimFs) -> Wal {
        self.acked = 0;
        self.offered = 0;
        Wal::open(DIR, sim_options(fs)).unwrap()
    }

    fn run(&mut self, replica: &Wal) -> Result<(), String> {
        self.ship(replica, None)?;
        assert_eq!(self.acked, self.primary.durable_lsn());
        Ok(())
    }

    /// The replica's next session: one more chunk, if its log still takes writes.
    fn follow_up(&mut self, replica: &Wal) -> bool {
        let before = self.acked;
        if self.acked == self.primary.durable_lsn() {
            return true;
        }
        self.ship(replica, Some(4)).is_ok() && self.acked > before
    }

    fn check(&self, image: &SimFs, _finished: bool) -> Result<(), String> {
        let replica = Wal::open(DIR, sim_options(image)).map_err(|e| format!("open: {e}"))?;
        let end = replica.written_lsn();
        if end < self.acked {
            return Err(format!(
                "acknowledged LSNs {}..={} lost",
                end + 1,
                self.acked
            ));
        }
        if end > self.offered {
            return Err(format!(
                "the replica ends at {end}, past the {} it was offered",
                self.offered
            ));
        }
        for lsn in 1..=end {
            let got = replica
                .read(lsn)
                .map_err(|e| format!("LSN {lsn}: {e}"))?
                .map(|r| r.payload.to_vec());
            if got != self.expected[lsn as usize] {
                return Err(format!(
                    "LSN {lsn}: the replica holds {:?} bytes, the primary {:?}",
                    got.map(|p| p.len()),
                    self.expected[lsn as usize].as_ref().map(Vec::len)
                ));
            }
        }
        if replica.read(end + 1).map_err(|e| e.to_string())?.is_some() {
            return Err(format!("a record past the end {end}"));
        }
        Ok(())
    }
}

#[test]
fn a_crash_while_a_replica_receives_the_log_keeps_what_it_acknowledged_and_only_the_primarys_bytes()
{
    let mut protocol = ReplicaReceive::new();
    let figures = explore("replica receiving", &mut protocol);
    assert!(figures.faults >= 100, "{figures:?}");
    assert!(figures.states >= 500, "{figures:?}");
}

// ---------------------------------------------------------------------------------------------
// 11. A small file replaced whole (`io::replace_file`, as the server keeps its retention slots
//     and replica id): a leftover temporary removed, the new bytes written and synced under
//     the temporary name, renamed over the file, the directory synced
// ---------------------------------------------------------------------------------------------

const SLOTS: &str = "/data/replica-slots";

/// The slots file after `version` saves: one more replica each time, LSNs moving on.
fn slots_version(version: u64) -> Vec<u8> {
    use shiplog::format::slots::{Slot, encode_slots};
    let slots: Vec<Slot> = (0..version)
        .map(|i| Slot {
            replica_id: u128::from(i) << 64 | 0xfeed,
            lsn: 100 * version + i,
        })
        .collect();
    encode_slots(&slots).into_bytes()
}

struct WholeFileReplace {
    /// Whether the file exists before the run (the slots file), or is created by it (the
    /// replica-id file at first start).
    existing: bool,
    /// Saves acknowledged (the file holds this version or a later attempted one).
    acked: u64,
    /// Saves attempted.
    attempted: u64,
}

impl WholeFileReplace {
    fn save(&mut self, fs: &SimFs) -> Result<(), String> {
        self.attempted += 1;
        shiplog::io::replace_file(fs, SLOTS.as_ref(), &slots_version(self.attempted))
            .map_err(|e| e.to_string())?;
        self.acked = self.attempted;
        Ok(())
    }
}

impl Protocol for WholeFileReplace {
    type Handle = SimFs;

    fn setup(&mut self, fs: &SimFs) -> SimFs {
        use shiplog::io::FileSystem;
        fs.create_dir_all(DIR.as_ref()).unwrap();
        self.attempted = 0;
        self.acked = 0;
        if self.existing {
            self.save(fs).unwrap();
        }
        // A temporary file left by a save cut short before this run.
        let stale = fs
            .create(&shiplog::io::replacement_path(SLOTS.as_ref()))
            .unwrap();
        stale.write_all_at(b"half a save", 0).unwrap();
        fs.sync_dir(DIR.as_ref()).unwrap();
        fs.clone()
    }

    fn run(&mut self, fs: &SimFs) -> Result<(), String> {
        self.save(fs)?;
        self.save(fs)
    }

    /// The next save (the server saves again at its next tick while the table is dirty).
    fn follow_up(&mut self, fs: &SimFs) -> bool {
        self.save(fs).is_ok()
    }

    fn check(&self, image: &SimFs, _finished: bool) -> Result<(), String> {
        let Some(bytes) =
            shiplog::io::read_file(image, SLOTS.as_ref()).map_err(|e| e.to_string())?
        else {
            return if self.acked == 0 {
                Ok(())
            } else {
                Err("the file is gone".into())
            };
        };
        shiplog::format::slots::parse_slots(&bytes)
            .map_err(|e| format!("the slots file does not parse: {e}"))?;
        if (self.acked.max(1)..=self.attempted).any(|v| bytes == slots_version(v)) {
            Ok(())
        } else {
            Err(format!(
                "the slots file holds none of versions {}..={} ({} bytes)",
                self.acked,
                self.attempted,
                bytes.len()
            ))
        }
    }
}

#[test]
fn a_crash_while_a_small_file_is_created_or_replaced_leaves_the_old_bytes_or_the_new_ones() {
    for existing in [true, false] {
        let mut protocol = WholeFileReplace {
            existing,
            acked: 0,
            attempted: 0,
        };
        let name = if existing {
            "whole-file replace"
        } else {
            "whole-file creation"
        };
        let figures = explore(name, &mut protocol);
        assert!(figures.faults >= 14, "{figures:?}");
        assert!(figures.states >= 150, "{figures:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 12. The snapshot a primary builds for bootstrapping replicas (`SnapshotBuilds`): a newer
//     build replaces the current one, then the builds are opened again on the image
// ---------------------------------------------------------------------------------------------

const BUILD_LEVEL: i32 = 1;

struct ReplicaSnapshotBuild {
    kv: KvModel,
    /// The state of the build made in setup, and of the one the run makes.
    states: [Entries; 2],
    /// Whether the run's build returned `Ok`.
    acked: bool,
}

impl ReplicaSnapshotBuild {
    fn frozen(&self) -> Entries {
        self.kv
            .acked
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect()
    }

    fn builds(fs: &SimFs) -> Result<SnapshotBuilds, String> {
        SnapshotBuilds::open(Arc::new(fs.clone()), DIR.as_ref(), BUILD_LEVEL)
            .map_err(|e| format!("opening the snapshot builds: {e}"))
    }

    /// A build usable only if it holds everything written so far.
    fn get_or_build(builds: &SnapshotBuilds, db: &Db) -> Result<SnapshotFile, String> {
        let lsn = db.wal().durable_lsn();
        builds
            .get_or_build(db, &|file| file.header.lsn >= lsn)
            .map(|file| (*file).clone())
            .map_err(|e| e.to_string())
    }
}

impl Protocol for ReplicaSnapshotBuild {
    type Handle = (Db, SnapshotBuilds, SimFs);

    fn setup(&mut self, fs: &SimFs) -> (Db, SnapshotBuilds, SimFs) {
        use shiplog::io::FileSystem;
        let db = Db::open(DIR, db_options(fs)).unwrap();
        self.kv = KvModel::default();
        self.kv.fill(&db);
        let builds = Self::builds(fs).unwrap();
        Self::get_or_build(&builds, &db).unwrap();
        self.states[0] = self.frozen();
        for k in 200..220 {
            self.kv.put(&db, &key(k), &value(k, 0));
        }
        self.states[1] = self.frozen();
        self.acked = false;
        // An unfinished build of an earlier process, to be cleared at the next open.
        let snapshots = std::path::Path::new(DIR).join(SNAPSHOTS_DIR);
        let stale = fs.create(&snapshots.join(".stale.tmp-1")).unwrap();
        stale.write_all_at(b"half a snapshot", 0).unwrap();
        fs.sync_dir(&snapshots).unwrap();
        (db, builds, fs.clone())
    }

    fn run(&mut self, (db, builds, _): &(Db, SnapshotBuilds, SimFs)) -> Result<(), String> {
        let file = Self::get_or_build(builds, db)?;
        assert!(file.header.lsn >= db.wal().durable_lsn());
        self.acked = true;
        Ok(())
    }

    /// A replica asks again once the disk works: the build is made again if it failed.
    fn follow_up(&mut self, (db, builds, _): &(Db, SnapshotBuilds, SimFs)) -> bool {
        let ok = Self::get_or_build(builds, db).is_ok();
        self.acked |= ok;
        ok
    }

    fn check(&self, image: &SimFs, finished: bool) -> Result<(), String> {
        use shiplog::io::FileSystem;
        self.kv.check(&KvModel::open(image)?)?;
        let builds = Self::builds(image)?;
        let current = builds
            .current()
            .ok_or("the build made before the run is gone")?;
        let name = current.path.to_str().unwrap();
        let entries = snapshot_in(image, name)?.ok_or("the current build is not there")?;
        let which = self
            .states
            .iter()
            .position(|s| *s == entries)
            .ok_or_else(|| {
                format!(
                    "the current build holds {} keys, neither state",
                    entries.len()
                )
            })?;
        if (finished || self.acked) && which == 0 {
            return Err("a finished build is not the current one".into());
        }
        // Opening cleared the unfinished build and the replaced one.
        let snapshots = std::path::Path::new(DIR).join(SNAPSHOTS_DIR);
        let left = image.entries(&snapshots).map_err(|e| e.to_string())?;
        if left.len() != 1 {
            return Err(format!("the snapshots directory holds {left:?} after open"));
        }
        Ok(())
    }
}

#[test]
fn a_crash_while_a_primary_builds_a_snapshot_for_replicas_leaves_the_old_build_or_the_new_one() {
    let mut protocol = ReplicaSnapshotBuild {
        kv: KvModel::default(),
        states: [Entries::new(), Entries::new()],
        acked: false,
    };
    let figures = explore("snapshot build for replicas", &mut protocol);
    assert!(figures.faults >= 15, "{figures:?}");
    assert!(figures.states >= 80, "{figures:?}");
}
