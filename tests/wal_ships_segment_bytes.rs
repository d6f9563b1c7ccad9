//! Shipping reads the log as segment byte ranges: reassembled at their offsets under their
//! headers they are exactly the primary's segment files, they never include a record that is
//! not durable, and a record larger than a chunk arrives in pieces.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;

use shiplog::Wal;
use shiplog::format::RecordKind;
use shiplog::wal::{Durability, Options, ShipPosition, WalError, segment_file_name};

mod ship_chunks;

use ship_chunks::small_segment_log;

const CHUNK: usize = 16 << 10;

fn payload(i: usize) -> Vec<u8> {
    // Mostly small, some larger than a chunk, one larger than a segment.
    let len = match i % 50 {
        7 => 40_000,
        23 => 70_000,
        _ => 10 + (i * 37) % 900,
    };
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

/// A segment as the receiver rebuilds it: header, the offset its bytes start at, the bytes.
type Received = BTreeMap<u64, ([u8; 64], u64, Vec<u8>)>;

/// Ships everything durable from `position`; returns the end position.
fn ship_all(wal: &Wal, mut position: ShipPosition, received: &mut Received) -> ShipPosition {
    let mut last_lsn = position.next_lsn - 1;
    while let Some(chunk) = wal.ship_chunk(&position, CHUNK).unwrap() {
        assert!(chunk.bytes.len() <= CHUNK && !chunk.bytes.is_empty());
        if let Some(header) = chunk.header {
            let entry = received
                .entry(chunk.segment)
                .or_insert((header, chunk.offset, Vec::new()));
            assert_eq!(entry.0, header, "a segment changed header");
        } else {
            assert_eq!(
                chunk.segment, position.segment,
                "a new segment without its header"
            );
        }
        if chunk.segment == position.segment {
            assert_eq!(chunk.offset, position.offset, "chunks are contiguous");
        }
        let (_, start, bytes) = received.get_mut(&chunk.segment).unwrap();
        assert_eq!(
            *start + bytes.len() as u64,
            chunk.offset,
            "bytes land right after the previous ones"
        );
        bytes.extend_from_slice(&chunk.bytes);
        if chunk.last_lsn != 0 {
            assert!(chunk.last_lsn > last_lsn);
            last_lsn = chunk.last_lsn;
        }
        position = chunk.next;
    }
    assert_eq!(
        position.next_lsn,
        wal.durable_lsn() + 1,
        "shipped through the durable LSN"
    );
    position
}

/// What was received is byte for byte what is on the primary's disk at the same offsets.
fn assert_identical(dir: &std::path::Path, received: &Received) {
    for (first_lsn, (header, start, bytes)) in received {
        let on_disk = std::fs::read(dir.join(segment_file_name(*first_lsn))).unwrap();
        assert_eq!(&on_disk[..64], header, "segment {first_lsn}: header");
        let start = *start as usize;
        assert_eq!(
            &on_disk[start..start + bytes.len()],
            &bytes[..],
            "segment {first_lsn} differs from what was shipped"
        );
    }
}

#[test]
fn shipped_bytes_rebuild_the_segments_exactly_and_only_durable_records_ship() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        Options {
            segment_bytes: 64 << 10,
            flush_interval_ms: 60_000,
            ..Options::default()
        },
    )
    .unwrap();
    let kind = RecordKind::new(5).unwrap();
    for i in 0..300 {
        wal.append(kind, &payload(i), Durability::Sync).unwrap();
    }
    let mut segments = BTreeMap::new();
    let position = ship_all(&wal, wal.ship_position_after(0).unwrap(), &mut segments);
    assert!(
        segments.len() > 3,
        "the log rotated: {} segments",
        segments.len()
    );
    assert_identical(dir.path(), &segments);

    // Written but not durable: nothing ships until a sync covers it.
    for i in 300..310 {
        wal.append(kind, &payload(i), Durability::None).unwrap();
    }
    assert!(wal.durable_lsn() < wal.written_lsn());
    assert!(wal.ship_chunk(&position, CHUNK).unwrap().is_none());
    wal.sync().unwrap();
    let end = ship_all(&wal, position, &mut segments);
    assert_eq!(end.next_lsn, 311);
    assert_identical(dir.path(), &segments);

    // Whole segments arrived whole: from their header to the last record.
    for (header, start, _) in segments.values() {
        assert_eq!(*start, 64, "{header:?}");
    }
    // Starting after any LSN gives the same bytes from that record on.
    for after in [1, 7, 8, 150, 299, 310] {
        let mut partial = BTreeMap::new();
        ship_all(&wal, wal.ship_position_after(after).unwrap(), &mut partial);
        assert_identical(dir.path(), &partial);
    }
    wal.close().unwrap();
}

#[test]
fn a_position_whose_records_are_gone_needs_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let wal = small_segment_log(dir.path());
    let old = wal.ship_position_after(3).unwrap();
    assert!(wal.remove_before(150).unwrap() > 0);
    assert!(matches!(
        wal.ship_chunk(&old, CHUNK),
        Err(WalError::NotRetained { .. })
    ));
    assert!(matches!(
        wal.ship_position_after(3),
        Err(WalError::NotRetained { .. })
    ));
    wal.close().unwrap();
}

#[test]
fn a_position_into_a_segment_compaction_rewrote_or_merged_needs_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let wal = small_segment_log(dir.path());
    let sealed = wal.sealed_segments();
    // Part of the first segment shipped, then compaction keeps one record of it.
    let chunk = wal
        .ship_chunk(&wal.ship_position_after(0).unwrap(), 2048)
        .unwrap()
        .unwrap();
    let in_second = wal.ship_position_after(sealed[1].first_lsn + 3).unwrap();
    wal.compact_range(sealed[0].first_lsn, sealed[1].last_lsn, |r| r.lsn == 9, 0)
        .unwrap();
    assert!(matches!(
        wal.ship_chunk(&chunk.next, 2048),
        Err(WalError::NotRetained { .. })
    ));
    // A position in the second segment, which was merged into the first.
    assert!(matches!(
        wal.ship_chunk(&in_second, 2048),
        Err(WalError::NotRetained { .. })
    ));
    // Shipping from the start works on the compacted log and rebuilds it exactly.
    let mut received = BTreeMap::new();
    ship_all(&wal, wal.ship_position_after(0).unwrap(), &mut received);
    assert_identical(dir.path(), &received);
    wal.close().unwrap();
}
