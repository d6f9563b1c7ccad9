//! `shiplog status HOST:PORT`: a running node's replication, as an operator reads it, from
//! `INFO server persistence replication` (the fields `docs/operations.md` lists), and whether
//! the node is healthy, told by the exit status as `pg_isready` tells it.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use shiplog::format::resp_reply::Reply;
use shiplog::resp_conn::Connection;

use super::print_json;
use super::resp_client::{authenticate, read_password};

/// Exit status of a node that answered but is not healthy (the reasons are on stderr).
const UNHEALTHY: u8 = 1;
/// Exit status when nothing answers: the name does not resolve, nothing accepts the
/// connection, or the node does not reply within [`TIMEOUT`] (`pg_isready`'s "no response").
const NO_RESPONSE: u8 = 2;
/// Exit status when the node answered but could not be asked: a wrong or missing password, a
/// refused `INFO`, not a shiplogd; and a usage error (`pg_isready`'s "no attempt was made").
pub const NOT_CHECKED: u8 = 3;
/// Bound on connecting and on each read and write: a node that takes longer is not answering.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Width of the labels of the human-readable output.
const LABEL_WIDTH: usize = 18;

/// `INFO` fields in the order they came: the `slaveN` and `slotN` lines are numbered in it.
struct Info(Vec<(String, String)>);

impl Info {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.trim_end().to_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// The values of `<prefix><n>` lines, in order, each split into its `key=value` pairs.
    fn numbered(&self, prefix: &str) -> Vec<Fields> {
        self.0
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(_, v)| Fields::parse(v))
            .collect()
    }
}

/// The `key=value,key=value` value of a `slaveN` or `slotN` line.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(value: &str) -> Self {
        Self(
            value
                .split(',')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// A decimal such as `12.345` (lag milliseconds, with three decimals).
    fn decimal(&self, key: &str) -> Option<f64> {
        self.get(key).filter(|v| is_decimal(v))?.parse().ok()
    }
}

/// Digits, optionally a dot and more digits: nothing else (no sign, exponent, `NaN` or `inf`)
/// is taken for a lag.
fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}

/// A replica as its primary reports it (a `slaveN` line).
#[derive(Serialize)]
struct ReplicaRow {
    #[serde(rename = "addr")]
    ip: Option<String>,
    listen_port: Option<u64>,
    replica_id: Option<String>,
    state: Option<String>,
    write_lsn: Option<u64>,
    flush_lsn: Option<u64>,
    replay_lsn: Option<u64>,
    lag_lsns: Option<u64>,
    write_lag_ms: Option<f64>,
    flush_lag_ms: Option<f64>,
    replay_lag_ms: Option<f64>,
    last_ack_seconds_ago: Option<u64>,
}

impl ReplicaRow {
    fn from_fields(f: &Fields) -> Self {
        Self {
            ip: f.get("ip"),
            listen_port: f.number("port"),
            replica_id: f.get("id"),
            state: f.get("state"),
            write_lsn: f.number("write_lsn"),
            flush_lsn: f.number("flush_lsn"),
            replay_lsn: f.number("replay_lsn"),
            lag_lsns: f.number("lag_lsns"),
            write_lag_ms: f.decimal("write_lag_ms"),
            flush_lag_ms: f.decimal("flush_lag_ms"),
            replay_lag_ms: f.decimal("replay_lag_ms"),
            // Redis' `lag`: seconds since the replica's last acknowledgement.
            last_ack_seconds_ago: f.number("lag"),
        }
    }
}

/// A retention slot (a `slotN` line).
#[derive(Serialize)]
struct SlotRow {
    replica_id: Option<String>,
    lsn: Option<u64>,
    retained_bytes: Option<u64>,
    cap_left_bytes: Option<u64>,
    connected: Option<bool>,
}

