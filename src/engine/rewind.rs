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

pub(super) fn rewind_to(store: &Store, fork: Lsn) -> Result<Option<PathBuf>> {
    // Records queued and not yet written (a client's write staged as this node stepped
    // down) are cut too: written first, so the rollback file holds them as well.
    store.wal.sync_queued()?;
    if store.wal.written_lsn() <= fork {
        return Ok(None);
    }
    let saved = store.wal.save_tail(fork)?;
    store.restoring.store(true, Ordering::Release);
    let result = cut_and_rebuild(store, fork);
    store.restoring.store(false, Ordering::Release);
    result.map(|()| saved)
}

fn cut_and_rebuild(store: &Store, fork: Lsn) -> Result<()> {
    {
        let _maintenance = store.maintenance.locked();
        let mut applier = store.applier.locked();
        let mut index = store.index.write_locked();
        // The checkpoint may hold keys of cut records; the log alone is the truth now.
        let fs = store.wal.fs().as_ref();
        checkpoint::remove(fs, store.wal.dir())?;
        store.wal.truncate_after(fork)?;
        applier.cursor = None;
        *index = Index::default();
        store
            .applied_lsn
            .store(store.wal.first_lsn() - 1, Ordering::Release);
    }
    store.apply_written()?;
    Ok(())
}
