//! The server's replication role: the replicas this node ships to (as a primary), the link to
//! its primary (as a replica), `REPLICAOF`, `ROLE` and `INFO replication`.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::Shared;
use super::acks::AckLevel;
use crate::format::resp::ReplyWriter;
use crate::format::slots::{
    SLOTS_MAX, Slot, encode_replica_id, encode_slots, parse_replica_id, parse_slots,
};
use crate::io::{RealFs, read_file, replace_file};
use crate::repl::link::{self, LinkOptions};
use crate::repl::shipper::{self, Bootstrap, SessionHooks, ShipperOptions};
use crate::repl::{LinkState, LinkStatus, ReplicaPeer};
use crate::snapshot::{SnapshotBuilds, SnapshotFile};
use crate::sync::MutexExt;

/// File in the data directory holding this node's replica identity.
const REPLICA_ID_FILE: &str = "replica-id";
/// File in the data directory holding the retention slots of this primary's replicas.
const SLOTS_FILE: &str = "replica-slots";
/// Most shipping sessions at once (also at most `--max-clients`).
const MAX_SHIPPING_SESSIONS: usize = 64;
/// Most `SHIPLOG.SNAPSHOT` transfers at once: each is a thread and a socket held for as long
/// as the transfer takes.
const MAX_SNAPSHOT_SENDERS: usize = 4;
/// Most connections read at once by a node that ships nothing, looking for a fence notice.
const MAX_FENCE_READERS: usize = 4;
/// How long such a connection may take to send its notice.
const FENCE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How often slots follow their replicas' progress (and how stale the file may be).
const SLOT_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// The retention slots: for each replica that ever connected, the log it still needs.
#[derive(Debug)]
struct SlotTable {
    path: std::path::PathBuf,
    slots: Vec<Slot>,
    /// Bytes of log each slot holds, from the last tick.
    retained: Vec<u64>,
    /// The file lags `slots`.
    dirty: bool,
    /// Replicas whose slot was dropped over the cap, until they start a new session.
    dropped: Vec<u128>,
    saved_at: std::time::Instant,
}

impl SlotTable {
    fn load(dir: &Path) -> std::io::Result<Self> {
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
    fn save(&mut self) -> std::io::Result<()> {
        // Until a save succeeds the table stays dirty, so the next tick tries again.
        self.dirty = true;
        replace_file(&RealFs, &self.path, encode_slots(&self.slots).as_bytes())?;
        self.dirty = false;
        self.saved_at = std::time::Instant::now();
        Ok(())
    }
}

/// A replica's link to its primary.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) primary: String,
    pub(super) status: Arc<LinkStatus>,
    pub(super) thread: JoinHandle<()>,
    started: std::time::Instant,
}

/// A client connection that asked to become a shipping session.
#[derive(Debug)]
pub struct Handoff {
    /// The socket, blocking.
    pub stream: TcpStream,
    /// Bytes received after the handshake command.
    pub received: Vec<u8>,
    /// The peer.
    pub addr: SocketAddr,
    /// The challenge sent with the handshake reply, when a password is set.
    pub challenge: Option<[u8; crate::format::repl::AUTH_BYTES]>,
    /// The connection asked for a snapshot (`SHIPLOG.SNAPSHOT`), not for shipping.
    pub snapshot: bool,
}

/// A connection read for a fence notice: a clone of its socket, to cut it, and by when it
/// must be done.
#[derive(Debug)]
struct FenceReader {
    deadline: Instant,
    stream: TcpStream,
}

/// A fence reader's place in the list, given up when its thread ends (even by a panic).
struct Registered<'a>(&'a Mutex<Vec<Arc<FenceReader>>>, Arc<FenceReader>);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.locked().retain(|r| !Arc::ptr_eq(r, &self.1));
    }
}

/// A replica this primary ships to.
#[derive(Debug)]
struct Shipping {
    peer: Arc<ReplicaPeer>,
    thread: JoinHandle<()>,
}

/// Replication at one moment: what the metrics endpoint shows (`INFO replication` in numbers).
#[derive(Debug, Clone)]
pub struct ReplicationSnapshot {
    /// The primary (`HOST:PORT`) and the link's progress, when this node is a replica.
    pub link: Option<(String, crate::repl::status::LinkProgress)>,
    /// Connected replicas: the address each connected from, and its progress.
    pub replicas: Vec<(SocketAddr, crate::repl::status::PeerProgress)>,
    /// Retention slots, each with the bytes of log it held at the last tick.
    pub slots: Vec<(Slot, u64)>,
    /// Most bytes of log one slot may hold before it is dropped.
    pub max_retained_bytes: u64,
}

