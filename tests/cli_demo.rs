//! `shiplog demo` as a newcomer runs it: three real nodes, a partition and a failover under
//! load, the old primary rewinds and rejoins, and the verdict is honest. With `--sync-replicas` in shiplogd,
//! no acknowledged write may be lost; without it, the demo must count what it lost and fail
//! when that is not zero.

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

#[test]
fn the_demo_fails_over_under_load_reads_back_every_acknowledged_write_and_converges() {
    let parent = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["demo", "--seconds", "2", "--dir"])
        .arg(parent.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
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
    let summary = text
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary:\n{all}"));
    assert!(number_before(summary, " writes acknowledged") > 0, "{all}");
    let lost = number_before(summary, " lost");
    if text.contains("mode: synchronous") {
        assert_eq!(lost, 0, "synchronous replication loses nothing:\n{all}");
        assert!(
            text.contains("gets no reply in 500 ms: it waits for a replica"),
            "a primary cut off from its replicas acknowledges nothing:\n{all}"
        );
        assert!(
            text.contains("none of them was acknowledged"),
            "the rewind cuts only unanswered writes:\n{all}"
        );
    }
    // Asynchronous replication may lose writes: the demo must say so and fail, never pass.
    assert_eq!(output.status.success(), lost == 0, "{all}");
    if lost == 0 {
        assert!(
            text.contains("PASS: no acknowledged write was lost"),
            "{all}"
        );
    } else {
        assert!(
            text.contains(&format!("FAIL: {lost} acknowledged writes lost")),
            "{all}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo's directory is removed: {left:?}");
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
