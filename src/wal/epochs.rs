//! The log's epoch history (`DIR/epoch-history`, parsed by `format::epochs`): which epoch
//! holds which LSNs. A promoted primary starts a new epoch with its next LSN (and a new
//! segment); a replica adopts its primary's history, which the primary ships at every
//! session's start; a rejoining node compares histories to find where it forked.

use std::path::Path;
use std::sync::Arc;

use crate::format::epochs::EpochHistory;
use crate::format::{Epoch, Lsn, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::io::FileSystem;

use super::error::{Result, WalError};
use super::segment::Segment;
use super::writer::{GroupCommit, WriterState};
use super::{Wal, append, random_u32};
use crate::sync::MutexExt;

/// Name of the epoch history file in the log's directory.
pub const EPOCH_HISTORY_FILE: &str = "epoch-history";
const EPOCH_HISTORY_TEMP: &str = "epoch-history.tmp";

/// Reads the history file; without one (a log from before epochs had a file), derives the
/// history from the segments' header epochs.
pub(super) fn load_history(
    fs: &dyn FileSystem,
    dir: &Path,
    segments: &[Arc<Segment>],
) -> Result<EpochHistory> {
    let path = dir.join(EPOCH_HISTORY_FILE);
    let names = fs.list(dir).map_err(|e| WalError::io("list", dir, e))?;
    if names.iter().any(|n| n == EPOCH_HISTORY_FILE) {
        let io = |op| {
            let path = &path;
            move |e| WalError::io(op, path, e)
        };
        let file = fs.open(&path, false).map_err(io("open"))?;
        let len = file.size_bytes().map_err(io("stat"))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= crate::format::epochs::EPOCHS_FILE_MAX_BYTES)
            .ok_or_else(|| WalError::BadEpochHistory {
                file: path.clone(),
                reason: format!("{len} bytes is too large for a history"),
            })?;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, 0).map_err(io("read"))?;
        return EpochHistory::parse(&bytes).map_err(|e| WalError::BadEpochHistory {
            file: path.clone(),
            reason: e.to_string(),
        });
    }
    let mut history = EpochHistory::initial();
    for segment in segments {
        let latest = history.latest();
        if segment.header.epoch > latest.epoch {
            let start = segment.first_lsn().max(latest.start_lsn);
            history = history.with(segment.header.epoch, start).map_err(|e| {
                WalError::BadEpochHistory {
                    file: path.clone(),
                    reason: format!("derived from the segments: {e}"),
                }
            })?;
        }
    }
    Ok(history)
}

/// How replacing the history file failed.
enum HistoryWriteError {
    /// Before the rename: the old history is still the file.
    Unchanged(WalError),
    /// At the rename or the directory sync: the new history may have taken the name (now, or
    /// at the next power loss), so the file and the log's memory may disagree.
    Uncertain(WalError),
}

/// Replaces the history file durably: temp file, sync, rename, directory sync.
fn write_history(
    fs: &dyn FileSystem,
    dir: &Path,
    history: &EpochHistory,
) -> std::result::Result<(), HistoryWriteError> {
    let temp = dir.join(EPOCH_HISTORY_TEMP);
    let path = dir.join(EPOCH_HISTORY_FILE);
    let io = |op, p: &Path| {
        let p = p.to_owned();
        move |e| HistoryWriteError::Unchanged(WalError::io(op, p, e))
    };
    let file = fs.create(&temp).map_err(io("create", &temp))?;
    file.write_all_at(history.encode().as_bytes(), 0)
        .map_err(io("write", &temp))?;
    // IMPORTANT: the new history is durable before it takes the name, and the name before
    // any record of a new epoch is written.
    file.sync_data().map_err(io("fdatasync", &temp))?;
    let uncertain = |op, p: &Path| {
        let p = p.to_owned();
        move |e| HistoryWriteError::Uncertain(WalError::io(op, p, e))
    };
    fs.rename(&temp, &path)
        .map_err(uncertain("rename", &temp))?;
    fs.sync_dir(dir).map_err(uncertain("fsync directory", dir))
}

