//! Bootstrapping replicas from the primary's snapshot, as users meet it: real `shiplogd`
//! processes on loopback, a fault proxy to slow the transfer down, kill -9 of the replica in
//! the middle of it and of the primary while it builds one.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
mod daemon;

use std::path::Path;
use std::time::Duration;

use daemon::proxy::Proxy;
use daemon::{Daemon, dump, free_port, info_field, replication_field, wait_caught_up, wait_until};

fn start_primary(dir: &Path, port: u16) -> Daemon {
    let listen = format!("127.0.0.1:{port}");
    Daemon::start(
        dir,
        &[
            "--listen",
            &listen,
            "--segment-bytes",
            "65536",
            "--snapshot-bootstrap-bytes",
            "0",
        ],
    )
}

/// Writes `count` keys (values of `value_bytes` pseudo-random bytes), overwrites a third and
/// deletes a tenth of them, so the log is bigger than the state.
fn load(con: &mut redis::Connection, count: usize, value_bytes: usize, seed: u64) {
    let mut x = seed | 1;
    let mut value = || {
        (0..value_bytes)
            .map(|_| (common::xorshift64(&mut x) >> 24) as u8)
            .collect::<Vec<u8>>()
    };
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.set(format!("key:{i:06}"), value()).ignore();
            if i % 3 == 0 {
                pipe.set(format!("key:{:06}", i / 2), value()).ignore();
            }
            if i % 10 == 0 {
                pipe.del(format!("key:{:06}", i / 3)).ignore();
            }
        }
        let _: () = pipe.query(con).unwrap();
    }
}

#[test]
fn an_empty_replica_bootstraps_from_a_snapshot_then_follows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, rdir) = (dir.path().join("p"), dir.path().join("r"));
    let port = free_port();
    let primary = start_primary(&pdir, port);
    let mut p = primary.client();
    load(&mut p, 3000, 200, 7);
    let replica = Daemon::start(&rdir, &["--replica-of", &format!("127.0.0.1:{port}")]);
    assert!(wait_caught_up(&primary, &replica, 60));
    assert!(wait_until(30, || replication_field(
        &replica,
        "replica_bootstraps"
    )
    .as_deref()
        == Some("1")));
    let mut r = replica.client();
    assert_eq!(dump(&mut r), dump(&mut p));
    assert!(primary.wait_for_log("bootstrapping a replica from a snapshot"));
    assert!(replica.wait_for_log("snapshot installed"));
    assert_eq!(
        replication_field(&replica, "replica_restoring").as_deref(),
        Some("0")
    );
    assert!(
        !rdir.join("bootstrap/snapshot.partial").exists(),
        "the received snapshot is removed once installed"
    );

    // The log follows from the snapshot on, and a restart resumes from the log.
    load(&mut p, 500, 100, 11);
    assert!(wait_caught_up(&primary, &replica, 30));
    assert_eq!(dump(&mut r), dump(&mut p));
    drop(r);
    replica.stop();
    load(&mut p, 300, 100, 13);
    let replica = Daemon::start(&rdir, &["--replica-of", &format!("127.0.0.1:{port}")]);
    assert!(wait_caught_up(&primary, &replica, 30));
    assert_eq!(dump(&mut replica.client()), dump(&mut p));
    assert!(
        !replica
            .log()
            .contains("bootstrapping from the primary's snapshot"),
        "a restarted replica follows the log: {}",
        replica.log()
    );

    // A second new replica shares the snapshot already built, as long as it is usable.
    let rdir2 = dir.path().join("r2");
    let second = Daemon::start(&rdir2, &["--replica-of", &format!("127.0.0.1:{port}")]);
    assert!(wait_caught_up(&primary, &second, 60));
    assert_eq!(dump(&mut second.client()), dump(&mut p));
    // A snapshot file removed behind the primary's back is built again, not offered.
    for file in std::fs::read_dir(pdir.join("snapshots")).unwrap() {
        std::fs::remove_file(file.unwrap().path()).unwrap();
    }
    load(&mut p, 100, 100, 17);
    let third = Daemon::start(
        &dir.path().join("r3"),
        &["--replica-of", &format!("127.0.0.1:{port}")],
    );
    assert!(wait_caught_up(&primary, &third, 60));
    assert_eq!(dump(&mut third.client()), dump(&mut p));
    third.stop();
    drop(p);
    second.stop();
    replica.stop();
    primary.stop();
}

