//! Regression tests for findings of the review of log shipping: compaction follows the role,
//! REPLICAOF never stalls other clients, shipping sessions are capped, retention slots follow
//! their replicas (no churn over the cap, a copied replica keeps what it needs).

//! Review findings, reproduced against real processes.

#![allow(clippy::unwrap_used, clippy::pedantic, reason = "test code")]

mod daemon;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon::{Daemon, Raw, wait_caught_up};
use redis::Commands;

/// Segment files of `dir` and whether each is compacted (header flag bit 0 at offset 10).
fn segment_flags(dir: &Path) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            shiplog::wal::parse_segment_file_name(&name)?;
            let bytes = std::fs::read(e.path()).ok()?;
            let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
            Some((name, flags & 1 == 1))
        })
        .collect();
    out.sort();
    out
}

fn overwrite_load(con: &mut redis::Connection, rounds: usize) {
    let value = [b'v'; 200];
    for i in 0..rounds {
        let _: () = con.set(format!("k{}", i % 4), &value[..]).unwrap();
    }
}

/// Found in review: compaction is switched off only by `--replica-of` at start. A node promoted with
/// `REPLICAOF NO ONE` never compacts (its log grows without bound), while a primary that is
/// turned into a replica with `REPLICAOF` keeps compacting the shipped log.
#[test]
fn a_promoted_replica_compacts_like_any_primary() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ["--segment-bytes", "4096"];
    // A control primary: compacts this load.
    let control = Daemon::start(&dir.path().join("control"), &seg);
    overwrite_load(&mut control.client(), 3000);
    // A node started as a replica of a primary that does not exist, then promoted.
    let promoted = Daemon::start(
        &dir.path().join("promoted"),
        &["--segment-bytes", "4096", "--replica-of", "127.0.0.1:1"],
    );
    let mut con = promoted.client();
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut con)
        .unwrap();
    overwrite_load(&mut con, 3000);
    std::thread::sleep(Duration::from_secs(4));
    let control_compacted = segment_flags(&control.dir).iter().filter(|s| s.1).count();
    let promoted_segments = segment_flags(&promoted.dir);
    let promoted_compacted = promoted_segments.iter().filter(|s| s.1).count();
    eprintln!(
        "control: {} segments, {control_compacted} compacted; promoted: {} segments, {promoted_compacted} compacted",
        segment_flags(&control.dir).len(),
        promoted_segments.len()
    );
    assert!(control_compacted > 0, "the control primary compacts");
    assert!(
        promoted_compacted > 0,
        "the promoted primary never compacts ({} segments)",
        promoted_segments.len()
    );
}

#[test]
fn a_primary_demoted_by_replicaof_never_compacts_the_shipped_log() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ["--segment-bytes", "4096"];
    let primary = Daemon::start(&dir.path().join("p"), &seg);
    let addr = primary.addr.to_string();
    let demoted = Daemon::start(&dir.path().join("demoted"), &seg);
    let flagged = Daemon::start(
        &dir.path().join("flagged"),
        &["--segment-bytes", "4096", "--replica-of", &addr],
    );
    let mut d = demoted.client();
    let (host, port) = addr.split_once(':').unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg(host)
        .arg(port)
        .query(&mut d)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    overwrite_load(&mut primary.client(), 3000);
    assert!(wait_caught_up(&primary, &demoted, 30));
    assert!(wait_caught_up(&primary, &flagged, 30));
    std::thread::sleep(Duration::from_secs(4));
    let demoted_compacted = segment_flags(&demoted.dir).iter().filter(|s| s.1).count();
    let flagged_compacted = segment_flags(&flagged.dir).iter().filter(|s| s.1).count();
    eprintln!("replica by flag: {flagged_compacted} compacted; by REPLICAOF: {demoted_compacted}");
    assert_eq!(
        flagged_compacted, 0,
        "a --replica-of replica keeps the shipped log"
    );
    assert_eq!(
        demoted_compacted, 0,
        "a replica made by REPLICAOF rewrites its shipped log"
    );
}

/// A listener whose accept queue is full, so a connect to it hangs (SYNs dropped).
fn blackhole() -> (std::net::TcpListener, u16, Vec<std::net::TcpStream>) {
    use nix::sys::socket::{Backlog, listen};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Linux takes a second listen() as a new backlog.
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    eprintln!("{} connections fill the backlog", held.len());
    (listener, addr.port(), held)
}

