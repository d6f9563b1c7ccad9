//! `shiplogd`: the shiplog daemon. Recovers the data directory and serves it to Redis clients.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use nix::sys::signal::{SigSet, Signal};
use shiplog::engine::{Db, DbOptions};
use shiplog::server::acks::{
    AckLevel, DEFAULT_SYNC_TIMEOUT_MS, SYNC_REPLICAS_MAX, SyncFallback, SyncOptions,
};
use shiplog::server::config::{FileConfig, parse_config, read_password_file};
use shiplog::server::{
    DEFAULT_ARGS_MAX, DEFAULT_BULK_MAX_BYTES, DEFAULT_IO_THREADS, DEFAULT_LISTEN,
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_RETAINED_BYTES, DEFAULT_OUTPUT_MAX_BYTES, Keyspace, Server,
    ServerOptions,
};
use shiplog::wal::{
    DEFAULT_FLUSH_INTERVAL_MS, DEFAULT_SEGMENT_BYTES, Durability, Options, SegmentStatus,
};

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilitySetting {
    /// After fdatasync: survives power loss (group commit shares one sync among all clients).
    Sync,
    /// After the write reaches the OS: survives a crash of shiplogd, and a power loss loses at
    /// most the last flush interval.
    Buffered,
}

#[derive(Parser)]
#[command(
    name = "shiplogd",
    version,
    about = "The shiplog daemon: a durable key-value store that speaks the Redis protocol",
    after_help = "Every setting can also come from the environment (SHIPLOG_<NAME>) or from \
                  the TOML file given by --config, using the flag names as keys \
                  (e.g. max-clients = 100). Flags override the environment, which overrides \
                  the file, which overrides the defaults."
)]
struct Flags {
    /// TOML config file (settings named like the flags, without the dashes in front).
    #[arg(long, env = "SHIPLOG_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory, created if missing [default: ./shiplog-data].
    #[arg(long, env = "SHIPLOG_DIR")]
    dir: Option<PathBuf>,
    /// Address for Redis clients [default: 127.0.0.1:6380].
    #[arg(long, env = "SHIPLOG_LISTEN")]
    listen: Option<String>,
    /// When a write is acknowledged [default: sync].
    #[arg(long, value_enum, env = "SHIPLOG_DURABILITY")]
    durability: Option<DurabilitySetting>,
    /// File holding the password clients must send with AUTH (first line; no AUTH if unset).
    #[arg(long, env = "SHIPLOG_REQUIREPASS_FILE")]
    requirepass_file: Option<PathBuf>,
    /// Most client connections at once [default: 4096].
    #[arg(long, env = "SHIPLOG_MAX_CLIENTS")]
    max_clients: Option<usize>,
    /// Largest bulk string (key or value) a client may send, in bytes [default: 536870912].
    #[arg(long, env = "SHIPLOG_PROTO_MAX_BULK_LEN")]
    proto_max_bulk_len: Option<usize>,
    /// Most arguments in one command [default: 1048576].
    #[arg(long, env = "SHIPLOG_MAX_ARGS")]
    max_args: Option<usize>,
    /// Largest reply one command may build before its connection is closed, in bytes
    /// [default: 1073741824].
    #[arg(long, env = "SHIPLOG_CLIENT_OUTPUT_LIMIT")]
    client_output_limit: Option<usize>,
    /// Address of the Prometheus metrics endpoint (GET /metrics); off if unset.
    #[arg(long, env = "SHIPLOG_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or per-module directives [default: info].
    #[arg(long, env = "SHIPLOG_LOG_LEVEL")]
    log_level: Option<String>,
    /// Segment rotation size in bytes, at least 4096 [default: 67108864].
    #[arg(long, env = "SHIPLOG_SEGMENT_BYTES")]
    segment_bytes: Option<u64>,
    /// Background sync interval for buffered writes, in milliseconds [default: 5].
    #[arg(long, env = "SHIPLOG_FLUSH_INTERVAL_MS")]
    flush_interval_ms: Option<u64>,
    /// Write zeros over new segment files instead of only reserving their space [default:
    /// false]: costs a second write of every segment, saves ext4 the conversion of unwritten
    /// extents at each sync.
    #[arg(long, env = "SHIPLOG_ZERO_FILL_SEGMENTS")]
    zero_fill_segments: Option<bool>,
    /// Event-loop threads serving client connections [default: 1].
    #[arg(long, env = "SHIPLOG_IO_THREADS")]
    io_threads: Option<usize>,
    /// Follow this primary (HOST:PORT) as a read-only replica: receive its log, apply it and
    /// serve reads. `REPLICAOF` changes it at run time.
    #[arg(long, env = "SHIPLOG_REPLICA_OF")]
    replica_of: Option<String>,
    /// Most bytes of log a primary keeps for one lagging replica; past it the replica's
    /// retention slot is dropped (it will need a snapshot) [default: 4294967296].
    #[arg(long, env = "SHIPLOG_MAX_RETAINED_BYTES")]
    max_retained_bytes: Option<u64>,
    /// File holding the primary's password (first line): a replica proves it knows it by
    /// challenge–response, never sending it.
    #[arg(long, env = "SHIPLOG_MASTERAUTH_FILE")]
    masterauth_file: Option<PathBuf>,
    /// zstd level of the snapshots this node builds to bootstrap replicas [default: 1].
    #[arg(long, env = "SHIPLOG_SNAPSHOT_LEVEL")]
    snapshot_level: Option<i32>,
    /// An empty replica is bootstrapped from a snapshot, instead of being sent the whole log,
    /// when the log is larger than this many bytes [default: 67108864].
    #[arg(long, env = "SHIPLOG_SNAPSHOT_BOOTSTRAP_BYTES")]
    snapshot_bootstrap_bytes: Option<u64>,
    /// On a replica: answer reads with `-STALE` while this node is more than this many
    /// milliseconds behind its primary (bounded staleness) [default: no bound].
    #[arg(long, env = "SHIPLOG_MAX_STALENESS_MS")]
    max_staleness_ms: Option<u64>,
    /// On a primary: a write is answered only once this many replicas acknowledged it (see
    /// --sync-level); 0 answers once it is durable here [default: 0, at most 64].
    #[arg(long, env = "SHIPLOG_SYNC_REPLICAS")]
    sync_replicas: Option<u32>,
    /// What --sync-replicas replicas acknowledge: `replicated` (durable there) or `applied`
    /// (durable and visible to their readers) [default: replicated].
    #[arg(long, value_enum, env = "SHIPLOG_SYNC_LEVEL")]
    sync_level: Option<SyncLevelSetting>,
    /// How long a write waits for its replica acknowledgements before it is answered
    /// `-NOREPLICAS` (it is durable here: its outcome is unknown) [default: 5000].
    #[arg(long, env = "SHIPLOG_SYNC_TIMEOUT_MS")]
    sync_timeout_ms: Option<u64>,
    /// What a write whose acknowledgements did not come in time is answered: `fail`
    /// (`-NOREPLICAS`) or `async` (OK, with a warning in the log and INFO) [default: fail].
    #[arg(long, value_enum, env = "SHIPLOG_SYNC_FALLBACK")]
    sync_fallback: Option<SyncFallbackSetting>,
}

