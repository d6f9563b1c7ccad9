//! Damage that is not a torn tail makes open fail with the file, offset and LSN, and changes
//! nothing on disk.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shiplog::format::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use shiplog::wal::Options;
use shiplog::{Durability, RecordKind, Wal, WalError};

const PAYLOAD_BYTES: usize = 100;
const RECORD_BYTES: u64 = (RECORD_HEADER_BYTES + PAYLOAD_BYTES) as u64;

fn options() -> Options {
    Options {
        segment_bytes: 8192,
        ..Options::default()
    }
}

/// Writes `count` records of 100 bytes; returns the segment files in LSN order.
fn build_log(dir: &Path, count: u64) -> Vec<PathBuf> {
    let wal = Wal::open(dir, options()).unwrap();
    for lsn in 1..=count {
        wal.append(
            RecordKind::new(1).unwrap(),
            &[lsn as u8; PAYLOAD_BYTES],
            // Synced one by one, so every record knows its predecessors were durable: damage
            // to any of them is then provably damage to acknowledged data.
            Durability::Sync,
        )
        .unwrap();
    }
    wal.close().unwrap();
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, offset: u64) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], offset).unwrap();
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("LOCK"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect()
}

fn expect_corrupt(dir: &Path, file: &Path, offset: u64, lsn: u64) {
    let before = snapshot(dir);
    match Wal::open(dir, options()) {
        Err(WalError::Corrupt {
            file: f,
            offset: o,
            lsn: l,
            ..
        }) => {
            assert_eq!((f.as_path(), o, l), (file, offset, lsn));
        }
        other => panic!(
            "expected corruption at {} offset {offset} LSN {lsn}, got {other:?}",
            file.display()
        ),
    }
    assert!(
        before == snapshot(dir),
        "a failed open changed files on disk"
    );
    let reports = shiplog::wal::verify_dir(&shiplog::io::RealFs, dir).unwrap();
    assert!(
        reports
            .iter()
            .any(|r| matches!(r.status, shiplog::wal::SegmentStatus::Corrupt(_)) && r.path == file)
    );
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let files = build_log(dir.path(), 200);
    assert!(files.len() >= 3);
    // The fifth record of the first segment.
    let offset = SEGMENT_HEADER_BYTES as u64 + 4 * RECORD_BYTES;
    flip_byte(&files[0], offset + 30);
    expect_corrupt(dir.path(), &files[0], offset, 5);
}

#[test]
fn a_bad_record_followed_by_valid_ones_in_the_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let files = build_log(dir.path(), 200);
    let last = files.last().unwrap();
    let first_lsn: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let offset = SEGMENT_HEADER_BYTES as u64 + RECORD_BYTES;
    flip_byte(last, offset + 25);
    expect_corrupt(dir.path(), last, offset, first_lsn + 1);
}

#[test]
fn a_missing_middle_segment_is_an_lsn_gap() {
    let dir = tempfile::tempdir().unwrap();
    let files = build_log(dir.path(), 200);
    fs::remove_file(&files[1]).unwrap();
    let first_lsn: u64 = files[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    expect_corrupt(dir.path(), &files[2], 0, first_lsn);
}

#[test]
fn a_bad_segment_header_fails_open_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = build_log(dir.path(), 200);
    flip_byte(&files[1], 33);
    let before = snapshot(dir.path());
    match Wal::open(dir.path(), options()) {
        Err(WalError::BadHeader { file, .. }) => assert_eq!(file, files[1]),
        other => panic!("expected a bad header error, got {other:?}"),
    }
    assert!(before == snapshot(dir.path()));
}

#[test]
fn a_torn_tail_is_cut_back_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let files = build_log(dir.path(), 200);
    let last = files.last().unwrap();
    let first_lsn: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let wal = Wal::open(dir.path(), options()).unwrap();
    let last_lsn = wal.durable_lsn();
    drop(wal);
    // Tear the last record: garbage over its second half, as a half-finished write leaves.
    let records_in_last = last_lsn - first_lsn + 1;
    let end = SEGMENT_HEADER_BYTES as u64 + records_in_last * RECORD_BYTES;
    let file = fs::OpenOptions::new().write(true).open(last).unwrap();
    file.write_all_at(&[0xAB; 60], end - 60).unwrap();
    let wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(wal.durable_lsn(), last_lsn - 1);
    assert!(
        wal.recovery_report()
            .iter()
            .any(|r| matches!(r.status, shiplog::wal::SegmentStatus::TornTail { .. }))
    );
    assert_eq!(
        wal.append(RecordKind::new(1).unwrap(), b"x", Durability::Sync)
            .unwrap(),
        last_lsn
    );
}
