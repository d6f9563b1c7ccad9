//! `shiplogd`: the shiplog daemon. Recovers the data directory and serves it to Redis clients.

#![forbid(unsafe_code)]

#[path = "shiplogd/notify.rs"]
mod notify;

use std::net::TcpListener;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use nix::sys::signal::{SigSet, Signal};
use shiplog::engine::Db;
use shiplog::server::config::{ConfigError, LogFormat, Settings};
use shiplog::server::{Keyspace, Server, ServerOptions};
use shiplog::wal::SegmentStatus;

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
struct Cli {
    #[command(flatten)]
    settings: Settings,
    /// Print the completion script for this shell on stdout and exit.
    #[arg(long, value_enum, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    /// Print the man page (roff) on stdout and exit.
    #[arg(long)]
    man_page: bool,
}

/// `--completions` and `--man-page`: both are generated from the same declarations as
/// `--help`. Returns whether one was asked for.
fn print_packaging(cli: &Cli) -> std::io::Result<bool> {
    let mut out = std::io::stdout().lock();
    if let Some(shell) = cli.completions {
        clap_complete::generate(shell, &mut Cli::command(), "shiplogd", &mut out);
        return Ok(true);
    }
    if cli.man_page {
        clap_mangen::Man::new(Cli::command()).render(&mut out)?;
        return Ok(true);
    }
    Ok(false)
}

/// Installs the stderr logger: `--log-level` filter, `--log-format` lines.
fn init_logging(settings: &Settings) -> Result<(), String> {
    let level = settings.log_level();
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match settings.log_format() {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match print_packaging(&cli) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => {
            eprintln!("shiplogd: cannot write to stdout: {e}");
            return ExitCode::FAILURE;
        }
    }
    let settings = match Settings::layered(&matches).and_then(|s| init_logging(&s).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shiplogd: {e}");
            return ExitCode::from(2);
        }
    };
    let options = match settings.server_options() {
        Ok(options) => options,
        Err(ConfigError::PasswordFile(e)) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("shiplogd: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&settings, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
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

fn run(settings: &Settings, options: ServerOptions) -> Result<(), String> {
    // Signals are taken by one thread with sigwait; every other thread (all started after this
    // point) inherits the blocked mask, so no handler ever runs in signal context.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| format!("cannot block SIGTERM/SIGINT: {e}"))?;

    let listen = settings.listen();
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let metrics = settings
        .metrics_listen
        .as_deref()
        .map(|addr| {
            TcpListener::bind(addr).map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
        })
        .transpose()?;

    let started = std::time::Instant::now();
    let db = Db::open(&options.dir, settings.db_options())
        .map_err(|e| format!("cannot open {}: {e}", options.dir.display()))?;
    if options.replica_of.is_some() {
        // A replica's log is a copy of its primary's: no compaction, from the first moment
        // (the server keeps it so while the node follows a primary).
        db.set_compaction_hold(0);
    }
    report_torn_tails(&db);
    let stats = db.stats();
    tracing::info!(
        dir = %options.dir.display(),
        cluster = format!("{:032x}", db.wal().cluster_id()),
        keys = stats.live_keys,
        durable_lsn = stats.durable_lsn,
        segments = stats.segments,
        checkpoint = ?db.checkpoint_status(),
        elapsed_ms = started.elapsed().as_millis(),
        "store opened"
    );

    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let (durability, auth) = (options.durability, options.password.is_some());
    let replica_of = options.replica_of.clone();
    let server = Server::start(Keyspace::new(db, durability), listener, metrics, options)
        .map_err(|e| e.to_string())?;
    tracing::info!(
        listen = %server.local_addr(),
        metrics = ?metrics_addr,
        durability = ?durability,
        auth,
        replica_of = ?replica_of,
        "ready to accept connections"
    );
    notify::systemd("READY=1");

    let signal = signals
        .wait()
        .map_err(|e| format!("waiting for signals failed: {e}"))?;
    notify::systemd("STOPPING=1");
    tracing::info!(?signal, "shutting down: finishing in-flight commands");
    server.shutdown().map_err(|e| e.to_string())?;
    tracing::info!("shut down cleanly: index checkpointed and log synced");
    Ok(())
}
