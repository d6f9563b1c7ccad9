//! Regressions found by review: each test failed before its fix.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]
use std::path::Path;
use std::sync::Arc;

use shiplog::io::{CrashMode, SimFs, SimOp};
use shiplog::wal::Options;
use shiplog::{Durability, RecordKind, Wal};

fn opts(fs: &SimFs) -> Options {
    Options {
        segment_bytes: 4096,
        prepare_next_segment: false,
        flush_interval_ms: 60_000,
        fs: Arc::new(fs.clone()),
        ..Options::default()
    }
}

/// F1: after kill -9 the recovered tail segment holds unsynced bytes, but open publishes them as
/// durable and the first write into a new segment does not seal the old one.
#[test]
fn a_sync_ack_after_a_kill_and_reopen_survives_power_loss() {
    let kind = RecordKind::new(1).unwrap();
    let dir = Path::new("/log");
    let fs1 = SimFs::new();
    let wal = Wal::open(dir, opts(&fs1)).unwrap();
    for _ in 0..31 {
        wal.append(kind, &[7u8; 100], Durability::None).unwrap(); // 125 B each, 31 fit
    }
    let fs2 = fs1.process_crash(); // kill -9: page cache survives, nothing synced
    std::mem::forget(wal);
    let wal = Wal::open(dir, opts(&fs2)).unwrap();
    assert_eq!(wal.durable_lsn(), 31); // claims 1..=31 durable; they are not
    // Does not fit in segment 1: rotates; acknowledged only after fdatasync.
    let lsn = wal.append(kind, &[9u8; 200], Durability::Sync).unwrap();
    assert_eq!(lsn, 32);
    let fs3 = fs2.crash(CrashMode::DropUnsynced); // power loss
    std::mem::forget(wal);
    let wal = Wal::open(dir, opts(&fs3)).expect("open after power loss");
    let rec = wal.read(32).unwrap().expect("acknowledged Sync record 32");
    assert_eq!(&*rec.payload, &[9u8; 200][..]);
}

/// F4: a failed rotation (disk full) leaves `<lsn>.seg.tmp` behind; every later rotation at the
/// same LSN fails with EEXIST until the log is reopened.
#[test]
fn rotation_recovers_after_the_disk_was_full() {
    let kind = RecordKind::new(1).unwrap();
    let fs = SimFs::new();
    let wal = Wal::open(Path::new("/log"), opts(&fs)).unwrap();
    for _ in 0..32 {
        wal.append(kind, &[7u8; 100], Durability::None).unwrap();
    }
    let n = fs.op_count(SimOp::Allocate);
    fs.fail_nth(SimOp::Allocate, n + 1, 28); // ENOSPC once
    let first = wal.append(kind, &[1u8; 100], Durability::Sync);
    assert!(first.is_err(), "{first:?}");
    // The disk has room again.
    let second = wal.append(kind, &[1u8; 100], Durability::Sync);
    assert!(second.is_ok(), "log did not go on: {second:?}");
}

use shiplog::format::kv::{KIND_DELETE, KIND_PUT, encode_delete, encode_put};
use shiplog::{Db, DbOptions};

fn db_opts(fs: &SimFs) -> DbOptions {
    let mut o = DbOptions {
        wal: opts(fs),
        ..DbOptions::default()
    };
    o.compaction.enabled = false;
    o.compaction.bytes_per_sec = 0;
    o
}

/// F2: compaction judges liveness by the index, which lags the log (`append` returns before
/// `catch_up`). A record that is written+durable but not yet applied is judged dead.
/// `db.wal().append` reproduces, deterministically, the window between `wal.append` and
/// `catch_up` inside `Db::put_with` / `delete_with`.
#[test]
fn compaction_keeps_records_written_but_not_yet_applied() {
    let fs = SimFs::new();
    let dir = Path::new("/db");
    let db = Db::open(dir, db_opts(&fs)).unwrap();
    db.put(b"k", b"v1").unwrap();
    db.put(b"gone", b"x").unwrap();
    for i in 0..40u32 {
        db.put(format!("fill{i}").as_bytes(), &[0u8; 100]).unwrap();
    }
    // The window: both records written and durable (Sync), not yet applied to the index.
    let mut p = Vec::new();
    encode_put(&mut p, b"k", b"v2");
    db.wal().append(KIND_PUT, &p, Durability::Sync).unwrap();
    let mut d = Vec::new();
    encode_delete(&mut d, b"gone");
    db.wal().append(KIND_DELETE, &d, Durability::Sync).unwrap();
    for i in 0..40u32 {
        let mut f = Vec::new();
        encode_put(&mut f, format!("more{i}").as_bytes(), &[0u8; 100]);
        db.wal().append(KIND_PUT, &f, Durability::Sync).unwrap();
    }
    db.compact().unwrap();
    db.close().unwrap();
    let db = Db::open(dir, db_opts(&fs)).unwrap();
    let gone = db.get(b"gone").unwrap();
    assert_eq!(
        db.get(b"k").unwrap().as_deref(),
        Some(&b"v2"[..]),
        "acknowledged put lost"
    );
    assert_eq!(gone.as_deref(), None, "deleted key resurrected");
}