impl SlotRow {
    fn from_fields(f: &Fields) -> Self {
        Self {
            replica_id: f.get("id"),
            lsn: f.number("lsn"),
            retained_bytes: f.number("retained_bytes"),
            cap_left_bytes: f.number("cap_left_bytes"),
            connected: f.get("connected").map(|c| c == "yes"),
        }
    }
}

/// What a primary reports.
#[derive(Serialize)]
struct PrimaryStatus {
    connected_replicas: Option<u64>,
    replicas: Vec<ReplicaRow>,
    slots: Vec<SlotRow>,
    max_retained_bytes: Option<u64>,
}

/// What a replica reports.
#[derive(Serialize)]
struct ReplicaStatus {
    /// `HOST:PORT` of the primary.
    primary: Option<String>,
    link_status: Option<String>,
    /// None: nothing has arrived yet (`INFO` says -1).
    last_io_seconds_ago: Option<u64>,
    received_lsn: Option<u64>,
    applied_lsn: Option<u64>,
    primary_durable_lsn: Option<u64>,
    lag_lsns: Option<u64>,
    lag_ms: Option<u64>,
    sessions: Option<u64>,
    digest_checked_lsn: Option<u64>,
    /// None: no digest compared yet.
    digest_match: Option<bool>,
    last_error: Option<String>,
    /// Whether the logs diverged (the link then stops), and why.
    diverged: bool,
    diverged_reason: Option<String>,
    /// Whether a bootstrap from the primary's snapshot is under way: bytes received, of the
    /// file's size, and whether they are being received or installed.
    bootstrapping: bool,
    bootstrap_read_bytes: Option<u64>,
    bootstrap_total_bytes: Option<u64>,
    #[serde(skip)]
    bootstrap_state: Option<String>,
    bootstraps: Option<u64>,
}

impl ReplicaStatus {
    fn from_info(info: &Info) -> Self {
        let diverged_reason = info.get("replica_diverged").map(str::to_owned);
        let bootstrapping = info.number("master_sync_in_progress") == Some(1);
        let during_bootstrap = |key| bootstrapping.then(|| info.number(key).unwrap_or(0));
        Self {
            primary: host_port(info.get("master_host"), info.number("master_port")),
            link_status: info.get("master_link_status").map(str::to_owned),
            last_io_seconds_ago: info.number("master_last_io_seconds_ago"),
            received_lsn: info.number("replica_received_lsn"),
            applied_lsn: info.number("replica_applied_lsn"),
            primary_durable_lsn: info.number("primary_durable_lsn"),
            lag_lsns: info.number("replica_lag_lsns"),
            lag_ms: info.number("replica_lag_ms"),
            sessions: info.number("replica_sessions"),
            digest_checked_lsn: info.number("replica_digest_checked_lsn"),
            digest_match: info.get("replica_digest_match").map(|m| m == "yes"),
            last_error: info.get("replica_last_error").map(str::to_owned),
            diverged: diverged_reason.is_some(),
            diverged_reason,
            bootstrapping,
            bootstrap_read_bytes: during_bootstrap("master_sync_read_bytes"),
            bootstrap_total_bytes: during_bootstrap("master_sync_total_bytes"),
            bootstrap_state: bootstrapping.then(|| {
                info.get("replica_bootstrap_state")
                    .unwrap_or("receiving")
                    .to_owned()
            }),
            bootstraps: info.number("replica_bootstraps"),
        }
    }
}

/// `HOST:PORT`, an IPv6 host in brackets.
fn host_port(host: Option<&str>, port: Option<u64>) -> Option<String> {
    let (host, port) = (host?, port?);
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// Either side; in JSON, the `role` field and the side's own fields.
#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum Role {
    Primary(PrimaryStatus),
    Replica(Box<ReplicaStatus>),
}