/// A primary holding about 8 MB of incompressible state and a new replica bootstrapping from
/// it through a proxy that slows the transfer; returns once a quarter of the snapshot arrived.
fn slow_bootstrap(pdir: &Path, rdir: &Path, seed: u64) -> (Daemon, Proxy, Daemon) {
    let port = free_port();
    let primary = start_primary(pdir, port);
    load(&mut primary.client(), 2000, 4096, seed);
    let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap());
    proxy.delay(Duration::from_millis(15));
    let replica = Daemon::start(rdir, &["--replica-of", &proxy.addr.to_string()]);
    assert!(
        wait_until(60, || {
            let read: u64 = replication_field(&replica, "master_sync_read_bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let total: u64 = replication_field(&replica, "master_sync_total_bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX);
            read > total / 4
        }),
        "the transfer is under way"
    );
    (primary, proxy, replica)
}

#[test]
fn a_replica_killed_mid_transfer_resumes_it_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, rdir) = (dir.path().join("p"), dir.path().join("r"));
    let (primary, proxy, replica) = slow_bootstrap(&pdir, &rdir, 3);
    let mut p = primary.client();
    let mut r = replica.client();
    assert_eq!(
        info_field(&mut r, "replication", "master_sync_in_progress").as_deref(),
        Some("1")
    );
    drop(r);
    replica.kill();
    let held = std::fs::metadata(rdir.join("bootstrap/snapshot.partial"))
        .unwrap()
        .len();
    assert!(held > 0, "the part received is kept");

    proxy.delay(Duration::ZERO);
    load(&mut p, 200, 100, 5);
    let replica = Daemon::start(&rdir, &["--replica-of", &proxy.addr.to_string()]);
    assert!(wait_caught_up(&primary, &replica, 60));
    assert_eq!(dump(&mut replica.client()), dump(&mut p));
    let log = replica.log();
    let resumed = log
        .lines()
        .find(|l| l.contains("bootstrapping from the primary's snapshot"))
        .unwrap_or_else(|| panic!("no bootstrap in the replica's log: {log}"));
    assert!(
        !resumed.contains("resume_at=0"),
        "the transfer resumes where it stopped: {resumed}"
    );
    drop(p);
    replica.stop();
    primary.stop();
}

#[test]
fn a_primary_killed_while_building_a_snapshot_recovers_and_its_replica_converges() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, rdir) = (dir.path().join("p"), dir.path().join("r"));
    let port = free_port();
    let primary = start_primary(&pdir, port);
    let mut p = primary.client();
    load(&mut p, 4000, 2048, 9);
    drop(p);
    let replica = Daemon::start(&rdir, &["--replica-of", &format!("127.0.0.1:{port}")]);
    assert!(primary.wait_for_log("building a snapshot"));
    primary.kill();
    let primary = start_primary(&pdir, port);
    let leftovers: Vec<String> = std::fs::read_dir(pdir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "unfinished builds are removed: {leftovers:?}"
    );
    let mut p = primary.client();
    assert!(wait_caught_up(&primary, &replica, 60));
    assert_eq!(dump(&mut replica.client()), dump(&mut p));
    drop(p);
    replica.stop();
    primary.stop();
}

