//! A load generator for RESP servers (`shiplog load`), built to measure replication: write
//! throughput and latency percentiles on a primary, visibility lag on a replica, and the
//! speed at which a replica catches up (`docs/benchmarks.md`, "Replication").
//!
//! The parts: [`client`] (the checks and queries it sends over the crate's RESP connection,
//! [`crate::resp_conn`]), [`pacing`] (the fixed send schedule that keeps paced latencies honest), [`latency`]
//! (HDR histograms), [`workload`] (one client thread), [`visibility`] (the prober),
//! [`catch_up`] and [`report`].

pub mod catch_up;
pub mod client;
mod error;
pub mod latency;
pub mod pacing;
pub mod report;
pub mod visibility;
pub mod workload;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use error::LoadError;
pub use report::Report;

use self::catch_up::CatchUp;
use self::client::{Connection, info_field};
use self::pacing::Schedule;
use self::report::{OpReport, VisibilityReport};
use self::visibility::VisibilityStats;
use self::workload::{Client, ClientStats, KEYS_MAX, Limits, OpStats, Workload};

/// Most client connections (each a thread).
pub const CLIENTS_MAX: usize = 1024;
/// Most requests in flight per connection.
pub const PIPELINE_MAX: usize = 1024;
/// Largest value written.
pub const VALUE_MAX_BYTES: usize = 16 << 20;
/// Highest paced rate, operations per second in total.
pub const RATE_MAX_PER_SEC: u64 = 100_000_000;
/// Longest run.
pub const DURATION_MAX: Duration = Duration::from_hours(24);
/// Shortest and longest interval between visibility probes.
pub const PROBE_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(1));
/// Bound on connecting and on waiting for any one reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Delay from the end of setup to the first due operation, so every thread is running when
/// the schedule starts and no client begins late.
const START_DELAY: Duration = Duration::from_millis(20);

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// The primary, `HOST:PORT`; it takes every write.
    pub server: String,
    /// Where reads go (a replica), if not to the primary.
    pub read_from: Option<String>,
    /// Client connections, each on its own thread (default 16; 1 to [`CLIENTS_MAX`]).
    pub clients: usize,
    /// Requests in flight per connection (default 1; 1 to [`PIPELINE_MAX`]).
    pub pipeline: usize,
    /// Bytes per value written (default 100; at most [`VALUE_MAX_BYTES`]).
    pub value_bytes: usize,
    /// Size of the key space (default 100,000; 1 to 10^12).
    pub keys: u64,
    /// Share of `GET`s, 0 to 1 (default 0: replication is about writes).
    pub read_ratio: f64,
    /// Total operations per second, 0 for as fast as replies come back (default 0).
    pub rate_per_sec: u64,
    /// How long to send; `None` with `ops` set: until the budget is spent.
    pub duration: Option<Duration>,
    /// Stop after this many operations.
    pub ops: Option<u64>,
    /// Measure visibility lag on this replica while the load runs.
    pub visibility: Option<String>,
    /// Interval between visibility probes (default 5 ms).
    pub probe_interval: Duration,
    /// Measure catch-up: write the load on the primary with this detached node missing it,
    /// then attach it and time how long it takes to apply the lot.
    pub catch_up: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            server: "127.0.0.1:6379".to_owned(),
            read_from: None,
            clients: 16,
            pipeline: 1,
            value_bytes: 100,
            keys: 100_000,
            read_ratio: 0.0,
            rate_per_sec: 0,
            duration: Some(Duration::from_secs(10)),
            ops: None,
            visibility: None,
            probe_interval: Duration::from_millis(5),
            catch_up: None,
        }
    }
}

