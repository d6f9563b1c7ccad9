//! Log shipping as users meet it: real `shiplogd` processes on loopback, a primary and its
//! replicas, Redis clients on both sides, kill -9 of every node, network faults.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon::proxy::Proxy;
use daemon::{Daemon, dump, free_port, info_field, start_replica, wait_caught_up, wait_until};
use redis::Commands;

fn start_primary(dir: &Path, port: u16) -> Daemon {
    let listen = format!("127.0.0.1:{port}");
    Daemon::start(dir, &["--listen", &listen])
}

/// Segment files (by name) of a data directory.
fn segments(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            shiplog::wal::parse_segment_file_name(&name).is_some()
        })
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The replica's segment files are the primary's, byte for byte.
fn assert_same_segments(primary: &Path, replica: &Path) {
    let (ours, theirs) = (segments(primary), segments(replica));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same segment files"
    );
    for (name, bytes) in &ours {
        assert!(bytes == &theirs[name], "segment {name} differs");
    }
    // The operator's tool agrees.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["verify", "--compare"])
        .arg(primary)
        .arg(replica)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "shiplog verify --compare: {text}");
    assert!(text.contains("identical"), "{text}");
}

#[test]
fn a_replica_serves_what_the_primary_acknowledged_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let primary = start_primary(&dir.path().join("p"), 0);
    let replica = start_replica(&dir.path().join("r"), primary.addr);
    let mut p = primary.client();
    let _: () = p.set("greeting", "hello").unwrap();
    let _: () = redis::cmd("MSET")
        .arg(&["a", "1", "b", "2", "c", "3"])
        .query(&mut p)
        .unwrap();
    let values: Vec<u8> = (0..=255).collect();
    let _: () = p.set(&values[..], &values[..]).unwrap();
    assert!(
        wait_caught_up(&primary, &replica, 30),
        "the replica catches up"
    );

    let mut r = replica.client();
    let v: String = r.get("greeting").unwrap();
    assert_eq!(v, "hello");
    let abc: Vec<String> = r.mget(&["a", "b", "c"]).unwrap();
    assert_eq!(abc, ["1", "2", "3"]);
    let binary: Vec<u8> = r.get(&values[..]).unwrap();
    assert_eq!(binary, values);
    let refused: redis::RedisResult<()> = r.set("x", "1");
    let err = refused.unwrap_err();
    assert_eq!(err.code(), Some("READONLY"), "{err}");
    assert!(
        err.to_string()
            .contains("You can't write against a read only replica.")
    );

    // ROLE in Redis' shapes on both sides.
    let role: redis::Value = redis::cmd("ROLE").query(&mut r).unwrap();
    let text = format!("{role:?}");
    assert!(
        text.contains("slave") && text.contains("connected"),
        "{text}"
    );
    let role: redis::Value = redis::cmd("ROLE").query(&mut p).unwrap();
    let text = format!("{role:?}");
    assert!(
        text.contains("master") && text.contains(&replica.addr.port().to_string()),
        "{text}"
    );
    assert_eq!(
        info_field(&mut r, "replication", "master_link_status").as_deref(),
        Some("up")
    );
    assert_eq!(
        info_field(&mut p, "replication", "connected_slaves").as_deref(),
        Some("1")
    );
    let slave0 = info_field(&mut p, "replication", "slave0").unwrap();
    assert!(
        slave0.contains("state=online") && slave0.contains("replay_lsn="),
        "{slave0}"
    );
    // Heartbeats carry the primary's log digest; the replica's matches.
    assert!(
        wait_until(30, || info_field(
            &mut r,
            "replication",
            "replica_digest_match"
        )
        .as_deref()
            == Some("yes")),
        "the digests are compared and match"
    );
    // Idle and caught up: lag reads 0, not "unknown" or growing.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        info_field(&mut r, "replication", "replica_lag_lsns").as_deref(),
        Some("0")
    );
    assert_eq!(
        info_field(&mut r, "replication", "replica_lag_ms").as_deref(),
        Some("0")
    );
    drop((p, r));
    replica.stop();
    primary.stop();
    assert_same_segments(&dir.path().join("p"), &dir.path().join("r"));
}

