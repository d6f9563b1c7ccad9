//! Retention: removing whole segments from the front of the log, in LSN order, each removal
//! durable before the next.

use std::sync::Arc;

use crate::format::Lsn;

use super::Wal;
use super::error::{Result, WalError};
use super::segment::Segment;
use crate::sync::MutexExt;

pub(super) fn remove_before(wal: &Wal, lsn: Lsn) -> Result<usize> {
    let _serial = wal.shared.retention.locked();
    let durable = wal.shared.commit.durable();
    let doomed: Vec<Arc<Segment>> = {
        let mut segments = wal.shared.segments_mut();
        let count = sealed_prefix(&segments, durable)
            .iter()
            .take_while(|s| s.last_lsn() < lsn)
            .count();
        segments.drain(..count).collect()
    };
    let fs = wal.shared.options.fs.as_ref();
    // IMPORTANT: remove in LSN order, each removal durable before the next, so a crash
    // part-way leaves a log that merely starts later, never one with a gap, even on a
    // file system that commits directory changes out of order (a directory sync per
    // segment: retention removes few, large files).
    for (i, segment) in doomed.iter().enumerate() {
        let (failure, not_removed_from) = match fs.remove(&segment.path) {
            Err(e) => (WalError::io("remove", &segment.path, e), i),
            Ok(()) => match fs.sync_dir(&wal.shared.dir) {
                Err(e) => (WalError::io("fsync directory", &wal.shared.dir, e), i + 1),
                Ok(()) => continue,
            },
        };
        // IMPORTANT: the segments still on disk go back to the front of the list, so a
        // later call removes them first, in order: left out, they would stay on disk while
        // a later, durable removal of a newer segment made a gap behind them.
        let rest = doomed[not_removed_from..].iter().cloned();
        wal.shared.segments_mut().splice(0..0, rest);
        return Err(failure);
    }
    Ok(doomed.len())
}

/// The sealed segments at the front of `segments` whose records are all durable: every
/// segment but the active one, up to the first with a record past `durable`.
pub(super) fn sealed_prefix(segments: &[Arc<Segment>], durable: Lsn) -> &[Arc<Segment>] {
    let sealed = &segments[..segments.len().saturating_sub(1)];
    let count = sealed
        .iter()
        .take_while(|s| s.last_lsn() <= durable)
        .count();
    &sealed[..count]
}