/// What replicas acknowledge under --sync-replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SyncLevelSetting {
    /// Durable on the replica.
    Replicated,
    /// Durable and visible to the replica's readers (`PostgreSQL`'s `remote_apply`).
    Applied,
}

/// What a write whose acknowledgements timed out is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SyncFallbackSetting {
    /// `-NOREPLICAS Not enough good replicas to write.`
    Fail,
    /// OK, as if replication were asynchronous; logged and counted in INFO.
    Async,
}

/// The merged settings.
struct Settings {
    config: Option<PathBuf>,
    dir: PathBuf,
    listen: String,
    durability: DurabilitySetting,
    requirepass_file: Option<PathBuf>,
    max_clients: usize,
    bulk_max: usize,
    args_max: usize,
    output_max: usize,
    metrics_listen: Option<String>,
    log_level: String,
    segment_bytes: u64,
    flush_interval_ms: u64,
    io_threads: usize,
    zero_fill_segments: bool,
    replica_of: Option<String>,
    max_retained_bytes: u64,
    masterauth_file: Option<PathBuf>,
    snapshot_level: i32,
    snapshot_bootstrap_bytes: u64,
    max_staleness_ms: Option<u64>,
    sync: SyncOptions,
}

/// The `--sync-*` settings, from the flags or the file.
fn sync_settings(flags: &Flags, file: &FileConfig) -> Result<SyncOptions, String> {
    let replicas = flags.sync_replicas.or(file.sync_replicas).unwrap_or(0);
    if replicas > SYNC_REPLICAS_MAX {
        return Err(format!(
            "sync-replicas must be at most {SYNC_REPLICAS_MAX}, not {replicas}"
        ));
    }
    let applied = match (flags.sync_level, file.sync_level.as_deref()) {
        (Some(level), _) => level == SyncLevelSetting::Applied,
        (None, None | Some("replicated")) => false,
        (None, Some("applied")) => true,
        (None, Some(other)) => {
            return Err(format!(
                "config file: sync-level must be \"replicated\" or \"applied\", not {other:?}"
            ));
        }
    };
    let fallback = match (flags.sync_fallback, file.sync_fallback.as_deref()) {
        (Some(SyncFallbackSetting::Fail), _) | (None, None | Some("fail")) => SyncFallback::Fail,
        (Some(SyncFallbackSetting::Async), _) | (None, Some("async")) => SyncFallback::Async,
        (None, Some(other)) => {
            return Err(format!(
                "config file: sync-fallback must be \"fail\" or \"async\", not {other:?}"
            ));
        }
    };
    let timeout_ms = flags
        .sync_timeout_ms
        .or(file.sync_timeout_ms)
        .unwrap_or(DEFAULT_SYNC_TIMEOUT_MS);
    if timeout_ms == 0 {
        return Err("sync-timeout-ms must be at least 1 (a write never waits forever)".to_owned());
    }
    Ok(SyncOptions {
        level: AckLevel::from_setting(replicas, applied),
        timeout_ms,
        fallback,
    })
}

