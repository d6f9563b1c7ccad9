//! Snapshots: create (one frozen state streamed to a file) and restore (a file into a new
//! store, synced) at zstd levels 1 and 3, in MiB/s of uncompressed state, on a store of
//! JSON-like values of 100 B – 4 KiB (repeated field names, random numbers) whose keys are not in
//! log order. Printed outside criterion: fill and freeze times, file sizes and compression ratios.
//!
//! Run: `cargo bench --bench snapshot`; `SHIPLOG_SNAPSHOT_BENCH_MB` sets the live data (default
//! 64); `SHIPLOG_BENCH_DIR` where the store and files go (default `.`);
//! `SHIPLOG_SNAPSHOT_BENCH_RAW=FILE` also writes the decompressed body there, for `zstd -b`;
//! `SHIPLOG_SNAPSHOT_BENCH_KEEP=FILE` keeps a level-1 snapshot of the state there (for
//! `benches/bootstrap.sh`; add a filter that matches no benchmark, `-- none`, to skip timing).
//! Figures go to docs/benchmarks.md, "Snapshots".

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::pedantic, reason = "benchmark code")]

mod common;

use common::{Rng, bench_dir};

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use shiplog::format::snapshot::encode_entry;
use shiplog::snapshot::{create_snapshot_file, restore_snapshot};
use shiplog::{Db, DbOptions, Durability};

/// A JSON-like document of about `len` bytes: an object per record, the same field names each
/// time, random numbers and short random words.
fn value(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let mut out = String::with_capacity(len + 128);
    out.push('[');
    while out.len() < len {
        let r = rng.next();
        out.push_str(&format!(
            "{{\"id\":{},\"user\":\"{}-{}\",\"score\":{}.{:02},\"active\":{},\"tags\":[\"{}\",\"{}\"],\"ts\":{}}},",
            r % 1_000_000,
            WORDS[(r >> 20) as usize % 8],
            (r >> 24) % 10_000,
            (r >> 30) % 1000,
            (r >> 40) % 100,
            r & 1 == 0,
            WORDS[(r >> 44) as usize % 8],
            WORDS[(r >> 48) as usize % 8],
            1_700_000_000 + (r >> 34) % 100_000_000
        ));
    }
    out.truncate(len);
    out.into_bytes()
}

/// Fills a store with about `live_bytes` of values, keys in random order; returns the store.
fn fill(dir: &Path, live_bytes: u64) -> Db {
    let db = Db::open(dir, DbOptions::default()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written = 0u64;
    let mut i = 0u64;
    while written < live_bytes {
        let len = 100 + (rng.next() % (4096 - 100)) as usize;
        let v = value(&mut rng, len);
        // Keys hashed from a counter: their order is not the log's.
        let key = format!("user:{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        db.put_with(key.as_bytes(), &v, Durability::None).unwrap();
        written += (key.len() + v.len()) as u64;
        i += 1;
    }
    db.sync().unwrap();
    db
}

fn mib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / f64::from(1u32 << 20)
}

fn main() {
    let mib: u64 = std::env::var("SHIPLOG_SNAPSHOT_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let dir = bench_dir();
    let started = Instant::now();
    let db = fill(&dir.path().join("store"), mib << 20);
    println!(
        "fill: {mib} MiB of live data in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let state = db.freeze().unwrap();
    let freeze = started.elapsed();
    let state_bytes = state.live_bytes() + 8 * state.key_count();
    println!(
        "freeze: {} keys, {:.1} MiB of state, {:.3} s ({:.0} MiB/s of state)",
        state.key_count(),
        state_bytes as f64 / f64::from(1u32 << 20),
        freeze.as_secs_f64(),
        mib_per_sec(state_bytes, freeze)
    );
    if let Some(raw) = std::env::var_os("SHIPLOG_SNAPSHOT_BENCH_RAW") {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&raw).unwrap());
        let mut chunk = Vec::new();
        for entry in state.entries() {
            let (key, value) = entry.unwrap();
            chunk.clear();
            encode_entry(&mut chunk, key, &value);
            out.write_all(&chunk).unwrap();
        }
        out.flush().unwrap();
        println!("raw body written to {}", Path::new(&raw).display());
    }
    if let Some(keep) = std::env::var_os("SHIPLOG_SNAPSHOT_BENCH_KEEP") {
        // A level-1 snapshot of this state, for `benches/bootstrap.sh SNAPSHOT=...`.
        shiplog::snapshot::create_snapshot_file(&state, Path::new(&keep), 1, &mut |_| {}).unwrap();
        println!("snapshot kept at {}", Path::new(&keep).display());
    }

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(1));
    let mut group = c.benchmark_group(format!("snapshot_{mib}MiB"));
    group.throughput(Throughput::Bytes(state_bytes));
    for level in [1, 3] {
        let file = dir.path().join(format!("level-{level}.snap"));
        group.bench_function(BenchmarkId::new("create", level), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let _ = std::fs::remove_file(&file);
                    let started = Instant::now();
                    create_snapshot_file(&state, &file, level, &mut |_| {}).unwrap();
                    total += started.elapsed();
                }
                total
            });
        });
        if !file.exists() {
            // Filtered out above (`cargo bench --bench snapshot -- restore`): restore needs it.
            create_snapshot_file(&state, &file, level, &mut |_| {}).unwrap();
        }
        let file_bytes = std::fs::metadata(&file).unwrap().len();
        println!(
            "level {level}: file {:.1} MiB, ratio {:.2}",
            file_bytes as f64 / f64::from(1u32 << 20),
            state_bytes as f64 / file_bytes as f64
        );
        let target = dir.path().join("restored");
        group.bench_function(BenchmarkId::new("restore", level), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let _ = std::fs::remove_dir_all(&target);
                    let started = Instant::now();
                    restore_snapshot(&file, &target, &mut |_| {}).unwrap();
                    total += started.elapsed();
                }
                total
            });
        });
        let _ = std::fs::remove_dir_all(&target);
    }
    group.finish();
    drop(state);
    db.close().unwrap();
    c.final_summary();
}
