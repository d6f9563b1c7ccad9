//! What the benchmarks share: where they put their files and a seeded generator.

#![allow(dead_code, reason = "each benchmark uses a part of this module")]

/// A temporary directory under `SHIPLOG_BENCH_DIR` (default: the current directory), so a
/// run can be pointed at the disk it should measure.
pub fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SHIPLOG_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).expect("bench dir"),
        None => tempfile::tempdir_in(".").expect("bench dir"),
    }
}

/// Xorshift64: fast, seeded, the same sequence on every run.
pub struct Rng(pub u64);

impl Rng {
    /// The next number (never 0 for a non-zero seed).
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
