//! Network faults for replication, a nemesis after Jepsen's: a seeded random schedule of faults
//! runs against three real nodes with `--sync-replicas 1` under the client load of
//! `failover_under_load.rs`. Each step picks one fault and holds it for 50–500 ms (a long stall
//! 1–3 s, sometimes past `--sync-timeout-ms`) before healing it: one-way partitions of a
//! replica's link (the log held, or the replica's acknowledgements held), both-ways partitions,
//! long stalls, dropped and refused connections, reordered connection attempts, SIGSTOP/SIGCONT
//! of a replica, SIGSTOP of the primary across a promotion (it must step down on SIGCONT and is
//! then re-pointed), and kill -9 failovers. After the schedule everything is healed, the load
//! stops, the replicas catch up, every node must hold the same data at the same LSN, and the
//! history checker must find no anomaly.
//!
//! A failed schedule prints its seed; `SHIPLOG_NEMESIS_SEED=0x...` replays that one schedule
//! (`SHIPLOG_NEMESIS_STEPS` its steps). The ignored long variant runs `SHIPLOG_NEMESIS_SCHEDULES`
//! schedules (default 100) and prints the counts.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
mod daemon;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use daemon::cluster::{Cluster, SYNC};
use nix::sys::signal::Signal;

/// The faults a step picks from, uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The log the primary ships to one replica is held (the replica's acks still flow).
    PartitionToReplica,
    /// What one replica sends its primary (hello, acknowledgements) is held.
    PartitionFromReplica,
    /// Both directions of one replica's link are held.
    PartitionBoth,
    /// Both directions held for 1–3 s, on one replica's link or both (then writes wait past
    /// `--sync-timeout-ms` and are answered `-NOREPLICAS`).
    LongStall,
    /// One replica's connections are closed and its attempts to reconnect refused.
    DropConnections,
    /// One replica's connections are closed and its attempts to reconnect reach the primary
    /// late and out of order.
    ReorderConnects,
    /// A replica is stopped (SIGSTOP) and resumed (SIGCONT).
    PauseReplica,
    /// The primary is stopped, the most advanced replica promoted, the old primary resumed: it
    /// must step down, and is then re-pointed.
    PausePrimaryAcrossPromotion,
    /// kill -9 of the primary, promotion of the most advanced replica, rejoin of the old one.
    KillFailover,
}

const FAULTS: [Fault; 9] = [
    Fault::PartitionToReplica,
    Fault::PartitionFromReplica,
    Fault::PartitionBoth,
    Fault::LongStall,
    Fault::DropConnections,
    Fault::ReorderConnects,
    Fault::PauseReplica,
    Fault::PausePrimaryAcrossPromotion,
    Fault::KillFailover,
];

/// Steps of a schedule in the bounded variant.
const STEPS: usize = 8;
/// Steps of a schedule in the long variant.
const LONG_STEPS: usize = 16;
/// Seeds of the bounded variant: fixed, so `cargo test` runs the same schedules every time.
const SEEDS: [u64; 2] = [0x5eed_0001_c0ff_ee01, 0x5eed_0002_dead_beef];

/// xorshift64: the schedule's only source of randomness.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Xorshift64*: the multiply mixes the state's high bits into the low ones, which a plain
    /// xorshift's low bits (taken by `%`) lack, so every fault kind comes up about as often.
    fn next(&mut self) -> u64 {
        common::xorshift64_star(&mut self.0) >> 16
    }

    /// A number in `lo..hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.between(lo, hi))
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// What the schedules did, summed.
#[derive(Debug, Default)]
struct Tally {
    schedules: usize,
    steps: usize,
    faults: [usize; FAULTS.len()],
    acknowledged: usize,
    failed: usize,
    indeterminate: usize,
    reads: usize,
    anomalies: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} schedules, {} steps; writes: {} acknowledged, {} failed, {} indeterminate; {} \
             reads; {} anomalies",
            self.schedules,
            self.steps,
            self.acknowledged,
            self.failed,
            self.indeterminate,
            self.reads,
            self.anomalies
        )?;
        for (fault, count) in FAULTS.iter().zip(self.faults) {
            writeln!(f, "  {fault:?}: {count}")?;
        }
        Ok(())
    }
}

