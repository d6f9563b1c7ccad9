//! The replica's side: connect to the primary over its client port, switch the connection to
//! shipping frames, receive the log into this node's own log, make it visible and durable,
//! and acknowledge; on any failure, reconnect with capped exponential backoff and jitter.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::auth::{self, Prover};
use super::error::ReplError;
use super::receiver::Receiver;
use super::status::{BootstrapProgress, LinkState, LinkStatus, clock_micros};
use super::wire::FrameStream;
use crate::engine::Store;
use crate::format::Lsn;
use crate::format::epochs::EpochHistory;
use crate::format::repl::{
    AUTH_BYTES, Frame, Hello, PROTOCOL_VERSION, RefuseCode, SNAPSHOT_HEADER_BYTES,
};
use crate::format::resp_reply::{Limits, Reply, encode_command, parse_reply};
use crate::format::snapshot::SnapshotHeader;
use crate::wal::random_u64;

/// Subdirectory of a replica's data directory holding a snapshot being received.
pub const BOOTSTRAP_DIR: &str = "bootstrap";
/// The snapshot being received, kept across interrupted transfers.
const PARTIAL_SNAPSHOT_FILE: &str = "snapshot.partial";
/// The log received during a snapshot transfer, for after the restore.
const LOG_BUFFER_FILE: &str = "log.buffer";

/// The command that turns a client connection into a shipping session.
pub const HANDSHAKE_COMMAND: &str = "SHIPLOG.SHIP";

/// How a replica follows its primary.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// The primary, `HOST:PORT`.
    pub primary: String,
    /// This replica's identity, stable across restarts.
    pub replica_id: u128,
    /// The port this replica serves clients on (told to the primary for `ROLE`).
    pub listen_port: u16,
    /// A primary silent this long (no frame, not even a heartbeat) is given up on.
    pub timeout: Duration,
    /// First reconnect delay; doubles per failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Largest unfinished batch held while it arrives.
    pub carry_max_bytes: usize,
    /// The primary's password, proven by challenge–response (`--masterauth-file`).
    pub masterauth: Option<Vec<u8>>,
    /// The newest epoch this node has heard of, raised with every epoch the primary tells:
    /// a promotion must go above it, even when this log never joined that epoch.
    pub seen_epoch: Arc<AtomicU32>,
}

impl LinkOptions {
    /// Defaults for following `primary`.
    #[must_use]
    pub fn new(primary: String, replica_id: u128, listen_port: u16) -> Self {
        Self {
            primary,
            replica_id,
            listen_port,
            timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            carry_max_bytes: (1 << 30) + (8 << 20),
            masterauth: None,
            seen_epoch: Arc::new(AtomicU32::new(0)),
        }
    }
}

/// Follows the primary until `status` is stopped.
pub fn run(store: &Store, options: &LinkOptions, status: &LinkStatus) {
    let mut failures = 0u32;
    while !status.stopped() {
        let started = status.progress().sessions;
        let result = session(store, options, status);
        status.set_socket(None);
        if status.stopped() {
            break;
        }
        let progressed = status.progress().sessions > started;
        if progressed {
            failures = 0;
        }
        if let Err(ReplError::Rewound { .. }) = &result {
            // Follow the primary's log from the fork point at once.
            failures = 0;
            continue;
        }
        if let Err(e @ ReplError::Diverged { .. }) = &result {
            tracing::error!(primary = %options.primary, error = %e, "replication stopped: the logs diverged");
            let text = e.to_string();
            status.update(|p| {
                p.state = LinkState::Connecting;
                p.diverged = Some(text.clone());
                p.last_error = Some(text);
            });
            return;
        }
        if let Err(e) = &result {
            tracing::warn!(primary = %options.primary, error = %e, "replication link down; reconnecting");
            let text = e.to_string();
            status.update(|p| {
                p.state = LinkState::Connecting;
                p.last_error = Some(text);
            });
        }
        failures = failures.saturating_add(1);
        let delay = backoff(options, failures);
        let deadline = Instant::now() + delay;
        while !status.stopped() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10).min(delay));
        }
    }
    status.update(|p| p.state = LinkState::Connecting);
}

