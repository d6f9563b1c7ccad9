//! What a run reports, as a table for people and as one JSON object for scripts. Latencies
//! are in microseconds in JSON and in milliseconds in the table.

use std::fmt::Write as _;
use std::time::Duration;

use super::LoadOptions;
use super::catch_up::CatchUp;
use super::latency::Summary;
use super::visibility::VisibilityStats;
use super::workload::OpStats;

/// One operation type's results.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct VisibilityReport {
    /// The replica probed.
    pub replica: String,
    /// Interval between probes.
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

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq)]
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

/// `s` as a JSON string literal, quoted and escaped (the tools print JSON by hand, without a
/// serializer dependency).
#[must_use]
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_summary(s: &Summary) -> String {
    format!(
        "{{\"count\":{},\"mean_us\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        s.count, s.mean_us, s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us
    )
}

fn json_op(op: &OpReport) -> String {
    format!(
        "{{\"ops_per_sec\":{:.1},\"errors\":{},\"misses\":{},\"latency\":{}}}",
        op.ops_per_sec,
        op.errors,
        op.misses,
        json_summary(&op.latency)
    )
}

fn json_or_null(value: Option<&str>) -> String {
    value.map_or_else(|| "null".to_owned(), json_string)
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

    /// One JSON object, on one line.
    #[must_use]
    pub fn to_json(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "{{\"server\":{},\"read_from\":{},\"clients\":{},\"pipeline\":{},\"value_bytes\":{},\"keys\":{},\"read_ratio\":{},\"rate_per_sec\":{},\"duration_secs\":{},\"ops_limit\":{},\"elapsed_secs\":{:.3},\"total_ops_per_sec\":{:.1},\"set\":{},\"get\":{}",
            json_string(&o.server),
            json_or_null(o.read_from.as_deref()),
            o.clients,
            o.pipeline,
            o.value_bytes,
            o.keys,
            o.read_ratio,
            o.rate_per_sec,
            o.duration
                .map_or_else(|| "null".to_owned(), |d| d.as_secs_f64().to_string()),
            o.ops.map_or_else(|| "null".to_owned(), |n| n.to_string()),
            self.elapsed.as_secs_f64(),
            self.total_ops_per_sec(),
            json_op(&self.set),
            json_op(&self.get),
        );
        out.push_str(",\"visibility\":");
        match &self.visibility {
            Some(v) => {
                let _ = write!(
                    out,
                    "{{\"replica\":{},\"interval_us\":{},\"probes\":{},\"timeouts\":{},\"gets_per_probe\":{:.2},\"lag\":{}}}",
                    json_string(&v.replica),
                    v.interval.as_micros(),
                    v.probes,
                    v.timeouts,
                    v.gets_per_probe,
                    json_summary(&v.lag)
                );
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"catch_up\":");
        match (&self.catch_up, &o.catch_up) {
            (Some(c), Some(replica)) => {
                let _ = write!(
                    out,
                    "{{\"replica\":{},\"primary_start_lsn\":{},\"target_lsn\":{},\"replica_start_lsn\":{},\"written_records\":{},\"write_secs\":{:.6},\"write_records_per_sec\":{:.1},\"applied_records\":{},\"catch_up_secs\":{:.6},\"catch_up_records_per_sec\":{:.1},\"ratio\":{:.3},\"polls\":{}}}",
                    json_string(replica),
                    c.primary_start_lsn,
                    c.target_lsn,
                    c.replica_start_lsn,
                    c.written_records(),
                    c.write_elapsed.as_secs_f64(),
                    c.write_records_per_sec(),
                    c.applied_records(),
                    c.catch_up_elapsed.as_secs_f64(),
                    c.catch_up_records_per_sec(),
                    c.ratio(),
                    c.polls
                );
            }
            _ => out.push_str("null"),
        }
        out.push('}');
        out
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
