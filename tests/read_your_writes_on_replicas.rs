//! Read-your-writes and bounded staleness on replicas, as a client meets them: the LSN of a
//! write (`SHIPLOG.LASTLSN`) as a token, `SHIPLOG.WAITLSN` on a replica, and replicas that
//! refuse reads with `-STALE` past `--max-staleness-ms`.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::time::{Duration, Instant};

use daemon::proxy::Proxy;
use daemon::{Daemon, free_port, wait_caught_up, wait_until};
use redis::Commands;

fn primary(dir: &std::path::Path) -> (Daemon, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    (Daemon::start(dir, &["--listen", &listen]), port)
}

fn last_lsn(con: &mut redis::Connection) -> u64 {
    redis::cmd("SHIPLOG.LASTLSN").query(con).unwrap()
}

#[test]
fn a_client_always_reads_its_own_writes_on_a_replica_through_waitlsn() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, port) = primary(&dir.path().join("p"));
    let replica = Daemon::start(
        &dir.path().join("r"),
        &["--replica-of", &format!("127.0.0.1:{port}")],
    );
    let mut p = primary.client();
    let mut r = replica.client();
    assert_eq!(last_lsn(&mut p), 0, "no write yet");
    for i in 0..2000u32 {
        let key = format!("ryw:{}", i % 97);
        let value = format!("value {i}");
        let _: () = p.set(&key, &value).unwrap();
        let lsn = last_lsn(&mut p);
        assert!(lsn > 0);
        let applied: u64 = redis::cmd("SHIPLOG.WAITLSN")
            .arg(lsn)
            .arg(10_000)
            .query(&mut r)
            .unwrap();
        assert!(applied >= lsn);
        let read: String = r.get(&key).unwrap();
        assert_eq!(read, value, "write {i} not visible after WAITLSN {lsn}");
    }
    // On the primary the token is applied already: no wait.
    let lsn = last_lsn(&mut p);
    let started = Instant::now();
    let applied: u64 = redis::cmd("SHIPLOG.WAITLSN")
        .arg(lsn)
        .arg(0)
        .query(&mut p)
        .unwrap();
    assert!(applied >= lsn);
    assert!(started.elapsed() < Duration::from_secs(1));
    drop((p, r));
    replica.stop();
    primary.stop();
}

#[test]
fn waitlsn_times_out_with_a_clear_error_and_the_pipeline_behind_it_waits_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, port) = primary(&dir.path().join("p"));
    let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap());
    let replica = Daemon::start(
        &dir.path().join("r"),
        &["--replica-of", &proxy.addr.to_string()],
    );
    let mut p = primary.client();
    let _: () = p.set("before", "stall").unwrap();
    assert!(wait_caught_up(&primary, &replica, 30));
    proxy.stall();
    let _: () = p.set("during", "stall").unwrap();
    let lsn = last_lsn(&mut p);
    let mut r = replica.client();
    let started = Instant::now();
    let mut raw = daemon::Raw::connect(replica.addr);
    // One pipeline: the wait, then a command behind it.
    let lsn_text = lsn.to_string();
    raw.send_command(&[b"SHIPLOG.WAITLSN", lsn_text.as_bytes(), b"300"]);
    raw.send_command(&[b"PING"]);
    let waited = raw.reply();
    let pong = raw.reply();
    let elapsed = started.elapsed();
    assert!(
        waited.starts_with("-TIMEOUT LSN") && waited.contains("not applied here yet"),
        "{waited}"
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert_eq!(
        pong, "+PONG\r\n",
        "the command behind the wait runs after it"
    );
    // Other connections are served meanwhile.
    let mut other = replica.client();
    let value: String = other.get("before").unwrap();
    assert_eq!(value, "stall");
    proxy.resume();
    let applied: u64 = redis::cmd("SHIPLOG.WAITLSN")
        .arg(lsn)
        .arg(10_000)
        .query(&mut r)
        .unwrap();
    assert!(applied >= lsn);
    let value: String = r.get("during").unwrap();
    assert_eq!(value, "stall");
    drop((p, r, other));
    replica.stop();
    primary.stop();
}

#[test]
fn a_replica_with_bounded_staleness_refuses_reads_once_it_is_too_far_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, port) = primary(&dir.path().join("p"));
    let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap());
    let replica = Daemon::start(
        &dir.path().join("r"),
        &[
            "--replica-of",
            &proxy.addr.to_string(),
            "--max-staleness-ms",
            "500",
        ],
    );
    let mut p = primary.client();
    let _: () = p.set("k", "v1").unwrap();
    assert!(wait_caught_up(&primary, &replica, 30));
    let mut r = replica.client();
    assert!(
        wait_until(10, || r.get::<_, String>("k").is_ok()),
        "a caught-up replica serves reads"
    );
    proxy.stall();
    let _: () = p.set("k", "v2").unwrap();
    assert!(
        wait_until(10, || {
            r.get::<_, String>("k")
                .is_err_and(|e| e.to_string().contains("more than --max-staleness-ms 500"))
        }),
        "a replica cut off from its primary refuses reads past its staleness bound"
    );
    // Commands that read no key still run.
    let pong: String = redis::cmd("PING").query(&mut r).unwrap();
    assert_eq!(pong, "PONG");
    proxy.resume();
    assert!(
        wait_until(30, || r.get::<_, String>("k").is_ok_and(|v| v == "v2")),
        "reads resume once the replica has caught up"
    );
    drop((p, r));
    replica.stop();
    primary.stop();
}

/// A client that leaves while it waits without a deadline does not leave its connection behind.
#[test]
fn a_client_that_leaves_during_an_unbounded_wait_is_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, _) = primary(&dir.path().join("p"));
    let mut p = primary.client();
    let clients = |con: &mut redis::Connection| -> u64 {
        daemon::info_field(con, "clients", "connected_clients")
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = clients(&mut p);
    for _ in 0..5 {
        let mut raw = daemon::Raw::connect(primary.addr);
        raw.send_command(&[b"SHIPLOG.WAITLSN", b"999999999", b"0"]);
        std::thread::sleep(Duration::from_millis(50));
        drop(raw);
    }
    assert!(
        wait_until(10, || clients(&mut p) == before),
        "connections of clients that left are closed: {} open, {before} before",
        clients(&mut p)
    );
    drop(p);
    primary.stop();
}