/// A node's status.
#[derive(Serialize)]
struct Status {
    target: String,
    version: Option<String>,
    uptime_seconds: Option<u64>,
    durable_lsn: Option<u64>,
    /// The newest epoch the node knows, and its first LSN.
    epoch: Option<u64>,
    epoch_start_lsn: Option<u64>,
    /// A primary that a failover replaced: the newer epoch it heard of.
    fenced_by_epoch: Option<u64>,
    /// `err` once a failed write or `fdatasync` poisoned the log (Redis' field name).
    #[serde(rename = "aof_last_write_status")]
    aof_last_write: Option<String>,
    #[serde(flatten)]
    role: Role,
    /// Why the node is not healthy; empty when it is.
    problems: Vec<String>,
}

impl Status {
    fn from_info(target: &str, info: &Info) -> Result<Self, String> {
        let role = match info.get("role") {
            Some("master") => Role::Primary(PrimaryStatus {
                connected_replicas: info.number("connected_slaves"),
                replicas: info
                    .numbered("slave")
                    .iter()
                    .map(ReplicaRow::from_fields)
                    .collect(),
                slots: info
                    .numbered("slot")
                    .iter()
                    .map(SlotRow::from_fields)
                    .collect(),
                max_retained_bytes: info.number("max_retained_bytes"),
            }),
            Some("slave") => Role::Replica(Box::new(ReplicaStatus::from_info(info))),
            Some(other) => return Err(format!("{target} reports an unknown role {other:?}")),
            None => {
                return Err(format!(
                    "{target} answered INFO without a role: is it shiplogd?"
                ));
            }
        };
        let mut status = Self {
            target: target.to_owned(),
            version: info.get("shiplog_version").map(str::to_owned),
            uptime_seconds: info.number("uptime_in_seconds"),
            durable_lsn: info.number("durable_lsn"),
            epoch: info.number("epoch"),
            epoch_start_lsn: info.number("epoch_start_lsn"),
            fenced_by_epoch: info.number("fenced_by_epoch"),
            aof_last_write: info.get("aof_last_write_status").map(str::to_owned),
            role,
            problems: Vec::new(),
        };
        status.problems = status.diagnose();
        Ok(status)
    }

    /// What makes the node unhealthy: fenced by a newer epoch (it refuses writes), or, on a
    /// replica, a bootstrap under way or else a link that is not up (the link is not up during
    /// a bootstrap either), diverged logs, or a digest that differs from the primary's.
    fn diagnose(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.aof_last_write.as_deref() == Some("err") {
            problems.push(
                "poisoned log: a write or fdatasync failed, so it refuses every write; check the \
                 disk and its kernel log, then restart it (recovery keeps what reached the disk)"
                    .to_owned(),
            );
        }
        if let Some(epoch) = self.fenced_by_epoch {
            problems.push(format!(
                "fenced: a failover started epoch {epoch}, so it refuses writes; point it at the \
                 new primary"
            ));
        }
        let Role::Replica(r) = &self.role else {
            return problems;
        };
        if let (Some(state), Some(read), Some(total)) = (
            &r.bootstrap_state,
            r.bootstrap_read_bytes,
            r.bootstrap_total_bytes,
        ) {
            problems.push(format!(
                "bootstrapping: {state} the primary's snapshot ({read} of {total} bytes)"
            ));
        } else if r.link_status.as_deref() != Some("up") {
            let why = r
                .last_error
                .as_deref()
                .map_or_else(String::new, |e| format!(" (last error: {e})"));
            problems.push(format!(
                "the link to the primary {} is {}{why}",
                or_dash(r.primary.as_deref()),
                or_dash(r.link_status.as_deref())
            ));
        }
        if let Some(why) = &r.diverged_reason {
            problems.push(format!("its log diverged from the primary's: {why}"));
        }
        if r.digest_match == Some(false) {
            problems.push(format!(
                "its log digest differs from the primary's at LSN {}",
                or_dash(r.digest_checked_lsn)
            ));
        }
        problems
    }
}