/// Replication state of a server.
#[derive(Debug)]
pub struct Replication {
    pub(super) replica_id: u128,
    /// Set while this node follows a primary: writes are refused.
    pub(super) read_only: AtomicBool,
    /// The newer epoch that replaced this primary (0: none): writes are refused.
    pub(super) fenced: AtomicU32,
    /// The newest epoch this node has heard of (a fence, a replica's hello, a primary's
    /// history), kept across re-pointing, in memory only: a promotion goes above it.
    pub(super) seen_epoch: Arc<AtomicU32>,
    pub(super) link: Mutex<Option<Link>>,
    replicas: Mutex<Vec<Shipping>>,
    slots: Mutex<SlotTable>,
    max_retained_bytes: u64,
    keeper: Mutex<Option<JoinHandle<()>>>,
    stop_keeper: AtomicBool,
    /// Links stopped by `REPLICAOF NO ONE`, joined at shutdown.
    pub(super) stopping: Mutex<Vec<JoinHandle<()>>>,
    /// Snapshots built for bootstrapping replicas (and `SHIPLOG.SNAPSHOT`).
    snapshots: SnapshotBuilds,
    /// Snapshot builds under way: compaction waits for them, so the log right after a
    /// snapshot stays as it was until the replica's slot holds it.
    building: AtomicUsize,
    /// `SHIPLOG.SNAPSHOT` transfers under way (at most [`MAX_SNAPSHOT_SENDERS`]).
    senders: AtomicUsize,
    /// Shipping connections read for a fence notice (at most [`MAX_FENCE_READERS`]).
    fence_readers: Mutex<Vec<Arc<FenceReader>>>,
}

impl Replication {
    /// Loads (or creates, durably) this node's replica identity in `dir`.
    ///
    /// # Errors
    /// I/O errors, or an identity file that is not 32 hex digits.
    pub fn open(dir: &Path, max_retained_bytes: u64, snapshot_level: i32) -> std::io::Result<Self> {
        // The identity is the file's random id bound to this very directory (device and
        // inode): a copied directory, the usual way to seed a replica by hand, is another
        // replica with a slot of its own, not a twin that moves the first one's slot.
        let meta = std::fs::metadata(dir)?;
        let place = {
            use std::os::unix::fs::MetadataExt;
            u128::from(splitmix(meta.dev())) << 64 | u128::from(splitmix(meta.ino()))
        };
        Ok(Self {
            replica_id: replica_id(dir)? ^ place,
            read_only: AtomicBool::new(false),
            fenced: AtomicU32::new(0),
            seen_epoch: Arc::new(AtomicU32::new(0)),
            link: Mutex::new(None),
            replicas: Mutex::new(Vec::new()),
            slots: Mutex::new(SlotTable::load(dir)?),
            max_retained_bytes,
            keeper: Mutex::new(None),
            stop_keeper: AtomicBool::new(false),
            stopping: Mutex::new(Vec::new()),
            snapshots: SnapshotBuilds::open(Arc::new(RealFs), dir, snapshot_level)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            building: AtomicUsize::new(0),
            senders: AtomicUsize::new(0),
            fence_readers: Mutex::new(Vec::new()),
        })
    }

    /// Whether writes are refused (this node is a replica).
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// Why writes are refused, as the `-READONLY` reply: this node is a replica, or a
    /// primary that a failover replaced.
    #[must_use]
    pub fn refuses_writes(&self) -> Option<String> {
        if self.is_read_only() {
            return Some("READONLY You can't write against a read only replica.".to_owned());
        }
        let fenced = self.fenced.load(Ordering::Acquire);
        (fenced > 0).then(|| {
            format!(
                "READONLY this primary was replaced by a failover (a node of epoch {fenced} \
                 exists); write to the new primary"
            )
        })
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

/// `SplitMix64`'s finaliser: a fixed bijection that spreads small numbers over 64 bits.
fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn replica_id(dir: &Path) -> std::io::Result<u128> {
    let path = dir.join(REPLICA_ID_FILE);
    if let Some(bytes) = read_file(&RealFs, &path)? {
        parse_replica_id(&bytes).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a replica id (32 hex digits); remove it to get a new one",
                    path.display()
                ),
            )
        })
    } else {
        let id = u128::from(crate::wal::random_u64()) << 64 | u128::from(crate::wal::random_u64());
        replace_file(&RealFs, &path, encode_replica_id(id).as_bytes())?;
        Ok(id)
    }
}