/// Injects `fault`, holds it, heals it.
fn inject(cluster: &mut Cluster, rng: &mut Rng, fault: Fault) {
    let replicas = cluster.replicas();
    let replica = replicas[(rng.next() % replicas.len() as u64) as usize];
    let primary = cluster.primary;
    let hold = rng.millis(50, 500);
    let link = cluster.link(primary, replica);
    // Captured by the test harness: shown for a failed schedule.
    eprintln!("  {fault:?}: primary {primary}, replica {replica}, {hold:?}");
    match fault {
        Fault::PartitionToReplica => {
            link.hold_down(true);
            std::thread::sleep(hold);
        }
        Fault::PartitionFromReplica => {
            link.hold_up(true);
            std::thread::sleep(hold);
        }
        Fault::PartitionBoth => {
            link.stall();
            std::thread::sleep(hold);
        }
        Fault::LongStall => {
            let links: Vec<usize> = if rng.coin() {
                replicas.clone()
            } else {
                vec![replica]
            };
            for &r in &links {
                cluster.link(primary, r).stall();
            }
            std::thread::sleep(rng.millis(1000, 3000));
        }
        Fault::DropConnections => {
            link.refuse(true);
            link.drop_connections();
            std::thread::sleep(hold);
        }
        Fault::ReorderConnects => {
            link.reorder_connects(Duration::from_millis(200));
            link.drop_connections();
            std::thread::sleep(hold);
            link.drop_connections();
            std::thread::sleep(hold);
        }
        Fault::PauseReplica => {
            let daemon = cluster.nodes[replica].daemon();
            daemon.signal(Signal::SIGSTOP);
            std::thread::sleep(hold);
            daemon.signal(Signal::SIGCONT);
        }
        Fault::PausePrimaryAcrossPromotion => cluster.failover_across_stopped_primary(hold),
        Fault::KillFailover => {
            let pause = rng.coin();
            cluster.failover(pause);
        }
    }
    cluster.heal();
}

/// Runs one schedule of `steps` faults from `seed` under load, adding what it did to `tally`;
/// panics (naming the seed) on an anomaly or a node that does not converge.
fn schedule(seed: u64, steps: usize, tally: &mut Tally) {
    let dir = tempfile::tempdir().unwrap();
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut rng = Rng::new(seed);
        let mut cluster = Cluster::start(dir.path(), &SYNC);
        let mut faults = [0; FAULTS.len()];
        for _ in 0..steps {
            std::thread::sleep(rng.millis(20, 200));
            let which = (rng.next() % FAULTS.len() as u64) as usize;
            inject(&mut cluster, &mut rng, FAULTS[which]);
            faults[which] += 1;
        }
        // Let the load run on the healed cluster for a moment.
        std::thread::sleep(Duration::from_millis(200));
        let summary = cluster.finish();
        assert!(
            summary.anomalies.is_empty(),
            "{} anomalies: {:#?}",
            summary.anomalies.len(),
            &summary.anomalies[..summary.anomalies.len().min(20)]
        );
        (summary, faults)
    }));
    match run {
        Ok((summary, faults)) => {
            tally.schedules += 1;
            tally.steps += steps;
            for (sum, n) in tally.faults.iter_mut().zip(faults) {
                *sum += n;
            }
            tally.acknowledged += summary.acknowledged;
            tally.failed += summary.failed;
            tally.indeterminate += summary.indeterminate;
            tally.reads += summary.reads;
            tally.anomalies += summary.anomalies.len();
            assert!(
                summary.acknowledged > 0,
                "schedule SHIPLOG_NEMESIS_SEED={seed:#x}: no write was acknowledged"
            );
        }
        Err(panic) => {
            let kept = dir.keep();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "schedule SHIPLOG_NEMESIS_SEED={seed:#x} ({steps} steps) failed, its nodes' \
                 directories and logs (n0.log, ...) kept in {}: {message}",
                kept.display()
            );
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

/// The seeds to run: the one `SHIPLOG_NEMESIS_SEED` names, or `default`.
fn seeds(default: impl Iterator<Item = u64>) -> Vec<u64> {
    match env_u64("SHIPLOG_NEMESIS_SEED") {
        Some(seed) => vec![seed],
        None => default.collect(),
    }
}

fn steps(default: usize) -> usize {
    env_u64("SHIPLOG_NEMESIS_STEPS").map_or(default, |n| n as usize)
}

#[test]
fn acknowledged_writes_survive_random_network_faults_and_failovers() {
    let mut tally = Tally::default();
    for seed in seeds(SEEDS.into_iter()) {
        schedule(seed, steps(STEPS), &mut tally);
    }
    eprint!("{tally}");
}

#[test]
#[ignore = "long: SHIPLOG_NEMESIS_SCHEDULES schedules (default 100) of random network faults"]
fn acknowledged_writes_survive_many_schedules_of_network_faults() {
    let schedules = env_u64("SHIPLOG_NEMESIS_SCHEDULES").unwrap_or(100) as usize;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let began = Instant::now();
    let mut tally = Tally::default();
    let mut seeder = Rng::new(start);
    for seed in seeds((0..schedules).map(|_| seeder.next())) {
        eprintln!(
            "schedule {}: SHIPLOG_NEMESIS_SEED={seed:#x}",
            tally.schedules
        );
        schedule(seed, steps(LONG_STEPS), &mut tally);
        if tally.schedules % 10 == 0 {
            // Figures so far: each schedule is checked on its own, so a run stopped part-way
            // still counts every schedule it finished.
            eprint!("{tally}");
            eprintln!("wall time so far {:.0} s", began.elapsed().as_secs_f64());
        }
    }
    eprint!("{tally}");
    eprintln!("wall time {:.0} s", began.elapsed().as_secs_f64());
}
