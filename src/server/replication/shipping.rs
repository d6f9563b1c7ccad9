//! Shipping sessions: a client connection that sent `SHIPLOG.SHIP` becomes a replica this
//! node ships its log to (or, on a node that ships nothing, is read for a fence notice); one
//! that sent `SHIPLOG.SNAPSHOT` gets a snapshot streamed to it.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::Replication;
use crate::repl::ReplicaPeer;
use crate::repl::shipper::{self, Bootstrap, SessionHooks, ShipperOptions};
use crate::snapshot::SnapshotFile;
use crate::sync::MutexExt;

/// Most shipping sessions at once (also at most `--max-clients`).
const MAX_SHIPPING_SESSIONS: usize = 64;

/// Most `SHIPLOG.SNAPSHOT` transfers at once: each is a thread and a socket held for as long
/// as the transfer takes.
const MAX_SNAPSHOT_SENDERS: usize = 4;

/// Most connections read at once by a node that ships nothing, looking for a fence notice.
const MAX_FENCE_READERS: usize = 4;

/// How long such a connection may take to send its notice.
const FENCE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
pub(super) struct FenceReader {
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
pub(super) struct Shipping {
    pub(super) peer: Arc<ReplicaPeer>,
    pub(super) thread: JoinHandle<()>,
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

impl Replication {
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
        // `stop` takes after setting the shutdown flag.
        let mut replicas = self.replicas.locked();
        if self.is_shutting_down() {
            return;
        }
        if self.is_read_only() {
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
                me.replicas
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
            // IMPORTANT: checked under the lock `stop` takes after the shutdown
            // flag is set, so every reader registered is cut by it.
            let mut readers = self.fence_readers.locked();
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
                let _registered = Registered(&me.fence_readers, registered);
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
            self.fence_readers
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
    pub(super) fn cut_fence_readers(&self, all: bool) {
        let now = Instant::now();
        for reader in self.fence_readers.locked().iter() {
            if all || reader.deadline <= now {
                let _ = reader.stream.shutdown(std::net::Shutdown::Both);
            }
        }
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
        self.building.fetch_add(1, Ordering::AcqRel);
        db.set_compaction_hold(0);
        let result = self.snapshots.get_or_build(db, usable);
        if let Ok(file) = &result {
            built(file);
        }
        self.building.fetch_sub(1, Ordering::AcqRel);
        let table = self.slots.locked();
        db.set_compaction_hold(self.compaction_hold(&table));
        result
    }

    /// Streams a fresh snapshot to a client that sent `SHIPLOG.SNAPSHOT`, as one RESP bulk
    /// string, in a thread of its own.
    fn start_snapshot_sender(self: &Arc<Self>, mut handoff: Handoff) {
        let senders = &self.senders;
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
                me.senders.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            self.senders.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(error = %e, "cannot start a snapshot sender thread");
        }
    }
}