#[test]
fn a_snapshot_can_be_taken_from_a_running_primary_but_not_from_a_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, rdir) = (dir.path().join("p"), dir.path().join("r"));
    let port = free_port();
    let primary = start_primary(&pdir, port);
    let mut p = primary.client();
    load(&mut p, 500, 100, 1);
    let snapshot = {
        use std::io::{BufRead, Read, Write};
        let mut stream = std::net::TcpStream::connect(primary.addr).unwrap();
        stream
            .write_all(b"*1\r\n$16\r\nSHIPLOG.SNAPSHOT\r\n")
            .unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with('$'), "a bulk reply: {line}");
        let len: usize = line[1..].trim_end().parse().unwrap();
        let mut body = vec![0u8; len + 2];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(&body[len..], b"\r\n");
        body.truncate(len);
        body
    };
    let mut keys = 0u64;
    let info = shiplog::snapshot::read_snapshot(
        &mut snapshot.as_slice(),
        &mut |_, _| {
            keys += 1;
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(keys, dump(&mut p).len() as u64);
    assert_eq!(info.header.key_count, keys);
    let replica = Daemon::start(&rdir, &["--replica-of", &format!("127.0.0.1:{port}")]);
    assert!(wait_caught_up(&primary, &replica, 60));
    let mut r = replica.client();
    let refused: redis::RedisResult<Vec<u8>> = redis::cmd("SHIPLOG.SNAPSHOT").query(&mut r);
    let text = refused.unwrap_err().to_string();
    assert!(text.contains("from the primary"), "{text}");
    drop((p, r));
    replica.stop();
    primary.stop();
}

/// Dual-channel sync: while a slow snapshot transfer runs, the primary keeps writing; the log
/// after the snapshot travels along and waits in the replica's buffer, the replica's
/// retention slot follows that buffered log (the primary need not keep the log for the whole
/// transfer), and the replica is current once its restore ends.
#[test]
fn the_log_written_during_a_slow_transfer_travels_along_and_the_slot_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, rdir) = (dir.path().join("p"), dir.path().join("r"));
    let port = free_port();
    let primary = start_primary(&pdir, port);
    let mut p = primary.client();
    load(&mut p, 2000, 4096, 21);
    let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap());
    proxy.delay(Duration::from_millis(15));
    let replica = Daemon::start(&rdir, &["--replica-of", &proxy.addr.to_string()]);
    let mut round = 0u64;
    let mut slot_passed_snapshot = false;
    let mut sending_seen = false;
    while replication_field(&replica, "replica_bootstraps").as_deref() != Some("1") {
        sending_seen |= info_field(&mut p, "replication", "slave0")
            .is_some_and(|s| s.contains("state=send_bulk"));
        load(&mut p, 50, 300, 1000 + round);
        round += 1;
        let snapshot_lsn: Option<u64> =
            replication_field(&replica, "replica_bootstrap_lsn").and_then(|v| v.parse().ok());
        let slot_lsn: Option<u64> = info_field(&mut p, "replication", "slot0").and_then(|s| {
            s.split(',')
                .find_map(|f| f.strip_prefix("lsn="))
                .and_then(|v| v.parse().ok())
        });
        if let (Some(snapshot), Some(slot)) = (snapshot_lsn, slot_lsn) {
            slot_passed_snapshot |= slot > snapshot;
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(round < 3000, "the bootstrap ends");
    }
    assert!(sending_seen, "the primary showed the transfer as send_bulk");
    assert!(
        slot_passed_snapshot,
        "during the transfer, the slot moved past the snapshot's LSN with the buffered log"
    );
    assert!(wait_caught_up(&primary, &replica, 60));
    assert_eq!(dump(&mut replica.client()), dump(&mut p));
    assert!(replica.wait_for_log("taking the log buffered during the transfer"));
    let log = replica.log();
    let taken = log
        .lines()
        .find(|l| l.contains("taking the log buffered during the transfer"))
        .unwrap();
    assert!(!taken.contains("bytes=0 "), "log was buffered: {taken}");
    assert_eq!(
        replication_field(&replica, "replica_bootstraps").as_deref(),
        Some("1")
    );
    assert!(
        wait_until(30, || info_field(&mut p, "replication", "slave0")
            .is_some_and(|s| s.contains("state=online"))),
        "the primary sees the bootstrap end: {:?}",
        info_field(&mut p, "replication", "slave0")
    );
    drop(p);
    replica.stop();
    primary.stop();
}

/// The backup path users run: `shiplog snapshot create --from` against a live primary under
/// writes, then `shiplog snapshot restore`; the restored store holds a state the primary had.
#[test]
fn shiplog_snapshot_create_from_a_running_primary_restores_to_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("p");
    let port = free_port();
    let primary = start_primary(&pdir, port);
    let mut p = primary.client();
    load(&mut p, 1500, 500, 31);
    let file = dir.path().join("backup.shsnap");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["snapshot", "create", "--from", &format!("127.0.0.1:{port}")])
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = dump(&mut p);
    // Writes after the snapshot are not in it.
    let _: () = redis::cmd("SET")
        .arg("later")
        .arg("x")
        .query(&mut p)
        .unwrap();
    let restored = dir.path().join("restored");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["snapshot", "restore"])
        .arg(&file)
        .arg("--dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = Daemon::start(&restored, &[]);
    assert_eq!(dump(&mut node.client()), expected);
    drop(p);
    node.stop();
    primary.stop();
}