fn settings(flags: Flags) -> Result<Settings, String> {
    let file = match &flags.config {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            parse_config(&bytes).map_err(|e| format!("config file {}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let sync = sync_settings(&flags, &file)?;
    let durability = match flags.durability {
        Some(d) => d,
        None => match file.durability.as_deref() {
            None | Some("sync") => DurabilitySetting::Sync,
            Some("buffered") => DurabilitySetting::Buffered,
            Some(other) => {
                return Err(format!(
                    "config file: durability must be \"sync\" or \"buffered\", not {other:?}"
                ));
            }
        },
    };
    Ok(Settings {
        config: flags.config,
        dir: flags
            .dir
            .or(file.dir)
            .unwrap_or_else(|| PathBuf::from("./shiplog-data")),
        listen: flags
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
        durability,
        requirepass_file: flags.requirepass_file.or(file.requirepass_file),
        max_clients: flags
            .max_clients
            .or(file.max_clients)
            .unwrap_or(DEFAULT_MAX_CLIENTS),
        bulk_max: flags
            .proto_max_bulk_len
            .or(file.proto_max_bulk_len)
            .unwrap_or(DEFAULT_BULK_MAX_BYTES),
        args_max: flags.max_args.or(file.max_args).unwrap_or(DEFAULT_ARGS_MAX),
        output_max: flags
            .client_output_limit
            .or(file.client_output_limit)
            .unwrap_or(DEFAULT_OUTPUT_MAX_BYTES),
        metrics_listen: flags.metrics_listen.or(file.metrics_listen),
        log_level: flags
            .log_level
            .or(file.log_level)
            .unwrap_or_else(|| "info".to_owned()),
        segment_bytes: flags
            .segment_bytes
            .or(file.segment_bytes)
            .unwrap_or(DEFAULT_SEGMENT_BYTES),
        flush_interval_ms: flags
            .flush_interval_ms
            .or(file.flush_interval_ms)
            .unwrap_or(DEFAULT_FLUSH_INTERVAL_MS),
        zero_fill_segments: flags
            .zero_fill_segments
            .or(file.zero_fill_segments)
            .unwrap_or(false),
        io_threads: flags
            .io_threads
            .or(file.io_threads)
            .unwrap_or(DEFAULT_IO_THREADS),
        replica_of: flags.replica_of.or(file.replica_of),
        max_retained_bytes: flags
            .max_retained_bytes
            .or(file.max_retained_bytes)
            .unwrap_or(DEFAULT_MAX_RETAINED_BYTES),
        masterauth_file: flags.masterauth_file.or(file.masterauth_file),
        snapshot_level: flags
            .snapshot_level
            .or(file.snapshot_level)
            .unwrap_or(shiplog::snapshot::DEFAULT_LEVEL),
        snapshot_bootstrap_bytes: flags
            .snapshot_bootstrap_bytes
            .or(file.snapshot_bootstrap_bytes)
            .unwrap_or(shiplog::server::DEFAULT_SNAPSHOT_BOOTSTRAP_BYTES),
        max_staleness_ms: flags.max_staleness_ms.or(file.max_staleness_ms),
        sync,
    })
}

fn read_password(path: &Path) -> Result<Vec<u8>, String> {
    let password = read_password_file(path)?;
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(file = %path.display(), "the password file is readable by every user: chmod 600 it");
        }
    }
    Ok(password)
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let settings = match settings(flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shiplogd: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&settings.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "shiplogd: invalid --log-level {:?}: {e}",
                settings.log_level
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn db_options(settings: &Settings, durability: Durability) -> DbOptions {
    DbOptions {
        wal: Options {
            segment_bytes: settings.segment_bytes,
            flush_interval_ms: settings.flush_interval_ms,
            zero_fill_segments: settings.zero_fill_segments,
            ..Options::default()
        },
        durability,
        ..DbOptions::default()
    }
}

/// Logs each torn tail that recovery cut back.
fn report_torn_tails(db: &Db) {
    for report in db.wal().recovery_report() {
        if let SegmentStatus::TornTail {
            cut_offset,
            dropped_records,
            ..
        } = report.status
        {
            tracing::warn!(
                segment = %report.path.display(),
                cut_offset,
                dropped_records,
                "recovered a torn tail (records of an unfinished batch dropped)"
            );
        }
    }
}

fn run(settings: &Settings) -> Result<(), String> {
    // Signals are taken by one thread with sigwait; every other thread (all started after this
    // point) inherits the blocked mask, so no handler ever runs in signal context.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| format!("cannot block SIGTERM/SIGINT: {e}"))?;

    let password = settings
        .requirepass_file
        .as_deref()
        .map(read_password)
        .transpose()?;
    let masterauth = settings
        .masterauth_file
        .as_deref()
        .map(read_password)
        .transpose()?;
    let listener = TcpListener::bind(&settings.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let metrics = settings
        .metrics_listen
        .as_deref()
        .map(|addr| {
            TcpListener::bind(addr).map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
        })
        .transpose()?;

    let durability = match settings.durability {
        DurabilitySetting::Sync => Durability::Sync,
        DurabilitySetting::Buffered => Durability::Buffered,
    };
    let options = db_options(settings, durability);
    let started = std::time::Instant::now();
    let db = Db::open(&settings.dir, options)
        .map_err(|e| format!("cannot open {}: {e}", settings.dir.display()))?;
    if settings.replica_of.is_some() {
        // A replica's log is a copy of its primary's: no compaction, from the first moment
        // (the server keeps it so while the node follows a primary).
        db.set_compaction_hold(0);
    }
    report_torn_tails(&db);
    let stats = db.stats();
    tracing::info!(
        dir = %settings.dir.display(),
        cluster = format!("{:032x}", db.wal().cluster_id()),
        keys = stats.live_keys,
        durable_lsn = stats.durable_lsn,
        segments = stats.segments,
        checkpoint = ?db.checkpoint_status(),
        elapsed_ms = started.elapsed().as_millis(),
        "store opened"
    );

    let server_options = ServerOptions {
        durability,
        password,
        bulk_max_bytes: settings.bulk_max,
        args_max: settings.args_max,
        max_clients: settings.max_clients,
        output_max_bytes: settings.output_max,
        dir: settings.dir.clone(),
        config_file: settings.config.clone(),
        io_threads: settings.io_threads,
        replica_of: settings.replica_of.clone(),
        max_retained_bytes: settings.max_retained_bytes,
        masterauth,
        snapshot_level: settings.snapshot_level,
        snapshot_bootstrap_bytes: settings.snapshot_bootstrap_bytes,
        max_staleness_ms: settings.max_staleness_ms,
        sync: settings.sync,
    };
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let server = Server::start(
        Keyspace::new(db, durability),
        listener,
        metrics,
        server_options,
    )
    .map_err(|e| e.to_string())?;
    tracing::info!(
        listen = %server.local_addr(),
        metrics = ?metrics_addr,
        durability = ?settings.durability,
        auth = settings.requirepass_file.is_some(),
        replica_of = ?settings.replica_of,
        "ready to accept connections"
    );

    let signal = signals
        .wait()
        .map_err(|e| format!("waiting for signals failed: {e}"))?;
    tracing::info!(?signal, "shutting down: finishing in-flight commands");
    server.shutdown().map_err(|e| e.to_string())?;
    tracing::info!("shut down cleanly: index checkpointed and log synced");
    Ok(())
}
