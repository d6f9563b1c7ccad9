//! Group commit. Appenders encode their records into a shared queue under one lock; whoever
//! finds the queue unwritten takes the *write role* and writes it with one `pwrite` per segment,
//! and whoever needs durability while no sync runs takes the *sync role* and issues one
//! `fdatasync` for everything written so far. While a sync is in flight, the next batch is
//! already being queued and written, so throughput grows with the number of writers.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::format::{Epoch, Lsn};

use super::error::{Result, WalError};
use super::segment::Segment;
use crate::sync::{CondvarExt, MutexExt};

/// How durable a write must be before `append` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// On stable storage (`fdatasync` completed) before returning.
    #[default]
    Sync,
    /// Written to the OS before returning; a background thread syncs every few milliseconds.
    Buffered,
    /// Written to the OS before returning, with no durability promise (in this build the
    /// background flush still syncs it within about `flush_interval_ms`, like `Buffered`).
    None,
}

/// Bytes queued for one contiguous write into one segment.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    pub segment: Arc<Segment>,
    pub offset: u64,
    pub bytes: Vec<u8>,
    pub last_lsn: Lsn,
}

/// Everything appenders share, under [`GroupCommit::state`].
#[derive(Debug)]
pub(crate) struct WriterState {
    pub next_lsn: Lsn,
    pub epoch: Epoch,
    pub active: Arc<Segment>,
    /// Offset in `active` after the last queued record.
    pub active_end: u64,
    pub pending: Vec<PendingWrite>,
    pub writing: bool,
    pub syncing: bool,
    /// Segments written since the sync role last took the list.
    pub dirty: Vec<Arc<Segment>>,
    /// The last segment the write role wrote into.
    pub last_written_segment: Option<Arc<Segment>>,
    pub poisoned: Option<(&'static str, Arc<io::Error>)>,
    pub closed: bool,
    /// Appenders parked until their LSN is written or durable, or until a role is theirs.
    pub waiters: Vec<Waiter>,
    /// Threads chosen by `wake`, unparked once the lock is released.
    pub to_wake: Vec<Thread>,
}

impl WriterState {
    /// Whether the log still takes records: not poisoned by a failed write or sync, not
    /// closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        if let Some((op, source)) = &self.poisoned {
            return Err(WalError::Poisoned {
                op,
                source: Arc::clone(source),
            });
        }
        if self.closed {
            return Err(WalError::Closed);
        }
        Ok(())
    }
}

/// An appender parked in [`GroupCommit::complete`].
#[derive(Debug)]
pub(crate) struct Waiter {
    lsn: Lsn,
    durability: Durability,
    thread: Thread,
}

/// The group-commit engine: queue, roles and the LSN watermarks.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    pub state: Mutex<WriterState>,
    /// Signalled when the durable LSN moves, for `tail` readers (appenders are unparked one by
    /// one instead, see [`GroupCommit::wake`]).
    durable_changed: Condvar,
    /// Every LSN at or below this is in the OS page cache and visible through mappings.
    pub written_lsn: AtomicU64,
    /// Every LSN at or below this is on stable storage.
    pub durable_lsn: AtomicU64,
    /// Cuts of the log's end so far (see [`GroupCommit::cuts`]).
    cuts: AtomicU64,
    /// Number of `fdatasync` calls issued by the sync role.
    pub syncs: AtomicU64,
    /// Bytes handed to the OS by the write role.
    pub bytes_written: AtomicU64,
    /// Group-commit sizes: how many records each sync made durable, by power-of-two bucket
    /// (bucket `i` counts syncs that covered up to `2^i` records; the last one, more).
    pub records_per_sync: [AtomicU64; SYNC_SIZE_BUCKETS],
    /// Records made durable by the sync role (the sum of `records_per_sync`).
    pub records_synced: AtomicU64,
}

/// Buckets of [`GroupCommit::records_per_sync`]: 1, 2, 4, ... 2^14, and more.
pub const SYNC_SIZE_BUCKETS: usize = 16;

