//! The key space as clients see it: the store, plus the writes that have their place in the log
//! but are not durable yet.
//!
//! A write command locks the stripes of its keys, reads the *latest* state of those keys
//! (staged writes first, then the store), stages its records in the log and releases the
//! stripes, all before any `fdatasync`. The connection answers only after
//! [`Keyspace::commit`] has made its writes durable and visible. Two things make this correct:
//! a stripe lock orders every write to a key, so read-modify-write commands (`INCR`, `SET NX`,
//! `APPEND`...) are atomic; and the log is a prefix after any crash, so a write computed from
//! a staged value is durable only if that value is too. Readers that take no lock (`GET`,
//! `MGET`, `SCAN`) see only the store, which holds durable writes only: nobody reads a write
//! that a crash could take back.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::{Db, DbError, Value, WriteBatch};
use crate::format::Lsn;
use crate::sync::MutexExt;
use crate::wal::Durability;

/// Number of lock stripes: collisions between unrelated keys cost a short wait, never a sync.
const STRIPES: usize = 1024;
/// Keys read from the index per page by `FLUSHALL`.
const FLUSH_PAGE_KEYS: usize = 10_000;

/// A write whose LSN is fixed but which may not be durable yet.
#[derive(Debug, Clone)]
struct Staged {
    lsn: Lsn,
    /// [`Wal::cuts`](crate::wal::Wal::cuts) read before it was staged.
    cuts: u64,
    /// `None` for a delete.
    value: Option<Arc<[u8]>>,
}

type Stripe = HashMap<Box<[u8]>, Staged>;

/// The current bytes of a key inside a write: staged or stored.
#[derive(Debug, Clone)]
pub enum Current {
    /// Staged by a write that is not committed yet.
    Staged(Arc<[u8]>),
    /// Read from the store.
    Stored(Value),
}

impl Current {
    /// The value's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Staged(bytes) => bytes,
            Self::Stored(value) => value.as_ref(),
        }
    }
}

/// The writes of one connection that are staged and not yet committed.
#[derive(Debug, Default)]
pub struct Uncommitted {
    last_lsn: Option<Lsn>,
    /// The log's cut count before the oldest write this depends on was staged: a cut since
    /// may have removed it.
    cuts: u64,
    /// Stripe, key, and the LSN and cut count of the staged entry.
    entries: Vec<(usize, Box<[u8]>, Lsn, u64)>,
}

impl Uncommitted {
    /// Makes the commit wait for `lsn` too, a write staged when the log's cut count was `cuts`.
    fn depend_on(&mut self, lsn: Lsn, cuts: u64) {
        self.cuts = match self.last_lsn {
            Some(_) => self.cuts.min(cuts),
            None => cuts,
        };
        self.last_lsn = Some(self.last_lsn.unwrap_or(0).max(lsn));
    }

    /// Whether anything waits for [`Keyspace::commit`].
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.last_lsn.is_none()
    }

    /// The LSN of the last staged write, if any.
    #[must_use]
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.last_lsn
    }

    /// The log's cut count before the oldest staged write this waits for (see
    /// [`Wal::cuts`](crate::wal::Wal::cuts)).
    #[must_use]
    pub fn cuts(&self) -> u64 {
        self.cuts
    }
}

