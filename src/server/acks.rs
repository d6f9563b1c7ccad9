//! Acknowledgement levels: how many replicas must hold a write (durably, or visibly) before
//! its client is answered, and the gate that holds replies until they do.
//!
//! A write is made durable here first (group commit), then its connection is parked on the
//! event loop with its replies held back; the shipping threads wake the loops when a replica
//! acknowledges, and each parked connection counts the replicas at or past its writes' LSNs.
//! Nothing blocks the loop: other connections are served meanwhile.
//!
//! The gate knows nothing of event loops: each loop registers a [`Waker`] with it.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::format::{Epoch, Lsn};
use crate::repl::status::PeerProgress;
use crate::sync::MutexExt;

/// Most replicas a level may ask for (the most shipping sessions a primary runs).
pub const SYNC_REPLICAS_MAX: u32 = 64;
/// Default of [`SyncOptions::timeout_ms`]: long enough for a replica's fsync under load and a
/// short network hiccup, short enough that a client sees a dead replica within its own
/// timeouts.
pub const DEFAULT_SYNC_TIMEOUT_MS: u64 = 5000;
/// Redis' reply to a write that did not reach enough replicas.
pub const NOREPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";
/// At most one fallback warning per this interval; the others are counted into the next.
const FALLBACK_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// When a write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckLevel {
    /// Once durable here (group commit).
    #[default]
    Local,
    /// Once durable here and acknowledged durable by this many replicas.
    Replicated(u32),
    /// Once durable here and durable and visible to readers on this many replicas
    /// (`PostgreSQL`'s `remote_apply`).
    Applied(u32),
}

impl AckLevel {
    /// The level a server starts connections at: `replicas` = 0 is `local`.
    #[must_use]
    pub fn from_setting(replicas: u32, applied: bool) -> Self {
        match (replicas, applied) {
            (0, _) => Self::Local,
            (k, false) => Self::Replicated(k),
            (k, true) => Self::Applied(k),
        }
    }

    /// Parses the arguments of `SHIPLOG.ACKLEVEL`: `local`, `replicated K` or `applied K`.
    ///
    /// # Errors
    /// The error reply, for a client.
    pub fn parse(args: &[&[u8]]) -> Result<Self, String> {
        let usage = "ERR syntax: SHIPLOG.ACKLEVEL [local | replicated <replicas> | applied \
                     <replicas> | default]";
        let Some(name) = args.first() else {
            return Err(usage.to_owned());
        };
        let name = name.to_ascii_lowercase();
        match (name.as_slice(), args.get(1)) {
            (b"local", None) => Ok(Self::Local),
            (b"replicated" | b"applied", Some(count)) if args.len() == 2 => {
                let replicas = std::str::from_utf8(count)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .filter(|k| (1..=SYNC_REPLICAS_MAX).contains(k))
                    .ok_or_else(|| {
                        format!(
                            "ERR the replica count must be an integer from 1 to \
                             {SYNC_REPLICAS_MAX} (use 'local' for none)"
                        )
                    })?;
                Ok(Self::from_setting(replicas, name == b"applied"))
            }
            _ => Err(usage.to_owned()),
        }
    }

    /// Replicas that must acknowledge (0 for `local`).
    #[must_use]
    pub fn replicas(self) -> usize {
        match self {
            Self::Local => 0,
            Self::Replicated(k) | Self::Applied(k) => k as usize,
        }
    }

    /// The level in one token, for `CLIENT INFO` (`replicated:1`).
    #[must_use]
    pub fn token(self) -> String {
        self.to_string().replace(' ', ":")
    }
}

impl fmt::Display for AckLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Replicated(k) => write!(f, "replicated {k}"),
            Self::Applied(k) => write!(f, "applied {k}"),
        }
    }
}

/// What a write that cannot gather its acknowledgements in time is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SyncFallback {
    /// `-NOREPLICAS`: the client learns the write's fate is unknown.
    #[default]
    Fail,
    /// `+OK` as if asynchronous, with a warning in the log and `INFO`.
    Async,
}

