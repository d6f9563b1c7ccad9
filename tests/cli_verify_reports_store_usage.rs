//! `shiplog verify` on a store: live and dead bytes per segment, and the index checkpoint
//! checked against the records it points at.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::os::unix::fs::FileExt;

use common::shiplog;
use shiplog::engine::CHECKPOINT_FILE_NAME;
use shiplog::{Db, DbOptions, Durability};

fn verify(dir: &std::path::Path) -> (bool, String) {
    let (ok, stdout, _) = shiplog(&["verify", dir.to_str().unwrap(), "--json"]);
    (ok, stdout)
}

fn number(line: &str, field: &str) -> u64 {
    let at = line.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
    line[at..]
        .split([',', '}'])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn verify_reports_live_and_dead_bytes_and_checks_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = DbOptions::default();
    options.wal.segment_bytes = 16 * 1024;
    let db = Db::open(dir.path(), options).unwrap();
    // Each key written three times: two thirds of the put bytes are dead.
    for round in 0..3u8 {
        for i in 0..100u32 {
            db.put_with(
                format!("key{i:03}").as_bytes(),
                &[round; 100],
                Durability::None,
            )
            .unwrap();
        }
    }
    db.close().unwrap();

    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");
    let segments: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("{\"segment\""))
        .collect();
    assert!(segments.len() >= 2, "{out}");
    let live: u64 = segments.iter().map(|l| number(l, "live_bytes")).sum();
    let dead: u64 = segments.iter().map(|l| number(l, "dead_bytes")).sum();
    let record_bytes = 25 + 4 + 6 + 100;
    assert_eq!(live, 100 * record_bytes);
    assert_eq!(dead, 200 * record_bytes);
    assert!(out.contains("ok: 100 keys at LSN 300"), "{out}");

    let path = dir.path().join(CHECKPOINT_FILE_NAME);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xEE], 100).unwrap();
    let (ok, out) = verify(dir.path());
    assert!(!ok, "a damaged checkpoint must fail verify");
    assert!(out.contains("INVALID"), "{out}");
}