impl LoadOptions {
    /// Checks every bound and combination.
    ///
    /// # Errors
    /// [`LoadError::Options`] naming the first problem.
    pub fn validate(&self) -> Result<(), LoadError> {
        let fail = |message: String| Err(LoadError::Options(message));
        if !(1..=CLIENTS_MAX).contains(&self.clients) {
            return fail(format!("--clients must be 1 to {CLIENTS_MAX}"));
        }
        if !(1..=PIPELINE_MAX).contains(&self.pipeline) {
            return fail(format!("--pipeline must be 1 to {PIPELINE_MAX}"));
        }
        if self.value_bytes > VALUE_MAX_BYTES {
            return fail(format!("--value-bytes must be at most {VALUE_MAX_BYTES}"));
        }
        if !(1..=KEYS_MAX).contains(&self.keys) {
            return fail(format!("--keys must be 1 to {KEYS_MAX}"));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return fail("--read-ratio must be 0 to 1".to_owned());
        }
        if self.rate_per_sec > RATE_MAX_PER_SEC {
            return fail(format!("--rate must be at most {RATE_MAX_PER_SEC}"));
        }
        match (self.duration, self.ops) {
            (None, None) => return fail("give --duration or --ops".to_owned()),
            (Some(d), _) if d.is_zero() || d > DURATION_MAX => {
                return fail(format!(
                    "--duration must be above 0 and at most {} s",
                    DURATION_MAX.as_secs()
                ));
            }
            (_, Some(0)) => return fail("--ops must be at least 1".to_owned()),
            _ => {}
        }
        let (low, high) = PROBE_INTERVAL_RANGE;
        if !(low..=high).contains(&self.probe_interval) {
            return fail("--probe-interval-ms must be 1 to 1000".to_owned());
        }
        if self.catch_up.is_some() {
            if self.read_ratio > 0.0 || self.read_from.is_some() {
                return fail("--catch-up writes only: drop --read-ratio and --read-from".into());
            }
            if self.visibility.is_some() {
                return fail("--catch-up and --visibility are separate measurements".into());
            }
            if self.ops.is_none() {
                return fail("--catch-up needs --ops (the records to write)".into());
            }
        }
        Ok(())
    }

    fn workload(&self) -> Workload {
        Workload {
            value_bytes: self.value_bytes,
            keys: self.keys,
            read_ratio: self.read_ratio,
            pipeline: self.pipeline,
        }
    }
}

/// Runs the load (and the measurement asked for) and reports.
///
/// # Errors
/// Invalid options, a failed connection, or a server reply no command of the tool can get.
pub fn run(options: &LoadOptions) -> Result<Report, LoadError> {
    options.validate()?;
    match &options.catch_up {
        Some(replica) => run_catch_up(options, replica),
        None => run_load(options),
    }
}

/// A number unlikely to repeat across runs: keys of the visibility probes carry it.
fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[expect(clippy::cast_possible_truncation, reason = "only the low bits vary")]
    let low = nanos as u64;
    low ^ u64::from(std::process::id()).rotate_left(40)
}

/// Connections made before the clock starts (setup is not part of the run): per client, one
/// to the primary and one to `--read-from`; for the prober, one to each side.
type Connections = (
    Vec<(Connection, Option<Connection>)>,
    Option<(Connection, Connection)>,
);

fn connect_all(options: &LoadOptions) -> Result<Connections, LoadError> {
    let mut clients = Vec::with_capacity(options.clients);
    for _ in 0..options.clients {
        let writes = Connection::connect(&options.server, REPLY_TIMEOUT)?;
        let reads = match &options.read_from {
            Some(addr) => Some(Connection::connect(addr, REPLY_TIMEOUT)?),
            None => None,
        };
        clients.push((writes, reads));
    }
    let prober = match &options.visibility {
        Some(replica) => Some((
            Connection::connect(&options.server, REPLY_TIMEOUT)?,
            Connection::connect(replica, REPLY_TIMEOUT)?,
        )),
        None => None,
    };
    Ok((clients, prober))
}

fn run_load(options: &LoadOptions) -> Result<Report, LoadError> {
    let (connections, prober) = connect_all(options)?;
    let stop = AtomicBool::new(false);
    let ops_left = options.ops.map(AtomicU64::new);
    let start = Instant::now() + START_DELAY;
    let limits = Limits {
        end: options.duration.map(|d| start + d),
        ops_left: ops_left.as_ref(),
        stop: &stop,
    };
    let (clients, visibility) = run_threads(options, connections, prober, start, limits);
    let clients = clients?;
    let visibility: Option<VisibilityStats> = visibility.transpose()?;
    let (mut set, mut get) = (OpStats::default(), OpStats::default());
    let mut finished = start;
    for client in &clients {
        set.add(&client.set);
        get.add(&client.get);
        finished = finished.max(client.finished);
    }
    let elapsed = finished.saturating_duration_since(start);
    Ok(Report {
        options: options.clone(),
        elapsed,
        set: OpReport::new(&set, elapsed),
        get: OpReport::new(&get, elapsed),
        visibility: visibility.map(|v| {
            let replica = options.visibility.as_deref().unwrap_or_default();
            VisibilityReport::new(replica, options.probe_interval, &v)
        }),
        catch_up: None,
    })
}

type ThreadResults = (
    Result<Vec<ClientStats>, LoadError>,
    Option<Result<VisibilityStats, LoadError>>,
);