/// The server's acknowledgement settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOptions {
    /// The level connections start at (`--sync-replicas`, `--sync-level`).
    pub level: AckLevel,
    /// How long a write waits for its acknowledgements (`--sync-timeout-ms`).
    pub timeout_ms: u64,
    /// What a write that timed out is answered (`--sync-fallback`).
    pub fallback: SyncFallback,
}

impl SyncOptions {
    /// When a write gated now must have its acknowledgements.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.timeout_ms)
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            level: AckLevel::Local,
            timeout_ms: DEFAULT_SYNC_TIMEOUT_MS,
            fallback: SyncFallback::Fail,
        }
    }
}

/// Where one replica stands, as far as acknowledgement levels count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAck {
    /// Durable there.
    pub durable: Lsn,
    /// Durable and visible to its readers there.
    pub applied: Lsn,
}

impl ReplicaAck {
    /// Where a replica stands, if it counts at all: connected, and not being bootstrapped (a
    /// replica installing a snapshot holds nothing it could keep yet).
    #[must_use]
    pub fn of(progress: &PeerProgress) -> Option<Self> {
        (progress.online && !progress.bootstrapping()).then_some(Self {
            durable: progress.durable,
            // Visible and durable: `remote_apply` promises both.
            applied: progress.applied.min(progress.durable),
        })
    }
}

/// The replicas that count now, taken once and asked about many LSNs.
#[derive(Debug, Clone, Default)]
pub struct AckView {
    replicas: Vec<ReplicaAck>,
    /// The epoch this node takes writes in, as an unfenced primary; `None` on a replica or a
    /// primary a failover replaced.
    writable_epoch: Option<Epoch>,
}

impl AckView {
    /// A view of the given replicas.
    #[must_use]
    pub fn new(replicas: Vec<ReplicaAck>) -> Self {
        Self {
            replicas,
            writable_epoch: None,
        }
    }

    /// The view of a primary taking writes in `epoch` (`None`: it takes none).
    #[must_use]
    pub fn in_epoch(mut self, epoch: Option<Epoch>) -> Self {
        self.writable_epoch = epoch;
        self
    }

    /// Whether a write made at `lsn` in `epoch` has the acknowledgements `level` asks for.
    ///
    /// IMPORTANT: acknowledgements count LSNs, not records. Once this node stopped being the
    /// primary of the write's epoch (it stepped down, was re-pointed and maybe rewound, or was
    /// promoted again), the record at `lsn` may be another one, of a later epoch, and a
    /// replica holding that LSN says nothing about the write: it is never acknowledged then,
    /// and its deadline answers it `-NOREPLICAS` (indeterminate), which is always true.
    #[must_use]
    pub fn acknowledges(&self, level: AckLevel, lsn: Lsn, epoch: Epoch) -> bool {
        self.writable_epoch == Some(epoch) && self.satisfies(level, lsn)
    }

    /// Replicas holding durably the write made at `lsn` in `epoch` (`WAIT`): none once this
    /// node is no longer the writable primary of that epoch, whose LSNs may hold other writes
    /// now. A connection that never wrote (`lsn` 0) counts every replica, as Redis does.
    #[must_use]
    pub fn holding_in(&self, lsn: Lsn, epoch: Epoch) -> usize {
        if lsn > 0 && self.writable_epoch != Some(epoch) {
            return 0;
        }
        self.holding(lsn, false)
    }

    /// Replicas holding `lsn` durably (and visibly, when `applied`).
    #[must_use]
    pub fn holding(&self, lsn: Lsn, applied: bool) -> usize {
        self.replicas
            .iter()
            .filter(|r| if applied { r.applied } else { r.durable } >= lsn)
            .count()
    }

    /// Whether a write at `lsn` has the acknowledgements `level` asks for.
    #[must_use]
    pub fn satisfies(&self, level: AckLevel, lsn: Lsn) -> bool {
        match level {
            AckLevel::Local => true,
            AckLevel::Replicated(_) => self.holding(lsn, false) >= level.replicas(),
            AckLevel::Applied(_) => self.holding(lsn, true) >= level.replicas(),
        }
    }
}

