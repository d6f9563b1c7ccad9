//! Key-value engine: point gets over 1 M keys (1 and 2 threads), durable puts at 1 and 64
//! threads, a 90/10 read/write mix, ordered range scans; then, outside criterion, index memory
//! per key and reopen time at 1 M and (with `SHIPLOG_BENCH_10M=1`) 10 M keys.
//!
//! Run: `cargo bench --bench engine`. Figures go to docs/benchmarks.md.

#![deny(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::pedantic, reason = "benchmark code")]

mod common;

use common::{Rng, bench_dir};

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use shiplog::{Db, DbOptions, Durability};

const VALUE_BYTES: usize = 100;

fn key(mut i: u64) -> [u8; 16] {
    let mut k = *b"key-000000000000";
    for at in (4..16).rev() {
        k[at] = b'0' + (i % 10) as u8;
        i /= 10;
    }
    k
}

/// Counts live heap bytes, so index memory per key is measured exactly, not through RSS.
struct CountingAlloc;

static LIVE_BYTES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
#[allow(unsafe_code, reason = "a counting allocator is unsafe to implement")]
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

fn fill(dir: &Path, keys: u64) -> Db {
    let db = Db::open(dir, DbOptions::default()).unwrap();
    let value = vec![0x42; VALUE_BYTES];
    for i in 0..keys {
        db.put_with(&key(i), &value, Durability::None).unwrap();
    }
    db.sync().unwrap();
    db
}

fn gets(c: &mut Criterion, db: &Db, keys: u64) {
    let mut group = c.benchmark_group("engine_get_100B_1M_keys");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{threads}_threads")),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let per_thread = iters.div_ceil(threads);
                    let started = Instant::now();
                    std::thread::scope(|scope| {
                        for t in 0..threads {
                            scope.spawn(move || {
                                let mut rng = Rng(0x1234_5678 + t);
                                let mut sum = 0usize;
                                for _ in 0..per_thread {
                                    let value = db.get(&key(rng.next() % keys)).unwrap().unwrap();
                                    sum += value[0] as usize;
                                }
                                std::hint::black_box(sum);
                            });
                        }
                    });
                    started.elapsed()
                });
            },
        );
    }
    group.finish();
}

fn puts(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_put_sync_100B");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(1));
    let dir = bench_dir();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let value = vec![7u8; VALUE_BYTES];
    for threads in [1u64, 64] {
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{threads}_writers")),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let per_thread = iters.max(threads).div_ceil(threads);
                    let started = Instant::now();
                    std::thread::scope(|scope| {
                        for t in 0..threads {
                            let (db, value) = (&db, &value);
                            scope.spawn(move || {
                                let mut rng = Rng(0x9999 + t);
                                for _ in 0..per_thread {
                                    db.put(&key(rng.next() % 1_000_000), value).unwrap();
                                }
                            });
                        }
                    });
                    started.elapsed()
                });
            },
        );
    }
    group.finish();
}

fn mixed(c: &mut Criterion, db: &Db, keys: u64) {
    let mut group = c.benchmark_group("engine_mix_90get_10put_sync");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(1));
    let threads = 16u64;
    group.bench_function(format!("{threads}_threads"), |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.max(threads).div_ceil(threads);
            let started = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..threads {
                    scope.spawn(move || {
                        let mut rng = Rng(0x4242 + t);
                        let value = [9u8; VALUE_BYTES];
                        for _ in 0..per_thread {
                            let r = rng.next();
                            let k = key(r % keys);
                            if r.is_multiple_of(10) {
                                db.put(&k, &value).unwrap();
                            } else {
                                std::hint::black_box(db.get(&k).unwrap());
                            }
                        }
                    });
                }
            });
            started.elapsed()
        });
    });
    group.finish();
}

fn ranges(c: &mut Criterion, db: &Db, keys: u64) {
    let mut group = c.benchmark_group("engine_range_scan_100_keys");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(100));
    let mut rng = Rng(77);
    group.bench_function("1_thread", |b| {
        b.iter(|| {
            let start = rng.next() % (keys - 100);
            let n = db
                .range(key(start)..key(start + 100))
                .map(|r| r.unwrap().1.len())
                .sum::<usize>();
            assert_eq!(n, 100 * VALUE_BYTES);
        });
    });
    group.finish();
}

