//! One client connection, driven by an event loop: read what arrived, run every complete
//! request, stage writes, and answer once they are committed.
//!
//! Replies are never written to the socket while a write they answer is uncommitted. A
//! connection waiting for its commit stops parsing (so a read that follows a write in a
//! pipeline sees it); other connections of the loop go on meanwhile.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::acks::{AckLevel, AckView, NOREPLICAS, SyncFallback};
use super::commands::{self, COMMANDS, Flow, Kind};
use super::replication::Handoff;
use super::session::Session;
use super::shared::Shared;
use crate::format::resp::{Partial, ReplyWriter, RequestLimits, parse_request_resuming};
use crate::format::{Epoch, Lsn};
use crate::wal::Durability;

/// Initial (and idle) size of the input buffer.
const INPUT_INITIAL_BYTES: usize = 16 << 10;
/// Replies are written out once this many bytes are buffered, even mid-pipeline.
const OUTPUT_FLUSH_BYTES: usize = 64 << 10;
/// Buffers above this size are released when they empty, so one large request does not pin
/// memory for the life of the connection.
const BUFFER_KEEP_BYTES: usize = 1 << 20;
/// Requests run per turn before the loop serves other connections.
const REQUESTS_PER_TURN: usize = 1024;
/// Unparsed bytes a connection may hold before it authenticates.
const UNAUTHENTICATED_INPUT_MAX_BYTES: usize = 256 << 10;
/// Bytes read per turn before the loop serves other connections.
const READ_BYTES_PER_TURN: usize = 4 << 20;

/// Received bytes not yet parsed: `buffer[start..end]`.
struct Input {
    buffer: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    fn data(&self) -> &[u8] {
        &self.buffer[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(self.start + n <= self.end);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buffer.len() > BUFFER_KEEP_BYTES {
                self.buffer = vec![0; INPUT_INITIAL_BYTES];
            }
        }
    }

    /// Room to read into, compacting or growing the buffer up to `max` bytes in all.
    fn room(&mut self, max: usize) -> Option<&mut [u8]> {
        if self.end == self.buffer.len() {
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buffer.len() < max {
                let grown = (self.buffer.len() * 2).min(max);
                self.buffer.resize(grown, 0);
            } else {
                return None;
            }
        }
        Some(&mut self.buffer[self.end..])
    }
}

/// The reply of a write in `out`, held until replicas acknowledge the write.
#[derive(Debug, Clone, Copy)]
struct GatedReply {
    /// Where the reply is in `out`.
    start: usize,
    end: usize,
    /// The write's LSN.
    lsn: Lsn,
    /// The level it must reach.
    level: AckLevel,
    /// The epoch this node was the primary of when it made the write.
    epoch: Epoch,
}

/// What the loop does with a connection after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Nothing to do until the socket or a commit says so.
    Idle,
    /// More work is ready now (the turn's budget ran out).
    Again,
    /// Close and forget the connection.
    Close,
    /// The connection became a shipping session: hand it over (see [`Connection::into_shipping`]).
    Ship,
}

/// A client connection owned by an event loop.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent facts about one connection's progress, each checked on its own"
)]
pub struct Connection {
    /// The socket (non-blocking).
    pub stream: TcpStream,
    /// Connection state.
    pub session: Session,
    input: Input,
    /// How far the parser got in an incomplete request at the front of `input`.
    partial: Option<Partial>,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    out_sent: usize,
    /// The socket may have more to read (an event came, or a turn stopped early).
    pub readable: bool,
    /// Staged writes up to this LSN, staged when the log's cut count was this, wait for a
    /// sync before anything more happens.
    pub awaiting: Option<(Lsn, u64)>,
    /// Write commands answered in `out`, whose latency ends at the commit.
    awaiting_metrics: Vec<(usize, Instant, bool)>,
    /// The peer closed its side: finish what was received, then close.
    eof: bool,
    /// The last read stopped at the input buffer's limit.
    input_full: bool,
    /// Every whole request received has run: only now is more input read, so a long pipeline
    /// is held a few MiB at a time, and an `AUTH` at its front runs before what follows is
    /// read under the unauthenticated limits.
    input_drained: bool,
    /// Close once the output is written (`QUIT`, a protocol error, a failed commit).
    closing: bool,
    /// Hand the connection to a shipping session once the output is written.
    shipping: bool,
    /// Replies of writes that need replica acknowledgements, in `out` order.
    gated: Vec<GatedReply>,
    /// Set once those writes are committed here: nothing is written out (and nothing more is
    /// run) until they are acknowledged or this passes.
    gate_deadline: Option<Instant>,
}

