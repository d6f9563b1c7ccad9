//! What each side knows about the other, for `ROLE`, `INFO replication`, metrics and
//! `shiplog status`.

use std::collections::VecDeque;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::format::Lsn;
use crate::sync::MutexExt;

/// Most (LSN, time shipped) samples kept per replica to turn acknowledged LSNs into lag times.
const LAG_SAMPLES_MAX: usize = 4096;

/// Microseconds since the Unix epoch (the clocks heartbeats and acks carry).
#[must_use]
pub fn clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A replica's progress as its primary sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerProgress {
    /// The replica's identity (0 until its hello arrives).
    pub replica_id: u128,
    /// The port it serves clients on.
    pub listen_port: u16,
    /// Shipping has begun (the hello was accepted).
    pub online: bool,
    /// Last LSN shipped to it.
    pub sent: Lsn,
    /// Last LSN it wrote (`PostgreSQL`'s write position).
    pub received: Lsn,
    /// Last LSN durable on it (flush position).
    pub durable: Lsn,
    /// Last LSN visible to its readers (replay position).
    pub applied: Lsn,
    /// Time from shipping a record to its acknowledgement as written, durable and applied,
    /// in microseconds, as of the latest acknowledgement that moved each.
    pub write_lag_micros: u64,
    /// See `write_lag_micros`.
    pub flush_lag_micros: u64,
    /// See `write_lag_micros`.
    pub replay_lag_micros: u64,
    /// Bytes of the snapshot file it is being bootstrapped from (0: no bootstrap).
    pub snapshot_bytes: u64,
    /// Bytes of that file sent so far.
    pub snapshot_sent: u64,
    /// The LSN of that snapshot.
    pub snapshot_lsn: Lsn,
    /// The replica acknowledged that snapshot's LSN as applied: the bootstrap is over.
    pub snapshot_applied: bool,
}

impl PeerProgress {
    /// Whether the replica is being bootstrapped: a snapshot was offered in this session and
    /// the replica has not applied it yet.
    #[must_use]
    pub fn bootstrapping(&self) -> bool {
        self.snapshot_bytes > 0 && !self.snapshot_applied
    }
}

/// One replica connected to this primary.
#[derive(Debug)]
pub struct ReplicaPeer {
    /// Where it connected from.
    pub addr: SocketAddr,
    progress: Mutex<PeerProgress>,
    last_ack: Mutex<Instant>,
    /// Shipped-at times of recent LSNs, oldest first.
    shipped: Mutex<VecDeque<(Lsn, Instant)>>,
    stop: AtomicBool,
    socket: Option<TcpStream>,
    /// Set by the hello, taken by whoever tracks sessions (the retention slots).
    fresh: AtomicBool,
    /// Called after each acknowledgement is recorded.
    on_ack: std::sync::OnceLock<AckHook>,
}

/// What a primary runs after each acknowledgement of a replica (the server wakes the writers
/// that wait for acknowledgements).
pub struct AckHook(pub Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for AckHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckHook")
    }
}

impl ReplicaPeer {
    /// A replica that connected from `addr`; `socket` (a clone) lets [`ReplicaPeer::stop`]
    /// interrupt its session.
    #[must_use]
    pub fn new(addr: SocketAddr, socket: Option<TcpStream>) -> Self {
        Self {
            addr,
            progress: Mutex::default(),
            last_ack: Mutex::new(Instant::now()),
            shipped: Mutex::default(),
            stop: AtomicBool::new(false),
            socket,
            fresh: AtomicBool::new(false),
            on_ack: std::sync::OnceLock::new(),
        }
    }

    /// Sets what runs after each acknowledgement (once; later calls are ignored).
    pub fn set_on_ack(&self, hook: AckHook) {
        let _ = self.on_ack.set(hook);
    }

    /// Whether its session started since the last call (its hello was accepted).
    pub fn take_fresh(&self) -> bool {
        self.fresh.swap(false, Ordering::AcqRel)
    }

    /// Its progress now.
    #[must_use]
    pub fn progress(&self) -> PeerProgress {
        *self.progress.locked()
    }

    /// Time since its last acknowledgement.
    #[must_use]
    pub fn since_last_ack(&self) -> Duration {
        self.last_ack.locked().elapsed()
    }

    /// Ends its session (shutdown, or the server lets it go).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(socket) = &self.socket {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Whether the session must end.
    #[must_use]
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn hello(&self, replica_id: u128, listen_port: u16, last_lsn: Lsn) {
        let mut p = self.progress.locked();
        p.replica_id = replica_id;
        p.listen_port = listen_port;
        p.online = true;
        p.sent = last_lsn;
        p.received = last_lsn;
        p.durable = last_lsn;
        p.applied = last_lsn;
        drop(p);
        self.fresh.store(true, Ordering::Release);
    }

    pub(crate) fn bootstrap(&self, file_bytes: u64, lsn: Lsn) {
        let mut p = self.progress.locked();
        p.snapshot_bytes = file_bytes;
        p.snapshot_sent = 0;
        p.snapshot_lsn = lsn;
        p.snapshot_applied = false;
    }

    pub(crate) fn bootstrap_sent(&self, bytes: u64) {
        self.progress.locked().snapshot_sent = bytes;
    }