/// Found in review: `REPLICAOF` joins the old link thread on the event-loop thread, holding the link
/// mutex; a link stuck in `connect` (10 s timeout) stalls every client of that loop and every
/// `INFO`/`ROLE` for that long.
#[test]
fn replicaof_does_not_stall_other_clients_while_the_old_link_connects() {
    let (_fd, port, _held) = blackhole();
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::start(&dir.path().join("n"), &["--io-threads", "1"]);
    let mut a = node.client();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(port)
        .query(&mut a)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let addr = node.addr;
    let pinger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut b = Raw::connect(addr);
        let t = Instant::now();
        let reply = b.command(&["PING"]);
        (reply, t.elapsed())
    });
    let t = Instant::now();
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut a)
        .unwrap();
    let replicaof = t.elapsed();
    let (reply, ping) = pinger.join().unwrap();
    eprintln!("REPLICAOF NO ONE took {replicaof:?}; a PING meanwhile took {ping:?} ({reply:?})");
    assert!(
        ping < Duration::from_secs(1),
        "a PING on the same loop waited {ping:?} behind REPLICAOF"
    );
}

/// Found in review: a connection that sends `SHIPLOG.SHIP` leaves the client count, so shipping
/// sessions (one thread each) are not bounded by `--max-clients` or anything else.
#[test]
fn shipping_sessions_are_capped_by_max_clients() {
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::start(&dir.path().join("n"), &["--max-clients", "4"]);
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut raw = Raw::connect(node.addr);
        let reply = raw.command(&["SHIPLOG.SHIP"]);
        assert!(reply.starts_with("+OK"), "{reply}");
        held.push(raw);
    }
    // Sample for a while: the number of sessions never exceeds the cap.
    let mut most = 0;
    for _ in 0..50 {
        let shippers = node
            .thread_names()
            .iter()
            .filter(|n| *n == "shipper")
            .count();
        most = most.max(shippers);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most <= 4, "{most} shipping threads with --max-clients 4");
    assert!(node.wait_for_log("too many shipping sessions"));
    drop(held);
}

/// Found in review: a connected replica whose slot is over the cap gets it re-created and dropped at
/// every tick (250 ms): two log lines and a durable rewrite of `replica-slots` each time.
#[test]
fn an_over_cap_connected_replica_does_not_get_its_slot_back_every_tick() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(
        &dir.path().join("p"),
        &["--segment-bytes", "4096", "--max-retained-bytes", "16384"],
    );
    let proxy = daemon::proxy::Proxy::start(primary.addr);
    let replica = Daemon::start(
        &dir.path().join("r"),
        &["--replica-of", &proxy.addr.to_string()],
    );
    overwrite_load(&mut primary.client(), 10);
    assert!(wait_caught_up(&primary, &replica, 30));
    // The link stays up (no timeout for 10/30 s) but the replica falls behind by more than the cap.
    proxy.stall();
    overwrite_load(&mut primary.client(), 300);
    std::thread::sleep(Duration::from_secs(3));
    let log = primary.log();
    let created = log.matches("retention slot created").count();
    let dropped = log.matches("retention slot dropped").count();
    eprintln!("in ~3 s: {created} slot creations, {dropped} drops");
    assert!(created <= 2, "slot re-created {created} times");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" && e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Found in review: retention slots are keyed by the `replica-id` file in the data directory, and a
/// slot only moves forward. A replica seeded by copying another replica's directory (the only
/// way to seed one without snapshots) shares its slot: while the other one advances, the log
/// the copy needs is compacted away, and the copy can never attach.
#[test]
fn a_copied_replica_directory_gets_a_slot_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(&dir.path().join("p"), &["--segment-bytes", "4096"]);
    let addr = primary.addr.to_string();
    overwrite_load(&mut primary.client(), 50);
    let r1 = Daemon::start(&dir.path().join("r1"), &["--replica-of", &addr]);
    assert!(wait_caught_up(&primary, &r1, 30));
    r1.stop();
    copy_dir(&dir.path().join("r1"), &dir.path().join("r2"));
    // The copy attaches once (it gets a slot of its own), then is offline while r1 follows.
    let r2 = Daemon::start(&dir.path().join("r2"), &["--replica-of", &addr]);
    assert!(wait_caught_up(&primary, &r2, 30));
    r2.stop();
    let r1 = Daemon::start(&dir.path().join("r1"), &["--replica-of", &addr]);
    overwrite_load(&mut primary.client(), 3000);
    assert!(wait_caught_up(&primary, &r1, 30));
    std::thread::sleep(Duration::from_secs(4));
    let r2 = Daemon::start(&dir.path().join("r2"), &["--replica-of", &addr]);
    let caught_up = wait_caught_up(&primary, &r2, 15);
    eprintln!(
        "r2 caught up: {caught_up}; r2 log tail: {}",
        r2.log()
            .lines()
            .rfind(|l| l.contains("WARN") || l.contains("ERROR"))
            .unwrap_or("")
    );
    assert!(caught_up, "the copy lost its retention to its twin");
    drop(r1);
}