impl Shared {
    /// Follows `primary` (`HOST:PORT`): `REPLICAOF host port` and `--replica-of` (a replica
    /// stops following only by a promotion, [`Shared::promote`]). Returns false when the
    /// node already follows that primary.
    pub fn replicate_from(self: &Arc<Self>, primary: String) -> bool {
        let replication = &self.replication;
        let mut link = replication.link.locked();
        if self.is_shutting_down() {
            // `stop_replication` takes this lock after the flag is set: nothing started now
            // could outlive it.
            return false;
        }
        if link.as_ref().map(|l| &l.primary) == Some(&primary) {
            return false;
        }
        // The old link is stopped here but joined elsewhere (by the new link's thread, or at
        // shutdown): it may be in a connect or a read for a while, and this runs on an event
        // loop. Every receive call checks continuity under the log's lock, so a late call
        // of the old link cannot add anything.
        let previous = link.take().map(|old| {
            old.status.stop();
            tracing::info!(primary = %old.primary, "stopped replicating");
            old.thread
        });
        // Read-only before the first shipped record arrives, and before this node's own
        // replicas are told anything; no compaction of a log that is a copy of another.
        replication.read_only.store(true, Ordering::Release);
        // Re-pointed: a replaced primary is an ordinary replica from now on.
        replication.fenced.store(0, Ordering::Release);
        self.keyspace.db().set_compaction_hold(0);
        for shipping in replication.replicas.locked().iter() {
            shipping.peer.stop();
        }
        let status = Arc::new(LinkStatus::default());
        let mut options =
            LinkOptions::new(primary.clone(), replication.replica_id, self.listen.port());
        options.masterauth.clone_from(&self.options.masterauth);
        options.seen_epoch = Arc::clone(&replication.seen_epoch);
        let me = Arc::clone(self);
        let for_thread = Arc::clone(&status);
        let (handoff_tx, handoff_rx) = std::sync::mpsc::channel::<Option<JoinHandle<()>>>();
        let spawned = std::thread::Builder::new()
            .name("replica-link".into())
            .spawn(move || {
                // One link at a time writes into the log: wait for the old one to end.
                if let Ok(Some(previous)) = handoff_rx.recv() {
                    let _ = previous.join();
                }
                link::run(me.keyspace.db(), &options, &for_thread);
            });
        match spawned {
            Ok(thread) => {
                let _ = handoff_tx.send(previous);
                tracing::info!(%primary, "replicating from a primary");
                *link = Some(Link {
                    primary,
                    status,
                    thread,
                    started: std::time::Instant::now(),
                });
            }
            Err(e) => {
                if let Some(previous) = previous {
                    replication.stopping.locked().push(previous);
                }
                tracing::error!(error = %e, "cannot start the replication thread");
            }
        }
        true
    }

    /// Turns a client connection that sent the handshake command into a shipping session.
    pub fn start_shipping(self: &Arc<Self>, handoff: Handoff) {
        if handoff.snapshot {
            self.start_snapshot_sender(handoff);
            return;
        }
        let Handoff {
            stream,
            received,
            addr,
            challenge,
            ..
        } = handoff;
        // IMPORTANT: the list stays locked until the session is in it. A session can end at
        // once (bytes pipelined with the handshake command are already received); its thread
        // then removes it from the list as its last step, and must find it there, or the
        // entry, holding a clone of the socket, would stay forever: the peer never sees the
        // connection close, and the descriptor leaks. Checked under the same lock that
        // `stop_replication` takes after setting the shutdown flag.
        let mut replicas = self.replication.replicas.locked();
        if self.is_shutting_down() {
            return;
        }
        if self.replication.is_read_only() {
            // A replica does not ship (cascading is not supported); the peer sees the close,
            // unless it came to tell this node of a newer epoch.
            tracing::info!(%addr, "refusing a replica: this node is not a primary");
            drop(replicas);
            self.read_fence_notice(stream, received, challenge);
            return;
        }
        // Shipping sessions leave the client count when handed over; they have a cap of their
        // own, so `SHIPLOG.SHIP` (allowed before `AUTH`) cannot pile up threads.
        let cap = self.options.max_clients.min(MAX_SHIPPING_SESSIONS);
        if replicas.len() >= cap {
            tracing::warn!(%addr, sessions = replicas.len(), cap, "refusing a replica: too many shipping sessions");
            return;
        }
        let peer = Arc::new(ReplicaPeer::new(addr, stream.try_clone().ok()));
        self.wake_ack_waiters_on(&peer);
        let me = Arc::clone(self);
        let for_thread = Arc::clone(&peer);
        let spawned = std::thread::Builder::new()
            .name("shipper".into())
            .spawn(move || {
                let wal = me.keyspace.db().wal();
                let auth = me.shipping_auth(challenge);
                let on_accept = |replica_id, lsn| me.register_slot(replica_id, lsn);
                let snapshot = |replica_id| me.bootstrap_snapshot(replica_id);
                let on_fenced = |epoch| me.step_down(epoch);
                let peers = || me.peer_list();
                let hooks = SessionHooks {
                    auth,
                    on_accept: &on_accept,
                    on_fenced: &on_fenced,
                    peers: &peers,
                    bootstrap: Some(Bootstrap {
                        snapshot: &snapshot,
                        empty_replica_min_log_bytes: me.options.snapshot_bootstrap_bytes,
                    }),
                };
                if let Err(e) = shipper::serve(
                    wal,
                    stream,
                    &received,
                    &for_thread,
                    ShipperOptions::default(),
                    hooks,
                ) {
                    if for_thread.stopped() {
                        tracing::info!(replica = %addr, "replica session ended");
                    } else {
                        tracing::warn!(replica = %addr, error = %e, "replica session ended");
                    }
                }
                me.replication
                    .replicas
                    .locked()
                    .retain(|s| !Arc::ptr_eq(&s.peer, &for_thread));
            });
        match spawned {
            // Finished sessions remove themselves (their threads are not joined).
            Ok(thread) => replicas.push(Shipping { peer, thread }),
            Err(e) => tracing::error!(error = %e, "cannot start a shipping thread"),
        }
    }

