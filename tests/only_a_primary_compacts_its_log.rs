//! Compaction follows the role, however a node got it: a replica promoted with `REPLICAOF NO
//! ONE` compacts like any primary, and a primary turned into a replica with `REPLICAOF` keeps
//! the shipped log as it came, like a replica started with `--replica-of`. Real processes.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::path::Path;
use std::time::Duration;

use daemon::{Daemon, overwrite_load, wait_caught_up};

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

/// Compaction was once switched off only by `--replica-of` at start: a node promoted with
/// `REPLICAOF NO ONE` never compacted (its log grew without bound).
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

/// A primary turned into a replica with `REPLICAOF` once kept compacting the shipped log.
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
