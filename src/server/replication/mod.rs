//! The server's replication role: the replicas this node ships to (as a primary), the link to
//! its primary (as a replica), `REPLICAOF`, `ROLE` and `INFO replication`.
//!
//! [`Replication`] owns that state and the threads that serve it. It reaches the rest of the
//! server only through the key space, the settings and the acknowledgement gate it is given,
//! so nothing here depends on the connections or the commands that use it.

mod failover;
mod shipping;
mod slots;
mod status;

pub use failover::Promotion;
pub use shipping::Handoff;
pub use status::ReplicationSnapshot;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::format::slots::{encode_replica_id, parse_replica_id};
use crate::io::{RealFs, read_file, replace_file};
use crate::repl::link::{self, LinkOptions};
use crate::repl::{LinkState, LinkStatus, ReplicaPeer};
use crate::server::acks::{AckGate, AckView, ReplicaAck};
use crate::server::keyspace::Keyspace;
use crate::server::options::ServerOptions;
use crate::snapshot::SnapshotBuilds;
use crate::sync::MutexExt;
use shipping::{FenceReader, Shipping};
use slots::SlotTable;

/// File in the data directory holding this node's replica identity.
const REPLICA_ID_FILE: &str = "replica-id";
/// A replica's link to its primary.
#[derive(Debug)]
struct Link {
    primary: String,
    status: Arc<LinkStatus>,
    thread: JoinHandle<()>,
    started: std::time::Instant,
}

/// Replication state of a server.
#[derive(Debug)]
pub struct Replication {
    replica_id: u128,
    /// Set while this node follows a primary: writes are refused.
    read_only: AtomicBool,
    /// The newer epoch that replaced this primary (0: none): writes are refused.
    fenced: AtomicU32,
    /// The newest epoch this node has heard of (a fence, a replica's hello, a primary's
    /// history), kept across re-pointing, in memory only: a promotion goes above it.
    seen_epoch: Arc<AtomicU32>,
    link: Mutex<Option<Link>>,
    replicas: Mutex<Vec<Shipping>>,
    slots: Mutex<SlotTable>,
    max_retained_bytes: u64,
    keeper: Mutex<Option<JoinHandle<()>>>,
    stop_keeper: AtomicBool,
    /// Links stopped by `REPLICAOF NO ONE`, joined at shutdown.
    stopping: Mutex<Vec<JoinHandle<()>>>,
    /// Snapshots built for bootstrapping replicas (and `SHIPLOG.SNAPSHOT`).
    snapshots: SnapshotBuilds,
    /// Snapshot builds under way: compaction waits for them, so the log right after a
    /// snapshot stays as it was until the replica's slot holds it.
    building: AtomicUsize,
    /// `SHIPLOG.SNAPSHOT` transfers under way (at most [`MAX_SNAPSHOT_SENDERS`]).
    senders: AtomicUsize,
    /// Shipping connections read for a fence notice (at most [`MAX_FENCE_READERS`]).
    fence_readers: Mutex<Vec<Arc<FenceReader>>>,
    /// The keys, and the log underneath.
    keyspace: Arc<Keyspace>,
    /// The server's settings.
    options: Arc<ServerOptions>,
    /// The port this node serves clients on (told to its primary).
    listen_port: u16,
    /// Woken by replicas' acknowledgements.
    acks: Arc<AckGate>,
    /// Set by [`Replication::stop`]: nothing new starts.
    shutting_down: AtomicBool,
}

