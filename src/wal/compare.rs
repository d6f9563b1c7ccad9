//! Comparing two log directories byte for byte over the LSNs both hold: the proof behind
//! `shiplog verify --compare` that a replica's log is the primary's.
//!
//! Shipping writes the primary's bytes at the same offsets of a segment file with the same
//! 64-byte header (`docs/format.md`), so two copies of a segment must agree byte for byte up to
//! where the shorter one ends. Read-only: nothing is locked, cut, zeroed or removed.

use std::path::Path;

use crate::format::{Lsn, SEGMENT_HEADER_BYTES, SegmentHeader, decode_record};
use crate::io::{FileSystem, Mapping};

use super::error::{Result, WalError};
use super::recovery::{self, RecoveredSegment, SegmentReport, SegmentStatus};

/// Bytes compared at a time: equal chunks cost one `memcmp`; only the chunk that differs is
/// searched byte by byte.
const COMPARE_CHUNK_BYTES: usize = 64 << 10;

/// What [`compare_dirs`] found.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Segment files present in both directories, in LSN order, with the verdict on each.
    pub segments: Vec<SegmentComparison>,
    /// Segment files only in the first directory (informational).
    pub only_in_a: Vec<SegmentReport>,
    /// Segment files only in the second directory (informational).
    pub only_in_b: Vec<SegmentReport>,
    /// First and last LSN of the first directory's log (`None` when it holds no record).
    pub lsns_a: Option<(Lsn, Lsn)>,
    /// First and last LSN of the second directory's log (`None` when it holds no record).
    pub lsns_b: Option<(Lsn, Lsn)>,
    /// The LSNs both logs hold (`None` when they share none).
    pub shared_lsns: Option<(Lsn, Lsn)>,
    /// LSNs of the shared range that no segment found identical covers (headers not
    /// comparable, a segment missing on one side, or a divergence): not proven identical.
    pub uncompared_lsns: u64,
}

impl Comparison {
    /// Whether any segment diverged.
    #[must_use]
    pub fn diverged(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s.outcome, SegmentOutcome::Diverged(_)))
    }

    /// Record bytes compared and found identical, over all segments.
    #[must_use]
    pub fn bytes_compared(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| match s.outcome {
                SegmentOutcome::Identical { bytes, .. } => bytes,
                _ => 0,
            })
            .sum()
    }
}

/// The verdict on one segment file present in both directories.
#[derive(Debug, Clone)]
pub struct SegmentComparison {
    /// First LSN of the segment (its file name).
    pub first_lsn: Lsn,
    /// What recovery found in the first directory's copy.
    pub a: SegmentReport,
    /// What recovery found in the second directory's copy.
    pub b: SegmentReport,
    /// How the two copies compare.
    pub outcome: SegmentOutcome,
}

/// How two copies of one segment compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentOutcome {
    /// Same header, and every record byte both copies hold is identical.
    Identical {
        /// First and last LSN the compared bytes account for (`None`: no record in common).
        lsns: Option<(Lsn, Lsn)>,
        /// Record bytes compared, from the end of the header.
        bytes: u64,
    },
    /// The headers differ and at least one copy was rewritten by compaction (new salt, new
    /// offsets): the bytes cannot be compared, which is not a divergence by itself.
    DifferentHeaders {
        /// The header fields that differ.
        fields: Vec<&'static str>,
    },
    /// Recovery would remove one of the copies (unused empty or superseded): it is not part of
    /// its log, so there is nothing to compare.
    NotInLog,
    /// The copies differ where both should hold the same bytes.
    Diverged(Divergence),
}

/// Where two copies of a segment first differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// Both copies were written by appends (so shipped verbatim), yet their headers differ.
    Header {
        /// Offset of the first differing header byte.
        offset: u64,
        /// The header fields that differ.
        fields: Vec<&'static str>,
    },
    /// Record bytes differ.
    Records {
        /// Offset of the first differing byte.
        offset: u64,
        /// `(offset, LSN)` of the record holding that byte, as decoded from the copy whose
        /// records are valid there (`None` if it cannot be decoded).
        record: Option<(u64, Lsn)>,
    },
}