/// A `WAIT` in progress: answered with the count of replicas durable at `lsn` once it reaches
/// `replicas` or the deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitAcks {
    /// The connection's last write LSN.
    pub lsn: Lsn,
    /// The epoch it was written in.
    pub epoch: Epoch,
    /// Replicas asked for.
    pub replicas: usize,
    /// `None`: no deadline (`WAIT n 0`).
    pub deadline: Option<Instant>,
}

/// Called when a replica acknowledges: wakes one event loop if connections of it wait for
/// acknowledgements.
pub struct Waker(pub Box<dyn Fn() + Send + Sync>);

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waker")
    }
}

/// The loops to wake when acknowledgements arrive, and the gate's counters for `INFO`.
#[derive(Debug, Default)]
pub struct AckGate {
    wakers: Mutex<Vec<Waker>>,
    /// Bumped by every acknowledgement: a loop that saw it change while it parked connections
    /// looks again at once instead of sleeping (the wake-up may have gone before it parked).
    generation: AtomicU64,
    /// Writes answered `-NOREPLICAS`.
    timeouts: AtomicU64,
    /// Writes answered OK without their acknowledgements (`--sync-fallback async`).
    fallbacks: AtomicU64,
    /// The last gated write fell back to asynchronous.
    degraded: AtomicBool,
    /// When the last fallback warning was logged, and fallbacks since not logged.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl AckGate {
    /// Adds a loop to wake when acknowledgements arrive.
    pub(crate) fn register(&self, waker: Waker) {
        self.wakers.locked().push(waker);
    }

    /// Called by shipping threads after a replica's acknowledgement is recorded: wakes each
    /// loop with connections waiting for acknowledgements.
    pub fn notify(&self) {
        // IMPORTANT: bump before the wakers read the loops' flags; a loop sets its flag before
        // it reads the generation, so one of the two sides always sees the other.
        self.generation.fetch_add(1, Ordering::SeqCst);
        for waker in self.wakers.locked().iter() {
            (waker.0)();
        }
    }

    /// Acknowledgements received so far (see `generation`).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A gated write got its acknowledgements in time.
    pub fn acknowledged(&self) {
        if self.degraded.load(Ordering::Relaxed) {
            self.degraded.store(false, Ordering::Relaxed);
            tracing::info!("synchronous replication is keeping up again");
        }
    }

