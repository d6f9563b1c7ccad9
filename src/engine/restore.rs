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

impl Store {
    /// Starts a restore in place: marks it durably, then empties the log and the index.
    /// Readers see an empty store from here on and [`Store::restoring`] says so; the caller
    /// installs the base into [`Store::wal`], applies it, and calls [`Store::finish_restore`].
    ///
    /// # Errors
    /// I/O errors writing the marker or emptying the log.
    pub fn begin_restore(&self) -> Result<()> {
        let fs = self.wal.fs().as_ref();
        let dir = self.wal.dir();
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
        self.restoring.store(true, Ordering::Release);
        let _maintenance = self.maintenance.locked();
        let mut applier = self.applier.locked();
        let mut index = self.index.write_locked();
        applier.cursor = None;
        *index = Index::default();
        self.applied_lsn.store(0, Ordering::Release);
        checkpoint::remove(fs, dir)?;
        self.wal.reset()?;
        Ok(())
    }

    /// Ends a restore: everything installed is applied, then the marker goes, durably.
    ///
    /// # Errors
    /// Applying the installed log, or removing the marker.
    pub fn finish_restore(&self) -> Result<()> {
        self.apply_written()?;
        let fs = self.wal.fs().as_ref();
        let dir = self.wal.dir();
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
        self.restoring.store(false, Ordering::Release);
        Ok(())
    }

    /// Whether a restore is under way (or was interrupted): the store holds no usable state.
    #[must_use]
    pub fn restoring(&self) -> bool {
        self.restoring.load(Ordering::Acquire)
    }
}