/// Compares the logs in directories `a` and `b` segment by segment, without changing anything
/// or taking either lock: for each segment file both hold, the headers, then the record bytes
/// up to the end both hold.
///
/// # Errors
/// What [`verify_dir`](super::verify_dir) fails on, for either directory: I/O errors,
/// unreadable headers or a cluster-id mismatch inside one directory.
pub fn compare_dirs(fs: &dyn FileSystem, a: &Path, b: &Path) -> Result<Comparison> {
    let a = recovery::analyze(fs, a, false)?;
    let b = recovery::analyze(fs, b, false)?;
    let mut segments = Vec::new();
    let mut only_in_a = Vec::new();
    let mut only_in_b = Vec::new();
    let (mut left, mut right) = (a.segments.iter().peekable(), b.segments.iter().peekable());
    // Both lists are sorted by first LSN (recovery sorts by name): merge them.
    loop {
        match (left.peek(), right.peek()) {
            (Some(x), Some(y)) if x.header.first_lsn == y.header.first_lsn => {
                segments.push(SegmentComparison {
                    first_lsn: x.header.first_lsn,
                    a: x.report.clone(),
                    b: y.report.clone(),
                    outcome: compare_segment(x, y)?,
                });
                left.next();
                right.next();
            }
            (Some(x), Some(y)) if x.header.first_lsn < y.header.first_lsn => {
                only_in_a.push(x.report.clone());
                left.next();
            }
            (Some(x), None) => {
                only_in_a.push(x.report.clone());
                left.next();
            }
            (_, Some(y)) => {
                only_in_b.push(y.report.clone());
                right.next();
            }
            (None, None) => break,
        }
    }
    let lsns_a = log_lsns(&a.segments);
    let lsns_b = log_lsns(&b.segments);
    let shared_lsns = lsns_a.zip(lsns_b).and_then(|((a1, a2), (b1, b2))| {
        let (first, last) = (a1.max(b1), a2.min(b2));
        (first <= last).then_some((first, last))
    });
    let uncompared_lsns = shared_lsns.map_or(0, |shared| uncompared(shared, &segments));
    Ok(Comparison {
        segments,
        only_in_a,
        only_in_b,
        lsns_a,
        lsns_b,
        shared_lsns,
        uncompared_lsns,
    })
}

/// Whether recovery keeps a segment as part of its log (it removes the others at open).
fn in_log(status: &SegmentStatus) -> bool {
    !matches!(
        status,
        SegmentStatus::UnusedEmpty | SegmentStatus::Superseded
    )
}

/// First and last LSN a log holds, from its recovered segments.
fn log_lsns(segments: &[RecoveredSegment]) -> Option<(Lsn, Lsn)> {
    let mut held = segments
        .iter()
        .filter(|s| in_log(&s.report.status))
        .filter_map(|s| Some((s.report.first_lsn, s.report.last_lsn?)));
    let first = held.next()?;
    Some(held.fold(first, |(f, l), (_, last)| (f, l.max(last))))
}

/// How many LSNs of `shared` no identical segment accounts for.
fn uncompared(shared: (Lsn, Lsn), segments: &[SegmentComparison]) -> u64 {
    let (first, last) = shared;
    let mut covered = 0;
    let mut next = first;
    // Segments are in LSN order and do not overlap, so one pass counts each LSN once.
    for segment in segments {
        if let SegmentOutcome::Identical {
            lsns: Some((from, to)),
            ..
        } = segment.outcome
        {
            let (from, to) = (from.max(next), to.min(last));
            if from <= to {
                covered += to - from + 1;
                next = to + 1;
            }
        }
    }
    (last - first + 1) - covered
}

