//! `shiplog`: the admin tool. Inspect and verify logs, benchmark the group commit, show a
//! running node's replication status, promote a replica, take, check and restore snapshots,
//! drive a running server with load (`shiplog load`, whose logic is in `shiplog::loadgen`), and
//! show a failover from start to end (`shiplog demo`).

#![forbid(unsafe_code)]

// The crate root is src/bin/shiplog.rs: its modules would otherwise be looked for beside it,
// where Cargo takes every file for a binary of its own.
#[path = "shiplog/demo/mod.rs"]
mod demo;
#[path = "shiplog/promote.rs"]
mod promote;
#[path = "shiplog/resp_client.rs"]
mod resp_client;
#[path = "shiplog/snapshot.rs"]
mod snapshot;
#[path = "shiplog/status.rs"]
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use shiplog::engine::{CheckpointVerdict, verify_store};
use shiplog::format::{
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentHeader, TailState, classify_tail,
    decode_record,
};
use shiplog::io::{FileSystem, Mapping, RealFs};
use shiplog::loadgen::{self, LoadOptions};
use shiplog::wal::{
    Comparison, Divergence, Options, SegmentComparison, SegmentOutcome, SegmentReport,
    SegmentStatus, compare_dirs,
};
use shiplog::{Db, DbOptions, Durability, Lsn, RecordKind, Wal};

