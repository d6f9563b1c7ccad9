//! Only records durable on the primary ship: whatever a power cut then keeps of the primary's
//! unsynced writes, every record a replica holds is in the primary's recovered log, identical
//! (LSN, epoch, kind, payload and place in the segment), and the replica resumes from there.
//!
//! The primary runs on the simulated file system and mixes `Sync`, `Buffered` and `None`
//! appends (with the background flush far away, so only `Sync` appends and explicit syncs make
//! records durable) with shipping rounds that take everything `ship_chunk` offers; then the
//! power fails in every crash mode that drops unsynced data, and the schedule goes on from one
//! of the images.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use std::path::Path;
use std::sync::Arc;

use shiplog::io::{CrashMode, SimFs};
use shiplog::repl::Receiver;
use shiplog::wal::{Options, ShipPosition};
use shiplog::{Durability, Entry, RecordKind, Wal};

mod common;
mod ship_chunks;

use ship_chunks::deliver;

/// Seeds of the schedule; each runs `CRASHES` power cuts.
const ROUNDS: u64 = 100;
const CRASHES: usize = 4;
/// Appends, syncs and shipping rounds between two power cuts.
const STEPS: usize = 60;

fn options(fs: &SimFs) -> Options {
    // No background preparer and no background flush: what is durable depends only on the
    // schedule, so a seed always makes the same crash images.
    Options {
        segment_bytes: 16 * 1024,
        prepare_next_segment: false,
        flush_interval_ms: 60_000,
        fs: Arc::new(fs.clone()),
        ..Options::default()
    }
}

/// xorshift64: the schedule is a pure function of the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        common::xorshift64(&mut self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn payload(lsn: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (lsn as usize * 31 + i * 7) as u8)
        .collect()
}

/// Appends a batch of 1 to 4 records, some larger than a shipping chunk, of a random
/// durability.
fn append(primary: &Wal, rng: &mut Rng) {
    let kind = RecordKind::new(3).unwrap();
    let first = primary.written_lsn() + 1;
    let payloads: Vec<Vec<u8>> = (0..1 + rng.below(4))
        .map(|i| {
            let len = if rng.below(10) == 0 {
                6000
            } else {
                rng.below(900) as usize
            };
            payload(first + i, len)
        })
        .collect();
    let entries: Vec<Entry<'_>> = payloads
        .iter()
        .map(|p| Entry { kind, payload: p })
        .collect();
    let durability = match rng.below(4) {
        0 => Durability::Sync,
        1 => Durability::Buffered,
        _ => Durability::None,
    };
    primary.append_batch(&entries, durability).unwrap();
}

/// Ships everything `ship_chunk` offers from `position`, in chunks of a random size, into the
/// replica; returns the new position.
fn ship(
    primary: &Wal,
    replica: &Wal,
    receiver: &mut Receiver,
    mut position: ShipPosition,
    rng: &mut Rng,
) -> ShipPosition {
    let chunk_bytes = 256 + rng.below(8192) as usize;
    while let Some(chunk) = primary.ship_chunk(&position, chunk_bytes).unwrap() {
        assert!(
            chunk.last_lsn <= primary.durable_lsn(),
            "shipped LSN {} while the primary's durable LSN is {}",
            chunk.last_lsn,
            primary.durable_lsn()
        );
        deliver(replica, receiver, &chunk).unwrap();
        position = chunk.next;
    }
    position
}

/// Every record of `replica` is in `primary`, identical.
fn assert_replica_is_a_prefix(replica: &Wal, primary: &Wal, context: &str) {
    assert!(
        primary.durable_lsn() >= replica.written_lsn(),
        "{context}: the replica holds LSN {}, the recovered primary ends at {}",
        replica.written_lsn(),
        primary.durable_lsn()
    );
    let mut held = 0;
    for ours in replica.iter_from(1).unwrap() {
        let ours = ours.unwrap();
        let theirs = primary.read(ours.lsn).unwrap().unwrap_or_else(|| {
            panic!(
                "{context}: the replica holds LSN {}, which the recovered primary lost",
                ours.lsn
            )
        });
        assert_eq!(theirs.lsn, ours.lsn, "{context}");
        assert_eq!(theirs.epoch, ours.epoch, "{context}: LSN {}", ours.lsn);
        assert_eq!(theirs.kind, ours.kind, "{context}: LSN {}", ours.lsn);
        assert_eq!(
            theirs.batch_continues, ours.batch_continues,
            "{context}: LSN {}",
            ours.lsn
        );
        assert!(
            *theirs.payload == *ours.payload,
            "{context}: LSN {} has another payload",
            ours.lsn
        );
        assert_eq!(
            theirs.location, ours.location,
            "{context}: LSN {}",
            ours.lsn
        );
        held += 1;
    }
    assert_eq!(held, replica.written_lsn(), "{context}: records held");
}