/// Capped exponential backoff with ±50% jitter, so replicas of a restarted primary do not
/// reconnect in lockstep.
fn backoff(options: &LinkOptions, failures: u32) -> Duration {
    let base = options
        .backoff_min
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(options.backoff_max);
    let permille = u32::try_from(random_u64() % 1000).unwrap_or(0);
    base * (500 + permille) / 1000
}

/// Connects in short attempts, so a stop (shutdown, `REPLICAOF`) is noticed within a fraction
/// of a second even when the primary's address does not answer.
fn connect(options: &LinkOptions, status: &LinkStatus) -> Result<TcpStream, ReplError> {
    let deadline = Instant::now() + options.timeout;
    let mut last = None;
    for addr in options.primary.to_socket_addrs()? {
        loop {
            if status.stopped() {
                return Err(ReplError::Stopped);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&addr, left.min(Duration::from_millis(200))) {
                Ok(stream) => return Ok(stream),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = Some(e),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::other("the primary's address resolves to nothing"))
        .into())
}

/// Bounds on the primary's reply to the handshake: one status line (`+OK`, or `+OK AUTH` and a
/// challenge) or an error line.
const HANDSHAKE_REPLY_LIMITS: Limits = Limits {
    line_max_bytes: 1024,
    bulk_max_bytes: 0,
    aggregate_max_len: 0,
    depth_max: 0,
};

/// Sends the handshake command; returns the primary's challenge, when it has a password.
fn handshake(stream: &mut TcpStream) -> Result<Option<[u8; AUTH_BYTES]>, ReplError> {
    let mut command = Vec::new();
    encode_command(&mut command, &[HANDSHAKE_COMMAND.as_bytes()]);
    stream.write_all(&command)?;
    // The reply is one RESP line and frames follow it: read it byte by byte so nothing after
    // it is consumed. The limits end the loop: a line longer than 1 KiB is an error.
    let mut reply = Vec::new();
    let line = loop {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
        reply.extend_from_slice(&byte);
        match parse_reply(&reply, &HANDSHAKE_REPLY_LIMITS) {
            Ok(None) => {}
            Ok(Some((Reply::Simple(line), _))) => break line,
            Ok(Some((other, _))) => {
                return Err(ReplError::Protocol(format!(
                    "the primary answered the handshake with {}",
                    other.describe()
                )));
            }
            Err(e) => {
                return Err(ReplError::Protocol(format!(
                    "the primary's reply to the handshake is not RESP: {e}"
                )));
            }
        }
    };
    match line {
        b"OK" => Ok(None),
        _ => match line
            .strip_prefix(b"OK AUTH ")
            .and_then(auth::parse_challenge)
        {
            Some(challenge) => Ok(Some(challenge)),
            None => Err(ReplError::Protocol(format!(
                "the primary answered the handshake with {:?}",
                String::from_utf8_lossy(line)
            ))),
        },
    }
}

fn session(store: &Store, options: &LinkOptions, status: &LinkStatus) -> Result<(), ReplError> {
    status.update(|p| p.state = LinkState::Connecting);
    let mut stream = connect(options, status)?;
    status.set_socket(Some(stream.try_clone()?));
    status.update(|p| p.state = LinkState::Handshake);
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(options.timeout))?;
    stream.set_write_timeout(Some(options.timeout))?;
    let challenge = handshake(&mut stream)?;
    let mut frames = FrameStream::new(stream.try_clone()?, &[]);
    if let Some(challenge) = challenge {
        authenticate(&mut frames, options, &challenge)?;
    }
    // A segment this node started itself (say by a promotion that wrote nothing) is not the
    // primary's: the log must end where its records do when shipping resumes.
    store.wal().drop_empty_tail()?;
    let last_lsn = send_hello(store, options, &mut frames)?;
    let mut reply = frames.read_frame()?;
    let mut history = None;
    if let Frame::History { entries } = reply {
        let theirs = parse_history(entries)?;
        options
            .seen_epoch
            .fetch_max(theirs.latest().epoch, Ordering::AcqRel);
        history = Some(theirs);
        reply = frames.read_frame()?;
    }
    if let (Frame::Refuse { code, reason }, Some(theirs)) = (reply, &history)
        && code == RefuseCode::Diverged
    {
        tracing::warn!(primary = %options.primary, reason, "this node's log forked from the primary's");
        return Err(rewind(store, status, theirs, last_lsn));
    }
    let mut transfer = None;
    if let Frame::SnapshotOffer { header, file_bytes } = reply {
        let header = *header;
        transfer = Some(Transfer::start(
            store,
            status,
            &mut frames,
            &header,
            file_bytes,
        )?);
        reply = frames.read_frame()?;
    } else if matches!(reply, Frame::Welcome(_)) && store.restoring() {
        // The whole log follows instead of a snapshot: start it from an empty log.
        store
            .begin_restore()
            .and_then(|()| store.finish_restore())?;
    }
    match reply {
        Frame::Welcome(welcome) => {
            accept_welcome(
                store,
                options,
                status,
                &mut frames,
                welcome,
                history.as_ref(),
            )?;
        }
        Frame::Refuse { code, reason } => return Err(ReplError::refused(code, reason)),
        other => {
            return Err(ReplError::Protocol(format!(
                "expected a welcome, got {other:?}"
            )));
        }
    }
    let done = AtomicBool::new(false);
    let buffered = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let acker = scope.spawn(|| acknowledge(store, stream, &done, &buffered));
        let mut receiving = Receiving {
            store,
            status,
            acker: acker.thread(),
            receiver: Receiver::with_payload_check(options.carry_max_bytes, |kind, payload| {
                crate::format::kv::decode_kv(kind, payload, crate::format::RECORD_PAYLOAD_MAX_BYTES)
                    .map(|_| ())
                    .map_err(|e| format!("not a valid key-value operation: {e}"))
            }),
            transfer,
            buffered: &buffered,
            pending_digest: None,
        };
        let result = receiving.run(&mut frames);
        done.store(true, Ordering::Release);
        acker.thread().unpark();
        let ack_result = acker.join().unwrap_or_else(|_| {
            Err(ReplError::Protocol(
                "the acknowledging thread panicked".into(),
            ))
        });
        result.and(ack_result)
    })
}

