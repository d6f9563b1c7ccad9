//! Per-command counters and latency histograms, for `INFO` and the Prometheus endpoint
//! (`prometheus.rs`), which renders them with the rest of the server's state.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in microseconds (the last is +Inf).
const LATENCY_BOUNDS_US: [u64; 14] = [
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    100_000,
    1_000_000,
    u64::MAX,
];

/// Per-command call counts and latency histograms; lock-free, updated on every command.
#[derive(Debug)]
pub struct Metrics {
    /// The command of each index, as the table lists them.
    names: Box<[&'static str]>,
    calls: Box<[AtomicU64]>,
    errors: Box<[AtomicU64]>,
    latency_sum_us: Box<[AtomicU64]>,
    /// `names.len() * LATENCY_BOUNDS_US.len()` cumulative-later buckets.
    latency: Box<[AtomicU64]>,
    /// Connections accepted since start.
    pub connections_received: AtomicU64,
    /// Connections refused because `max-clients` was reached.
    pub connections_rejected: AtomicU64,
    /// Connections closed for a protocol error or a broken limit.
    pub protocol_errors: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
}

fn counters(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Metrics {
    /// Counters for the commands named in `names` (in command-table order), all zero.
    #[must_use]
    pub fn new(names: &[&'static str]) -> Self {
        let commands = names.len();
        Self {
            names: names.into(),
            calls: counters(commands),
            errors: counters(commands),
            latency_sum_us: counters(commands),
            latency: counters(commands * LATENCY_BOUNDS_US.len()),
            connections_received: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
        }
    }

    /// The names of the commands counted, by index.
    #[must_use]
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Records one call of command number `command` (an index into the command table).
    pub fn record(&self, command: usize, elapsed: Duration, failed: bool) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.calls[command].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors[command].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_us[command].fetch_add(micros, Ordering::Relaxed);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len() - 1);
        self.latency[command * LATENCY_BOUNDS_US.len() + bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls of command number `command` so far, and the total time they took (µs).
    #[must_use]
    pub fn calls(&self, command: usize) -> (u64, u64) {
        (
            self.calls[command].load(Ordering::Relaxed),
            self.latency_sum_us[command].load(Ordering::Relaxed),
        )
    }

    /// Calls of command number `command` answered with an error.
    #[must_use]
    pub fn errors(&self, command: usize) -> u64 {
        self.errors[command].load(Ordering::Relaxed)
    }

    /// Every call answered with an error so far.
    #[must_use]
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Every command call so far.
    #[must_use]
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Microseconds as decimal seconds, exactly.
pub(super) fn seconds(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// A counter family with one series per command that was ever counted.
fn per_command(out: &mut String, names: &[&str], name: &str, help: &str, counters: &[AtomicU64]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (command, counter) in names.iter().zip(counters) {
        let value = counter.load(Ordering::Relaxed);
        if value > 0 {
            let _ = writeln!(out, "{name}{{cmd=\"{command}\"}} {value}");
        }
    }
}

/// The per-command series in the Prometheus text exposition format.
#[must_use]
pub fn render_commands(metrics: &Metrics) -> String {
    let names = &metrics.names;
    let mut out = String::new();
    per_command(
        &mut out,
        names,
        "shiplog_commands_total",
        "Commands executed, by command.",
        &metrics.calls,
    );
    per_command(
        &mut out,
        names,
        "shiplog_command_errors_total",
        "Commands answered with an error, by command.",
        &metrics.errors,
    );
    let _ = writeln!(
        out,
        "# HELP shiplog_command_duration_seconds Time from parsed request to durable reply, by command.\n# TYPE shiplog_command_duration_seconds histogram"
    );
    for (i, command) in names.iter().enumerate() {
        let calls = metrics.calls[i].load(Ordering::Relaxed);
        if calls == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (b, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
            cumulative += metrics.latency[i * LATENCY_BOUNDS_US.len() + b].load(Ordering::Relaxed);
            let le = if *bound == u64::MAX {
                "+Inf".to_owned()
            } else {
                seconds(*bound)
            };
            let _ = writeln!(
                out,
                "shiplog_command_duration_seconds_bucket{{cmd=\"{command}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = seconds(metrics.latency_sum_us[i].load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "shiplog_command_duration_seconds_sum{{cmd=\"{command}\"}} {sum}\nshiplog_command_duration_seconds_count{{cmd=\"{command}\"}} {cumulative}"
        );
    }
    out
}
