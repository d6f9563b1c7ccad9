//! Replication as clients and operators see it: `ROLE`, `INFO replication` and the numbers
//! the metrics endpoint shows.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::Replication;
use crate::format::resp::ReplyWriter;
use crate::format::slots::Slot;
use crate::repl::LinkState;
use crate::sync::MutexExt;

/// Replication at one moment: what the metrics endpoint shows (`INFO replication` in numbers).
#[derive(Debug, Clone)]
pub struct ReplicationSnapshot {
    /// The primary (`HOST:PORT`) and the link's progress, when this node is a replica.
    pub link: Option<(String, crate::repl::status::LinkProgress)>,
    /// Connected replicas: the address each connected from, and its progress.
    pub replicas: Vec<(SocketAddr, crate::repl::status::PeerProgress)>,
    /// Retention slots, each with the bytes of log it held at the last tick.
    pub slots: Vec<(Slot, u64)>,
    /// Most bytes of log one slot may hold before it is dropped.
    pub max_retained_bytes: u64,
}

/// `HOST:PORT` → (host, port); the port is 0 when missing or invalid.
fn split_host_port(target: &str) -> (String, u16) {
    match target.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port.parse().unwrap_or(0),
        ),
        None => (target.to_owned(), 0),
    }
}

impl Replication {
    /// Replication as it stands now, for the metrics endpoint.
    pub fn overview(&self) -> ReplicationSnapshot {
        let replicas = self
            .peers()
            .iter()
            .map(|peer| (peer.addr, peer.progress()))
            .collect();
        let table = self.slots.locked();
        let slots = table
            .slots
            .iter()
            .copied()
            .zip(table.retained.iter().copied())
            .collect();
        drop(table);
        ReplicationSnapshot {
            link: self.link_view(),
            replicas,
            slots,
            max_retained_bytes: self.max_retained_bytes,
        }
    }

    /// `ROLE`, in Redis' shape.
    pub fn role_reply(&self, reply: &mut ReplyWriter<'_>) {
        let db = self.keyspace.db();
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some((primary, progress)) = self.link_view() {
            let (host, port) = split_host_port(&primary);
            reply.array(5);
            reply.bulk(b"slave");
            reply.bulk(host.as_bytes());
            reply.integer(i64::from(port));
            reply.bulk(match progress.state {
                LinkState::Connecting => b"connect".as_slice(),
                LinkState::Handshake => b"handshake",
                LinkState::Connected => b"connected",
            });
            reply.integer(int(db.applied_lsn()));
            return;
        }
        let peers = self.peers();
        reply.array(3);
        reply.bulk(b"master");
        reply.integer(int(db.wal().durable_lsn()));
        reply.array(peers.len());
        for peer in peers {
            let p = peer.progress();
            reply.array(3);
            reply.bulk(peer.addr.ip().to_string().as_bytes());
            reply.bulk(p.listen_port.to_string().as_bytes());
            reply.bulk(p.durable.to_string().as_bytes());
        }
    }