impl HistoryWriteError {
    /// The error to return; an uncertain history also poisons the log.
    // IMPORTANT: once the rename may have happened, the history on disk may name an epoch the
    // log's memory does not. Records appended after that would carry the old epoch under the
    // new history (found by `tests/crash_states.rs`: a failed directory sync in `begin_epoch`,
    // then an append, left LSN 31 of epoch 1 under a history starting epoch 2 at 31). The log
    // stops, and reopening it reads whichever history the disk holds.
    fn settle(self, commit: &GroupCommit, state: &mut WriterState) -> WalError {
        match self {
            Self::Unchanged(error) => error,
            Self::Uncertain(error) => {
                if state.poisoned.is_none() {
                    let source = match &error {
                        WalError::Io { source, .. } => Arc::clone(source),
                        other => Arc::new(std::io::Error::other(other.to_string())),
                    };
                    state.poisoned = Some(("epoch history update", source));
                }
                commit.notify(state);
                error
            }
        }
    }
}

pub(super) fn begin_epoch(wal: &Wal, epoch: Epoch) -> Result<Lsn> {
    let _serial = wal.shared.retention.locked();
    let commit = &wal.shared.commit;
    let mut state = commit.lock();
    state.check_open()?;
    let mut history = wal.shared.history.locked();
    let highest = history.latest().epoch.max(state.epoch);
    if epoch <= highest {
        return Err(WalError::EpochOrder {
            epoch,
            reason: format!("this log already knows epoch {highest}"),
        });
    }
    let start = state.next_lsn;
    let next = history
        .with(epoch, start)
        .map_err(|e| WalError::EpochOrder {
            epoch,
            reason: e.to_string(),
        })?;
    let fs = wal.shared.options.fs.as_ref();
    write_history(fs, &wal.shared.dir, &next).map_err(|e| e.settle(commit, &mut state))?;
    *history = next;
    state.epoch = epoch;
    if state.active_end > SEGMENT_HEADER_BYTES as u64 || state.active.is_compacted() {
        append::rotate(wal, &mut state, 0)?;
    } else {
        // The active segment holds nothing: replace it (same name, atomically) by one of
        // the new epoch, so segment headers always name their records' epoch.
        let header = SegmentHeader {
            cluster_id: wal.shared.cluster_id(),
            first_lsn: start,
            epoch,
            salt: random_u32(),
            compacted_through: None,
        };
        let options = &wal.shared.options;
        let segment = Arc::new(Segment::create(
            fs,
            &wal.shared.dir,
            header,
            options.segment_bytes,
            options.zero_fill_segments,
        )?);
        {
            let mut segments = wal.shared.segments_mut();
            segments.pop();
            segments.push(Arc::clone(&segment));
        }
        state.active = segment;
        state.active_end = SEGMENT_HEADER_BYTES as u64;
    }
    Ok(start)
}

pub(super) fn adopt_history(wal: &Wal, history: &EpochHistory) -> Result<()> {
    let mut mine = wal.shared.history.locked();
    if *mine == *history {
        return Ok(());
    }
    let latest = history.latest().epoch;
    if latest < mine.latest().epoch {
        return Err(WalError::EpochOrder {
            epoch: latest,
            reason: format!(
                "a history ending at epoch {latest} is older than this log's epoch {}",
                mine.latest().epoch
            ),
        });
    }
    if let Err(e) = write_history(wal.shared.options.fs.as_ref(), &wal.shared.dir, history) {
        // The commit lock comes before the history's (as in `begin_epoch`): let go first.
        drop(mine);
        let commit = &wal.shared.commit;
        return Err(e.settle(commit, &mut commit.lock()));
    }
    *mine = history.clone();
    Ok(())
}