/// Sets unique keys through `port` until `stop`, reconnecting after failures; records each
/// key whose SET was answered OK.
fn write_load(port: u16, stop: &AtomicBool, acked: &Mutex<Vec<u64>>, from: u64) {
    let url = format!("redis://127.0.0.1:{port}/");
    let mut i = from;
    while !stop.load(Ordering::Acquire) {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            continue;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = con.set_read_timeout(Some(Duration::from_secs(10)));
        while !stop.load(Ordering::Acquire) {
            let result: redis::RedisResult<()> = con.set(format!("key:{i}"), format!("value:{i}"));
            if result.is_err() {
                // Indeterminate: it may or may not have been applied; never counted as acked.
                i += 1;
                break;
            }
            acked.lock().unwrap().push(i);
            i += 1;
        }
    }
}

#[test]
fn three_nodes_survive_kill_9_of_each_in_turn_and_converge_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, r1dir, r2dir) = (
        dir.path().join("p"),
        dir.path().join("r1"),
        dir.path().join("r2"),
    );
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let mut primary = start_primary(&pdir, port);
    let mut r1 = start_replica(&r1dir, &target);
    let mut r2 = start_replica(&r2dir, &target);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
        std::thread::spawn(move || write_load(port, &stop, &acked, 0))
    };
    let acked_count = || acked.lock().unwrap().len();
    let progress = |min: usize| assert!(wait_until(60, || acked_count() >= min), "writes go on");

    progress(300);
    r1.kill();
    progress(acked_count() + 300);
    r1 = start_replica(&r1dir, &target);
    progress(acked_count() + 300);
    r2.kill();
    progress(acked_count() + 300);
    r2 = start_replica(&r2dir, &target);
    progress(acked_count() + 300);
    primary.kill();
    std::thread::sleep(Duration::from_millis(200));
    primary = start_primary(&pdir, port);
    progress(acked_count() + 300);
    stop.store(true, Ordering::Release);
    writer.join().unwrap();

    assert!(wait_caught_up(&primary, &r1, 60), "replica 1 converges");
    assert!(wait_caught_up(&primary, &r2, 60), "replica 2 converges");
    let mut p = primary.client();
    let state = dump(&mut p);
    let acked = acked.lock().unwrap().clone();
    let held: std::collections::HashSet<Vec<u8>> = state.iter().map(|(k, _)| k.clone()).collect();
    for i in &acked {
        assert!(
            held.contains(format!("key:{i}").as_bytes()),
            "acknowledged key:{i} lost by the primary"
        );
    }
    for replica in [&r1, &r2] {
        assert_eq!(
            dump(&mut replica.client()),
            state,
            "a replica differs from the primary"
        );
    }
    drop(p);
    r1.stop();
    r2.stop();
    primary.stop();
    assert_same_segments(&pdir, &r1dir);
    assert_same_segments(&pdir, &r2dir);
}

