//! `shiplog status HOST:PORT`: a running node's replication, as an operator reads it, from
//! `INFO server persistence replication` (the fields `docs/operations.md` lists).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use shiplog::format::resp_reply::Reply;

use super::json_string;
use super::resp_client::connect_with_auth;

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

    /// A decimal such as `12.345` (lag milliseconds), kept as text so nothing is rounded.
    fn decimal(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| is_decimal(v))
    }
}

/// Digits, optionally a dot and more digits: valid as a JSON number as it stands.
fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}

/// A replica as its primary reports it (a `slaveN` line).
struct ReplicaRow {
    ip: Option<String>,
    listen_port: Option<u64>,
    replica_id: Option<String>,
    state: Option<String>,
    write_lsn: Option<u64>,
    flush_lsn: Option<u64>,
    replay_lsn: Option<u64>,
    lag_lsns: Option<u64>,
    write_lag_ms: Option<String>,
    flush_lag_ms: Option<String>,
    replay_lag_ms: Option<String>,
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
struct PrimaryStatus {
    connected_replicas: Option<u64>,
    replicas: Vec<ReplicaRow>,
    slots: Vec<SlotRow>,
    max_retained_bytes: Option<u64>,
}

/// What a replica reports.
struct ReplicaStatus {
    primary_host: Option<String>,
    primary_port: Option<u64>,
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
    diverged: Option<String>,
    /// A bootstrap from the primary's snapshot: bytes received, of the file's size, and state.
    bootstrap: Option<(u64, u64, String)>,
    bootstraps: Option<u64>,
}

impl ReplicaStatus {
    /// `HOST:PORT` of the primary, an IPv6 host in brackets.
    fn primary(&self) -> Option<String> {
        let host = self.primary_host.as_deref()?;
        let port = self.primary_port?;
        Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    }
}

/// Either side.
enum Role {
    Primary(PrimaryStatus),
    Replica(Box<ReplicaStatus>),
}

/// A node's status.
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
    role: Role,
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
            Some("slave") => Role::Replica(Box::new(ReplicaStatus {
                primary_host: info.get("master_host").map(str::to_owned),
                primary_port: info.number("master_port"),
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
                diverged: info.get("replica_diverged").map(str::to_owned),
                bootstrap: (info.number("master_sync_in_progress") == Some(1)).then(|| {
                    (
                        info.number("master_sync_read_bytes").unwrap_or(0),
                        info.number("master_sync_total_bytes").unwrap_or(0),
                        info.get("replica_bootstrap_state")
                            .unwrap_or("receiving")
                            .to_owned(),
                    )
                }),
                bootstraps: info.number("replica_bootstraps"),
            })),
            Some(other) => return Err(format!("{target} reports an unknown role {other:?}")),
            None => {
                return Err(format!(
                    "{target} answered INFO without a role: is it shiplogd?"
                ));
            }
        };
        Ok(Self {
            target: target.to_owned(),
            version: info.get("shiplog_version").map(str::to_owned),
            uptime_seconds: info.number("uptime_in_seconds"),
            durable_lsn: info.number("durable_lsn"),
            epoch: info.number("epoch"),
            epoch_start_lsn: info.number("epoch_start_lsn"),
            fenced_by_epoch: info.number("fenced_by_epoch"),
            role,
        })
    }
}

/// `shiplog status`: exit status 0 when the node answered, an `Err` (exit 1) when it could not
/// be reached or refused the commands.
pub fn status(target: &str, json: bool, password_file: Option<&Path>) -> Result<ExitCode, String> {
    let mut client = connect_with_auth(target, TIMEOUT, password_file)?;
    let reply = client
        .command(&[b"INFO", b"server", b"persistence", b"replication"])
        .map_err(|e| e.to_string())?;
    let text = match reply {
        Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Reply::Error(e) if e.starts_with(b"NOAUTH") => {
            let e = String::from_utf8_lossy(e);
            return Err(format!(
                "{target} requires a password: pass --password-file ({e})"
            ));
        }
        Reply::Error(e) => {
            let e = String::from_utf8_lossy(e);
            return Err(format!("{target} refused INFO: {e}"));
        }
        other => return Err(format!("{target} answered INFO with {}", other.describe())),
    };
    let status = Status::from_info(target, &Info::parse(&text))?;
    if json {
        println!("{}", render_json(&status));
    } else {
        print!("{}", render_human(&status));
    }
    Ok(ExitCode::SUCCESS)
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
        let ms = |v: &Option<String>| or_dash(v.as_deref());
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
            ms(&r.write_lag_ms),
            ms(&r.flush_lag_ms),
            ms(&r.replay_lag_ms)
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
    let _ = writeln!(out, "{:<w$}{}", "primary", or_dash(r.primary()));
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
        .diverged
        .as_ref()
        .map_or_else(|| "no".to_owned(), |why| format!("YES: {why}"));
    let _ = writeln!(out, "{:<w$}{diverged}", "diverged");
    let bootstrap = match &r.bootstrap {
        Some((read, total, state)) => format!(
            "{state} the primary's snapshot: {read} of {total} bytes ({}%)",
            read * 100 / (*total).max(1)
        ),
        None => format!("none under way, {} completed", or_dash(r.bootstraps)),
    };
    let _ = writeln!(out, "{:<w$}{bootstrap}", "bootstrap");
}

/// A JSON object built field by field, in order.
struct JsonObject(String);

impl JsonObject {
    fn new() -> Self {
        Self(String::from("{"))
    }

