//! Recovery on open: read every segment, validate every record, and decide whether the end of
//! the log is a torn tail (cut it) or corruption (refuse to open, truncate nothing).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::{
    Epoch, Lsn, SEGMENT_HEADER_BYTES, ScanEnd, SegmentHeader, SegmentScan, TailState,
    classify_tail, scan_records,
};
use crate::io::{FileSystem, LogFile, Mapping};

use super::error::{Result, WalError};
use super::segment::{SPARSE_INDEX_STRIDE, is_temp_segment_name, parse_segment_file_name};

/// What recovery found in one segment file.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// First LSN per the header (and the name).
    pub first_lsn: Lsn,
    /// Last LSN of a complete batch, if any record survives.
    pub last_lsn: Option<Lsn>,
    /// Epoch in the header.
    pub epoch: Epoch,
    /// Records in complete batches.
    pub record_count: u64,
    /// Bytes of those records, headers included.
    pub record_bytes: u64,
    /// Size of the file.
    pub file_bytes: u64,
    /// What happens to its end.
    pub status: SegmentStatus,
}

/// The verdict on one segment.
#[derive(Debug, Clone)]
pub enum SegmentStatus {
    /// Every record valid, nothing after the last one.
    Clean,
    /// The log's last segment ends in a torn write, cut back to the last complete batch.
    TornTail {
        /// Where writing resumes.
        cut_offset: u64,
        /// End of the damaged bytes that are zeroed.
        dirty_end: u64,
        /// Whole records of an unfinished batch that are dropped with the tear.
        dropped_records: u64,
    },
    /// A trailing segment with no records that does not continue the log; it is removed.
    UnusedEmpty,
    /// A segment whose range a compacted segment covers (a crash interrupted the compaction
    /// after installing its result); it is removed.
    Superseded,
    /// Damage that is not a torn tail; opening fails.
    Corrupt(WalError),
}

/// One segment as recovery leaves it.
#[derive(Debug)]
pub(crate) struct RecoveredSegment {
    pub report: SegmentReport,
    pub header: SegmentHeader,
    pub file: Arc<dyn LogFile>,
    pub sparse_index: Vec<(Lsn, u64)>,
    /// Offset where the next record would go.
    pub end_offset: u64,
}

/// The result of analysing a log directory.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    pub segments: Vec<RecoveredSegment>,
    pub temp_files: Vec<PathBuf>,
    pub cluster_id: Option<u128>,
}

impl Analysis {
    /// The first corruption found, if any.
    pub fn first_problem(&self) -> Option<&WalError> {
        self.segments.iter().find_map(|s| match &s.report.status {
            SegmentStatus::Corrupt(e) => Some(e),
            _ => None,
        })
    }
}

/// Reads and validates every segment in `dir` without changing anything.
pub(crate) fn analyze(fs: &dyn FileSystem, dir: &Path, writable: bool) -> Result<Analysis> {
    let names = fs.list(dir).map_err(|e| WalError::io("list", dir, e))?;
    let mut analysis = Analysis::default();
    let mut numbered: Vec<(Lsn, PathBuf)> = Vec::new();
    for name in names {
        if let Some(lsn) = parse_segment_file_name(&name) {
            numbered.push((lsn, dir.join(name)));
        } else if is_temp_segment_name(&name) {
            analysis.temp_files.push(dir.join(name));
        }
    }
    numbered.sort_unstable_by_key(|(lsn, _)| *lsn);
    let mut scans = Vec::with_capacity(numbered.len());
    for (name_lsn, path) in numbered {
        scans.push(open_and_scan(
            fs,
            path,
            name_lsn,
            writable,
            &mut analysis.cluster_id,
        )?);
    }
    // A compacted segment covering a..=b replaces the segments it was built from; any of them
    // still present were left by a crash between its rename and their removal.
    let compacted: Vec<(Lsn, Lsn)> = scans
        .iter()
        .filter_map(|(_, _, _, s)| s.header.compacted_through.map(|b| (s.header.first_lsn, b)))
        .collect();
    let superseded = |first: Lsn| compacted.iter().any(|&(a, b)| a < first && first <= b);
    let tail = scans
        .iter()
        .rposition(|(_, _, m, s)| !superseded(s.header.first_lsn) && !is_unused(m.as_ref(), s));
    let mut expected_first: Option<Lsn> = None;
    for (index, (path, file, mapping, scan)) in scans.into_iter().enumerate() {
        // Compaction syncs a segment before installing it: it is sealed, never a torn tail.
        let is_tail = tail == Some(index) && scan.header.compacted_through.is_none();
        let is_after_tail = tail.is_none_or(|t| index > t);
        let (status, kept) = if superseded(scan.header.first_lsn) {
            (SegmentStatus::Superseded, false)
        } else if is_after_tail {
            trailing_status(&path, &scan, expected_first)
        } else {
            let mut status = judge(&path, mapping.bytes(), &scan, is_tail);
            if let Some(expected) = expected_first.filter(|&e| e != scan.header.first_lsn) {
                status = SegmentStatus::Corrupt(WalError::Corrupt {
                    file: path.clone(),
                    offset: 0,
                    lsn: expected,
                    reason: format!(
                        "LSN gap: the previous segment ends at LSN {}, this one starts at LSN {}",
                        expected - 1,
                        scan.header.first_lsn
                    ),
                });
            }
            (status, true)
        };
        let (mut last_lsn, record_count, end_offset) = survivors(&scan, &status);
        if kept {
            last_lsn = scan.header.compacted_through.or(last_lsn);
        }
        if kept {
            expected_first = Some(last_lsn.map_or(scan.header.first_lsn, |l| l + 1));
        }
        analysis.segments.push(RecoveredSegment {
            report: SegmentReport {
                path,
                first_lsn: scan.header.first_lsn,
                last_lsn,
                epoch: scan.header.epoch,
                record_count,
                record_bytes: if matches!(status, SegmentStatus::Corrupt(_)) {
                    scan.record_bytes
                } else {
                    end_offset - SEGMENT_HEADER_BYTES as u64
                },
                file_bytes: mapping.bytes().len() as u64,
                status,
            },
            header: scan.header,
            file,
            sparse_index: scan.sparse_index,
            end_offset,
        });
    }
    Ok(analysis)
}

