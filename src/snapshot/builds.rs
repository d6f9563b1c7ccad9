//! A primary's snapshot files for bootstrapping replicas: one build at a time, shared by every
//! replica that needs one while it is usable, kept in `DIR/snapshots/` so an interrupted
//! transfer can resume from the same file, even across a restart of the primary.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::engine::Store;
use crate::format::Lsn;
use crate::format::snapshot::{SNAPSHOT_HEADER_BYTES, SnapshotHeader};
use crate::io::FileSystem;

use super::error::{Result, SnapshotError};
use super::write::create_snapshot_file_in;
use crate::sync::{CondvarExt, MutexExt};

/// Subdirectory of the data directory holding snapshot files.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// A complete snapshot file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its header bytes, as in the file (a replica compares them to resume a transfer).
    pub header_bytes: [u8; SNAPSHOT_HEADER_BYTES],
    /// Its header.
    pub header: SnapshotHeader,
    /// Bytes of the whole file.
    pub file_bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Arc<SnapshotFile>>,
    building: bool,
}

/// The snapshot builds of one store.
#[derive(Debug)]
pub struct SnapshotBuilds {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    level: i32,
    state: Mutex<State>,
    built: Condvar,
}

fn file_name(lsn: Lsn) -> String {
    format!("snapshot-{lsn:020}.shsnap")
}

impl SnapshotBuilds {
    /// Opens `data_dir/snapshots` on `fs` (created by the first build): removes unfinished
    /// builds, keeps the newest complete file (its header is checked here; the replica
    /// verifies the whole file before using it).
    ///
    /// # Errors
    /// I/O errors listing the directory.
    pub fn open(fs: Arc<dyn FileSystem>, data_dir: &Path, level: i32) -> Result<Self> {
        let dir = data_dir.join(SNAPSHOTS_DIR);
        let mut found: Vec<SnapshotFile> = Vec::new();
        // Empty when the directory is missing: the first build creates it.
        let names = fs.entries(&dir).map_err(SnapshotError::io("list", &dir))?;
        for name in names {
            let path = dir.join(&name);
            // Removals here are not synced: a file that comes back after a power loss is
            // judged again at the next start.
            if name.starts_with('.') {
                tracing::info!(file = %path.display(), "removing an unfinished snapshot build");
                let _ = fs.remove(&path);
                continue;
            }
            match Self::describe(fs.as_ref(), &path) {
                Ok(file) => found.push(file),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "removing an unusable snapshot file");
                    let _ = fs.remove(&path);
                }
            }
        }
        found.sort_by_key(|f| f.header.lsn);
        let current = found.pop().map(Arc::new);
        for old in found {
            let _ = fs.remove(&old.path);
        }
        Ok(Self {
            fs,
            dir,
            level,
            state: Mutex::new(State {
                current,
                building: false,
            }),
            built: Condvar::new(),
        })
    }

    fn describe(fs: &dyn FileSystem, path: &Path) -> Result<SnapshotFile> {
        let file = fs
            .open(path, false)
            .map_err(SnapshotError::io("open", path))?;
        let file_bytes = file.size_bytes().map_err(SnapshotError::io("stat", path))?;
        let mut header_bytes = [0u8; SNAPSHOT_HEADER_BYTES];
        file.read_exact_at(&mut header_bytes, 0)
            .map_err(SnapshotError::io("read", path))?;
        let header = SnapshotHeader::decode(&header_bytes)?;
        Ok(SnapshotFile {
            path: path.to_owned(),
            header_bytes,
            header,
            file_bytes,
        })
    }

    /// The newest snapshot file, if any.
    #[must_use]
    pub fn current(&self) -> Option<Arc<SnapshotFile>> {
        self.lock().current.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    /// A snapshot for which `usable` holds: the current one, or one built now (by this
    /// caller, or by another caller whose build this one waits for and shares).
    ///
    /// # Errors
    /// The build failed.
    pub fn get_or_build(
        &self,
        store: &Store,
        usable: &dyn Fn(&SnapshotFile) -> bool,
    ) -> Result<Arc<SnapshotFile>> {
        let mut state = self.lock();
        loop {
            // A file removed or cut short behind this process's back is not offered.
            let intact = |c: &SnapshotFile| {
                self.fs
                    .open(&c.path, false)
                    .and_then(|f| f.size_bytes())
                    .is_ok_and(|len| len == c.file_bytes)
            };
            if let Some(current) = state.current.as_ref().filter(|c| intact(c) && usable(c)) {
                return Ok(Arc::clone(current));
            }
            if !state.building {
                break;
            }
            state = self.built.wait_locked(state);
        }
        state.building = true;
        drop(state);
        let result = self.build(store);
        let mut state = self.lock();
        state.building = false;
        self.built.notify_all();
        let file = Arc::new(result?);
        if let Some(old) = state.current.replace(Arc::clone(&file))
            && old.path != file.path
        {
            // A transfer still reading the old file keeps its open descriptor.
            let _ = self.fs.remove(&old.path);
        }
        Ok(file)
    }

    fn build(&self, store: &Store) -> Result<SnapshotFile> {
        let started = std::time::Instant::now();
        self.fs
            .create_dir_all(&self.dir)
            .map_err(SnapshotError::io("create directory", &self.dir))?;
        let state = store.freeze()?;
        let path = self.dir.join(file_name(state.lsn()));
        tracing::info!(
            lsn = state.lsn(),
            keys = state.key_count(),
            bytes = state.live_bytes(),
            "building a snapshot"
        );
        let summary =
            create_snapshot_file_in(self.fs.as_ref(), &state, &path, self.level, &mut |_| {})?;
        tracing::info!(
            lsn = summary.header.lsn,
            file_bytes = summary.file_bytes,
            ms = started.elapsed().as_millis(),
            "snapshot built"
        );
        Self::describe(self.fs.as_ref(), &path)
    }
}