/// Where stripe `index` is among the stripes a write locked (sorted by index).
///
/// # Panics
/// If the write did not lock it: a command touched a key it did not declare.
fn locked_at(stripes: &[(usize, MutexGuard<'_, Stripe>)], index: usize) -> usize {
    stripes
        .binary_search_by_key(&index, |(i, _)| *i)
        .unwrap_or_else(|_| panic!("key of stripe {index} was not locked by this write"))
}

/// One write command's view of its keys, with their stripes locked.
#[derive(Debug)]
pub struct WriteTxn<'a> {
    keyspace: &'a Keyspace,
    stripes: Vec<(usize, MutexGuard<'a, Stripe>)>,
    batch: WriteBatch,
    /// This write's own changes: key to new value (`None`: deleted).
    changes: HashMap<Box<[u8]>, Option<Arc<[u8]>>>,
    /// The highest LSN of a staged write this one read: its answer depends on that write, so
    /// it must not be given before that write is durable.
    read_lsn: Lsn,
    /// The lowest cut count among the staged writes it read.
    read_cuts: u64,
}

impl WriteTxn<'_> {
    fn stripe(&self, key: &[u8]) -> &Stripe {
        &self.stripes[locked_at(&self.stripes, self.keyspace.stripe_of(key))].1
    }

    /// The latest value of `key`, counting this write's own changes and staged writes.
    ///
    /// # Errors
    /// Store read errors.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Current>, DbError> {
        if let Some(value) = self.changes.get(key) {
            return Ok(value.clone().map(Current::Staged));
        }
        match self.stripe(key).get(key).cloned() {
            Some(staged) => {
                self.read_lsn = self.read_lsn.max(staged.lsn);
                self.read_cuts = self.read_cuts.min(staged.cuts);
                Ok(staged.value.map(Current::Staged))
            }
            None => Ok(self.keyspace.db.get(key)?.map(Current::Stored)),
        }
    }

    /// Whether `key` has a value, as [`WriteTxn::get`] sees it.
    ///
    /// # Errors
    /// Store read errors.
    pub fn exists(&mut self, key: &[u8]) -> Result<bool, DbError> {
        if let Some(value) = self.changes.get(key) {
            return Ok(value.is_some());
        }
        match self
            .stripe(key)
            .get(key)
            .map(|s| (s.lsn, s.cuts, s.value.is_some()))
        {
            Some((lsn, cuts, present)) => {
                self.read_lsn = self.read_lsn.max(lsn);
                self.read_cuts = self.read_cuts.min(cuts);
                Ok(present)
            }
            None => Ok(self.keyspace.db.contains(key)),
        }
    }

    /// Sets `key` to `value` when the write commits.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(
            self.stripes
                .iter()
                .any(|(i, _)| *i == self.keyspace.stripe_of(key))
        );
        self.batch.put(key, value);
        self.changes.insert(Box::from(key), Some(Arc::from(value)));
    }

    /// Removes `key` when the write commits.
    pub fn delete(&mut self, key: &[u8]) {
        debug_assert!(
            self.stripes
                .iter()
                .any(|(i, _)| *i == self.keyspace.stripe_of(key))
        );
        self.batch.delete(key);
        self.changes.insert(Box::from(key), None);
    }
}

