//! Failover as an operator meets it, with real processes: promotion of the most advanced
//! replica to a new epoch (a lagging one is refused), an old primary that steps down when a
//! newer epoch reaches it (even after being paused across the promotion), and an old primary
//! that rejoins: its records no one else has are cut to a rollback file and it converges.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::time::Duration;

use daemon::proxy::Proxy;
use daemon::{Daemon, dump, free_port, replication_field, wait_caught_up, wait_until};
use nix::sys::signal::Signal;

fn set(con: &mut redis::Connection, key: &str, value: &str) {
    let () = redis::cmd("SET").arg(key).arg(value).query(con).unwrap();
}

fn command(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con)
}

#[test]
fn the_most_advanced_replica_wins_and_the_old_primary_rewinds_into_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let primary = Daemon::start(&dir.path().join("p"), &["--listen", &listen]);
    let to_a = Proxy::start(primary.addr);
    let to_b = Proxy::start(primary.addr);
    let a = Daemon::start(
        &dir.path().join("a"),
        &["--replica-of", &to_a.addr.to_string()],
    );
    let b = Daemon::start(
        &dir.path().join("b"),
        &["--replica-of", &to_b.addr.to_string()],
    );
    let mut p = primary.client();
    for i in 0..100 {
        set(&mut p, &format!("k{i}"), &format!("v{i}"));
    }
    assert!(wait_caught_up(&primary, &a, 30) && wait_caught_up(&primary, &b, 30));
    // The primary's peers frames reach both replicas with their heartbeats.
    std::thread::sleep(Duration::from_millis(600));
    to_a.stall();
    for i in 0..20 {
        set(&mut p, &format!("late{i}"), "b has these");
    }
    assert!(wait_caught_up(&primary, &b, 30));
    to_b.stall();
    // Acknowledged by the primary alone (asynchronous replication): no replica has these.
    for i in 0..10 {
        set(&mut p, &format!("lost{i}"), "only the old primary");
    }
    drop(p);
    primary.kill();

    // A lags B: promoting A would lose B's records.
    let refused = command(&mut a.client(), &["REPLICAOF", "NO", "ONE"]).unwrap_err();
    assert!(
        refused.to_string().contains("holds LSN"),
        "the lagging replica refuses: {refused}"
    );
    assert_eq!(replication_field(&a, "role").as_deref(), Some("slave"));
    assert_eq!(
        command(&mut b.client(), &["REPLICAOF", "NO", "ONE"]).unwrap(),
        "OK"
    );
    assert_eq!(replication_field(&b, "role").as_deref(), Some("master"));
    assert_eq!(replication_field(&b, "epoch").as_deref(), Some("2"));
    let b_addr = b.addr;
    let b_port = b_addr.port().to_string();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&b_port)
        .query(&mut a.client())
        .unwrap();
    let mut new_primary = b.client();
    for i in 0..10 {
        set(&mut new_primary, &format!("new{i}"), "epoch 2");
    }
    assert!(wait_caught_up(&b, &a, 30));
    assert_eq!(
        replication_field(&a, "epoch").as_deref(),
        Some("2"),
        "the history is shipped"
    );

    // The old primary comes back pointed at the new one: it rewinds and converges.
    let rejoined = Daemon::start(
        &dir.path().join("p"),
        &["--listen", &listen, "--replica-of", &b_addr.to_string()],
    );
    // Its own log reaches the new primary's LSN already: wait for the rewind first.
    assert!(
        wait_until(60, || replication_field(&rejoined, "replica_rewinds")
            .as_deref()
            == Some("1")),
        "the old primary rewinds: {}",
        rejoined.log()
    );
    assert!(
        wait_caught_up(&b, &rejoined, 60),
        "the old primary converges: {:?}",
        replication_field(&rejoined, "replica_last_error")
    );
    assert_eq!(
        replication_field(&rejoined, "replica_rewinds").as_deref(),
        Some("1"),
        "{}",
        rejoined.log()
    );
    let expected = dump(&mut new_primary);
    assert_eq!(expected.len(), 130);
    assert!(expected.iter().all(|(k, _)| !k.starts_with(b"lost")));
    assert_eq!(dump(&mut rejoined.client()), expected);
    assert_eq!(dump(&mut a.client()), expected);

    // The cut records are in the rollback file, and nowhere else.
    let rollback: Vec<_> = std::fs::read_dir(dir.path().join("p").join("rollback"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(rollback.len(), 1, "{rollback:?}");
    let inspect = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["inspect", "--json"])
        .arg(&rollback[0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"type\":\"record\""))
            .count(),
        10,
        "{text}"
    );
    let bytes = std::fs::read(&rollback[0]).unwrap();
    assert!(
        bytes.windows(5).any(|w| w == b"lost0"),
        "the file holds the cut writes"
    );
    drop(new_primary);
    for node in [rejoined, a, b] {
        node.stop();
    }
}

