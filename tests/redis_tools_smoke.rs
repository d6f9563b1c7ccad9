//! `redis-cli` and `redis-benchmark` (Debian package `redis-tools`, installed by `.ci/run`) work
//! against `shiplogd` unchanged.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::process::Command;

use daemon::Daemon;
use redis::Commands;

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed: `apt-get install redis-tools` (.ci/run does it)"
    );
    Command::new(name)
}

#[test]
fn redis_cli_and_redis_benchmark_run_against_shiplogd() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let port = daemon.addr.port().to_string();
    let cli = |args: &[&str]| {
        let out = tool("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["set", "hello", "world"]), "OK\n");
    assert_eq!(cli(&["get", "hello"]), "world\n");
    assert_eq!(cli(&["incrby", "n", "5"]), "5\n");
    assert!(cli(&["info", "server"]).contains("redis_version:"));
    assert_eq!(cli(&["--scan", "--pattern", "hel*"]), "hello\n");
    // Mass insertion, as the Redis documentation teaches it.
    let mut protocol = Vec::new();
    for i in 0..1000 {
        let (k, v) = (format!("mass:{i}"), format!("v{i}"));
        protocol.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
    }
    let pipe_file = dir.path().join("mass.txt");
    std::fs::write(&pipe_file, &protocol).unwrap();
    let out = tool("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "--pipe"])
        .stdin(std::fs::File::open(&pipe_file).unwrap())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("errors: 0, replies: 1000"), "{report}");

    let out = tool("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args([
            "-t",
            "set,get,incr,mset",
            "-n",
            "3000",
            "-c",
            "10",
            "-r",
            "1000",
            "-q",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    for test in ["SET: ", "GET: ", "INCR: ", "MSET (10 keys): "] {
        assert!(
            report.contains(test) && report.contains("requests per second"),
            "redis-benchmark did not report {test}: {report}"
        );
    }
    let mut con = daemon.client();
    let v: String = con.get("mass:999").unwrap();
    assert_eq!(v, "v999");
    let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert!(size > 1000, "benchmark keys are stored: {size}");
    daemon.stop();
}