#[test]
fn replicas_resume_through_delays_stalls_and_dropped_connections() {
    let dir = tempfile::tempdir().unwrap();
    let primary = start_primary(&dir.path().join("p"), 0);
    let proxy = Proxy::start(primary.addr);
    let replica = start_replica(&dir.path().join("r"), proxy.addr);
    let mut p = primary.client();
    let mut batch = 0;
    let mut write = |p: &mut redis::Connection| {
        for i in 0..200 {
            let _: () = p.set(format!("k{batch}:{i}"), i).unwrap();
        }
        batch += 1;
    };
    write(&mut p);
    assert!(wait_caught_up(&primary, &replica, 30));

    proxy.delay(Duration::from_millis(5));
    write(&mut p);
    assert!(
        wait_caught_up(&primary, &replica, 60),
        "through a slow link"
    );
    proxy.delay(Duration::ZERO);

    // A stall shorter than the timeouts: the session survives it.
    proxy.stall();
    write(&mut p);
    std::thread::sleep(Duration::from_millis(500));
    proxy.resume();
    assert!(wait_caught_up(&primary, &replica, 30), "after a stall");

    // Dropped connections, while new ones are refused for a moment.
    proxy.refuse(true);
    proxy.drop_connections();
    write(&mut p);
    std::thread::sleep(Duration::from_millis(300));
    let mut r = replica.client();
    assert_eq!(
        info_field(&mut r, "replication", "master_link_status").as_deref(),
        Some("down")
    );
    proxy.refuse(false);
    assert!(wait_caught_up(&primary, &replica, 30), "after reconnecting");

    // Half-open: the link stalls past the replica's timeout; it gives up and reconnects.
    proxy.stall();
    write(&mut p);
    assert!(
        wait_until(30, || info_field(
            &mut r,
            "replication",
            "master_link_status"
        )
        .as_deref()
            == Some("down")),
        "a silent primary is given up on"
    );
    proxy.drop_connections();
    proxy.resume();
    assert!(
        wait_caught_up(&primary, &replica, 30),
        "after a half-open link"
    );
    assert_eq!(dump(&mut r), dump(&mut p));
    drop((p, r));
    replica.stop();
    primary.stop();
    assert_same_segments(&dir.path().join("p"), &dir.path().join("r"));
}

#[test]
fn replicaof_repoints_at_run_time_and_no_one_makes_a_node_writable() {
    let dir = tempfile::tempdir().unwrap();
    let primary = start_primary(&dir.path().join("p"), 0);
    let node = Daemon::start(&dir.path().join("n"), &[]);
    let mut p = primary.client();
    let _: () = p.set("from-primary", "1").unwrap();
    let mut n = node.client();
    let reply: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.addr.port())
        .query(&mut n)
        .unwrap();
    assert_eq!(reply, "OK");
    let again: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.addr.port())
        .query(&mut n)
        .unwrap();
    assert_eq!(again, "OK Already connected to specified master");
    assert!(wait_caught_up(&primary, &node, 30));
    let v: String = n.get("from-primary").unwrap();
    assert_eq!(v, "1");
    let bad: redis::RedisResult<String> = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg("99999")
        .query(&mut n);
    assert!(bad.unwrap_err().to_string().contains("Invalid master port"));

    let reply: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut n)
        .unwrap();
    assert_eq!(reply, "OK");
    let _: () = n.set("own", "2").unwrap();
    let role: redis::Value = redis::cmd("ROLE").query(&mut n).unwrap();
    assert!(format!("{role:?}").contains("master"));
    drop((p, n));
    node.stop();
    primary.stop();
}

/// Overwrites a few keys many times: the log fills with dead records compaction wants gone.
fn churn(con: &mut redis::Connection, rounds: usize) {
    let value = "v".repeat(200);
    for round in 0..rounds {
        let mut pipe = redis::pipe();
        for k in 0..50 {
            pipe.set(format!("churn:{k}"), format!("{round}:{value}"))
                .ignore();
        }
        let _: () = pipe.query(con).unwrap();
    }
}

