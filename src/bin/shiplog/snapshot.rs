//! `shiplog snapshot create | verify | inspect | restore`: backups of a store as one
//! checksummed file (`docs/operations.md`, "Backups and snapshots"). Creating one from a
//! running daemon streams the daemon's reply to a temporary file beside the target, verifies it
//! whole, and only then renames it into place; nothing half-written ever has the target's name.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde::Serialize;
use shiplog::engine::{Db, DbError, DbOptions};
use shiplog::format::resp_reply::{Head, Reply};
use shiplog::format::snapshot::{
    SNAPSHOT_ENTRY_FIXED_BYTES, SNAPSHOT_HEADER_BYTES, SNAPSHOT_TRAILER_BYTES,
    SNAPSHOT_UNCOMPRESSED_MAX_BYTES, SnapshotHeader,
};
use shiplog::resp_conn::ConnError;
use shiplog::snapshot::{
    DEFAULT_LEVEL, SnapshotInfo, create_snapshot_file, read_header, restore_snapshot,
    verify_snapshot,
};
use shiplog::wal::WalError;

use super::print_json;
use super::resp_client::connect_with_auth;

/// Bound on connecting to a daemon and on its AUTH reply.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence accepted inside the snapshot's bytes once they flow.
const BODY_STALL_TIMEOUT: Duration = Duration::from_mins(1);
/// Largest snapshot a daemon may announce: the format's 1 TiB of state, plus zstd's worst-case
/// expansion (under 1/128 of it), header and trailer.
const DOWNLOAD_MAX_BYTES: u64 = SNAPSHOT_UNCOMPRESSED_MAX_BYTES
    + (SNAPSHOT_UNCOMPRESSED_MAX_BYTES >> 7)
    + (SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES) as u64;
/// Bytes copied per read while downloading.
const COPY_BUFFER_BYTES: usize = 1 << 20;
/// Plain progress lines (stderr not a terminal) come at most this often.
const PLAIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// zstd levels offered: 20 and above need a window beyond what readers accept (2^24).
const LEVEL_MAX: i64 = 19;

/// `shiplog snapshot ...`.
#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Write a snapshot of a store: of a stopped store's directory (`--dir`), or of a running
    /// shiplogd (`--from`), which sends its own.
    Create {
        /// The store's directory; no process may have it open (use --from for a running one).
        #[arg(long, required_unless_present = "from", conflicts_with = "from")]
        dir: Option<PathBuf>,
        /// A running shiplogd's client address: it takes the snapshot and sends it.
        #[arg(long, value_name = "HOST:PORT")]
        from: Option<String>,
        /// The snapshot file to write; it must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// zstd level, 1 to 19 (with --dir; a daemon uses its own).
        #[arg(long, default_value_t = DEFAULT_LEVEL, allow_negative_numbers = true,
              value_parser = clap::value_parser!(i32).range(1..=LEVEL_MAX))]
        level: i32,
        /// File whose first line is the password to AUTH with (as shiplogd's --requirepass-file).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Seconds to wait for the daemon to start sending (it writes the whole snapshot first).
        #[arg(long, default_value_t = 3600, value_name = "SECS")]
        wait_secs: u64,
    },
    /// Read a snapshot file whole and check everything; exit status 1 if it is damaged.
    Verify {
        /// The snapshot file.
        file: PathBuf,
    },
    /// Print a snapshot's header (cluster, LSN, epoch, keys, sizes); the rest is not read.
    Inspect {
        /// The snapshot file.
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot as a new store in a new or empty directory; nothing is left there
    /// unless the whole snapshot was good.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The new store's directory: absent or empty.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Runs one `shiplog snapshot` command.
pub fn run(command: SnapshotCommand) -> Result<ExitCode, String> {
    match command {
        SnapshotCommand::Create {
            dir: Some(dir),
            out,
            level,
            ..
        } => create_from_dir(&dir, &out, level),
        SnapshotCommand::Create {
            from: Some(from),
            out,
            password_file,
            wait_secs,
            ..
        } => create_from_server(
            &from,
            &out,
            password_file.as_deref(),
            Duration::from_secs(wait_secs),
        ),
        SnapshotCommand::Create { .. } => {
            Err("snapshot create needs --dir DIR (a stopped store) or --from HOST:PORT".to_owned())
        }
        SnapshotCommand::Verify { file } => verify(&file),
        SnapshotCommand::Inspect { file, json } => inspect(&file, json),
        SnapshotCommand::Restore { file, dir } => restore(&file, &dir),
    }
}

/// Shows how far a long operation is: a bar on a terminal, else a line at most once a second.
struct Progress {
    label: &'static str,
    total_bytes: u64,
    started: Instant,
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Progress {
    fn new(label: &'static str, total_bytes: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(
                "{msg:8} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .map_or_else(|_| ProgressStyle::default_bar(), |s| s.progress_chars("=> "));
            let bar = ProgressBar::new(total_bytes).with_style(style);
            bar.set_message(label);
            bar
        });
        let started = Instant::now();
        Self {
            label,
            total_bytes,
            started,
            bar,
            last_line: started,
        }
    }

    fn update(&mut self, done_bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done_bytes);
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last_line) < PLAIN_PROGRESS_INTERVAL {
            return;
        }
        self.last_line = now;
        let elapsed = now.duration_since(self.started);
        eprintln!(
            "shiplog snapshot {}: {}",
            self.label,
            progress_line(done_bytes, self.total_bytes, elapsed)
        );
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `12.00 MiB / 64.00 MiB (18%), 41.2 MiB/s, ETA 2 s`.
#[expect(clippy::cast_precision_loss, reason = "rates and shares for display")]
fn progress_line(done_bytes: u64, total_bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = done_bytes as f64 / secs;
    let percent = if total_bytes == 0 {
        100.0
    } else {
        done_bytes as f64 * 100.0 / total_bytes as f64
    };
    let eta = if rate > 0.0 {
        format!(
            "{:.0} s",
            total_bytes.saturating_sub(done_bytes) as f64 / rate
        )
    } else {
        "unknown".to_owned()
    };
    format!(
        "{} / {} ({percent:.0}%), {}, ETA {eta}",
        HumanBytes(done_bytes),
        HumanBytes(total_bytes),
        mib_per_sec(done_bytes, elapsed)
    )
}

