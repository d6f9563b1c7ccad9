//! Three real `shiplogd` nodes under a client load, for the failover and network-fault tests:
//! each node has a fixed address (kept across restarts) and one proxy per other node that the
//! other node's replica link goes through (clients connect directly), so each replica's link
//! can be cut, held or slowed on its own. Clients write and read their own keys on whichever
//! node is primary, recording every operation in a [`History`]; [`Cluster::finish`] stops the
//! load, waits for the replicas, checks that every node holds the same data at the same LSN
//! and returns the history's anomalies.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test helpers: each test binary uses a part; a failed unwrap is a failed test"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::history::{History, Op, Outcome};
use super::proxy::Proxy;
use super::{Daemon, dump, free_port, info_field, wait_until};

/// Concurrent clients of the load.
pub const CLIENTS: usize = 4;
/// Keys each client overwrites (half its writes go to fresh keys instead).
const KEYS_PER_CLIENT: u64 = 25;
/// The replication mode under test.
pub const SYNC: [&str; 4] = ["--sync-replicas", "1", "--sync-timeout-ms", "2000"];
/// Asynchronous replication, for the control run that must lose acknowledged writes.
pub const ASYNC: [&str; 2] = ["--sync-replicas", "0"];
/// Times a promotion is asked again when the replicas' order changed meanwhile.
const PROMOTION_ATTEMPTS: usize = 50;
/// Seconds a replica may take to catch up, or an old primary to step down.
const CATCH_UP_SECS: u64 = 60;

