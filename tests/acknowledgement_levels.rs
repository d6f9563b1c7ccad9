//! Acknowledgement levels and `WAIT`, as a client meets them: writes answered only once enough
//! replicas hold them (`--sync-replicas`, `--sync-level`, `SHIPLOG.ACKLEVEL`), `-NOREPLICAS`
//! for writes whose acknowledgements did not come in time (durable here: indeterminate),
//! `--sync-fallback async`, and Redis' `WAIT`.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::time::{Duration, Instant};

use daemon::proxy::Proxy;
use daemon::{Daemon, Raw, info_field, scrape, start_replica, wait_until};
use redis::Commands;

const NOREPLICAS: &str = "-NOREPLICAS Not enough good replicas to write.\r\n";

/// Waits until the primary counts `n` replicas that are online (not bootstrapping).
fn wait_replicas(primary: &Daemon, n: usize) {
    let mut p = primary.client();
    assert!(
        wait_until(30, || {
            let info: String = redis::cmd("INFO").arg("replication").query(&mut p).unwrap();
            info.lines().filter(|l| l.contains("state=online")).count() == n
        }),
        "{n} replica(s) never came online"
    );
}

fn sync_field(con: &mut redis::Connection, field: &str) -> String {
    info_field(con, "replication", field).unwrap()
}

#[test]
fn without_replicas_a_write_times_out_with_noreplicas_yet_is_durable_here() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(
        &dir.path().join("p"),
        &["--sync-replicas", "1", "--sync-timeout-ms", "300"],
    );
    let mut raw = Raw::connect(primary.addr);
    let started = Instant::now();
    assert_eq!(raw.command(&["SET", "k", "v"]), NOREPLICAS);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Indeterminate, not undone: the write is there.
    assert_eq!(raw.command(&["GET", "k"]), "$1\r\nv\r\n");
    let mut p = primary.client();
    assert_eq!(sync_field(&mut p, "sync_level"), "replicated");
    assert_eq!(sync_field(&mut p, "sync_replicas"), "1");
    assert_eq!(sync_field(&mut p, "sync_timeouts"), "1");
    assert_eq!(sync_field(&mut p, "sync_fallbacks"), "0");
    assert_eq!(sync_field(&mut p, "sync_state"), "ok");
    primary.stop();
}

#[test]
fn a_connection_can_choose_its_own_level() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(
        &dir.path().join("p"),
        &["--sync-replicas", "1", "--sync-timeout-ms", "3000"],
    );
    let mut raw = Raw::connect(primary.addr);
    assert_eq!(
        raw.command(&["SHIPLOG.ACKLEVEL"]),
        "$12\r\nreplicated 1\r\n"
    );
    assert_eq!(raw.command(&["SHIPLOG.ACKLEVEL", "local"]), "+OK\r\n");
    let started = Instant::now();
    for i in 0..20 {
        assert_eq!(raw.command(&["SET", "k", &i.to_string()]), "+OK\r\n");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "local writes do not wait for replicas"
    );
    assert!(raw.command(&["CLIENT", "INFO"]).contains("acklevel=local"));
    // Mistakes get a clear error and change nothing.
    for bad in [
        &["SHIPLOG.ACKLEVEL", "replicated"][..],
        &["SHIPLOG.ACKLEVEL", "replicated", "0"],
        &["SHIPLOG.ACKLEVEL", "applied", "many"],
        &["SHIPLOG.ACKLEVEL", "local", "1"],
        &["SHIPLOG.ACKLEVEL", "quorum"],
    ] {
        let reply = raw.command(bad);
        assert!(reply.starts_with("-ERR "), "{bad:?}: {reply}");
    }
    assert_eq!(raw.command(&["SHIPLOG.ACKLEVEL"]), "$5\r\nlocal\r\n");
    // Another connection keeps the server's level; `default` goes back to it.
    let mut other = Raw::connect(primary.addr);
    assert_eq!(other.command(&["SET", "k", "x"]), NOREPLICAS);
    assert_eq!(raw.command(&["SHIPLOG.ACKLEVEL", "default"]), "+OK\r\n");
    assert_eq!(raw.command(&["SET", "k", "y"]), NOREPLICAS);
    // And a primary without the flag gates a connection that asks.
    assert_eq!(
        raw.command(&["SHIPLOG.ACKLEVEL", "applied", "2"]),
        "+OK\r\n"
    );
    assert!(
        raw.command(&["CLIENT", "INFO"])
            .contains("acklevel=applied:2")
    );
    primary.stop();
}