/// Introduces this replica: what it holds, up to which LSN (returned) and epoch.
fn send_hello(
    store: &Store,
    options: &LinkOptions,
    frames: &mut FrameStream,
) -> Result<Lsn, ReplError> {
    let wal = store.wal();
    // A store whose restore did not complete holds nothing usable, whatever its log shows.
    let last_lsn = if store.restoring() {
        0
    } else {
        wal.written_lsn()
    };
    let last_epoch = if last_lsn == 0 {
        0
    } else {
        wal.read(last_lsn)?.map_or(0, |r| r.epoch)
    };
    frames.send(&Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        cluster_id: if last_lsn == 0 { 0 } else { wal.cluster_id() },
        replica_id: options.replica_id,
        last_lsn,
        last_epoch,
        listen_port: options.listen_port,
        last_digest: wal.digest_at(last_lsn)?.unwrap_or(0),
        highest_epoch: wal.highest_epoch(),
    }))?;
    Ok(last_lsn)
}

fn parse_history(entries: &[u8]) -> Result<EpochHistory, ReplError> {
    EpochHistory::from_wire(entries)
        .map_err(|e| ReplError::Protocol(format!("the primary sent a bad epoch history: {e}")))
}

/// Takes the primary's welcome: refuses a primary of an older epoch than this node has seen
/// (telling it, so it steps down), adopts the primary's history, and reports the link up.
fn accept_welcome(
    store: &Store,
    options: &LinkOptions,
    status: &LinkStatus,
    frames: &mut FrameStream,
    welcome: crate::format::repl::Welcome,
    history: Option<&EpochHistory>,
) -> Result<(), ReplError> {
    options
        .seen_epoch
        .fetch_max(welcome.epoch, Ordering::AcqRel);
    let wal = store.wal();
    let seen = wal.highest_epoch();
    if welcome.epoch < seen {
        let _ = frames.send(&Frame::Fence { epoch: seen });
        return Err(ReplError::StalePrimary {
            primary: welcome.epoch,
            seen,
        });
    }
    if let Some(history) = history {
        wal.adopt_history(history)?;
    }
    tracing::info!(
        primary = %options.primary,
        start_after = welcome.start_after,
        primary_durable = welcome.durable_lsn,
        epoch = welcome.epoch,
        "replicating"
    );
    status.update(|p| {
        p.state = LinkState::Connected;
        p.sessions += 1;
        p.last_io = Some(Instant::now());
        p.primary_durable = welcome.durable_lsn;
        p.primary_epoch = welcome.epoch;
        p.last_error = None;
    });
    Ok(())
}