/// Why a node could not be checked, and the exit status that says so.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn no_response(message: &impl ToString) -> Self {
        Self {
            code: NO_RESPONSE,
            message: message.to_string(),
        }
    }

    fn not_checked(message: &impl ToString) -> Self {
        Self {
            code: NOT_CHECKED,
            message: message.to_string(),
        }
    }
}

/// `shiplog status`: prints what the node reports. Exit status, as `pg_isready`'s: 0 when the
/// node is healthy, [`UNHEALTHY`], [`NO_RESPONSE`] or [`NOT_CHECKED`], with the reason on
/// stderr.
pub fn status(target: &str, json: bool, password_file: Option<&Path>) -> ExitCode {
    let checked = query(target, password_file).and_then(|status| {
        if json {
            print_json(&status).map_err(|e| Failure::not_checked(&e))?;
        } else {
            print!("{}", render_human(&status));
        }
        Ok(status)
    });
    match checked {
        Ok(status) if status.problems.is_empty() => ExitCode::SUCCESS,
        Ok(status) => {
            for problem in &status.problems {
                eprintln!("shiplog: {target} is unhealthy: {problem}");
            }
            ExitCode::from(UNHEALTHY)
        }
        Err(failure) => {
            eprintln!("shiplog: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Asks the node for its `INFO` and reads it.
fn query(target: &str, password_file: Option<&Path>) -> Result<Status, Failure> {
    // Connecting and authenticating fail with different exit statuses (2 and 3).
    let mut client = Connection::connect(target, TIMEOUT).map_err(|e| Failure::no_response(&e))?;
    read_password(password_file)
        .and_then(|password| authenticate(&mut client, target, password.as_deref()))
        .map_err(|e| Failure::not_checked(&e))?;
    let reply = client
        .command(&[b"INFO", b"server", b"persistence", b"replication"])
        .map_err(|e| Failure::no_response(&e))?;
    let text = match reply {
        Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Reply::Error(e) if e.starts_with(b"NOAUTH") => {
            let e = String::from_utf8_lossy(e);
            return Err(Failure::not_checked(&format!(
                "{target} requires a password: pass --password-file ({e})"
            )));
        }
        Reply::Error(e) => {
            let e = String::from_utf8_lossy(e);
            return Err(Failure::not_checked(&format!("{target} refused INFO: {e}")));
        }
        other => {
            return Err(Failure::not_checked(&format!(
                "{target} answered INFO with {}",
                other.describe()
            )));
        }
    };
    Status::from_info(target, &Info::parse(&text)).map_err(|e| Failure::not_checked(&e))
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn render_human(status: &Status) -> String {
    let mut out = String::new();
    let w = LABEL_WIDTH;
    let _ = writeln!(
        out,
        "{:<w$}{} (shiplog {}, up {} s)",
        "node",
        status.target,
        or_dash(status.version.as_deref()),
        or_dash(status.uptime_seconds)
    );
    let _ = writeln!(
        out,
        "{:<w$}{} (from LSN {})",
        "epoch",
        or_dash(status.epoch),
        or_dash(status.epoch_start_lsn)
    );
    match &status.role {
        Role::Primary(p) => {
            match status.fenced_by_epoch {
                Some(epoch) => {
                    let _ = writeln!(
                        out,
                        "{:<w$}primary, REPLACED by a failover (epoch {epoch} exists): it \
                         refuses writes; point it at the new primary",
                        "role"
                    );
                }
                None => {
                    let _ = writeln!(out, "{:<w$}primary", "role");
                }
            }
            let _ = writeln!(out, "{:<w$}{}", "durable LSN", or_dash(status.durable_lsn));
            render_replicas_human(&mut out, p);
            render_slots_human(&mut out, p);
        }
        Role::Replica(r) => {
            let _ = writeln!(out, "{:<w$}replica", "role");
            render_replica_human(&mut out, status, r);
        }
    }
    out
}

fn render_replicas_human(out: &mut String, p: &PrimaryStatus) {
    let w = LABEL_WIDTH;
    let _ = writeln!(
        out,
        "{:<w$}{} connected",
        "replicas",
        or_dash(p.connected_replicas)
    );
    for r in &p.replicas {
        let ms = |v: Option<f64>| or_dash(v.map(|ms| format!("{ms:.3}")));
        let _ = writeln!(
            out,
            "  {}:{}  {}, id {}",
            or_dash(r.ip.as_deref()),
            or_dash(r.listen_port),
            or_dash(r.state.as_deref()),
            or_dash(r.replica_id.as_deref())
        );
        let inner = w - 4;
        let _ = writeln!(
            out,
            "    {:<inner$}write {}, flush {}, replay {}",
            "LSN",
            or_dash(r.write_lsn),
            or_dash(r.flush_lsn),
            or_dash(r.replay_lsn)
        );
        let _ = writeln!(
            out,
            "    {:<inner$}{} LSNs; write {} ms, flush {} ms, replay {} ms",
            "lag",
            or_dash(r.lag_lsns),
            ms(r.write_lag_ms),
            ms(r.flush_lag_ms),
            ms(r.replay_lag_ms)
        );
        let _ = writeln!(
            out,
            "    {:<inner$}{} s ago",
            "last ack",
            or_dash(r.last_ack_seconds_ago)
        );
    }
}

fn render_slots_human(out: &mut String, p: &PrimaryStatus) {
    let w = LABEL_WIDTH;
    let _ = writeln!(
        out,
        "{:<w$}{} (each may retain {} bytes of log)",
        "retention slots",
        p.slots.len(),
        or_dash(p.max_retained_bytes)
    );
    for s in &p.slots {
        let connected = match s.connected {
            Some(true) => "connected",
            Some(false) => "not connected",
            None => "-",
        };
        let _ = writeln!(
            out,
            "  {}  LSN {}, retains {} bytes, {} bytes left before it is dropped, {connected}",
            or_dash(s.replica_id.as_deref()),
            or_dash(s.lsn),
            or_dash(s.retained_bytes),
            or_dash(s.cap_left_bytes)
        );
    }
}

fn render_replica_human(out: &mut String, status: &Status, r: &ReplicaStatus) {
    let w = LABEL_WIDTH;
    let _ = writeln!(out, "{:<w$}{}", "primary", or_dash(r.primary.as_deref()));
    let last_io = r
        .last_io_seconds_ago
        .map_or_else(|| "never".to_owned(), |s| format!("{s} s ago"));
    let _ = writeln!(
        out,
        "{:<w$}{}, last I/O {last_io}, {} session(s) started",
        "link",
        or_dash(r.link_status.as_deref()),
        or_dash(r.sessions)
    );
    let _ = writeln!(
        out,
        "{:<w$}received {}, durable {}, applied {}; primary durable {}",
        "LSN",
        or_dash(r.received_lsn),
        or_dash(status.durable_lsn),
        or_dash(r.applied_lsn),
        or_dash(r.primary_durable_lsn)
    );
    let _ = writeln!(
        out,
        "{:<w$}{} LSNs, {} ms",
        "lag",
        or_dash(r.lag_lsns),
        or_dash(r.lag_ms)
    );
    let digest = match (r.digest_match, r.digest_checked_lsn) {
        (None, _) => "not checked yet".to_owned(),
        (Some(true), lsn) => format!("match at LSN {}", or_dash(lsn)),
        (Some(false), lsn) => format!("MISMATCH at LSN {}", or_dash(lsn)),
    };
    let _ = writeln!(out, "{:<w$}{digest}", "digest check");
    let _ = writeln!(
        out,
        "{:<w$}{}",
        "last error",
        r.last_error.as_deref().unwrap_or("none")
    );
    let diverged = r
        .diverged_reason
        .as_ref()
        .map_or_else(|| "no".to_owned(), |why| format!("YES: {why}"));
    let _ = writeln!(out, "{:<w$}{diverged}", "diverged");
    let bootstrap = match (
        &r.bootstrap_state,
        r.bootstrap_read_bytes,
        r.bootstrap_total_bytes,
    ) {
        (Some(state), Some(read), Some(total)) => format!(
            "{state} the primary's snapshot: {read} of {total} bytes ({}%)",
            read * 100 / total.max(1)
        ),
        _ => format!("none under way, {} completed", or_dash(r.bootstraps)),
    };
    let _ = writeln!(out, "{:<w$}{bootstrap}", "bootstrap");
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = "# Server\r\nshiplog_version:0.1.0\r\nuptime_in_seconds:7\r\n\r\n\
        # Persistence\r\ndurable_lsn:42\r\n\r\n# Replication\r\nrole:master\r\n\
        connected_slaves:1\r\n\
        slave0:ip=127.0.0.1,port=7001,state=online,offset=40,lag=0,id=00ab,write_lsn=41,\
        flush_lsn=40,replay_lsn=39,write_lag_ms=0.250,flush_lag_ms=1.500,replay_lag_ms=2.000,\
        lag_lsns=3\r\n\
        slave_extra:ignored\r\n\
        slot0:id=00ab,lsn=40,retained_bytes=1000,cap_left_bytes=9000,connected=yes\r\n\
        max_retained_bytes:10000\r\nepoch:2\r\nepoch_start_lsn:30\r\n";

    fn render_json(status: &Status) -> String {
        serde_json::to_string(status).unwrap_or_else(|e| e.to_string())
    }

    fn parse(info: &str) -> Option<Status> {
        Status::from_info("n:1", &Info::parse(info)).ok()
    }

    #[test]
    fn a_primary_reports_replicas_and_slots() {
        let status = Status::from_info("h:1", &Info::parse(PRIMARY)).ok();
        let status = status.as_ref().map(render_json);
        assert_eq!(
            status.as_deref(),
            Some(
                "{\"target\":\"h:1\",\"version\":\"0.1.0\",\"uptime_seconds\":7,\
                 \"durable_lsn\":42,\"epoch\":2,\"epoch_start_lsn\":30,\"fenced_by_epoch\":null,\"aof_last_write_status\":null,\
                 \"role\":\"primary\",\"connected_replicas\":1,\"replicas\":[{\"addr\":\"127.0.0.1\",\
                 \"listen_port\":7001,\"replica_id\":\"00ab\",\"state\":\"online\",\"write_lsn\":41,\
                 \"flush_lsn\":40,\"replay_lsn\":39,\"lag_lsns\":3,\"write_lag_ms\":0.25,\
                 \"flush_lag_ms\":1.5,\"replay_lag_ms\":2.0,\"last_ack_seconds_ago\":0}],\
                 \"slots\":[{\"replica_id\":\"00ab\",\"lsn\":40,\"retained_bytes\":1000,\
                 \"cap_left_bytes\":9000,\"connected\":true}],\"max_retained_bytes\":10000,\
                 \"problems\":[]}"
            )
        );
        let human = Status::from_info("h:1", &Info::parse(PRIMARY))
            .as_ref()
            .map(render_human)
            .unwrap_or_default();
        assert!(
            human.contains("3 LSNs; write 0.250 ms, flush 1.500 ms, replay 2.000 ms"),
            "{human}"
        );
    }

    #[test]
    fn a_poisoned_log_is_unhealthy() {
        let status = parse(&format!("{PRIMARY}aof_last_write_status:err\r\n"));
        let problems = status.map(|s| s.problems).unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("poisoned log"), "{problems:?}");
        let healthy = format!("{PRIMARY}aof_last_write_status:ok\r\n");
        assert_eq!(parse(&healthy).map(|s| s.problems), Some(vec![]));
    }

    #[test]
    fn a_fenced_primary_is_unhealthy() {
        let status = parse(&format!("{PRIMARY}fenced_by_epoch:3\r\n"));
        let problems = status.map(|s| s.problems).unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("fenced: a failover started epoch 3"),
            "{problems:?}"
        );
        assert_eq!(parse(PRIMARY).map(|s| s.problems), Some(vec![]));
    }

    #[test]
    fn a_replica_is_unhealthy_when_its_link_is_down_or_its_log_differs() {
        let up = "role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6380\r\n\
            master_link_status:up\r\n";
        assert_eq!(parse(up).map(|s| s.problems), Some(vec![]));
        let down = up.replace(":up", ":down") + "replica_last_error:connection refused\r\n";
        assert_eq!(
            parse(&down).map(|s| s.problems),
            Some(vec![
                "the link to the primary 10.0.0.1:6380 is down (last error: connection refused)"
                    .to_owned()
            ])
        );
        let diverged = format!("{up}replica_diverged:epoch 2 differs\r\n");
        let json = parse(&diverged)
            .as_ref()
            .map(render_json)
            .unwrap_or_default();
        assert!(
            json.contains("\"diverged\":true,\"diverged_reason\":\"epoch 2 differs\""),
            "{json}"
        );
        assert!(
            json.contains(
                "\"problems\":[\"its log diverged from the primary's: epoch 2 differs\"]"
            ),
            "{json}"
        );
        let bootstrapping = down.clone()
            + "master_sync_in_progress:1\r\nmaster_sync_read_bytes:5\r\n\
               master_sync_total_bytes:8\r\nreplica_bootstrap_state:installing\r\n";
        assert_eq!(
            parse(&bootstrapping).map(|s| s.problems),
            Some(vec![
                "bootstrapping: installing the primary's snapshot (5 of 8 bytes)".to_owned()
            ])
        );
        let mismatch = format!("{up}replica_digest_checked_lsn:9\r\nreplica_digest_match:no\r\n");
        assert_eq!(
            parse(&mismatch).map(|s| s.problems),
            Some(vec![
                "its log digest differs from the primary's at LSN 9".to_owned()
            ])
        );
    }

    #[test]
    fn a_replica_error_text_is_escaped_and_missing_fields_are_null() {
        let info = "role:slave\r\nmaster_host:::1\r\nmaster_port:6380\r\n\
            master_last_io_seconds_ago:-1\r\nreplica_last_error:bad \"frame\" \\ \u{1}\r\n";
        let status = Status::from_info("r:2", &Info::parse(info)).ok();
        let json = status.as_ref().map(render_json).unwrap_or_default();
        assert!(json.contains("\"primary\":\"[::1]:6380\""), "{json}");
        assert!(json.contains("\"last_io_seconds_ago\":null"), "{json}");
        assert!(
            json.contains(r#""last_error":"bad \"frame\" \\ \u0001""#),
            "{json}"
        );
        assert!(json.contains("\"digest_match\":null"), "{json}");
        assert!(json.contains("\"diverged\":false"), "{json}");
        assert!(json.contains("\"bootstrapping\":false"), "{json}");
        assert!(json.contains("\"bootstrap_read_bytes\":null"), "{json}");
        let human = status.as_ref().map(render_human).unwrap_or_default();
        assert!(human.contains("last I/O never"), "{human}");
        assert!(
            human.contains("digest check      not checked yet"),
            "{human}"
        );
    }

    #[test]
    fn a_node_without_a_role_is_an_error() {
        assert!(Status::from_info("x:3", &Info::parse("redis_version:7\r\n")).is_err());
        assert!(Status::from_info("x:3", &Info::parse("role:sentinel\r\n")).is_err());
    }

    #[test]
    fn only_plain_decimals_pass_as_json_numbers() {
        for good in ["0", "12", "0.000", "15.250"] {
            assert!(is_decimal(good), "{good}");
        }
        for bad in ["", ".", "1.", ".5", "-1", "1e5", "NaN", "1.2.3", "0x10"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