#[test]
fn with_a_replica_each_acknowledged_write_is_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(
        &dir.path().join("p"),
        &["--sync-replicas", "1", "--sync-level", "applied"],
    );
    let replica = start_replica(&dir.path().join("r"), primary.addr);
    wait_replicas(&primary, 1);
    let mut p = primary.client();
    let mut r = replica.client();
    // `applied 1`: visible on the replica the moment the primary answers.
    for i in 0..200u32 {
        let key = format!("k{}", i % 17);
        let value = format!("v{i}");
        let _: () = p.set(&key, &value).unwrap();
        let read: String = r.get(&key).unwrap();
        assert_eq!(read, value, "write {i} acknowledged but not on the replica");
    }
    // `replicated 1`: durable on the replica, as the primary's view of it says.
    let _: () = redis::cmd("SHIPLOG.ACKLEVEL")
        .arg("replicated")
        .arg(1)
        .query(&mut p)
        .unwrap();
    for i in 0..50u32 {
        let _: () = p.set("durable", i).unwrap();
        let lsn: u64 = redis::cmd("SHIPLOG.LASTLSN").query(&mut p).unwrap();
        let info: String = redis::cmd("INFO").arg("replication").query(&mut p).unwrap();
        let flush: u64 = info
            .split([',', '\n'])
            .find_map(|f| f.strip_prefix("flush_lsn="))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            flush >= lsn,
            "write at LSN {lsn} answered, replica durable at {flush}"
        );
    }
    assert_eq!(sync_field(&mut p, "sync_timeouts"), "0");
    drop((p, r));
    replica.stop();
    primary.stop();
}

#[test]
fn a_stalled_replica_link_makes_writes_time_out_until_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(
        &dir.path().join("p"),
        &["--sync-replicas", "1", "--sync-timeout-ms", "500"],
    );
    let proxy = Proxy::start(primary.addr);
    let replica = start_replica(&dir.path().join("r"), proxy.addr);
    wait_replicas(&primary, 1);
    let mut raw = Raw::connect(primary.addr);
    assert_eq!(raw.command(&["SET", "k", "1"]), "+OK\r\n");
    proxy.stall();
    assert_eq!(raw.command(&["SET", "k", "2"]), NOREPLICAS);
    // Every write command goes through the same gate: batches, read-modify-writes, FLUSHALL.
    assert_eq!(raw.command(&["MSET", "a", "1", "b", "2"]), NOREPLICAS);
    assert_eq!(raw.command(&["INCR", "n"]), NOREPLICAS);
    assert_eq!(raw.command(&["GET", "n"]), "$1\r\n1\r\n");
    // A write that writes nothing waits for nobody.
    assert_eq!(raw.command(&["SETNX", "n", "5"]), ":0\r\n");
    // A pipelined read after a gated write is answered after it, and sees it.
    raw.send(b"SET k 3\r\nGET k\r\n");
    assert_eq!(raw.reply(), NOREPLICAS);
    assert_eq!(raw.reply(), "$1\r\n3\r\n");
    // Other connections are served meanwhile.
    let mut local = Raw::connect(primary.addr);
    assert_eq!(local.command(&["SHIPLOG.ACKLEVEL", "local"]), "+OK\r\n");
    raw.send(b"SET k 4\r\n");
    // Visible here once durable here (its client waits for the replica).
    assert!(wait_until(10, || local.command(&["GET", "k"]) == "$1\r\n4\r\n"));
    assert_eq!(raw.reply(), NOREPLICAS);
    proxy.resume();
    assert!(
        wait_until(30, || raw.command(&["SET", "k", "5"]) == "+OK\r\n"),
        "writes are acknowledged again once the replica catches up"
    );
    let mut p = primary.client();
    assert!(sync_field(&mut p, "sync_timeouts").parse::<u64>().unwrap() >= 3);
    drop(p);
    replica.stop();
    primary.stop();
}

