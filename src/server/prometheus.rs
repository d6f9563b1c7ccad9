//! The Prometheus endpoint: every metric of the server in the text exposition format, and the
//! tiny HTTP server that serves it.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::metrics::{render_commands, seconds};
use super::replication::ReplicationSnapshot;
use super::shared::Shared;
use crate::format::Lsn;
use crate::format::slots::Slot;
use crate::repl::status::{LinkProgress, LinkState, PeerProgress};

/// Largest HTTP request head the endpoint reads.
const HTTP_REQUEST_MAX_BYTES: usize = 8 << 10;

/// Renders every metric in the Prometheus text exposition format.
#[must_use]
pub fn render(shared: &Shared) -> String {
    let mut out = render_commands(&shared.metrics);
    render_store(shared, &mut out);
    render_replication(shared, &mut out);
    shared.acks.render_metrics(&mut out);
    out
}

fn render_store(shared: &Shared, out: &mut String) {
    let metrics = &shared.metrics;
    let db = shared.keyspace.db();
    let wal = db.wal().stats();
    let stats = db.stats();
    let mut scalar = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    scalar(
        "shiplog_log_bytes_written_total",
        "counter",
        "Bytes of log records written since start.",
        wal.bytes_written,
    );
    scalar(
        "shiplog_fsyncs_total",
        "counter",
        "fdatasync calls made by group commit since start.",
        wal.syncs,
    );
    scalar(
        "shiplog_keys",
        "gauge",
        "Keys with a value.",
        stats.live_keys,
    );
    scalar(
        "shiplog_disk_bytes",
        "gauge",
        "Bytes of segment files on disk.",
        stats.disk_bytes,
    );
    scalar(
        "shiplog_durable_lsn",
        "gauge",
        "Last LSN on stable storage.",
        stats.durable_lsn,
    );
    scalar(
        "shiplog_connected_clients",
        "gauge",
        "Client connections open now.",
        shared.client_count() as u64,
    );
    scalar(
        "shiplog_connections_received_total",
        "counter",
        "Client connections accepted since start.",
        metrics.connections_received.load(Ordering::Relaxed),
    );
    scalar(
        "shiplog_connections_rejected_total",
        "counter",
        "Connections refused because max-clients was reached.",
        metrics.connections_rejected.load(Ordering::Relaxed),
    );
    scalar(
        "shiplog_protocol_errors_total",
        "counter",
        "Connections closed for a protocol error or a broken limit.",
        metrics.protocol_errors.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP shiplog_group_commit_records Records made durable by one group-commit fdatasync.\n# TYPE shiplog_group_commit_records histogram"
    );
    let mut cumulative = 0;
    for (i, count) in wal.records_per_sync.iter().enumerate() {
        cumulative += count;
        let le = if i + 1 == wal.records_per_sync.len() {
            "+Inf".to_owned()
        } else {
            (1u64 << i).to_string()
        };
        let _ = writeln!(
            out,
            "shiplog_group_commit_records_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "shiplog_group_commit_records_count {cumulative}\nshiplog_group_commit_records_sum {}",
        wal.records_synced
    );
}

/// A label value with the characters the text format escapes escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A gauge family: HELP and TYPE, then one series per `(labels, value)` (none is valid).
fn gauges(out: &mut String, name: &str, help: &str, series: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in series {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Replication in numbers, as `INFO replication` shows it: on a primary each connected
/// replica, on a replica its link. Retention slots show on both, since a node that was a
/// primary keeps its slots (and they keep holding compaction) after it becomes a replica.
fn render_replication(shared: &Shared, out: &mut String) {
    let db = shared.keyspace.db();
    // Read before the replicas' progress, as `INFO` does: records made durable while this
    // renders do not count as lag.
    let durable = db.wal().durable_lsn();
    let snapshot = shared.replication.overview();
    // 0 on a replica, which ships to no one (cascading is not supported).
    let _ = writeln!(
        out,
        "# HELP shiplog_connected_replicas Replicas shipped to now.\n# TYPE shiplog_connected_replicas gauge\nshiplog_connected_replicas {}",
        snapshot.replicas.len()
    );
    match &snapshot.link {
        None => render_replicas(out, &snapshot.replicas, durable),
        Some((_, link)) => {
            render_link(shared, out, link);
            render_bootstrap(out, link);
        }
    }
    render_slots(out, &snapshot);
}

/// A primary's connected replicas, one series each, labelled by replica id and the address it
/// serves clients on (its IP and listen port: stable across its reconnections, unlike the
/// port it connected from).
fn render_replicas(out: &mut String, replicas: &[(SocketAddr, PeerProgress)], durable: Lsn) {
    let labels: Vec<String> = replicas
        .iter()
        .map(|(addr, p)| {
            let serves = SocketAddr::new(addr.ip(), p.listen_port);
            format!(
                "replica_id=\"{:032x}\",addr=\"{}\"",
                p.replica_id,
                label_value(&serves.to_string())
            )
        })
        .collect();
    let family = |value: &dyn Fn(&PeerProgress) -> String| -> Vec<(String, String)> {
        labels
            .iter()
            .zip(replicas)
            .map(|(l, (_, p))| (l.clone(), value(p)))
            .collect()
    };
    // As in `INFO`: a lag time is measured when an acknowledgement moves, so once a replica
    // has caught up the last measurement is stale and the lag is 0.
    let lag = |p: &PeerProgress, micros: u64| {
        if p.applied >= durable {
            seconds(0)
        } else {
            seconds(micros)
        }
    };
    for (name, help, series) in [
        (
            "shiplog_connected_replica_write_lsn",
            "Last LSN a replica wrote (not yet durable on it).",
            family(&|p| p.received.to_string()),
        ),
        (
            "shiplog_connected_replica_flush_lsn",
            "Last LSN durable on a replica.",
            family(&|p| p.durable.to_string()),
        ),
        (
            "shiplog_connected_replica_replay_lsn",
            "Last LSN visible to a replica's readers.",
            family(&|p| p.applied.to_string()),
        ),
        (
            "shiplog_connected_replica_lag_lsns",
            "This primary's durable LSN minus a replica's replay LSN.",
            family(&|p| durable.saturating_sub(p.applied).to_string()),
        ),
        (
            "shiplog_connected_replica_write_lag_seconds",
            "Time from shipping a record to a replica writing it (0 once caught up).",
            family(&|p| lag(p, p.write_lag_micros)),
        ),
        (
            "shiplog_connected_replica_flush_lag_seconds",
            "Time from shipping a record to it being durable on a replica (0 once caught up).",
            family(&|p| lag(p, p.flush_lag_micros)),
        ),
        (
            "shiplog_connected_replica_replay_lag_seconds",
            "Time from shipping a record to a replica's readers seeing it (0 once caught up).",
            family(&|p| lag(p, p.replay_lag_micros)),
        ),
    ] {
        gauges(out, name, help, &series);
    }
}

/// A replica's bootstrap from its primary's snapshot.
fn render_bootstrap(out: &mut String, link: &LinkProgress) {
    let flag = |on: bool| u64::from(on);
    for (name, kind, help, value) in [
        (
            "shiplog_replica_bootstrap_in_progress",
            "gauge",
            "1 while this replica receives or installs its primary's snapshot, else 0.",
            flag(link.bootstrap.is_some()).to_string(),
        ),
        (
            "shiplog_replica_bootstrap_received_bytes",
            "gauge",
            "Bytes of the snapshot being received held here (0 when no bootstrap is under way).",
            link.bootstrap.map_or(0, |b| b.received).to_string(),
        ),
        (
            "shiplog_replica_bootstrap_total_bytes",
            "gauge",
            "Bytes of the snapshot being received (0 when no bootstrap is under way).",
            link.bootstrap.map_or(0, |b| b.file_bytes).to_string(),
        ),
        (
            "shiplog_replica_bootstraps_total",
            "counter",
            "Bootstraps from the primary's snapshot completed since the link started.",
            link.bootstraps.to_string(),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// A replica's link to its primary, and how far behind it is.
fn render_link(shared: &Shared, out: &mut String, link: &LinkProgress) {
    let db = shared.keyspace.db();
    let wal = db.wal();
    let applied = db.applied_lsn();
    let flag = |on: bool| u64::from(on);
    let lag_micros = link.behind_since.map_or(0, |since| {
        u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
    });
    let mut scalar = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    for (name, kind, help, value) in [
        (
            "shiplog_replica_received_lsn",
            "gauge",
            "Last LSN received from the primary and written (not yet durable).",
            wal.written_lsn().to_string(),
        ),
        (
            "shiplog_replica_durable_lsn",
            "gauge",
            "Last LSN received from the primary and durable here.",
            wal.durable_lsn().to_string(),
        ),
        (
            "shiplog_replica_applied_lsn",
            "gauge",
            "Last LSN visible to this replica's readers.",
            applied.to_string(),
        ),
        (
            "shiplog_primary_durable_lsn",
            "gauge",
            "The primary's durable LSN, from its latest heartbeat.",
            link.primary_durable.to_string(),
        ),
        (
            "shiplog_replica_lag_lsns",
            "gauge",
            "The primary's durable LSN minus this replica's applied LSN.",
            link.primary_durable.saturating_sub(applied).to_string(),
        ),
        (
            "shiplog_replica_lag_seconds",
            "gauge",
            "How long this replica has been behind the primary's durable LSN (0 when caught up).",
            seconds(lag_micros),
        ),
        (
            "shiplog_primary_link_up",
            "gauge",
            "1 while the link to the primary is receiving the log, else 0.",
            flag(link.state == LinkState::Connected).to_string(),
        ),
        (
            "shiplog_replica_sessions_total",
            "counter",
            "Shipping sessions started with the primary (handshakes accepted).",
            link.sessions.to_string(),
        ),
        (
            "shiplog_replica_digest_mismatch",
            "gauge",
            "1 if the last log digest comparison with the primary failed, else 0.",
            flag(matches!(link.digest_checked, Some((_, false)))).to_string(),
        ),
        (
            "shiplog_replica_diverged",
            "gauge",
            "1 if this replica's log diverged from the primary's and the link stopped, else 0.",
            flag(link.diverged.is_some()).to_string(),
        ),
    ] {
        scalar(name, kind, help, value);
    }
}

/// Retention slots, labelled by replica id.
fn render_slots(out: &mut String, snapshot: &ReplicationSnapshot) {
    let label = |slot: &Slot| format!("replica_id=\"{:032x}\"", slot.replica_id);
    let lsns: Vec<(String, String)> = snapshot
        .slots
        .iter()
        .map(|(slot, _)| (label(slot), slot.lsn.to_string()))
        .collect();
    gauges(
        out,
        "shiplog_replication_slot_lsn",
        "Last LSN a replica holds durably, as its retention slot records it.",
        &lsns,
    );
    let retained: Vec<(String, String)> = snapshot
        .slots
        .iter()
        .map(|(slot, bytes)| (label(slot), bytes.to_string()))
        .collect();
    gauges(
        out,
        "shiplog_replication_slot_retained_bytes",
        "Bytes of log a retention slot keeps from compaction.",
        &retained,
    );
    let _ = writeln!(
        out,
        "# HELP shiplog_replication_slot_max_retained_bytes Bytes of log a slot may keep before it is dropped.\n# TYPE shiplog_replication_slot_max_retained_bytes gauge\nshiplog_replication_slot_max_retained_bytes {}",
        snapshot.max_retained_bytes
    );
}

/// Serves `GET /metrics` on `listener` until the server shuts down; one request per
/// connection, read with a deadline and a size cap.
pub fn serve(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.is_shutting_down() {
            return;
        }
        let Ok(stream) = stream else { continue };
        if let Err(e) = answer(stream, shared) {
            tracing::debug!(error = %e, "metrics request failed");
        }
    }
}

fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HTTP_REQUEST_MAX_BYTES {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let (status, body) = match crate::format::http::request_target(&head) {
        Some((b"GET", b"/metrics" | b"/")) => ("200 OK", render(shared)),
        Some((b"GET", _)) => ("404 Not Found", "not found: try /metrics\n".to_owned()),
        Some(_) => ("405 Method Not Allowed", "only GET is served\n".to_owned()),
        None => ("400 Bad Request", "bad request\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
