//! Event loops (epoll, edge-triggered) that own client connections.
//!
//! A turn of a loop runs every complete request of every ready connection, staging their
//! writes in the log, then makes all of them durable with one group commit (shared with the
//! other loops: the log's group commit writes and syncs everything queued by anyone), then
//! answers. This is Redis' `appendfsync always` shape, with the commit shared across loops.
//! A separate committer thread that let the loop run on during the sync measured slower on
//! the 2-core reference machine (the hand-offs cost more than the overlap gained; see
//! `docs/design.md`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::acks::Waker;
use super::connection::{Connection, Turn};
use super::shared::Shared;
use crate::format::Lsn;
use crate::sync::MutexExt;
use crate::wal::{Durability, WalError};

/// Token of a loop's wake-up socket in its epoll set.
const WAKE: u64 = u64::MAX;
/// How often an idle loop looks at the shutdown flag, in milliseconds.
const IDLE_TICK_MS: u16 = 100;
/// How often a loop with connections in `SHIPLOG.WAITLSN` looks at the applied LSN.
const WAIT_POLL_MS: u16 = 1;
/// How often a loop with connections waiting for replica acknowledgements looks at their
/// deadlines (acknowledgements themselves wake it at once).
const ACK_TICK_MS: u16 = 10;

/// What other threads use to reach a loop.
#[derive(Debug)]
pub struct LoopHandle {
    wake: UnixStream,
    incoming: Mutex<Vec<(TcpStream, u64, SocketAddr)>>,
    /// Connections the loop owns (for balancing).
    pub connections: AtomicUsize,
    /// Some of its connections wait for replica acknowledgements: wake it when one arrives.
    pub ack_waiters: AtomicBool,
}

impl LoopHandle {
    /// A handle, and the receiving end of its wake-up socket for the loop.
    ///
    /// # Errors
    /// Socket creation failures.
    pub fn new() -> std::io::Result<(Arc<Self>, UnixStream)> {
        let (wake, receiver) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        receiver.set_nonblocking(true)?;
        Ok((
            Arc::new(Self {
                wake,
                incoming: Mutex::default(),
                connections: AtomicUsize::new(0),
                ack_waiters: AtomicBool::new(false),
            }),
            receiver,
        ))
    }

    /// Wakes the loop (a full socket buffer means a wake-up is pending anyway).
    pub fn wake(&self) {
        let _ = (&self.wake).write(&[1]);
    }

    /// What the acknowledgement gate calls when a replica acknowledges: wakes this loop if
    /// some of its connections wait for acknowledgements.
    pub fn ack_waker(self: &Arc<Self>) -> Waker {
        let handle = Arc::clone(self);
        Waker(Box::new(move || {
            if handle.ack_waiters.load(Ordering::SeqCst) {
                handle.wake();
            }
        }))
    }

    /// Gives the loop a new connection.
    pub fn hand_over(&self, stream: TcpStream, id: u64, addr: SocketAddr) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.incoming.locked().push((stream, id, addr));
        self.wake();
    }
}

/// The loop's epoll set, watching its wake-up socket.
fn loop_epoll(wake: &UnixStream) -> Option<Epoll> {
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(epoll) => epoll,
        Err(e) => {
            tracing::error!(error = %e, "cannot create an epoll instance; this loop serves nobody");
            return None;
        }
    };
    if let Err(e) = epoll.add(wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE)) {
        tracing::error!(error = %e, "cannot watch the wake-up socket");
        return None;
    }
    Some(epoll)
}

/// Runs one event loop until the server shuts down.
pub fn run_loop(shared: &Arc<Shared>, handle: &LoopHandle, wake: &UnixStream) {
    let Some(epoll) = loop_epoll(wake) else {
        return;
    };
    let mut connections: HashMap<u64, Connection> = HashMap::new();
    let mut events = vec![EpollEvent::empty(); 256];
    let mut ready: Vec<u64> = Vec::new();
    // Connections waiting for a sync, the highest LSN they wait for, and the log's lowest cut
    // count when they staged.
    let mut waiting: Vec<u64> = Vec::new();
    let mut waiting_for: (Lsn, u64) = (0, 0);
    // Connections in `SHIPLOG.WAITLSN` (looked at every millisecond until answered) or
    // waiting for replica acknowledgements (looked at when one arrives).
    let mut parked: Vec<u64> = Vec::new();
    let mut acks_seen = shared.acks.generation();
    loop {
        let timeout = next_timeout(shared, &connections, &ready, &parked, acks_seen);
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                tracing::error!(error = %e, "epoll_wait failed; closing this loop's connections");
                break;
            }
        };
        for event in &events[..n] {
            let token = event.data();
            if token == WAKE {
                let mut sink = [0u8; 256];
                while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
                adopt(shared, handle, &epoll, &mut connections, &mut ready);
                continue;
            }
            if let Some(connection) = connections.get_mut(&token) {
                let flags = event.events();
                if flags.intersects(
                    EpollFlags::EPOLLIN
                        | EpollFlags::EPOLLRDHUP
                        | EpollFlags::EPOLLHUP
                        | EpollFlags::EPOLLERR,
                ) {
                    connection.readable = true;
                }
                ready.push(token);
            }
        }
        if shared.is_shutting_down() {
            break;
        }
        acks_seen = shared.acks.generation();
        answer_waits(shared, &mut connections, &mut parked, &mut ready);
        ready.sort_unstable();
        ready.dedup();
        let mut again = Vec::new();
        for id in ready.drain(..) {
            let Some(connection) = connections.get_mut(&id) else {
                continue;
            };
            match connection.turn(shared) {
                Turn::Idle => {}
                Turn::Again => again.push(id),
                turn @ (Turn::Close | Turn::Ship) => {
                    if let Some(connection) = connections.remove(&id) {
                        let_go(shared, handle, &epoll, connection, turn);
                    }
                    continue;
                }
            }
            if connection.parked() && !parked.contains(&id) {
                parked.push(id);
            }
            if let Some((lsn, cuts)) = connection.awaiting {
                waiting_for = if waiting.is_empty() {
                    (lsn, cuts)
                } else {
                    (waiting_for.0.max(lsn), waiting_for.1.min(cuts))
                };
                waiting.push(id);
            }
        }
        ready = again;
        // IMPORTANT: set before the generation is read again (at the top): an acknowledgement
        // either sees the flag and wakes this loop, or bumps the generation in time.
        let acks_awaited = parked
            .iter()
            .any(|id| connections.get(id).is_some_and(Connection::waits_for_acks));
        handle.ack_waiters.store(acks_awaited, Ordering::SeqCst);
        if !waiting.is_empty() {
            group_commit(shared, waiting_for);
            ready.append(&mut waiting);
        }
    }
    // Shutdown: connections handed over but never adopted are closed unanswered (they sent
    // nothing yet); the others commit what they staged and get their answers.
    adopt(shared, handle, &epoll, &mut connections, &mut ready);
    for (_, mut connection) in connections.drain() {
        connection.finish(shared);
        close(shared, handle, &epoll, &connection);
    }
}