impl Replication {
    /// The replication state of a node serving `keyspace` on `listen_port`: loads (or
    /// creates, durably) its replica identity and retention slots in `options.dir`.
    ///
    /// # Errors
    /// I/O errors, or an identity file that is not 32 hex digits.
    pub fn open(
        keyspace: Arc<Keyspace>,
        options: Arc<ServerOptions>,
        listen_port: u16,
        acks: Arc<AckGate>,
    ) -> std::io::Result<Self> {
        let dir = options.dir.as_path();
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
            max_retained_bytes: options.max_retained_bytes,
            keeper: Mutex::new(None),
            stop_keeper: AtomicBool::new(false),
            stopping: Mutex::new(Vec::new()),
            snapshots: SnapshotBuilds::open(Arc::new(RealFs), dir, options.snapshot_level)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            building: AtomicUsize::new(0),
            senders: AtomicUsize::new(0),
            fence_readers: Mutex::new(Vec::new()),
            keyspace,
            options,
            listen_port,
            acks,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Whether [`Replication::stop`] has begun.
    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Whether writes are refused (this node is a replica).
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// The replicas that count for acknowledgement levels now (see [`ReplicaAck::of`]).
    #[must_use]
    pub fn ack_view(&self) -> AckView {
        let writable = !self.is_read_only() && self.fenced_by().is_none();
        AckView::new(
            self.replica_progress()
                .iter()
                .filter_map(ReplicaAck::of)
                .collect(),
        )
        .in_epoch(writable.then(|| self.keyspace.db().wal().highest_epoch()))
    }

    /// Makes `peer`'s acknowledgements wake the loops whose connections wait for them.
    fn wake_ack_waiters_on(&self, peer: &ReplicaPeer) {
        let gate = Arc::clone(&self.acks);
        peer.set_on_ack(crate::repl::status::AckHook(Box::new(move || {
            gate.notify();
        })));
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

impl Replication {
    /// Follows `primary` (`HOST:PORT`): `REPLICAOF host port` and `--replica-of` (a replica
    /// stops following only by a promotion, [`Replication::promote`]). Returns false when the
    /// node already follows that primary.
    pub fn replicate_from(self: &Arc<Self>, primary: String) -> bool {
        let replication = self;
        let mut link = replication.link.locked();
        if self.is_shutting_down() {
            // `stop` takes this lock after the flag is set: nothing started now
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
            LinkOptions::new(primary.clone(), replication.replica_id, self.listen_port);
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

    /// The last LSN visible to readers here (0 while a snapshot is being installed).
    pub fn visible_lsn(&self) -> u64 {
        let db = self.keyspace.db();
        if db.restoring() { 0 } else { db.applied_lsn() }
    }

    /// On a replica with `--max-staleness-ms`: the error text for a read while it is further
    /// behind than that. Behind means: since it first lagged the primary's durable LSN, while
    /// the primary has been heard from within a second (heartbeats come every 250 ms); else
    /// since it last heard from the primary at all (or since it started following it).
    pub fn stale_beyond_limit(&self) -> Option<String> {
        let limit = self.options.max_staleness_ms?;
        if !self.is_read_only() {
            return None;
        }
        let (progress, started) = {
            let link = self.link.locked();
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

    /// Ends every replication thread (shutdown): they hold the key space. Nothing starts
    /// after this begins.
    pub fn stop(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.cut_fence_readers(true);
        self.stop_keeper.store(true, Ordering::Release);
        if let Some(keeper) = self.keeper.locked().take() {
            keeper.thread().unpark();
            let _ = keeper.join();
        }
        self.tick_slots();
        {
            let mut table = self.slots.locked();
            if table.dirty
                && let Err(e) = table.save()
            {
                tracing::error!(error = %e, "cannot save the retention slots");
            }
        }
        let link = self.link.locked().take();
        if let Some(link) = link {
            link.status.stop();
            let _ = link.thread.join();
        }
        let stopping: Vec<JoinHandle<()>> = std::mem::take(&mut *self.stopping.locked());
        for thread in stopping {
            let _ = thread.join();
        }
        let sessions: Vec<Shipping> = std::mem::take(&mut *self.replicas.locked());
        for shipping in &sessions {
            shipping.peer.stop();
        }
        for shipping in sessions {
            let _ = shipping.thread.join();
        }
    }

    fn link_view(&self) -> Option<(String, crate::repl::status::LinkProgress)> {
        self.link
            .locked()
            .as_ref()
            .map(|l| (l.primary.clone(), l.status.progress()))
    }

    /// The progress of each connected replica (for acknowledgement levels and `WAIT`).
    fn replica_progress(&self) -> Vec<crate::repl::status::PeerProgress> {
        self.peers().iter().map(|peer| peer.progress()).collect()
    }

    fn peers(&self) -> Vec<Arc<ReplicaPeer>> {
        self.replicas
            .locked()
            .iter()
            .map(|s| Arc::clone(&s.peer))
            .filter(|p| p.progress().online)
            .collect()
    }
}
