//! A clean close leaves an index checkpoint that the next open loads; a damaged or foreign
//! checkpoint is ignored and the index rebuilt from the log, with the same contents.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::os::unix::fs::FileExt;

use shiplog::engine::{CHECKPOINT_FILE_NAME, CheckpointStatus};
use shiplog::{Db, DbOptions, Durability};

fn fill(db: &Db) {
    for i in 0..500u32 {
        db.put_with(
            format!("key{i:04}").as_bytes(),
            &i.to_le_bytes().repeat(10),
            Durability::None,
        )
        .unwrap();
    }
    for i in (0..500u32).step_by(7) {
        db.delete_with(format!("key{i:04}").as_bytes(), Durability::None)
            .unwrap();
    }
}

fn contents(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.range::<&[u8], _>(..)
        .map(|r| r.unwrap())
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

#[test]
fn a_clean_close_checkpoints_and_a_damaged_checkpoint_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    assert_eq!(db.checkpoint_status(), &CheckpointStatus::Missing);
    fill(&db);
    let expected = contents(&db);
    let last = db.stats().last_lsn;
    db.close().unwrap();

    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    assert_eq!(
        db.checkpoint_status(),
        &CheckpointStatus::Loaded {
            applied_lsn: last,
            entries: expected.len() as u64
        }
    );
    assert_eq!(contents(&db), expected);
    // Writes after the checkpoint are replayed from the log on the next open.
    db.put(b"after", b"checkpoint").unwrap();
    drop(db); // no close: the checkpoint on disk is now behind the log
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    assert!(
        matches!(db.checkpoint_status(), CheckpointStatus::Loaded { applied_lsn, .. } if *applied_lsn == last)
    );
    assert_eq!(&*db.get(b"after").unwrap().unwrap(), b"checkpoint");
    let expected = contents(&db);
    db.close().unwrap();

    // Damage one byte in the middle of the checkpoint.
    let path = dir.path().join(CHECKPOINT_FILE_NAME);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    let middle = file.metadata().unwrap().len() / 2;
    file.read_exact_at(&mut byte, middle).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], middle).unwrap();
    drop(file);
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    assert!(
        matches!(db.checkpoint_status(), CheckpointStatus::Ignored(reason) if reason.contains("checksum")),
        "{:?}",
        db.checkpoint_status()
    );
    assert_eq!(contents(&db), expected);
}
