//! The replica's side of shipping: a log received through `repl::Receiver` is byte for byte
//! the primary's over the shipped range, resumes after a reopen, and refuses bytes that do not
//! continue it without writing any of them.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;

use shiplog::Wal;
use shiplog::format::RecordKind;
use shiplog::repl::Receiver;
use shiplog::wal::{Durability, Entry, Options, ShipPosition, WalError, segment_file_name};

mod ship_chunks;

use ship_chunks::{deliver, small_segment_log};

const CHUNK: usize = 16 << 10;

fn options() -> Options {
    Options {
        segment_bytes: 64 << 10,
        ..Options::default()
    }
}

/// Batches of 1 to 4 records, some records larger than a chunk.
fn write_batches(wal: &Wal, from: usize, to: usize) {
    let kind = RecordKind::new(5).unwrap();
    for i in from..to {
        let payloads: Vec<Vec<u8>> = (0..1 + i % 4)
            .map(|r| {
                let len = if (i + r) % 37 == 0 {
                    40_000
                } else {
                    20 + (i * 13 + r) % 700
                };
                (0..len).map(|j| (i * 7 + r * 3 + j) as u8).collect()
            })
            .collect();
        let entries: Vec<Entry<'_>> = payloads
            .iter()
            .map(|p| Entry { kind, payload: p })
            .collect();
        wal.append_batch(&entries, Durability::Sync).unwrap();
    }
}

/// Ships every durable record from `position` into `replica`; returns the end position.
fn ship(
    primary: &Wal,
    replica: &Wal,
    receiver: &mut Receiver,
    mut position: ShipPosition,
) -> ShipPosition {
    while let Some(chunk) = primary.ship_chunk(&position, CHUNK).unwrap() {
        deliver(replica, receiver, &chunk).unwrap();
        position = chunk.next;
    }
    position
}

/// Every segment of `replica` is the primary's, byte for byte, up to its own end of records.
fn assert_identical(primary: &Path, replica: &Wal) {
    for (first_lsn, capacity) in replica.segment_extents() {
        let name = segment_file_name(first_lsn);
        let theirs = std::fs::read(primary.join(&name)).unwrap();
        let ours = std::fs::read(replica.dir().join(&name)).unwrap();
        assert_eq!(theirs.len() as u64, capacity, "{name}: same file size");
        assert_eq!(ours.len(), theirs.len(), "{name}: same file size");
        assert_eq!(ours, theirs, "{name} differs");
    }
}

#[test]
fn a_received_log_is_the_primarys_byte_for_byte_and_resumes_after_a_reopen() {
    let primary_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let primary = Wal::open(primary_dir.path(), options()).unwrap();
    write_batches(&primary, 0, 150);

    // A new, empty replica takes the primary's cluster and its first segment.
    let replica = Wal::open(replica_dir.path(), options()).unwrap();
    assert_ne!(replica.cluster_id(), primary.cluster_id());
    let mut receiver = Receiver::new(8 << 20);
    ship(
        &primary,
        &replica,
        &mut receiver,
        primary.ship_position_after(0).unwrap(),
    );
    assert_eq!(replica.cluster_id(), primary.cluster_id());
    assert_eq!(replica.durable_lsn(), primary.durable_lsn());
    assert!(
        replica.segment_extents().len() > 3,
        "the shipped log spans segments"
    );
    assert_identical(primary_dir.path(), &replica);
    for lsn in [1, 2, primary.durable_lsn()] {
        let (a, b) = (
            primary.read(lsn).unwrap().unwrap(),
            replica.read(lsn).unwrap().unwrap(),
        );
        assert_eq!(*a.payload, *b.payload);
        assert_eq!(a.location, b.location);
    }
    replica.close().unwrap();

    // The replica restarts and resumes from its own last LSN; the primary went on meanwhile.
    write_batches(&primary, 150, 260);
    let replica = Wal::open(replica_dir.path(), options()).unwrap();
    let mut receiver = Receiver::new(8 << 20);
    let from = primary.ship_position_after(replica.written_lsn()).unwrap();
    ship(&primary, &replica, &mut receiver, from);
    assert_eq!(replica.durable_lsn(), primary.durable_lsn());
    assert_identical(primary_dir.path(), &replica);
    replica.close().unwrap();
    primary.close().unwrap();
}

