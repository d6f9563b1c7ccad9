//! An operator sees replication from both ends: `shiplog status` (text and JSON) against a
//! real primary and replica, with and without a password, its exit status telling a healthy
//! node from an unhealthy or unreachable one, and the replication series of the Prometheus
//! endpoint on both nodes.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
mod daemon;

use std::net::SocketAddr;

use common::{shiplog, shiplog_exit_code};
use daemon::{Daemon, free_port, info_field, scrape, wait_caught_up, wait_until};
use redis::Commands;
use serde_json::Value;

/// Generous: a loaded CI machine may take seconds to ship and acknowledge.
const DEADLINE_SECS: u64 = 60;

/// `shiplog status`'s exit statuses (`docs/operations.md`), as `pg_isready`'s.
const UNHEALTHY: i32 = 1;
const NO_RESPONSE: i32 = 2;
const NOT_CHECKED: i32 = 3;

/// `shiplog status ADDR --json`, parsed, and its exit status; it prints exactly one object.
fn status_json_and_code(addr: SocketAddr) -> (Value, Option<i32>, String) {
    let (code, stdout, stderr) = shiplog_exit_code(&["status", &addr.to_string(), "--json"]);
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout} {stderr}");
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (json, code, stderr)
}

/// `shiplog status ADDR --json` of a healthy node, parsed.
fn status_json(addr: SocketAddr) -> Value {
    let (json, code, stderr) = status_json_and_code(addr);
    assert_eq!(code, Some(0), "shiplog status --json: {stderr}");
    assert_eq!(json["problems"], serde_json::json!([]), "{json}");
    json
}

fn durable_lsn(node: &Daemon) -> u64 {
    let mut con = node.client();
    info_field(&mut con, "persistence", "durable_lsn")
        .unwrap()
        .parse()
        .unwrap()
}

fn write_keys(primary: &Daemon, count: usize) {
    let mut con = primary.client();
    for i in 0..count {
        let _: () = con.set(format!("key{i}"), format!("value{i}")).unwrap();
    }
}

/// The replica's identity, as it reports it (its `replica-id` file bound to its directory).
fn replica_id(replica: &Daemon) -> String {
    info_field(&mut replica.client(), "replication", "replica_id").unwrap()
}