/// Compares the two copies of one segment.
fn compare_segment(a: &RecoveredSegment, b: &RecoveredSegment) -> Result<SegmentOutcome> {
    if !in_log(&a.report.status) || !in_log(&b.report.status) {
        return Ok(SegmentOutcome::NotInLog);
    }
    let map = |s: &RecoveredSegment| {
        s.file
            .map()
            .map_err(|e| WalError::io("mmap", &s.report.path, e))
    };
    let (map_a, map_b) = (map(a)?, map(b)?);
    let copy_a = SegmentCopy::new(a, map_a.as_ref());
    let copy_b = SegmentCopy::new(b, map_b.as_ref());
    Ok(compare_copies(&copy_a, &copy_b))
}

/// One copy of a segment: recovery's verdict and its bytes.
struct SegmentCopy<'a> {
    segment: &'a RecoveredSegment,
    bytes: &'a [u8],
    corrupt: bool,
}

impl<'a> SegmentCopy<'a> {
    fn new(segment: &'a RecoveredSegment, mapping: &'a dyn Mapping) -> Self {
        Self {
            segment,
            bytes: mapping.bytes(),
            corrupt: matches!(segment.report.status, SegmentStatus::Corrupt(_)),
        }
    }

    /// Bytes `from..to`, or as many of them as the file holds.
    fn range(&self, from: usize, to: usize) -> &'a [u8] {
        self.bytes
            .get(from..to.min(self.bytes.len()))
            .unwrap_or_default()
    }
}

/// The verdict on two mapped copies of a segment that recovery keeps in both logs.
fn compare_copies(a: &SegmentCopy<'_>, b: &SegmentCopy<'_>) -> SegmentOutcome {
    let (header_a, header_b) = (&a.segment.header, &b.segment.header);
    let raw_a = a.range(0, SEGMENT_HEADER_BYTES);
    let raw_b = b.range(0, SEGMENT_HEADER_BYTES);
    if raw_a != raw_b {
        let fields = differing_fields(header_a, header_b);
        // Compaction rewrites a segment under its old name with a new salt: a copy compacted on
        // one side only is expected. Two append-written copies are shipped verbatim, so any
        // header difference means they are not copies of one history.
        if header_a.compacted_through.is_some() || header_b.compacted_through.is_some() {
            return SegmentOutcome::DifferentHeaders { fields };
        }
        let offset = first_difference(raw_a, raw_b).unwrap_or(0);
        return SegmentOutcome::Diverged(Divergence::Header {
            offset: offset as u64,
            fields,
        });
    }
    // Each copy vouches for its bytes up to its recovered end. A corrupt copy vouches only for
    // the bytes before its damage, but must still hold whatever the other copy vouches for:
    // otherwise a flipped byte would only shorten the range compared and go unreported.
    let (end, reference, last_lsn) = match (a.corrupt, b.corrupt) {
        (true, false) => (b.segment.end_offset, b, b.segment.report.last_lsn),
        (false, true) => (a.segment.end_offset, a, a.segment.report.last_lsn),
        _ => (
            a.segment.end_offset.min(b.segment.end_offset),
            a,
            a.segment
                .report
                .last_lsn
                .zip(b.segment.report.last_lsn)
                .map(|(x, y)| x.min(y)),
        ),
    };
    let end = usize::try_from(end).unwrap_or(usize::MAX);
    let (records_a, records_b) = (
        a.range(SEGMENT_HEADER_BYTES, end),
        b.range(SEGMENT_HEADER_BYTES, end),
    );
    if let Some(at) = first_difference(records_a, records_b) {
        let offset = SEGMENT_HEADER_BYTES + at;
        return SegmentOutcome::Diverged(Divergence::Records {
            offset: offset as u64,
            record: record_holding(reference, offset),
        });
    }
    let first_lsn = header_a.first_lsn;
    SegmentOutcome::Identical {
        lsns: last_lsn
            .filter(|&last| last >= first_lsn)
            .map(|last| (first_lsn, last)),
        bytes: records_a.len() as u64,
    }
}

