//! `shiplogd`: the shiplog daemon. This build opens and recovers the data directory (taking its
//! lock) and reports the state of the log; the Redis-protocol server and replication are
//! separate layers that are not part of this build yet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shiplog::Wal;
use shiplog::wal::{DEFAULT_FLUSH_INTERVAL_MS, DEFAULT_SEGMENT_BYTES, Options, SegmentStatus};

#[derive(Parser)]
#[command(
    name = "shiplogd",
    version,
    about = "The shiplog daemon: recovers and reports the log in --dir"
)]
struct Flags {
    /// Data directory (created if missing).
    #[arg(long, default_value = "./shiplog-data", env = "SHIPLOG_DIR")]
    dir: PathBuf,
    /// Address clients will connect to once the server layer lands (validated only).
    #[arg(long, default_value = "127.0.0.1:6380", env = "SHIPLOG_LISTEN")]
    listen: SocketAddr,
    /// Segment rotation size in bytes (at least 4096).
    #[arg(long, default_value_t = DEFAULT_SEGMENT_BYTES, env = "SHIPLOG_SEGMENT_BYTES")]
    segment_bytes: u64,
    /// Background sync interval for buffered writes, in milliseconds (1..=60000).
    #[arg(long, default_value_t = DEFAULT_FLUSH_INTERVAL_MS, env = "SHIPLOG_FLUSH_INTERVAL_MS")]
    flush_interval_ms: u64,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let options = Options {
        segment_bytes: flags.segment_bytes,
        flush_interval_ms: flags.flush_interval_ms,
        ..Options::default()
    };
    let wal = match Wal::open(&flags.dir, options) {
        Ok(wal) => wal,
        Err(e) => {
            eprintln!("shiplogd: cannot open {}: {e}", flags.dir.display());
            return ExitCode::FAILURE;
        }
    };
    for report in wal.recovery_report() {
        if let SegmentStatus::TornTail {
            cut_offset,
            dropped_records,
            ..
        } = report.status
        {
            println!(
                "recovered torn tail of {} at offset {cut_offset} ({dropped_records} records of an unfinished batch dropped)",
                report.path.display()
            );
        }
    }
    let stats = wal.stats();
    println!(
        "log {} ok: cluster {:032x}, LSNs {}..={}, {} segment(s); would listen on {}",
        flags.dir.display(),
        wal.cluster_id(),
        stats.first_lsn,
        stats.durable_lsn,
        stats.segments,
        flags.listen
    );
    println!("the Redis-protocol server is not part of this build; exiting after recovery");
    match wal.close() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shiplogd: closing the log failed: {e}");
            ExitCode::FAILURE
        }
    }
}