impl Connection {
    /// A connection from `addr`; `stream` must be non-blocking.
    pub fn new(stream: TcpStream, id: u64, addr: SocketAddr, password_required: bool) -> Self {
        Self {
            stream,
            session: Session::new(id, addr, password_required),
            input: Input {
                buffer: vec![0; INPUT_INITIAL_BYTES],
                start: 0,
                end: 0,
            },
            partial: None,
            out: Vec::with_capacity(INPUT_INITIAL_BYTES),
            out_sent: 0,
            readable: true,
            awaiting: None,
            awaiting_metrics: Vec::new(),
            eof: false,
            input_drained: true,
            input_full: false,
            closing: false,
            shipping: false,
            gated: Vec::new(),
            gate_deadline: None,
        }
    }

    /// Does everything that can be done now without blocking.
    pub fn turn(&mut self, shared: &Arc<Shared>) -> Turn {
        match self.try_turn(shared) {
            Ok(turn) => turn,
            Err(e) => {
                tracing::debug!(client = self.session.id, error = %e, "client connection ended");
                Turn::Close
            }
        }
    }

    fn try_turn(&mut self, shared: &Arc<Shared>) -> io::Result<Turn> {
        if self.awaiting.take().is_some() {
            // The loop synced since this connection staged its writes, so this returns at
            // once (or fails, if the sync did and poisoned the log).
            self.commit(shared);
        }
        let mut budget = REQUESTS_PER_TURN;
        loop {
            // Replies first: while they cannot be written, nothing more is read or run, so a
            // client that does not read its replies cannot make the server hold more of them.
            // Replies of writes waiting for replica acknowledgements cannot be written yet.
            if self.gate_deadline.is_some()
                && !self.resolve_gate(shared, &shared.replication.ack_view())
            {
                return Ok(Turn::Idle);
            }
            if !self.write_out(shared)? {
                return Ok(Turn::Idle);
            }
            if self.closing {
                return Ok(Turn::Close);
            }
            if self.shipping && self.session.uncommitted.is_empty() {
                return Ok(Turn::Ship);
            }
            if self.session.waiting.is_some() || self.session.waiting_acks.is_some() {
                if self.resolve_wait(shared) {
                    continue;
                }
                // Nothing is read while a wait is parked, so a peer that left would go
                // unnoticed: look without taking anything. A wait without a deadline for a
                // peer that closed would never end; the connection is closed instead.
                let unbounded = matches!(self.session.waiting, Some((_, None)))
                    || self
                        .session
                        .waiting_acks
                        .is_some_and(|w| w.deadline.is_none());
                if self.readable && unbounded && matches!(self.stream.peek(&mut [0u8; 1]), Ok(0)) {
                    return Ok(Turn::Close);
                }
                // `SHIPLOG.WAITLSN`: the event loop answers it (`resolve_wait`), then turns
                // this connection again.
                return Ok(Turn::Idle);
            }
            if self.readable && !self.eof && self.input_drained {
                self.read_available(shared)?;
            }
            let mut stop = Next::Ran;
            while budget > 0
                && !self.closing
                && !self.shipping
                && self.session.waiting.is_none()
                && self.session.waiting_acks.is_none()
            {
                budget -= 1;
                stop = self.next_request(shared);
                if stop != Next::Ran {
                    break;
                }
                if self.out.len() >= OUTPUT_FLUSH_BYTES
                    && self.session.uncommitted.is_empty()
                    && !self.write_out(shared)?
                {
                    return Ok(Turn::Idle);
                }
            }
            self.input_drained = stop == Next::Incomplete;
            if self.input_full {
                self.input_full = false;
                // Refused only if one request fills the buffer at the limit that applies now
                // (after an `AUTH`, the next read may grow it).
                if self.input_drained
                    && !self.closing
                    && self.input.data().len() >= self.input_max(shared)
                {
                    self.protocol_error(shared, "request larger than the query buffer limit");
                    continue;
                }
            }
            if let Some(lsn) = self.session.uncommitted.last_lsn() {
                if shared.keyspace.durability() == Durability::Sync {
                    // The loop syncs once for every connection of its turn, then turns this
                    // one again: it commits, answers and goes on where it stopped.
                    self.awaiting = Some((lsn, self.session.uncommitted.cuts()));
                    return Ok(Turn::Idle);
                }
                self.commit(shared);
            }
            // Writes committed by the command itself (`FLUSHALL`) are gated here.
            self.arm_gate(shared);
            if self.closing || (stop == Next::NeedsCommit && budget > 0) {
                // Write the last replies (and close), or run the read that waited for the
                // commit.
                continue;
            }
            if !self.write_out(shared)? {
                return Ok(Turn::Idle);
            }
            if !self.input_drained || (self.readable && !self.eof) {
                return Ok(Turn::Again);
            }
            if self.eof {
                // Everything whole was answered; a partial request can never complete.
                return Ok(Turn::Close);
            }
            return Ok(Turn::Idle);
        }
    }

