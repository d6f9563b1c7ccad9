//! `shiplog load` against real `shiplogd` processes: a paced run with reads on the replica and
//! the visibility prober, and a catch-up measurement, each checked through its JSON report.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::process::Command;

use daemon::{Daemon, wait_caught_up};
use serde_json::Value;

fn load(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "shiplog load failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

/// Percentiles are positive and in order, and the count matches the rate.
fn assert_sane_latency(report: &Value, summary: &str) {
    let p = |name: &str| u(report, &format!("{summary}/{name}"));
    let (p50, p90, p99, p999, max) = (
        p("p50_us"),
        p("p90_us"),
        p("p99_us"),
        p("p999_us"),
        p("max_us"),
    );
    assert!(p50 > 0, "{summary}: {report}");
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{summary}: {report}"
    );
    assert!(max < 30_000_000, "{summary}: nothing waits 30 s: {report}");
}

#[test]
fn a_paced_run_reports_rates_latencies_and_visibility_lag() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(&dir.path().join("p"), &[]);
    let replica = Daemon::start(
        &dir.path().join("r"),
        &["--replica-of", &primary.addr.to_string()],
    );
    assert!(wait_caught_up(&primary, &replica, 30));
    let (p, r) = (primary.addr.to_string(), replica.addr.to_string());
    let report = load(&[
        "--server",
        &p,
        "--read-from",
        &r,
        "--visibility",
        &r,
        "--clients",
        "4",
        "--pipeline",
        "2",
        "--rate",
        "1000",
        "--read-ratio",
        "0.25",
        "--keys",
        "100",
        "--duration",
        "2",
    ]);
    assert_eq!(report["server"], p.as_str());
    assert_eq!(report["rate_per_sec"], 1000);
    let elapsed = f(&report, "/elapsed_secs");
    assert!((1.9..10.0).contains(&elapsed), "{report}");
    // 2,000 operations due in 2 s; a slow test machine may fall behind, but not far.
    let (sets, gets) = (
        u(&report, "/set/latency/count"),
        u(&report, "/get/latency/count"),
    );
    assert!((1200..=2000).contains(&(sets + gets)), "{report}");
    assert!(
        sets > 2 * gets && gets > 200,
        "a quarter are reads: {report}"
    );
    assert_eq!(u(&report, "/set/errors"), 0, "{report}");
    assert_eq!(
        u(&report, "/get/errors"),
        0,
        "reads on a replica are allowed: {report}"
    );
    let total = f(&report, "/total_ops_per_sec");
    assert!((500.0..=1100.0).contains(&total), "{report}");
    assert_sane_latency(&report, "/set/latency");
    assert_sane_latency(&report, "/get/latency");

    let probes = u(&report, "/visibility/probes");
    assert!(probes >= 100, "a probe every 5 ms for 2 s: {report}");
    assert_eq!(u(&report, "/visibility/timeouts"), 0, "{report}");
    assert!(f(&report, "/visibility/gets_per_probe") >= 1.0, "{report}");
    assert_sane_latency(&report, "/visibility/lag");
    assert!(
        u(&report, "/visibility/lag/p50_us") < 1_000_000,
        "an idle replica shows a write within a second: {report}"
    );
    assert!(report["catch_up"].is_null());
    drop(replica);
    drop(primary);
}

#[test]
fn catch_up_times_a_detached_replica_applying_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Daemon::start(&dir.path().join("p"), &[]);
    let node = Daemon::start(&dir.path().join("n"), &[]);
    let (p, n) = (primary.addr.to_string(), node.addr.to_string());
    let report = load(&[
        "--server",
        &p,
        "--catch-up",
        &n,
        "--ops",
        "3000",
        "--clients",
        "4",
        "--pipeline",
        "8",
    ]);
    assert_eq!(
        u(&report, "/set/latency/count"),
        3000,
        "exactly the budget: {report}"
    );
    assert_eq!(
        u(&report, "/catch_up/written_records"),
        3000,
        "one record per SET: {report}"
    );
    assert_eq!(u(&report, "/catch_up/replica_start_lsn"), 0);
    assert_eq!(
        u(&report, "/catch_up/applied_records"),
        u(&report, "/catch_up/target_lsn")
    );
    assert!(f(&report, "/catch_up/catch_up_secs") > 0.0, "{report}");
    assert!(
        f(&report, "/catch_up/write_records_per_sec") > 0.0,
        "{report}"
    );
    assert!(f(&report, "/catch_up/ratio") > 0.0, "{report}");
    // It really caught up, and follows the primary now.
    assert!(wait_caught_up(&primary, &node, 30));
    drop(node);
    drop(primary);
}