type Scanned = (PathBuf, Arc<dyn LogFile>, Arc<dyn Mapping>, SegmentScan);

/// Opens one segment file, scans it, and checks its name and cluster.
fn open_and_scan(
    fs: &dyn FileSystem,
    path: PathBuf,
    name_lsn: Lsn,
    writable: bool,
    cluster: &mut Option<u128>,
) -> Result<Scanned> {
    let file = fs
        .open(&path, writable)
        .map_err(|e| WalError::io("open", &path, e))?;
    let mapping = file.map().map_err(|e| WalError::io("mmap", &path, e))?;
    let scan = scan_records(mapping.bytes(), SPARSE_INDEX_STRIDE).map_err(|source| {
        WalError::BadHeader {
            file: path.clone(),
            source,
        }
    })?;
    if scan.header.first_lsn != name_lsn {
        return Err(WalError::Corrupt {
            file: path,
            offset: 0,
            lsn: name_lsn,
            reason: format!(
                "header says first LSN {}, the name says {name_lsn}",
                scan.header.first_lsn
            ),
        });
    }
    let cluster_id = *cluster.get_or_insert(scan.header.cluster_id);
    if scan.header.cluster_id != cluster_id {
        return Err(WalError::ClusterMismatch {
            file: path,
            expected: cluster_id,
            found: scan.header.cluster_id,
        });
    }
    Ok((path, file, mapping, scan))
}

/// An appended segment holding nothing but its header and zeros.
fn is_unused(mapping: &dyn Mapping, scan: &SegmentScan) -> bool {
    scan.header.compacted_through.is_none()
        && scan.valid_end == SEGMENT_HEADER_BYTES as u64
        && mapping.bytes()[SEGMENT_HEADER_BYTES..]
            .iter()
            .all(|&b| b == 0)
}

/// Empty segments after the last one with records: the first may continue the log.
fn trailing_status(
    path: &Path,
    scan: &SegmentScan,
    expected_first: Option<Lsn>,
) -> (SegmentStatus, bool) {
    let _ = path;
    if expected_first.is_none_or(|e| e == scan.header.first_lsn) {
        (SegmentStatus::Clean, true)
    } else {
        (SegmentStatus::UnusedEmpty, false)
    }
}

/// Judges the end of a segment that holds records.
fn judge(path: &Path, bytes: &[u8], scan: &SegmentScan, is_tail: bool) -> SegmentStatus {
    let corrupt = |offset, lsn, reason: String| {
        SegmentStatus::Corrupt(WalError::Corrupt {
            file: path.to_owned(),
            offset,
            lsn,
            reason,
        })
    };
    let (stop_offset, expected_lsn, reason) = match &scan.end {
        ScanEnd::EndOfBytes if !scan.has_incomplete_batch() => return SegmentStatus::Clean,
        ScanEnd::EndOfBytes => (
            scan.valid_end,
            scan.last_lsn.map_or(scan.header.first_lsn, |l| l + 1),
            "the segment ends inside a batch".to_owned(),
        ),
        ScanEnd::Stopped {
            offset,
            expected_lsn,
            reason,
        } => (*offset, *expected_lsn, reason.to_string()),
    };
    let last_valid = expected_lsn - 1;
    let tail = classify_tail(bytes, scan.valid_end, scan.header.salt, last_valid);
    if let TailState::ValidRecordFollows { offset, lsn } = tail {
        return corrupt(
            stop_offset,
            expected_lsn,
            format!("{reason}; a valid record with LSN {lsn} follows at offset {offset}"),
        );
    }
    if !is_tail {
        if tail == TailState::Zeros && !scan.has_incomplete_batch() {
            return SegmentStatus::Clean;
        }
        return corrupt(
            stop_offset,
            expected_lsn,
            format!("{reason} in a sealed segment"),
        );
    }
    if tail == TailState::Zeros && !scan.has_incomplete_batch() {
        return SegmentStatus::Clean;
    }
    let dirty_end = match tail {
        TailState::Torn { dirty_end, .. } => dirty_end.max(scan.valid_end),
        _ => scan.valid_end,
    };
    let dropped_records = expected_lsn - scan.last_lsn.map_or(scan.header.first_lsn, |l| l + 1);
    SegmentStatus::TornTail {
        cut_offset: scan.batch_end,
        dirty_end,
        dropped_records,
    }
}