/// One group commit for every connection of a turn (shared with the other loops) up to
/// `lsn`, for writes staged when the log's cut count was `cuts` or more. A failure poisons the
/// log; each connection then finds out as it commits, as it does when its write was cut by a
/// rewind (not a failure of the log).
fn group_commit(shared: &Shared, (lsn, cuts): (Lsn, u64)) {
    match shared
        .keyspace
        .db()
        .wal()
        .wait_for_uncut(lsn, Durability::Sync, cuts)
    {
        Ok(()) | Err(WalError::Cut { .. }) => {}
        Err(e) => {
            tracing::error!(error = %e, "group commit failed; writes are refused until restart");
        }
    }
}

/// How long the loop may sleep: not at all with work ready (or an acknowledgement that came
/// while connections were being parked), 1 ms while a `SHIPLOG.WAITLSN` polls, the deadline
/// tick while connections wait for acknowledgements (which wake the loop themselves).
fn next_timeout(
    shared: &Shared,
    connections: &HashMap<u64, Connection>,
    ready: &[u64],
    parked: &[u64],
    acks_seen: u64,
) -> u16 {
    if !ready.is_empty() {
        0
    } else if parked.is_empty() {
        IDLE_TICK_MS
    } else if parked
        .iter()
        .any(|id| connections.get(id).is_some_and(Connection::waits_for_lsn))
    {
        WAIT_POLL_MS
    } else if shared.acks.generation() == acks_seen {
        ACK_TICK_MS
    } else {
        0
    }
}

/// Answers each `SHIPLOG.WAITLSN` whose LSN is applied, each `WAIT` and gated write whose
/// replicas acknowledged, and each of them whose deadline passed; makes its connection ready
/// to send the answer and go on.
fn answer_waits(
    shared: &Shared,
    connections: &mut HashMap<u64, Connection>,
    parked: &mut Vec<u64>,
    ready: &mut Vec<u64>,
) {
    if parked.is_empty() {
        return;
    }
    // Taken once for every connection: each acknowledgement wakes the loop.
    let view = shared.replication.ack_view();
    parked.retain(|id| {
        let Some(connection) = connections.get_mut(id) else {
            return false;
        };
        if connection.resolve_parked(shared, &view) {
            ready.push(*id);
            return false;
        }
        true
    });
}

fn adopt(
    shared: &Shared,
    handle: &LoopHandle,
    epoll: &Epoll,
    connections: &mut HashMap<u64, Connection>,
    ready: &mut Vec<u64>,
) {
    let incoming = std::mem::take(&mut *handle.incoming.locked());
    for (stream, id, addr) in incoming {
        let registered = stream.set_nonblocking(true).is_ok()
            && epoll
                .add(
                    &stream,
                    EpollEvent::new(
                        EpollFlags::EPOLLIN
                            | EpollFlags::EPOLLOUT
                            | EpollFlags::EPOLLRDHUP
                            | EpollFlags::EPOLLET,
                        id,
                    ),
                )
                .is_ok();
        if !registered {
            tracing::warn!(client = id, %addr, "cannot register a connection; closing it");
            shared.forget_client(id);
            handle.connections.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let _ = stream.set_nodelay(true);
        tracing::debug!(client = id, %addr, "client connected");
        connections.insert(
            id,
            Connection::new(stream, id, addr, shared.options.password.is_some()),
        );
        ready.push(id);
    }
}

/// Closes a connection, or hands it to a shipping session (`Turn::Ship`).
fn let_go(
    shared: &Arc<Shared>,
    handle: &LoopHandle,
    epoll: &Epoll,
    mut connection: Connection,
    turn: Turn,
) {
    if turn == Turn::Ship {
        close(shared, handle, epoll, &connection);
        shared
            .replication
            .start_shipping(connection.into_shipping());
    } else {
        connection.abandon(shared);
        close(shared, handle, epoll, &connection);
    }
}

fn close(shared: &Shared, handle: &LoopHandle, epoll: &Epoll, connection: &Connection) {
    let _ = epoll.delete(&connection.stream);
    shared.forget_client(connection.session.id);
    handle.connections.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(client = connection.session.id, addr = %connection.session.addr, "client disconnected");
}