#[test]
fn a_primary_paused_across_a_promotion_steps_down_when_it_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(&dir.path().join("p"), &[]);
    let replica = Daemon::start(
        &dir.path().join("r"),
        &["--replica-of", &primary.addr.to_string()],
    );
    let mut p = primary.client();
    for i in 0..50 {
        set(&mut p, &format!("k{i}"), "v");
    }
    assert!(wait_caught_up(&primary, &replica, 30));
    primary.signal(Signal::SIGSTOP);
    assert_eq!(
        command(&mut replica.client(), &["REPLICAOF", "NO", "ONE"]).unwrap(),
        "OK"
    );
    set(&mut replica.client(), "after", "the promotion");
    primary.signal(Signal::SIGCONT);
    assert!(
        wait_until(30, || replication_field(&primary, "fenced_by_epoch")
            .as_deref()
            == Some("2")),
        "the old primary learns of epoch 2"
    );
    let refused = command(&mut p, &["SET", "k0", "split brain"]).unwrap_err();
    assert!(
        refused.to_string().contains("replaced by a failover"),
        "{refused}"
    );
    // The operator sees it in `shiplog status` too.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["status", &primary.addr.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("REPLACED by a failover (epoch 2 exists)"),
        "{text}"
    );
    // Fenced, it is unhealthy: exit status 1, and the reason on stderr.
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains("is unhealthy: fenced: a failover started epoch 2"),
        "{stderr}"
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["status", "--json", &replica.addr.to_string()])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&status.stdout);
    assert!(json.contains("\"epoch\":2"), "{json}");
    // Re-pointed, it follows the new primary (nothing to cut: it wrote nothing more).
    let port = replica.addr.port().to_string();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&port)
        .query(&mut p)
        .unwrap();
    assert!(wait_caught_up(&replica, &primary, 30));
    assert_eq!(dump(&mut p), dump(&mut replica.client()));
    assert_eq!(
        replication_field(&primary, "replica_rewinds").as_deref(),
        Some("0")
    );
    drop(p);
    primary.stop();
    replica.stop();
}

#[test]
fn a_node_promoted_after_hearing_of_an_epoch_it_never_joined_starts_a_newer_one() {
    // Found by the network-fault schedule SHIPLOG_NEMESIS_SEED=0x4538666743e5: an old primary
    // heard of epoch 2, was re-pointed (forgetting it) and promoted before it reached the new
    // primary, and started a second epoch 2. Two primaries of one epoch look alike to every
    // history check, and the first never stepped down.
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(&dir.path().join("a"), &[]);
    let b = Daemon::start(
        &dir.path().join("b"),
        &["--replica-of", &a.addr.to_string()],
    );
    for i in 0..20 {
        set(&mut a.client(), &format!("k{i}"), "v");
    }
    assert!(wait_caught_up(&a, &b, 30));
    assert_eq!(
        command(&mut b.client(), &["REPLICAOF", "NO", "ONE"]).unwrap(),
        "OK"
    );
    assert_eq!(replication_field(&b, "epoch").as_deref(), Some("2"));
    assert!(
        wait_until(30, || replication_field(&a, "fenced_by_epoch").as_deref()
            == Some("2")),
        "the old primary learns of epoch 2"
    );
    // The new primary dies before the old one reaches it: re-pointed at it, `a` never
    // receives epoch 2 into its own history.
    let b_port = b.addr.port().to_string();
    b.kill();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&b_port)
        .query(&mut a.client())
        .unwrap();
    assert_eq!(
        command(&mut a.client(), &["REPLICAOF", "NO", "ONE"]).unwrap(),
        "OK"
    );
    assert_eq!(
        replication_field(&a, "epoch").as_deref(),
        Some("3"),
        "a promotion goes above every epoch the node has heard of:\n{}",
        a.log()
    );
    a.stop();
}

#[test]
fn a_promotion_refused_for_a_newer_sibling_is_remembered_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(&dir.path().join("a"), &[]);
    let b = Daemon::start(
        &dir.path().join("b"),
        &["--replica-of", &a.addr.to_string()],
    );
    let c = Daemon::start(
        &dir.path().join("c"),
        &["--replica-of", &a.addr.to_string()],
    );
    for i in 0..20 {
        set(&mut a.client(), &format!("k{i}"), "v");
    }
    assert!(wait_caught_up(&a, &b, 30) && wait_caught_up(&a, &c, 30));
    // The primary's peers frames reach both replicas with their heartbeats.
    std::thread::sleep(Duration::from_millis(1500));
    a.kill();
    assert_eq!(
        command(&mut b.client(), &["REPLICAOF", "NO", "ONE"]).unwrap(),
        "OK"
    );
    let refused = command(&mut c.client(), &["REPLICAOF", "NO", "ONE"]).unwrap_err();
    assert!(
        refused.to_string().contains("already knows epoch 2"),
        "{refused}"
    );
    // The sibling that told it of epoch 2 is gone before the next attempt.
    b.kill();
    assert_eq!(
        command(&mut c.client(), &["REPLICAOF", "NO", "ONE"]).unwrap(),
        "OK"
    );
    assert_eq!(
        replication_field(&c, "epoch").as_deref(),
        Some("3"),
        "{}",
        c.log()
    );
    c.stop();
}