/// Index of the first byte where `a` and `b` differ; a missing byte counts as a difference.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let common = a.len().min(b.len());
    let mut at = 0;
    while at < common {
        let chunk = at..at + COMPARE_CHUNK_BYTES.min(common - at);
        let (left, right) = (&a[chunk.clone()], &b[chunk]);
        if left != right {
            return left
                .iter()
                .zip(right)
                .position(|(p, q)| p != q)
                .map(|i| at + i);
        }
        at += left.len();
    }
    (a.len() != b.len()).then_some(common)
}

/// `(offset, LSN)` of the record of `copy` holding byte `target`, found from the nearest
/// entry of the seek index; `None` when the records there do not decode.
fn record_holding(copy: &SegmentCopy<'_>, target: usize) -> Option<(u64, Lsn)> {
    let index = &copy.segment.sparse_index;
    let at = index.partition_point(|&(_, offset)| offset <= target as u64);
    let mut offset = at
        .checked_sub(1)
        .and_then(|i| usize::try_from(index[i].1).ok())
        .unwrap_or(SEGMENT_HEADER_BYTES);
    let end = usize::try_from(copy.segment.end_offset).ok()?;
    while offset < end {
        let record = decode_record(copy.range(offset, end), copy.segment.header.salt).ok()?;
        let next = offset + record.encoded_bytes();
        if target < next {
            return Some((offset as u64, record.lsn));
        }
        offset = next;
    }
    None
}

