//! Catch-up speed: how fast a replica that fell behind applies the log it missed, against how
//! fast the primary wrote that log. The node to measure starts detached (a standalone node, or
//! one sent `REPLICAOF NO ONE`); the primary takes a burst of writes at full speed; then the
//! node is attached with `REPLICAOF` and the clock runs until its `replica_applied_lsn` reaches
//! the primary's `master_repl_offset` (its durable LSN) as it stood after the burst.

use std::time::{Duration, Instant};

use super::client::{self, Connection, info_field};
use super::error::LoadError;

/// Longest wait for the replica to catch up.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_mins(10);
/// A replica whose applied LSN does not move for this long has stopped catching up (its link
/// is refused or broken); the measurement fails at once with the replica's last error rather
/// than waiting out [`CATCH_UP_TIMEOUT`].
pub const CATCH_UP_STALL: Duration = Duration::from_secs(30);
/// Interval of `INFO replication` polls of the replica while it catches up: short against any
/// catch-up worth measuring, long enough that answering costs the replica little.
pub const CATCH_UP_POLL: Duration = Duration::from_millis(1);

/// What a catch-up measurement found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatchUp {
    /// The primary's durable LSN before the burst.
    pub primary_start_lsn: u64,
    /// Its durable LSN after the burst: where the replica had to get to.
    pub target_lsn: u64,
    /// What the replica had applied before it was attached.
    pub replica_start_lsn: u64,
    /// How long the burst took on the primary.
    pub write_elapsed: Duration,
    /// From `REPLICAOF` to the replica's applied LSN reaching the target.
    pub catch_up_elapsed: Duration,
    /// `INFO` polls made while waiting.
    pub polls: u64,
}

impl CatchUp {
    /// Records the primary logged during the burst.
    #[must_use]
    pub fn written_records(&self) -> u64 {
        self.target_lsn - self.primary_start_lsn
    }

    /// Records the replica applied while catching up.
    #[must_use]
    pub fn applied_records(&self) -> u64 {
        self.target_lsn - self.replica_start_lsn
    }

    /// The primary's write rate during the burst, records per second.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    pub fn write_records_per_sec(&self) -> f64 {
        self.written_records() as f64 / self.write_elapsed.as_secs_f64().max(1e-9)
    }

    /// The replica's catch-up rate, records per second.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    pub fn catch_up_records_per_sec(&self) -> f64 {
        self.applied_records() as f64 / self.catch_up_elapsed.as_secs_f64().max(1e-9)
    }

    /// Catch-up rate over write rate (the target is at least 5).
    #[must_use]
    pub fn ratio(&self) -> f64 {
        self.catch_up_records_per_sec() / self.write_records_per_sec().max(1e-9)
    }
}

/// An unsigned `INFO replication` field of `con`.
///
/// # Errors
/// When `INFO` fails or the field is missing or not a number.
pub fn replication_lsn(con: &mut Connection, field: &'static str) -> Result<u64, LoadError> {
    let info = client::info(con, "replication")?;
    info_field(&info, field)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| LoadError::MissingInfoField {
            addr: con.addr().to_owned(),
            section: "replication",
            field,
        })
}

/// The LSN the detached node has applied; refuses a node that already follows a primary
/// (it would catch up during the burst, and there would be nothing to measure).
///
/// # Errors
/// When the node replicates already, or its `INFO` lacks the fields.
pub fn detached_lsn(replica: &mut Connection) -> Result<u64, LoadError> {
    let info = client::info(replica, "replication")?;
    if info_field(&info, "role") != Some("master") {
        return Err(LoadError::Options(format!(
            "{} already follows a primary; for --catch-up start it without --replica-of (or \
             send it REPLICAOF NO ONE) so it misses the writes",
            replica.addr()
        )));
    }
    // A detached node's own durable LSN is all it holds, so all it has applied.
    info_field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| LoadError::MissingInfoField {
            addr: replica.addr().to_owned(),
            section: "replication",
            field: "master_repl_offset",
        })
}

/// Attaches `replica` to `primary_addr` and waits until it applied `target_lsn`: the elapsed
/// time and the polls made.
///
/// # Errors
/// When `REPLICAOF` is refused, a connection fails, or the target is not reached within
/// [`CATCH_UP_TIMEOUT`].
pub fn attach_and_wait(
    replica: &mut Connection,
    primary_addr: &str,
    target_lsn: u64,
) -> Result<(Duration, u64), LoadError> {
    let attached = Instant::now();
    client::replicaof(replica, primary_addr)?;
    let mut polls = 0;
    let mut progress = (0, attached);
    loop {
        polls += 1;
        // Missing until the link has started: the node answers as a primary for a moment.
        let info = client::info(replica, "replication")?;
        let applied = info_field(&info, "replica_applied_lsn")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if applied >= target_lsn {
            return Ok((attached.elapsed(), polls));
        }
        let now = Instant::now();
        if applied > progress.0 {
            progress = (applied, now);
        }
        let stalled = now - progress.1 >= CATCH_UP_STALL;
        if stalled || now - attached >= CATCH_UP_TIMEOUT {
            return Err(LoadError::CatchUpTimeout {
                addr: replica.addr().to_owned(),
                applied,
                target: target_lsn,
                waited_secs: (now - attached).as_secs(),
                last_error: info_field(&info, "replica_last_error")
                    .unwrap_or("none")
                    .to_owned(),
            });
        }
        std::thread::sleep(CATCH_UP_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_ratio() {
        let c = CatchUp {
            primary_start_lsn: 10,
            target_lsn: 100_010,
            replica_start_lsn: 0,
            write_elapsed: Duration::from_secs(2),
            catch_up_elapsed: Duration::from_millis(250),
            polls: 200,
        };
        assert_eq!(c.written_records(), 100_000);
        assert_eq!(c.applied_records(), 100_010);
        assert!((c.write_records_per_sec() - 50_000.0).abs() < 1e-6);
        assert!((c.catch_up_records_per_sec() - 400_040.0).abs() < 1e-6);
        assert!((c.ratio() - 8.0008).abs() < 1e-9);
    }
}