/// Rewinds this node's log to where it forked from the primary's history (`theirs`): the
/// records after that are saved under `rollback/` and cut. When the cut is impossible (the
/// fork lies in a compacted range) or the histories cannot tell where the logs part, the
/// store is emptied instead, after saving the records of its newest epoch, and the primary
/// bootstraps it. Returns the error that makes the link reconnect.
fn rewind(store: &Store, status: &LinkStatus, theirs: &EpochHistory, last_lsn: Lsn) -> ReplError {
    let wal = store.wal();
    let mine = wal.epoch_history();
    let fork = mine.fork_point(theirs, last_lsn);
    let result = if fork < last_lsn && fork > 0 {
        match store.rewind_to(fork) {
            Err(crate::engine::DbError::Wal(crate::wal::WalError::CannotRewind {
                reason, ..
            })) => {
                tracing::warn!(
                    fork,
                    reason,
                    "cannot cut the log there; emptying it to be bootstrapped"
                );
                empty(store).map(|()| (0, None))
            }
            other => other.map(|saved| (fork, saved)).map_err(ReplError::from),
        }
    } else if theirs.latest().epoch > mine.latest().epoch {
        // Same history, different records (or nothing shared): keep the newest epoch's
        // records in a rollback file and start over from the primary's state.
        let keep_from = mine.latest().start_lsn.min(last_lsn + 1).max(1) - 1;
        wal.save_tail(keep_from)
            .map_err(ReplError::from)
            .and_then(|saved| empty(store).map(|()| (0, saved)))
    } else {
        // The primary is no newer than this node: nothing says whose records should win.
        return ReplError::Refused {
            code: RefuseCode::Diverged,
            reason: format!(
                "this node's log and the primary's differ, and the primary's epoch {} is not \
                 newer than this node's {}: nothing was rewound; compare them with `shiplog \
                 verify --compare`",
                theirs.latest().epoch,
                mine.latest().epoch
            ),
        };
    };
    match result {
        Ok((fork, saved)) => {
            tracing::warn!(
                fork,
                rollback = ?saved,
                "rewound the log to the fork point; the records cut from it are in the rollback file"
            );
            status.update(|p| {
                p.rewinds += 1;
                if saved.is_some() {
                    p.last_rollback.clone_from(&saved);
                }
            });
            ReplError::Rewound { fork }
        }
        Err(e) => e,
    }
}

/// Empties the store (as a restore would), so the primary ships it everything again.
fn empty(store: &Store) -> Result<(), ReplError> {
    store.begin_restore()?;
    store.finish_restore()?;
    Ok(())
}

/// A snapshot being received from the primary into `DIR/bootstrap/`, with the log after it,
/// which the primary sends in between (dual-channel sync on one connection) and which waits
/// in a buffer file until the snapshot is restored.
struct Transfer {
    header: SnapshotHeader,
    dir: std::path::PathBuf,
    partial: std::path::PathBuf,
    file: std::fs::File,
    buffer_path: std::path::PathBuf,
    buffer: std::io::BufWriter<std::fs::File>,
    progress: BootstrapProgress,
}

