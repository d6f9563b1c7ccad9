//! Failover under load with `--sync-replicas 1`, real processes: three nodes, clients writing
//! and reading their own keys on whichever node is primary, and cycles of `kill -9` of the
//! primary, promotion of the most advanced replica, re-pointing of the other and rejoin of the
//! killed node (which rewinds what it alone had). Every operation is recorded (ok, fail,
//! indeterminate) and the history is checked at the end: no acknowledged write lost, no value
//! read that was never written, no acknowledged write read as undone, and every node holding
//! the same data. `SHIPLOG_FAILOVER_CYCLES` sets the cycles of the long, ignored variant.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon::history::{History, Op, Outcome};
use daemon::proxy::Proxy;
use daemon::{Daemon, dump, free_port, info_field, wait_until};

const CLIENTS: usize = 4;
const KEYS_PER_CLIENT: u64 = 25;
/// The replication mode under test.
const SYNC: [&str; 4] = ["--sync-replicas", "1", "--sync-timeout-ms", "2000"];
/// Asynchronous replication, for the control run that must lose acknowledged writes.
const ASYNC: [&str; 2] = ["--sync-replicas", "0"];

/// A node: its directory and fixed address (kept across restarts), and its process.
struct Node {
    dir: PathBuf,
    port: u16,
    flags: &'static [&'static str],
    daemon: Option<Daemon>,
    /// What its replicas connect through (clients connect directly), so the log it ships can
    /// be held back.
    proxy: Proxy,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Starts it, as a replica of `primary` (reached through that node's proxy) if given.
    fn start(&mut self, primary: Option<SocketAddr>) {
        let listen = self.addr().to_string();
        let mut args = vec!["--listen", &listen];
        args.extend(self.flags);
        let primary = primary.map(|p| p.to_string());
        if let Some(p) = &primary {
            args.extend(["--replica-of", p.as_str()]);
        }
        self.daemon = Some(Daemon::start(&self.dir, &args));
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    fn lsn(&self, field: &str) -> u64 {
        info_field(&mut self.daemon().client(), "replication", field)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// One client: writes (80%, half of them to fresh keys) and reads (20%) of its own keys on the
/// current primary, one at a time, each recorded with its outcome.
fn client(id: usize, primary: &Mutex<SocketAddr>, history: &History, stop: &AtomicBool) {
    let mut seq = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (id as u64 + 1);
    let mut con: Option<(SocketAddr, redis::Connection)> = None;
    while !stop.load(Ordering::Acquire) {
        let target = *primary.lock().unwrap();
        if con.as_ref().is_none_or(|(addr, _)| *addr != target) {
            let url = format!("redis://{target}/");
            con = redis::Client::open(url)
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                .ok()
                .map(|c| (target, c));
            if con.is_none() {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        }
        let (_, c) = con.as_mut().unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = format!("c{id}:k{}", rng % KEYS_PER_CLIENT);
        let invoked = history.invoke();
        if rng.is_multiple_of(5) {
            let result: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&key).query(c);
            if let Ok(value) = result {
                let value = value.map(|v| v.parse().unwrap());
                history.complete(invoked, Op::Read { key, value }, Outcome::Ok);
            } else {
                con = None;
            }
            continue;
        }
        seq += 1;
        // Half the writes go to a key of their own, never overwritten: a lost one shows in the
        // final state whatever happens later. The others overwrite the client's keys.
        let key = if (rng >> 8).is_multiple_of(2) {
            format!("c{id}:n{seq}")
        } else {
            key
        };
        let result: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(seq).query(c);
        let outcome = match &result {
            Ok(()) => Outcome::Ok,
            // Refused before anything was written.
            Err(e) if e.to_string().contains("READONLY") => Outcome::Fail,
            // -NOREPLICAS: durable here, not confirmed anywhere else; or the connection broke.
            Err(_) => Outcome::Indeterminate,
        };
        if outcome != Outcome::Ok {
            con = None;
        }
        history.complete(invoked, Op::Write { key, seq }, outcome);
    }
}

/// Kills the primary, promotes the most advanced replica, re-points the other, and restarts
/// the killed node as a replica of the new primary; returns the new primary's index.
/// With `pause`, the log the primary ships is held back for a moment before the kill and
/// dropped with it: whatever the primary acknowledged meanwhile is the test.
fn failover(nodes: &mut [Node], primary: usize, current: &Mutex<SocketAddr>, pause: bool) -> usize {
    let others: Vec<usize> = (0..nodes.len()).filter(|&i| i != primary).collect();
    if pause {
        nodes[primary].proxy.stall();
        std::thread::sleep(Duration::from_millis(100));
    }
    nodes[primary].daemon.take().unwrap().kill();
    if pause {
        nodes[primary].proxy.drop_connections();
        nodes[primary].proxy.resume();
    }
    let mut replicas = others;
    // Most advanced first: (epoch of the last record, durable LSN), as SHIPLOG.POSITION says.
    // The replicas may still be taking what was in flight from the dead primary, so the order
    // can change between the question and the promotion, which then refuses: ask again.
    let mut attempts = 0;
    let promoted = loop {
        replicas.sort_by_key(|&i| {
            let p: Vec<u64> = redis::cmd("SHIPLOG.POSITION")
                .query(&mut nodes[i].daemon().client())
                .unwrap();
            std::cmp::Reverse((p[2], p[0]))
        });
        let reply: redis::RedisResult<String> = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query(&mut nodes[replicas[0]].daemon().client());
        match reply {
            Ok(reply) => {
                assert_eq!(reply, "OK");
                break replicas[0];
            }
            Err(e) if e.to_string().contains("holds LSN") && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("promotion refused: {e}"),
        }
    };
    *current.lock().unwrap() = nodes[promoted].addr();
    let port = nodes[promoted].proxy.addr.port().to_string();
    for &other in &replicas[1..] {
        let () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(&port)
            .query(&mut nodes[other].daemon().client())
            .unwrap();
    }
    let new_primary = nodes[promoted].proxy.addr;
    nodes[primary].start(Some(new_primary));
    promoted
}

/// Waits until every replica has applied what the primary made durable.
fn converge(nodes: &[Node], primary: usize) {
    let target = nodes[primary].lsn("master_repl_offset");
    for (i, node) in nodes.iter().enumerate().filter(|&(i, _)| i != primary) {
        assert!(
            wait_until(60, || node.lsn("replica_applied_lsn") >= target),
            "node {i} does not catch up to LSN {target}: {:?}",
            info_field(
                &mut node.daemon().client(),
                "replication",
                "replica_last_error"
            )
        );
    }
}

/// Runs `cycles` failovers under load (pausing the replicas before the kill in every cycle
/// when `always_pause`, else in every other one); returns the history's anomalies.
fn run(
    cycles: usize,
    base: &Path,
    flags: &'static [&'static str],
    always_pause: bool,
) -> Vec<String> {
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let port = free_port();
            Node {
                dir: base.join(format!("n{i}")),
                port,
                flags,
                daemon: None,
                proxy: Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()),
            }
        })
        .collect();
    nodes[0].start(None);
    let first = nodes[0].addr();
    let through = nodes[0].proxy.addr;
    nodes[1].start(Some(through));
    nodes[2].start(Some(through));
    converge(&nodes, 0);
    let current = Arc::new(Mutex::new(first));
    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (current, history, stop) = (current.clone(), history.clone(), stop.clone());
            std::thread::spawn(move || client(id, &current, &history, &stop))
        })
        .collect();
    let mut primary = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for cycle in 0..cycles {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Kill at a random moment of the load, once every node follows the primary.
        std::thread::sleep(Duration::from_millis(150 + rng % 400));
        converge(&nodes, primary);
        let pause = always_pause || cycle % 2 == 1;
        primary = failover(&mut nodes, primary, &current, pause);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    for c in clients {
        c.join().unwrap();
    }
    converge(&nodes, primary);
    let final_state: HashMap<String, u64> = dump(&mut nodes[primary].daemon().client())
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k).unwrap(),
                String::from_utf8(v).unwrap().parse().unwrap(),
            )
        })
        .collect();
    let (ok, fail, indeterminate) = history.write_counts();
    let anomalies = history.anomalies(&final_state);
    assert!(
        ok > 100 * cycles.min(5),
        "the load made progress: {ok} writes acknowledged"
    );
    let expected = dump(&mut nodes[primary].daemon().client());
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            dump(&mut node.daemon().client()),
            expected,
            "node {i} differs"
        );
    }
    eprintln!(
        "{cycles} failovers ({flags:?}): {ok} writes acknowledged, {fail} failed, {indeterminate} \
         indeterminate, {} reads, {} anomalies",
        history.reads(),
        anomalies.len()
    );
    for node in nodes {
        node.daemon.unwrap().stop();
    }
    anomalies
}