fn heap_bytes() -> i64 {
    LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Index memory per key and reopen time, printed (criterion measures time, not memory).
fn memory_and_reopen(keys: u64) {
    let dir = bench_dir();
    let fill_started = Instant::now();
    let db = fill(dir.path(), keys);
    let fill_secs = fill_started.elapsed().as_secs_f64();
    let log_bytes = db.stats().disk_bytes;
    db.close().unwrap();
    for (label, remove_checkpoint) in [("from checkpoint", false), ("from the log alone", true)] {
        if remove_checkpoint {
            std::fs::remove_file(dir.path().join(shiplog::engine::CHECKPOINT_FILE_NAME)).unwrap();
        }
        let mut times = Vec::new();
        let mut per_key = 0.0;
        for _ in 0..3 {
            let before = heap_bytes();
            let started = Instant::now();
            let db = Db::open(dir.path(), DbOptions::default()).unwrap();
            times.push(started.elapsed().as_secs_f64());
            let after = heap_bytes();
            assert_eq!(db.len() as u64, keys);
            per_key = (after - before) as f64 / keys as f64;
            drop(db); // no close: keep the checkpoint state of this round
        }
        times.sort_by(f64::total_cmp);
        println!(
            "engine reopen {keys} keys ({:.2} GiB of segments) {label}: median {:.3} s; index heap {per_key:.1} bytes/key including the 16-byte key (requested sizes, before allocator rounding) [filled in {fill_secs:.1} s]",
            log_bytes as f64 / (1u64 << 30) as f64,
            times[1],
        );
    }
}

/// Compaction throughput on a log that is half dead, and the space amplification of a steady
/// overwrite workload with background compaction, printed.
fn compaction(keys: u64) {
    let dir = bench_dir();
    let mut options = DbOptions::default();
    options.compaction.enabled = false;
    options.compaction.bytes_per_sec = 0;
    let db = Db::open(dir.path(), options).unwrap();
    let value = vec![0x42; VALUE_BYTES];
    for _ in 0..2 {
        for i in 0..keys {
            db.put_with(&key(i), &value, Durability::None).unwrap();
        }
    }
    db.sync().unwrap();
    let started = Instant::now();
    let stats = db.compact().unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "engine compaction of {keys} keys written twice: {:.0} MiB/s read ({} MiB in, {} MiB out, {} segments, {secs:.2} s)",
        stats.bytes_in as f64 / secs / (1 << 20) as f64,
        stats.bytes_in >> 20,
        stats.bytes_out >> 20,
        stats.segments_in
    );
    drop(db);

    let dir = bench_dir();
    let mut options = DbOptions::default();
    options.wal.segment_bytes = 8 << 20;
    options.compaction.check_interval_ms = 100;
    let db = Db::open(dir.path(), options).unwrap();
    let (mut worst_sealed, mut worst_disk): (f64, f64) = (0.0, 0.0);
    let mut samples = 0;
    for round in 0..40u32 {
        for i in 0..keys / 4 {
            db.put_with(&key(i), &[round as u8; VALUE_BYTES], Durability::None)
                .unwrap();
            if i % 10_000 == 0 && round >= 4 {
                let stats = db.stats();
                let sealed: u64 = db
                    .wal()
                    .sealed_segments()
                    .iter()
                    .map(|s| s.record_bytes)
                    .sum();
                let live = (stats.live_bytes + stats.live_keys * 29) as f64;
                worst_sealed = worst_sealed.max(sealed as f64 / live);
                worst_disk = worst_disk.max(stats.disk_bytes as f64 / live);
                samples += 1;
            }
        }
    }
    println!(
        "engine steady overwrite of {} keys x 40 rounds, background compaction, {samples} samples after round 4: worst sealed-log/live {worst_sealed:.2}, worst all-files/live {worst_disk:.2} (all files include the 8 MiB active segment)",
        keys / 4
    );
}

fn main() {
    // `SHIPLOG_BENCH_SECTION=memory|compaction|10m` runs only that printed section.
    match std::env::var("SHIPLOG_BENCH_SECTION").as_deref() {
        Ok("memory") => return memory_and_reopen(1_000_000),
        Ok("compaction") => return compaction(1_000_000),
        Ok("10m") => return memory_and_reopen(10_000_000),
        _ => {}
    }
    let mut criterion = Criterion::default().configure_from_args();
    let keys = 1_000_000;
    let dir = bench_dir();
    let db = fill(dir.path(), keys);
    gets(&mut criterion, &db, keys);
    ranges(&mut criterion, &db, keys);
    mixed(&mut criterion, &db, keys);
    drop(db);
    puts(&mut criterion);
    criterion.final_summary();
    memory_and_reopen(keys);
    compaction(keys);
    if std::env::var_os("SHIPLOG_BENCH_10M").is_some() {
        memory_and_reopen(10_000_000);
    }
}