/// The power cuts to check at one point: every mode, each dropping unsynced data.
fn crash_modes(rng: &mut Rng) -> Vec<CrashMode> {
    vec![
        CrashMode::DropUnsynced,
        CrashMode::Ordered {
            whole_writes: rng.below(6) as usize,
            torn_sectors: rng.below(8),
        },
        CrashMode::Ordered {
            whole_writes: rng.below(40) as usize,
            torn_sectors: rng.below(40),
        },
        CrashMode::Scattered { seed: rng.next() },
    ]
}

#[test]
fn a_power_cut_of_the_primary_never_loses_a_record_a_replica_holds() {
    let primary_dir = Path::new("/primary");
    let replica_dir = Path::new("/replica");
    let (mut shipped_total, mut lost_total, mut crashes_with_unsynced) = (0, 0, 0);
    for seed in 1..=ROUNDS {
        let mut rng = Rng::new(seed);
        let mut sim = SimFs::new();
        let mut primary = Wal::open(primary_dir, options(&sim)).unwrap();
        // The replica's disk never fails here: its own crash safety is tested elsewhere.
        let replica_fs = SimFs::new();
        let replica = Wal::open(replica_dir, options(&replica_fs)).unwrap();
        for crash in 0..CRASHES {
            // A new session: the replica resumes after its own last record.
            let mut receiver = Receiver::new(8 << 20);
            let mut position = primary.ship_position_after(replica.written_lsn()).unwrap();
            for _ in 0..STEPS {
                match rng.below(10) {
                    0..=5 => append(&primary, &mut rng),
                    6 => primary.sync().unwrap(),
                    _ => {
                        let before = replica.written_lsn();
                        position = ship(&primary, &replica, &mut receiver, position, &mut rng);
                        shipped_total += replica.written_lsn() - before;
                    }
                }
                assert!(replica.written_lsn() <= primary.durable_lsn());
            }
            ship(&primary, &replica, &mut receiver, position, &mut rng);
            assert_eq!(replica.written_lsn(), primary.durable_lsn(), "all shipped");

            // The power fails. Check every crash mode's image; go on with one of them.
            let written = primary.written_lsn();
            if written > primary.durable_lsn() {
                crashes_with_unsynced += 1;
            }
            let modes = crash_modes(&mut rng);
            let images: Vec<SimFs> = modes.iter().map(|&mode| sim.crash(mode)).collect();
            drop(primary); // after the images: what closing syncs is not in them
            let mut survivor = None;
            let keep = rng.below(modes.len() as u64) as usize;
            for (i, (mode, image)) in modes.iter().zip(images).enumerate() {
                let context = format!("seed {seed}, crash {crash}, {mode:?}");
                let recovered = Wal::open(primary_dir, options(&image)).unwrap();
                assert_replica_is_a_prefix(&replica, &recovered, &context);
                lost_total += written - recovered.written_lsn();
                if i == keep {
                    survivor = Some((image, recovered));
                } else {
                    drop(recovered);
                }
            }
            (sim, primary) = survivor.unwrap();
        }
        // After the last power cut, the replica catches up with what the primary kept.
        let mut receiver = Receiver::new(8 << 20);
        let position = primary.ship_position_after(replica.written_lsn()).unwrap();
        ship(&primary, &replica, &mut receiver, position, &mut rng);
        assert_eq!(replica.written_lsn(), primary.durable_lsn());
        assert_replica_is_a_prefix(&replica, &primary, &format!("seed {seed}, at the end"));
    }
    // The schedule is worth something: records shipped, and power cuts lost unsynced ones
    // that had been written, so shipping any of them would have failed the test.
    assert!(shipped_total > 1000, "only {shipped_total} records shipped");
    assert!(
        crashes_with_unsynced * 2 > ROUNDS as usize * CRASHES,
        "only {crashes_with_unsynced} power cuts found unsynced records"
    );
    assert!(
        lost_total > 1000,
        "power cuts lost only {lost_total} records"
    );
}
