//! The primary's side of a shipping session: check the replica's hello, then send every
//! durable record from where the replica stands, as segment byte ranges, with heartbeats
//! while idle; a second thread reads the replica's acknowledgements.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::auth::{Prover, proof, verify};
use super::error::ReplError;
use super::status::{ReplicaPeer, clock_micros};
use super::wire::FrameStream;
use crate::format::Epoch;
use crate::format::repl::{
    AUTH_BYTES, Frame, Hello, PROTOCOL_VERSION, Peer, RefuseCode, SEGMENT_BYTES_MAX, Welcome,
    encode_peer,
};
use crate::snapshot::SnapshotFile;
use crate::wal::{Wal, WalError};

/// How a primary ships.
#[derive(Debug, Clone, Copy)]
pub struct ShipperOptions {
    /// Most bytes of segment per frame.
    pub chunk_bytes: usize,
    /// Interval of heartbeats while there is nothing to ship.
    pub heartbeat: Duration,
    /// A replica silent this long (no acknowledgement) is disconnected.
    pub timeout: Duration,
}

impl Default for ShipperOptions {
    fn default() -> Self {
        Self {
            chunk_bytes: 1 << 20,
            heartbeat: Duration::from_millis(250),
            timeout: Duration::from_secs(30),
        }
    }
}

/// How a primary bootstraps replicas that cannot be served from its log.
#[derive(Clone, Copy)]
pub struct Bootstrap<'a> {
    /// A snapshot the log continues from (built now or shared with other replicas), with the
    /// replica's id: the caller holds the log after the snapshot for that replica.
    pub snapshot: &'a dyn Fn(u128) -> Result<Arc<SnapshotFile>, String>,
    /// An empty replica is bootstrapped from a snapshot when the log it would be sent instead
    /// is larger than this (bytes of segment files).
    pub empty_replica_min_log_bytes: u64,
}

impl std::fmt::Debug for Bootstrap<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field(
                "empty_replica_min_log_bytes",
                &self.empty_replica_min_log_bytes,
            )
            .finish_non_exhaustive()
    }
}

/// What a shipping session calls on: authentication, slot registration, bootstrap.
#[derive(Clone, Copy)]
pub struct SessionHooks<'a> {
    /// The password and challenge, when the primary has a password.
    pub auth: Option<Auth<'a>>,
    /// Called with the replica's id and position once its hello is accepted (or its
    /// snapshot's LSN, for a bootstrap), before anything ships.
    pub on_accept: &'a dyn Fn(u128, u64),
    /// Snapshot bootstrap; without it, a replica that needs one is refused.
    pub bootstrap: Option<Bootstrap<'a>>,
    /// Called when the replica knows of an epoch newer than this primary's: this primary was
    /// replaced and must stop taking writes.
    pub on_fenced: &'a (dyn Fn(Epoch) + Sync),
    /// This primary's replicas and how far each is, for the peers frames that let a replica
    /// judge whether it is the most advanced before it takes over.
    pub peers: &'a dyn Fn() -> Vec<Peer>,
}

impl std::fmt::Debug for SessionHooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHooks")
            .field("auth", &self.auth.is_some())
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

/// The primary's password and the challenge it sent with the handshake reply.
#[derive(Debug, Clone, Copy)]
pub struct Auth<'a> {
    /// The password replicas must prove they know.
    pub password: &'a [u8],
    /// The nonce sent to this replica.
    pub challenge: [u8; AUTH_BYTES],
}

