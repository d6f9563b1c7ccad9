//! Emptying a replica's log in place, for a restore from its primary's snapshot: every segment
//! goes, and the log starts again at LSN 1, ready to take a base
//! ([`Wal::receive_compacted`]). The caller records durably that a restore is under way
//! first, so a crash part-way never leaves a log that merely looks shorter.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::format::{SEGMENT_HEADER_BYTES, SegmentHeader};

use super::error::{Result, WalError};
use super::segment::{Segment, parse_segment_file_name};
use super::{Wal, random_u32};
use crate::sync::{MutexExt, RwLockExt};

pub(super) fn reset(wal: &Wal) -> Result<()> {
    let _serial = wal.shared.retention.locked();
    wal.sync()?;
    let commit = &wal.shared.commit;
    let mut state = commit.lock_idle()?;
    // IMPORTANT: from the first removal on, the files and the in-memory log differ until
    // the new segment is in place; an error part-way stops the log (appends could
    // otherwise go to a removed file) and reopening recovers from what is on disk.
    let created = (|| -> Result<_> {
        let fs = wal.shared.options.fs.as_ref();
        let dir = &wal.shared.dir;
        let io = |op, e| WalError::io(op, dir, e);
        for name in fs.list(dir).map_err(|e| io("list", e))? {
            if parse_segment_file_name(&name).is_some() {
                let path = dir.join(&name);
                fs.remove(&path)
                    .map_err(|e| WalError::io("remove", &path, e))?;
            }
        }
        fs.sync_dir(dir).map_err(|e| io("fsync directory", e))?;
        let header = SegmentHeader {
            cluster_id: wal.shared.cluster_id(),
            first_lsn: 1,
            epoch: 1,
            salt: random_u32(),
            compacted_through: None,
        };
        let options = &wal.shared.options;
        let segment = Arc::new(Segment::create(
            fs,
            dir,
            header,
            options.segment_bytes,
            options.zero_fill_segments,
        )?);
        Ok(segment)
    })();
    let segment = match created {
        Ok(segment) => segment,
        Err(e) => {
            commit.stop_after(&mut state, "reset", &e.to_string());
            return Err(e);
        }
    };
    *wal.shared.segments_mut() = vec![Arc::clone(&segment)];
    wal.shared.retired.write_locked().clear();
    wal.shared.digest.locked().clear();
    state.next_lsn = 1;
    state.epoch = 1;
    state.active = segment;
    state.active_end = SEGMENT_HEADER_BYTES as u64;
    state.dirty.clear();
    state.last_written_segment = None;
    commit.written_lsn.store(0, Ordering::Release);
    commit.durable_lsn.store(0, Ordering::Release);
    commit.mark_cut(&mut state);
    Ok(())
}
