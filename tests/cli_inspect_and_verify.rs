//! `shiplog inspect` and `shiplog verify` as a user runs them: real processes, real files.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

mod common;

use std::os::unix::fs::FileExt;

use common::shiplog;
use shiplog::wal::{Options, segment_file_name};
use shiplog::{Durability, RecordKind, Wal};

#[test]
fn inspect_lists_every_record_and_verify_flags_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        Options {
            segment_bytes: 4096,
            ..Options::default()
        },
    )
    .unwrap();
    for i in 0..100u8 {
        wal.append(RecordKind::new(3).unwrap(), &[i; 50], Durability::Sync)
            .unwrap();
    }
    wal.close().unwrap();
    let first = dir.path().join(segment_file_name(1));
    let dir_arg = dir.path().to_str().unwrap();

    let (ok, out, _) = shiplog(&["inspect", first.to_str().unwrap(), "--json"]);
    assert!(ok);
    let records = out
        .lines()
        .filter(|l| l.contains("\"type\":\"record\""))
        .count();
    assert!(records > 10, "{out}");
    assert!(out.lines().next().unwrap().contains("\"first_lsn\":1"));
    assert!(out.lines().all(|l| !l.contains("lsn-gap")));

    let (ok, out, _) = shiplog(&["verify", dir_arg]);
    assert!(ok, "{out}");
    assert!(out.contains(&segment_file_name(1)));

    // Damage the payload of LSN 2 in the first (sealed) segment.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap();
    file.write_all_at(&[0xff], 64 + 75 + 30).unwrap();
    let (ok, out, err) = shiplog(&["verify", dir_arg]);
    assert!(!ok, "verify must fail on corruption");
    assert!(
        out.contains("CORRUPT") && out.contains("LSN 2"),
        "{out}{err}"
    );
    let (ok, out, _) = shiplog(&["inspect", first.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("CORRUPT"), "{out}");
}