/// Names of the header fields that differ between `a` and `b` (never the first LSN: recovery
/// checks it against the file name, and only copies of the same name are compared).
fn differing_fields(a: &SegmentHeader, b: &SegmentHeader) -> Vec<&'static str> {
    let checks = [
        ("cluster_id", a.cluster_id != b.cluster_id),
        ("epoch", a.epoch != b.epoch),
        ("salt", a.salt != b.salt),
        (
            "compacted_through",
            a.compacted_through != b.compacted_through,
        ),
    ];
    checks
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::format::RecordKind;
    use crate::io::SimFs;
    use crate::wal::{Durability, Options, Wal, parse_segment_file_name, segment_file_name};

    /// 100-byte payloads in 4 KiB segments: 32 records (125 bytes each) per segment, so 100
    /// records fill segments 1, 33 and 65 and start segment 97.
    const RECORDS: u8 = 100;
    const RECORD_BYTES: u64 = 125;

    fn options(fs: &SimFs, cluster_id: Option<u128>) -> Options {
        Options {
            segment_bytes: 4096,
            prepare_next_segment: false,
            cluster_id,
            fs: Arc::new(fs.clone()),
            ..Options::default()
        }
    }

    fn kind() -> RecordKind {
        RecordKind::new(3).unwrap()
    }

    /// Writes records `0..count` (each payload is its number, repeated) into a new log.
    fn write_log(fs: &SimFs, dir: &Path, count: u8, cluster_id: Option<u128>) {
        let wal = Wal::open(dir, options(fs, cluster_id)).unwrap();
        for i in 0..count {
            wal.append(kind(), &[i; 100], Durability::Sync).unwrap();
        }
        wal.close().unwrap();
    }

    /// Offset of record `lsn` in its segment.
    fn offset_of(fs: &SimFs, dir: &Path, lsn: Lsn) -> u64 {
        let wal = Wal::open(dir, options(fs, None)).unwrap();
        let offset = wal.read(lsn).unwrap().unwrap().location.offset;
        wal.close().unwrap();
        offset
    }

    /// Copies every segment file of `from` into `to` byte for byte, as shipping would.
    fn copy_log(fs: &SimFs, from: &Path, to: &Path) {
        fs.create_dir_all(to).unwrap();
        for name in fs.list(from).unwrap() {
            if parse_segment_file_name(&name).is_none() {
                continue;
            }
            let bytes = fs.open(&from.join(&name), false).unwrap().map().unwrap();
            let copy = fs.create(&to.join(&name)).unwrap();
            copy.write_all_at(bytes.bytes(), 0).unwrap();
            copy.sync_data().unwrap();
        }
        fs.sync_dir(to).unwrap();
    }

    fn write_at(fs: &SimFs, dir: &Path, segment: Lsn, offset: u64, bytes: &[u8]) {
        let file = fs
            .open(&dir.join(segment_file_name(segment)), true)
            .unwrap();
        file.write_all_at(bytes, offset).unwrap();
        file.sync_data().unwrap();
    }

    fn outcomes(comparison: &Comparison) -> Vec<(Lsn, SegmentOutcome)> {
        comparison
            .segments
            .iter()
            .map(|s| (s.first_lsn, s.outcome.clone()))
            .collect()
    }

    fn identical(first: Lsn, last: Lsn) -> SegmentOutcome {
        SegmentOutcome::Identical {
            lsns: Some((first, last)),
            bytes: (last - first + 1) * RECORD_BYTES,
        }
    }

    #[test]
    fn a_copy_is_identical_over_every_lsn() {
        let fs = SimFs::new();
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        write_log(&fs, a, RECORDS, None);
        copy_log(&fs, a, b);
        let comparison = compare_dirs(&fs, a, b).unwrap();
        assert_eq!(
            outcomes(&comparison),
            [
                (1, identical(1, 32)),
                (33, identical(33, 64)),
                (65, identical(65, 96)),
                (97, identical(97, 100)),
            ]
        );
        assert!(!comparison.diverged());
        assert_eq!(comparison.shared_lsns, Some((1, 100)));
        assert_eq!(comparison.uncompared_lsns, 0);
        assert_eq!(
            comparison.bytes_compared(),
            u64::from(RECORDS) * RECORD_BYTES
        );
        assert!(comparison.only_in_a.is_empty() && comparison.only_in_b.is_empty());
    }

    #[test]
    fn a_lagging_copy_is_compared_over_the_shared_range_only() {
        let fs = SimFs::new();
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        write_log(&fs, a, RECORDS, None);
        copy_log(&fs, a, b);
        // The replica has not received segment 97 yet, and is in the middle of LSN 80: its
        // first 10 bytes arrived, the rest of the preallocated file is still zeros.
        fs.remove(&b.join(segment_file_name(97))).unwrap();
        let cut = offset_of(&fs, a, 80) + 10;
        write_at(
            &fs,
            b,
            65,
            cut,
            &vec![0; 4096 - usize::try_from(cut).unwrap()],
        );
        let comparison = compare_dirs(&fs, a, b).unwrap();
        assert_eq!(
            outcomes(&comparison),
            [
                (1, identical(1, 32)),
                (33, identical(33, 64)),
                (65, identical(65, 79)),
            ]
        );
        assert!(matches!(
            comparison.segments[2].b.status,
            SegmentStatus::TornTail { .. }
        ));
        assert!(!comparison.diverged());
        assert_eq!(comparison.lsns_b, Some((1, 79)));
        assert_eq!(comparison.shared_lsns, Some((1, 79)));
        assert_eq!(comparison.uncompared_lsns, 0);
        let only: Vec<Lsn> = comparison.only_in_a.iter().map(|r| r.first_lsn).collect();
        assert_eq!(only, [97]);
        assert!(comparison.only_in_b.is_empty());
    }

    #[test]
    fn a_flipped_byte_is_a_divergence_at_its_offset_and_lsn() {
        // In a sealed segment of either copy, and in the middle of the last segment.
        for (flip_in_b, lsn, segment) in [(true, 40, 33), (false, 40, 33), (true, 98, 97)] {
            let fs = SimFs::new();
            let (a, b) = (Path::new("/a"), Path::new("/b"));
            write_log(&fs, a, RECORDS, None);
            copy_log(&fs, a, b);
            let record = offset_of(&fs, a, lsn);
            let flipped = if flip_in_b { b } else { a };
            write_at(&fs, flipped, segment, record + 30, &[0xff]);
            let comparison = compare_dirs(&fs, a, b).unwrap();
            assert!(comparison.diverged(), "LSN {lsn}");
            let diverged = comparison
                .segments
                .iter()
                .find(|s| s.first_lsn == segment)
                .unwrap();
            // Recovery calls the flipped copy corrupt and stops trusting it before the flip;
            // the comparison must still reach the flip, not merely compare less.
            let copy = if flip_in_b { &diverged.b } else { &diverged.a };
            assert!(matches!(copy.status, SegmentStatus::Corrupt(_)), "{copy:?}");
            assert_eq!(
                diverged.outcome,
                SegmentOutcome::Diverged(Divergence::Records {
                    offset: record + 30,
                    record: Some((record, lsn)),
                }),
                "LSN {lsn}, flipped in {}",
                flipped.display()
            );
            let others_identical = comparison
                .segments
                .iter()
                .filter(|s| s.first_lsn != segment)
                .all(|s| matches!(s.outcome, SegmentOutcome::Identical { .. }));
            assert!(others_identical, "{comparison:?}");
        }
    }

    #[test]
    fn a_promoted_copy_that_wrote_its_own_records_diverges_at_the_first_one() {
        let fs = SimFs::new();
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        write_log(&fs, a, 50, None);
        copy_log(&fs, a, b);
        // Both go on writing LSN 51 into the same segment, with different payloads.
        for (dir, byte) in [(a, 1u8), (b, 2u8)] {
            let wal = Wal::open(dir, options(&fs, None)).unwrap();
            assert_eq!(
                wal.append(kind(), &[byte; 100], Durability::Sync).unwrap(),
                51
            );
            wal.close().unwrap();
        }
        let record = offset_of(&fs, a, 51);
        let comparison = compare_dirs(&fs, a, b).unwrap();
        let SegmentOutcome::Diverged(Divergence::Records { offset, record: at }) =
            comparison.segments[1].outcome
        else {
            panic!("{comparison:?}");
        };
        // The CRC comes first in a record: it is the first byte to differ.
        assert!(
            (record..record + 4).contains(&offset),
            "{offset} vs {record}"
        );
        assert_eq!(at, Some((record, 51)));
        assert_eq!(comparison.segments[0].outcome, identical(1, 32));
    }

    #[test]
    fn separately_written_logs_diverge_in_their_headers() {
        let fs = SimFs::new();
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        // Same cluster, same records, but each log chose its own salts: not copies.
        write_log(&fs, a, 40, Some(7));
        write_log(&fs, b, 40, Some(7));
        let comparison = compare_dirs(&fs, a, b).unwrap();
        assert!(comparison.diverged());
        for segment in &comparison.segments {
            // The salts are random: they may share their low bytes, so the first differing
            // byte is anywhere in the salt field (bytes 12..16), not always its first.
            let SegmentOutcome::Diverged(Divergence::Header { offset, fields }) = &segment.outcome
            else {
                panic!("{:?}", segment.outcome);
            };
            assert!((12..16).contains(offset), "{offset}");
            assert_eq!(fields, &vec!["salt"]);
        }
        assert_eq!(comparison.uncompared_lsns, 40);
    }

    #[test]
    fn a_segment_compacted_on_one_side_is_not_comparable() {
        let fs = SimFs::new();
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        write_log(&fs, a, RECORDS, None);
        copy_log(&fs, a, b);
        let wal = Wal::open(a, options(&fs, None)).unwrap();
        wal.compact_range(1, 32, |r| r.lsn % 2 == 0, 0).unwrap();
        wal.release_compacted();
        wal.close().unwrap();
        let comparison = compare_dirs(&fs, a, b).unwrap();
        assert_eq!(
            comparison.segments[0].outcome,
            SegmentOutcome::DifferentHeaders {
                fields: vec!["salt", "compacted_through"],
            }
        );
        assert!(!comparison.diverged());
        assert_eq!(comparison.shared_lsns, Some((1, 100)));
        assert_eq!(comparison.uncompared_lsns, 32, "LSNs 1..=32 are not proven");
    }
}