    pub(crate) fn shipped(&self, lsn: Lsn) {
        self.progress.locked().sent = lsn;
        let mut shipped = self.shipped.locked();
        if shipped.len() == LAG_SAMPLES_MAX {
            shipped.pop_front();
        }
        shipped.push_back((lsn, Instant::now()));
    }

    pub(crate) fn ack(&self, received: Lsn, durable: Lsn, applied: Lsn) {
        // Nothing beyond what was shipped counts: a replica cannot move its retention slot
        // past the log it really holds.
        let sent = self.progress.locked().sent;
        let (received, durable, applied) =
            (received.min(sent), durable.min(sent), applied.min(sent));
        let now = Instant::now();
        *self.last_ack.locked() = now;
        let mut shipped = self.shipped.locked();
        // The time the newest record at or below an acknowledged LSN was shipped.
        let lag = |lsn: Lsn| {
            shipped
                .iter()
                .rev()
                .find(|(l, _)| *l <= lsn)
                .map(|(_, at)| u64::try_from((now - *at).as_micros()).unwrap_or(u64::MAX))
        };
        let mut p = self.progress.locked();
        if received > p.received
            && let Some(l) = lag(received)
        {
            p.write_lag_micros = l;
        }
        if durable > p.durable
            && let Some(l) = lag(durable)
        {
            p.flush_lag_micros = l;
        }
        if applied > p.applied
            && let Some(l) = lag(applied)
        {
            p.replay_lag_micros = l;
        }
        // `applied` as the replica reports it (the session started the tracked value at the
        // snapshot's LSN): it reaches that LSN only once the snapshot is installed.
        if p.snapshot_bytes > 0 && applied >= p.snapshot_lsn {
            p.snapshot_applied = true;
        }
        p.received = p.received.max(received);
        p.durable = p.durable.max(durable);
        p.applied = p.applied.max(applied);
        let done = p.received.min(p.durable).min(p.applied);
        drop(p);
        // Keep the newest sample at or below everything acknowledged: later acks measure
        // from it.
        while shipped.len() > 1 && shipped[1].0 <= done {
            shipped.pop_front();
        }
        drop(shipped);
        if let Some(hook) = self.on_ack.get() {
            (hook.0)();
        }
    }
}

/// Where a replica's link to its primary stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Not connected; the next attempt comes after a backoff.
    #[default]
    Connecting,
    /// Connected, handshaking.
    Handshake,
    /// Receiving the log.
    Connected,
}

/// A replica's view of its link and primary.
#[derive(Debug, Clone, Default)]
pub struct LinkProgress {
    /// The link's state.
    pub state: LinkState,
    /// When anything last arrived from the primary.
    pub last_io: Option<Instant>,
    /// The primary's durable LSN, from its latest heartbeat or welcome.
    pub primary_durable: Lsn,
    /// When the replica had applied everything up to `primary_durable`, or when that value
    /// arrived (the start of the current lag).
    pub behind_since: Option<Instant>,
    /// The last error that ended a session.
    pub last_error: Option<String>,
    /// Sessions started (handshakes accepted).
    pub sessions: u64,
    /// The last digest comparison: LSN and whether the digests matched.
    pub digest_checked: Option<(Lsn, bool)>,
    /// Set when the logs diverged: the link stopped for good (until `REPLICAOF` or restart).
    pub diverged: Option<String>,
    /// A bootstrap from the primary's snapshot under way.
    pub bootstrap: Option<BootstrapProgress>,
    /// Bootstraps completed since this link started.
    pub bootstraps: u64,
    /// The primary's other replicas and how far each is, from its latest peers frame.
    pub peers: Vec<crate::format::repl::Peer>,
    /// The primary's epoch, from its welcome.
    pub primary_epoch: crate::format::Epoch,
    /// Rewinds of this node's log to a fork point since this link started.
    pub rewinds: u64,
    /// The file the latest rewind saved the cut records to.
    pub last_rollback: Option<std::path::PathBuf>,
}

/// A replica's bootstrap from its primary's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapProgress {
    /// The snapshot's LSN.
    pub lsn: Lsn,
    /// Bytes of the snapshot file.
    pub file_bytes: u64,
    /// Bytes of it held here (kept across interrupted transfers).
    pub received: u64,
    /// Where it was resumed from in this session.
    pub resumed_at: u64,
    /// Received whole, and being verified and installed.
    pub installing: bool,
}

/// The replica's link status, shared with the server.
#[derive(Debug, Default)]
pub struct LinkStatus {
    progress: Mutex<LinkProgress>,
    stop: AtomicBool,
    socket: Mutex<Option<TcpStream>>,
}

impl LinkStatus {
    /// Its progress now.
    #[must_use]
    pub fn progress(&self) -> LinkProgress {
        self.progress.locked().clone()
    }

    /// Stops the link: its thread ends soon after.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(socket) = self.socket.locked().as_ref() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Whether the link must end.
    #[must_use]
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut LinkProgress)) {
        f(&mut self.progress.locked());
    }

    pub(crate) fn set_socket(&self, socket: Option<TcpStream>) {
        let mut slot = self.socket.locked();
        *slot = socket;
        if self.stopped()
            && let Some(socket) = slot.as_ref()
        {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}