mod slow {
    use std::io;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use shiplog::io::{DirLock, FileSystem, LockError, LogFile, Mapping, SimFs};

    /// Next `sync_data` sleeps this many ms (once).
    pub static SYNC_DELAY_ONCE: AtomicU64 = AtomicU64::new(0);
    /// Next write at offset 64 (first record of a segment) sleeps this many ms (once).
    pub static FIRST_RECORD_WRITE_DELAY_ONCE: AtomicU64 = AtomicU64::new(0);

    #[derive(Debug, Clone)]
    pub struct SlowFs(pub SimFs);
    #[derive(Debug)]
    struct SlowFile(Arc<dyn LogFile>);

    impl FileSystem for SlowFs {
        fn create_dir_all(&self, d: &Path) -> io::Result<()> {
            self.0.create_dir_all(d)
        }
        fn list(&self, d: &Path) -> io::Result<Vec<String>> {
            self.0.list(d)
        }
        fn create(&self, p: &Path) -> io::Result<Arc<dyn LogFile>> {
            Ok(Arc::new(SlowFile(self.0.create(p)?)))
        }
        fn open(&self, p: &Path, w: bool) -> io::Result<Arc<dyn LogFile>> {
            Ok(Arc::new(SlowFile(self.0.open(p, w)?)))
        }
        fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
            self.0.rename(a, b)
        }
        fn remove(&self, p: &Path) -> io::Result<()> {
            self.0.remove(p)
        }
        fn sync_dir(&self, d: &Path) -> io::Result<()> {
            self.0.sync_dir(d)
        }
        fn entries(&self, d: &Path) -> io::Result<Vec<String>> {
            self.0.entries(d)
        }
        fn rename_dir(&self, a: &Path, b: &Path) -> io::Result<()> {
            self.0.rename_dir(a, b)
        }
        fn remove_dir_all(&self, d: &Path) -> io::Result<()> {
            self.0.remove_dir_all(d)
        }
        fn lock_dir(&self, d: &Path) -> Result<Box<dyn DirLock>, LockError> {
            self.0.lock_dir(d)
        }
        fn mappings_are_live(&self) -> bool {
            false
        }
    }
    impl LogFile for SlowFile {
        fn size_bytes(&self) -> io::Result<u64> {
            self.0.size_bytes()
        }
        fn read_exact_at(&self, b: &mut [u8], o: u64) -> io::Result<()> {
            self.0.read_exact_at(b, o)
        }
        fn write_all_at(&self, b: &[u8], o: u64) -> io::Result<()> {
            if o == 64 {
                let ms = FIRST_RECORD_WRITE_DELAY_ONCE.swap(0, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(ms));
            }
            self.0.write_all_at(b, o)
        }
        fn sync_data(&self) -> io::Result<()> {
            let ms = SYNC_DELAY_ONCE.swap(0, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(ms));
            self.0.sync_data()
        }
        fn allocate(&self, l: u64) -> io::Result<()> {
            self.0.allocate(l)
        }
        fn truncate(&self, l: u64) -> io::Result<()> {
            self.0.truncate(l)
        }
        fn map(&self) -> io::Result<Arc<dyn Mapping>> {
            self.0.map()
        }
    }
}

/// F3: the write role publishes `durable_lsn` for a sealed segment before it publishes
/// `written_lsn`; a sync role that finishes in that window wakes a `Sync` appender whose record
/// is not yet visible to readers (or to `Db::catch_up`).
#[test]
fn a_sync_append_is_readable_when_it_returns() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let kind = RecordKind::new(1).unwrap();
    let fs = slow::SlowFs(SimFs::new());
    let options = Options {
        segment_bytes: 4096,
        prepare_next_segment: false,
        flush_interval_ms: 60_000,
        fs: Arc::new(fs),
        ..Options::default()
    };
    let wal = Wal::open(Path::new("/log"), options).unwrap();
    for _ in 0..31 {
        wal.append(kind, &[7u8; 100], Durability::None).unwrap();
    }
    slow::SYNC_DELAY_ONCE.store(300, Ordering::SeqCst);
    std::thread::scope(|s| {
        let syncer = s.spawn(|| wal.sync().unwrap()); // sync role in flight for 300 ms
        std::thread::sleep(Duration::from_millis(50));
        let t = s.spawn(|| {
            let lsn = wal.append(kind, &[8u8; 100], Durability::Sync).unwrap(); // LSN 32, last fit
            (lsn, wal.written_lsn(), wal.read(lsn).unwrap().is_some())
        });
        std::thread::sleep(Duration::from_millis(50));
        slow::FIRST_RECORD_WRITE_DELAY_ONCE.store(600, Ordering::SeqCst);
        let u = s.spawn(|| wal.append(kind, &[9u8; 100], Durability::Buffered).unwrap()); // rotates
        let (lsn, written, visible) = t.join().unwrap();
        syncer.join().unwrap();
        u.join().unwrap();
        assert!(
            visible,
            "append returned LSN {lsn} while written_lsn = {written}: not readable"
        );
    });
}