#[expect(clippy::cast_precision_loss, reason = "a rate for display")]
fn mib_per_sec(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    format!("{:.1} MiB/s", bytes as f64 / secs / f64::from(1u32 << 20))
}

/// Removes its file when dropped, unless kept: a failed command leaves no partial file.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn beside(target: &Path, what: &str) -> Self {
        let name = target
            .file_name()
            .map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
        Self {
            path: target.with_file_name(format!(".{name}.{what}-{}", std::process::id())),
            keep: false,
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The output file must be new, in an existing directory: a backup never replaces another.
fn check_out(out: &Path) -> Result<(), String> {
    if out.exists() {
        return Err(format!(
            "{} already exists: choose a new file name (a snapshot never replaces a file)",
            out.display()
        ));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent
        && !parent.is_dir()
    {
        return Err(format!(
            "{} is not a directory: create it first, or choose another --out",
            parent.display()
        ));
    }
    Ok(())
}

/// `--dir` must hold a store: opening an empty or mistyped directory would create one.
fn check_store_dir(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the store directory {}: {e}; pass the directory shiplogd was run with \
             (--dir)",
            dir.display()
        )
    })?;
    let has_segment = entries
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().ends_with(".seg"));
    if !has_segment {
        return Err(format!(
            "{} holds no segment files: it is not a shiplog store; pass the directory shiplogd \
             was run with (--dir)",
            dir.display()
        ));
    }
    Ok(())
}

fn open_error(dir: &Path, error: &DbError) -> String {
    if matches!(error, DbError::Wal(WalError::Locked(_))) {
        format!(
            "{error}. A running shiplogd owns {}: take the snapshot through it instead, with \
             `shiplog snapshot create --from HOST:PORT --out FILE`",
            dir.display()
        )
    } else {
        format!("cannot open the store {}: {error}", dir.display())
    }
}

/// `shiplog snapshot create --dir DIR --out FILE`.
fn create_from_dir(dir: &Path, out: &Path, level: i32) -> Result<ExitCode, String> {
    check_store_dir(dir)?;
    check_out(out)?;
    let db = Db::open(dir, DbOptions::default()).map_err(|e| open_error(dir, &e))?;
    let started = Instant::now();
    let state = db
        .freeze()
        .map_err(|e| format!("cannot read the store {}: {e}", dir.display()))?;
    let total_bytes = state.live_bytes() + SNAPSHOT_ENTRY_FIXED_BYTES as u64 * state.key_count();
    let mut progress = Progress::new("create", total_bytes);
    let created = create_snapshot_file(&state, out, level, &mut |done| progress.update(done));
    progress.finish();
    let summary = created.map_err(|e| {
        format!(
            "writing the snapshot {} failed: {e}; nothing was kept",
            out.display()
        )
    })?;
    let elapsed = started.elapsed();
    drop(state);
    db.close()
        .map_err(|e| format!("closing the store {}: {e}", dir.display()))?;
    print_summary("created", out, &summary.header, summary.file_bytes);
    println!(
        "took      {:.2} s, {} of state (level {level})",
        elapsed.as_secs_f64(),
        mib_per_sec(summary.header.uncompressed_bytes, elapsed)
    );
    Ok(ExitCode::SUCCESS)
}