#[test]
fn the_async_fallback_answers_ok_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(
        &dir.path().join("p"),
        &[
            "--sync-replicas",
            "1",
            "--sync-timeout-ms",
            "200",
            "--sync-fallback",
            "async",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let mut raw = Raw::connect(primary.addr);
    let started = Instant::now();
    assert_eq!(raw.command(&["SET", "k", "v"]), "+OK\r\n");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(raw.command(&["SET", "k", "w"]), "+OK\r\n");
    let mut p = primary.client();
    assert_eq!(sync_field(&mut p, "sync_fallback"), "async");
    assert_eq!(sync_field(&mut p, "sync_fallbacks"), "2");
    assert_eq!(sync_field(&mut p, "sync_timeouts"), "0");
    assert_eq!(sync_field(&mut p, "sync_state"), "degraded");
    let metrics = scrape(primary.metrics.unwrap());
    assert!(
        metrics.contains("\nshiplog_sync_fallbacks_total 2\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nshiplog_sync_degraded 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nshiplog_sync_timeouts_total 0\n"),
        "{metrics}"
    );
    assert!(primary.wait_for_log("--sync-fallback async"));
    // Rate-limited: two fallbacks, one warning.
    assert_eq!(primary.log().matches("--sync-fallback async").count(), 1);
    primary.stop();
}

#[test]
fn pipelined_gated_writes_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(&dir.path().join("p"), &["--sync-replicas", "1"]);
    let replica = start_replica(&dir.path().join("r"), primary.addr);
    wait_replicas(&primary, 1);
    let mut raw = Raw::connect(primary.addr);
    let mut pipeline = Vec::new();
    for i in 0..100 {
        pipeline.extend_from_slice(format!("SET p {i}\r\nINCR n\r\n").as_bytes());
    }
    pipeline.extend_from_slice(b"GET p\r\nFLUSHALL\r\nGET p\r\n");
    raw.send(&pipeline);
    for i in 0..100 {
        assert_eq!(raw.reply(), "+OK\r\n");
        assert_eq!(raw.reply(), format!(":{}\r\n", i + 1));
    }
    assert_eq!(raw.reply(), "$2\r\n99\r\n");
    assert_eq!(raw.reply(), "+OK\r\n");
    assert_eq!(raw.reply(), "$-1\r\n");
    replica.stop();
    primary.stop();
}

#[test]
fn wait_counts_the_replicas_holding_the_connections_last_write() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(&dir.path().join("p"), &[]);
    let mut raw = Raw::connect(primary.addr);
    // No replica: `WAIT 0 0` is met at once; `WAIT 1 100` gives up with the count.
    assert_eq!(raw.command(&["WAIT", "0", "0"]), ":0\r\n");
    let started = Instant::now();
    assert_eq!(raw.command(&["WAIT", "1", "100"]), ":0\r\n");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        raw.command(&["WAIT", "1", "-1"]),
        "-ERR timeout is negative\r\n"
    );
    assert!(raw.command(&["WAIT", "x", "0"]).starts_with("-ERR"));
    let replica = start_replica(&dir.path().join("r"), primary.addr);
    wait_replicas(&primary, 1);
    assert_eq!(raw.command(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(raw.command(&["WAIT", "1", "0"]), ":1\r\n");
    assert_eq!(raw.command(&["WAIT", "2", "100"]), ":1\r\n");
    // A connection that never wrote is held by every replica.
    let mut fresh = Raw::connect(primary.addr);
    assert_eq!(fresh.command(&["WAIT", "1", "0"]), ":1\r\n");
    // On a replica, as in Redis.
    let mut on_replica = Raw::connect(replica.addr);
    assert!(
        on_replica
            .command(&["WAIT", "1", "0"])
            .starts_with("-ERR WAIT cannot be used with replica instances.")
    );
    replica.stop();
    primary.stop();
}

#[test]
fn settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        &["--sync-replicas", "65"][..],
        &["--sync-timeout-ms", "0"],
        &["--sync-level", "visible"],
        &["--sync-fallback", "never"],
    ] {
        assert!(
            Daemon::try_start(&dir.path().join("p"), bad).is_err(),
            "{bad:?} accepted"
        );
    }
    let config = dir.path().join("shiplog.toml");
    std::fs::write(&config, "sync-replicas = 1\nsync-level = \"applied\"\n").unwrap();
    let primary = Daemon::start(
        &dir.path().join("p"),
        &["--config", config.to_str().unwrap()],
    );
    let mut p = primary.client();
    assert_eq!(sync_field(&mut p, "sync_level"), "applied");
    assert_eq!(sync_field(&mut p, "sync_timeout_ms"), "5000");
    assert_eq!(sync_field(&mut p, "sync_fallback"), "fail");
    let level: String = redis::cmd("SHIPLOG.ACKLEVEL").query(&mut p).unwrap();
    assert_eq!(level, "applied 1");
    drop(p);
    primary.stop();
    // Without the settings: `local`, and the gate is off.
    let plain = Daemon::start(&dir.path().join("q"), &[]);
    let mut q = plain.client();
    assert_eq!(sync_field(&mut q, "sync_level"), "local");
    assert_eq!(sync_field(&mut q, "sync_state"), "off");
    drop(q);
    plain.stop();
}
