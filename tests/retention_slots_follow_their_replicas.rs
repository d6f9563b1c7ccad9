//! Retention slots follow their replicas: a replica that falls past the cap while connected
//! does not get its slot back at every tick, and a replica seeded from a copy of another
//! replica's directory gets a slot of its own, so its twin's progress never compacts away the
//! log it needs. Real processes.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::path::Path;
use std::time::Duration;

use daemon::proxy::Proxy;
use daemon::{Daemon, overwrite_load, wait_caught_up};

/// A connected replica whose slot is over the cap once got it re-created and dropped at every
/// tick (250 ms): two log lines and a durable rewrite of `replica-slots` each time.
#[test]
fn an_over_cap_connected_replica_does_not_get_its_slot_back_every_tick() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(
        &dir.path().join("p"),
        &["--segment-bytes", "4096", "--max-retained-bytes", "16384"],
    );
    let proxy = Proxy::start(primary.addr);
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

/// Retention slots are keyed by the `replica-id` file in the data directory, and a slot only
/// moves forward. A replica seeded by copying another replica's directory (the only way to
/// seed one without snapshots) once shared its slot: while the other one advanced, the log the
/// copy needed was compacted away, and the copy could never attach.
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
