//! Write-ahead log throughput: durable appends at 1–64 writers (group commit), buffered
//! throughput, and reopen (recovery) time of a 1 GiB log. Figures go to docs/benchmarks.md.
//!
//! Run: `cargo bench --bench wal` (set `SHIPLOG_BENCH_DIR` to put the logs on another disk).

#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

mod common;

use common::bench_dir;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shiplog::wal::Options;
use shiplog::{Durability, RecordKind, Wal};

/// Runs `total` appends of `payload` split over `threads` writers and returns the elapsed time.
fn appends(
    wal: &Wal,
    threads: u64,
    total: u64,
    payload: &[u8],
    durability: Durability,
) -> Duration {
    let kind = RecordKind::new(1).expect("valid kind");
    let per_thread = total.div_ceil(threads);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..per_thread {
                    wal.append(kind, payload, durability).expect("append");
                }
            });
        }
    });
    started.elapsed()
}

fn durable_appends(c: &mut Criterion) {
    for record_bytes in [100usize, 4096] {
        let mut group = c.benchmark_group(format!("wal_sync_append_{record_bytes}B"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(6))
            .warm_up_time(Duration::from_secs(1));
        group.throughput(Throughput::Elements(1));
        let dir = bench_dir();
        let wal = Wal::open(dir.path(), Options::default()).expect("open");
        let payload = vec![0xA5; record_bytes];
        for threads in [1u64, 4, 16, 64] {
            group.bench_with_input(
                BenchmarkId::from_parameter(format!("{threads}_writers")),
                &threads,
                |b, &threads| {
                    b.iter_custom(|iters| {
                        appends(
                            &wal,
                            threads,
                            iters.max(threads),
                            &payload,
                            Durability::Sync,
                        )
                    });
                },
            );
        }
        group.finish();
    }
}

fn buffered_appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_buffered_append_4KiB");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Bytes(4096));
    let dir = bench_dir();
    let wal = Wal::open(dir.path(), Options::default()).expect("open");
    let payload = vec![0x5A; 4096];
    for threads in [1u64, 4] {
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{threads}_writers")),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    appends(
                        &wal,
                        threads,
                        iters.max(threads),
                        &payload,
                        Durability::Buffered,
                    )
                });
            },
        );
    }
    group.finish();
}

fn reopen_1gib(c: &mut Criterion) {
    let dir = bench_dir();
    // The background preparer would zero-fill a fresh 64 MiB segment after every open and
    // make close() wait for it; this measures recovery alone.
    let options = Options {
        prepare_next_segment: false,
        ..Options::default()
    };
    {
        let wal = Wal::open(dir.path(), options.clone()).expect("open");
        let payload = vec![0x3C; 4096];
        let records = (1u64 << 30) / (4096 + 21);
        appends(&wal, 1, records, &payload, Durability::None);
        wal.close().expect("close");
    }
    let mut group = c.benchmark_group("wal_reopen");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("1GiB_4KiB_records", |b| {
        b.iter(|| {
            let wal = Wal::open(dir.path(), options.clone()).expect("reopen");
            assert!(wal.durable_lsn() > 0);
            wal.close().expect("close");
        });
    });
    group.finish();
}

criterion_group!(benches, durable_appends, buffered_appends, reopen_1gib);
criterion_main!(benches);
