//! Failover: a replica's promotion to the primary of a new epoch (`REPLICAOF NO ONE`,
//! `SHIPLOG.PROMOTE`), refused while a known peer holds more of the log (the most advanced
//! replica must win, or acknowledged writes are lost); the old primary's step-down when it
//! learns of a newer epoch; and the notice a promoted node keeps sending its old primary, so a
//! paused or restarted old primary steps down as soon as it runs again.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Replication;
use crate::format::repl::Peer;
use crate::format::resp_reply::{Limits, Reply};
use crate::format::{Epoch, Lsn};
use crate::repl::link::{self, LinkOptions};
use crate::resp_conn::{ConnError, Connection};
use crate::sync::MutexExt;

/// How long a promotion waits for the replication link to stop.
const LINK_STOP_WAIT: Duration = Duration::from_secs(5);
/// How long a peer may take to tell its position before a promotion goes on without it.
const PEER_QUERY_TIMEOUT: Duration = Duration::from_millis(300);
/// Bounds on a peer's replies to `AUTH` and `SHIPLOG.POSITION`: a status line or three
/// integers, so anything larger is not an answer to them.
const PEER_REPLY_LIMITS: Limits = Limits {
    line_max_bytes: 256,
    bulk_max_bytes: 256,
    aggregate_max_len: 3,
    depth_max: 1,
};
/// How long a promoted node keeps trying to tell its old primary about the new epoch.
const FENCE_NOTICE_WINDOW: Duration = Duration::from_mins(2);

/// What a promotion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    /// The node was a primary already; nothing changed.
    AlreadyPrimary,
    /// The node is the primary of a new epoch, which starts at `start_lsn`.
    Promoted {
        /// The new epoch.
        epoch: Epoch,
        /// Its first LSN.
        start_lsn: Lsn,
    },
}

/// A node's answer to `SHIPLOG.POSITION`: how far its log goes, and in which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Its durable LSN.
    pub durable_lsn: Lsn,
    /// The newest epoch it knows.
    pub highest_epoch: Epoch,
    /// The epoch of its record at `durable_lsn` (0: none).
    pub last_epoch: Epoch,
}

impl Position {
    /// Whether this log is further than `other`'s: a newer epoch at its end, or the same
    /// epoch and more records (Kafka's comparison of leader epoch, then offset). A log that
    /// ends in an older epoch may be longer and still behind: its tail is what a failover cut.
    #[must_use]
    pub fn ahead_of(&self, other: &Self) -> bool {
        (self.last_epoch, self.durable_lsn) > (other.last_epoch, other.durable_lsn)
    }
}

