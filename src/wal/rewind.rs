//! Rewinding a diverged log to its fork point: the records after it are first saved to a file
//! under `DIR/rollback/` (as `MongoDB` does), then cut, so a rejoining node loses them from its
//! log but never without trace. Every step leaves a log that is a prefix of the one before:
//! later segments go first, newest first, and the segment holding the fork point is replaced
//! by a copy cut after it (written, synced, renamed over it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::format::{
    Lsn, RecordMeta, SEGMENT_HEADER_BYTES, SegmentHeader, encode_record, encoded_record_bytes,
};

use super::error::{Result, WalError};
use super::segment::{BlankSegment, Segment};
use super::writer::WriterState;
use super::{Wal, random_u32};
use crate::sync::MutexExt;

/// Directory, inside the log's, of the records rewinds cut.
pub const ROLLBACK_DIR: &str = "rollback";

pub(super) fn save_tail(wal: &Wal, after: Lsn) -> Result<Option<PathBuf>> {
    let last = wal.written_lsn();
    let from = after.max(wal.first_lsn().saturating_sub(1)) + 1;
    if from > last {
        return Ok(None);
    }
    let mut records = wal.read_range(from, last)?;
    let Some(first) = records.next().transpose()? else {
        return Ok(None);
    };
    let header = SegmentHeader {
        cluster_id: wal.cluster_id(),
        first_lsn: first.lsn,
        epoch: first.epoch,
        salt: random_u32(),
        compacted_through: None,
    };
    let mut bytes = header.encode().to_vec();
    let mut add = |record: &super::Record| {
        let meta = RecordMeta {
            lsn: record.lsn,
            epoch: record.epoch,
            kind: record.kind,
            batch_continues: record.batch_continues,
            durable_lsn: record.lsn - 1,
        };
        encode_record(&mut bytes, header.salt, &meta, &record.payload);
    };
    add(&first);
    let mut last_epoch = first.epoch;
    for record in records {
        let record = record?;
        last_epoch = record.epoch;
        add(&record);
    }
    let fs = wal.shared.options.fs.as_ref();
    let dir = wal.shared.dir.join(ROLLBACK_DIR);
    fs.create_dir_all(&dir)
        .map_err(|e| WalError::io("create directory", &dir, e))?;
    let name = format!("rollback-{}-{last}-epoch{last_epoch}.seg", first.lsn);
    let path = dir.join(&name);
    let temp = dir.join(format!("{name}.tmp"));
    let io = |op, p: &Path| {
        let p = p.to_owned();
        move |e| WalError::io(op, p, e)
    };
    let file = fs.create(&temp).map_err(io("create", &temp))?;
    file.write_all_at(&bytes, 0).map_err(io("write", &temp))?;
    file.sync_data().map_err(io("fdatasync", &temp))?;
    fs.rename(&temp, &path).map_err(io("rename", &temp))?;
    fs.sync_dir(&dir).map_err(io("fsync directory", &dir))?;
    Ok(Some(path))
}

pub(super) fn truncate_after(wal: &Wal, fork: Lsn) -> Result<()> {
    let _serial = wal.shared.retention.locked();
    wal.sync()?;
    let commit = &wal.shared.commit;
    let mut state = commit.lock_idle()?;
    if fork >= state.next_lsn - 1 {
        return Ok(());
    }
    let segments: Vec<Arc<Segment>> = wal.shared.segments().clone();
    let cannot = |reason: &str| WalError::CannotRewind {
        lsn: fork,
        reason: reason.to_owned(),
    };
    if fork == 0 || fork + 1 < wal.first_lsn() {
        return Err(cannot("the log no longer holds that LSN"));
    }
    // The first segment holding a record after the fork point.
    let cut = segments
        .iter()
        .position(|s| s.last_lsn() > fork)
        .ok_or_else(|| cannot("no segment holds the records after it"))?;
    if segments[cut..].iter().any(|s| s.is_compacted()) {
        return Err(cannot("a compacted segment holds records after it"));
    }
    // IMPORTANT: from the first removal on, the files and the in-memory log differ until
    // the end; an error part-way stops the log (appends could otherwise go to a removed
    // file) and reopening recovers from what is on disk.
    let changed = (|| -> Result<_> {
        let fs = wal.shared.options.fs.as_ref();
        let dir = &wal.shared.dir;
        for segment in segments[cut + 1..].iter().rev() {
            fs.remove(&segment.path)
                .map_err(|e| WalError::io("remove", &segment.path, e))?;
            fs.sync_dir(dir)
                .map_err(|e| WalError::io("fsync directory", dir, e))?;
        }
        let mut kept: Vec<Arc<Segment>> = segments[..cut].to_vec();
        let target = &segments[cut];
        let (active, active_end) = if target.first_lsn() <= fork {
            let segment = cut_segment(wal, target, fork)?;
            let end = segment.records_end();
            (segment, end)
        } else {
            fs.remove(&target.path)
                .map_err(|e| WalError::io("remove", &target.path, e))?;
            fs.sync_dir(dir)
                .map_err(|e| WalError::io("fsync directory", dir, e))?;
            match kept.pop() {
                Some(last) if !last.is_compacted() => {
                    let end = last.records_end();
                    (last, end)
                }
                previous => {
                    kept.extend(previous);
                    (
                        fresh_segment(wal, &state, fork + 1)?,
                        SEGMENT_HEADER_BYTES as u64,
                    )
                }
            }
        };
        kept.push(Arc::clone(&active));
        let epoch = wal.read(fork)?.map_or(state.epoch, |r| r.epoch);
        Ok((kept, active, active_end, epoch))
    })();
    let (kept, active, active_end, epoch) = match changed {
        Ok(changed) => changed,
        Err(e) => {
            commit.stop_after(&mut state, "rewind", &e.to_string());
            return Err(e);
        }
    };
    *wal.shared.segments_mut() = kept;
    wal.shared.digest.locked().clear();
    state.next_lsn = fork + 1;
    state.epoch = epoch;
    state.active = active;
    state.active_end = active_end;
    state.dirty.clear();
    state.last_written_segment = None;
    commit.written_lsn.store(fork, Ordering::Release);
    commit.durable_lsn.store(fork, Ordering::Release);
    commit.mark_cut(&mut state);
    Ok(())
}