#[derive(Parser)]
#[command(name = "shiplog", version, about = "Admin tool for shiplog logs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a segment file's header and every record (LSN, epoch, kind, length, CRC status).
    Inspect {
        /// The segment file (`<20-digit LSN>.seg`).
        file: PathBuf,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every record of every segment in a log directory; exit status 1 on corruption.
    ///
    /// With `--compare DIR1 DIR2`, prove instead that two logs (a primary's and a replica's)
    /// are byte-identical over the LSNs both hold; exit status 1 on a divergence.
    Verify {
        /// The log directory.
        #[arg(required_unless_present = "compare", conflicts_with = "compare")]
        dir: Option<PathBuf>,
        /// Compare two log directories segment by segment: same headers, same record bytes up
        /// to where the shorter copy ends.
        #[arg(long, num_args = 2, value_names = ["DIR1", "DIR2"])]
        compare: Option<Vec<PathBuf>>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure append throughput of the write-ahead log on this machine.
    Bench {
        /// Directory for the benchmark log (created; must not hold another log).
        #[arg(long, default_value = "./shiplog-bench")]
        dir: PathBuf,
        /// Writer thread counts to measure, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
        threads: Vec<usize>,
        /// Payload bytes per record.
        #[arg(long, default_value_t = 100)]
        record_bytes: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Durability of each append.
        #[arg(long, value_enum, default_value_t = BenchDurability::Sync)]
        durability: BenchDurability,
        /// Keep the benchmark log instead of removing it.
        #[arg(long)]
        keep: bool,
        /// Also write zeros over preallocated segments (default: fallocate only).
        #[arg(long)]
        zero_fill: bool,
        /// Measure key-value puts (unique keys) through the store instead of bare log appends.
        #[arg(long)]
        store: bool,
    },
    /// Show a running shiplogd's replication status: its role, LSNs, replicas and retention
    /// slots (primary) or link to its primary (replica). Exit status, as `pg_isready`'s: 0
    /// healthy, 1 unhealthy (fenced, or a replica whose link is down or whose log diverged), 2
    /// no response, 3 not checked (refused password or INFO, not a shiplogd, usage error).
    Status {
        /// The node's client address.
        #[arg(value_name = "HOST:PORT")]
        addr: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// File whose first line is the password to AUTH with (as shiplogd's --requirepass-file).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Promote a replica to the primary of a new epoch (as `REPLICAOF NO ONE`): refused while a
    /// peer it can reach holds more of the log, unless --force; exit status 1 when refused.
    Promote {
        /// The replica's client address.
        #[arg(value_name = "HOST:PORT")]
        addr: String,
        /// Promote even if a peer holds more of the log or knows a newer epoch (what only that
        /// peer holds is lost).
        #[arg(long)]
        force: bool,
        /// File whose first line is the password to AUTH with (as shiplogd's --requirepass-file).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Watch a failover: start a primary and two replicas on loopback, write under load, kill
    /// the primary, promote the most advanced replica, prove no acknowledged write was lost,
    /// and watch the old primary rewind and rejoin; exit status 1 if a write was lost or the
    /// nodes do not converge.
    Demo(demo::DemoOptions),
    /// Snapshots: create (from a stopped store or a running shiplogd), verify, inspect, restore.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// Drive a running server (a primary, and its replicas) with SETs and GETs over RESP:
    /// throughput and latency percentiles per operation, replica visibility lag, catch-up.
    ///
    /// Paced runs (`--rate`) send on a fixed schedule and measure latency from each
    /// operation's due time, so a stall is charged to every operation it held back.
    Load {
        /// The primary, HOST:PORT: every write goes here.
        #[arg(long)]
        server: String,
        /// Client connections, one thread each.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Requests in flight per connection.
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        /// Bytes of every value written.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        /// Size of the key space (keys key:000000000000 onwards, drawn uniformly).
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Share of GETs, 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        read_ratio: f64,
        /// Send the GETs to this server (a replica) instead of the primary.
        #[arg(long, value_name = "HOST:PORT")]
        read_from: Option<String>,
        /// Seconds to run [default: 10, or no limit with --ops].
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Stop after this many operations (all clients together).
        #[arg(long)]
        ops: Option<u64>,
        /// Total operations per second, 0 for as fast as replies come back.
        #[arg(long, default_value_t = 0, value_name = "OPS_PER_SEC")]
        rate: u64,
        /// Measure visibility lag on this replica: probe writes on the primary and spin GETs
        /// on the replica until each is there.
        #[arg(long, value_name = "REPLICA_HOST:PORT")]
        visibility: Option<String>,
        /// Milliseconds between visibility probes.
        #[arg(long, default_value_t = 5)]
        probe_interval_ms: u64,
        /// Measure catch-up: with this node detached (no --replica-of), write --ops records on
        /// the primary at full speed, then attach it (REPLICAOF) and time until it applied
        /// them all.
        #[arg(long, value_name = "REPLICA_HOST:PORT")]
        catch_up: Option<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchDurability {
    Sync,
    Buffered,
    None,
}

fn main() -> ExitCode {
    shiplog::io::restore_default_sigpipe();
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(&e));
    let result = match cli.command {
        Command::Inspect { file, json } => inspect(&file, json),
        Command::Verify { dir, compare, json } => match (compare.as_deref(), dir) {
            (Some([a, b]), _) => verify_compare(a, b, json),
            (Some(_), _) => Err("--compare takes two directories".to_owned()),
            (None, Some(dir)) => verify(&dir, json),
            (None, None) => Err("verify needs a directory, or --compare DIR1 DIR2".to_owned()),
        },
        Command::Bench {
            dir,
            threads,
            record_bytes,
            seconds,
            durability,
            keep,
            zero_fill,
            store,
        } => {
            let durability = match durability {
                BenchDurability::Sync => Durability::Sync,
                BenchDurability::Buffered => Durability::Buffered,
                BenchDurability::None => Durability::None,
            };
            let options = Options {
                zero_fill_segments: zero_fill,
                ..Options::default()
            };
            bench(
                &dir,
                &threads,
                record_bytes,
                seconds,
                durability,
                keep,
                store,
                options,
            )
        }
        Command::Status {
            addr,
            json,
            password_file,
        } => Ok(status::status(&addr, json, password_file.as_deref())),
        Command::Promote {
            addr,
            force,
            password_file,
        } => promote::promote(&addr, force, password_file.as_deref()),
        Command::Demo(options) => demo::run(&options),
        Command::Snapshot { command } => snapshot::run(command),
        Command::Load {
            server,
            clients,
            pipeline,
            value_bytes,
            keys,
            read_ratio,
            read_from,
            duration,
            ops,
            rate,
            visibility,
            probe_interval_ms,
            catch_up,
            json,
        } => load_options(duration, ops).and_then(|duration| {
            let options = LoadOptions {
                server,
                read_from,
                clients,
                pipeline,
                value_bytes,
                keys,
                read_ratio,
                rate_per_sec: rate,
                duration,
                ops,
                visibility,
                probe_interval: Duration::from_millis(probe_interval_ms),
                catch_up,
            };
            load(&options, json)
        }),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("shiplog: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `value` as one line of JSON.
fn print_json(value: &impl Serialize) -> Result<(), String> {
    let line = serde_json::to_string(value).map_err(|e| format!("cannot write JSON: {e}"))?;
    println!("{line}");
    Ok(())
}

/// A line of `shiplog inspect --json`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum InspectLine {
    /// The segment header, first.
    Header {
        file: String,
        cluster_id: String,
        first_lsn: Lsn,
        epoch: u32,
        salt: u32,
        file_bytes: usize,
    },
    /// A record that decodes; `crc` is `ok`, or `lsn-gap` when its LSN is not the next one.
    Record {
        offset: usize,
        lsn: Lsn,
        epoch: u32,
        kind: u8,
        batch_continues: bool,
        length: usize,
        crc: &'static str,
    },
    /// Where the records end, and why.
    End {
        offset: usize,
        expected_lsn: Lsn,
        verdict: String,
    },
}

/// Prints clap's message and exits: 0 for `--help`, 2 for a usage error, but 3 for one of
/// `shiplog status`, whose 2 means that nothing answered (as `pg_isready`'s exit statuses).
fn usage_error(error: &clap::Error) -> ! {
    let _ = error.print();
    let of_status = std::env::args_os().nth(1).is_some_and(|a| a == "status");
    std::process::exit(if of_status && error.use_stderr() {
        i32::from(status::NOT_CHECKED)
    } else {
        error.exit_code()
    })
}

fn print_header(
    path: &Path,
    header: &SegmentHeader,
    file_bytes: usize,
    json: bool,
) -> Result<(), String> {
    if json {
        print_json(&InspectLine::Header {
            file: path.display().to_string(),
            cluster_id: format!("{:032x}", header.cluster_id),
            first_lsn: header.first_lsn,
            epoch: header.epoch,
            salt: header.salt,
            file_bytes,
        })?;
    } else {
        println!("segment   {}", path.display());
        println!("cluster   {:032x}", header.cluster_id);
        println!(
            "first LSN {}   epoch {}   salt {:#010x}   file {} bytes",
            header.first_lsn, header.epoch, header.salt, file_bytes
        );
        println!();
        println!(
            "{:>12} {:>20} {:>8} {:>5} {:>6} {:>10}  crc",
            "offset", "lsn", "epoch", "kind", "batch", "length"
        );
    }
    Ok(())
}

/// A segment file mapped read-only, with its decoded header (`inspect`, the demo's rollback
/// count).
fn map_segment(path: &Path) -> Result<(Arc<dyn Mapping>, SegmentHeader), String> {
    let file = RealFs
        .open(path, false)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let mapping = file
        .map()
        .map_err(|e| format!("map {}: {e}", path.display()))?;
    let header = SegmentHeader::decode(mapping.bytes())
        .map_err(|e| format!("{}: bad segment header: {e}", path.display()))?;
    Ok((mapping, header))
}

fn inspect(path: &Path, json: bool) -> Result<ExitCode, String> {
    let (mapping, header) = map_segment(path)?;
    let bytes = mapping.bytes();
    print_header(path, &header, bytes.len(), json)?;
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = header.first_lsn;
    let mut bad = false;
    while offset < bytes.len() {
        match decode_record(&bytes[offset..], header.salt) {
            Ok(record) => {
                let status = if record.lsn == expected {
                    "ok"
                } else {
                    "lsn-gap"
                };
                if json {
                    print_json(&InspectLine::Record {
                        offset,
                        lsn: record.lsn,
                        epoch: record.epoch,
                        kind: record.kind.get(),
                        batch_continues: record.batch_continues,
                        length: record.payload.len(),
                        crc: status,
                    })?;
                } else {
                    let batch = if record.batch_continues { "cont" } else { "" };
                    println!(
                        "{offset:>12} {:>20} {:>8} {:>5} {batch:>6} {:>10}  {status}",
                        record.lsn,
                        record.epoch,
                        record.kind.get(),
                        record.payload.len()
                    );
                }
                bad |= record.lsn != expected;
                expected = record.lsn + 1;
                offset += record.encoded_bytes();
            }
            Err(e) => {
                let tail = classify_tail(bytes, offset as u64, header.salt, expected - 1);
                let verdict = match tail {
                    TailState::Zeros => "end of records (zeros follow)".to_owned(),
                    TailState::Torn {
                        dirty_end,
                        unsynced_records: 0,
                    } => {
                        format!("torn tail: {e}; damaged bytes end at offset {dirty_end}")
                    }
                    TailState::Torn {
                        dirty_end,
                        unsynced_records,
                    } => format!(
                        "torn tail: {e}; {unsynced_records} valid records written before LSN \
                         {expected} was durable follow, up to offset {dirty_end} (cut if this \
                         is the log's last segment, corruption if it is sealed)"
                    ),
                    TailState::ValidRecordFollows { offset: at, lsn } => {
                        bad = true;
                        format!(
                            "CORRUPT: {e}; a valid record with LSN {lsn} follows at offset {at}"
                        )
                    }
                };
                if json {
                    print_json(&InspectLine::End {
                        offset,
                        expected_lsn: expected,
                        verdict,
                    })?;
                } else {
                    println!("{offset:>12} {expected:>20}  {verdict}");
                }
                break;
            }
        }
    }
    Ok(if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn segment_status(status: &SegmentStatus) -> String {
    match status {
        SegmentStatus::Clean => "ok".to_owned(),
        SegmentStatus::TornTail {
            cut_offset,
            dropped_records,
            ..
        } => format!(
            "torn tail: will be cut at offset {cut_offset} ({dropped_records} records of an unfinished batch)"
        ),
        SegmentStatus::UnusedEmpty => "unused empty segment: will be removed".to_owned(),
        SegmentStatus::Superseded => {
            "superseded by a compacted segment (interrupted compaction): will be removed".to_owned()
        }
        SegmentStatus::Corrupt(e) => format!("CORRUPT: {e}"),
    }
}

/// A segment's line of `shiplog verify --json`.
#[derive(Serialize)]
struct VerifyLine {
    segment: String,
    first_lsn: Lsn,
    last_lsn: Option<Lsn>,
    records: u64,
    record_bytes: u64,
    file_bytes: u64,
    live_bytes: Option<u64>,
    dead_bytes: Option<u64>,
    status: String,
}

/// The last line of `shiplog verify --json`.
#[derive(Serialize)]
struct CheckpointLine {
    index_checkpoint: String,
}

fn verify(dir: &Path, json: bool) -> Result<ExitCode, String> {
    let report = verify_store(&RealFs, dir).map_err(|e| e.to_string())?;
    if report.segments.is_empty() {
        return Err(format!("{} holds no segment files", dir.display()));
    }
    if !json {
        println!(
            "{:<28} {:>20} {:>20} {:>10} {:>12} {:>12} {:>12}  status",
            "segment", "first lsn", "last lsn", "records", "bytes", "live bytes", "dead bytes"
        );
    }
    let mut corrupt = 0;
    for segment in &report.segments {
        corrupt += usize::from(matches!(segment.status, SegmentStatus::Corrupt(_)));
        let status = segment_status(&segment.status);
        let usage = report.usage.iter().find(|u| u.path == segment.path);
        let (live, dead) = usage.map_or((None, None), |u| (Some(u.live_bytes), Some(u.dead_bytes)));
        let name = segment
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let or = |v: Option<u64>, none: &str| v.map_or_else(|| none.to_owned(), |v| v.to_string());
        if json {
            print_json(&VerifyLine {
                segment: name,
                first_lsn: segment.first_lsn,
                last_lsn: segment.last_lsn,
                records: segment.record_count,
                record_bytes: segment.record_bytes,
                file_bytes: segment.file_bytes,
                live_bytes: live,
                dead_bytes: dead,
                status,
            })?;
        } else {
            println!(
                "{name:<28} {:>20} {:>20} {:>10} {:>12} {:>12} {:>12}  {status}",
                segment.first_lsn,
                or(segment.last_lsn, "-"),
                segment.record_count,
                segment.record_bytes,
                or(live, "-"),
                or(dead, "-")
            );
        }
    }
    let (checkpoint, checkpoint_bad) = match &report.checkpoint {
        CheckpointVerdict::Missing => (
            "none (the index is rebuilt from the log at open)".to_owned(),
            false,
        ),
        CheckpointVerdict::Valid {
            applied_lsn,
            entries,
        } => (format!("ok: {entries} keys at LSN {applied_lsn}"), false),
        CheckpointVerdict::Invalid(reason) => (
            format!("INVALID: {reason} (it will be ignored and the index rebuilt from the log)"),
            true,
        ),
    };
    if json {
        print_json(&CheckpointLine {
            index_checkpoint: checkpoint,
        })?;
    } else {
        println!("\nindex checkpoint: {checkpoint}");
    }
    if corrupt > 0 {
        eprintln!("{corrupt} corrupt segment(s)");
    }
    Ok(if corrupt > 0 || checkpoint_bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `shiplog verify --compare A B`: exit status 1 on a divergence, as `verify` on corruption.
fn verify_compare(a: &Path, b: &Path, json: bool) -> Result<ExitCode, String> {
    let comparison = compare_dirs(&RealFs, a, b).map_err(|e| e.to_string())?;
    let shared = comparison.segments.len();
    for (dir, only) in [(a, &comparison.only_in_a), (b, &comparison.only_in_b)] {
        // As `verify` does: an empty directory is far more often a wrong path than a log.
        if shared + only.len() == 0 {
            return Err(format!("{} holds no segment files", dir.display()));
        }
    }
    let mut rows: Vec<(Lsn, CompareRow)> = comparison
        .segments
        .iter()
        .map(|s| (s.first_lsn, compare_row(s)))
        .collect();
    for (side, only) in [("A", &comparison.only_in_a), ("B", &comparison.only_in_b)] {
        rows.extend(only.iter().map(|r| (r.first_lsn, only_in_row(side, r))));
    }
    rows.sort_by_key(|(lsn, _)| *lsn);
    if json {
        print_comparison_json(a, b, &comparison, &rows)?;
    } else {
        print_comparison_table(a, b, &comparison, &rows);
    }
    let diverged = comparison
        .segments
        .iter()
        .filter(|s| matches!(s.outcome, SegmentOutcome::Diverged(_)))
        .count();
    if diverged > 0 {
        eprintln!("{diverged} diverged segment(s)");
    }
    Ok(if diverged > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One line of the comparison: a segment both directories hold, or one only one holds.
struct CompareRow {
    segment: String,
    /// `identical`, `diverged`, `not_comparable`, `not_in_log`, `only_in_a`, `only_in_b`.
    result: &'static str,
    compared_lsns: Option<(Lsn, Lsn)>,
    compared_bytes: Option<u64>,
    /// `(first differing byte, (offset, LSN) of the record holding it)`, for a divergence.
    divergence: Option<(u64, Option<(u64, Lsn)>)>,
    detail: String,
    status_a: Option<String>,
    status_b: Option<String>,
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn lsn_range(lsns: Option<(Lsn, Lsn)>) -> String {
    lsns.map_or_else(|| "-".to_owned(), |(first, last)| format!("{first}-{last}"))
}

fn compare_row(segment: &SegmentComparison) -> CompareRow {
    let mut compared = (None, None);
    let mut divergence = None;
    let (result, detail) = match &segment.outcome {
        SegmentOutcome::Identical { lsns, bytes } => {
            compared = (*lsns, Some(*bytes));
            ("identical", "identical".to_owned())
        }
        SegmentOutcome::DifferentHeaders { fields } => (
            "not_comparable",
            format!(
                "not comparable: different headers ({}); compacted on one side",
                fields.join(", ")
            ),
        ),
        SegmentOutcome::NotInLog => (
            "not_in_log",
            "not compared: recovery removes one copy (see its status)".to_owned(),
        ),
        SegmentOutcome::Diverged(Divergence::Header { offset, fields }) => {
            divergence = Some((*offset, None));
            (
                "diverged",
                format!(
                    "DIVERGED: headers differ at offset {offset} ({}), though neither copy was \
                     compacted",
                    fields.join(", ")
                ),
            )
        }
        SegmentOutcome::Diverged(Divergence::Records { offset, record }) => {
            divergence = Some((*offset, *record));
            let within = record.map_or_else(
                || "a record that does not decode".to_owned(),
                |(at, lsn)| format!("the record of LSN {lsn} at offset {at}"),
            );
            (
                "diverged",
                format!("DIVERGED at offset {offset}, in {within}"),
            )
        }
    };
    CompareRow {
        segment: file_name(&segment.a.path),
        result,
        compared_lsns: compared.0,
        compared_bytes: compared.1,
        divergence,
        detail,
        status_a: Some(segment_status(&segment.a.status)),
        status_b: Some(segment_status(&segment.b.status)),
    }
}

fn only_in_row(side: &'static str, report: &SegmentReport) -> CompareRow {
    let status = segment_status(&report.status);
    let (result, status_a, status_b) = if side == "A" {
        ("only_in_a", Some(status.clone()), None)
    } else {
        ("only_in_b", None, Some(status.clone()))
    };
    CompareRow {
        segment: file_name(&report.path),
        result,
        compared_lsns: None,
        compared_bytes: None,
        divergence: None,
        detail: format!(
            "only in {side} (LSNs {}; {status})",
            lsn_range(report.last_lsn.map(|last| (report.first_lsn, last)))
        ),
        status_a,
        status_b,
    }
}

fn print_comparison_table(a: &Path, b: &Path, comparison: &Comparison, rows: &[(Lsn, CompareRow)]) {
    println!("A = {}\nB = {}\n", a.display(), b.display());
    println!(
        "{:<28} {:>25} {:>12}  result",
        "segment", "compared LSNs", "bytes"
    );
    for (_, row) in rows {
        let bytes = row
            .compared_bytes
            .map_or_else(|| "-".to_owned(), |b| b.to_string());
        println!(
            "{:<28} {:>25} {bytes:>12}  {}",
            row.segment,
            lsn_range(row.compared_lsns),
            row.detail
        );
    }
    for (_, row) in rows
        .iter()
        .filter(|(_, r)| !r.result.starts_with("only_in"))
    {
        for (side, dir, status) in [("A", a, &row.status_a), ("B", b, &row.status_b)] {
            if let Some(status) = status.as_deref().filter(|s| *s != "ok") {
                println!(
                    "note: {side}'s {}: {status} (`shiplog verify {}` for details)",
                    row.segment,
                    dir.display()
                );
            }
        }
    }
    let shared = comparison.shared_lsns;
    println!(
        "\nA holds LSNs {}, B holds LSNs {}; both hold {}",
        lsn_range(comparison.lsns_a),
        lsn_range(comparison.lsns_b),
        lsn_range(shared)
    );
    let identical = rows.iter().filter(|(_, r)| r.result == "identical").count();
    let bytes = comparison.bytes_compared();
    let shared_count = shared.map_or(0, |(first, last)| last - first + 1);
    if comparison.diverged() {
        let diverged = rows.iter().filter(|(_, r)| r.result == "diverged").count();
        println!("DIVERGED in {diverged} segment(s)");
    } else if comparison.uncompared_lsns > 0 {
        println!(
            "no divergence, but {} of the {shared_count} shared LSNs were not compared \
             ({bytes} bytes compared in {identical} segment(s))",
            comparison.uncompared_lsns
        );
    } else {
        println!(
            "identical: all {shared_count} shared LSNs compared ({bytes} bytes in {identical} segment(s))"
        );
    }
}

/// A line of `shiplog verify --compare --json`: one per segment, then the summary.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum CompareLine<'a> {
    Segment {
        segment: &'a str,
        result: &'static str,
        compared_first_lsn: Option<Lsn>,
        compared_last_lsn: Option<Lsn>,
        compared_bytes: Option<u64>,
        /// The first differing byte, for a divergence.
        offset: Option<u64>,
        /// The offset and LSN of the record holding it.
        record_offset: Option<u64>,
        lsn: Option<Lsn>,
        status_a: Option<&'a str>,
        status_b: Option<&'a str>,
        detail: &'a str,
    },
    Summary {
        dir_a: String,
        dir_b: String,
        a_first_lsn: Option<Lsn>,
        a_last_lsn: Option<Lsn>,
        b_first_lsn: Option<Lsn>,
        b_last_lsn: Option<Lsn>,
        shared_first_lsn: Option<Lsn>,
        shared_last_lsn: Option<Lsn>,
        segments_identical: usize,
        bytes_compared: u64,
        uncompared_lsns: u64,
        diverged: bool,
    },
}

fn print_comparison_json(
    a: &Path,
    b: &Path,
    comparison: &Comparison,
    rows: &[(Lsn, CompareRow)],
) -> Result<(), String> {
    for (_, row) in rows {
        let (offset, record) = row.divergence.unzip();
        let record = record.flatten();
        print_json(&CompareLine::Segment {
            segment: &row.segment,
            result: row.result,
            compared_first_lsn: row.compared_lsns.map(|(first, _)| first),
            compared_last_lsn: row.compared_lsns.map(|(_, last)| last),
            compared_bytes: row.compared_bytes,
            offset,
            record_offset: record.map(|(at, _)| at),
            lsn: record.map(|(_, lsn)| lsn),
            status_a: row.status_a.as_deref(),
            status_b: row.status_b.as_deref(),
            detail: &row.detail,
        })?;
    }
    let first = |lsns: Option<(Lsn, Lsn)>| lsns.map(|(f, _)| f);
    let last = |lsns: Option<(Lsn, Lsn)>| lsns.map(|(_, l)| l);
    print_json(&CompareLine::Summary {
        dir_a: a.display().to_string(),
        dir_b: b.display().to_string(),
        a_first_lsn: first(comparison.lsns_a),
        a_last_lsn: last(comparison.lsns_a),
        b_first_lsn: first(comparison.lsns_b),
        b_last_lsn: last(comparison.lsns_b),
        shared_first_lsn: first(comparison.shared_lsns),
        shared_last_lsn: last(comparison.shared_lsns),
        segments_identical: rows.iter().filter(|(_, r)| r.result == "identical").count(),
        bytes_compared: comparison.bytes_compared(),
        uncompared_lsns: comparison.uncompared_lsns,
        diverged: comparison.diverged(),
    })
}

/// What `shiplog bench` writes to: the bare log, or the key-value store on it.
enum BenchTarget {
    Log(Wal),
    Store(Db),
}

impl BenchTarget {
    fn wal(&self) -> &Wal {
        match self {
            Self::Log(wal) => wal,
            Self::Store(db) => db.wal(),
        }
    }

    /// One append, or one put of a key unique to this thread and sequence number.
    fn write(
        &self,
        thread: usize,
        n: u64,
        payload: &[u8],
        durability: Durability,
    ) -> Result<(), String> {
        match self {
            Self::Log(wal) => {
                let kind = RecordKind::new(1).ok_or("kind")?;
                wal.append(kind, payload, durability)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Self::Store(db) => {
                let key = format!("bench-{thread:03}-{n:012}");
                db.put_with(key.as_bytes(), payload, durability)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn close(self) -> Result<(), String> {
        match self {
            Self::Log(wal) => wal.close().map_err(|e| e.to_string()),
            Self::Store(db) => db.close().map_err(|e| e.to_string()),
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "throughput figures for display")]
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per command-line flag"
)]
fn bench(
    dir: &Path,
    threads: &[usize],
    record_bytes: usize,
    seconds: f64,
    durability: Durability,
    keep: bool,
    store: bool,
    options: Options,
) -> Result<ExitCode, String> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .next()
            .is_some()
    {
        return Err(format!(
            "{} is not empty; pass an empty or new directory",
            dir.display()
        ));
    }
    let target = if store {
        let options = DbOptions {
            wal: options,
            ..DbOptions::default()
        };
        BenchTarget::Store(Db::open(dir, options).map_err(|e| e.to_string())?)
    } else {
        BenchTarget::Log(Wal::open(dir, options).map_err(|e| e.to_string())?)
    };
    let payload = vec![0x5a; record_bytes];
    println!(
        "{:>8} {:>14} {:>10} {:>12} {:>14}",
        "threads",
        if store { "puts/s" } else { "appends/s" },
        "MiB/s",
        "fsyncs/s",
        if store { "puts/fsync" } else { "appends/fsync" }
    );
    for &count in threads {
        let stop = AtomicBool::new(false);
        let appended = AtomicU64::new(0);
        let syncs_before = target.wal().stats().syncs;
        let started = Instant::now();
        let failure = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..count.max(1))
                .map(|thread| {
                    let (target, payload, stop, appended) = (&target, &payload, &stop, &appended);
                    scope.spawn(move || {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            target.write(thread, n, payload, durability)?;
                            appended.fetch_add(1, Ordering::Relaxed);
                            n += 1;
                        }
                        Ok::<(), String>(())
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs_f64(seconds));
            stop.store(true, Ordering::Relaxed);
            handles
                .into_iter()
                .find_map(|h| h.join().ok().and_then(Result::err))
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let n = appended.load(Ordering::Relaxed) as f64;
        let syncs = (target.wal().stats().syncs - syncs_before) as f64;
        println!(
            "{count:>8} {:>14.0} {:>10.1} {:>12.0} {:>14.1}",
            n / elapsed,
            n * (record_bytes + RECORD_HEADER_BYTES) as f64 / elapsed / f64::from(1u32 << 20),
            syncs / elapsed,
            if syncs > 0.0 { n / syncs } else { 0.0 }
        );
    }
    target.close()?;
    if !keep {
        std::fs::remove_dir_all(dir).map_err(|e| e.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--duration` as given, or 10 s when neither it nor `--ops` bounds the run.
fn load_options(duration: Option<f64>, ops: Option<u64>) -> Result<Option<Duration>, String> {
    match (duration, ops) {
        (Some(secs), _) => Duration::try_from_secs_f64(secs)
            .map(Some)
            .map_err(|_| format!("--duration {secs} is not a number of seconds")),
        (None, Some(_)) => Ok(None),
        (None, None) => Ok(Some(Duration::from_secs(10))),
    }
}

/// `shiplog load`: run, then print the report.
fn load(options: &LoadOptions, json: bool) -> Result<ExitCode, String> {
    let report = loadgen::run(options).map_err(|e| e.to_string())?;
    let errors = report.set.errors + report.get.errors;
    if errors > 0 {
        // The run itself worked; say so on stderr, where a script reading the JSON sees it too.
        eprintln!("shiplog load: {errors} operations got an error reply (not in the latencies)");
    }
    if json {
        print_json(&report)?;
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