impl Replication {
    /// Makes this replica the primary of a new epoch, above every epoch it or a reachable
    /// peer knows. Unless `force`, refuses (and keeps following its primary) when a reachable
    /// peer holds a higher durable LSN or a newer epoch, or when this node was fenced.
    ///
    /// # Errors
    /// The reply text for the client: why the promotion was refused or failed.
    pub fn promote(self: &Arc<Self>, force: bool) -> Result<Promotion, String> {
        let replication = self;
        let fenced = replication.fenced.load(Ordering::Acquire);
        let taken = replication.link.locked().take();
        let (primary, peers) = match taken {
            Some(link) => {
                let peers = link.status.progress().peers;
                link.status.stop();
                let deadline = Instant::now() + LINK_STOP_WAIT;
                while !link.thread.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if !link.thread.is_finished() {
                    replication.stopping.locked().push(link.thread);
                    self.replicate_from(link.primary);
                    return Err("ERR the replication link did not stop in time; try again".into());
                }
                let _ = link.thread.join();
                (Some(link.primary), peers)
            }
            None if fenced == 0 => return Ok(Promotion::AlreadyPrimary),
            None if !force => {
                return Err(format!(
                    "ERR this node was replaced by a primary of epoch {fenced}: point it at the \
                     new primary (REPLICAOF host port); SHIPLOG.PROMOTE FORCE would split the \
                     cluster's history"
                ));
            }
            None => (None, Vec::new()),
        };
        let refuse = |why: String| {
            if let Some(primary) = &primary {
                // Nothing changed: follow the primary again.
                self.replicate_from(primary.clone());
            }
            Err(why)
        };
        let db = self.keyspace.db();
        let wal = db.wal();
        if db.restoring() {
            return refuse(
                "ERR this replica is being bootstrapped from a snapshot and holds no usable \
                 state; promote another replica"
                    .into(),
            );
        }
        if let Err(e) = wal.sync() {
            return refuse(format!("ERR syncing the log before the promotion: {e}"));
        }
        let mine = self.position();
        let mut targets: Vec<(SocketAddr, bool)> = peers
            .iter()
            .filter(|p| p.replica_id != replication.replica_id)
            .map(|p| (SocketAddr::new(peer_ip(p), p.port), false))
            .collect();
        // The primary it followed, if it still answers (a switchover, or a primary that is
        // back): its epoch counts, and so does a log it holds beyond this node's.
        if let Some(addr) = primary
            .as_deref()
            .and_then(|p| p.to_socket_addrs().ok())
            .and_then(|mut a| a.next())
        {
            targets.push((addr, true));
        }
        let highest = match self.compare_with_peers(&targets, mine, force) {
            Ok(peers_highest) => wal
                .highest_epoch()
                .max(fenced)
                .max(replication.seen_epoch.load(Ordering::Acquire))
                .max(peers_highest),
            Err(why) => return refuse(why),
        };
        let Some(epoch) = highest.checked_add(1) else {
            return refuse(format!(
                "ERR epoch {highest} is the last one: this cluster cannot fail over again"
            ));
        };
        let start_lsn = match wal.begin_epoch(epoch) {
            Ok(start) => start,
            Err(e) => return refuse(format!("ERR starting epoch {epoch}: {e}")),
        };
        replication.fenced.store(0, Ordering::SeqCst);
        replication.read_only.store(false, Ordering::Release);
        // A notice of a newer or equal epoch that came while the epoch was chosen fenced this
        // node (no link now) and was just cleared: heed it again. `step_down` raises the seen
        // epoch before it fences (both `SeqCst`), so either this load sees it or its fence
        // lands after the clear above.
        let heard = replication.seen_epoch.load(Ordering::SeqCst);
        if heard >= epoch {
            self.step_down(heard);
            return Err(format!(
                "ERR started epoch {epoch}, but a node of epoch {heard} exists: this node stepped \
                 down; point it at the primary (REPLICAOF host port)"
            ));
        }
        // Compaction again, as on any primary (the slot keeper keeps it off replicas), held
        // where the slots say: until a replica holds a slot, nothing written here is settled.
        db.set_compaction_hold(self.current_compaction_hold());
        tracing::warn!(
            epoch,
            start_lsn,
            "promoted: this node is the primary of a new epoch"
        );
        if let Some(old) = primary {
            self.notify_old_primary(old, epoch);
        }
        Ok(Promotion::Promoted { epoch, start_lsn })
    }

    /// Asks each target (address, whether it is the primary this node followed) where it
    /// stands; the newest epoch any of them knows, or why the promotion must not go on: one is
    /// further than `mine`, or (a sibling, not the primary followed) knows a newer epoch than
    /// this node, so another node was promoted. Targets that do not answer are skipped.
    fn compare_with_peers(
        &self,
        targets: &[(SocketAddr, bool)],
        mine: Position,
        force: bool,
    ) -> Result<Epoch, String> {
        let mut highest = mine.highest_epoch;
        for &(addr, followed) in targets {
            let position = match query_position(addr, self.options.masterauth.as_deref()) {
                Ok(position) => {
                    // Heard of, even if this promotion is refused: a later one goes above it.
                    self.seen_epoch
                        .fetch_max(position.highest_epoch, Ordering::AcqRel);
                    position
                }
                Err(e) => {
                    tracing::warn!(
                        peer = %addr,
                        error = %e,
                        "a peer did not tell its position; promoting without comparing with it"
                    );
                    continue;
                }
            };
            if !force && !followed && position.highest_epoch > highest {
                return Err(format!(
                    "ERR peer {addr} already knows epoch {}: another node was promoted; point \
                     this node at it, or use SHIPLOG.PROMOTE FORCE",
                    position.highest_epoch
                ));
            }
            if !force && position.ahead_of(&mine) {
                return Err(format!(
                    "ERR peer {addr} holds LSN {} (epoch {}) durably and this node only LSN {} \
                     (epoch {}): promote the most advanced replica (or use SHIPLOG.PROMOTE \
                     FORCE, losing the records only it holds)",
                    position.durable_lsn, position.last_epoch, mine.durable_lsn, mine.last_epoch
                ));
            }
            highest = highest.max(position.highest_epoch);
        }
        Ok(highest)
    }

    /// This primary learned of a newer epoch: it was replaced, and refuses writes from now on
    /// (until it is pointed at the new primary).
    pub fn step_down(&self, epoch: Epoch) {
        // Heard of, whatever this node does about it now: a promotion must go above it.
        self.seen_epoch.fetch_max(epoch, Ordering::SeqCst);
        if self.link.locked().is_some() {
            return;
        }
        // The same epoch counts: only a fence names it, sent by a node that started it too.
        if epoch < self.keyspace.db().wal().highest_epoch() {
            return;
        }
        let before = self.fenced.fetch_max(epoch, Ordering::SeqCst);
        if before < epoch {
            tracing::error!(
                epoch,
                "a node of a newer epoch exists: this primary was replaced by a failover and \
                 stops taking writes; point it at the new primary (REPLICAOF host port)"
            );
        }
    }

