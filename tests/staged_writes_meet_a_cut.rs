//! Writes staged but not yet committed when a rewind or a restore cuts the log's end (a
//! primary that steps down, rejoins a new primary and rewinds, while a client's write waits
//! for the next group commit). The cut must not wait for the staged write's owner, which may
//! be blocked behind it, and the owner's commit must fail instead of reporting another record
//! that took the same LSN as its own.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use shiplog::{Db, DbError, DbOptions, Durability, WalError, WriteBatch};

#[derive(Debug, Clone, Copy)]
enum Cut {
    Rewind,
    Restore,
}

fn put(db: &Db, prefix: &str, n: u32) {
    for i in 0..n {
        db.put(format!("{prefix}{i}").as_bytes(), b"value").unwrap();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_cut_writes_a_staged_queue_itself_and_the_staged_write_then_fails_to_commit() {
    for cut in [Cut::Rewind, Cut::Restore] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), DbOptions::default()).unwrap());
        put(&db, "kept", 5);
        let fork = db.wal().durable_lsn();
        put(&db, "cut", 5);
        let cuts = db.wal().cuts();
        let mut batch = WriteBatch::new();
        batch.put(b"staged", b"never committed");
        let staged = db.stage_batch(&batch).unwrap().unwrap();
        assert!(staged > fork);

        // The owner of the staged write never commits it here, as an event loop blocked on
        // the index lock the cut holds would not.
        let (done, finished) = mpsc::channel();
        let cutter = Arc::clone(&db);
        std::thread::spawn(move || {
            let result = match cut {
                Cut::Rewind => cutter.rewind_to(fork),
                Cut::Restore => cutter.begin_restore().map(|()| None),
            };
            done.send(result.map_err(|e| e.to_string())).unwrap();
        });
        let rollback = finished
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{cut:?} waited for a staged write's owner"))
            .unwrap();
        if matches!(cut, Cut::Rewind) {
            // What a rewind cuts goes to the rollback file, the staged write included.
            let saved = std::fs::read(rollback.expect("a rollback file")).unwrap();
            assert!(contains(&saved, b"never committed"));
            assert!(contains(&saved, b"cut4"));
        }

        let refused = db
            .commit_through(staged, cuts, Durability::Sync)
            .unwrap_err();
        assert!(
            matches!(refused, DbError::Wal(WalError::Cut { lsn }) if lsn == staged),
            "{cut:?}: {refused}"
        );
        assert!(
            refused.to_string().contains("was cut from the log"),
            "{refused}"
        );
        assert!(db.get(b"staged").unwrap().is_none(), "{cut:?}");

        // New records take the cut LSNs; the old staged write still must not count as
        // committed.
        if matches!(cut, Cut::Restore) {
            db.finish_restore().unwrap();
        }
        put(&db, "new", 20);
        assert!(db.wal().written_lsn() >= staged);
        let refused = db
            .commit_through(staged, cuts, Durability::Sync)
            .unwrap_err();
        assert!(
            matches!(refused, DbError::Wal(WalError::Cut { .. })),
            "{cut:?}: {refused}"
        );
        assert!(db.get(b"staged").unwrap().is_none(), "{cut:?}");
        let kept = if matches!(cut, Cut::Rewind) { 5 } else { 0 };
        for i in 0..5 {
            let key = format!("kept{i}");
            assert_eq!(db.get(key.as_bytes()).unwrap().is_some(), i < kept, "{key}");
            assert!(db.get(format!("cut{i}").as_bytes()).unwrap().is_none());
        }
        // A write staged after the cut commits as usual.
        let cuts = db.wal().cuts();
        let mut batch = WriteBatch::new();
        batch.put(b"after", b"committed");
        let lsn = db.stage_batch(&batch).unwrap().unwrap();
        db.commit_through(lsn, cuts, Durability::Sync).unwrap();
        assert!(db.get(b"after").unwrap().is_some());
    }
}
