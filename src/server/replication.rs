//! The server's replication role: the replicas this node ships to (as a primary), the link to
//! its primary (as a replica), `REPLICAOF`, `ROLE` and `INFO replication`.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::Shared;
use crate::format::resp::ReplyWriter;
use crate::repl::link::{self, LinkOptions};
use crate::repl::shipper::{self, ShipperOptions};
use crate::repl::{LinkState, LinkStatus, ReplicaPeer};

/// File in the data directory holding this node's replica identity.
const REPLICA_ID_FILE: &str = "replica-id";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A replica's link to its primary.
#[derive(Debug)]
struct Link {
    primary: String,
    status: Arc<LinkStatus>,
    thread: JoinHandle<()>,
}

/// A replica this primary ships to.
#[derive(Debug)]
struct Shipping {
    peer: Arc<ReplicaPeer>,
    thread: JoinHandle<()>,
}

/// Replication state of a server.
#[derive(Debug)]
pub struct Replication {
    replica_id: u128,
    /// Set while this node follows a primary: writes are refused.
    read_only: AtomicBool,
    link: Mutex<Option<Link>>,
    replicas: Mutex<Vec<Shipping>>,
}

impl Replication {
    /// Loads (or creates, durably) this node's replica identity in `dir`.
    ///
    /// # Errors
    /// I/O errors, or an identity file that is not 32 hex digits.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            replica_id: replica_id(dir)?,
            read_only: AtomicBool::new(false),
            link: Mutex::new(None),
            replicas: Mutex::new(Vec::new()),
        })
    }

    /// Whether writes are refused (this node is a replica).
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }
}

fn replica_id(dir: &Path) -> std::io::Result<u128> {
    let path = dir.join(REPLICA_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => u128::from_str_radix(text.trim(), 16).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a replica id (32 hex digits); remove it to get a new one",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id =
                u128::from(crate::wal::random_u64()) << 64 | u128::from(crate::wal::random_u64());
            let temp = dir.join(format!("{REPLICA_ID_FILE}.tmp"));
            std::fs::write(&temp, format!("{id:032x}\n"))?;
            std::fs::File::open(&temp)?.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

impl Shared {
    /// Follows `primary` (`HOST:PORT`), or stops following (`None`): `REPLICAOF` and
    /// `--replica-of`. Returns false when the node already follows that primary.
    pub fn replicate_from(self: &Arc<Self>, primary: Option<String>) -> bool {
        let replication = &self.replication;
        let mut link = lock(&replication.link);
        if link.as_ref().map(|l| &l.primary) == primary.as_ref() {
            return false;
        }
        if let Some(old) = link.take() {
            old.status.stop();
            let _ = old.thread.join();
            tracing::info!(primary = %old.primary, "stopped replicating");
        }
        let Some(primary) = primary else {
            replication.read_only.store(false, Ordering::Release);
            tracing::warn!(
                "this node now accepts writes as a primary (same epoch: fencing of the old \
                 primary is not built yet)"
            );
            return true;
        };
        // Read-only before the first shipped record arrives, and before this node's own
        // replicas are told anything.
        replication.read_only.store(true, Ordering::Release);
        for shipping in lock(&replication.replicas).iter() {
            shipping.peer.stop();
        }
        let status = Arc::new(LinkStatus::default());
        let options = LinkOptions::new(primary.clone(), replication.replica_id, self.listen.port());
        let me = Arc::clone(self);
        let for_thread = Arc::clone(&status);
        let spawned = std::thread::Builder::new()
            .name("replica-link".into())
            .spawn(move || link::run(me.keyspace.db(), &options, &for_thread));
        match spawned {
            Ok(thread) => {
                tracing::info!(%primary, "replicating from a primary");
                *link = Some(Link {
                    primary,
                    status,
                    thread,
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot start the replication thread"),
        }
        true
    }

    /// Turns a client connection that sent the handshake command into a shipping session.
    pub fn start_shipping(
        self: &Arc<Self>,
        stream: TcpStream,
        received: Vec<u8>,
        addr: SocketAddr,
    ) {
        if self.replication.is_read_only() || self.is_shutting_down() {
            // A replica does not ship (cascading is not supported); the peer sees the close.
            tracing::info!(%addr, "refusing a replica: this node is not a primary");
            return;
        }
        let peer = Arc::new(ReplicaPeer::new(addr, stream.try_clone().ok()));
        let me = Arc::clone(self);
        let for_thread = Arc::clone(&peer);
        let spawned = std::thread::Builder::new()
            .name("shipper".into())
            .spawn(move || {
                let wal = me.keyspace.db().wal();
                if let Err(e) = shipper::serve(
                    wal,
                    stream,
                    &received,
                    &for_thread,
                    ShipperOptions::default(),
                ) {
                    if for_thread.stopped() {
                        tracing::info!(replica = %addr, "replica session ended");
                    } else {
                        tracing::warn!(replica = %addr, error = %e, "replica session ended");
                    }
                }
                lock(&me.replication.replicas).retain(|s| !Arc::ptr_eq(&s.peer, &for_thread));
            });
        match spawned {
            Ok(thread) => {
                let mut replicas = lock(&self.replication.replicas);
                // Finished sessions remove themselves; join those that did meanwhile.
                replicas.push(Shipping { peer, thread });
            }
            Err(e) => tracing::error!(error = %e, "cannot start a shipping thread"),
        }
    }

    /// Ends every replication thread (shutdown): they hold the server's state.
    pub(crate) fn stop_replication(&self) {
        if let Some(link) = lock(&self.replication.link).take() {
            link.status.stop();
            let _ = link.thread.join();
        }
        let sessions: Vec<Shipping> = std::mem::take(&mut *lock(&self.replication.replicas));
        for shipping in &sessions {
            shipping.peer.stop();
        }
        for shipping in sessions {
            let _ = shipping.thread.join();
        }
    }

    fn link_view(&self) -> Option<(String, crate::repl::status::LinkProgress)> {
        lock(&self.replication.link)
            .as_ref()
            .map(|l| (l.primary.clone(), l.status.progress()))
    }

    fn peers(&self) -> Vec<Arc<ReplicaPeer>> {
        lock(&self.replication.replicas)
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
        let db = self.keyspace.db();
        let wal = db.wal();
        let mut out = String::new();
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = write!(out, "{k}:{v}\r\n");
        };
        let applied = db.applied_lsn();
        if let Some((primary, p)) = self.link_view() {
            let (host, port) = split_host_port(&primary);
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
            line("master_sync_in_progress", &0);
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
            if let Some(error) = &p.last_error {
                line("replica_last_error", &error.replace(['\r', '\n'], " "));
            }
            return out;
        }
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
                    "ip={},port={},state=online,offset={},lag={},id={:032x},write_lsn={},flush_lsn={},replay_lsn={},write_lag_ms={},flush_lag_ms={},replay_lag_ms={},lag_lsns={}",
                    peer.addr.ip(),
                    p.listen_port,
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
                ),
            );
        }
        line("master_failover_state", &"no-failover");
        line(
            "master_replid",
            &format!("{:032x}00000000", wal.cluster_id()),
        );
        line("master_repl_offset", &durable);
        out
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
