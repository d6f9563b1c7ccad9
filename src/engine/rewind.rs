//! Rewinding a running store to a fork point (a diverged node rejoining a new primary): the
//! records after it are saved under `DIR/rollback/`, cut from the log, and the index is
//! rebuilt from what remains. Readers are told the store is loading meanwhile
//! ([`Store::restoring`]), never shown a half-rebuilt index.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::format::Lsn;

use super::error::Result;
use super::index::Index;
use super::{Store, checkpoint};
use crate::sync::{MutexExt, RwLockExt};

impl Store {
    /// Saves the records after `fork` to a rollback file, cuts them from the log and rebuilds
    /// the index. Returns the rollback file (`None`: nothing was after `fork`).
    ///
    /// # Errors
    /// `CannotRewind` (nothing changed, the store still serves its state: empty it with a
    /// restore instead), I/O errors.
    pub fn rewind_to(&self, fork: Lsn) -> Result<Option<PathBuf>> {
        // Records queued and not yet written (a client's write staged as this node stepped
        // down) are cut too: written first, so the rollback file holds them as well.
        self.wal.sync_queued()?;
        if self.wal.written_lsn() <= fork {
            return Ok(None);
        }
        let saved = self.wal.save_tail(fork)?;
        self.restoring.store(true, Ordering::Release);
        let result = self.cut_and_rebuild(fork);
        self.restoring.store(false, Ordering::Release);
        result.map(|()| saved)
    }

    fn cut_and_rebuild(&self, fork: Lsn) -> Result<()> {
        {
            let _maintenance = self.maintenance.locked();
            let mut applier = self.applier.locked();
            let mut index = self.index.write_locked();
            // The checkpoint may hold keys of cut records; the log alone is the truth now.
            let fs = self.wal.fs().as_ref();
            checkpoint::remove(fs, self.wal.dir())?;
            self.wal.truncate_after(fork)?;
            applier.cursor = None;
            *index = Index::default();
            self.applied_lsn
                .store(self.wal.first_lsn() - 1, Ordering::Release);
        }
        self.apply_written()?;
        Ok(())
    }
}
