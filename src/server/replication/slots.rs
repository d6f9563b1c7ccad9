//! Retention slots: for each replica that ever connected, the log it still needs, kept on
//! disk and holding compaction back (`docs/design.md`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Replication;
use crate::format::slots::{SLOTS_MAX, Slot, encode_slots, parse_slots};
use crate::io::{RealFs, read_file, replace_file};
use crate::server::acks::AckLevel;
use crate::sync::MutexExt;

/// File in the data directory holding the retention slots of this primary's replicas.
const SLOTS_FILE: &str = "replica-slots";

/// How often slots follow their replicas' progress (and how stale the file may be).
const SLOT_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// The retention slots: for each replica that ever connected, the log it still needs.
#[derive(Debug)]
pub(super) struct SlotTable {
    pub(super) path: std::path::PathBuf,
    pub(super) slots: Vec<Slot>,
    /// Bytes of log each slot holds, from the last tick.
    pub(super) retained: Vec<u64>,
    /// The file lags `slots`.
    pub(super) dirty: bool,
    /// Replicas whose slot was dropped over the cap, until they start a new session.
    pub(super) dropped: Vec<u128>,
    pub(super) saved_at: std::time::Instant,
}

impl SlotTable {
    pub(super) fn load(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(SLOTS_FILE);
        let slots = match read_file(&RealFs, &path)? {
            Some(bytes) => parse_slots(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: {e}; fix or remove it (removing drops every replica's retention)",
                        path.display()
                    ),
                )
            })?,
            None => Vec::new(),
        };
        Ok(Self {
            path,
            retained: vec![0; slots.len()],
            slots,
            dirty: false,
            dropped: Vec::new(),
            saved_at: std::time::Instant::now(),
        })
    }

    /// Writes the file durably (`io::replace_file`: old or new after a crash, never a mix).
    pub(super) fn save(&mut self) -> std::io::Result<()> {
        // Until a save succeeds the table stays dirty, so the next tick tries again.
        self.dirty = true;
        replace_file(&RealFs, &self.path, encode_slots(&self.slots).as_bytes())?;
        self.dirty = false;
        self.saved_at = std::time::Instant::now();
        Ok(())
    }
}

/// Where compaction must stop: nowhere when `held` (a replica, whose log is a copy of its
/// primary's, or a primary building a snapshot); at the oldest retention slot; and, with no
/// slot, nowhere on a primary whose writes wait for replicas, else (a lone node) nowhere
/// short of the end. Compaction counts the log up to the hold as settled: a write after it
/// may still be rolled back by a failover. A primary waiting for replicas with none attached
/// yet (just promoted, say) has nothing on a replica, so nothing of it is settled.
fn compaction_hold_at(held: bool, waits_for_replicas: bool, oldest_slot: Option<u64>) -> u64 {
    match oldest_slot {
        _ if held => 0,
        Some(lsn) => lsn,
        None if waits_for_replicas => 0,
        None => u64::MAX,
    }
}

impl Replication {
    /// Starts the thread that moves retention slots with their replicas, after one tick here
    /// so compaction is held before anything else runs.
    pub fn start_slot_keeper(self: &Arc<Self>) -> std::io::Result<()> {
        self.tick_slots();
        let me = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("replica-slots".into())
            .spawn(move || {
                while !me.stop_keeper.load(Ordering::Acquire) {
                    std::thread::park_timeout(SLOT_TICK);
                    me.tick_slots();
                    me.cut_fence_readers(false);
                }
            })?;
        *self.keeper.locked() = Some(thread);
        Ok(())
    }

    /// A replica's session starts at `lsn`: its slot is there from now on (created, or moved
    /// there even backwards: a replica restored from an older copy needs that log), saved and
    /// holding compaction before anything ships.
    pub(super) fn register_slot(&self, replica_id: u128, lsn: u64) {
        let db = self.keyspace.db();
        let mut table = self.slots.locked();
        table.dropped.retain(|id| *id != replica_id);
        if let Some(slot) = table.slots.iter_mut().find(|s| s.replica_id == replica_id) {
            if slot.lsn == lsn {
                return;
            }
            slot.lsn = lsn;
        } else if table.slots.len() < SLOTS_MAX {
            table.slots.push(Slot { replica_id, lsn });
            tracing::info!(
                replica = format!("{replica_id:032x}"),
                lsn,
                "retention slot created"
            );
        } else {
            tracing::warn!("{SLOTS_MAX} retention slots in use; a new replica gets none");
            return;
        }
        if !self.is_read_only() {
            db.set_compaction_hold(self.compaction_hold(&table));
        }
        let count = table.slots.len();
        table.retained.resize(count, 0);
        if let Err(e) = table.save() {
            tracing::error!(error = %e, "cannot save the retention slots");
        }
    }