/// Serves one replica on `stream` until it leaves, fails or [`ReplicaPeer::stop`] is called.
/// `received` are bytes the replica sent after the handshake command.
///
/// # Errors
/// Why the session ended (a refusal is sent to the replica first).
pub fn serve(
    wal: &Wal,
    stream: TcpStream,
    received: &[u8],
    peer: &ReplicaPeer,
    options: ShipperOptions,
    hooks: SessionHooks<'_>,
) -> Result<(), ReplError> {
    stream.set_read_timeout(Some(options.timeout))?;
    stream.set_write_timeout(Some(options.timeout))?;
    let _ = stream.set_nodelay(true);
    let acks = FrameStream::new(stream.try_clone()?, &[]);
    let mut frames = FrameStream::new(stream, received);
    if let Some(auth) = hooks.auth {
        authenticate(&mut frames, auth)?;
    }
    let hello = read_hello(wal, &mut frames, hooks)?;
    let checked = check_epochs(wal, &mut frames, &hello, hooks)?;
    let mut start_after = match checked {
        Ok(after) => after,
        Err((code, reason)) => {
            let _ = frames.send(&Frame::Refuse {
                code,
                reason: &reason,
            });
            return Err(ReplError::Refused { code, reason });
        }
    };
    let log_bytes = || wal.segment_extents().iter().map(|(_, b)| b).sum::<u64>();
    let mut needs_snapshot = hooks.bootstrap.is_some_and(|b| {
        start_after == 0 && wal.written_lsn() > 0 && log_bytes() > b.empty_replica_min_log_bytes
    });
    if !needs_snapshot && hooks.bootstrap.is_some() {
        needs_snapshot = matches!(
            wal.ship_position_after(start_after),
            Err(WalError::NotRetained { .. })
        );
    }
    let mut transfer = None;
    if let Some(bootstrap) = hooks.bootstrap.filter(|_| needs_snapshot) {
        let offered = offer_snapshot(&mut frames, peer, &hello, bootstrap, hooks)?;
        start_after = offered.lsn;
        transfer = Some(offered);
    }
    let mut position = match wal.ship_position_after(start_after) {
        Ok(position) => position,
        Err(WalError::NotRetained { lsn, first }) => {
            let code = RefuseCode::NeedsSnapshot;
            let reason = format!(
                "the replica needs LSN {lsn}, which this primary no longer holds as it was \
                 (compacted, or before its log's start at LSN {first}); the replica must be \
                 bootstrapped from a snapshot"
            );
            let _ = frames.send(&Frame::Refuse {
                code,
                reason: &reason,
            });
            return Err(ReplError::Refused { code, reason });
        }
        Err(e) => return Err(e.into()),
    };
    // The caller keeps the log from `start_after` on for this replica (its retention slot)
    // before anything ships, so even a session that ends at once leaves the slot behind.
    (hooks.on_accept)(hello.replica_id, start_after);
    frames.send(&Frame::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        cluster_id: wal.cluster_id(),
        epoch: wal.highest_epoch(),
        durable_lsn: wal.durable_lsn().max(start_after),
        start_after,
    }))?;
    peer.hello(hello.replica_id, hello.listen_port, start_after);
    tracing::info!(
        replica = %peer.addr,
        port = hello.listen_port,
        start_after,
        "replica accepted; shipping the log"
    );
    let reader_failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let result = read_acks(acks, peer, hooks.on_fenced);
            reader_failed.store(true, Ordering::Release);
            if let Err(e) = result
                && !peer.stopped()
            {
                tracing::info!(replica = %peer.addr, error = %e, "replica acknowledgements ended");
            }
            // Ends the sender's blocking write, if any.
            peer.stop();
        });
        let result = ship(
            wal,
            &mut frames,
            &mut position,
            peer,
            options,
            &reader_failed,
            transfer,
            hooks.peers,
        );
        peer.stop();
        result
    })
}

/// A snapshot file being sent to a replica, interleaved with the live log after it (as
/// Valkey's dual-channel sync does, on one connection): the replica buffers that log while the
/// snapshot arrives, so it is current the moment its restore ends.
struct Transfer {
    lsn: u64,
    file: std::fs::File,
    at: u64,
    file_bytes: u64,
}

/// Offers the replica a snapshot and learns where to start sending it (what the replica kept
/// of an interrupted transfer of the same file, or 0).
fn offer_snapshot(
    frames: &mut FrameStream,
    peer: &ReplicaPeer,
    hello: &Hello,
    bootstrap: Bootstrap<'_>,
    hooks: SessionHooks<'_>,
) -> Result<Transfer, ReplError> {
    let snapshot = match (bootstrap.snapshot)(hello.replica_id) {
        Ok(snapshot) => snapshot,
        Err(reason) => {
            let code = RefuseCode::NeedsSnapshot;
            let reason = format!("the replica needs a snapshot, and building one failed: {reason}");
            let _ = frames.send(&Frame::Refuse {
                code,
                reason: &reason,
            });
            return Err(ReplError::Refused { code, reason });
        }
    };
    let lsn = snapshot.header.lsn;
    // The log after the snapshot is held for this replica from now on.
    (hooks.on_accept)(hello.replica_id, lsn);
    peer.hello(hello.replica_id, hello.listen_port, lsn);
    peer.bootstrap(snapshot.file_bytes, lsn);
    // Opened before the offer: a newer build may replace the file, and this descriptor keeps
    // the one offered.
    let path = &snapshot.path;
    let mut file = std::fs::File::open(path)
        .map_err(|e| ReplError::Protocol(format!("opening {}: {e}", path.display())))?;
    frames.send(&Frame::SnapshotOffer {
        header: &snapshot.header_bytes,
        file_bytes: snapshot.file_bytes,
    })?;
    let offset = match frames.read_frame()? {
        Frame::SnapshotResume { offset } if offset <= snapshot.file_bytes => offset,
        other => {
            return Err(ReplError::Protocol(format!(
                "expected where to resume the snapshot, got {other:?}"
            )));
        }
    };
    tracing::info!(
        replica = %peer.addr,
        lsn,
        file_bytes = snapshot.file_bytes,
        resume_at = offset,
        "bootstrapping a replica from a snapshot"
    );
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
    peer.bootstrap_sent(offset);
    Ok(Transfer {
        lsn,
        file,
        at: offset,
        file_bytes: snapshot.file_bytes,
    })
}