    /// The `INFO replication` section.
    pub fn info(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = write!(out, "{k}:{v}\r\n");
        };
        if let Some((primary, progress)) = self.link_view() {
            self.replica_info(&primary, &progress, &mut line);
        } else {
            self.primary_info(&mut line);
        }
        out
    }

    fn replica_info(
        &self,
        primary: &str,
        p: &crate::repl::status::LinkProgress,
        line: &mut dyn FnMut(&str, &dyn std::fmt::Display),
    ) {
        let db = self.keyspace.db();
        let wal = db.wal();
        // Nothing is served while a snapshot is installed: nothing counts as applied.
        let applied = if db.restoring() { 0 } else { db.applied_lsn() };
        let (host, port) = split_host_port(primary);
        line("role", &"slave");
        line("master_host", &host);
        line("master_port", &port);
        let up = p.state == LinkState::Connected;
        line("master_link_status", &if up { "up" } else { "down" });
        line(
            "master_last_io_seconds_ago",
            &p.last_io.map_or(-1, |t| {
                i64::try_from(t.elapsed().as_secs()).unwrap_or(i64::MAX)
            }),
        );
        // Redis' names for a full sync in progress, then shiplog's own detail.
        line("master_sync_in_progress", &u8::from(p.bootstrap.is_some()));
        if let Some(b) = &p.bootstrap {
            line("master_sync_total_bytes", &b.file_bytes);
            line("master_sync_read_bytes", &b.received);
            line(
                "master_sync_left_bytes",
                &(b.file_bytes - b.received.min(b.file_bytes)),
            );
            line("replica_bootstrap_lsn", &b.lsn);
            line("replica_bootstrap_resumed_at", &b.resumed_at);
            line(
                "replica_bootstrap_state",
                &if b.installing {
                    "installing"
                } else {
                    "receiving"
                },
            );
        }
        line("replica_bootstraps", &p.bootstraps);
        line("replica_restoring", &u8::from(db.restoring()));
        line("slave_read_repl_offset", &wal.written_lsn());
        line("slave_repl_offset", &applied);
        line("slave_priority", &100);
        line("slave_read_only", &1);
        line("replica_announced", &1);
        line("connected_slaves", &0);
        line(
            "master_replid",
            &format!("{:032x}00000000", wal.cluster_id()),
        );
        line("master_repl_offset", &applied);
        line("replica_received_lsn", &wal.written_lsn());
        line("replica_durable_lsn", &wal.durable_lsn());
        line("replica_applied_lsn", &applied);
        line("primary_durable_lsn", &p.primary_durable);
        // Honest when idle: 0 once everything the primary made durable is applied here.
        line(
            "replica_lag_lsns",
            &p.primary_durable.saturating_sub(applied),
        );
        line(
            "replica_lag_ms",
            &p.behind_since.map_or(0, |t| t.elapsed().as_millis()),
        );
        line("replica_sessions", &p.sessions);
        self.epoch_info(line);
        line("master_epoch", &p.primary_epoch);
        line("replica_rewinds", &p.rewinds);
        if let Some(path) = &p.last_rollback {
            line("replica_last_rollback", &path.display());
        }
        line("replica_id", &format!("{:032x}", self.replica_id));
        if let Some((lsn, matched)) = p.digest_checked {
            line("replica_digest_checked_lsn", &lsn);
            line("replica_digest_match", &if matched { "yes" } else { "no" });
        }
        if let Some(diverged) = &p.diverged {
            line("replica_diverged", &diverged.replace(['\r', '\n'], " "));
        }
        if let Some(error) = &p.last_error {
            line("replica_last_error", &error.replace(['\r', '\n'], " "));
        }
    }

    fn epoch_info(&self, line: &mut dyn FnMut(&str, &dyn std::fmt::Display)) {
        let history = self.keyspace.db().wal().epoch_history();
        let latest = history.latest();
        line("epoch", &latest.epoch);
        line("epoch_start_lsn", &latest.start_lsn);
        line("epochs_known", &history.entries().len());
    }

    fn primary_info(&self, line: &mut dyn FnMut(&str, &dyn std::fmt::Display)) {
        let wal = self.keyspace.db().wal();
        let peers = self.peers();
        let durable = wal.durable_lsn();
        line("role", &"master");
        line("connected_slaves", &peers.len());
        for (i, peer) in peers.iter().enumerate() {
            let p = peer.progress();
            let caught_up = p.applied >= durable;
            let ms = |micros: u64| {
                if caught_up {
                    "0.000".to_owned()
                } else {
                    format!("{}.{:03}", micros / 1000, micros % 1000)
                }
            };
            line(
                &format!("slave{i}"),
                &format!(
                    "ip={},port={},state={},offset={},lag={},id={:032x},write_lsn={},flush_lsn={},replay_lsn={},write_lag_ms={},flush_lag_ms={},replay_lag_ms={},lag_lsns={},snapshot_sent_bytes={},snapshot_bytes={}",
                    peer.addr.ip(),
                    p.listen_port,
                    // Redis' state while a replica receives its full sync.
                    if p.bootstrapping() {
                        "send_bulk"
                    } else {
                        "online"
                    },
                    p.durable,
                    peer.since_last_ack().as_secs(),
                    p.replica_id,
                    p.received,
                    p.durable,
                    p.applied,
                    ms(p.write_lag_micros),
                    ms(p.flush_lag_micros),
                    ms(p.replay_lag_micros),
                    durable.saturating_sub(p.applied),
                    p.snapshot_sent,
                    p.snapshot_bytes,
                ),
            );
        }
        let table = self.slots.locked();
        let cap = self.max_retained_bytes;
        for (i, (slot, retained)) in table.slots.iter().zip(&table.retained).enumerate() {
            let connected = peers
                .iter()
                .any(|p| p.progress().replica_id == slot.replica_id);
            line(
                &format!("slot{i}"),
                &format!(
                    "id={:032x},lsn={},retained_bytes={retained},cap_left_bytes={},connected={}",
                    slot.replica_id,
                    slot.lsn,
                    cap.saturating_sub(*retained),
                    if connected { "yes" } else { "no" }
                ),
            );
        }
        drop(table);
        line("max_retained_bytes", &cap);
        self.epoch_info(line);
        if let Some(epoch) = self.fenced_by() {
            line("fenced_by_epoch", &epoch);
        }
        line("master_failover_state", &"no-failover");
        line(
            "master_replid",
            &format!("{:032x}00000000", wal.cluster_id()),
        );
        line("master_repl_offset", &durable);
    }
}