    /// Reads a shipping connection to this node, which ships nothing, in a thread of its own:
    /// a fence notice (a promoted node telling its old primary, which may be a replica by
    /// now, about its epoch) is heeded and answered, so the sender stops; anything else is
    /// dropped. A promotion of this node then goes above that epoch. Past the cap, or while
    /// stopping, the connection is dropped unread, and a sender tries again.
    fn read_fence_notice(
        self: &Arc<Self>,
        stream: TcpStream,
        received: Vec<u8>,
        challenge: Option<[u8; crate::format::repl::AUTH_BYTES]>,
    ) {
        let Ok(clone) = stream.try_clone() else {
            return;
        };
        let reader = Arc::new(FenceReader {
            deadline: Instant::now() + FENCE_READ_TIMEOUT,
            stream: clone,
        });
        {
            // IMPORTANT: checked under the lock `stop_replication` takes after the shutdown
            // flag is set, so every reader registered is cut by it.
            let mut readers = self.replication.fence_readers.locked();
            if readers.len() >= MAX_FENCE_READERS || self.is_shutting_down() {
                return;
            }
            readers.push(Arc::clone(&reader));
        }
        let me = Arc::clone(self);
        let registered = Arc::clone(&reader);
        let spawned = std::thread::Builder::new()
            .name("fence-reader".into())
            .spawn(move || {
                let _registered = Registered(&me.replication.fence_readers, registered);
                let auth = me.shipping_auth(challenge);
                let on_fenced = |epoch| me.step_down(epoch);
                let answered =
                    shipper::answer_fence(stream, &received, FENCE_READ_TIMEOUT, auth, &on_fenced);
                if let Err(crate::repl::ReplError::Refused {
                    code: crate::format::repl::RefuseCode::Other,
                    reason,
                }) = answered
                {
                    tracing::info!(%reason, "a fence notice reached this node, which ships nothing");
                }
            });
        if spawned.is_err() {
            self.replication
                .fence_readers
                .locked()
                .retain(|r| !Arc::ptr_eq(r, &reader));
        }
    }

