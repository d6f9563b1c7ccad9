//! A write gated for replica acknowledgements on a primary that a failover then replaces must
//! never be answered OK by acknowledgements of a later epoch. Found by `network_faults.rs`: an
//! old primary stopped across a promotion, re-pointed (its unshipped write moved to
//! `rollback/`) and promoted again within `--sync-timeout-ms` answered the still-gated write
//! OK once its new replicas acknowledged LSNs past the write's, though the record at that LSN
//! was another one of the new epoch: an acknowledged write that no node holds.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::time::Duration;

use daemon::proxy::Proxy;
use daemon::{Daemon, Raw, info_field, wait_caught_up, wait_until};

const FLAGS: [&str; 4] = ["--sync-replicas", "1", "--sync-timeout-ms", "5000"];

fn replicaof(node: &Daemon, target: Option<&str>) {
    let mut cmd = redis::cmd("REPLICAOF");
    match target {
        Some(addr) => {
            let (host, port) = addr.rsplit_once(':').unwrap();
            cmd.arg(host).arg(port)
        }
        None => cmd.arg("NO").arg("ONE"),
    };
    let reply: String = cmd.query(&mut node.client()).unwrap();
    assert_eq!(reply, "OK");
}

#[test]
fn a_write_gated_before_a_failover_is_not_acknowledged_by_a_later_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags: Vec<&str> = FLAGS.to_vec();
    let a = Daemon::start(&dir.path().join("a"), &flags);
    let proxy = Proxy::start(a.addr);
    let through = proxy.addr.to_string();
    flags.extend(["--replica-of", &through]);
    let b = Daemon::start(&dir.path().join("b"), &flags);
    let () = redis::cmd("SET")
        .arg("k")
        .arg("1")
        .query(&mut a.client())
        .unwrap();
    assert!(wait_caught_up(&a, &b, 30));

    // A write on A that B never receives: gated, waiting for B's acknowledgement.
    proxy.stall();
    let mut gated = Raw::connect(a.addr);
    gated.send_command(&[b"SET", b"k", b"2"]);
    std::thread::sleep(Duration::from_millis(200));

    // B is promoted (its new epoch starts at the write's LSN); A is re-pointed at it (the
    // write goes to A's rollback/), catches up, and is promoted again; B follows it and
    // acknowledges LSNs past the write's.
    replicaof(&b, None);
    replicaof(&a, Some(&b.addr.to_string()));
    assert!(wait_caught_up(&b, &a, 30));
    replicaof(&a, None);
    replicaof(&b, Some(&a.addr.to_string()));
    assert!(
        wait_caught_up(&a, &b, 30),
        "B does not follow A again:\n--- A\n{}\n--- B\n{}",
        a.log(),
        b.log()
    );
    let () = redis::cmd("SET")
        .arg("k")
        .arg("4")
        .query(&mut a.client())
        .unwrap();

    // The gated write is not in the history any node holds: its reply must not be OK.
    let reply = gated.reply();
    assert!(
        reply.starts_with("-NOREPLICAS"),
        "the gated write was answered {reply:?}"
    );
    let value: String = redis::cmd("GET").arg("k").query(&mut b.client()).unwrap();
    assert_eq!(value, "4");
    // `WAIT` on the same connection counts no replica for that write either: its LSN holds
    // another write now.
    gated.send_command(&[b"WAIT", b"1", b"200"]);
    assert_eq!(
        gated.reply(),
        ":0\r\n",
        "WAIT counted replicas for a rolled-back write"
    );
    // A new write on it is counted again.
    gated.send_command(&[b"SET", b"k", b"5"]);
    assert_eq!(gated.reply(), "+OK\r\n");
    gated.send_command(&[b"WAIT", b"1", b"0"]);
    assert_eq!(gated.reply(), ":1\r\n");
    assert!(wait_until(5, || info_field(
        &mut a.client(),
        "replication",
        "connected_slaves"
    )
    .as_deref()
        == Some("1")));
    drop(proxy);
    a.stop();
    b.stop();
}