fn assert_none(anomalies: &[String]) {
    assert!(
        anomalies.is_empty(),
        "{} anomalies: {:#?}",
        anomalies.len(),
        &anomalies[..anomalies.len().min(20)]
    );
}

#[test]
fn no_acknowledged_write_is_lost_across_kill_9_failovers() {
    let dir = tempfile::tempdir().unwrap();
    assert_none(&run(4, dir.path(), &SYNC, false));
}

/// The control: the same run with asynchronous replication, replicas paused before every
/// kill, loses acknowledged writes, and the checker says so.
#[test]
fn the_checker_sees_acknowledged_writes_lost_by_asynchronous_replication() {
    let dir = tempfile::tempdir().unwrap();
    let anomalies = run(2, dir.path(), &ASYNC, true);
    assert!(
        anomalies.iter().any(|a| a.contains("acknowledged write")),
        "{anomalies:?}"
    );
}

#[test]
#[ignore = "long: SHIPLOG_FAILOVER_CYCLES failovers (default 100)"]
fn no_acknowledged_write_is_lost_across_many_kill_9_failovers() {
    let cycles = std::env::var("SHIPLOG_FAILOVER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    assert_none(&run(cycles, dir.path(), &SYNC, false));
}

/// The checker itself, on histories with known anomalies.
fn write(h: &History, key: &str, seq: u64, outcome: Outcome) {
    let at = h.invoke();
    h.complete(
        at,
        Op::Write {
            key: key.into(),
            seq,
        },
        outcome,
    );
}

fn read(h: &History, key: &str, value: Option<u64>) {
    let at = h.invoke();
    h.complete(
        at,
        Op::Read {
            key: key.into(),
            value,
        },
        Outcome::Ok,
    );
}

#[test]
fn the_history_checker_finds_each_kind_of_anomaly() {
    let h = History::default();
    write(&h, "a", 1, Outcome::Ok);
    write(&h, "a", 2, Outcome::Indeterminate);
    write(&h, "b", 1, Outcome::Ok);
    write(&h, "c", 1, Outcome::Fail);
    read(&h, "a", Some(1));
    read(&h, "b", None);
    read(&h, "c", Some(1));
    read(&h, "a", Some(7));
    let final_state: HashMap<String, u64> =
        [("a".into(), 2), ("c".into(), 1)].into_iter().collect();
    let found = h.anomalies(&final_state);
    assert!(
        found
            .iter()
            .any(|a| a.starts_with("b: acknowledged write 1 lost")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|a| a.starts_with("c: the final value is write 1, which failed")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|a| a.starts_with("b: a read found no value")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|a| a.contains("c: a read returned 1, which no write")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|a| a.contains("a: a read returned 7, which no write")),
        "{found:?}"
    );
    assert_eq!(found.len(), 5, "{found:?}");
    // A valid history passes.
    let ok = History::default();
    write(&ok, "a", 1, Outcome::Ok);
    write(&ok, "a", 2, Outcome::Indeterminate);
    read(&ok, "a", Some(2));
    assert!(
        ok.anomalies(&[("a".into(), 1)].into_iter().collect())
            .is_empty()
    );
}
