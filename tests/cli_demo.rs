//! `shiplog demo` as a newcomer runs it: three real nodes, a partition and a failover under
//! load, the old primary rewinds and rejoins, and the verdict is honest. By default
//! (`--sync-replicas 1`) no acknowledged write may be lost; with `--async` the write the
//! isolated primary acknowledges is lost, and the demo must count it, find it in the rollback
//! file and fail.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::Command;

/// The number before `label` in `text` (`"12 lost"` gives 12 for `" lost"`).
fn number_before(text: &str, label: &str) -> u64 {
    let end = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {text}"));
    let start = text[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    text[start..end].parse().unwrap()
}

/// Runs the demo with `extra` arguments; its stdout, everything for messages, and whether it
/// exited 0. Checks the steps every run shows, and that its directory is gone.
fn demo(extra: &[&str]) -> (String, String, bool) {
    let parent = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["demo", "--seconds", "2", "--dir"])
        .arg(parent.path())
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let all = format!(
        "{text}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for step in [
        "started n1",
        "as replica of n1",
        "partition: n1 cut off from its replicas; a write sent to it ",
        "kill -9 n1",
        "positions: ",
        "(REPLICAOF NO ONE): primary of epoch 2",
        "first acknowledged write on",
        "acknowledged writes read back from",
        // The write sent during the partition is on n1 alone: there is always a tail to cut.
        "restart n1 as a replica of the new primary: rewound (1x), ",
        "only it held cut to n1/rollback/rollback-",
        "n1 rejoined: caught up",
        "converged: n1, n2, n3 hold the same",
    ] {
        assert!(text.contains(step), "missing {step:?}:\n{all}");
    }
    let readings = text
        .lines()
        .filter(|l| l.contains(" acked | n1 LSN"))
        .count();
    assert_eq!(readings, 4, "two lag readings a second:\n{all}");
    let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo's directory is removed: {left:?}");
    (text, all, output.status.success())
}

fn summary_numbers(text: &str, all: &str) -> (u64, u64) {
    let summary = text
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary:\n{all}"));
    (
        number_before(summary, " writes acknowledged"),
        number_before(summary, " lost"),
    )
}

#[test]
fn the_demo_fails_over_under_load_and_loses_no_acknowledged_write() {
    let (text, all, passed) = demo(&[]);
    assert!(
        text.contains("mode: synchronous (--sync-replicas 1)"),
        "{all}"
    );
    let (acked, lost) = summary_numbers(&text, &all);
    assert!(acked > 0, "{all}");
    assert_eq!(lost, 0, "synchronous replication loses nothing:\n{all}");
    assert!(
        text.contains("gets no reply in 500 ms: it waits for a replica"),
        "a primary cut off from its replicas acknowledges nothing:\n{all}"
    );
    assert!(
        text.contains("none of them was acknowledged"),
        "the rewind cuts only unanswered writes:\n{all}"
    );
    assert!(
        text.contains("PASS: no acknowledged write was lost"),
        "{all}"
    );
    assert!(passed, "{all}");
}

#[test]
fn with_async_the_demo_shows_the_acknowledged_writes_a_failover_loses_and_fails() {
    let (text, all, passed) = demo(&["--async"]);
    assert!(text.contains("mode: asynchronous (--async)"), "{all}");
    let (_, lost) = summary_numbers(&text, &all);
    assert!(
        lost >= 1,
        "the isolated primary's acknowledged write is lost:\n{all}"
    );
    assert!(
        text.contains(&format!(
            "{lost} of the {lost} lost acknowledged writes are in that file"
        )),
        "the rollback file holds every lost write:\n{all}"
    );
    assert!(
        text.contains(&format!("FAIL: {lost} acknowledged writes lost")),
        "{all}"
    );
    assert!(!passed, "{all}");
}

#[test]
fn without_shiplogd_beside_it_the_demo_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("shiplog");
    std::fs::copy(env!("CARGO_BIN_EXE_shiplog"), &alone).unwrap();
    let output = Command::new(&alone).arg("demo").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("shiplogd is missing"), "{stderr}");
    assert!(stderr.contains("cargo build --release"), "{stderr}");
}