impl Transfer {
    /// Answers the primary's offer: where to resume (what is kept of an interrupted transfer
    /// of the same file, or 0).
    fn start(
        store: &Store,
        status: &LinkStatus,
        frames: &mut FrameStream,
        header_bytes: &[u8; SNAPSHOT_HEADER_BYTES],
        file_bytes: u64,
    ) -> Result<Self, ReplError> {
        let header = SnapshotHeader::decode(header_bytes)
            .map_err(|e| ReplError::Protocol(format!("the primary offered a bad snapshot: {e}")))?;
        let dir = store.wal().dir().join(BOOTSTRAP_DIR);
        std::fs::create_dir_all(&dir)?;
        let partial = dir.join(PARTIAL_SNAPSHOT_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)?;
        let held = file.metadata()?.len();
        let mut first_bytes = [0u8; SNAPSHOT_HEADER_BYTES];
        let same = held >= SNAPSHOT_HEADER_BYTES as u64
            && held <= file_bytes
            && file.read_exact_at(&mut first_bytes, 0).is_ok()
            && first_bytes == *header_bytes;
        let at = if same { held } else { 0 };
        file.set_len(at)?;
        // The log buffered by an interrupted transfer is not resumed: the primary sends the
        // log after the snapshot again.
        let buffer_path = dir.join(LOG_BUFFER_FILE);
        let buffer =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&buffer_path)?);
        frames.send(&Frame::SnapshotResume { offset: at })?;
        tracing::info!(
            lsn = header.lsn,
            file_bytes,
            resume_at = at,
            "bootstrapping from the primary's snapshot"
        );
        let progress = BootstrapProgress {
            lsn: header.lsn,
            file_bytes,
            received: at,
            resumed_at: at,
            installing: false,
        };
        status.update(|p| p.bootstrap = Some(progress));
        Ok(Self {
            header,
            dir,
            partial,
            file,
            buffer_path,
            buffer,
            progress,
        })
    }

    /// Writes bytes of the snapshot; returns whether it is complete.
    fn write(&mut self, offset: u64, bytes: &[u8], status: &LinkStatus) -> Result<bool, ReplError> {
        let at = self.progress.received;
        if offset != at || bytes.len() as u64 > self.progress.file_bytes - at {
            return Err(ReplError::Protocol(format!(
                "snapshot bytes at offset {offset} where offset {at} comes next"
            )));
        }
        self.file.write_all_at(bytes, at)?;
        self.progress.received = at + bytes.len() as u64;
        let progress = self.progress;
        status.update(|p| p.bootstrap = Some(progress));
        Ok(self.progress.received == self.progress.file_bytes)
    }

    /// Keeps a log frame for after the restore.
    fn buffer(&mut self, frame: &Frame<'_>) -> Result<(), ReplError> {
        let mut bytes = Vec::new();
        crate::format::repl::encode_frame(&mut bytes, frame);
        self.buffer.write_all(&bytes)?;
        Ok(())
    }

    /// Verifies all of the snapshot, and only then replaces the store's state with it
    /// (`Store::begin_restore`, marked durably until complete). Returns the buffered log.
    fn install(mut self, store: &Store, status: &LinkStatus) -> Result<std::fs::File, ReplError> {
        self.file.sync_all()?;
        self.progress.installing = true;
        let progress = self.progress;
        status.update(|p| p.bootstrap = Some(progress));
        // IMPORTANT: all of it is verified before the store's state is touched: a damaged
        // transfer costs a new transfer, never the state this replica holds.
        let verified = crate::snapshot::verify_snapshot(&self.partial, &mut |_| {});
        match verified {
            Ok(info) if info.header == self.header => {}
            Ok(_) => {
                let _ = std::fs::remove_file(&self.partial);
                return Err(ReplError::Protocol(
                    "the snapshot received is not the one offered".into(),
                ));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.partial);
                return Err(ReplError::Protocol(format!(
                    "the snapshot received failed verification, it will be sent again: {e}"
                )));
            }
        }
        let started = Instant::now();
        store.begin_restore()?;
        let mut source =
            std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&self.partial)?);
        crate::snapshot::install_base(store.wal(), &mut source, &mut |_| {})
            .map_err(|e| ReplError::Protocol(format!("installing the snapshot: {e}")))?;
        store.finish_restore()?;
        std::fs::remove_file(&self.partial)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        tracing::info!(
            lsn = self.header.lsn,
            keys = self.header.key_count,
            install_ms = started.elapsed().as_millis(),
            "snapshot installed; following the log from its LSN"
        );
        self.buffer.flush()?;
        let buffered = std::fs::File::open(&self.buffer_path)?;
        std::fs::remove_file(&self.buffer_path)?;
        tracing::info!(
            bytes = buffered.metadata()?.len(),
            "taking the log buffered during the transfer"
        );
        status.update(|p| {
            p.bootstrap = None;
            p.bootstraps += 1;
        });
        Ok(buffered)
    }
}