/// A node: its directory and fixed address (kept across restarts), and its process.
pub struct Node {
    pub dir: PathBuf,
    pub port: u16,
    flags: &'static [&'static str],
    pub daemon: Option<Daemon>,
    /// `links[j]`: what node `j` connects through when it replicates from this node, so the
    /// log this node ships to `j` (and what `j` sends back) can be held back.
    pub links: Vec<Proxy>,
    /// The logs of its earlier processes, for a failed test to show.
    pub past_logs: String,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Starts it, as a replica of `primary` (a link proxy's address) if given.
    fn start(&mut self, primary: Option<SocketAddr>) {
        let listen = self.addr().to_string();
        let mut args = vec!["--listen", &listen];
        args.extend(self.flags);
        let primary = primary.map(|p| p.to_string());
        if let Some(p) = &primary {
            args.extend(["--replica-of", p.as_str()]);
        }
        if let Some(old) = self.daemon.take() {
            self.past_logs.push_str(&old.log());
        }
        self.daemon = Some(Daemon::start(&self.dir, &args));
    }

    /// Every line its processes logged, oldest first.
    pub fn logs(&self) -> String {
        let mut all = self.past_logs.clone();
        if let Some(daemon) = &self.daemon {
            all.push_str(&daemon.log());
        }
        all
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    /// An `INFO replication` field as a number (0 when missing).
    pub fn lsn(&self, field: &str) -> u64 {
        self.info(field).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// An `INFO replication` field.
    pub fn info(&self, field: &str) -> Option<String> {
        info_field(&mut self.daemon().client(), "replication", field)
    }

    /// `SHIPLOG.POSITION`: (durable LSN, highest epoch, last epoch).
    fn position(&self) -> Vec<u64> {
        redis::cmd("SHIPLOG.POSITION")
            .query(&mut self.daemon().client())
            .unwrap()
    }
}

/// What a finished run found.
#[derive(Debug, Default)]
pub struct Summary {
    pub acknowledged: usize,
    pub failed: usize,
    pub indeterminate: usize,
    pub reads: usize,
    /// The LSN every node holds at the end.
    pub lsn: u64,
    pub anomalies: Vec<String>,
}

/// Three nodes, one primary, and the client load.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// Index of the primary.
    pub primary: usize,
    /// Where the clients send their operations.
    current: Arc<Mutex<SocketAddr>>,
    pub history: Arc<History>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Starts node 0 as primary and nodes 1 and 2 as its replicas under `base`, waits until
    /// they follow, and starts the load.
    pub fn start(base: &Path, flags: &'static [&'static str]) -> Self {
        let mut nodes: Vec<Node> = (0..3)
            .map(|i| {
                let port = free_port();
                let upstream: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                Node {
                    dir: base.join(format!("n{i}")),
                    port,
                    flags,
                    daemon: None,
                    links: (0..3).map(|_| Proxy::start(upstream)).collect(),
                    past_logs: String::new(),
                }
            })
            .collect();
        nodes[0].start(None);
        for i in 1..3 {
            let through = nodes[0].links[i].addr;
            nodes[i].start(Some(through));
        }
        let current = Arc::new(Mutex::new(nodes[0].addr()));
        let mut cluster = Self {
            nodes,
            primary: 0,
            current,
            history: Arc::new(History::default()),
            stop: Arc::new(AtomicBool::new(false)),
            clients: Vec::new(),
        };
        cluster.converge();
        cluster.clients = (0..CLIENTS)
            .map(|id| {
                let current = Arc::clone(&cluster.current);
                let history = Arc::clone(&cluster.history);
                let stop = Arc::clone(&cluster.stop);
                std::thread::spawn(move || client(id, &current, &history, &stop))
            })
            .collect();
        cluster
    }

    /// The nodes other than the primary.
    pub fn replicas(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| i != self.primary)
            .collect()
    }

    /// The proxy `replica` reaches `primary` through.
    pub fn link(&self, primary: usize, replica: usize) -> &Proxy {
        &self.nodes[primary].links[replica]
    }

    /// Every proxy back to forwarding everything.
    pub fn heal(&self) {
        for proxy in self.nodes.iter().flat_map(|n| &n.links) {
            proxy.heal();
        }
    }

    /// `REPLICAOF` `node` to `primary`, through `primary`'s link for it.
    pub fn repoint(&self, node: usize, primary: usize) {
        let port = self.link(primary, node).addr.port().to_string();
        let () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(&port)
            .query(&mut self.nodes[node].daemon().client())
            .unwrap();
    }

    /// Promotes the most advanced of `candidates` ((epoch of the last record, durable LSN) as
    /// `SHIPLOG.POSITION` says), points the clients at it and the other candidates at it;
    /// returns its index. The candidates may still be taking what was in flight from the old
    /// primary, so the order can change between the question and the promotion, which then
    /// refuses: ask again.
    fn promote_most_advanced(&mut self, mut candidates: Vec<usize>) -> usize {
        let mut attempts = 0;
        let promoted = loop {
            candidates.sort_by_key(|&i| {
                let p = self.nodes[i].position();
                std::cmp::Reverse((p[2], p[0]))
            });
            let reply: redis::RedisResult<String> = redis::cmd("REPLICAOF")
                .arg("NO")
                .arg("ONE")
                .query(&mut self.nodes[candidates[0]].daemon().client());
            match reply {
                Ok(reply) => {
                    assert_eq!(reply, "OK");
                    break candidates[0];
                }
                Err(e) if e.to_string().contains("holds LSN") && attempts < PROMOTION_ATTEMPTS => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("promotion refused: {e}"),
            }
        };
        self.primary = promoted;
        *self.current.lock().unwrap() = self.nodes[promoted].addr();
        for &other in &candidates[1..] {
            self.repoint(other, promoted);
        }
        promoted
    }

    /// Kills the primary, promotes the most advanced replica, re-points the other, and
    /// restarts the killed node as a replica of the new primary.
    /// With `pause`, the log the primary ships is held back for a moment before the kill and
    /// dropped with it: whatever the primary acknowledged meanwhile is the test.
    pub fn failover(&mut self, pause: bool) {
        let old = self.primary;
        if pause {
            self.nodes[old].links.iter().for_each(Proxy::stall);
            std::thread::sleep(Duration::from_millis(100));
        }
        let killed = self.nodes[old].daemon.take().unwrap();
        self.nodes[old].past_logs.push_str(&killed.log());
        self.nodes[old].past_logs.push_str("--- kill -9 ---\n");
        killed.kill();
        if pause {
            for proxy in &self.nodes[old].links {
                proxy.drop_connections();
                proxy.resume();
            }
        }
        let promoted = self.promote_most_advanced(self.replicas());
        let through = self.link(promoted, old).addr;
        self.nodes[old].start(Some(through));
    }

    /// Stops the primary (SIGSTOP) for `hold`, promotes the most advanced replica meanwhile,
    /// resumes the old primary (SIGCONT), waits until it stepped down (it learns of the new
    /// epoch from the promoted node's notice) and re-points it at the new primary.
    pub fn failover_across_stopped_primary(&mut self, hold: Duration) {
        let old = self.primary;
        self.nodes[old].daemon().signal(Signal::SIGSTOP);
        std::thread::sleep(hold);
        let promoted = self.promote_most_advanced(self.replicas());
        self.nodes[old].daemon().signal(Signal::SIGCONT);
        let node = &self.nodes[old];
        assert!(
            wait_until(CATCH_UP_SECS, || node.info("fenced_by_epoch").is_some()),
            "node {old}, the old primary, did not step down after SIGCONT:\n{}",
            node.daemon().log()
        );
        self.repoint(old, promoted);
    }

    /// Writes each node's logs beside its directory (`n0.log`, ...), for a failed test.
    pub fn save_logs(&self) {
        for node in &self.nodes {
            let _ = std::fs::write(node.dir.with_extension("log"), node.logs());
        }
    }

    /// Waits until every replica has applied what the primary made durable.
    pub fn converge(&self) {
        let target = self.nodes[self.primary].lsn("master_repl_offset");
        for i in self.replicas() {
            let node = &self.nodes[i];
            assert!(
                wait_until(CATCH_UP_SECS, || node.lsn("replica_applied_lsn") >= target),
                "node {i} does not catch up to LSN {target}: {:?}",
                node.info("replica_last_error")
            );
        }
    }

    /// Stops the load, waits for the replicas, checks that every node holds the same data at
    /// the same LSN, stops the nodes, and checks the history against the final state.
    pub fn finish(mut self) -> Summary {
        self.stop.store(true, Ordering::Release);
        for c in self.clients.drain(..) {
            c.join().unwrap();
        }
        self.converge();
        let primary = &self.nodes[self.primary];
        let expected = dump(&mut primary.daemon().client());
        let lsn = primary.lsn("master_repl_offset");
        for (i, node) in self.nodes.iter().enumerate() {
            assert_eq!(
                dump(&mut node.daemon().client()),
                expected,
                "node {i} differs"
            );
            if i != self.primary {
                assert_eq!(
                    node.lsn("replica_applied_lsn"),
                    lsn,
                    "node {i} is not at the primary's LSN"
                );
            }
        }
        let final_state: HashMap<String, u64> = expected
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k).unwrap(),
                    String::from_utf8(v).unwrap().parse().unwrap(),
                )
            })
            .collect();
        let (acknowledged, failed, indeterminate) = self.history.write_counts();
        let summary = Summary {
            acknowledged,
            failed,
            indeterminate,
            reads: self.history.reads(),
            lsn,
            anomalies: self.history.anomalies(&final_state),
        };
        if summary.anomalies.is_empty() {
            for node in &mut self.nodes {
                node.daemon.take().unwrap().stop();
            }
        } else {
            self.save_logs();
        }
        summary
    }
}

impl Drop for Cluster {
    /// Stops the load, so a failed test leaves no client running, and keeps the nodes' logs
    /// of a failed test beside their directories.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if std::thread::panicking() {
            self.save_logs();
        }
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

/// Panics with the first anomalies when there are any.
pub fn assert_none(anomalies: &[String]) {
    assert!(
        anomalies.is_empty(),
        "{} anomalies: {:#?}",
        anomalies.len(),
        &anomalies[..anomalies.len().min(20)]
    );
}