/// `shiplog snapshot create --from HOST:PORT --out FILE`.
fn create_from_server(
    target: &str,
    out: &Path,
    password_file: Option<&Path>,
    wait: Duration,
) -> Result<ExitCode, String> {
    check_out(out)?;
    let mut client = connect_with_auth(target, CONNECT_TIMEOUT, password_file)?;
    let started = Instant::now();
    let timeout = |e: ConnError| format!("cannot set a timeout: {e}");
    client.set_timeout(Some(wait)).map_err(timeout)?;
    let head = client
        .command_streamed(&[b"SHIPLOG.SNAPSHOT"], DOWNLOAD_MAX_BYTES)
        .map_err(|e| e.to_string())?;
    let len = match head {
        Head::Bulk(len) => len,
        Head::Other(Reply::Error(e)) if e.starts_with(b"NOAUTH") => {
            let e = String::from_utf8_lossy(e);
            return Err(format!(
                "{target} requires a password: pass --password-file ({e})"
            ));
        }
        Head::Other(Reply::Error(e)) => {
            let e = String::from_utf8_lossy(e);
            return Err(format!("{target} refused the snapshot: {e}"));
        }
        Head::Other(other) => {
            return Err(format!(
                "{target} answered SHIPLOG.SNAPSHOT with {}, not a snapshot: is it a \
                 shiplogd of this version?",
                other.describe()
            ));
        }
    };
    client
        .set_timeout(Some(BODY_STALL_TIMEOUT))
        .map_err(timeout)?;
    let mut temp = TempFile::beside(out, "download");
    download(&mut client.into_body(), len, &temp.path, target)?;
    let mut progress = Progress::new("verify", len);
    let verified = verify_snapshot(&temp.path, &mut |done| progress.update(done));
    progress.finish();
    let info = verified.map_err(|e| {
        format!(
            "the snapshot {target} sent is damaged: {e}. Nothing was kept; take it again, and if \
             it fails again run `shiplog verify` on that node's store"
        )
    })?;
    std::fs::rename(&temp.path, out)
        .map_err(|e| format!("cannot rename the snapshot into {}: {e}", out.display()))?;
    temp.keep = true;
    sync_parent(out)?;
    print_summary("created", out, &info.header, info.file_bytes);
    println!(
        "took      {:.2} s from {target}, {} of state",
        started.elapsed().as_secs_f64(),
        mib_per_sec(info.header.uncompressed_bytes, started.elapsed())
    );
    Ok(ExitCode::SUCCESS)
}

/// Copies the `len` bytes of a bulk reply and its CRLF from `body` into a new file at `path`,
/// synced.
fn download(body: &mut dyn Read, len: u64, path: &Path, target: &str) -> Result<(), String> {
    let write_error = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(write_error)?;
    let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
    let mut progress = Progress::new("download", len);
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).map_or(buffer.len(), |r| r.min(buffer.len()));
        let n = match body.read(&mut buffer[..want]) {
            Ok(0) => {
                progress.finish();
                return Err(format!(
                    "{target} closed the connection after {done} of the snapshot's {len} bytes; \
                     nothing was kept, take it again"
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                progress.finish();
                return Err(format!(
                    "reading the snapshot from {target} failed after {done} of {len} bytes: \
                     {e}; nothing was kept, take it again"
                ));
            }
        };
        file.write_all(&buffer[..n]).map_err(write_error)?;
        done += n as u64;
        progress.update(done);
    }
    progress.finish();
    let mut crlf = [0u8; 2];
    body.read_exact(&mut crlf).map_err(|e| {
        format!("{target} did not end the snapshot reply: {e}; nothing was kept, take it again")
    })?;
    if crlf != *b"\r\n" {
        return Err(format!(
            "{target}'s snapshot reply is not a RESP bulk string (no CRLF after its {len} bytes); \
             nothing was kept"
        ));
    }
    file.sync_all().map_err(write_error)
}