/// Queues the next piece of the snapshot; returns whether any is left after it.
fn queue_snapshot_bytes(
    frames: &mut FrameStream,
    transfer: &mut Transfer,
    buffer: &mut Vec<u8>,
    chunk_bytes: usize,
    peer: &ReplicaPeer,
) -> Result<bool, ReplError> {
    let want = usize::try_from(transfer.file_bytes - transfer.at)
        .unwrap_or(usize::MAX)
        .min(chunk_bytes.clamp(1, SEGMENT_BYTES_MAX));
    if want > 0 {
        buffer.resize(want, 0);
        std::io::Read::read_exact(&mut transfer.file, buffer)?;
        frames.queue(&Frame::SnapshotBytes {
            offset: transfer.at,
            bytes: buffer,
        });
        transfer.at += want as u64;
        peer.bootstrap_sent(transfer.at);
    }
    if transfer.at < transfer.file_bytes {
        return Ok(true);
    }
    tracing::info!(replica = %peer.addr, lsn = transfer.lsn, "snapshot sent");
    Ok(false)
}

/// Checks the replica's proof, then proves this primary knows the password too.
fn authenticate(frames: &mut FrameStream, auth: Auth<'_>) -> Result<(), ReplError> {
    let refuse = |frames: &mut FrameStream, reason: &str| {
        let code = RefuseCode::Auth;
        let _ = frames.send(&Frame::Refuse { code, reason });
        Err(ReplError::Refused {
            code,
            reason: reason.to_owned(),
        })
    };
    let replica_nonce = match frames.read_frame()? {
        Frame::Auth { nonce, proof } => {
            if !verify(
                auth.password,
                Prover::Replica,
                &auth.challenge,
                nonce,
                proof,
            ) {
                return refuse(
                    frames,
                    "authentication failed: the replica's --masterauth-file does not hold this \
                     primary's password",
                );
            }
            *nonce
        }
        _ => {
            return refuse(
                frames,
                "this primary requires authentication: give the replica --masterauth-file",
            );
        }
    };
    let mine = proof(
        auth.password,
        Prover::Primary,
        &auth.challenge,
        &replica_nonce,
    );
    frames.send(&Frame::Auth {
        nonce: &auth.challenge,
        proof: &mine,
    })
}

/// Serves a shipping connection made to a node that ships nothing (a replica): a fence notice
/// is heeded (`on_fenced`) and answered, so the node that sent it knows it was heard and stops
/// sending; anything else is dropped unanswered, and the peer sees the connection close.
///
/// # Errors
/// Authentication, I/O or protocol errors; `Refused` once a fence notice was answered.
pub fn answer_fence(
    stream: TcpStream,
    received: &[u8],
    timeout: Duration,
    auth: Option<Auth<'_>>,
    on_fenced: &dyn Fn(Epoch),
) -> Result<(), ReplError> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut frames = FrameStream::new(stream, received);
    if let Some(auth) = auth {
        authenticate(&mut frames, auth)?;
    }
    let Frame::Fence { epoch } = frames.read_frame()? else {
        return Ok(());
    };
    on_fenced(epoch);
    let code = RefuseCode::Other;
    let reason = format!("this node ships nothing (it follows a primary); epoch {epoch} noted");
    let _ = frames.send(&Frame::Refuse {
        code,
        reason: &reason,
    });
    Err(ReplError::Refused { code, reason })
}

/// The replica's hello; a fence frame in its place is answered ([`heed_fence`]) and ends the
/// session.
fn read_hello(
    wal: &Wal,
    frames: &mut FrameStream,
    hooks: SessionHooks<'_>,
) -> Result<Hello, ReplError> {
    match frames.read_frame()? {
        Frame::Hello(hello) => Ok(hello),
        // A promoted node telling its old primary about its epoch: nothing ships.
        Frame::Fence { epoch } => Err(heed_fence(wal, frames, epoch, hooks)),
        other => Err(ReplError::Protocol(format!(
            "expected a hello, got {other:?}"
        ))),
    }
}