/// A thread per client and one for the prober; waits for all of them.
fn run_threads(
    options: &LoadOptions,
    connections: Vec<(Connection, Option<Connection>)>,
    prober: Option<(Connection, Connection)>,
    start: Instant,
    limits: Limits<'_>,
) -> ThreadResults {
    let workload = options.workload();
    let seed = run_id();
    // The prober stops with the clients (the budget may end the run before any end time).
    let prober_stop = AtomicBool::new(false);
    let prober_limits = Limits {
        end: limits.end,
        ops_left: None,
        stop: &prober_stop,
    };
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(options.clients);
        for (i, (writes, reads)) in connections.into_iter().enumerate() {
            let schedule = Schedule::shared(start, i, options.clients, options.rate_per_sec);
            let seed = seed.wrapping_add(i as u64);
            let client = Client::new(&workload, schedule, limits, writes, reads, seed);
            let spawned = std::thread::Builder::new()
                .name(format!("load-{i}"))
                .spawn_scoped(scope, move || client.run());
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    limits.stop.store(true, Ordering::Relaxed);
                    return (Err(LoadError::Thread(e.to_string())), None);
                }
            }
        }
        let probe = prober.map(|(mut primary, mut replica)| {
            let limits = &prober_limits;
            let interval = options.probe_interval;
            std::thread::Builder::new()
                .name("load-visibility".into())
                .spawn_scoped(scope, move || {
                    visibility::probe(&mut primary, &mut replica, interval, start, limits, seed)
                })
                .map_err(|e| LoadError::Thread(e.to_string()))
        });
        let clients = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(LoadError::Thread("a client panicked".into())))
            })
            .collect();
        prober_stop.store(true, Ordering::Relaxed);
        let visibility = probe.map(|spawned| {
            spawned.and_then(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(LoadError::Thread("the prober panicked".into())))
            })
        });
        (clients, visibility)
    })
}

fn run_catch_up(options: &LoadOptions, replica_addr: &str) -> Result<Report, LoadError> {
    let mut primary = Connection::connect(&options.server, REPLY_TIMEOUT)?;
    let mut replica = Connection::connect(replica_addr, REPLY_TIMEOUT)?;
    let replica_start_lsn = catch_up::detached_lsn(&mut replica)?;
    if replica_start_lsn > 0 {
        // A node holding another cluster's log would be refused, and the wait would time out.
        let replid = |con: &mut Connection| -> Result<Option<String>, LoadError> {
            let info = client::info(con, "replication")?;
            Ok(info_field(&info, "master_replid").map(str::to_owned))
        };
        if replid(&mut primary)? != replid(&mut replica)? {
            return Err(LoadError::Options(format!(
                "{replica_addr} holds a log of another cluster; give it an empty directory"
            )));
        }
    }
    let primary_start_lsn = catch_up::replication_lsn(&mut primary, "master_repl_offset")?;
    let mut report = run_load(options)?;
    let target_lsn = catch_up::replication_lsn(&mut primary, "master_repl_offset")?;
    let (catch_up_elapsed, polls) =
        catch_up::attach_and_wait(&mut replica, &options.server, target_lsn)?;
    report.catch_up = Some(CatchUp {
        primary_start_lsn,
        target_lsn,
        replica_start_lsn,
        write_elapsed: report.elapsed,
        catch_up_elapsed,
        polls,
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_enforced() {
        assert!(LoadOptions::default().validate().is_ok());
        let bad = [
            LoadOptions {
                clients: 0,
                ..LoadOptions::default()
            },
            LoadOptions {
                pipeline: PIPELINE_MAX + 1,
                ..LoadOptions::default()
            },
            LoadOptions {
                read_ratio: 1.5,
                ..LoadOptions::default()
            },
            LoadOptions {
                read_ratio: f64::NAN,
                ..LoadOptions::default()
            },
            LoadOptions {
                duration: None,
                ..LoadOptions::default()
            },
            LoadOptions {
                catch_up: Some("127.0.0.1:1".into()),
                ..LoadOptions::default()
            },
            LoadOptions {
                catch_up: Some("127.0.0.1:1".into()),
                ops: Some(10),
                read_ratio: 0.5,
                ..LoadOptions::default()
            },
            LoadOptions {
                probe_interval: Duration::ZERO,
                ..LoadOptions::default()
            },
        ];
        for options in bad {
            assert!(
                matches!(options.validate(), Err(LoadError::Options(_))),
                "{options:?}"
            );
        }
    }
}