/// Answers the primary's challenge, then checks the primary's own proof: a node that does
/// not know the password cannot feed this replica a log.
fn authenticate(
    frames: &mut FrameStream,
    options: &LinkOptions,
    challenge: &[u8; AUTH_BYTES],
) -> Result<(), ReplError> {
    let Some(password) = options.masterauth.as_deref() else {
        return Err(ReplError::Protocol(
            "the primary requires authentication: give this replica --masterauth-file with the \
             primary's password"
                .into(),
        ));
    };
    let mine = auth::nonce();
    let my_proof = auth::proof(password, Prover::Replica, challenge, &mine);
    frames.send(&Frame::Auth {
        nonce: &mine,
        proof: &my_proof,
    })?;
    match frames.read_frame()? {
        Frame::Auth { nonce, proof } if nonce == challenge => {
            if auth::verify(password, Prover::Primary, challenge, &mine, proof) {
                Ok(())
            } else {
                Err(ReplError::Protocol(
                    "the primary could not prove it knows the password; not replicating from it"
                        .into(),
                ))
            }
        }
        Frame::Refuse { code, reason } => Err(ReplError::refused(code, reason)),
        other => Err(ReplError::Protocol(format!(
            "expected the primary's proof, got {other:?}"
        ))),
    }
}

/// A session's receiving side: the snapshot transfer, if any, then the log.
struct Receiving<'a> {
    store: &'a Store,
    status: &'a LinkStatus,
    acker: &'a std::thread::Thread,
    receiver: Receiver,
    transfer: Option<Transfer>,
    /// The last LSN buffered during a transfer (acknowledged as received).
    buffered: &'a AtomicU64,
    /// The primary's digest at an LSN, compared once this replica holds that LSN.
    pending_digest: Option<(u64, u64)>,
}