#[test]
fn a_replica_of_a_newer_epoch_refuses_to_follow_an_old_primary_which_steps_down() {
    let dir = tempfile::tempdir().unwrap();
    let old = Daemon::start(&dir.path().join("old"), &[]);
    let new = Daemon::start(
        &dir.path().join("new"),
        &["--replica-of", &old.addr.to_string()],
    );
    set(&mut old.client(), "k", "v");
    assert!(wait_caught_up(&old, &new, 30));
    // An operator's mistake: the replica is promoted while the old primary runs on.
    let forced: String = redis::cmd("SHIPLOG.PROMOTE")
        .arg("FORCE")
        .query(&mut new.client())
        .unwrap();
    assert!(forced.starts_with("OK promoted to epoch 2"), "{forced}");
    // A replica of the new epoch is pointed at the old primary by mistake.
    let follower = Daemon::start(
        &dir.path().join("f"),
        &["--replica-of", &new.addr.to_string()],
    );
    assert!(wait_caught_up(&new, &follower, 30));
    let port = old.addr.port().to_string();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&port)
        .query(&mut follower.client())
        .unwrap();
    assert!(
        wait_until(30, || replication_field(&old, "fenced_by_epoch").as_deref()
            == Some("2")),
        "the old primary steps down"
    );
    assert!(command(&mut old.client(), &["SET", "k", "x"]).is_err());
    assert!(wait_until(30, || replication_field(
        &follower,
        "replica_last_error"
    )
    .is_some_and(|e| e.contains("epoch"))));
    assert_eq!(
        redis::cmd("GET")
            .arg("k")
            .query::<String>(&mut follower.client())
            .unwrap(),
        "v"
    );
    for node in [follower, new, old] {
        node.stop();
    }
}

#[test]
fn an_old_primary_restarted_alone_acknowledges_nothing_and_its_writes_end_in_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let sync = ["--sync-replicas", "1", "--sync-timeout-ms", "300"];
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend(sync);
    let old = Daemon::start(&dir.path().join("old"), &args);
    let mut replica_args = vec!["--replica-of".to_owned(), old.addr.to_string()];
    replica_args.extend(sync.iter().map(|s| (*s).to_owned()));
    let replica_args: Vec<&str> = replica_args.iter().map(String::as_str).collect();
    let new = Daemon::start(&dir.path().join("new"), &replica_args);
    for i in 0..20 {
        set(&mut old.client(), &format!("k{i}"), "acknowledged");
    }
    old.kill();
    assert_eq!(
        command(&mut new.client(), &["REPLICAOF", "NO", "ONE"]).unwrap(),
        "OK"
    );
    // The old primary comes back alone, at an address the new primary does not know: nobody
    // tells it about epoch 2, and with --sync-replicas 1 it acknowledges nothing.
    let restarted = Daemon::start(&dir.path().join("old"), &args);
    let mut o = restarted.client();
    for i in 0..5 {
        let refused = command(&mut o, &["SET", &format!("split{i}"), "never acknowledged"])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("NOREPLICAS"), "{refused}");
    }
    // A replica of the new epoch pointed at it refuses to follow it, and it steps down.
    let follower = Daemon::start(
        &dir.path().join("f"),
        &["--replica-of", &new.addr.to_string()],
    );
    let port = new.addr.port().to_string();
    assert!(wait_caught_up(&new, &follower, 30));
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(restarted.addr.port().to_string())
        .query(&mut follower.client())
        .unwrap();
    assert!(
        wait_until(30, || replication_field(&restarted, "fenced_by_epoch")
            .as_deref()
            == Some("2")),
        "the old primary steps down"
    );
    // Re-pointed, it rewinds: the unacknowledged writes are in rollback/ and nowhere else.
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&port)
        .query(&mut o)
        .unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&port)
        .query(&mut follower.client())
        .unwrap();
    assert!(wait_until(60, || replication_field(
        &restarted,
        "replica_rewinds"
    )
    .as_deref()
        == Some("1")));
    assert!(wait_caught_up(&new, &restarted, 60) && wait_caught_up(&new, &follower, 60));
    let expected = dump(&mut new.client());
    assert_eq!(expected.len(), 20);
    assert_eq!(dump(&mut o), expected);
    assert_eq!(dump(&mut follower.client()), expected);
    let rollback = std::fs::read_dir(dir.path().join("old").join("rollback"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(rollback.len(), 1);
    for i in 0..5 {
        let key = format!("split{i}");
        assert!(rollback[0].windows(key.len()).any(|w| w == key.as_bytes()));
    }
    drop(o);
    for node in [follower, restarted, new] {
        node.stop();
    }
}