    /// Adds `"key":value` with `value` already JSON.
    fn raw(&mut self, key: &str, value: &str) -> &mut Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "{}:{value}", json_string(key));
        self
    }

    fn string(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        self.raw(key, &value.map_or_else(|| "null".to_owned(), json_string))
    }

    fn number(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        self.raw(
            key,
            &value.map_or_else(|| "null".to_owned(), |v| v.to_string()),
        )
    }

    /// A decimal checked by [`is_decimal`].
    fn decimal(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        let value = value.filter(|v| is_decimal(v)).unwrap_or("null");
        self.raw(key, value)
    }

    fn boolean(&mut self, key: &str, value: Option<bool>) -> &mut Self {
        self.raw(
            key,
            &value.map_or_else(|| "null".to_owned(), |v| v.to_string()),
        )
    }

    fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.0);
        out.push('}');
        out
    }
}

fn json_array(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(","))
}

fn render_json(status: &Status) -> String {
    let mut o = JsonObject::new();
    o.string("target", Some(&status.target))
        .string(
            "role",
            Some(match status.role {
                Role::Primary(_) => "primary",
                Role::Replica(_) => "replica",
            }),
        )
        .string("version", status.version.as_deref())
        .number("uptime_seconds", status.uptime_seconds)
        .number("durable_lsn", status.durable_lsn)
        .number("epoch", status.epoch)
        .number("epoch_start_lsn", status.epoch_start_lsn)
        .number("fenced_by_epoch", status.fenced_by_epoch);
    match &status.role {
        Role::Primary(p) => {
            let replicas = json_array(p.replicas.iter().map(|r| {
                JsonObject::new()
                    .string("addr", r.ip.as_deref())
                    .number("listen_port", r.listen_port)
                    .string("replica_id", r.replica_id.as_deref())
                    .string("state", r.state.as_deref())
                    .number("write_lsn", r.write_lsn)
                    .number("flush_lsn", r.flush_lsn)
                    .number("replay_lsn", r.replay_lsn)
                    .number("lag_lsns", r.lag_lsns)
                    .decimal("write_lag_ms", r.write_lag_ms.as_deref())
                    .decimal("flush_lag_ms", r.flush_lag_ms.as_deref())
                    .decimal("replay_lag_ms", r.replay_lag_ms.as_deref())
                    .number("last_ack_seconds_ago", r.last_ack_seconds_ago)
                    .finish()
            }));
            let slots = json_array(p.slots.iter().map(|s| {
                JsonObject::new()
                    .string("replica_id", s.replica_id.as_deref())
                    .number("lsn", s.lsn)
                    .number("retained_bytes", s.retained_bytes)
                    .number("cap_left_bytes", s.cap_left_bytes)
                    .boolean("connected", s.connected)
                    .finish()
            }));
            o.number("connected_replicas", p.connected_replicas)
                .raw("replicas", &replicas)
                .raw("slots", &slots)
                .number("max_retained_bytes", p.max_retained_bytes);
        }
        Role::Replica(r) => {
            o.string("primary", r.primary().as_deref())
                .string("link_status", r.link_status.as_deref())
                .number("last_io_seconds_ago", r.last_io_seconds_ago)
                .number("received_lsn", r.received_lsn)
                .number("applied_lsn", r.applied_lsn)
                .number("primary_durable_lsn", r.primary_durable_lsn)
                .number("lag_lsns", r.lag_lsns)
                .number("lag_ms", r.lag_ms)
                .number("sessions", r.sessions)
                .number("digest_checked_lsn", r.digest_checked_lsn)
                .boolean("digest_match", r.digest_match)
                .string("last_error", r.last_error.as_deref())
                .boolean("diverged", Some(r.diverged.is_some()))
                .string("diverged_reason", r.diverged.as_deref())
                .boolean("bootstrapping", Some(r.bootstrap.is_some()))
                .number("bootstrap_read_bytes", r.bootstrap.as_ref().map(|b| b.0))
                .number("bootstrap_total_bytes", r.bootstrap.as_ref().map(|b| b.1))
                .number("bootstraps", r.bootstraps);
        }
    }
    o.finish()
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

    #[test]
    fn a_primary_reports_replicas_and_slots() {
        let status = Status::from_info("h:1", &Info::parse(PRIMARY)).ok();
        let status = status.as_ref().map(render_json);
        assert_eq!(
            status.as_deref(),
            Some(
                "{\"target\":\"h:1\",\"role\":\"primary\",\"version\":\"0.1.0\",\"uptime_seconds\":7,\
                 \"durable_lsn\":42,\"epoch\":2,\"epoch_start_lsn\":30,\"fenced_by_epoch\":null,\
                 \"connected_replicas\":1,\"replicas\":[{\"addr\":\"127.0.0.1\",\
                 \"listen_port\":7001,\"replica_id\":\"00ab\",\"state\":\"online\",\"write_lsn\":41,\
                 \"flush_lsn\":40,\"replay_lsn\":39,\"lag_lsns\":3,\"write_lag_ms\":0.250,\
                 \"flush_lag_ms\":1.500,\"replay_lag_ms\":2.000,\"last_ack_seconds_ago\":0}],\
                 \"slots\":[{\"replica_id\":\"00ab\",\"lsn\":40,\"retained_bytes\":1000,\
                 \"cap_left_bytes\":9000,\"connected\":true}],\"max_retained_bytes\":10000}"
            )
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