#[test]
fn a_retention_slot_keeps_the_log_for_a_stopped_replica_across_restarts_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, rdir) = (dir.path().join("p"), dir.path().join("r"));
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let listen = target.clone();
    let primary_args = ["--listen", &listen, "--segment-bytes", "16384"];
    let primary = Daemon::start(&pdir, &primary_args);
    let replica = start_replica(&rdir, &target);
    let mut p = primary.client();
    churn(&mut p, 20);
    assert!(wait_caught_up(&primary, &replica, 30));
    assert!(
        wait_until(30, || info_field(&mut p, "replication", "slot0")
            .is_some_and(|s| s.contains("connected=yes"))),
        "a slot is created for the replica"
    );
    replica.kill();

    // The replica is away; the primary churns (compaction runs) and restarts.
    churn(&mut p, 200);
    drop(p);
    primary.stop();
    let primary = Daemon::start(&pdir, &primary_args);
    let mut p = primary.client();
    let slot = info_field(&mut p, "replication", "slot0").expect("the slot survived the restart");
    assert!(slot.contains("connected=no"), "{slot}");
    churn(&mut p, 200);
    std::thread::sleep(Duration::from_millis(2500));
    let replica = start_replica(&rdir, &target);
    assert!(
        wait_caught_up(&primary, &replica, 60),
        "the replica resumes from its slot"
    );
    assert_eq!(dump(&mut replica.client()), dump(&mut p));
    replica.kill();
    drop(p);
    primary.stop();

    // With a cap smaller than what the away replica needs, its slot is dropped, compaction
    // takes the log, and the replica is bootstrapped again from a snapshot.
    let primary = Daemon::start(
        &pdir,
        &[
            "--listen",
            &listen,
            "--segment-bytes",
            "16384",
            "--max-retained-bytes",
            "65536",
        ],
    );
    let mut p = primary.client();
    churn(&mut p, 400);
    assert!(
        wait_until(30, || info_field(&mut p, "replication", "slot0").is_none()),
        "the slot over the cap is dropped"
    );
    assert!(primary.wait_for_log("retention slot dropped"));
    std::thread::sleep(Duration::from_millis(2500));
    let replica = start_replica(&rdir, &target);
    let mut r = replica.client();
    assert!(
        wait_caught_up(&primary, &replica, 60),
        "the replica re-bootstraps and catches up: {:?}",
        info_field(&mut r, "replication", "replica_last_error")
    );
    assert!(
        wait_until(30, || info_field(
            &mut r,
            "replication",
            "replica_bootstraps"
        )
        .as_deref()
            == Some("1")),
        "the replica says it bootstrapped once"
    );
    assert!(primary.wait_for_log("bootstrapping a replica from a snapshot"));
    assert_eq!(dump(&mut r), dump(&mut p));
    // It follows the log again, from the snapshot on.
    churn(&mut p, 20);
    assert!(wait_caught_up(&primary, &replica, 30));
    assert_eq!(dump(&mut r), dump(&mut p));
    drop((p, r));
    replica.stop();
    primary.stop();
}

/// A fake primary: answers the handshake, welcomes the replica, ships a real log's first
/// records, then a heartbeat whose digest is not that log's.
#[test]
fn a_digest_mismatch_stops_the_replica_and_is_reported() {
    use shiplog::format::repl::{Frame, PROTOCOL_VERSION, Welcome, decode_frame, encode_frame};
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let db = shiplog::Db::open(dir.path().join("log"), shiplog::DbOptions::default()).unwrap();
    for i in 0..5u8 {
        db.put(&[b'k', i], &[i; 10]).unwrap();
    }
    let log = db.wal();
    let chunk = log
        .ship_chunk(&log.ship_position_after(0).unwrap(), 1 << 20)
        .unwrap()
        .unwrap();
    let real = log.digest_at(5).unwrap().unwrap();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake = listener.local_addr().unwrap();
    let replica = start_replica(&dir.path().join("r"), fake);
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut command = [0u8; 23];
    stream.read_exact(&mut command).unwrap();
    assert_eq!(&command, b"*1\r\n$12\r\nSHIPLOG.SHIP\r\n");
    stream.write_all(b"+OK\r\n").unwrap();
    let mut hello = [0u8; 84];
    stream.read_exact(&mut hello).unwrap();
    assert!(matches!(
        decode_frame(&hello),
        Ok(Some((Frame::Hello(_), 84)))
    ));
    let mut out = Vec::new();
    encode_frame(
        &mut out,
        &Frame::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            cluster_id: log.cluster_id(),
            epoch: 1,
            durable_lsn: 5,
            start_after: 0,
        }),
    );
    encode_frame(
        &mut out,
        &Frame::SegmentHeader {
            header: chunk.header.as_ref().unwrap(),
            capacity: chunk.capacity,
        },
    );
    encode_frame(
        &mut out,
        &Frame::SegmentBytes {
            segment: chunk.segment,
            offset: chunk.offset,
            last_lsn: chunk.last_lsn,
            bytes: &chunk.bytes,
        },
    );
    encode_frame(
        &mut out,
        &Frame::Heartbeat {
            durable_lsn: 5,
            clock_micros: 0,
            digest_lsn: 5,
            digest: real ^ 1,
        },
    );
    stream.write_all(&out).unwrap();

    let mut r = replica.client();
    assert!(
        wait_until(30, || info_field(&mut r, "replication", "replica_diverged")
            .is_some()),
        "the mismatch is reported: {}",
        replica.log()
    );
    let text = info_field(&mut r, "replication", "replica_diverged").unwrap();
    assert!(
        text.contains("DIVERGED") && text.contains("LSN 5"),
        "{text}"
    );
    assert_eq!(
        info_field(&mut r, "replication", "replica_digest_match").as_deref(),
        Some("no")
    );
    assert!(replica.wait_for_log("the logs diverged"));
    // The link stays down: no reconnection attempt comes.
    listener.set_nonblocking(true).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        listener.accept().is_err(),
        "a diverged replica does not reconnect"
    );
    drop(r);
    replica.stop();
}