    /// A gated write timed out and was answered `-NOREPLICAS`.
    pub fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A gated write timed out and was answered OK (`--sync-fallback async`): count it, mark
    /// the state degraded, and warn at most once per interval.
    pub fn fell_back(&self, level: AckLevel, timeout_ms: u64) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.degraded.store(true, Ordering::Relaxed);
        let mut warned = self.warned.locked();
        let now = Instant::now();
        if warned
            .0
            .is_some_and(|at| now.duration_since(at) < FALLBACK_WARN_INTERVAL)
        {
            warned.1 += 1;
            return;
        }
        let unlogged = std::mem::take(&mut warned.1);
        warned.0 = Some(now);
        drop(warned);
        tracing::warn!(
            %level,
            timeout_ms,
            unlogged_since_last_warning = unlogged,
            "a write did not gather its replica acknowledgements in time and was answered OK \
             anyway (--sync-fallback async): it may be lost if this primary fails"
        );
    }

    /// The gate's series in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let series = [
            (
                "shiplog_sync_timeouts_total",
                "counter",
                "Writes answered -NOREPLICAS: durable here, acknowledgements missing (indeterminate).",
                self.timeouts.load(Ordering::Relaxed),
            ),
            (
                "shiplog_sync_fallbacks_total",
                "counter",
                "Writes answered OK without their replica acknowledgements (--sync-fallback async).",
                self.fallbacks.load(Ordering::Relaxed),
            ),
            (
                "shiplog_sync_degraded",
                "gauge",
                "1 while the last gated write fell back to asynchronous replication.",
                u64::from(self.degraded.load(Ordering::Relaxed)),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }

    /// The `INFO replication` lines of the gate.
    #[must_use]
    pub fn info(&self, options: &SyncOptions) -> String {
        let state = if self.degraded.load(Ordering::Relaxed) {
            "degraded"
        } else if options.level == AckLevel::Local {
            "off"
        } else {
            "ok"
        };
        let (level, replicas) = match options.level {
            AckLevel::Local => ("local", 0),
            AckLevel::Replicated(k) => ("replicated", k),
            AckLevel::Applied(k) => ("applied", k),
        };
        format!(
            "sync_level:{level}\r\nsync_replicas:{replicas}\r\nsync_timeout_ms:{}\r\n\
             sync_fallback:{}\r\nsync_state:{state}\r\nsync_timeouts:{}\r\nsync_fallbacks:{}\r\n",
            options.timeout_ms,
            match options.fallback {
                SyncFallback::Fail => "fail",
                SyncFallback::Async => "async",
            },
            self.timeouts.load(Ordering::Relaxed),
            self.fallbacks.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_print() {
        assert_eq!(AckLevel::parse(&[b"LOCAL"]), Ok(AckLevel::Local));
        assert_eq!(
            AckLevel::parse(&[b"replicated", b"2"]),
            Ok(AckLevel::Replicated(2))
        );
        assert_eq!(
            AckLevel::parse(&[b"applied", b"1"]),
            Ok(AckLevel::Applied(1))
        );
        assert!(AckLevel::parse(&[b"replicated", b"0"]).is_err());
        assert!(AckLevel::parse(&[b"replicated", b"x"]).is_err());
        assert!(AckLevel::parse(&[b"replicated"]).is_err());
        assert!(AckLevel::parse(&[b"local", b"1"]).is_err());
        assert!(AckLevel::parse(&[b"sync"]).is_err());
        assert_eq!(AckLevel::Applied(3).to_string(), "applied 3");
        assert_eq!(AckLevel::Replicated(1).token(), "replicated:1");
    }

    #[test]
    fn only_connected_replicas_past_their_bootstrap_count() {
        let mut p = PeerProgress {
            online: true,
            durable: 10,
            applied: 12,
            ..PeerProgress::default()
        };
        assert_eq!(
            ReplicaAck::of(&p),
            Some(ReplicaAck {
                durable: 10,
                applied: 10
            })
        );
        p.snapshot_bytes = 1000;
        p.snapshot_lsn = 50;
        assert_eq!(ReplicaAck::of(&p), None, "still installing its snapshot");
        p.snapshot_applied = true;
        assert!(ReplicaAck::of(&p).is_some());
        p.online = false;
        assert_eq!(ReplicaAck::of(&p), None, "no hello yet");
    }

    #[test]
    fn a_view_counts_replicas_at_or_past_an_lsn() {
        let view = AckView::new(vec![
            ReplicaAck {
                durable: 10,
                applied: 8,
            },
            ReplicaAck {
                durable: 5,
                applied: 5,
            },
        ]);
        assert_eq!(view.holding(5, false), 2);
        assert_eq!(view.holding(9, false), 1);
        assert_eq!(view.holding(9, true), 0);
        assert!(view.satisfies(AckLevel::Replicated(2), 5));
        assert!(!view.satisfies(AckLevel::Replicated(2), 6));
        assert!(!view.satisfies(AckLevel::Applied(1), 9));
        assert!(view.satisfies(AckLevel::Local, 1000));
        assert!(
            !view.acknowledges(AckLevel::Replicated(2), 5, 1),
            "a view of no writable epoch acknowledges nothing"
        );
        let view = view.in_epoch(Some(2));
        assert!(view.acknowledges(AckLevel::Replicated(2), 5, 2));
        assert!(
            !view.acknowledges(AckLevel::Replicated(2), 5, 1),
            "a write of an earlier epoch is not acknowledged by LSNs of this one"
        );
        assert_eq!(view.holding_in(5, 2), 2, "WAIT for a write of this epoch");
        assert_eq!(
            view.holding_in(5, 1),
            0,
            "WAIT for a write of an earlier epoch"
        );
        assert_eq!(
            view.holding_in(0, 0),
            2,
            "WAIT on a connection that never wrote"
        );
    }
}