impl GroupCommit {
    pub fn new(state: WriterState, last_lsn: Lsn) -> Self {
        Self {
            state: Mutex::new(state),
            durable_changed: Condvar::new(),
            written_lsn: AtomicU64::new(last_lsn),
            durable_lsn: AtomicU64::new(last_lsn),
            cuts: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            records_per_sync: std::array::from_fn(|_| AtomicU64::new(0)),
            records_synced: AtomicU64::new(0),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.state.locked()
    }

    /// The writer state once no write or sync is in flight and nothing is queued (for the
    /// operations that replace segment files under the log: reset, rewind).
    pub fn lock_idle(&self) -> Result<MutexGuard<'_, WriterState>> {
        loop {
            let state = self.lock();
            state.check_open()?;
            if !state.writing && !state.syncing && state.pending.is_empty() {
                return Ok(state);
            }
            if !state.writing && !state.pending.is_empty() {
                // IMPORTANT: write the queue here instead of waiting for the appenders who
                // queued it: one may be blocked behind this caller (a rewind holds the index
                // lock, and an event loop that staged a write may block on a read of the
                // index before it commits), and nothing else writes a queue.
                let last = state.next_lsn - 1;
                self.complete(state, last, Durability::Buffered)?;
                continue;
            }
            drop(state);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// How many times records were cut from the log's end (rewind, reset). An LSN assigned
    /// before a cut may name another record after it, so a waiter compares this with the
    /// count it saw when its records were queued.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Acquire)
    }

    /// Counts a cut of the log's end and wakes every waiter, so each finds out its LSN may
    /// be gone (called under the state lock, once the log is idle and cut).
    pub(crate) fn mark_cut(&self, state: &mut WriterState) {
        self.cuts.fetch_add(1, Ordering::AcqRel);
        let waiters = state.waiters.drain(..).map(|w| w.thread);
        state.to_wake.extend(waiters);
        self.notify(state);
    }

    pub fn written(&self) -> Lsn {
        self.written_lsn.load(Ordering::Acquire)
    }

    pub fn durable(&self) -> Lsn {
        self.durable_lsn.load(Ordering::Acquire)
    }

    /// Drives the queue until `lsn` has reached `durability`, taking roles as needed.
    pub fn complete<'a>(
        &'a self,
        state: MutexGuard<'a, WriterState>,
        lsn: Lsn,
        durability: Durability,
    ) -> Result<()> {
        let cuts = self.cuts();
        self.complete_uncut(state, lsn, durability, cuts)
    }