    /// Redis' client-query-buffer-limit (1 GiB, or room for the largest argument), and far
    /// less before authentication.
    fn input_max(&self, shared: &Shared) -> usize {
        if self.session.authenticated {
            shared
                .options
                .bulk_max_bytes
                .saturating_add(1 << 20)
                .max(1 << 30)
        } else {
            UNAUTHENTICATED_INPUT_MAX_BYTES
        }
    }

    fn read_available(&mut self, shared: &Shared) -> io::Result<()> {
        let input_max = self.input_max(shared);
        let mut read = 0;
        loop {
            if read >= READ_BYTES_PER_TURN {
                // Stay readable: the rest comes next turn, after other connections had theirs.
                return Ok(());
            }
            let Some(room) = self.input.room(input_max) else {
                // Full: run what is whole first (an `AUTH` in front raises the limit); only a
                // first request that still does not fit is refused.
                self.input_full = true;
                return Ok(());
            };
            match self.stream.read(room) {
                Ok(0) => {
                    self.eof = true;
                    self.readable = false;
                    return Ok(());
                }
                Ok(n) => {
                    self.input.end += n;
                    read += n;
                    shared
                        .metrics
                        .net_input_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes buffered replies; true once everything is written. Never while uncommitted
    /// writes are staged: those replies would promise what a crash could take back.
    fn write_out(&mut self, shared: &Shared) -> io::Result<bool> {
        debug_assert!(self.session.uncommitted.is_empty() || self.out.is_empty());
        if !self.session.uncommitted.is_empty() || self.gate_deadline.is_some() {
            return Ok(false);
        }
        while self.out_sent < self.out.len() {
            match self.stream.write(&self.out[self.out_sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_sent += n;
                    shared
                        .metrics
                        .net_output_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_sent = 0;
        self.gated.clear();
        if self.out.capacity() > BUFFER_KEEP_BYTES {
            self.out = Vec::with_capacity(INPUT_INITIAL_BYTES);
        }
        Ok(true)
    }

    /// Commits this connection's staged writes (they are durable already when the loop calls
    /// this after a sync). On failure the buffered replies are replaced by one error: they
    /// promised writes whose fate is now unknown.
    fn commit(&mut self, shared: &Shared) {
        let lsn = self.session.uncommitted.last_lsn();
        if let Err(e) = shared.keyspace.commit(&mut self.session.uncommitted) {
            tracing::error!(client = self.session.id, error = %e, "commit failed; closing the connection");
            self.out.clear();
            self.out_sent = 0;
            self.awaiting_metrics.clear();
            self.gated.clear();
            self.gate_deadline = None;
            self.reply().error(&format!(
                "ERR write failed and its outcome is unknown (the connection is closed): {e}"
            ));
            self.closing = true;
            return;
        }
        if let Some(lsn) = lsn {
            self.session.last_write_lsn = self.session.last_write_lsn.max(lsn);
            self.session.last_write_epoch = shared.keyspace.db().wal().highest_epoch();
        }
        self.arm_gate(shared);
        if self.gate_deadline.is_none() {
            self.record_writes(shared);
        }
    }

    /// Records the latency of the write commands answered since the last call: it ends when
    /// their replies may go out (after the commit, or after the replicas' acknowledgements).
    fn record_writes(&mut self, shared: &Shared) {
        let now = Instant::now();
        for (index, start, failed) in self.awaiting_metrics.drain(..) {
            shared.metrics.record(index, now - start, failed);
        }
    }

    /// Whether the event loop must look after this connection: it waits for an LSN, for
    /// replica acknowledgements, or for a `WAIT`.
    pub fn parked(&self) -> bool {
        self.session.waiting.is_some() || self.waits_for_acks()
    }

    /// Whether it waits in `SHIPLOG.WAITLSN` (answered by polling the applied LSN).
    pub fn waits_for_lsn(&self) -> bool {
        self.session.waiting.is_some()
    }

    /// Whether it waits for replica acknowledgements (gated writes, `WAIT`).
    pub fn waits_for_acks(&self) -> bool {
        self.gate_deadline.is_some() || self.session.waiting_acks.is_some()
    }

    /// Resolves whatever the connection is parked on, if it can be now; true when nothing
    /// holds it any more.
    pub fn resolve_parked(&mut self, shared: &Shared, view: &AckView) -> bool {
        if self.gate_deadline.is_some() {
            return self.resolve_gate(shared, view);
        }
        self.resolve_wait(shared)
    }

    /// Starts the wait for replica acknowledgements of the gated writes, once they are
    /// committed here.
    fn arm_gate(&mut self, shared: &Shared) {
        if !self.gated.is_empty()
            && self.gate_deadline.is_none()
            && self.session.uncommitted.is_empty()
        {
            self.gate_deadline = Some(shared.options.sync.deadline());
        }
    }

    /// Releases the gated replies once every gated write has its acknowledgements, or its
    /// deadline passed (see [`Connection::time_out_gate`]); true when nothing is gated now.
    fn resolve_gate(&mut self, shared: &Shared, view: &AckView) -> bool {
        let Some(deadline) = self.gate_deadline else {
            return true;
        };
        if self
            .gated
            .iter()
            .all(|g| view.acknowledges(g.level, g.lsn, g.epoch))
        {
            self.gated.clear();
            self.gate_deadline = None;
            self.record_writes(shared);
            shared.acks.acknowledged();
            return true;
        }
        if Instant::now() < deadline {
            return false;
        }
        self.time_out_gate(shared, view);
        true
    }

    /// The deadline passed: each write still short of its acknowledgements is answered
    /// `-NOREPLICAS` (it is durable here, so its fate is unknown to the client), or OK with a
    /// warning under `--sync-fallback async`. The other replies stay as they were.
    fn time_out_gate(&mut self, shared: &Shared, view: &AckView) {
        debug_assert_eq!(self.out_sent, 0, "gated replies are never partly written");
        let gated = std::mem::take(&mut self.gated);
        self.gate_deadline = None;
        self.record_writes(shared);
        let late = gated
            .iter()
            .filter(|g| !view.acknowledges(g.level, g.lsn, g.epoch));
        if shared.options.sync.fallback == SyncFallback::Async {
            for g in late {
                shared
                    .acks
                    .fell_back(g.level, shared.options.sync.timeout_ms);
            }
            return;
        }
        let mut rebuilt = Vec::with_capacity(self.out.len());
        let mut copied = 0;
        for g in late {
            rebuilt.extend_from_slice(&self.out[copied..g.start]);
            ReplyWriter {
                out: &mut rebuilt,
                protocol: self.session.protocol,
            }
            .error(NOREPLICAS);
            copied = g.end;
            shared.acks.timed_out();
            tracing::debug!(client = self.session.id, lsn = g.lsn, level = %g.level, "write answered NOREPLICAS");
        }
        rebuilt.extend_from_slice(&self.out[copied..]);
        self.out = rebuilt;
    }

    /// Answers a waiting `SHIPLOG.WAITLSN` once its LSN is applied here (with that LSN) or
    /// its deadline has passed (with an error), and a waiting `WAIT` once enough replicas
    /// acknowledged or its deadline passed (with their count); true when it was answered, or
    /// none waits.
    pub fn resolve_wait(&mut self, shared: &Shared) -> bool {
        if let Some(wait) = self.session.waiting_acks {
            let count = shared
                .replication
                .ack_view()
                .holding_in(wait.lsn, wait.epoch);
            if count < wait.replicas && wait.deadline.is_none_or(|d| Instant::now() < d) {
                return false;
            }
            self.reply()
                .integer(i64::try_from(count).unwrap_or(i64::MAX));
            self.session.waiting_acks = None;
            return true;
        }
        let Some((lsn, deadline)) = self.session.waiting else {
            return true;
        };
        let applied = shared.replication.visible_lsn();
        if applied >= lsn {
            self.reply()
                .integer(i64::try_from(applied).unwrap_or(i64::MAX));
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            self.reply().error(&format!(
                "TIMEOUT LSN {lsn} is not applied here yet (applied: {applied}); retry, or read \
                 from the primary"
            ));
        } else {
            return false;
        }
        self.session.waiting = None;
        true
    }

    fn reply(&mut self) -> ReplyWriter<'_> {
        ReplyWriter {
            out: &mut self.out,
            protocol: self.session.protocol,
        }
    }

    fn protocol_error(&mut self, shared: &Shared, message: &str) {
        shared
            .metrics
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(client = self.session.id, addr = %self.session.addr, error = message, "protocol error; closing the connection");
        self.reply()
            .error(&format!("ERR Protocol error: {message}"));
        self.closing = true;
    }

    /// Parses and runs the next request, if a whole one is buffered.
    fn next_request(&mut self, shared: &Arc<Shared>) -> Next {
        let limits = RequestLimits {
            bulk_max: shared.options.bulk_max_bytes,
            args_max: shared.options.args_max,
            authenticated: self.session.authenticated,
        };
        let request = match parse_request_resuming(self.input.data(), &limits, &mut self.partial) {
            Ok(Some(request)) => request,
            Ok(None) => return Next::Incomplete,
            Err(e) => {
                self.protocol_error(shared, &e.to_string());
                return Next::Incomplete;
            }
        };
        let data = &self.input.buffer[self.input.start..self.input.end];
        let args = request.arg_slices(data);
        let Some(&name) = args.first() else {
            self.input.consume(request.consumed);
            return Next::Ran;
        };
        let mut reply = ReplyWriter {
            out: &mut self.out,
            protocol: self.session.protocol,
        };
        let Some(index) = commands::lookup(name) else {
            reply.error(&commands::unknown_command(&args));
            self.input.consume(request.consumed);
            return Next::Ran;
        };
        let spec = &COMMANDS[index];
        if !commands::arity_ok(spec, args.len()) {
            reply.error(&format!(
                "ERR wrong number of arguments for '{}' command",
                spec.name
            ));
        } else if !self.session.authenticated && !spec.flags.contains(&"noauth") {
            reply.error("NOAUTH Authentication required.");
        } else if spec.flags.contains(&"write")
            && let Some(refusal) = shared.replication.refuses_writes()
        {
            reply.error(&refusal);
        } else if spec.kind == Kind::Read
            && let Some(stale) = shared.replication.stale_beyond_limit()
        {
            reply.error(&stale);
        } else if spec.kind == Kind::Read && shared.keyspace.db().restoring() {
            // Redis' reply while a replica loads its primary's dataset.
            reply.error(
                "LOADING shiplog is restoring a snapshot from its primary; reads resume when it \
                 completes",
            );
        } else if spec.kind != Kind::Write && !self.session.uncommitted.is_empty() {
            // It may read what this connection wrote: commit first, run it afterwards.
            return Next::NeedsCommit;
        } else {
            let start = Instant::now();
            let before = reply.out.len();
            let lsns_before = (
                self.session.uncommitted.last_lsn(),
                self.session.last_write_lsn,
            );
            let flow = commands::execute(shared, &mut self.session, index, &args, &mut reply);
            let failed = reply.out.get(before) == Some(&b'-');
            let bytes = reply.out.len() - before;
            if bytes > shared.options.output_max_bytes {
                reply.out.truncate(before);
                tracing::warn!(
                    client = self.session.id,
                    bytes,
                    "reply exceeds the client output limit; closing"
                );
                reply.error(&format!(
                    "ERR reply of {bytes} bytes exceeds the client output limit of {} bytes",
                    shared.options.output_max_bytes
                ));
                self.closing = true;
            }
            if spec.kind == Kind::Write {
                self.gate_reply(shared, lsns_before, before);
            }
            if flow == Flow::Close {
                self.closing = true;
            }
            if flow == Flow::Ship {
                self.shipping = true;
            }
            if spec.kind == Kind::Write && !self.session.uncommitted.is_empty() {
                self.awaiting_metrics.push((index, start, failed));
            } else {
                shared.metrics.record(index, start.elapsed(), failed);
            }
        }
        self.input.consume(request.consumed);
        Next::Ran
    }

    /// Holds the reply of a write command that just ran (from `start` to the end of `out`)
    /// for replica acknowledgements, if it wrote and its level asks for them.
    fn gate_reply(&mut self, shared: &Shared, lsns_before: (Option<Lsn>, Lsn), start: usize) {
        let Some(lsn) = wrote(lsns_before, &self.session) else {
            return;
        };
        let level = self.session.ack_level.unwrap_or(shared.options.sync.level);
        if level != AckLevel::Local {
            self.gated.push(GatedReply {
                start,
                end: self.out.len(),
                lsn,
                level,
                epoch: shared.keyspace.db().wal().highest_epoch(),
            });
        }
    }

    /// Before the connection is dropped for any reason: commit what it staged, so its staged
    /// entries do not linger (waits for a sync only in that rare case).
    pub fn abandon(&mut self, shared: &Shared) {
        if !self.session.uncommitted.is_empty() {
            self.awaiting = None;
            self.commit(shared);
        }
    }

    /// At shutdown: commit what is staged (waiting for the sync here), answer, and stop.
    pub fn finish(&mut self, shared: &Arc<Shared>) {
        self.abandon(shared);
        // Shutting down: no more acknowledgements will be waited for.
        let view = shared.replication.ack_view();
        if !self.resolve_gate(shared, &view) {
            self.time_out_gate(shared, &view);
        }
        let _ = self.stream.set_nonblocking(false);
        let _ = self
            .stream
            .set_write_timeout(Some(std::time::Duration::from_secs(5)));
        let _ = self.write_out(shared);
    }
}

impl Connection {
    /// The socket (blocking again), the bytes received after the handshake command, the
    /// peer's address and the challenge it must answer.
    pub fn into_shipping(self) -> Handoff {
        let _ = self.stream.set_nonblocking(false);
        Handoff {
            received: self.input.data().to_vec(),
            stream: self.stream,
            addr: self.session.addr,
            challenge: self.session.ship_challenge,
            snapshot: self.session.wants_snapshot,
        }
    }
}

/// The LSN a write command just wrote, if it wrote: staged (most commands) or committed by
/// itself (`FLUSHALL`).
fn wrote(before: (Option<Lsn>, Lsn), session: &Session) -> Option<Lsn> {
    let staged = session.uncommitted.last_lsn();
    if staged != before.0 {
        return staged;
    }
    (session.last_write_lsn != before.1).then_some(session.last_write_lsn)
}

/// What happened to the next buffered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Ran,
    Incomplete,
    NeedsCommit,
}
