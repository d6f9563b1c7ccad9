//! Restoring a running store in place from a snapshot (a replica's bootstrap): a durable
//! marker file says a restore is under way from the moment the old state starts to go until
//! the whole base is installed. A store opened with the marker present throws away whatever
//! it finds (a half-installed base, or the old state) and stays empty and marked until a
//! restore completes, so a partial state is never served as a whole one.

use std::path::Path;
use std::sync::atomic::Ordering;

use crate::io::FileSystem;
use crate::wal::{WalError, parse_segment_file_name};

use super::error::Result;
use super::index::Index;
use super::{Store, checkpoint};
use crate::sync::{MutexExt, RwLockExt};

/// Name of the marker file of a restore under way.
pub const RESTORE_MARKER_FILE_NAME: &str = "RESTORING";

/// Whether `dir` holds the marker of an unfinished restore; if so, removes every segment and
/// the checkpoint (never the marker), so the log opens empty.
pub(crate) fn clear_unfinished(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    let Ok(names) = fs.list(dir) else {
        return Ok(false);
    };
    if !names.iter().any(|n| n == RESTORE_MARKER_FILE_NAME) {
        return Ok(false);
    }
    tracing::warn!(
        dir = %dir.display(),
        "a restore from a snapshot was interrupted; discarding what it left, the store stays \
         empty until a restore completes"
    );
    for name in &names {
        if parse_segment_file_name(name).is_some() {
            let path = dir.join(name);
            fs.remove(&path)
                .map_err(|e| WalError::io("remove", &path, e))?;
        }
    }
    checkpoint::remove(fs, dir)?;
    fs.sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    Ok(true)
}

pub(super) fn begin_restore(store: &Store) -> Result<()> {
    let fs = store.wal.fs().as_ref();
    let dir = store.wal.dir();
    let marker = dir.join(RESTORE_MARKER_FILE_NAME);
    let io = |op| move |e| WalError::io(op, dir.join(RESTORE_MARKER_FILE_NAME), e);
    let already = fs
        .list(dir)
        .is_ok_and(|n| n.iter().any(|n| n == RESTORE_MARKER_FILE_NAME));
    if !already {
        let file = fs.create(&marker).map_err(io("create"))?;
        file.sync_data().map_err(io("fdatasync"))?;
        fs.sync_dir(dir).map_err(io("fsync directory of"))?;
    }
    store.restoring.store(true, Ordering::Release);
    let _maintenance = store.maintenance.locked();
    let mut applier = store.applier.locked();
    let mut index = store.index.write_locked();
    applier.cursor = None;
    *index = Index::default();
    store.applied_lsn.store(0, Ordering::Release);
    checkpoint::remove(fs, dir)?;
    store.wal.reset()?;
    Ok(())
}

pub(super) fn finish_restore(store: &Store) -> Result<()> {
    store.apply_written()?;
    let fs = store.wal.fs().as_ref();
    let dir = store.wal.dir();
    let marker = dir.join(RESTORE_MARKER_FILE_NAME);
    if fs
        .list(dir)
        .is_ok_and(|n| n.iter().any(|n| n == RESTORE_MARKER_FILE_NAME))
    {
        fs.remove(&marker)
            .map_err(|e| WalError::io("remove", &marker, e))?;
        fs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync directory", dir, e))?;
    }
    store.restoring.store(false, Ordering::Release);
    Ok(())
}