fn survivors(scan: &SegmentScan, status: &SegmentStatus) -> (Option<Lsn>, u64, u64) {
    match status {
        SegmentStatus::UnusedEmpty | SegmentStatus::Superseded => {
            (None, 0, SEGMENT_HEADER_BYTES as u64)
        }
        _ => (scan.last_lsn, scan.record_count, scan.batch_end),
    }
}

/// Writes bytes `0..end` of `file` again, as they read now.
fn rewrite(file: &dyn LogFile, end: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; usize::try_from(end.min(1 << 20)).unwrap_or(1 << 20)];
    let mut offset = 0;
    while offset < end {
        let n = usize::try_from(end - offset).map_or(buf.len(), |n| n.min(buf.len()));
        file.read_exact_at(&mut buf[..n], offset)?;
        file.write_all_at(&buf[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

/// Makes a clean analysis true on disk: zeroes torn tails, removes unused and temporary files,
/// writes the tail again unless the log was `closed_cleanly`, and syncs.
pub(crate) fn apply(
    fs: &dyn FileSystem,
    dir: &Path,
    analysis: &mut Analysis,
    closed_cleanly: bool,
) -> Result<()> {
    assert!(
        analysis.first_problem().is_none(),
        "apply() only runs on a log without corruption"
    );
    let mut removed_any = false;
    for path in &analysis.temp_files {
        fs.remove(path)
            .map_err(|e| WalError::io("remove", path, e))?;
        removed_any = true;
    }
    for segment in &analysis.segments {
        let SegmentStatus::TornTail {
            cut_offset,
            dirty_end,
            ..
        } = segment.report.status
        else {
            continue;
        };
        // IMPORTANT: zero the torn bytes (never truncate: the file stays preallocated and
        // mapped), so a later, shorter write can never be followed by stale records.
        let zeros = vec![
            0u8;
            usize::try_from(dirty_end - cut_offset)
                .unwrap_or(usize::MAX)
                .min(1 << 20)
        ];
        let mut offset = cut_offset;
        while offset < dirty_end {
            let n = usize::try_from(dirty_end - offset).map_or(zeros.len(), |n| n.min(zeros.len()));
            segment
                .file
                .write_all_at(&zeros[..n], offset)
                .map_err(|e| WalError::io("zero torn tail of", &segment.report.path, e))?;
            offset += n as u64;
        }
        segment
            .file
            .sync_data()
            .map_err(|e| WalError::io("fdatasync", &segment.report.path, e))?;
    }
    let unused: Vec<PathBuf> = analysis
        .segments
        .iter()
        .filter(|s| {
            matches!(
                s.report.status,
                SegmentStatus::UnusedEmpty | SegmentStatus::Superseded
            )
        })
        .map(|s| s.report.path.clone())
        .collect();
    for path in &unused {
        fs.remove(path)
            .map_err(|e| WalError::io("remove", path, e))?;
        removed_any = true;
    }
    analysis.segments.retain(|s| {
        !matches!(
            s.report.status,
            SegmentStatus::UnusedEmpty | SegmentStatus::Superseded
        )
    });
    // IMPORTANT: a failed fdatasync before the restart may have marked the tail's pages clean
    // without writing them (Linux's writeback error handling, "fsyncgate"): recovery just
    // read those records from the page cache, and no sync would ever write them, so a later
    // power loss would open a hole under records acknowledged after them. Only the last
    // segment holding records, and empty segments after it, can have such pages (a segment
    // is sealed by a sync that succeeded before its successor gets a record, and the log
    // stops at its first failed sync; a seal that fails can leave an empty successor already
    // installed): write their bytes again so the sync below really writes them. After a
    // clean close (a final sync that succeeded, see `CLEAN_CLOSE_FILE`) there are no such
    // pages, and the rewrite, up to a whole segment, is skipped.
    if !closed_cleanly {
        let from = analysis
            .segments
            .iter()
            .rposition(|s| s.report.record_count > 0)
            .unwrap_or(0);
        for tail in &analysis.segments[from..] {
            rewrite(tail.file.as_ref(), tail.end_offset)
                .map_err(|e| WalError::io("rewrite the tail of", &tail.report.path, e))?;
        }
    }
    // IMPORTANT: after a process crash (not a power loss) the records recovery just read may
    // still be only in the page cache; the log is about to call them durable. Sync every
    // segment (cheap when clean), and the directory, before it does.
    for segment in &analysis.segments {
        segment
            .file
            .sync_data()
            .map_err(|e| WalError::io("fdatasync", &segment.report.path, e))?;
    }
    if removed_any || !analysis.segments.is_empty() {
        fs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync directory", dir, e))?;
    }
    Ok(())
}