#[test]
fn bytes_that_do_not_continue_the_log_are_refused_and_nothing_of_them_is_written() {
    let primary_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let primary = Wal::open(primary_dir.path(), options()).unwrap();
    // From batch 1: batch 0 starts with a record larger than a chunk.
    write_batches(&primary, 1, 40);
    let replica = Wal::open(replica_dir.path(), options()).unwrap();
    let mut receiver = Receiver::new(8 << 20);
    let start = primary.ship_position_after(0).unwrap();
    let first = primary.ship_chunk(&start, 4096).unwrap().unwrap();
    deliver(&replica, &mut receiver, &first).unwrap();
    let held = replica.written_lsn();
    assert!(held > 0);
    let second = primary.ship_chunk(&first.next, 4096).unwrap().unwrap();
    let third = primary.ship_chunk(&second.next, 4096).unwrap().unwrap();

    // A gap: the third chunk before the second.
    let err = deliver(&replica, &mut Receiver::new(8 << 20), &third).unwrap_err();
    assert!(matches!(err, WalError::Shipment { .. }), "{err}");
    let err = receiver
        .segment_bytes(
            &replica,
            third.segment,
            third.offset,
            &third.bytes,
            third.last_lsn,
        )
        .unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");

    // A flipped bit in a record: its CRC fails; nothing is queued.
    let mut damaged = second.bytes.to_vec();
    damaged[100] ^= 0x10;
    let err = receiver
        .segment_bytes(
            &replica,
            second.segment,
            second.offset,
            &damaged,
            second.last_lsn,
        )
        .unwrap_err();
    assert!(matches!(err, WalError::Shipment { .. }), "{err}");
    assert_eq!(replica.written_lsn(), held);

    // Another cluster's segment after records of this one.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Wal::open(other_dir.path(), options()).unwrap();
    write_batches(&other, 0, 40);
    let theirs = other
        .ship_chunk(&other.ship_position_after(0).unwrap(), 4096)
        .unwrap()
        .unwrap();
    let err = Receiver::new(8 << 20)
        .segment_header(&replica, theirs.header.as_ref().unwrap(), theirs.capacity)
        .unwrap_err();
    assert!(err.to_string().contains("cluster"), "{err}");

    // The right bytes still go in afterwards, and the copy is exact.
    let mut receiver = Receiver::new(8 << 20);
    ship(
        &primary,
        &replica,
        &mut receiver,
        primary.ship_position_after(held).unwrap(),
    );
    assert_eq!(replica.durable_lsn(), primary.durable_lsn());
    assert_identical(primary_dir.path(), &replica);
}

#[test]
fn a_batch_split_across_frames_becomes_visible_only_whole() {
    let primary_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let primary = Wal::open(primary_dir.path(), options()).unwrap();
    let kind = RecordKind::new(5).unwrap();
    let big = vec![9u8; 3000];
    let entries: Vec<Entry<'_>> = (0..10)
        .map(|_| Entry {
            kind,
            payload: &big,
        })
        .collect();
    primary.append_batch(&entries, Durability::Sync).unwrap();
    let replica = Wal::open(replica_dir.path(), options()).unwrap();
    let mut receiver = Receiver::new(8 << 20);
    let mut position = primary.ship_position_after(0).unwrap();
    let mut chunks = 0;
    while let Some(chunk) = primary.ship_chunk(&position, 4096).unwrap() {
        let last = deliver(&replica, &mut receiver, &chunk).unwrap();
        chunks += 1;
        if chunk.next.next_lsn <= 10 {
            assert_eq!(last, 0, "no part of the batch is queued before its end");
            assert_eq!(replica.written_lsn(), 0);
        }
        position = chunk.next;
    }
    assert!(chunks > 5);
    assert_eq!(replica.written_lsn(), 10);
    // An unfinished batch is bounded.
    let mut small = Receiver::new(1000);
    let replica2_dir = tempfile::tempdir().unwrap();
    let replica2 = Wal::open(replica2_dir.path(), options()).unwrap();
    let chunk = primary
        .ship_chunk(&primary.ship_position_after(0).unwrap(), 4096)
        .unwrap()
        .unwrap();
    small
        .segment_header(&replica2, chunk.header.as_ref().unwrap(), chunk.capacity)
        .unwrap();
    let err = small
        .segment_bytes(
            &replica2,
            chunk.segment,
            chunk.offset,
            &chunk.bytes,
            chunk.last_lsn,
        )
        .unwrap_err();
    assert!(err.to_string().contains("largest batch"), "{err}");
}