/// Answers a fence frame sent instead of a hello: steps down when `epoch` is newer than this
/// node's, or the same, and refuses the session either way (code 7 says the notice was taken).
///
/// IMPORTANT: a fence of this node's own epoch steps it down too. A fence comes only from the
/// node that started that epoch, so another node started it as well: two primaries of one
/// epoch, which look alike to every history check. The older one is told to step down.
fn heed_fence(
    wal: &Wal,
    frames: &mut FrameStream,
    epoch: Epoch,
    hooks: SessionHooks<'_>,
) -> ReplError {
    let mine = wal.highest_epoch();
    let (code, reason) = if epoch >= mine {
        if epoch == mine {
            tracing::error!(
                epoch,
                "another node started this node's epoch too (two promotions could not reach each \
                 other): stepping down; point this node at the primary that sent the notice"
            );
        }
        (hooks.on_fenced)(epoch);
        (
            RefuseCode::StaleEpoch,
            format!("this primary is of epoch {mine}, not newer than {epoch}: it stepped down"),
        )
    } else {
        (
            RefuseCode::Other,
            format!("this node is of epoch {mine}, not older than {epoch}"),
        )
    };
    let _ = frames.send(&Frame::Refuse {
        code,
        reason: &reason,
    });
    ReplError::Refused { code, reason }
}

/// Steps down (and refuses) when the replica knows of a newer epoch; otherwise checks its log
/// and sends this primary's epoch history, which the replica adopts with the welcome or finds
/// its fork point with.
fn check_epochs(
    wal: &Wal,
    frames: &mut FrameStream,
    hello: &Hello,
    hooks: SessionHooks<'_>,
) -> Result<Result<u64, (RefuseCode, String)>, ReplError> {
    let mine = wal.highest_epoch();
    if hello.highest_epoch > mine {
        (hooks.on_fenced)(hello.highest_epoch);
        let code = RefuseCode::StaleEpoch;
        let reason = format!(
            "this primary is of epoch {mine}, and the replica has seen epoch {}: this primary \
             was replaced and stepped down",
            hello.highest_epoch
        );
        let _ = frames.send(&Frame::Refuse {
            code,
            reason: &reason,
        });
        return Err(ReplError::Refused { code, reason });
    }
    let checked = check_hello(wal, hello);
    let mut history = Vec::new();
    wal.epoch_history().to_wire(&mut history);
    frames.send(&Frame::History { entries: &history })?;
    Ok(checked)
}

