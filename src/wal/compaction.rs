//! Rewriting a run of sealed segments into one compacted segment (Kafka's compacted topics):
//! only the records a caller chooses to keep, with their original LSNs, in a segment that
//! covers the whole range. The caller (the engine) decides what is live; this module makes the
//! file swap crash-safe and keeps old offsets readable until the caller has moved its index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::format::{Lsn, RecordMeta, SEGMENT_HEADER_BYTES, SegmentHeader, encode_record};

use super::error::{Result, WalError};
use super::reader::Record;
use super::retention::sealed_prefix;
use super::segment::{SPARSE_INDEX_STRIDE, Segment, segment_file_name};
use super::{Wal, random_u32};
use crate::sync::{MutexExt, RwLockExt};

const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// A sealed segment that compaction may rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedSegment {
    /// Its first LSN.
    pub first_lsn: Lsn,
    /// The last LSN it accounts for.
    pub last_lsn: Lsn,
    /// Bytes of its records.
    pub record_bytes: u64,
    /// Whether it was written by compaction.
    pub compacted: bool,
}

/// What a compaction did.
#[derive(Debug, Clone, Default)]
pub struct Compacted {
    /// `(lsn, new offset)` of every kept record, in LSN order.
    pub moved: Vec<(Lsn, u64)>,
    /// Record bytes read.
    pub bytes_in: u64,
    /// Record bytes written.
    pub bytes_out: u64,
    /// Segment files replaced.
    pub segments_in: usize,
    /// An error after the compacted segment was installed (directory sync, removing a replaced
    /// file): the caller must still move to the new offsets, then report it.
    pub cleanup_error: Option<WalError>,
}

pub(super) fn sealed_segments(wal: &Wal) -> Vec<SealedSegment> {
    let durable = wal.durable_lsn();
    let segments = wal.shared.segments();
    sealed_prefix(&segments, durable)
        .iter()
        .map(|s| SealedSegment {
            first_lsn: s.first_lsn(),
            last_lsn: s.last_lsn(),
            record_bytes: s.records_end() - SEGMENT_HEADER_BYTES as u64,
            compacted: s.is_compacted(),
        })
        .collect()
}

