//! `shiplog verify --compare` as a user runs it: a byte-for-byte copy of a log is identical over
//! every LSN (exit 0); one flipped byte is reported with its offset and its record's LSN (exit 1).

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::shiplog_exit_code;
use shiplog::wal::{Options, parse_segment_file_name, segment_file_name};
use shiplog::{Durability, RecordKind, Wal};

fn options() -> Options {
    Options {
        segment_bytes: 4096,
        ..Options::default()
    }
}

/// Runs `shiplog verify --compare a b [extra]`: (exit code, stdout, stderr).
fn compare(a: &Path, b: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec![
        "verify",
        "--compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    shiplog_exit_code(&args)
}

#[test]
fn verify_compare_proves_a_copy_identical_and_finds_a_flipped_byte() {
    let primary = tempfile::tempdir().unwrap();
    let replica = tempfile::tempdir().unwrap();
    let (a, b) = (primary.path(), replica.path());
    let wal = Wal::open(a, options()).unwrap();
    for i in 0..100u8 {
        wal.append(RecordKind::new(3).unwrap(), &[i; 100], Durability::Sync)
            .unwrap();
    }
    let record = wal.read(40).unwrap().unwrap().location;
    wal.close().unwrap();
    for entry in std::fs::read_dir(a).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if parse_segment_file_name(&name).is_some() {
            std::fs::copy(a.join(&name), b.join(&name)).unwrap();
        }
    }

    let (code, out, err) = compare(a, b, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("identical: all 100 shared LSNs compared"),
        "{out}"
    );
    let (code, out, _) = compare(a, b, &["--json"]);
    assert_eq!(code, Some(0));
    let summary = out.lines().last().unwrap();
    assert!(summary.contains("\"type\":\"summary\""), "{out}");
    assert!(summary.contains("\"diverged\":false"), "{summary}");
    assert!(summary.contains("\"uncompared_lsns\":0"), "{summary}");

    // Damage the replica's copy of LSN 40, in a sealed segment.
    let offset = record.offset + 30;
    std::fs::OpenOptions::new()
        .write(true)
        .open(b.join(segment_file_name(record.segment)))
        .unwrap()
        .write_all_at(&[0xff], offset)
        .unwrap();
    let (code, out, err) = compare(a, b, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    let expected = format!(
        "DIVERGED at offset {offset}, in the record of LSN 40 at offset {}",
        record.offset
    );
    assert!(out.contains(&expected), "{out}");
    let (code, out, _) = compare(a, b, &["--json"]);
    assert_eq!(code, Some(1));
    let diverged = out
        .lines()
        .find(|l| l.contains("\"result\":\"diverged\""))
        .unwrap();
    assert!(
        diverged.contains(&format!("\"offset\":{offset},")) && diverged.contains("\"lsn\":40,"),
        "{diverged}"
    );

    // An error (here, a missing directory) exits 1 with a message, as `verify` does.
    let (code, _, err) = compare(a, &b.join("missing"), &[]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("shiplog: "), "{err}");
}
