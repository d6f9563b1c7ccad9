//! When operations fall due, and where their latency is measured from.
//!
//! A paced run sends on a fixed schedule decided before it starts, and measures each
//! operation's latency from the time it was *due*, not from when it was actually sent. A
//! server that stalls for 100 ms then holds back every operation due during the stall, and
//! each of them is charged the part of the stall it waited; a load generator that measured
//! from the send (or waited for a reply before scheduling the next request) would record one
//! slow operation and hide the rest ("coordinated omission").

use std::time::{Duration, Instant};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The due times of one sender's operations: `start + (offset + n * step) / units_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    start: Instant,
    /// `None`: unpaced, every operation is due at once (as fast as the window allows).
    pace: Option<Pace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pace {
    offset: u128,
    step: u128,
    units_per_sec: u128,
}

impl Schedule {
    /// No pacing: operations go out as fast as replies come back.
    #[must_use]
    pub fn unpaced(start: Instant) -> Self {
        Self { start, pace: None }
    }

    /// Client `client` of `clients` sharing a total of `rate_per_sec` operations per second
    /// (0: unpaced). Each client sends every `clients / rate` seconds, and the clients are
    /// staggered by `1 / rate`, so the total is evenly spaced rather than in bursts of
    /// `clients` sends at once.
    ///
    /// # Panics
    /// When `client` is not below `clients`.
    #[must_use]
    pub fn shared(start: Instant, client: usize, clients: usize, rate_per_sec: u64) -> Self {
        assert!(client < clients, "client {client} of {clients}");
        if rate_per_sec == 0 {
            return Self::unpaced(start);
        }
        Self {
            start,
            pace: Some(Pace {
                offset: client as u128,
                step: clients as u128,
                units_per_sec: u128::from(rate_per_sec),
            }),
        }
    }

    /// One operation every `interval`, the first at `start`.
    ///
    /// # Panics
    /// When `interval` is zero.
    #[must_use]
    pub fn every(start: Instant, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "a zero interval is not a schedule");
        Self {
            start,
            pace: Some(Pace {
                offset: 0,
                step: interval.as_nanos(),
                units_per_sec: NANOS_PER_SEC,
            }),
        }
    }

    /// When operation `n` (from 0) is due; `None` when unpaced.
    #[must_use]
    pub fn due(&self, n: u64) -> Option<Instant> {
        let pace = self.pace?;
        // Computed from the start every time, in integers: no drift accumulates over a long
        // run, however the rate divides a second.
        let nanos = (pace.offset + u128::from(n) * pace.step) * NANOS_PER_SEC / pace.units_per_sec;
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        Some(self.start + Duration::from_nanos(nanos))
    }
}

/// Where an operation's latency is measured from: its due time when paced (a late send is
/// the system's delay, not a gap in the record), else the moment it was sent.
#[must_use]
pub fn latency_origin(due: Option<Instant>, sent: Instant) -> Instant {
    due.map_or(sent, |due| due.min(sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(schedule: &Schedule, start: Instant, n: u64) -> Vec<u128> {
        (0..n)
            .map(|i| {
                schedule
                    .due(i)
                    .map_or(u128::MAX, |t| t.duration_since(start).as_micros())
            })
            .collect()
    }

    #[test]
    fn clients_share_the_rate_evenly_and_staggered() {
        let start = Instant::now();
        // 4 clients at 1000/s in total: each every 4 ms, client i starting at i ms.
        let all: Vec<Vec<u128>> = (0..4)
            .map(|c| offsets(&Schedule::shared(start, c, 4, 1000), start, 3))
            .collect();
        assert_eq!(all[0], [0, 4000, 8000]);
        assert_eq!(all[1], [1000, 5000, 9000]);
        assert_eq!(all[3], [3000, 7000, 11000]);
        // Merged, the sends are exactly 1 ms apart.
        let mut merged: Vec<u128> = all.concat();
        merged.sort_unstable();
        assert!(merged.windows(2).all(|w| w[1] - w[0] == 1000), "{merged:?}");
    }

    #[test]
    fn a_rate_that_does_not_divide_a_second_does_not_drift() {
        let start = Instant::now();
        let schedule = Schedule::shared(start, 0, 1, 3);
        let due = schedule.due(3_000_000).unwrap().duration_since(start);
        assert_eq!(due, Duration::from_secs(1_000_000), "3 per second, exactly");
        assert_eq!(
            schedule.due(1).unwrap().duration_since(start).as_nanos(),
            333_333_333
        );
    }

    #[test]
    fn unpaced_operations_have_no_due_time() {
        let start = Instant::now();
        assert_eq!(Schedule::shared(start, 2, 3, 0).due(5), None);
        assert_eq!(Schedule::unpaced(start).due(0), None);
    }

    #[test]
    fn fixed_intervals_count_from_the_start() {
        let start = Instant::now();
        let schedule = Schedule::every(start, Duration::from_millis(5));
        assert_eq!(offsets(&schedule, start, 3), [0, 5000, 10000]);
    }

    #[test]
    fn a_late_send_is_charged_from_its_due_time() {
        let due = Instant::now();
        let sent = due + Duration::from_millis(30);
        let done = sent + Duration::from_millis(1);
        let origin = latency_origin(Some(due), sent);
        assert_eq!(done - origin, Duration::from_millis(31), "the wait counts");
        assert_eq!(latency_origin(None, sent), sent, "unpaced: from the send");
        // Sent before it was due (never done, but the latency must not be negative).
        assert_eq!(latency_origin(Some(sent), due), due);
    }
}
