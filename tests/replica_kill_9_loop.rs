//! The replica crash loop: a primary with `--sync-replicas 1` takes `SET`, `MSET` and `DEL`
//! from two clients while its two replicas are killed with SIGKILL at random moments, one at a
//! time, and restarted. What each cycle checks:
//!
//! - a restarted replica recovers at least every LSN it had acknowledged as durable to the
//!   primary before the kill (a synchronous write counted that acknowledgement), read while it
//!   cannot reach the primary yet;
//! - it rejoins without a refusal: its log is a prefix of the primary's.
//!
//! Every round of cycles, the writers pause and every node must hold exactly the model of the
//! writes (all three nodes the same keys and values). `cargo test` runs a short loop; the long
//! one is `SHIPLOG_REPLICA_KILL_CYCLES=2000 cargo test --release --test replica_kill_9_loop --
//! --ignored --nocapture`, which prints its progress every round.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
mod daemon;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use daemon::proxy::Proxy;
use daemon::{Daemon, dump, info_field, start_replica, wait_caught_up};
use redis::Commands;

const WRITERS: usize = 2;
const KEYS_PER_WRITER: u64 = 1_500;
const CYCLES_PER_ROUND: usize = 25;

/// One writer's keys and what each holds after every write it sent (all reach the primary,
/// which is never killed: a write answered `-NOREPLICAS` is durable there too).
struct Writer {
    id: usize,
    model: BTreeMap<String, String>,
    rng: u64,
    version: u64,
    acknowledged: u64,
    indeterminate: u64,
}

impl Writer {
    fn new(id: usize) -> Self {
        Self {
            id,
            model: BTreeMap::new(),
            rng: 0x853c_49e6_748f_ea9b ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
            version: 0,
            acknowledged: 0,
            indeterminate: 0,
        }
    }

    fn next(&mut self) -> u64 {
        common::xorshift64_star(&mut self.rng)
    }

    fn key(&mut self) -> String {
        let slot = self.next() % KEYS_PER_WRITER;
        format!("w{}-k{slot}", self.id)
    }

    fn run(mut self, url: String, stop: Arc<AtomicBool>) -> Self {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        while !stop.load(Ordering::Relaxed) {
            self.version += 1;
            let value = format!(
                "v{}-{}",
                self.version,
                "y".repeat((self.version % 61) as usize)
            );
            let roll = self.next() % 10;
            let (key, other) = (self.key(), self.key());
            let result: redis::RedisResult<()> = match roll {
                0 => con.del::<_, i64>(&key).map(drop),
                1 => con.mset(&[(&key, &value), (&other, &value)]),
                _ => con.set(&key, &value),
            };
            match result {
                Ok(()) => self.acknowledged += 1,
                Err(e) if e.code() == Some("NOREPLICAS") => self.indeterminate += 1,
                Err(e) => panic!("a write to the primary failed: {e}"),
            }
            match roll {
                0 => {
                    self.model.remove(&key);
                }
                1 => {
                    self.model.insert(key, value.clone());
                    self.model.insert(other, value);
                }
                _ => {
                    self.model.insert(key, value);
                }
            }
        }
        self
    }
}

fn lsn(con: &mut redis::Connection, field: &str) -> Option<u64> {
    info_field(con, "replication", field).and_then(|v| v.parse().ok())
}

/// The durable LSN the primary holds as acknowledged by the replica with `id`, if connected.
fn acknowledged_by(primary: &mut redis::Connection, id: &str) -> Option<u64> {
    let info: String = redis::cmd("INFO").arg("replication").query(primary).ok()?;
    let line = info
        .lines()
        .find(|l| l.starts_with("slave") && l.contains(&format!("id={id},")))?;
    let at = line.find("flush_lsn=")? + "flush_lsn=".len();
    line[at..].split(',').next()?.parse().ok()
}

/// The figures of a loop.
struct Figures {
    kills: usize,
    bounds_checked: usize,
    acknowledged: u64,
    indeterminate: u64,
    rounds: usize,
}