impl Receiving<'_> {
    fn run(&mut self, frames: &mut FrameStream) -> Result<(), ReplError> {
        // A transfer resumed with the whole file here already (the replica stopped after the
        // last byte, before or during the install) gets no more bytes: install it now.
        if self
            .transfer
            .as_ref()
            .is_some_and(|t| t.progress.received == t.progress.file_bytes)
        {
            self.install()?;
        }
        loop {
            if self.status.stopped() {
                return Err(ReplError::Stopped);
            }
            let frame = frames.read_frame()?;
            let now = Instant::now();
            match (&mut self.transfer, frame) {
                (Some(transfer), Frame::SnapshotBytes { offset, bytes }) => {
                    if transfer.write(offset, bytes, self.status)? {
                        self.install()?;
                    }
                }
                (
                    Some(transfer),
                    frame @ (Frame::SegmentHeader { .. } | Frame::SegmentBytes { .. }),
                ) => {
                    if let Frame::SegmentBytes { last_lsn, .. } = frame
                        && last_lsn != 0
                    {
                        self.buffered.fetch_max(last_lsn, Ordering::AcqRel);
                        self.acker.unpark();
                    }
                    transfer.buffer(&frame)?;
                }
                (_, frame) => self.handle(frame)?,
            }
            let applied = self.store.applied_lsn();
            self.status.update(|p| {
                p.last_io = Some(now);
                if applied >= p.primary_durable {
                    p.behind_since = None;
                } else if p.behind_since.is_none() {
                    p.behind_since = Some(now);
                }
            });
        }
    }

    /// Restores the snapshot, then takes the log buffered meanwhile as if it arrived now.
    fn install(&mut self) -> Result<(), ReplError> {
        let Some(transfer) = self.transfer.take() else {
            return Ok(());
        };
        let buffered = transfer.install(self.store, self.status)?;
        let mut replay = FrameStream::from_file(buffered);
        while let Some(frame) = replay.read_frame_or_end()? {
            self.handle(frame)?;
        }
        Ok(())
    }

    fn handle(&mut self, frame: Frame<'_>) -> Result<(), ReplError> {
        let (store, status) = (self.store, self.status);
        let wal = store.wal();
        match frame {
            Frame::SegmentHeader { header, capacity } => {
                self.receiver.segment_header(wal, header, capacity)?;
            }
            Frame::SegmentBytes {
                segment,
                offset,
                last_lsn,
                bytes,
            } => {
                let queued = self
                    .receiver
                    .segment_bytes(wal, segment, offset, bytes, last_lsn)?;
                if last_lsn != 0 {
                    // Only durable records ship: the primary's durable LSN is at least this.
                    status.update(|p| p.primary_durable = p.primary_durable.max(last_lsn));
                }
                if queued != 0 {
                    // Visible before durable here: the primary holds these records durably
                    // already. The acknowledging thread syncs and reports durability.
                    wal.wait_for(queued, crate::wal::Durability::Buffered)?;
                    store.apply_written().map_err(|e| {
                        ReplError::Protocol(format!("applying shipped records: {e}"))
                    })?;
                    self.acker.unpark();
                }
            }
            Frame::Heartbeat {
                durable_lsn,
                digest_lsn,
                digest,
                ..
            } => {
                status.update(|p| p.primary_durable = p.primary_durable.max(durable_lsn));
                if digest_lsn != 0 {
                    self.pending_digest = Some((digest_lsn, digest));
                }
            }
            Frame::Peers { entries } => {
                let peers = crate::format::repl::peers(entries).collect();
                status.update(|p| p.peers = peers);
            }
            Frame::Refuse { code, reason } => return Err(ReplError::refused(code, reason)),
            other => {
                return Err(ReplError::Protocol(format!(
                    "the primary sent {other:?} during shipping"
                )));
            }
        }
        if self.transfer.is_none()
            && let Some((lsn, primary)) = self.pending_digest
            && wal.written_lsn() >= lsn
        {
            self.pending_digest = None;
            if let Some(replica) = wal.digest_at(lsn)? {
                status.update(|p| p.digest_checked = Some((lsn, replica == primary)));
                if replica != primary {
                    return Err(ReplError::Diverged {
                        lsn,
                        primary,
                        replica,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Syncs what was received and acknowledges received, durable and applied LSNs: at once
/// after each batch, and at least every 100 ms, so the primary sees a live replica.
fn acknowledge(
    store: &Store,
    stream: TcpStream,
    done: &AtomicBool,
    buffered: &AtomicU64,
) -> Result<(), ReplError> {
    let wal = store.wal();
    let mut frames = FrameStream::new(stream, &[]);
    let mut sent = (u64::MAX, 0, 0);
    let mut last_sent = Instant::now();
    while !done.load(Ordering::Acquire) {
        if wal.durable_lsn() < wal.written_lsn() {
            wal.sync()?;
        }
        // During a bootstrap, the log buffered for after the restore counts as received
        // (the primary's retention follows it), but not as durable or applied.
        let received = wal.written_lsn().max(buffered.load(Ordering::Acquire));
        let now = (received, wal.durable_lsn(), store.applied_lsn());
        if now != sent || last_sent.elapsed() >= Duration::from_millis(100) {
            frames.send(&Frame::Ack {
                received: now.0,
                durable: now.1.min(now.0),
                applied: now.2.min(now.0),
                clock_micros: clock_micros(),
            })?;
            sent = now;
            last_sent = Instant::now();
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    Ok(())
}

/// Tells the primary at `options.primary` that a node of `epoch` exists (a fence frame instead
/// of a hello), so that, being older, it steps down. `Ok` once it heard: it answered the notice
/// (a node that ships nothing answers too, having noted the epoch).
///
/// # Errors
/// It could not be reached, closed the connection unanswered (stopping, or reading too many
/// notices at once) or did not answer: try again later.
pub fn send_fence(options: &LinkOptions, epoch: crate::format::Epoch) -> Result<(), ReplError> {
    let status = LinkStatus::default();
    let mut stream = connect(options, &status)?;
    stream.set_read_timeout(Some(options.timeout))?;
    stream.set_write_timeout(Some(options.timeout))?;
    let challenge = handshake(&mut stream)?;
    let mut frames = FrameStream::new(stream, &[]);
    if let Some(challenge) = challenge {
        authenticate(&mut frames, options, &challenge)?;
    }
    frames.send(&Frame::Fence { epoch })?;
    match frames.read_frame() {
        Ok(Frame::Refuse {
            code: RefuseCode::StaleEpoch | RefuseCode::Other,
            ..
        }) => Ok(()),
        Ok(other) => Err(ReplError::Protocol(format!(
            "the old primary answered a fence with {other:?}"
        ))),
        Err(e) => Err(e),
    }
}