#[test]
fn a_compacted_segment_arrives_whole_or_not_at_all_and_the_copy_stays_exact() {
    let primary_dir = tempfile::tempdir().unwrap();
    let primary = small_segment_log(primary_dir.path());
    let sealed = primary.sealed_segments();
    let through = sealed[2].last_lsn;
    primary
        .compact_range(sealed[0].first_lsn, through, |r| r.lsn % 3 == 0, 0)
        .unwrap();

    // Stopped while the compacted segment was arriving: none of it is on disk.
    let replica_dir = tempfile::tempdir().unwrap();
    let replica = Wal::open(replica_dir.path(), options()).unwrap();
    let mut receiver = Receiver::new(8 << 20);
    let first = primary
        .ship_chunk(&primary.ship_position_after(0).unwrap(), 1024)
        .unwrap()
        .unwrap();
    assert!(
        first.next.next_lsn <= through,
        "the first chunk is inside the compacted range"
    );
    assert_eq!(deliver(&replica, &mut receiver, &first).unwrap(), 0);
    assert_eq!(replica.written_lsn(), 0);
    replica.close().unwrap();

    // From the start again: it arrives whole once the next segment begins; stop right there.
    let replica = Wal::open(replica_dir.path(), options()).unwrap();
    let mut receiver = Receiver::new(8 << 20);
    let mut position = primary.ship_position_after(replica.written_lsn()).unwrap();
    loop {
        let chunk = primary.ship_chunk(&position, 1024).unwrap().unwrap();
        deliver(&replica, &mut receiver, &chunk).unwrap();
        position = chunk.next;
        if chunk.segment > through {
            break;
        }
    }
    assert!(replica.written_lsn() > through);
    replica.close().unwrap();

    // Stopped just after the compacted segment: resume from its end.
    let replica = Wal::open(replica_dir.path(), options()).unwrap();
    let mut receiver = Receiver::new(8 << 20);
    let from = primary.ship_position_after(replica.written_lsn()).unwrap();
    ship(&primary, &replica, &mut receiver, from);
    assert_eq!(replica.written_lsn(), primary.durable_lsn());
    assert_identical(primary_dir.path(), &replica);
    for lsn in [3, through, through + 1, primary.durable_lsn()] {
        assert_eq!(
            replica.read(lsn).unwrap().map(|r| r.payload.to_vec()),
            primary.read(lsn).unwrap().map(|r| r.payload.to_vec()),
            "LSN {lsn}"
        );
        assert_eq!(
            replica.digest_at(lsn).unwrap(),
            primary.digest_at(lsn).unwrap()
        );
    }
    replica.close().unwrap();

    // A replica that ended right at the compacted segment's end (its last record was dropped)
    // is placed after it, not refused.
    let replica = Wal::open(replica_dir.path(), options()).unwrap();
    assert!(primary.ship_position_after(through).is_ok());
    assert!(matches!(
        primary.ship_position_after(through - 1),
        Err(WalError::NotRetained { .. })
    ));
    replica.close().unwrap();
}