/// The store plus staged writes, shared by every connection.
#[derive(Debug)]
pub struct Keyspace {
    db: Db,
    durability: Durability,
    stripes: Box<[Mutex<Stripe>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Keyspace {
    /// Serves `db`; writes are acknowledged at `durability` (`Sync` or `Buffered`).
    #[must_use]
    pub fn new(db: Db, durability: Durability) -> Self {
        Self {
            db,
            durability,
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The store underneath.
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The durability writes are acknowledged at.
    #[must_use]
    pub fn durability(&self) -> Durability {
        self.durability
    }

    fn stripe_of(&self, key: &[u8]) -> usize {
        // The modulo of a 64-bit hash by 1024 fits in usize on every platform.
        usize::try_from(self.hasher.hash_one(key) % STRIPES as u64).unwrap_or(0)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Stripe> {
        self.stripes[index].locked()
    }

    /// Runs one write command over `keys`: `body` reads and changes them atomically; what it
    /// changed is staged in the log and noted in `uncommitted`, to be committed with
    /// [`Keyspace::commit`] before the command is answered.
    ///
    /// # Errors
    /// Errors of `body`, or of staging the writes (then nothing of them is in the log).
    ///
    /// # Panics
    /// If `body` changes a key that is not in `keys`.
    pub fn write<R, E: From<DbError>>(
        &self,
        keys: &[&[u8]],
        uncommitted: &mut Uncommitted,
        body: impl FnOnce(&mut WriteTxn<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut indices: Vec<usize> = keys.iter().map(|k| self.stripe_of(k)).collect();
        indices.sort_unstable();
        indices.dedup();
        // Stripes are always taken in ascending order, so two writers never deadlock.
        let stripes = indices.into_iter().map(|i| (i, self.lock(i))).collect();
        let mut txn = WriteTxn {
            keyspace: self,
            stripes,
            batch: WriteBatch::new(),
            changes: HashMap::new(),
            read_lsn: 0,
            read_cuts: u64::MAX,
        };
        let result = body(&mut txn);
        if txn.read_lsn > 0 {
            // Even an answer that writes nothing (`SETNX` finding the key, an `INCR` error)
            // reveals the staged write it read: it waits for that write's commit.
            uncommitted.depend_on(txn.read_lsn, txn.read_cuts);
        }
        let result = result?;
        let cuts = self.db.wal().cuts();
        let Some(lsn) = self.db.stage_batch(&txn.batch)? else {
            return Ok(result);
        };
        let WriteTxn {
            mut stripes,
            changes,
            ..
        } = txn;
        for (key, value) in changes {
            let index = self.stripe_of(&key);
            let at = locked_at(&stripes, index);
            uncommitted.entries.push((index, key.clone(), lsn, cuts));
            stripes[at].1.insert(key, Staged { lsn, cuts, value });
        }
        uncommitted.depend_on(lsn, cuts);
        Ok(result)
    }

    /// Makes the staged writes durable (at the keyspace's durability) and visible, then
    /// forgets them.
    ///
    /// # Errors
    /// Log errors: the writes' fate is then unknown (a failed sync poisons the log, and every
    /// later write fails too).
    pub fn commit(&self, uncommitted: &mut Uncommitted) -> Result<(), DbError> {
        let Some(lsn) = uncommitted.last_lsn.take() else {
            return Ok(());
        };
        let committed = self
            .db
            .commit_through(lsn, uncommitted.cuts, self.durability);
        // Forget the staged entries either way: after a failure the log refuses every write,
        // so nothing may go on reading them as pending.
        for (index, key, staged_at, cuts) in uncommitted.entries.drain(..) {
            let mut stripe = self.lock(index);
            // A later write to the key may have replaced the entry: it is that write's to
            // remove (after a cut, a later write can have the same LSN, not the same count).
            if stripe
                .get(&key)
                .is_some_and(|s| s.lsn == staged_at && s.cuts == cuts)
            {
                stripe.remove(&key);
            }
        }
        committed
    }

    /// The value of `key` in the store (durable writes only).
    ///
    /// # Errors
    /// Store read errors.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>, DbError> {
        self.db.get(key)
    }

    /// Removes every key in one atomic batch (all or nothing, after a crash too), holding
    /// every stripe until the deletes are durable. Returns the number of keys removed and the
    /// LSN of the deletes (none when there was nothing to remove).
    ///
    /// # Errors
    /// Log errors, or a store too large to clear in one batch (`batch_bytes_max`).
    pub fn flush_all(&self) -> Result<(usize, Option<Lsn>), DbError> {
        let mut stripes: Vec<MutexGuard<'_, Stripe>> = (0..STRIPES).map(|i| self.lock(i)).collect();
        let mut batch = WriteBatch::new();
        for stripe in &stripes {
            for (key, staged) in stripe.iter() {
                if staged.value.is_some() {
                    batch.delete(key);
                }
            }
        }
        let mut after: Option<Box<[u8]>> = None;
        loop {
            let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let keys = self.db.keys_from(start, FLUSH_PAGE_KEYS);
            let Some(last_key) = keys.last().cloned() else {
                break;
            };
            for key in keys {
                // Keys with a staged write were decided above.
                if !stripes[self.stripe_of(&key)].contains_key(&key) {
                    batch.delete(&key);
                }
            }
            after = Some(last_key);
        }
        let removed = batch.len();
        let cuts = self.db.wal().cuts();
        let written = self.db.stage_batch(&batch)?;
        if let Some(lsn) = written {
            self.db.commit_through(lsn, cuts, self.durability)?;
            // Every staged write was older than the deletes and is applied now.
            for stripe in &mut stripes {
                stripe.clear();
            }
        }
        Ok((removed, written))
    }

    /// Closes the store (checkpoint and final sync).
    ///
    /// # Errors
    /// A failed checkpoint or sync.
    pub fn close(self) -> Result<(), DbError> {
        self.db.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DbOptions;

    #[test]
    fn an_answer_that_read_a_staged_write_waits_for_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let keyspace = Keyspace::new(
            Db::open(dir.path(), DbOptions::default()).unwrap(),
            Durability::Sync,
        );
        let mut writer = Uncommitted::default();
        keyspace
            .write::<_, DbError>(&[b"k"], &mut writer, |txn| {
                txn.put(b"k", b"v");
                Ok(())
            })
            .unwrap();
        let staged = writer.last_lsn().unwrap();
        // Another connection's SETNX finds the staged key and writes nothing, but its "0" is
        // a fact about that write: it must not be sent before the write is durable.
        let mut reader = Uncommitted::default();
        let existed = keyspace
            .write::<_, DbError>(&[b"k"], &mut reader, |txn| txn.exists(b"k"))
            .unwrap();
        assert!(existed);
        assert_eq!(reader.last_lsn(), Some(staged));
        assert!(
            keyspace.get(b"k").unwrap().is_none(),
            "not visible before commit"
        );
        keyspace.commit(&mut reader).unwrap();
        assert_eq!(keyspace.get(b"k").unwrap().unwrap().as_ref(), b"v");
        keyspace.commit(&mut writer).unwrap();
        assert!(keyspace.db().wal().durable_lsn() >= staged);
    }
}
