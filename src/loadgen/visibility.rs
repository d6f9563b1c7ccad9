//! Visibility lag: how long after the primary acknowledged a write a client of the replica can
//! read it. A prober thread writes a unique key on the primary every few milliseconds and, from
//! the moment the `+OK` arrives, spins `GET`s of that key on its own replica connection until
//! the value is there.

use std::time::{Duration, Instant};

use super::client::{self, Connection};
use super::error::LoadError;
use super::latency::Latencies;
use super::pacing::Schedule;
use super::workload::Limits;

/// A write not visible on the replica after this long is counted as a timeout (and recorded
/// as this lag), and the prober moves on.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the prober measured.
#[derive(Debug, Clone, Default)]
pub struct VisibilityStats {
    /// Lags, from the primary's `+OK` to the replica's first `GET` that returned the value.
    pub lag: Latencies,
    /// Probes made.
    pub probes: u64,
    /// Probes whose write did not become visible within [`VISIBILITY_TIMEOUT`].
    pub timeouts: u64,
    /// `GET`s sent to the replica, all probes together (each is one round trip of spinning).
    pub replica_gets: u64,
}

/// Probes every `interval` from `start` until `limits` say stop (its operation budget is not
/// touched: probes are not part of the load). `run_id` keeps keys unique across runs, so a
/// key left on the replica by an earlier run cannot look visible at once.
///
/// # Errors
/// When either connection fails or a reply is not what `SET` or `GET` can answer.
pub fn probe(
    primary: &mut Connection,
    replica: &mut Connection,
    interval: Duration,
    start: Instant,
    limits: &Limits<'_>,
    run_id: u64,
) -> Result<VisibilityStats, LoadError> {
    let schedule = Schedule::every(start, interval);
    let mut stats = VisibilityStats::default();
    for n in 0.. {
        let due = schedule.due(n).unwrap_or(start);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if limits.expired(Instant::now()) {
            break;
        }
        let key = format!("shiplog-load:visibility:{run_id:016x}:{n}");
        let value = n.to_string();
        client::set(primary, key.as_bytes(), value.as_bytes())?;
        let acknowledged = Instant::now();
        let lag = loop {
            stats.replica_gets += 1;
            if client::get_is(replica, key.as_bytes(), value.as_bytes())? {
                break acknowledged.elapsed();
            }
            if acknowledged.elapsed() >= VISIBILITY_TIMEOUT {
                stats.timeouts += 1;
                break VISIBILITY_TIMEOUT;
            }
        };
        // A probe that took longer than the interval held back the probes due meanwhile;
        // they would have seen the same stall, minus the time they were due later.
        stats.lag.record_sampled(lag, interval);
        stats.probes += 1;
    }
    Ok(stats)
}