pub(super) fn compact_range(
    wal: &Wal,
    first: Lsn,
    last: Lsn,
    mut keep: impl FnMut(&Record) -> bool,
    bytes_per_sec: u64,
) -> Result<Compacted> {
    let _serial = wal.shared.retention.locked();
    let inputs = run_of_sealed(wal, first, last)?;
    let fs = wal.shared.options.fs.as_ref();
    let dir = &wal.shared.dir;
    let input_bytes: u64 = inputs.iter().map(|s| s.records_end()).sum();
    let temp = dir.join(format!("{first:020}.compact.seg.tmp"));
    let io = |op| move |e| WalError::io(op, dir.join(format!("{first:020}.compact.seg.tmp")), e);
    if fs
        .list(dir)
        .map_err(|e| WalError::io("list", dir, e))?
        .iter()
        .any(|n| dir.join(n) == temp)
    {
        fs.remove(&temp).map_err(io("remove stale"))?;
    }
    let file = fs.create(&temp).map_err(io("create"))?;
    file.allocate(input_bytes.max(SEGMENT_HEADER_BYTES as u64))
        .map_err(io("fallocate"))?;
    let header = SegmentHeader {
        cluster_id: wal.shared.cluster_id(),
        first_lsn: first,
        epoch: inputs[0].header.epoch,
        salt: random_u32(),
        compacted_through: Some(last),
    };
    let mut outcome = Compacted {
        segments_in: inputs.len(),
        ..Compacted::default()
    };
    let mut buffer = Vec::with_capacity(WRITE_CHUNK_BYTES + 4096);
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut sparse = Vec::new();
    let started = Instant::now();
    let mut written = 0u64;
    for record in wal.read_range(first, last)? {
        let record = record?;
        outcome.bytes_in += (crate::format::RECORD_HEADER_BYTES + record.payload.len()) as u64;
        if !keep(&record) {
            continue;
        }
        let at = offset + buffer.len() as u64;
        if (outcome.moved.len() as u64).is_multiple_of(SPARSE_INDEX_STRIDE) {
            sparse.push((record.lsn, at));
        }
        // Batches are moot once every record is durable: each kept record stands alone.
        let meta = RecordMeta {
            lsn: record.lsn,
            epoch: record.epoch,
            kind: record.kind,
            batch_continues: false,
            durable_lsn: record.lsn - 1,
        };
        encode_record(&mut buffer, header.salt, &meta, &record.payload);
        outcome.moved.push((record.lsn, at));
        if buffer.len() >= WRITE_CHUNK_BYTES {
            file.write_all_at(&buffer, offset).map_err(io("write"))?;
            offset += buffer.len() as u64;
            written += buffer.len() as u64;
            buffer.clear();
            throttle(started, written, bytes_per_sec);
        }
    }
    file.write_all_at(&buffer, offset).map_err(io("write"))?;
    offset += buffer.len() as u64;
    outcome.bytes_out = offset - SEGMENT_HEADER_BYTES as u64;
    // A compacted segment is never appended to: give back the reserve beyond its records.
    file.truncate(offset).map_err(io("truncate"))?;
    file.write_all_at(&header.encode(), 0)
        .map_err(io("write header of"))?;
    // IMPORTANT: the compacted segment must be entirely durable before it replaces anything.
    file.sync_data().map_err(io("fdatasync"))?;
    // IMPORTANT: a record is dropped because a later one superseded it; that later record
    // was written before `keep` saw its effect, but it may not be durable yet. Make it so
    // before the dropped record vanishes, or a power loss could lose both.
    wal.sync()?;
    let path = dir.join(segment_file_name(first));
    // IMPORTANT: one rename replaces the first input; recovery treats the other inputs, if
    // a crash leaves them, as superseded by the compacted range. Directory sync before
    // removing them, so the new name is durable before the old files go.
    // Map the new file before the rename, so that once the rename has happened nothing can
    // stop the in-memory swap: from then on the file at `path` is the compacted segment.
    let segment = Segment::from_parts(fs, path.clone(), header, file, offset, offset, sparse)?;
    segment.set_last_lsn(last);
    fs.rename(&temp, &path).map_err(io("rename"))?;
    swap_in(wal, Arc::new(segment), &inputs);
    let cleanup = || -> Result<()> {
        fs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync directory", dir, e))?;
        for old in &inputs[1..] {
            fs.remove(&old.path)
                .map_err(|e| WalError::io("remove", &old.path, e))?;
        }
        fs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync directory", dir, e))
    };
    // Whatever fails now, the compacted segment is in place (on disk either it or all of its
    // inputs, both complete) and left-over inputs are removed at the next open.
    outcome.cleanup_error = cleanup().err();
    Ok(outcome)
}

fn run_of_sealed(wal: &Wal, first: Lsn, last: Lsn) -> Result<Vec<Arc<Segment>>> {
    let segments = wal.shared.segments();
    let sealed = sealed_prefix(&segments, wal.durable_lsn());
    let start = sealed.iter().position(|s| s.first_lsn() == first);
    let end = sealed.iter().position(|s| s.last_lsn() == last);
    match (start, end) {
        (Some(start), Some(end)) if start <= end => Ok(sealed[start..=end].to_vec()),
        _ => Err(WalError::InvalidOption {
            name: "compaction range",
            reason: format!("{first}..={last} is not a run of durable sealed segments"),
        }),
    }
}

fn swap_in(wal: &Wal, compacted: Arc<Segment>, inputs: &[Arc<Segment>]) {
    // IMPORTANT: retire the inputs before the list shows the compacted segment. A reader
    // that resolves an old offset to the new segment falls back to the retired ones; in the
    // other order there was a window where it found neither, and a `get` failed (caught by
    // the reader/compaction race test under load).
    wal.shared
        .retired
        .write_locked()
        .extend(inputs.iter().cloned());
    let mut segments = wal.shared.segments_mut();
    let start = segments.iter().position(|s| Arc::ptr_eq(s, &inputs[0]));
    if let Some(start) = start {
        segments.splice(start..start + inputs.len(), [compacted]);
    }
}

/// Sleeps as long as needed to keep the average rate at or below `bytes_per_sec`.
fn throttle(started: Instant, written: u64, bytes_per_sec: u64) {
    if bytes_per_sec == 0 {
        return;
    }
    #[expect(clippy::cast_precision_loss, reason = "a pacing estimate")]
    let due = Duration::from_secs_f64(written as f64 / bytes_per_sec as f64);
    if let Some(ahead) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(ahead);
    }
}