    /// Moves each slot to its replica's durable LSN, drops slots over the retention cap, holds
    /// compaction at the oldest slot and saves the file when it changed.
    pub(super) fn tick_slots(&self) {
        let db = self.keyspace.db();
        let replication = self;
        let mut table = replication.slots.locked();
        let mut added = false;
        let peers = self.peers();
        for (i, peer) in peers.iter().enumerate() {
            let p = peer.progress();
            if peers[i + 1..]
                .iter()
                .any(|later| later.progress().replica_id == p.replica_id)
            {
                // Two sessions under one identity: the newer one is the replica now (it
                // reconnected before the old session timed out), or two replicas share a
                // copied `replica-id` file, which the log line makes visible.
                tracing::warn!(
                    replica = format!("{:032x}", p.replica_id),
                    addr = %peer.addr,
                    "a replica with this id connected again; closing its older session (if two \
                     replicas share DIR/replica-id, a copied directory, delete the file on one)"
                );
                peer.stop();
                continue;
            }
            let fresh = peer.take_fresh();
            let count = table.slots.len();
            let was_dropped = table.dropped.contains(&p.replica_id);
            match table
                .slots
                .iter_mut()
                .find(|s| s.replica_id == p.replica_id)
            {
                Some(slot) => {
                    // A new session starts where the replica says it stands, even below the
                    // slot (a replica restored from an older copy needs that log). While it
                    // is bootstrapped, the log it buffers for after the restore is what it
                    // holds: the primary need not keep that log for the whole transfer.
                    let holds = if p.bootstrapping() {
                        p.durable.max(p.received)
                    } else {
                        p.durable
                    };
                    if holds > slot.lsn || (fresh && holds != slot.lsn) {
                        slot.lsn = holds;
                        table.dirty = true;
                    }
                }
                // A slot dropped over the cap comes back only with a new session, so a
                // replica still connected and behind is not dropped and re-created each tick.
                None if !fresh && was_dropped => {}
                None if count < SLOTS_MAX => {
                    table.dropped.retain(|id| *id != p.replica_id);
                    table.slots.push(Slot {
                        replica_id: p.replica_id,
                        lsn: p.durable,
                    });
                    tracing::info!(
                        replica = format!("{:032x}", p.replica_id),
                        lsn = p.durable,
                        "retention slot created"
                    );
                    added = true;
                }
                None => {
                    tracing::warn!("{SLOTS_MAX} retention slots in use; a new replica gets none");
                }
            }
        }
        let extents = db.wal().segment_extents();
        let retained = |lsn: u64| -> u64 {
            extents
                .iter()
                .enumerate()
                .filter(|(i, _)| extents.get(i + 1).is_none_or(|(next, _)| *next > lsn + 1))
                .map(|(_, (_, bytes))| bytes)
                .sum()
        };
        let cap = replication.max_retained_bytes;
        let before = table.slots.len();
        let mut dropped_ids = Vec::new();
        table.slots.retain(|slot| {
            let bytes = retained(slot.lsn);
            if bytes > cap {
                dropped_ids.push(slot.replica_id);
                tracing::warn!(
                    replica = format!("{:032x}", slot.replica_id),
                    lsn = slot.lsn,
                    retained_bytes = bytes,
                    max_retained_bytes = cap,
                    "retention slot dropped: the replica is too far behind and will need a snapshot"
                );
                return false;
            }
            true
        });
        let dropped = table.slots.len() != before;
        table.dropped.extend(dropped_ids);
        if table.dropped.len() > SLOTS_MAX {
            let excess = table.dropped.len() - SLOTS_MAX;
            table.dropped.drain(..excess);
        }
        table.retained = table.slots.iter().map(|s| retained(s.lsn)).collect();
        db.set_compaction_hold(self.compaction_hold(&table));
        let due = table.dirty && table.saved_at.elapsed() >= std::time::Duration::from_secs(1);
        if (added || dropped || due)
            && let Err(e) = table.save()
        {
            tracing::error!(error = %e, "cannot save the retention slots");
        }
    }

    /// Where compaction must stop now, from the slots as they stand.
    pub(super) fn current_compaction_hold(&self) -> u64 {
        self.compaction_hold(&self.slots.locked())
    }

    /// Where compaction must stop (see [`compaction_hold_at`]).
    pub(super) fn compaction_hold(&self, table: &SlotTable) -> u64 {
        compaction_hold_at(
            self.is_read_only() || self.building.load(Ordering::Acquire) > 0,
            self.options.sync.level != AckLevel::Local,
            table.slots.iter().map(|s| s.lsn).min(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::compaction_hold_at;

    #[test]
    fn compaction_holds_everything_a_failover_could_still_roll_back() {
        // A replica, or a snapshot being built: nothing is compacted.
        assert_eq!(compaction_hold_at(true, false, Some(50)), 0);
        assert_eq!(compaction_hold_at(true, true, None), 0);
        // The oldest slot bounds what every replica holds.
        assert_eq!(compaction_hold_at(false, true, Some(50)), 50);
        assert_eq!(compaction_hold_at(false, false, Some(50)), 50);
        // No slot: a primary waiting for replicas has nothing settled; a lone node has no
        // failover to fear.
        assert_eq!(compaction_hold_at(false, true, None), 0);
        assert_eq!(compaction_hold_at(false, false, None), u64::MAX);
    }
}
