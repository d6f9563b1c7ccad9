//! `INFO`: Redis' sections and field names where a field means the same thing, shiplog's own
//! fields beside them.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::session::Session;
use super::shared::Shared;
use crate::wal::Durability;

/// The Redis version whose commands and replies shiplog follows (clients check it).
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

const DEFAULT_SECTIONS: [&str; 6] = [
    "server",
    "clients",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];
const ALL_SECTIONS: [&str; 7] = [
    "server",
    "clients",
    "persistence",
    "stats",
    "replication",
    "commandstats",
    "keyspace",
];

/// The `INFO` text for the requested sections (none: the default ones).
pub fn render(shared: &Shared, session: &Session, requested: &[&[u8]]) -> String {
    let wanted: Vec<String> = requested
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let sections: Vec<&str> = if wanted.is_empty() || wanted.iter().any(|w| w == "default") {
        DEFAULT_SECTIONS.to_vec()
    } else if wanted.iter().any(|w| w == "all" || w == "everything") {
        ALL_SECTIONS.to_vec()
    } else {
        ALL_SECTIONS
            .iter()
            .copied()
            .filter(|s| wanted.iter().any(|w| w == s))
            .collect()
    };
    let mut out = String::new();
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let body = match *section {
            "server" => server(shared),
            "clients" => clients(shared, session),
            "persistence" => persistence(shared),
            "stats" => stats(shared),
            "replication" => replication(shared),
            "commandstats" => commandstats(shared),
            _ => keyspace(shared),
        };
        let title = match *section {
            "commandstats" => "Commandstats".to_owned(),
            other => {
                let mut t = other.to_owned();
                t[..1].make_ascii_uppercase();
                t
            }
        };
        let _ = write!(out, "# {title}\r\n{body}");
    }
    out
}

fn lines(fields: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        let _ = write!(out, "{name}:{value}\r\n");
    }
    out
}

fn server(shared: &Shared) -> String {
    let uptime = shared.started.elapsed().as_secs();
    lines(&[
        ("redis_version", REDIS_COMPAT_VERSION.to_owned()),
        ("shiplog_version", env!("CARGO_PKG_VERSION").to_owned()),
        ("redis_mode", "standalone".to_owned()),
        ("os", std::env::consts::OS.to_owned()),
        ("arch_bits", (usize::BITS).to_string()),
        ("multiplexing_api", "threads".to_owned()),
        ("process_id", std::process::id().to_string()),
        ("tcp_port", shared.listen.port().to_string()),
        ("uptime_in_seconds", uptime.to_string()),
        ("uptime_in_days", (uptime / 86_400).to_string()),
        (
            "executable",
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        (
            "config_file",
            shared
                .options
                .config_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        ("data_dir", shared.options.dir.display().to_string()),
    ])
}

fn clients(shared: &Shared, session: &Session) -> String {
    lines(&[
        ("connected_clients", shared.client_count().to_string()),
        ("maxclients", shared.options.max_clients.to_string()),
        ("blocked_clients", "0".to_owned()),
        (
            "client_uncommitted_lsn",
            session.uncommitted.last_lsn().unwrap_or(0).to_string(),
        ),
        ("client_last_write_lsn", session.last_write_lsn.to_string()),
        (
            "client_ack_level",
            session
                .ack_level
                .unwrap_or(shared.options.sync.level)
                .to_string(),
        ),
    ])
}

fn persistence(shared: &Shared) -> String {
    let db = shared.keyspace.db();
    let stats = db.stats();
    let wal = db.wal().stats();
    let durability = match shared.keyspace.durability() {
        Durability::Sync => "sync",
        Durability::Buffered | Durability::None => "buffered",
    };
    lines(&[
        ("loading", "0".to_owned()),
        ("durability", durability.to_owned()),
        ("aof_enabled", "1".to_owned()),
        // Redis' field: `err` once a failed write or `fdatasync` poisoned the log, which then
        // refuses every write until the process restarts (`shiplog status` exits 1 on it).
        (
            "aof_last_write_status",
            if db.wal().poisoned().is_some() {
                "err"
            } else {
                "ok"
            }
            .to_owned(),
        ),
        (
            "rdb_last_save_time",
            shared.last_save.load(Ordering::Relaxed).to_string(),
        ),
        (
            "rdb_bgsave_in_progress",
            u8::from(shared.checkpoint_running.load(Ordering::Relaxed)).to_string(),
        ),
        ("first_lsn", wal.first_lsn.to_string()),
        ("written_lsn", wal.written_lsn.to_string()),
        ("durable_lsn", wal.durable_lsn.to_string()),
        ("applied_lsn", stats.last_lsn.to_string()),
        ("segments", wal.segments.to_string()),
        // 0 on a replica, and on a primary whose writes wait for replicas while none holds a
        // slot: its log grows until one does.
        (
            "compaction_hold_lsn",
            match db.compaction_hold() {
                u64::MAX => "none".to_owned(),
                lsn => lsn.to_string(),
            },
        ),
        ("disk_bytes", stats.disk_bytes.to_string()),
        ("log_bytes_written", wal.bytes_written.to_string()),
        ("fsyncs", wal.syncs.to_string()),
    ])
}

fn stats(shared: &Shared) -> String {
    let m = &shared.metrics;
    lines(&[
        (
            "total_connections_received",
            m.connections_received.load(Ordering::Relaxed).to_string(),
        ),
        ("total_commands_processed", m.total_calls().to_string()),
        (
            "total_net_input_bytes",
            m.net_input_bytes.load(Ordering::Relaxed).to_string(),
        ),
        (
            "total_net_output_bytes",
            m.net_output_bytes.load(Ordering::Relaxed).to_string(),
        ),
        (
            "rejected_connections",
            m.connections_rejected.load(Ordering::Relaxed).to_string(),
        ),
        ("total_error_replies", m.total_errors().to_string()),
        (
            "protocol_errors",
            m.protocol_errors.load(Ordering::Relaxed).to_string(),
        ),
        (
            "keyspace_hits",
            shared.stats.hits.load(Ordering::Relaxed).to_string(),
        ),
        (
            "keyspace_misses",
            shared.stats.misses.load(Ordering::Relaxed).to_string(),
        ),
        ("expired_keys", "0".to_owned()),
        ("evicted_keys", "0".to_owned()),
    ])
}

fn replication(shared: &Shared) -> String {
    let mut text = shared.replication.info();
    if !shared.replication.is_read_only() {
        text.push_str(&shared.acks.info(&shared.options.sync));
    }
    text
}

fn commandstats(shared: &Shared) -> String {
    let mut out = String::new();
    for (i, name) in shared.metrics.names().iter().enumerate() {
        let (calls, micros) = shared.metrics.calls(i);
        if calls == 0 {
            continue;
        }
        #[allow(clippy::cast_precision_loss, reason = "an average for display")]
        let per_call = micros as f64 / calls as f64;
        let _ = write!(
            out,
            "cmdstat_{}:calls={calls},usec={micros},usec_per_call={per_call:.2},failed_calls={}\r\n",
            name,
            shared.metrics.errors(i)
        );
    }
    out
}

fn keyspace(shared: &Shared) -> String {
    let keys = shared.keyspace.db().len();
    if keys == 0 {
        return String::new();
    }
    format!("db0:keys={keys},expires=0,avg_ttl=0\r\n")
}
