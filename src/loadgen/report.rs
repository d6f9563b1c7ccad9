//! What a run reports, as a table for people and as one JSON object for scripts (`Report`
//! serializes to it). Latencies are in microseconds in JSON and in milliseconds in the table.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::LoadOptions;
use super::catch_up::CatchUp;
use super::latency::Summary;
use super::visibility::VisibilityStats;
use super::workload::OpStats;

/// One operation type's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpReport {
    /// Successful replies per second of the run.
    pub ops_per_sec: f64,
    /// Error replies.
    pub errors: u64,
    /// `GET`s of missing keys (counted in the latencies).
    pub misses: u64,
    /// Latency percentiles of the successful replies.
    pub latency: Summary,
}

impl OpReport {
    /// Rates over `elapsed`.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    pub fn new(stats: &OpStats, elapsed: Duration) -> Self {
        let latency = stats.latencies.summary();
        Self {
            ops_per_sec: latency.count as f64 / elapsed.as_secs_f64().max(1e-9),
            errors: stats.errors,
            misses: stats.misses,
            latency,
        }
    }
}

/// The visibility prober's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisibilityReport {
    /// The replica probed.
    pub replica: String,
    /// Interval between probes.
    #[serde(rename = "interval_us", serialize_with = "micros")]
    pub interval: Duration,
    /// Probes made.
    pub probes: u64,
    /// Probes not visible within the visibility timeout.
    pub timeouts: u64,
    /// Replica `GET`s per probe, on average: the spin's cost.
    pub gets_per_probe: f64,
    /// Lag percentiles (corrected for probes held back by a slow one).
    pub lag: Summary,
}

impl VisibilityReport {
    /// From the prober's stats.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "an average for display")]
    pub fn new(replica: &str, interval: Duration, stats: &VisibilityStats) -> Self {
        Self {
            replica: replica.to_owned(),
            interval,
            probes: stats.probes,
            timeouts: stats.timeouts,
            gets_per_probe: stats.replica_gets as f64 / stats.probes.max(1) as f64,
            lag: stats.lag.summary(),
        }
    }
}

/// Everything a run measured. It serializes to one JSON object: the options, the figures,
/// and the catch-up's derived rates (`docs/benchmarks.md` and `benches/*.sh` read its fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "ReportJson")]
pub struct Report {
    /// What was asked for.
    pub options: LoadOptions,
    /// From the first operation due to the last reply.
    pub elapsed: Duration,
    /// `SET`s.
    pub set: OpReport,
    /// `GET`s.
    pub get: OpReport,
    /// With `--visibility`.
    pub visibility: Option<VisibilityReport>,
    /// With `--catch-up`.
    pub catch_up: Option<CatchUp>,
}

fn micros<S: Serializer>(interval: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    interval.as_micros().serialize(serializer)
}

/// The JSON form of a [`Report`], field by field.
#[derive(Serialize)]
struct ReportJson {
    server: String,
    read_from: Option<String>,
    clients: usize,
    pipeline: usize,
    value_bytes: usize,
    keys: u64,
    read_ratio: f64,
    rate_per_sec: u64,
    duration_secs: Option<f64>,
    ops_limit: Option<u64>,
    elapsed_secs: f64,
    total_ops_per_sec: f64,
    set: OpReport,
    get: OpReport,
    visibility: Option<VisibilityReport>,
    catch_up: Option<CatchUpJson>,
}

/// The JSON form of a [`CatchUp`], with its rates.
#[derive(Serialize)]
struct CatchUpJson {
    replica: String,
    primary_start_lsn: u64,
    target_lsn: u64,
    replica_start_lsn: u64,
    written_records: u64,
    write_secs: f64,
    write_records_per_sec: f64,
    applied_records: u64,
    catch_up_secs: f64,
    catch_up_records_per_sec: f64,
    ratio: f64,
    polls: u64,
}

impl CatchUpJson {
    fn new(replica: String, c: &CatchUp) -> Self {
        Self {
            replica,
            primary_start_lsn: c.primary_start_lsn,
            target_lsn: c.target_lsn,
            replica_start_lsn: c.replica_start_lsn,
            written_records: c.written_records(),
            write_secs: c.write_elapsed.as_secs_f64(),
            write_records_per_sec: c.write_records_per_sec(),
            applied_records: c.applied_records(),
            catch_up_secs: c.catch_up_elapsed.as_secs_f64(),
            catch_up_records_per_sec: c.catch_up_records_per_sec(),
            ratio: c.ratio(),
            polls: c.polls,
        }
    }
}

impl From<Report> for ReportJson {
    fn from(report: Report) -> Self {
        let total_ops_per_sec = report.total_ops_per_sec();
        let o = report.options;
        Self {
            server: o.server,
            read_from: o.read_from,
            clients: o.clients,
            pipeline: o.pipeline,
            value_bytes: o.value_bytes,
            keys: o.keys,
            read_ratio: o.read_ratio,
            rate_per_sec: o.rate_per_sec,
            duration_secs: o.duration.map(|d| d.as_secs_f64()),
            ops_limit: o.ops,
            elapsed_secs: report.elapsed.as_secs_f64(),
            total_ops_per_sec,
            set: report.set,
            get: report.get,
            visibility: report.visibility,
            // The replica's name is the option's: a report without it has no catch-up.
            catch_up: report
                .catch_up
                .zip(o.catch_up)
                .map(|(c, replica)| CatchUpJson::new(replica, &c)),
        }
    }
}

fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

impl Report {
    /// Successful operations per second, all types.
    #[must_use]
    pub fn total_ops_per_sec(&self) -> f64 {
        self.set.ops_per_sec + self.get.ops_per_sec
    }

    /// A table for a terminal.
    #[must_use]
    pub fn to_text(&self) -> String {
        let o = &self.options;
        let mut out = String::new();
        let rate = if o.rate_per_sec == 0 {
            "as fast as possible".to_owned()
        } else {
            format!("{} ops/s target", o.rate_per_sec)
        };
        let _ = writeln!(
            out,
            "{}: {} clients x pipeline {}, {}-byte values, {} keys, {:.0}% reads{}, {rate}, {:.2} s",
            o.server,
            o.clients,
            o.pipeline,
            o.value_bytes,
            o.keys,
            o.read_ratio * 100.0,
            o.read_from
                .as_deref()
                .map_or_else(String::new, |r| format!(" from {r}")),
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "{:<4} {:>12} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  (latency ms)",
            "op", "ops/s", "count", "errors", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, op) in [("SET", &self.set), ("GET", &self.get)] {
            let l = &op.latency;
            if l.count == 0 && op.errors == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "{name:<4} {:>12.1} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                op.ops_per_sec,
                l.count,
                op.errors,
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            );
            if op.misses > 0 {
                let _ = writeln!(out, "     ({} GETs found no key)", op.misses);
            }
        }
        if let Some(v) = &self.visibility {
            let l = &v.lag;
            let _ = writeln!(
                out,
                "visibility lag on {} (ms; {} probes every {} ms, {:.1} GETs each, {} timeouts): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                v.replica,
                v.probes,
                v.interval.as_millis(),
                v.gets_per_probe,
                v.timeouts,
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            );
        }
        if let Some(c) = &self.catch_up {
            let _ = writeln!(
                out,
                "catch-up: the primary wrote {} records in {:.3} s ({:.0} records/s); the replica \
                 applied {} in {:.3} s ({:.0} records/s): {:.2}x the primary's write rate",
                c.written_records(),
                c.write_elapsed.as_secs_f64(),
                c.write_records_per_sec(),
                c.applied_records(),
                c.catch_up_elapsed.as_secs_f64(),
                c.catch_up_records_per_sec(),
                c.ratio()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let op = OpReport {
            ops_per_sec: 10.0,
            errors: 1,
            misses: 2,
            latency: Summary::default(),
        };
        Report {
            options: LoadOptions {
                duration: None,
                ops: Some(3000),
                catch_up: Some("r:2".to_owned()),
                ..LoadOptions::default()
            },
            elapsed: Duration::from_millis(1500),
            set: op.clone(),
            get: op,
            visibility: Some(VisibilityReport {
                replica: "r:1".to_owned(),
                interval: Duration::from_millis(5),
                probes: 7,
                timeouts: 0,
                gets_per_probe: 1.5,
                lag: Summary::default(),
            }),
            catch_up: Some(CatchUp {
                primary_start_lsn: 10,
                target_lsn: 110,
                replica_start_lsn: 0,
                write_elapsed: Duration::from_secs(1),
                catch_up_elapsed: Duration::from_secs(2),
                polls: 4,
            }),
        }
    }

    #[test]
    fn the_json_report_has_the_fields_scripts_read() {
        let json = serde_json::to_value(report()).unwrap_or_default();
        assert_eq!(json["server"], "127.0.0.1:6379", "{json}");
        assert!(json["read_from"].is_null(), "{json}");
        assert!(json["duration_secs"].is_null(), "{json}");
        assert_eq!(json["ops_limit"], 3000, "{json}");
        assert_eq!(json["elapsed_secs"], 1.5, "{json}");
        assert_eq!(json["total_ops_per_sec"], 20.0, "{json}");
        assert_eq!(json["set"]["misses"], 2, "{json}");
        assert_eq!(json["get"]["latency"]["p999_us"], 0, "{json}");
        assert_eq!(json["visibility"]["interval_us"], 5000, "{json}");
        assert_eq!(json["visibility"]["gets_per_probe"], 1.5, "{json}");
        let c = &json["catch_up"];
        assert_eq!(c["replica"], "r:2", "{json}");
        assert_eq!(c["written_records"], 100, "{json}");
        assert_eq!(c["applied_records"], 110, "{json}");
        assert_eq!(c["catch_up_secs"], 2.0, "{json}");
        assert_eq!(c["ratio"], 0.55, "{json}");
        assert_eq!(c["polls"], 4, "{json}");
    }

    #[test]
    fn a_report_without_a_catch_up_replica_has_no_catch_up() {
        let mut report = report();
        report.options.catch_up = None;
        report.visibility = None;
        let json = serde_json::to_value(report).unwrap_or_default();
        assert!(json["catch_up"].is_null(), "{json}");
        assert!(json["visibility"].is_null(), "{json}");
    }
}
