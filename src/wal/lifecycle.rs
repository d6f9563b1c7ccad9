//! Opening and closing a log: recovery of the directory, the first segment of a new log, the
//! flusher thread, and the clean-close marker a final successful sync leaves behind.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::format::{Epoch, Lsn, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::io::FileSystem;

use super::error::{Result, WalError};
use super::preparer::SegmentPreparer;
use super::recovery::{self, Analysis};
use super::segment::Segment;
use super::writer::{GroupCommit, WriterState};
use super::{CLEAN_CLOSE_FILE, Options, Shared, Wal, epochs, random_u32, random_u64};

pub(super) fn open(dir: &Path, options: Options) -> Result<Wal> {
    options.validate()?;
    let dir = dir.to_owned();
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
        load(fs.as_ref(), &dir, &options, cluster_id, analysis)?;
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
    let flusher = spawn_flusher(&shared);
    let options = &shared.options;
    let preparer = options.prepare_next_segment.then(|| {
        SegmentPreparer::start(
            Arc::clone(&options.fs),
            shared.dir.clone(),
            options.segment_bytes,
            options.zero_fill_segments,
        )
    });
    Ok(Wal {
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

pub(super) fn shutdown(wal: &mut Wal) -> Result<()> {
    let poisoned = wal.shared.commit.lock().poisoned.is_some();
    let result = if poisoned { Ok(()) } else { wal.sync() };
    {
        let mut state = wal.shared.commit.lock();
        state.closed = true;
        wal.shared.commit.notify(&mut state);
    }
    wal.shared.stop_flusher.store(true, Ordering::Release);
    if let Some(flusher) = wal.flusher.take() {
        flusher.thread().unpark();
        let _ = flusher.join();
    }
    if let Some(mut preparer) = wal.preparer.take() {
        preparer.stop();
    }
    if !poisoned && result.is_ok() {
        mark_clean_close(wal);
    }
    result
}

/// Leaves `CLEAN_CLOSE_FILE` after a final sync that succeeded. Best effort: without it,
/// the next open only does more work.
fn mark_clean_close(wal: &Wal) {
    let fs = wal.shared.options.fs.as_ref();
    let path = wal.shared.dir.join(CLEAN_CLOSE_FILE);
    let marked = match fs.create(&path) {
        Ok(_) => fs.sync_dir(&wal.shared.dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = marked {
        tracing::warn!(file = %path.display(), error = %e, "could not mark the log closed cleanly; the next open writes its tail again");
    }
}