/// Kill -9 of the replica while it verifies or installs the snapshot: it never serves a partial
/// state (a store marked `RESTORING` answers `-LOADING`), and after a restart it converges.
#[test]
fn a_replica_killed_while_installing_never_serves_a_partial_state_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, rdir) = (dir.path().join("p"), dir.path().join("r"));
    let port = free_port();
    let primary = start_primary(&pdir, port);
    let mut p = primary.client();
    load(&mut p, 20_000, 4096, 41);
    let replica = Daemon::start(&rdir, &["--replica-of", &format!("127.0.0.1:{port}")]);
    // Wait for the marker of the install in place (or, if the install was too quick to see,
    // for its end), polling the file system tightly.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !rdir.join("RESTORING").exists() && !replica.log().contains("snapshot installed") {
        assert!(std::time::Instant::now() < deadline, "the install starts");
        std::thread::sleep(Duration::from_micros(200));
    }
    replica.kill();
    let marked = rdir.join("RESTORING").exists();
    let replica = Daemon::start(&rdir, &["--replica-of", &format!("127.0.0.1:{port}")]);
    let mut r = replica.client();
    if marked {
        // Until a bootstrap completes, the half-installed store is not served.
        let read: redis::RedisResult<Option<Vec<u8>>> =
            redis::cmd("GET").arg("key:000001").query(&mut r);
        match read {
            Err(e) => assert!(e.to_string().contains("restoring a snapshot"), "{e}"),
            Ok(_) => assert_eq!(
                replication_field(&replica, "replica_restoring").as_deref(),
                Some("0"),
                "a read was served while the store was marked restoring"
            ),
        }
    }
    assert!(
        wait_caught_up(&primary, &replica, 120),
        "marked {marked}\n{}\n---\n{}",
        replica.log(),
        primary.log()
    );
    assert_eq!(dump(&mut r), dump(&mut p));
    assert!(!rdir.join("RESTORING").exists());
    eprintln!("killed with the marker present: {marked}");
    drop((p, r));
    replica.stop();
    primary.stop();
}

/// A power loss can leave the received part of a snapshot with a hole (pages never written
/// back) under its full length. The resumed transfer completes, fails verification before the
/// store is touched, and is sent again from the start; the replica converges.
#[test]
fn a_received_snapshot_damaged_on_disk_is_sent_again_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (pdir, rdir) = (dir.path().join("p"), dir.path().join("r"));
    let (primary, proxy, replica) = slow_bootstrap(&pdir, &rdir, 43);
    let mut p = primary.client();
    replica.kill();
    let partial = rdir.join("bootstrap/snapshot.partial");
    let held = std::fs::metadata(&partial).unwrap().len();
    assert!(held > 256 << 10, "{held} bytes received");
    // The hole: 4 KiB of zeros halfway, as unwritten pages read back after a power loss.
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&partial)
            .unwrap();
        file.write_all_at(&[0u8; 4096], held / 2 / 4096 * 4096)
            .unwrap();
    }

    proxy.delay(Duration::ZERO);
    let replica = Daemon::start(&rdir, &["--replica-of", &proxy.addr.to_string()]);
    assert!(wait_caught_up(&primary, &replica, 120), "{}", replica.log());
    assert_eq!(dump(&mut replica.client()), dump(&mut p));
    let log = replica.log();
    assert!(
        log.contains("failed verification"),
        "the damaged snapshot was caught: {log}"
    );
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("bootstrapping from the primary's snapshot"))
        .collect();
    assert!(
        starts.len() >= 2
            && !starts[0].contains("resume_at=0")
            && starts[1..].iter().any(|l| l.contains("resume_at=0")),
        "resumed, then sent again from the start: {starts:#?}"
    );
    assert_eq!(
        replication_field(&replica, "replica_bootstraps").as_deref(),
        Some("1"),
        "installed once"
    );
    drop(p);
    replica.stop();
    primary.stop();
}