    /// This node's position, as `SHIPLOG.POSITION` tells it.
    #[must_use]
    pub fn position(&self) -> Position {
        let wal = self.keyspace.db().wal();
        let durable_lsn = wal.durable_lsn();
        let last_epoch = match wal.read(durable_lsn) {
            Ok(Some(record)) if durable_lsn > 0 => record.epoch,
            // Compacted away or nothing yet: the epoch in force there by the history.
            _ if durable_lsn > 0 => wal.epoch_history().epoch_at(durable_lsn),
            _ => 0,
        };
        Position {
            durable_lsn,
            highest_epoch: wal.highest_epoch(),
            last_epoch,
        }
    }

    /// The epoch that replaced this primary, if one did.
    #[must_use]
    pub fn fenced_by(&self) -> Option<Epoch> {
        Some(self.fenced.load(Ordering::Acquire)).filter(|&e| e > 0)
    }

    /// This primary's replicas as peers frames list them.
    pub(super) fn peer_list(&self) -> Vec<Peer> {
        self.peers()
            .iter()
            .map(|peer| {
                let p = peer.progress();
                Peer {
                    replica_id: p.replica_id,
                    ip: match peer.addr.ip() {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                        IpAddr::V6(v6) => v6,
                    },
                    port: p.listen_port,
                    durable_lsn: p.durable,
                }
            })
            .collect()
    }

    /// Keeps telling the old primary about `epoch` (in a thread of its own) until it has
    /// heard, so that one paused or restarted within the window steps down.
    fn notify_old_primary(self: &Arc<Self>, old: String, epoch: Epoch) {
        let me = Arc::clone(self);
        let mut options = LinkOptions::new(old.clone(), self.replica_id, 0);
        options.masterauth.clone_from(&self.options.masterauth);
        options.timeout = Duration::from_secs(30);
        let spawned = std::thread::Builder::new()
            .name("fence-notice".into())
            .spawn(move || {
                let deadline = Instant::now() + FENCE_NOTICE_WINDOW;
                while Instant::now() < deadline && !me.is_shutting_down() {
                    match link::send_fence(&options, epoch) {
                        Ok(()) => {
                            tracing::info!(old_primary = %old, epoch, "the old primary knows of the new epoch");
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(old_primary = %old, error = %e, "the old primary has not heard of the new epoch yet");
                            std::thread::sleep(Duration::from_millis(250));
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the thread that fences the old primary");
        }
    }
}

fn peer_ip(peer: &Peer) -> IpAddr {
    peer.ip
        .to_ipv4_mapped()
        .map_or(IpAddr::V6(peer.ip), IpAddr::V4)
}

/// Asks a peer for its durable LSN and highest epoch (`SHIPLOG.POSITION`), after `AUTH` when
/// the cluster has a password (both sent in one write).
fn query_position(addr: SocketAddr, password: Option<&[u8]>) -> Result<Position, ConnError> {
    let mut peer =
        Connection::connect(&addr.to_string(), PEER_QUERY_TIMEOUT)?.with_limits(PEER_REPLY_LIMITS);
    if let Some(password) = password {
        peer.queue(&[b"AUTH", password]);
    }
    peer.queue(&[b"SHIPLOG.POSITION"]);
    peer.flush()?;
    if password.is_some() {
        match peer.read_reply()? {
            Reply::Simple(b"OK") => {}
            other => {
                let reply = other.describe();
                return Err(peer.unexpected("AUTH", reply));
            }
        }
    }
    // `*3 :durable_lsn :highest_epoch :last_epoch`
    let reply = peer.read_reply()?;
    if let Reply::Array(Some(items)) = &reply
        && let [
            Reply::Integer(durable_lsn),
            Reply::Integer(highest_epoch),
            Reply::Integer(last_epoch),
        ] = items.as_slice()
        && let Some(position) = position_from(*durable_lsn, *highest_epoch, *last_epoch)
    {
        return Ok(position);
    }
    let reply = reply.describe();
    Err(peer.unexpected("SHIPLOG.POSITION", reply))
}

/// The position in a `SHIPLOG.POSITION` reply, `None` when a number is out of its range.
fn position_from(durable_lsn: i64, highest_epoch: i64, last_epoch: i64) -> Option<Position> {
    Some(Position {
        durable_lsn: Lsn::try_from(durable_lsn).ok()?,
        highest_epoch: Epoch::try_from(highest_epoch).ok()?,
        last_epoch: Epoch::try_from(last_epoch).ok()?,
    })
}
