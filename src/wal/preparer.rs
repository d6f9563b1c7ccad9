//! Keeps the next segment file ready: a background thread creates, preallocates and zero-fills
//! a blank file, so that rotation under the append lock is one header write, one `fdatasync`,
//! a rename and a directory sync, instead of writing 64 MiB while every writer waits.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::io::FileSystem;

use super::segment::{BlankSegment, prepared_file_name};
use crate::sync::{CondvarExt, MutexExt};

#[derive(Debug, Default)]
struct Slot {
    ready: Option<BlankSegment>,
    stop: bool,
}

/// The background preparer of blank segments.
#[derive(Debug)]
pub(crate) struct SegmentPreparer {
    slot: Arc<(Mutex<Slot>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    capacity_bytes: u64,
}

impl SegmentPreparer {
    /// Starts the thread; it prepares `capacity_bytes` files in `dir`.
    pub fn start(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        capacity_bytes: u64,
        zero_fill: bool,
    ) -> Self {
        let slot: Arc<(Mutex<Slot>, Condvar)> = Arc::default();
        let shared = Arc::clone(&slot);
        let thread = std::thread::Builder::new()
            .name("shiplog-wal-prepare".to_owned())
            .spawn(move || {
                let (lock, wake) = &*shared;
                for n in 0.. {
                    {
                        let mut slot = lock.locked();
                        while slot.ready.is_some() && !slot.stop {
                            slot = wake.wait_locked(slot);
                        }
                        if slot.stop {
                            return;
                        }
                    }
                    let path = dir.join(prepared_file_name(n));
                    if let Ok(blank) =
                        BlankSegment::prepare(fs.as_ref(), path.clone(), capacity_bytes, zero_fill)
                    {
                        lock.locked().ready = Some(blank);
                    } else {
                        // Rotation falls back to creating the file itself and reports the error
                        // to its caller; try again later (the disk may have room by then).
                        let _ = fs.remove(&path);
                        let slot = lock.locked();
                        let _ = wake.wait_timeout(slot, Duration::from_secs(1));
                    }
                }
            })
            .expect("spawning the segment preparer thread");
        Self {
            slot,
            thread: Some(thread),
            capacity_bytes,
        }
    }

    /// Takes the prepared file if there is one that holds `capacity_bytes`.
    pub fn take(&self, capacity_bytes: u64) -> Option<BlankSegment> {
        if capacity_bytes > self.capacity_bytes {
            return None;
        }
        let (lock, wake) = &*self.slot;
        let blank = lock.locked().ready.take();
        wake.notify_all();
        blank
    }

    /// Stops the thread; a prepared file stays on disk and is removed by the next recovery.
    pub fn stop(&mut self) {
        let (lock, wake) = &*self.slot;
        lock.locked().stop = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SegmentPreparer {
    fn drop(&mut self) {
        self.stop();
    }
}