fn sync_parent(path: &Path) -> Result<(), String> {
    // IMPORTANT: sync the directory after the rename, or the new name may vanish at power loss.
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync directory {}: {e}", parent.display()))
}

fn file_bytes(file: &Path) -> Result<u64, String> {
    std::fs::metadata(file)
        .map(|m| m.len())
        .map_err(|e| format!("cannot read {}: {e}", file.display()))
}

#[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
fn print_summary(what: &str, file: &Path, header: &SnapshotHeader, file_bytes: u64) {
    println!("{what:<9} {}", file.display());
    println!("cluster   {:032x}", header.cluster_id);
    println!("LSN       {}   epoch {}", header.lsn, header.epoch);
    println!("keys      {}", header.key_count);
    println!(
        "state     {} uncompressed ({} bytes)",
        HumanBytes(header.uncompressed_bytes),
        header.uncompressed_bytes
    );
    let ratio = header.uncompressed_bytes as f64 / file_bytes.max(1) as f64;
    println!(
        "file      {} ({file_bytes} bytes), compression ratio {ratio:.2}",
        HumanBytes(file_bytes)
    );
}

/// `shiplog snapshot verify FILE`.
fn verify(file: &Path) -> Result<ExitCode, String> {
    let total_bytes = file_bytes(file)?;
    let started = Instant::now();
    let mut progress = Progress::new("verify", total_bytes);
    let verified = verify_snapshot(file, &mut |done| progress.update(done));
    progress.finish();
    let info: SnapshotInfo = verified.map_err(|e| format!("{}: {e}", file.display()))?;
    print_summary("verified", file, &info.header, info.file_bytes);
    println!(
        "checksum  {:#010x} ok; took {:.2} s, {}",
        info.crc,
        started.elapsed().as_secs_f64(),
        mib_per_sec(info.file_bytes, started.elapsed())
    );
    Ok(ExitCode::SUCCESS)
}

/// `shiplog snapshot inspect FILE --json`.
#[derive(Serialize)]
struct InspectJson {
    file: String,
    cluster_id: String,
    lsn: u64,
    epoch: u32,
    key_count: u64,
    uncompressed_bytes: u64,
    file_bytes: u64,
    /// Always false: only the header was read (`snapshot verify` reads the whole file).
    verified: bool,
}

/// `shiplog snapshot inspect FILE`: the header only.
fn inspect(file: &Path, json: bool) -> Result<ExitCode, String> {
    let mut source =
        File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let header = read_header(&mut source).map_err(|e| format!("{}: {e}", file.display()))?;
    let bytes = file_bytes(file)?;
    if json {
        print_json(&InspectJson {
            file: file.display().to_string(),
            cluster_id: format!("{:032x}", header.cluster_id),
            lsn: header.lsn,
            epoch: header.epoch,
            key_count: header.key_count,
            uncompressed_bytes: header.uncompressed_bytes,
            file_bytes: bytes,
            verified: false,
        })?;
    } else {
        print_summary("snapshot", file, &header, bytes);
        println!(
            "note      the header only was read and checked; `shiplog snapshot verify {}` reads \
             and checks the whole file",
            file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `shiplog snapshot restore FILE --dir DIR`.
fn restore(file: &Path, dir: &Path) -> Result<ExitCode, String> {
    let total_bytes = file_bytes(file)?;
    let started = Instant::now();
    let mut progress = Progress::new("restore", total_bytes);
    let restored = restore_snapshot(file, dir, &mut |done| progress.update(done));
    progress.finish();
    let info = restored.map_err(|e| {
        format!(
            "restoring {} into {}: {e}; {} was left as it was",
            file.display(),
            dir.display(),
            dir.display()
        )
    })?;
    print_summary("restored", file, &info.header, info.file_bytes);
    println!(
        "into      {} (took {:.2} s, {} of state); start it with `shiplogd --dir {}`",
        dir.display(),
        started.elapsed().as_secs_f64(),
        mib_per_sec(info.header.uncompressed_bytes, started.elapsed()),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_progress_line_has_bytes_rate_and_eta() {
        let line = progress_line(32 << 20, 128 << 20, Duration::from_secs(2));
        assert_eq!(line, "32.00 MiB / 128.00 MiB (25%), 16.0 MiB/s, ETA 6 s");
        assert!(progress_line(0, 0, Duration::ZERO).contains("ETA unknown"));
    }
}
