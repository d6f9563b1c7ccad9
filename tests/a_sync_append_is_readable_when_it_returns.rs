//! A `Sync` append is readable when it returns: the write role once published `durable_lsn`
//! for a sealed segment before `written_lsn`, so a sync role that finished in that window woke
//! a `Sync` appender whose record was not yet visible to readers (or to `Db::catch_up`). A
//! file system that delays one `fdatasync` and one first-record write opens that window.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]
use std::path::Path;
use std::sync::Arc;

use shiplog::io::SimFs;
use shiplog::wal::Options;
use shiplog::{Durability, RecordKind, Wal};

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