#[test]
fn shiplog_status_describes_a_primary_and_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(&dir.path().join("p"), &[]);
    let replica = Daemon::start(
        &dir.path().join("r"),
        &["--replica-of", &primary.addr.to_string()],
    );
    write_keys(&primary, 100);
    assert!(wait_caught_up(&primary, &replica, DEADLINE_SECS));
    let durable = durable_lsn(&primary);
    assert!(durable >= 100, "{durable}");

    // The primary hears the replica's acknowledgement and ticks its slot a little later, and the
    // replica compares digests at the next heartbeat.
    let mut p = Value::Null;
    assert!(
        wait_until(DEADLINE_SECS, || {
            p = status_json(primary.addr);
            let r0 = &p["replicas"][0];
            ["write_lsn", "flush_lsn", "replay_lsn"]
                .iter()
                .all(|field| r0[field] == durable)
                && p["slots"][0]["lsn"] == durable
        }),
        "the primary sees the replica caught up: {p}"
    );
    assert_eq!(p["target"], primary.addr.to_string());
    assert_eq!(p["role"], "primary");
    assert_eq!(p["durable_lsn"], durable);
    assert_eq!(p["connected_replicas"], 1);
    let r0 = &p["replicas"][0];
    assert_eq!(r0["addr"], "127.0.0.1");
    assert_eq!(r0["listen_port"], replica.addr.port());
    assert_eq!(r0["replica_id"], replica_id(&replica));
    assert_eq!(r0["state"], "online");
    assert_eq!(r0["write_lsn"], durable);
    assert_eq!(r0["flush_lsn"], durable);
    assert_eq!(r0["lag_lsns"], 0);
    assert_eq!(r0["replay_lag_ms"].as_f64(), Some(0.0), "caught up: {r0}");
    assert!(r0["last_ack_seconds_ago"].is_u64(), "{r0}");
    let slot = &p["slots"][0];
    assert_eq!(slot["replica_id"], r0["replica_id"]);
    assert_eq!(slot["connected"], true);
    assert!(slot["retained_bytes"].as_u64().unwrap() > 0, "{slot}");
    assert_eq!(
        slot["retained_bytes"].as_u64().unwrap() + slot["cap_left_bytes"].as_u64().unwrap(),
        p["max_retained_bytes"].as_u64().unwrap()
    );

    let lsn_fields = [
        "received_lsn",
        "durable_lsn",
        "applied_lsn",
        "primary_durable_lsn",
    ];
    let mut r = Value::Null;
    assert!(
        wait_until(DEADLINE_SECS, || {
            r = status_json(replica.addr);
            r["digest_match"] == true
                && r["digest_checked_lsn"] == durable
                && lsn_fields.iter().all(|field| r[field] == durable)
        }),
        "the replica holds everything and checks the primary's digest: {r}"
    );
    assert_eq!(r["role"], "replica");
    assert_eq!(r["primary"], primary.addr.to_string());
    assert_eq!(r["link_status"], "up");
    assert!(r["last_io_seconds_ago"].is_u64(), "{r}");
    assert_eq!(r["lag_lsns"], 0);
    assert_eq!(r["lag_ms"], 0);
    assert_eq!(r["sessions"], 1);
    assert_eq!(r["last_error"], Value::Null);
    assert_eq!(r["diverged"], false);

    // The same, for people.
    let (ok, text, stderr) = shiplog(&["status", &primary.addr.to_string()]);
    assert!(ok, "{stderr}");
    for expected in [
        "role              primary".to_owned(),
        format!("durable LSN       {durable}"),
        "replicas          1 connected".to_owned(),
        format!("127.0.0.1:{}  online", replica.addr.port()),
        format!("write {durable}, flush {durable}, replay {durable}"),
        "0 LSNs; write 0.000 ms".to_owned(),
        format!("LSN {durable}, retains"),
        "connected".to_owned(),
    ] {
        assert!(text.contains(&expected), "lacks {expected:?}:\n{text}");
    }
    let (ok, text, stderr) = shiplog(&["status", &replica.addr.to_string()]);
    assert!(ok, "{stderr}");
    for expected in [
        "role              replica".to_owned(),
        format!("primary           {}", primary.addr),
        "link              up, last I/O".to_owned(),
        format!(
            "received {durable}, durable {durable}, applied {durable}; primary durable {durable}"
        ),
        "lag               0 LSNs, 0 ms".to_owned(),
        format!("digest check      match at LSN {durable}"),
        "last error        none".to_owned(),
        "diverged          no".to_owned(),
    ] {
        assert!(text.contains(&expected), "lacks {expected:?}:\n{text}");
    }

    // A replica whose primary is gone still answers, and says so: it is unhealthy.
    let primary_addr = primary.addr;
    primary.stop();
    let (mut code, mut stderr) = (None, String::new());
    assert!(
        wait_until(DEADLINE_SECS, || {
            (r, code, stderr) = status_json_and_code(replica.addr);
            r["link_status"] == "down" && r["last_error"].is_string()
        }),
        "the replica reports the lost link: {r}"
    );
    assert_eq!(code, Some(UNHEALTHY), "{stderr}");
    let reason = format!("is unhealthy: the link to the primary {primary_addr} is down");
    assert!(stderr.contains(&reason), "{stderr}");
    assert!(
        r["problems"][0].as_str().unwrap().contains("is down"),
        "{r}"
    );
    let (code, text, stderr) = shiplog_exit_code(&["status", &replica.addr.to_string()]);
    assert_eq!(code, Some(UNHEALTHY), "{stderr}");
    assert!(text.contains("link              down"), "{text}");
    assert!(stderr.contains(&reason), "{stderr}");
    replica.stop();
}