    /// What a shipping connection must prove, when this node has a password: knowledge of it,
    /// against the challenge the handshake reply sent.
    fn shipping_auth(
        &self,
        challenge: Option<[u8; crate::format::repl::AUTH_BYTES]>,
    ) -> Option<shipper::Auth<'_>> {
        self.options
            .password
            .as_deref()
            .map(|password| shipper::Auth {
                password,
                // A password set means the command sent a challenge.
                challenge: challenge.unwrap_or_else(crate::repl::auth::nonce),
            })
    }

    /// Cuts the connections read for a fence notice that are past their deadline (a peer
    /// that sends a byte at a time would otherwise hold a reader for ever), or all of them.
    fn cut_fence_readers(&self, all: bool) {
        let now = Instant::now();
        for reader in self.replication.fence_readers.locked().iter() {
            if all || reader.deadline <= now {
                let _ = reader.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Starts the thread that moves retention slots with their replicas, after one tick here
    /// so compaction is held before anything else runs.
    pub(crate) fn start_slot_keeper(self: &Arc<Self>) -> std::io::Result<()> {
        self.tick_slots();
        let me = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("replica-slots".into())
            .spawn(move || {
                while !me.replication.stop_keeper.load(Ordering::Acquire) {
                    std::thread::park_timeout(SLOT_TICK);
                    me.tick_slots();
                    me.cut_fence_readers(false);
                }
            })?;
        *self.replication.keeper.locked() = Some(thread);
        Ok(())
    }

    /// A replica's session starts at `lsn`: its slot is there from now on (created, or moved
    /// there even backwards: a replica restored from an older copy needs that log), saved and
    /// holding compaction before anything ships.
    fn register_slot(&self, replica_id: u128, lsn: u64) {
        let db = self.keyspace.db();
        let mut table = self.replication.slots.locked();
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
        if !self.replication.is_read_only() {
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
    fn tick_slots(&self) {
        let db = self.keyspace.db();
        let replication = &self.replication;
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

    /// The last LSN visible to readers here (0 while a snapshot is being installed).
    pub(crate) fn visible_lsn(&self) -> u64 {
        let db = self.keyspace.db();
        if db.restoring() { 0 } else { db.applied_lsn() }
    }

    /// On a replica with `--max-staleness-ms`: the error text for a read while it is further
    /// behind than that. Behind means: since it first lagged the primary's durable LSN, while
    /// the primary has been heard from within a second (heartbeats come every 250 ms); else
    /// since it last heard from the primary at all (or since it started following it).
    pub(crate) fn stale_beyond_limit(&self) -> Option<String> {
        let limit = self.options.max_staleness_ms?;
        if !self.replication.is_read_only() {
            return None;
        }
        let (progress, started) = {
            let link = self.replication.link.locked();
            let link = link.as_ref()?;
            (link.status.progress(), link.started)
        };
        let silent = progress.last_io.unwrap_or(started).elapsed();
        let behind = progress
            .behind_since
            .map_or(std::time::Duration::ZERO, |t| t.elapsed());
        let lag = if progress.state == LinkState::Connected
            && silent < std::time::Duration::from_secs(1)
        {
            behind
        } else {
            behind.max(silent)
        };
        let lag_ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        (lag_ms > limit).then(|| {
            format!(
                "STALE this replica is {lag_ms} ms behind its primary, more than \
                 --max-staleness-ms {limit}; read from the primary or retry"
            )
        })
    }

    /// Where compaction must stop now, from the slots as they stand.
    pub(super) fn current_compaction_hold(&self) -> u64 {
        self.compaction_hold(&self.replication.slots.locked())
    }

    /// Where compaction must stop (see [`compaction_hold_at`]).
    fn compaction_hold(&self, table: &SlotTable) -> u64 {
        compaction_hold_at(
            self.replication.is_read_only()
                || self.replication.building.load(Ordering::Acquire) > 0,
            self.options.sync.level != AckLevel::Local,
            table.slots.iter().map(|s| s.lsn).min(),
        )
    }

    /// A snapshot that replica `replica_id` can bootstrap from: the log right after it is still
    /// here as it was (a segment starts there), so shipping goes on from it. Shared with
    /// other replicas; built when none is usable. The replica's slot holds that log from now.
    fn bootstrap_snapshot(&self, replica_id: u128) -> Result<Arc<SnapshotFile>, String> {
        let db = self.keyspace.db();
        let wal = db.wal();
        let usable = |file: &SnapshotFile| {
            let lsn = file.header.lsn;
            file.header.cluster_id == wal.cluster_id()
                && lsn > 0
                && lsn <= wal.durable_lsn()
                && wal
                    .segment_extents()
                    .iter()
                    .any(|(first, _)| *first == lsn + 1)
                && wal.ship_position_after(lsn).is_ok()
        };
        // The slot is registered before compaction may run again.
        self.build_snapshot(&usable, &|file| {
            self.register_slot(replica_id, file.header.lsn);
        })
        .map_err(|e| e.to_string())
    }

    /// A snapshot for which `usable` holds (shared or built), with compaction held until
    /// `built` has run on it: the log right after a new snapshot stays as it was until the
    /// caller holds it by other means.
    fn build_snapshot(
        &self,
        usable: &dyn Fn(&SnapshotFile) -> bool,
        built: &dyn Fn(&SnapshotFile),
    ) -> crate::snapshot::Result<Arc<SnapshotFile>> {
        let db = self.keyspace.db();
        self.replication.building.fetch_add(1, Ordering::AcqRel);
        db.set_compaction_hold(0);
        let result = self.replication.snapshots.get_or_build(db, usable);
        if let Ok(file) = &result {
            built(file);
        }
        self.replication.building.fetch_sub(1, Ordering::AcqRel);
        let table = self.replication.slots.locked();
        db.set_compaction_hold(self.compaction_hold(&table));
        result
    }

    /// Streams a fresh snapshot to a client that sent `SHIPLOG.SNAPSHOT`, as one RESP bulk
    /// string, in a thread of its own.
    fn start_snapshot_sender(self: &Arc<Self>, mut handoff: Handoff) {
        let senders = &self.replication.senders;
        let refuse = |stream: &mut TcpStream| {
            let text = format!(
                "-ERR {MAX_SNAPSHOT_SENDERS} snapshot transfers are under way, or the server is \
                 stopping; try again later\r\n"
            );
            let _ = std::io::Write::write_all(stream, text.as_bytes());
        };
        if self.is_shutting_down() {
            refuse(&mut handoff.stream);
            return;
        }
        if senders.fetch_add(1, Ordering::AcqRel) >= MAX_SNAPSHOT_SENDERS {
            senders.fetch_sub(1, Ordering::AcqRel);
            refuse(&mut handoff.stream);
            return;
        }
        let _ = handoff
            .stream
            .set_write_timeout(Some(std::time::Duration::from_mins(1)));
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("snapshot-sender".into())
            .spawn(move || {
                let Handoff {
                    mut stream, addr, ..
                } = handoff;
                let written = me.keyspace.db().wal().written_lsn();
                let fresh = |file: &SnapshotFile| file.header.lsn >= written;
                let result = me.build_snapshot(&fresh, &|_| {});
                let sent = match result {
                    Ok(file) => send_file_as_bulk(&mut stream, &file),
                    Err(e) => {
                        let text = format!("-ERR building the snapshot failed: {e}\r\n");
                        std::io::Write::write_all(&mut stream, text.as_bytes())
                    }
                };
                match sent {
                    Ok(()) => tracing::info!(client = %addr, "snapshot sent"),
                    Err(e) => {
                        tracing::warn!(client = %addr, error = %e, "sending a snapshot failed");
                    }
                }
                me.replication.senders.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            self.replication.senders.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(error = %e, "cannot start a snapshot sender thread");
        }
    }

    /// Ends every replication thread (shutdown): they hold the server's state.
    pub(crate) fn stop_replication(&self) {
        self.cut_fence_readers(true);
        self.replication.stop_keeper.store(true, Ordering::Release);
        if let Some(keeper) = self.replication.keeper.locked().take() {
            keeper.thread().unpark();
            let _ = keeper.join();
        }
        self.tick_slots();
        {
            let mut table = self.replication.slots.locked();
            if table.dirty
                && let Err(e) = table.save()
            {
                tracing::error!(error = %e, "cannot save the retention slots");
            }
        }
        let link = self.replication.link.locked().take();
        if let Some(link) = link {
            link.status.stop();
            let _ = link.thread.join();
        }
        let stopping: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.replication.stopping.locked());
        for thread in stopping {
            let _ = thread.join();
        }
        let sessions: Vec<Shipping> = std::mem::take(&mut *self.replication.replicas.locked());
        for shipping in &sessions {
            shipping.peer.stop();
        }
        for shipping in sessions {
            let _ = shipping.thread.join();
        }
    }

    /// Replication as it stands now, for the metrics endpoint.
    pub fn replication_snapshot(&self) -> ReplicationSnapshot {
        let replicas = self
            .peers()
            .iter()
            .map(|peer| (peer.addr, peer.progress()))
            .collect();
        let table = self.replication.slots.locked();
        let slots = table
            .slots
            .iter()
            .copied()
            .zip(table.retained.iter().copied())
            .collect();
        drop(table);
        ReplicationSnapshot {
            link: self.link_view(),
            replicas,
            slots,
            max_retained_bytes: self.replication.max_retained_bytes,
        }
    }

    fn link_view(&self) -> Option<(String, crate::repl::status::LinkProgress)> {
        self.replication
            .link
            .locked()
            .as_ref()
            .map(|l| (l.primary.clone(), l.status.progress()))
    }

    /// The progress of each connected replica (for acknowledgement levels and `WAIT`).
    pub(crate) fn replica_progress(&self) -> Vec<crate::repl::status::PeerProgress> {
        self.peers().iter().map(|peer| peer.progress()).collect()
    }

    pub(super) fn peers(&self) -> Vec<Arc<ReplicaPeer>> {
        self.replication
            .replicas
            .locked()
            .iter()
            .map(|s| Arc::clone(&s.peer))
            .filter(|p| p.progress().online)
            .collect()
    }

    /// `ROLE`, in Redis' shape.
    pub fn role_reply(&self, reply: &mut ReplyWriter<'_>) {
        let db = self.keyspace.db();
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some((primary, progress)) = self.link_view() {
            let (host, port) = split_host_port(&primary);
            reply.array(5);
            reply.bulk(b"slave");
            reply.bulk(host.as_bytes());
            reply.integer(i64::from(port));
            reply.bulk(match progress.state {
                LinkState::Connecting => b"connect".as_slice(),
                LinkState::Handshake => b"handshake",
                LinkState::Connected => b"connected",
            });
            reply.integer(int(db.applied_lsn()));
            return;
        }
        let peers = self.peers();
        reply.array(3);
        reply.bulk(b"master");
        reply.integer(int(db.wal().durable_lsn()));
        reply.array(peers.len());
        for peer in peers {
            let p = peer.progress();
            reply.array(3);
            reply.bulk(peer.addr.ip().to_string().as_bytes());
            reply.bulk(p.listen_port.to_string().as_bytes());
            reply.bulk(p.durable.to_string().as_bytes());
        }
    }

    /// The `INFO replication` section.
    pub fn replication_info(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = write!(out, "{k}:{v}\r\n");
        };
        if let Some((primary, progress)) = self.link_view() {
            self.replica_info(&primary, &progress, &mut line);
        } else {
            self.primary_info(&mut line);
        }
        out
    }

    fn replica_info(
        &self,
        primary: &str,
        p: &crate::repl::status::LinkProgress,
        line: &mut dyn FnMut(&str, &dyn std::fmt::Display),
    ) {
        let db = self.keyspace.db();
        let wal = db.wal();
        // Nothing is served while a snapshot is installed: nothing counts as applied.
        let applied = if db.restoring() { 0 } else { db.applied_lsn() };
        let (host, port) = split_host_port(primary);
        line("role", &"slave");
        line("master_host", &host);
        line("master_port", &port);
        let up = p.state == LinkState::Connected;
        line("master_link_status", &if up { "up" } else { "down" });
        line(
            "master_last_io_seconds_ago",
            &p.last_io.map_or(-1, |t| {
                i64::try_from(t.elapsed().as_secs()).unwrap_or(i64::MAX)
            }),
        );
        // Redis' names for a full sync in progress, then shiplog's own detail.
        line("master_sync_in_progress", &u8::from(p.bootstrap.is_some()));
        if let Some(b) = &p.bootstrap {
            line("master_sync_total_bytes", &b.file_bytes);
            line("master_sync_read_bytes", &b.received);
            line(
                "master_sync_left_bytes",
                &(b.file_bytes - b.received.min(b.file_bytes)),
            );
            line("replica_bootstrap_lsn", &b.lsn);
            line("replica_bootstrap_resumed_at", &b.resumed_at);
            line(
                "replica_bootstrap_state",
                &if b.installing {
                    "installing"
                } else {
                    "receiving"
                },
            );
        }
        line("replica_bootstraps", &p.bootstraps);
        line("replica_restoring", &u8::from(db.restoring()));
        line("slave_read_repl_offset", &wal.written_lsn());
        line("slave_repl_offset", &applied);
        line("slave_priority", &100);
        line("slave_read_only", &1);
        line("replica_announced", &1);
        line("connected_slaves", &0);
        line(
            "master_replid",
            &format!("{:032x}00000000", wal.cluster_id()),
        );
        line("master_repl_offset", &applied);
        line("replica_received_lsn", &wal.written_lsn());
        line("replica_durable_lsn", &wal.durable_lsn());
        line("replica_applied_lsn", &applied);
        line("primary_durable_lsn", &p.primary_durable);
        // Honest when idle: 0 once everything the primary made durable is applied here.
        line(
            "replica_lag_lsns",
            &p.primary_durable.saturating_sub(applied),
        );
        line(
            "replica_lag_ms",
            &p.behind_since.map_or(0, |t| t.elapsed().as_millis()),
        );
        line("replica_sessions", &p.sessions);
        self.epoch_info(line);
        line("master_epoch", &p.primary_epoch);
        line("replica_rewinds", &p.rewinds);
        if let Some(path) = &p.last_rollback {
            line("replica_last_rollback", &path.display());
        }
        line(
            "replica_id",
            &format!("{:032x}", self.replication.replica_id),
        );
        if let Some((lsn, matched)) = p.digest_checked {
            line("replica_digest_checked_lsn", &lsn);
            line("replica_digest_match", &if matched { "yes" } else { "no" });
        }
        if let Some(diverged) = &p.diverged {
            line("replica_diverged", &diverged.replace(['\r', '\n'], " "));
        }
        if let Some(error) = &p.last_error {
            line("replica_last_error", &error.replace(['\r', '\n'], " "));
        }
    }

    fn epoch_info(&self, line: &mut dyn FnMut(&str, &dyn std::fmt::Display)) {
        let history = self.keyspace.db().wal().epoch_history();
        let latest = history.latest();
        line("epoch", &latest.epoch);
        line("epoch_start_lsn", &latest.start_lsn);
        line("epochs_known", &history.entries().len());
    }

    fn primary_info(&self, line: &mut dyn FnMut(&str, &dyn std::fmt::Display)) {
        let wal = self.keyspace.db().wal();
        let peers = self.peers();
        let durable = wal.durable_lsn();
        line("role", &"master");
        line("connected_slaves", &peers.len());
        for (i, peer) in peers.iter().enumerate() {
            let p = peer.progress();
            let caught_up = p.applied >= durable;
            let ms = |micros: u64| {
                if caught_up {
                    "0.000".to_owned()
                } else {
                    format!("{}.{:03}", micros / 1000, micros % 1000)
                }
            };
            line(
                &format!("slave{i}"),
                &format!(
                    "ip={},port={},state={},offset={},lag={},id={:032x},write_lsn={},flush_lsn={},replay_lsn={},write_lag_ms={},flush_lag_ms={},replay_lag_ms={},lag_lsns={},snapshot_sent_bytes={},snapshot_bytes={}",
                    peer.addr.ip(),
                    p.listen_port,
                    // Redis' state while a replica receives its full sync.
                    if p.bootstrapping() {
                        "send_bulk"
                    } else {
                        "online"
                    },
                    p.durable,
                    peer.since_last_ack().as_secs(),
                    p.replica_id,
                    p.received,
                    p.durable,
                    p.applied,
                    ms(p.write_lag_micros),
                    ms(p.flush_lag_micros),
                    ms(p.replay_lag_micros),
                    durable.saturating_sub(p.applied),
                    p.snapshot_sent,
                    p.snapshot_bytes,
                ),
            );
        }
        let table = self.replication.slots.locked();
        let cap = self.replication.max_retained_bytes;
        for (i, (slot, retained)) in table.slots.iter().zip(&table.retained).enumerate() {
            let connected = peers
                .iter()
                .any(|p| p.progress().replica_id == slot.replica_id);
            line(
                &format!("slot{i}"),
                &format!(
                    "id={:032x},lsn={},retained_bytes={retained},cap_left_bytes={},connected={}",
                    slot.replica_id,
                    slot.lsn,
                    cap.saturating_sub(*retained),
                    if connected { "yes" } else { "no" }
                ),
            );
        }
        drop(table);
        line("max_retained_bytes", &cap);
        self.epoch_info(line);
        if let Some(epoch) = self.fenced_by() {
            line("fenced_by_epoch", &epoch);
        }
        line("master_failover_state", &"no-failover");
        line(
            "master_replid",
            &format!("{:032x}00000000", wal.cluster_id()),
        );
        line("master_repl_offset", &durable);
    }
}

/// `HOST:PORT` → (host, port); the port is 0 when missing or invalid.
fn split_host_port(target: &str) -> (String, u16) {
    match target.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port.parse().unwrap_or(0),
        ),
        None => (target.to_owned(), 0),
    }
}

/// Writes `file` to `stream` as one RESP bulk string.
fn send_file_as_bulk(stream: &mut TcpStream, file: &SnapshotFile) -> std::io::Result<()> {
    use std::io::Write;
    let mut source = std::fs::File::open(&file.path)?;
    stream.write_all(format!("${}\r\n", file.file_bytes).as_bytes())?;
    let copied = std::io::copy(
        &mut std::io::Read::take(&mut source, file.file_bytes),
        stream,
    )?;
    if copied != file.file_bytes {
        return Err(std::io::Error::other(
            "the snapshot file is shorter than it was",
        ));
    }
    stream.write_all(b"\r\n")?;
    stream.flush()
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
