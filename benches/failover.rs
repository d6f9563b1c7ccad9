//! Failover timings with real processes on loopback: the time from `REPLICAOF NO ONE` on the
//! most advanced replica to the first acknowledged write on it (the other replica re-pointed in
//! between, as an operator or a script does), and the time for the old primary, restarted
//! pointed at the new one, to rewind the writes only it had and catch up. Each round: a primary
//! with two replicas behind proxies, `KEYS` keys written, both proxies stalled, `DIVERGED`
//! writes acknowledged by the primary alone, the primary killed with SIGKILL.
//!
//! Run: `cargo bench --bench failover`; `SHIPLOG_FAILOVER_ROUNDS` (default 7),
//! `SHIPLOG_FAILOVER_KEYS` (default 20000), `SHIPLOG_FAILOVER_FLAGS` (extra `shiplogd` flags for
//! every node, say `--sync-replicas 1`). Prints each round and the medians. Figures go to
//! docs/benchmarks.md, "Failover".

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::pedantic, reason = "benchmark code")]

#[path = "../tests/daemon/mod.rs"]
mod daemon;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon::proxy::Proxy;
use daemon::{Daemon, free_port, info_field, wait_until};

const DIVERGED: usize = 100;

fn flags() -> Vec<String> {
    std::env::var("SHIPLOG_FAILOVER_FLAGS")
        .map(|f| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn start(dir: &Path, extra: &[&str]) -> Daemon {
    let flags = flags();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(flags.iter().map(String::as_str));
    Daemon::start(dir, &args)
}

fn lsn(node: &Daemon, field: &str) -> u64 {
    info_field(&mut node.client(), "replication", field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fill(con: &mut redis::Connection, prefix: &str, count: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("{prefix}{i}"))
                .arg(format!("value-{i}"))
                .ignore();
        }
        let () = pipe.query(con).unwrap();
    }
}

/// One failover; returns (promotion to first acknowledged write, rejoin) in milliseconds.
fn round(base: &Path, keys: usize) -> (f64, f64) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let primary = start(&base.join("p"), &["--listen", &listen]);
    let to_a = Proxy::start(primary.addr);
    let to_b = Proxy::start(primary.addr);
    let a = start(&base.join("a"), &["--replica-of", &to_a.addr.to_string()]);
    let b = start(&base.join("b"), &["--replica-of", &to_b.addr.to_string()]);
    fill(&mut primary.client(), "k", keys);
    let durable = lsn(&primary, "master_repl_offset");
    assert!(wait_until(60, || lsn(&a, "replica_durable_lsn") >= durable
        && lsn(&b, "replica_durable_lsn") >= durable));
    to_a.stall();
    to_b.stall();
    let mut p = primary.client();
    let sync = flags().iter().any(|f| f == "--sync-replicas");
    if !sync {
        // Acknowledged by the old primary alone: its rewind cuts these.
        fill(&mut p, "diverged", DIVERGED);
    }
    drop(p);
    primary.kill();

    let mut con = a.client();
    let a_port = a.addr.port().to_string();
    let started = Instant::now();
    let _: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&a_port)
        .query(&mut b.client())
        .unwrap();
    loop {
        let done: redis::RedisResult<()> =
            redis::cmd("SET").arg("first").arg("write").query(&mut con);
        if done.is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{done:?}");
    }
    let promotion = started.elapsed().as_secs_f64() * 1000.0;

    let started = Instant::now();
    let rejoined = start(
        &base.join("p"),
        &["--listen", &listen, "--replica-of", &a.addr.to_string()],
    );
    let target = lsn(&a, "master_repl_offset");
    assert!(wait_until(120, || {
        (sync || lsn(&rejoined, "replica_rewinds") >= 1)
            && lsn(&rejoined, "replica_applied_lsn") >= target
    }));
    let rejoin = started.elapsed().as_secs_f64() * 1000.0;
    for node in [rejoined, a, b] {
        node.stop();
    }
    (promotion, rejoin)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|x, y| x.partial_cmp(y).unwrap());
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("SHIPLOG_FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let keys: usize = std::env::var("SHIPLOG_FAILOVER_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (mut promotions, mut rejoins) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let dir = match std::env::var_os("SHIPLOG_BENCH_DIR") {
            Some(base) => tempfile::tempdir_in(base).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let (promotion, rejoin) = round(dir.path(), keys);
        println!(
            "round {i}: promotion to first acknowledged write {promotion:.1} ms, rejoin {rejoin:.1} ms"
        );
        promotions.push(promotion);
        rejoins.push(rejoin);
    }
    println!(
        "median of {rounds}: promotion to first acknowledged write {:.1} ms, rejoin of the old primary {:.1} ms ({keys} keys{})",
        median(promotions),
        median(rejoins),
        if flags().is_empty() {
            String::new()
        } else {
            format!(", flags {:?}", flags())
        }
    );
}