/// Whether the replica's log is a prefix of this one; the LSN to ship after, or a refusal.
fn check_hello(wal: &Wal, hello: &Hello) -> Result<u64, (RefuseCode, String)> {
    if hello.version != PROTOCOL_VERSION {
        return Err((
            RefuseCode::Version,
            format!(
                "the replica speaks shipping protocol {}, this primary {PROTOCOL_VERSION}",
                hello.version
            ),
        ));
    }
    if hello.last_lsn == 0 {
        return Ok(0);
    }
    if hello.cluster_id != wal.cluster_id() {
        return Err((
            RefuseCode::ClusterMismatch,
            format!(
                "the replica holds the log of cluster {:032x}, this primary is cluster {:032x}; \
                 point it at its own cluster or give it an empty directory",
                hello.cluster_id,
                wal.cluster_id()
            ),
        ));
    }
    let durable = wal.durable_lsn();
    if hello.last_lsn > durable {
        return Err((
            RefuseCode::Diverged,
            format!(
                "the replica holds LSN {} but this primary's log ends at LSN {durable}: it has \
                 records this primary never wrote",
                hello.last_lsn
            ),
        ));
    }
    if hello.last_digest != 0
        && let Ok(Some(mine)) = wal.digest_at(hello.last_lsn)
        && mine != hello.last_digest
    {
        return Err((
            RefuseCode::Diverged,
            format!(
                "the replica's log differs from this primary's in the segment holding LSN {} \
                 (log digests {:016x} and {mine:016x}): the histories diverged",
                hello.last_lsn, hello.last_digest
            ),
        ));
    }
    match wal.read(hello.last_lsn) {
        Ok(Some(record)) if record.epoch == hello.last_epoch => Ok(hello.last_lsn),
        Ok(Some(record)) => Err((
            RefuseCode::Diverged,
            format!(
                "the replica's LSN {} is of epoch {}, this primary's of epoch {}: the histories \
                 diverged",
                hello.last_lsn, hello.last_epoch, record.epoch
            ),
        )),
        // Not here (retention or compaction): `ship_position_after` decides.
        Ok(None) | Err(WalError::NotRetained { .. }) => Ok(hello.last_lsn),
        Err(e) => Err((
            RefuseCode::Other,
            format!("reading LSN {}: {e}", hello.last_lsn),
        )),
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the session's state, passed down from `serve`"
)]
fn ship(
    wal: &Wal,
    frames: &mut FrameStream,
    position: &mut crate::wal::ShipPosition,
    peer: &ReplicaPeer,
    options: ShipperOptions,
    reader_failed: &AtomicBool,
    mut transfer: Option<Transfer>,
    peers: &dyn Fn() -> Vec<Peer>,
) -> Result<(), ReplError> {
    let mut peers_sent = Vec::new();
    let mut last_beat = Instant::now()
        .checked_sub(options.heartbeat)
        .unwrap_or_else(Instant::now);
    let mut snapshot_buffer = Vec::new();
    loop {
        if peer.stopped() || reader_failed.load(Ordering::Acquire) {
            return Err(ReplError::Stopped);
        }
        let mut shipped = 0;
        if let Some(sending) = transfer.as_mut() {
            let more = queue_snapshot_bytes(
                frames,
                sending,
                &mut snapshot_buffer,
                options.chunk_bytes,
                peer,
            )?;
            shipped += snapshot_buffer.len();
            if !more {
                transfer = None;
                snapshot_buffer = Vec::new();
            }
        }
        while let Some(chunk) = wal.ship_chunk(position, options.chunk_bytes)? {
            if let Some(header) = &chunk.header {
                frames.queue(&Frame::SegmentHeader {
                    header,
                    capacity: chunk.capacity,
                });
            }
            frames.queue(&Frame::SegmentBytes {
                segment: chunk.segment,
                offset: chunk.offset,
                last_lsn: chunk.last_lsn,
                bytes: &chunk.bytes,
            });
            *position = chunk.next;
            shipped += chunk.bytes.len();
            if chunk.last_lsn != 0 {
                peer.shipped(chunk.last_lsn);
            }
            if shipped >= 4 * options.chunk_bytes {
                break;
            }
        }
        if shipped > 0 {
            frames.flush()?;
            if last_beat.elapsed() < options.heartbeat {
                continue;
            }
        }
        // Heartbeats go out when idle, and during a long backlog too, so the replica always
        // knows how far behind it is.
        if last_beat.elapsed() >= options.heartbeat {
            let shipped_through = position.next_lsn - 1;
            let (digest_lsn, digest) = match wal.digest_at(shipped_through)? {
                Some(digest) => (shipped_through, digest),
                None => (0, 0),
            };
            let mut listed = Vec::new();
            for p in peers().iter().take(crate::format::repl::PEERS_MAX) {
                encode_peer(&mut listed, p);
            }
            if listed != peers_sent {
                frames.queue(&Frame::Peers { entries: &listed });
                peers_sent = listed;
            }
            frames.send(&Frame::Heartbeat {
                durable_lsn: wal.durable_lsn().max(shipped_through),
                clock_micros: clock_micros(),
                digest_lsn,
                digest,
            })?;
            last_beat = Instant::now();
        }
        if shipped > 0 {
            continue;
        }
        let wait = options
            .heartbeat
            .saturating_sub(last_beat.elapsed())
            .min(Duration::from_millis(100));
        match wal.tail(position.next_lsn - 1, wait) {
            Ok(_) => {}
            Err(WalError::Closed) => return Err(ReplError::Stopped),
            Err(e) => return Err(e.into()),
        }
    }
}

fn read_acks(
    mut acks: FrameStream,
    peer: &ReplicaPeer,
    on_fenced: &(dyn Fn(Epoch) + Sync),
) -> Result<(), ReplError> {
    loop {
        match acks.read_frame()? {
            Frame::Fence { epoch } => {
                tracing::warn!(replica = %peer.addr, epoch, "a replica knows of a newer epoch");
                on_fenced(epoch);
                return Err(ReplError::Stopped);
            }
            Frame::Ack {
                received,
                durable,
                applied,
                ..
            } => peer.ack(received, durable, applied),
            Frame::Refuse { code, reason } => return Err(ReplError::refused(code, reason)),
            other => {
                return Err(ReplError::Protocol(format!(
                    "a replica sent {other:?}; only acknowledgements are expected"
                )));
            }
        }
    }
}