    /// [`GroupCommit::complete`] for records queued when [`GroupCommit::cuts`] was `cuts`:
    /// fails with `Cut` once the log's end has been cut since, instead of waiting for (or
    /// taking for its own) whatever record takes `lsn` next.
    pub fn complete_uncut<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
        lsn: Lsn,
        durability: Durability,
        cuts: u64,
    ) -> Result<()> {
        loop {
            if self.cuts() != cuts {
                return Err(WalError::Cut { lsn });
            }
            if self.reached(lsn, durability) {
                return Ok(());
            }
            if let Some((op, source)) = &state.poisoned {
                return Err(WalError::Poisoned {
                    op,
                    source: Arc::clone(source),
                });
            }
            // While a sync is in flight, a `Sync` appender leaves its records queued: whoever
            // starts the next sync writes the whole queue with one `pwrite` first, instead of
            // every arriving appender making its own small write.
            let wait_for_sync = durability == Durability::Sync && state.syncing;
            if self.written() < lsn && !state.writing && !wait_for_sync {
                state = self.unpark_chosen(self.write_role(state));
            } else if durability == Durability::Sync && self.written() >= lsn && !state.syncing {
                state = self.unpark_chosen(self.sync_role(state));
            } else {
                let me = thread::current();
                let id = me.id();
                state.waiters.push(Waiter {
                    lsn,
                    durability,
                    thread: me,
                });
                drop(state);
                // Spurious wake-ups are fine: the loop re-checks everything.
                thread::park();
                // The waker already took this thread off the list: when the LSN got where it
                // had to, return without touching the lock the next batch is forming under.
                // In this order: a watermark set after a cut is seen with the cut's count.
                if self.reached(lsn, durability) && self.cuts() == cuts {
                    return Ok(());
                }
                state = self.lock();
                state.waiters.retain(|w| w.thread.id() != id);
            }
        }
    }

    /// Unparks the threads `wake` chose, outside the lock, so appenders can queue meanwhile.
    fn unpark_chosen<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
    ) -> MutexGuard<'a, WriterState> {
        if state.to_wake.is_empty() {
            return state;
        }
        let chosen = std::mem::take(&mut state.to_wake);
        drop(state);
        for thread in chosen {
            thread.unpark();
        }
        self.lock()
    }

    fn reached(&self, lsn: Lsn, durability: Durability) -> bool {
        match durability {
            // Both: an appender returns only once its record is readable too.
            Durability::Sync => self.durable() >= lsn && self.written() >= lsn,
            Durability::Buffered | Durability::None => self.written() >= lsn,
        }
    }

    /// Unparks exactly the appenders that can make progress: those whose LSN reached their
    /// durability, plus one to take each free role that has work. Waking only these (instead
    /// of every parked appender) keeps 64 writers on 2 cores from thrashing at every sync.
    fn wake(&self, state: &mut WriterState) {
        if state.poisoned.is_some() || state.closed {
            let woken = state.waiters.drain(..).map(|w| w.thread);
            state.to_wake.extend(woken);
            return;
        }
        let (written, durable) = (self.written(), self.durable());
        let syncing = state.syncing;
        let mut to_wake = std::mem::take(&mut state.to_wake);
        let mut need_writer = !state.writing && !state.pending.is_empty();
        let mut need_syncer = !state.syncing && written > durable;
        state.waiters.retain(|waiter| {
            let wake = if self.reached(waiter.lsn, waiter.durability) {
                true
            } else if need_writer
                && waiter.lsn > written
                && (waiter.durability != Durability::Sync || !syncing)
            {
                need_writer = false;
                true
            } else if need_syncer && waiter.durability == Durability::Sync && waiter.lsn <= written
            {
                need_syncer = false;
                true
            } else {
                false
            };
            if wake {
                to_wake.push(waiter.thread.clone());
            }
            !wake
        });
        state.to_wake = to_wake;
    }

    /// Makes everything written so far durable (used by the flusher thread and `sync`).
    pub fn sync_written(&self) -> Result<()> {
        let state = self.lock();
        let target = self.written();
        match self.complete(state, target, Durability::Sync) {
            // A cut leaves nothing unsynced (it syncs before it cuts): not a failure, which
            // would stop the flusher for good.
            Err(WalError::Cut { .. }) => Ok(()),
            done => done,
        }
    }

    /// Waits until the durable LSN exceeds `after`, the log closes, or `timeout` passes.
    pub fn wait_durable_past(&self, after: Lsn, timeout: Duration) -> Result<Lsn> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let durable = self.durable();
            if durable > after {
                return Ok(durable);
            }
            if let Some((op, source)) = &state.poisoned {
                return Err(WalError::Poisoned {
                    op,
                    source: Arc::clone(source),
                });
            }
            if state.closed {
                return Err(WalError::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(durable);
            }
            state = self
                .durable_changed
                .wait_timeout_locked(state, deadline - now)
                .0;
        }
    }

    pub fn notify(&self, state: &mut WriterState) {
        self.wake(state);
        // Callers of `notify` go on holding the lock: unpark now.
        for thread in state.to_wake.drain(..) {
            thread.unpark();
        }
        self.durable_changed.notify_all();
    }

    /// Stops the log after an error that left its files and its in-memory state out of step
    /// (a rewind or reset cut short): every later append and sync fails until the log is
    /// reopened from what is on disk.
    pub(crate) fn stop_after(&self, state: &mut WriterState, op: &'static str, error: &str) {
        if state.poisoned.is_none() {
            state.poisoned = Some((op, Arc::new(io::Error::other(error.to_owned()))));
        }
        self.notify(state);
    }

    fn poison<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
        op: &'static str,
        error: io::Error,
    ) -> MutexGuard<'a, WriterState> {
        // IMPORTANT: a failed write or fdatasync may have lost data the kernel already dropped
        // from its cache; retrying could report success for bytes that never reach the disk.
        // The instance stops here and recovers from what is on disk when reopened.
        if state.poisoned.is_none() {
            state.poisoned = Some((op, Arc::new(error)));
        }
        self.notify(&mut state);
        state
    }

    fn write_role<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
    ) -> MutexGuard<'a, WriterState> {
        debug_assert!(!state.writing, "one write role at a time");
        state.writing = true;
        let writes = std::mem::take(&mut state.pending);
        let mut previous = state.last_written_segment.clone();
        drop(state);
        let mut outcome = Ok(());
        let mut written = Vec::with_capacity(writes.len());
        let mut sealed_through = 0;
        for write in writes {
            if let Some(prev) = previous
                .as_ref()
                .filter(|p| !Arc::ptr_eq(p, &write.segment))
            {
                // IMPORTANT: a segment is sealed by making all of it durable before any record
                // reaches its successor, so recovery may treat damage in a sealed segment as
                // corruption rather than as a torn tail.
                if let Err(e) = prev.sync() {
                    outcome = Err(("fdatasync", e));
                    break;
                }
                self.syncs.fetch_add(1, Ordering::Relaxed);
                // Published below, after `written_lsn`: durable must never run ahead of
                // written, or a `Sync` appender could return before its record is readable.
                sealed_through = sealed_through.max(prev.last_lsn());
            }
            if let Err(e) = write.segment.file.write_all_at(&write.bytes, write.offset) {
                outcome = Err(("write", e));
                break;
            }
            write
                .segment
                .mark_written(write.offset + write.bytes.len() as u64);
            self.bytes_written
                .fetch_add(write.bytes.len() as u64, Ordering::Relaxed);
            previous = Some(Arc::clone(&write.segment));
            written.push((Arc::clone(&write.segment), write.last_lsn));
        }
        let mut state = self.lock();
        state.writing = false;
        for (segment, last_lsn) in written {
            if !state.dirty.last().is_some_and(|d| Arc::ptr_eq(d, &segment)) {
                state.dirty.push(Arc::clone(&segment));
            }
            state.last_written_segment = Some(segment);
            self.written_lsn.fetch_max(last_lsn, Ordering::AcqRel);
        }
        if sealed_through > 0 {
            debug_assert!(
                sealed_through <= self.written(),
                "sealed records are all written"
            );
            self.durable_lsn.fetch_max(sealed_through, Ordering::AcqRel);
            self.durable_changed.notify_all();
        }
        if let Err((op, e)) = outcome {
            return self.poison(state, op, e);
        }
        self.wake(&mut state);
        state
    }

    fn sync_role<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
    ) -> MutexGuard<'a, WriterState> {
        debug_assert!(!state.syncing, "one sync role at a time");
        state.syncing = true;
        let target = self.written();
        let files = std::mem::take(&mut state.dirty);
        drop(state);
        let mut outcome = Ok(());
        for segment in &files {
            if let Err(e) = segment.sync() {
                outcome = Err(e);
                break;
            }
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut state = self.lock();
        state.syncing = false;
        if let Err(e) = outcome {
            return self.poison(state, "fdatasync", e);
        }
        let before = self.durable_lsn.fetch_max(target, Ordering::AcqRel);
        if target > before {
            let records = target - before;
            let bucket = (64 - (records - 1).leading_zeros()) as usize;
            self.records_per_sync[bucket.min(SYNC_SIZE_BUCKETS - 1)]
                .fetch_add(1, Ordering::Relaxed);
            self.records_synced.fetch_add(records, Ordering::Relaxed);
        }
        self.wake(&mut state);
        self.durable_changed.notify_all();
        state
    }
}