fn replica_kill_loop(cycles: usize, report: bool) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("p");
    let primary = Daemon::start(
        &pdir,
        &["--sync-replicas", "1", "--sync-timeout-ms", "2000"],
    );
    let proxies = [Proxy::start(primary.addr), Proxy::start(primary.addr)];
    let rdirs = [dir.path().join("r0"), dir.path().join("r1")];
    let mut replicas: Vec<Option<Daemon>> = (0..2)
        .map(|i| Some(start_replica(&rdirs[i], proxies[i].addr)))
        .collect();
    let mut p = primary.client();
    let mut writers: Vec<Writer> = (0..WRITERS).map(Writer::new).collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut figures = Figures {
        kills: 0,
        bounds_checked: 0,
        acknowledged: 0,
        indeterminate: 0,
        rounds: 0,
    };
    let started = Instant::now();
    let mut cycle = 0;
    while cycle < cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let running: Vec<_> = writers
            .drain(..)
            .map(|w| {
                let (url, stop) = (primary.url(), Arc::clone(&stop));
                std::thread::spawn(move || w.run(url, stop))
            })
            .collect();
        for _ in 0..CYCLES_PER_ROUND.min(cycles - cycle) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let victim = (rng % 2) as usize;
            std::thread::sleep(Duration::from_millis(20 + (rng >> 8) % 150));
            let replica = replicas[victim].take().unwrap();
            let id = info_field(&mut replica.client(), "replication", "replica_id");
            let bound = id.and_then(|id| acknowledged_by(&mut p, &id));
            replica.kill();
            figures.kills += 1;
            // Restarted where it cannot reach the primary: what it holds is what it recovered.
            proxies[victim].refuse(true);
            let restarted = start_replica(&rdirs[victim], proxies[victim].addr);
            let mut r = restarted.client();
            let recovered = lsn(&mut r, "replica_durable_lsn").unwrap();
            if let Some(bound) = bound {
                assert!(
                    recovered >= bound,
                    "cycle {cycle}: replica {victim} had acknowledged LSN {bound} as durable, \
                     but recovered only up to {recovered}"
                );
                figures.bounds_checked += 1;
            }
            proxies[victim].refuse(false);
            replicas[victim] = Some(restarted);
            cycle += 1;
        }
        stop.store(true, Ordering::Relaxed);
        writers = running.into_iter().map(|w| w.join().unwrap()).collect();
        figures.rounds += 1;

        // The round's end: every node holds exactly the writes.
        let mut model = BTreeMap::new();
        for w in &writers {
            model.extend(w.model.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let expected: Vec<(Vec<u8>, Vec<u8>)> = model
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
            .collect();
        assert!(
            dump(&mut p) == expected,
            "round {}: the primary differs from the model",
            figures.rounds
        );
        for (i, replica) in replicas.iter().enumerate() {
            let replica = replica.as_ref().unwrap();
            assert!(
                wait_caught_up(&primary, replica, 60),
                "round {}: replica {i} does not catch up:\n{}",
                figures.rounds,
                replica.log()
            );
            let mut r = replica.client();
            assert!(
                dump(&mut r) == expected,
                "round {}: replica {i} differs from the primary",
                figures.rounds
            );
            assert_eq!(
                info_field(&mut r, "replication", "replica_diverged"),
                None,
                "round {}: replica {i} was refused",
                figures.rounds
            );
        }
        if report {
            eprintln!(
                "{cycle} replica kills in {:.0?}: {} durable bounds checked, {} writes \
                 acknowledged, {} indeterminate, {} rounds converged",
                started.elapsed(),
                figures.bounds_checked,
                writers.iter().map(|w| w.acknowledged).sum::<u64>(),
                writers.iter().map(|w| w.indeterminate).sum::<u64>(),
                figures.rounds
            );
        }
    }
    figures.acknowledged = writers.iter().map(|w| w.acknowledged).sum();
    figures.indeterminate = writers.iter().map(|w| w.indeterminate).sum();
    for replica in replicas.into_iter().flatten() {
        replica.stop();
    }
    drop(p);
    primary.stop();
    figures
}

#[test]
fn replicas_killed_50_times_recover_what_they_acknowledged_and_converge() {
    let figures = replica_kill_loop(50, false);
    assert_eq!(figures.kills, 50);
    assert_eq!(figures.rounds, 2);
    assert!(
        figures.bounds_checked >= 25,
        "only {} of 50 kills had a durable bound to check",
        figures.bounds_checked
    );
    assert!(
        figures.acknowledged > 500,
        "only {} writes were acknowledged",
        figures.acknowledged
    );
}

#[test]
#[ignore = "long: thousands of replica kills (set SHIPLOG_REPLICA_KILL_CYCLES)"]
fn replicas_killed_many_times_recover_what_they_acknowledged_and_converge() {
    let cycles = std::env::var("SHIPLOG_REPLICA_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let started = Instant::now();
    let figures = replica_kill_loop(cycles, true);
    println!(
        "{} replica kills in {:.0?}: {} durable bounds checked, {} writes acknowledged, {} \
         indeterminate, {} rounds converged, 0 lost",
        figures.kills,
        started.elapsed(),
        figures.bounds_checked,
        figures.acknowledged,
        figures.indeterminate,
        figures.rounds
    );
}