#[test]
fn shiplog_status_authenticates_and_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "pass word\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess\n").unwrap();
    let node = Daemon::start(
        &dir.path().join("data"),
        &["--requirepass-file", secret.to_str().unwrap()],
    );
    let addr = node.addr.to_string();

    // It answers, but cannot be asked without the right password.
    let (code, stdout, stderr) = shiplog_exit_code(&["status", &addr]);
    assert_eq!(code, Some(NOT_CHECKED), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--password-file"), "{stderr}");
    let (code, _, stderr) =
        shiplog_exit_code(&["status", &addr, "--password-file", wrong.to_str().unwrap()]);
    assert_eq!(code, Some(NOT_CHECKED), "a wrong password fails: {stderr}");
    assert!(stderr.contains("refused AUTH"), "{stderr}");
    let (ok, stdout, stderr) = shiplog(&[
        "status",
        &addr,
        "--json",
        "--password-file",
        secret.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["role"], "primary");
    assert_eq!(status["connected_replicas"], 0);
    node.stop();

    // Nothing listens there now (the port was free a moment ago): exit 2, a message, no output.
    let gone = format!("127.0.0.1:{}", free_port());
    let (code, stdout, stderr) = shiplog_exit_code(&["status", &gone]);
    assert_eq!(code, Some(NO_RESPONSE), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.starts_with("shiplog: cannot connect to"), "{stderr}");
    let (code, _, stderr) = shiplog_exit_code(&["status", "no-port-here"]);
    assert_eq!(code, Some(NO_RESPONSE), "{stderr}");
    assert!(stderr.contains("cannot resolve no-port-here"), "{stderr}");
    // A usage error is not a node that does not answer.
    let (code, _, stderr) = shiplog_exit_code(&["status", &addr, "--no-such-flag"]);
    assert_eq!(code, Some(NOT_CHECKED), "{stderr}");
}

/// The value of one series (name and labels exactly as exposed).
fn series(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Every family is declared with HELP and TYPE.
fn assert_declared(body: &str, families: &[(&str, &str)]) {
    for (family, kind) in families {
        assert!(
            body.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{body}"
        );
        assert!(
            body.contains(&format!("# TYPE {family} {kind}\n")),
            "no TYPE {kind} for {family}:\n{body}"
        );
    }
}

#[test]
fn metrics_show_replication_on_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let primary = Daemon::start(&dir.path().join("p"), &metrics);
    let primary_addr = primary.addr.to_string();
    let replica = Daemon::start(
        &dir.path().join("r"),
        &[&metrics[..], &["--replica-of", &primary_addr]].concat(),
    );
    write_keys(&primary, 100);
    assert!(wait_caught_up(&primary, &replica, DEADLINE_SECS));
    let durable = durable_lsn(&primary) as f64;

    let labels = format!(
        "{{replica_id=\"{}\",addr=\"127.0.0.1:{}\"}}",
        replica_id(&replica),
        replica.addr.port()
    );
    let per_replica = |family: &str| format!("{family}{labels}");
    let slot = format!("{{replica_id=\"{}\"}}", replica_id(&replica));
    let mut body = String::new();
    assert!(
        wait_until(DEADLINE_SECS, || {
            body = scrape(primary.metrics.unwrap());
            [
                "shiplog_connected_replica_write_lsn",
                "shiplog_connected_replica_flush_lsn",
                "shiplog_connected_replica_replay_lsn",
            ]
            .iter()
            .all(|family| series(&body, &per_replica(family)) == Some(durable))
                && series(&body, &format!("shiplog_replication_slot_lsn{slot}")) == Some(durable)
        }),
        "the primary's metrics show the replica caught up:\n{body}"
    );
    assert_declared(
        &body,
        &[
            ("shiplog_connected_replicas", "gauge"),
            ("shiplog_connected_replica_write_lsn", "gauge"),
            ("shiplog_connected_replica_flush_lsn", "gauge"),
            ("shiplog_connected_replica_replay_lsn", "gauge"),
            ("shiplog_connected_replica_lag_lsns", "gauge"),
            ("shiplog_connected_replica_write_lag_seconds", "gauge"),
            ("shiplog_connected_replica_flush_lag_seconds", "gauge"),
            ("shiplog_connected_replica_replay_lag_seconds", "gauge"),
            ("shiplog_replication_slot_lsn", "gauge"),
            ("shiplog_replication_slot_retained_bytes", "gauge"),
            ("shiplog_replication_slot_max_retained_bytes", "gauge"),
        ],
    );
    assert_eq!(series(&body, "shiplog_connected_replicas"), Some(1.0));
    for family in [
        "shiplog_connected_replica_lag_lsns",
        "shiplog_connected_replica_write_lag_seconds",
        "shiplog_connected_replica_flush_lag_seconds",
        "shiplog_connected_replica_replay_lag_seconds",
    ] {
        assert_eq!(series(&body, &per_replica(family)), Some(0.0), "{family}");
    }
    let retained = series(
        &body,
        &format!("shiplog_replication_slot_retained_bytes{slot}"),
    );
    let cap = series(&body, "shiplog_replication_slot_max_retained_bytes");
    assert!(
        matches!((retained, cap), (Some(r), Some(c)) if r > 0.0 && r <= c),
        "{retained:?} of {cap:?}"
    );
    // A primary has no link of its own.
    assert!(!body.contains("shiplog_primary_link_up"), "{body}");

    let replica_families = [
        ("shiplog_replica_received_lsn", "gauge"),
        ("shiplog_replica_durable_lsn", "gauge"),
        ("shiplog_replica_applied_lsn", "gauge"),
        ("shiplog_primary_durable_lsn", "gauge"),
        ("shiplog_replica_lag_lsns", "gauge"),
        ("shiplog_replica_lag_seconds", "gauge"),
        ("shiplog_primary_link_up", "gauge"),
        ("shiplog_replica_sessions_total", "counter"),
        ("shiplog_replica_digest_mismatch", "gauge"),
        ("shiplog_replica_diverged", "gauge"),
        ("shiplog_replica_bootstrap_in_progress", "gauge"),
        ("shiplog_replica_bootstrap_received_bytes", "gauge"),
        ("shiplog_replica_bootstrap_total_bytes", "gauge"),
        ("shiplog_replica_bootstraps_total", "counter"),
    ];
    let expected = [
        ("shiplog_primary_durable_lsn", durable),
        ("shiplog_replica_received_lsn", durable),
        ("shiplog_replica_durable_lsn", durable),
        ("shiplog_replica_applied_lsn", durable),
        ("shiplog_replica_lag_lsns", 0.0),
        ("shiplog_replica_lag_seconds", 0.0),
        ("shiplog_primary_link_up", 1.0),
        ("shiplog_replica_sessions_total", 1.0),
        ("shiplog_replica_digest_mismatch", 0.0),
        ("shiplog_replica_diverged", 0.0),
        ("shiplog_replica_bootstrap_in_progress", 0.0),
        ("shiplog_replica_bootstraps_total", 0.0),
        ("shiplog_connected_replicas", 0.0),
    ];
    assert!(
        wait_until(DEADLINE_SECS, || {
            body = scrape(replica.metrics.unwrap());
            expected
                .iter()
                .all(|(name, value)| series(&body, name) == Some(*value))
        }),
        "the replica's metrics show it caught up, {expected:?}:\n{body}"
    );
    assert_declared(&body, &replica_families);
    assert!(
        !body.contains("shiplog_connected_replica_replay_lsn{"),
        "a replica ships to no one:\n{body}"
    );

    // The link going down shows.
    primary.stop();
    assert!(
        wait_until(DEADLINE_SECS, || {
            body = scrape(replica.metrics.unwrap());
            series(&body, "shiplog_primary_link_up") == Some(0.0)
        }),
        "link down:\n{body}"
    );
    replica.stop();
}

fn compaction_hold(node: &Daemon) -> String {
    info_field(&mut node.client(), "persistence", "compaction_hold_lsn").unwrap()
}

#[test]
fn info_shows_where_replicas_hold_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let lone = Daemon::start(&dir.path().join("lone"), &[]);
    write_keys(&lone, 10);
    assert_eq!(
        compaction_hold(&lone),
        "none",
        "a lone node compacts all it has"
    );
    lone.stop();

    // Its writes wait for a replica and none holds a slot yet: nothing it wrote is settled.
    let primary = Daemon::start(
        &dir.path().join("p"),
        &["--sync-replicas", "1", "--sync-timeout-ms", "60000"],
    );
    assert!(
        wait_until(DEADLINE_SECS, || compaction_hold(&primary) == "0"),
        "{}",
        compaction_hold(&primary)
    );
    let replica = Daemon::start(
        &dir.path().join("r"),
        &["--replica-of", &primary.addr.to_string()],
    );
    assert_eq!(compaction_hold(&replica), "0", "a replica's log is a copy");
    write_keys(&primary, 50);
    assert!(wait_caught_up(&primary, &replica, DEADLINE_SECS));
    let durable = durable_lsn(&primary);
    // The slot follows the replica's durable LSN at the next tick.
    assert!(
        wait_until(DEADLINE_SECS, || compaction_hold(&primary)
            == durable.to_string()),
        "hold {} after the replica made LSN {durable} durable",
        compaction_hold(&primary)
    );
    replica.stop();
    primary.stop();
}