/// Replaces `segment` by a copy holding its records up to `fork` only.
fn cut_segment(wal: &Wal, segment: &Arc<Segment>, fork: Lsn) -> Result<Arc<Segment>> {
    let record = wal.read(fork)?.ok_or_else(|| WalError::CannotRewind {
        lsn: fork,
        reason: "the record is not readable".to_owned(),
    })?;
    let end = record.location.offset + encoded_record_bytes(record.payload.len()) as u64;
    let end_index = usize::try_from(end).unwrap_or(usize::MAX);
    let view = segment.view_covering(end)?;
    let bytes = view
        .bytes()
        .get(..end_index)
        .ok_or_else(|| WalError::CannotRewind {
            lsn: fork,
            reason: "the record lies past the segment's mapping".to_owned(),
        })?;
    let fs = wal.shared.options.fs.as_ref();
    let dir = &wal.shared.dir;
    let temp = Segment::temp_path(dir, segment.first_lsn());
    let blank = BlankSegment::prepare(
        fs,
        temp.clone(),
        segment.capacity_bytes,
        wal.shared.options.zero_fill_segments,
    )?;
    let io = |op| {
        let temp = &temp;
        move |e| WalError::io(op, temp, e)
    };
    blank.file.write_all_at(bytes, 0).map_err(io("write"))?;
    // IMPORTANT: the cut copy is durable before it replaces the segment, so a crash leaves
    // the whole segment or the cut one, each a valid log.
    blank.file.sync_data().map_err(io("fdatasync"))?;
    fs.rename(&temp, &segment.path).map_err(io("rename"))?;
    fs.sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    let copy = Segment::from_parts(
        fs,
        segment.path.clone(),
        segment.header,
        blank.file,
        segment.capacity_bytes,
        end,
        segment.sparse_index_through(fork),
    )?;
    copy.set_last_lsn(fork);
    Ok(Arc::new(copy))
}

/// A new empty segment starting at `first_lsn`, of the current epoch.
fn fresh_segment(wal: &Wal, state: &WriterState, first_lsn: Lsn) -> Result<Arc<Segment>> {
    let header = SegmentHeader {
        cluster_id: wal.cluster_id(),
        first_lsn,
        epoch: state.epoch,
        salt: random_u32(),
        compacted_through: None,
    };
    let options = &wal.shared.options;
    Ok(Arc::new(Segment::create(
        options.fs.as_ref(),
        &wal.shared.dir,
        header,
        options.segment_bytes,
        options.zero_fill_segments,
    )?))
}

pub(super) fn drop_empty_tail(wal: &Wal) -> Result<()> {
    let _serial = wal.shared.retention.locked();
    wal.sync()?;
    let commit = &wal.shared.commit;
    let mut state = commit.lock_idle()?;
    if state.active_end > SEGMENT_HEADER_BYTES as u64 || state.active.is_compacted() {
        return Ok(());
    }
    let segments: Vec<Arc<Segment>> = wal.shared.segments().clone();
    let Some(previous) = segments
        .len()
        .checked_sub(2)
        .map(|i| Arc::clone(&segments[i]))
    else {
        return Ok(());
    };
    if previous.is_compacted() || previous.last_lsn() + 1 != state.next_lsn {
        return Ok(());
    }
    let fs = wal.shared.options.fs.as_ref();
    let dir = &wal.shared.dir;
    let empty = Arc::clone(&state.active);
    // IMPORTANT: the empty segment goes durably before the log relies on its predecessor
    // being the last: a crash in between leaves the empty segment, which recovery keeps
    // as the active one, as before.
    fs.remove(&empty.path)
        .map_err(|e| WalError::io("remove", &empty.path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    wal.shared.segments_mut().pop();
    let last = state.next_lsn - 1;
    state.epoch = match wal.read(last) {
        Ok(Some(record)) if last > 0 => record.epoch,
        _ => previous.header.epoch,
    };
    state.active_end = previous.records_end();
    state.active = previous;
    state.last_written_segment = None;
    Ok(())
}