#[test]
fn a_replica_proves_it_knows_the_password_without_sending_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let wrong = dir.path().join("wrong");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    std::fs::write(&wrong, "incorrect horse\n").unwrap();
    let primary = Daemon::start(
        &dir.path().join("p"),
        &["--requirepass-file", secret.to_str().unwrap()],
    );
    let mut p = redis::Client::open(format!(
        "redis://:correct%20horse%20battery%20staple@{}/",
        primary.addr
    ))
    .unwrap()
    .get_connection()
    .unwrap();
    let _: () = p.set("guarded", "value").unwrap();
    let proxy = Proxy::start(primary.addr);
    let via = proxy.addr.to_string();

    // No password: told what to do, nothing shipped.
    let none = Daemon::start(&dir.path().join("none"), &["--replica-of", &via]);
    let mut n = none.client();
    assert!(
        wait_until(30, || info_field(
            &mut n,
            "replication",
            "replica_last_error"
        )
        .is_some_and(|e| e.contains("--masterauth-file"))),
        "{:?}",
        info_field(&mut n, "replication", "replica_last_error")
    );
    assert_eq!(redis::cmd("DBSIZE").query::<u64>(&mut n).ok(), Some(0));
    drop(n);
    none.stop();

    // The wrong password: refused by the primary.
    let bad = Daemon::start(
        &dir.path().join("bad"),
        &[
            "--replica-of",
            &via,
            "--masterauth-file",
            wrong.to_str().unwrap(),
        ],
    );
    let mut b = bad.client();
    assert!(
        wait_until(30, || info_field(
            &mut b,
            "replication",
            "replica_last_error"
        )
        .is_some_and(|e| e.contains("authentication failed"))),
        "{:?}",
        info_field(&mut b, "replication", "replica_last_error")
    );
    assert_eq!(redis::cmd("DBSIZE").query::<u64>(&mut b).ok(), Some(0));
    drop(b);
    bad.stop();

    // The right one: replicates, and the password never crossed the link.
    let good = Daemon::start(
        &dir.path().join("good"),
        &[
            "--replica-of",
            &via,
            "--masterauth-file",
            secret.to_str().unwrap(),
        ],
    );
    assert!(wait_caught_up_with(&mut p, &good, 30));
    let v: String = good.client().get("guarded").unwrap();
    assert_eq!(v, "value");
    let captured = proxy.captured();
    assert!(!captured.is_empty());
    let needle = b"correct horse";
    assert!(
        !captured.windows(needle.len()).any(|w| w == needle),
        "the password travelled in clear"
    );
    good.stop();
    drop(p);
    primary.stop();
}

/// Like `wait_caught_up`, with an already authenticated connection to the primary.
fn wait_caught_up_with(p: &mut redis::Connection, replica: &Daemon, secs: u64) -> bool {
    let mut r = replica.client();
    wait_until(secs, || {
        let target: Option<u64> =
            info_field(p, "replication", "master_repl_offset").and_then(|v| v.parse().ok());
        let applied: Option<u64> =
            info_field(&mut r, "replication", "replica_applied_lsn").and_then(|v| v.parse().ok());
        matches!((target, applied), (Some(t), Some(a)) if a >= t)
    })
}
