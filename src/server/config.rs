//! Every `shiplogd` setting, declared once in [`Settings`]: each field is a command-line flag
//! (`--max-clients`), an environment variable (`SHIPLOG_MAX_CLIENTS`) and a key of the TOML
//! file named by `--config` (`max-clients = 100`), and its doc comment, which `--help`, the man
//! page and the shell completions show, gives its default and its range.
//!
//! Layers, strongest first: flags, then the environment, then the file, then the defaults.
//! Clap reads the first two; [`Settings::layered`] puts them over the file; the conversions
//! ([`Settings::server_options`], [`Settings::db_options`] and the accessors) fill in the
//! defaults, which are the library's own (`ServerOptions::default()`, `wal::Options::default()`),
//! so an embedder and the daemon start from the same values.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ServerOptions;
use super::acks::{AckLevel, SYNC_REPLICAS_MAX, SyncFallback, SyncOptions};
use crate::engine::DbOptions;
use crate::wal::Durability;

/// Largest config file read: a config is a few lines, anything bigger is a mistake.
pub const CONFIG_MAX_BYTES: usize = 1 << 20;
/// Default of [`Settings::dir`].
pub const DEFAULT_DIR: &str = "./shiplog-data";
/// Default of [`Settings::log_level`].
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Every `shiplogd` setting; each is optional, and an absent one takes its default.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// TOML config file: the settings below, named like their flags without the dashes in front
    /// (`max-clients = 100`) [default: none].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_CONFIG"))]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Data directory, created if missing [default: ./shiplog-data].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_DIR"))]
    pub dir: Option<PathBuf>,
    /// Address for Redis clients, HOST:PORT [default: 127.0.0.1:6380].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_LISTEN"))]
    pub listen: Option<String>,
    /// When a write is acknowledged [default: sync].
    #[cfg_attr(feature = "cli", arg(long, value_enum, env = "SHIPLOG_DURABILITY"))]
    pub durability: Option<DurabilitySetting>,
    /// File holding the password clients must send with AUTH (first line) [default: none, no
    /// AUTH].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_REQUIREPASS_FILE"))]
    pub requirepass_file: Option<PathBuf>,
    /// Most client connections at once [default: 4096].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_MAX_CLIENTS"))]
    pub max_clients: Option<usize>,
    /// Largest bulk string (key or value) a client may send, in bytes [default: 536870912].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_PROTO_MAX_BULK_LEN"))]
    pub proto_max_bulk_len: Option<usize>,
    /// Most arguments in one command [default: 1048576].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_MAX_ARGS"))]
    pub max_args: Option<usize>,
    /// Largest reply one command may build before its connection is closed, in bytes
    /// [default: 1073741824].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_CLIENT_OUTPUT_LIMIT"))]
    pub client_output_limit: Option<usize>,
    /// Address of the Prometheus metrics endpoint (GET /metrics), HOST:PORT [default: none,
    /// off].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_METRICS_LISTEN"))]
    pub metrics_listen: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or per-module directives such as
    /// shiplog=debug [default: info].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_LOG_LEVEL"))]
    pub log_level: Option<String>,
    /// How each log line on stderr is written [default: text].
    #[cfg_attr(feature = "cli", arg(long, value_enum, env = "SHIPLOG_LOG_FORMAT"))]
    pub log_format: Option<LogFormat>,
    /// Segment rotation size in bytes, at least 4096 [default: 67108864].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_SEGMENT_BYTES"))]
    pub segment_bytes: Option<u64>,
    /// Background sync interval for buffered writes, in milliseconds, 1 to 60000 [default: 5].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_FLUSH_INTERVAL_MS"))]
    pub flush_interval_ms: Option<u64>,
    /// Write zeros over new segment files instead of only reserving their space: costs a
    /// second write of every segment, saves ext4 the conversion of unwritten extents at each
    /// sync [default: false].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_ZERO_FILL_SEGMENTS"))]
    pub zero_fill_segments: Option<bool>,
    /// Event-loop threads serving client connections, at least 1 [default: 1].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_IO_THREADS"))]
    pub io_threads: Option<usize>,
    /// Follow this primary (HOST:PORT) as a read-only replica: receive its log, apply it and
    /// serve reads; `REPLICAOF` changes it at run time [default: none, a primary].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_REPLICA_OF"))]
    pub replica_of: Option<String>,
    /// Most bytes of log a primary keeps for one lagging replica; past it the replica's
    /// retention slot is dropped (it will need a snapshot) [default: 4294967296].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_MAX_RETAINED_BYTES"))]
    pub max_retained_bytes: Option<u64>,
    /// File holding the primary's password (first line): a replica proves it knows it by
    /// challenge–response, never sending it [default: none].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_MASTERAUTH_FILE"))]
    pub masterauth_file: Option<PathBuf>,
    /// zstd level of the snapshots this node builds to bootstrap replicas, 1 to 19 [default:
    /// 1].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_SNAPSHOT_LEVEL"))]
    pub snapshot_level: Option<i32>,
    /// An empty replica is bootstrapped from a snapshot, instead of being sent the whole log,
    /// when the log is larger than this many bytes [default: 67108864].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_SNAPSHOT_BOOTSTRAP_BYTES"))]
    pub snapshot_bootstrap_bytes: Option<u64>,
    /// On a replica: answer reads with `-STALE` while this node is more than this many
    /// milliseconds behind its primary (bounded staleness) [default: none, no bound].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_MAX_STALENESS_MS"))]
    pub max_staleness_ms: Option<u64>,
    /// On a primary: a write is answered only once this many replicas acknowledged it (see
    /// --sync-level); 0 answers once it is durable here; 0 to 64 [default: 0].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_SYNC_REPLICAS"))]
    pub sync_replicas: Option<u32>,
    /// What --sync-replicas replicas acknowledge [default: replicated].
    #[cfg_attr(feature = "cli", arg(long, value_enum, env = "SHIPLOG_SYNC_LEVEL"))]
    pub sync_level: Option<SyncLevel>,
    /// How long a write waits for its replica acknowledgements before it is answered
    /// `-NOREPLICAS` (it is durable here: its outcome is unknown), in milliseconds, at least 1
    /// [default: 5000].
    #[cfg_attr(feature = "cli", arg(long, env = "SHIPLOG_SYNC_TIMEOUT_MS"))]
    pub sync_timeout_ms: Option<u64>,
    /// What a write whose acknowledgements did not come in time is answered [default: fail].
    #[cfg_attr(feature = "cli", arg(long, value_enum, env = "SHIPLOG_SYNC_FALLBACK"))]
    pub sync_fallback: Option<SyncFallback>,
}

/// When a write is acknowledged (`--durability`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum DurabilitySetting {
    /// After fdatasync: survives power loss (group commit shares one sync among all clients).
    #[default]
    Sync,
    /// After the write reaches the OS: survives a crash of shiplogd, and a power loss loses at
    /// most the last flush interval.
    Buffered,
}

impl From<DurabilitySetting> for Durability {
    fn from(setting: DurabilitySetting) -> Self {
        match setting {
            DurabilitySetting::Sync => Self::Sync,
            DurabilitySetting::Buffered => Self::Buffered,
        }
    }
}

/// What replicas acknowledge under `--sync-replicas` (`--sync-level`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SyncLevel {
    /// Durable on the replica.
    #[default]
    Replicated,
    /// Durable and visible to the replica's readers (`PostgreSQL`'s `remote_apply`).
    Applied,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One line per event: timestamp, level, message, then the fields as key=value.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, fields, target), for log collectors.
    Json,
}

/// Why a config file or a setting was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Larger than [`CONFIG_MAX_BYTES`].
    #[error("config file of {0} bytes is larger than the 1 MiB limit")]
    TooLarge(usize),
    /// Not UTF-8 text.
    #[error("config file is not UTF-8 text")]
    NotText,
    /// Not valid TOML, an unknown setting, or a value of the wrong type.
    #[error("{0}")]
    Invalid(String),
    /// A value outside its setting's range.
    #[error("{setting} must be {range}, not {value}")]
    OutOfRange {
        /// The setting, named as in the file.
        setting: &'static str,
        /// What it must be.
        range: &'static str,
        /// What it was.
        value: u64,
    },
    /// A password file that cannot be used; the message names it.
    #[error("{0}")]
    PasswordFile(String),
}

impl Settings {
    /// The settings of the command line and the environment (`matches`) over those of the
    /// file they name with `--config`, if any.
    ///
    /// # Errors
    /// An unreadable or invalid config file, with its path in the message.
    #[cfg(feature = "cli")]
    pub fn layered(matches: &clap::ArgMatches) -> Result<Self, String> {
        use clap::FromArgMatches as _;
        let given = Self::from_arg_matches(matches).map_err(|e| e.to_string())?;
        let mut settings = match &given.config {
            Some(path) => read_config(path)?,
            None => Self::default(),
        };
        // Only the arguments clap found (a flag or an environment variable) replace the file's.
        settings
            .update_from_arg_matches(matches)
            .map_err(|e| e.to_string())?;
        Ok(settings)
    }

    /// The data directory.
    #[must_use]
    pub fn dir(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
    }

    /// The client address, `HOST:PORT`.
    #[must_use]
    pub fn listen(&self) -> &str {
        self.listen.as_deref().unwrap_or(super::DEFAULT_LISTEN)
    }

    /// The log filter.
    #[must_use]
    pub fn log_level(&self) -> &str {
        self.log_level.as_deref().unwrap_or(DEFAULT_LOG_LEVEL)
    }

    /// The log line format.
    #[must_use]
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or_default()
    }

    /// The durability of writes.
    #[must_use]
    pub fn durability(&self) -> Durability {
        self.durability.unwrap_or_default().into()
    }

    /// The store's options: the log's settings over the library's defaults.
    #[must_use]
    pub fn db_options(&self) -> DbOptions {
        let defaults = DbOptions::default();
        let wal = defaults.wal.clone();
        DbOptions {
            wal: crate::wal::Options {
                segment_bytes: self.segment_bytes.unwrap_or(wal.segment_bytes),
                flush_interval_ms: self.flush_interval_ms.unwrap_or(wal.flush_interval_ms),
                zero_fill_segments: self.zero_fill_segments.unwrap_or(wal.zero_fill_segments),
                ..wal
            },
            durability: self.durability(),
            ..defaults
        }
    }

    /// The server's options: these settings over [`ServerOptions::default`], the password
    /// files read.
    ///
    /// # Errors
    /// A setting out of its range, an unreadable or empty password file.
    pub fn server_options(&self) -> Result<ServerOptions, ConfigError> {
        let defaults = ServerOptions::default();
        Ok(ServerOptions {
            durability: self.durability(),
            password: read_secret(self.requirepass_file.as_deref())?,
            bulk_max_bytes: self.proto_max_bulk_len.unwrap_or(defaults.bulk_max_bytes),
            args_max: self.max_args.unwrap_or(defaults.args_max),
            max_clients: self.max_clients.unwrap_or(defaults.max_clients),
            output_max_bytes: self
                .client_output_limit
                .unwrap_or(defaults.output_max_bytes),
            dir: self.dir(),
            config_file: self.config.clone(),
            io_threads: self.io_threads.unwrap_or(defaults.io_threads),
            replica_of: self.replica_of.clone(),
            max_retained_bytes: self
                .max_retained_bytes
                .unwrap_or(defaults.max_retained_bytes),
            masterauth: read_secret(self.masterauth_file.as_deref())?,
            snapshot_level: self.snapshot_level.unwrap_or(defaults.snapshot_level),
            snapshot_bootstrap_bytes: self
                .snapshot_bootstrap_bytes
                .unwrap_or(defaults.snapshot_bootstrap_bytes),
            max_staleness_ms: self.max_staleness_ms.or(defaults.max_staleness_ms),
            sync: self.sync_options(defaults.sync)?,
        })
    }

    /// The `--sync-*` settings over `defaults`.
    fn sync_options(&self, defaults: SyncOptions) -> Result<SyncOptions, ConfigError> {
        let replicas = self.sync_replicas.unwrap_or(0);
        if replicas > SYNC_REPLICAS_MAX {
            return Err(ConfigError::OutOfRange {
                setting: "sync-replicas",
                range: "at most 64",
                value: u64::from(replicas),
            });
        }
        let timeout_ms = self.sync_timeout_ms.unwrap_or(defaults.timeout_ms);
        if timeout_ms == 0 {
            return Err(ConfigError::OutOfRange {
                setting: "sync-timeout-ms",
                range: "at least 1 (a write never waits forever)",
                value: timeout_ms,
            });
        }
        let applied = self.sync_level.unwrap_or_default() == SyncLevel::Applied;
        Ok(SyncOptions {
            level: AckLevel::from_setting(replicas, applied),
            timeout_ms,
            fallback: self.sync_fallback.unwrap_or(defaults.fallback),
        })
    }
}

/// Reads a password file, warning when every user may read it; `None` for no file.
fn read_secret(path: Option<&Path>) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let password = read_password_file(path).map_err(ConfigError::PasswordFile)?;
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(file = %path.display(), "the password file is readable by every user: chmod 600 it");
        }
    }
    Ok(Some(password))
}

/// Reads a password file (`--requirepass-file`, `--masterauth-file`): its first line, without
/// a trailing `\r`.
///
/// # Errors
/// An unreadable file, or an empty first line; the message names the file.
pub fn read_password_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let password = first.strip_suffix(b"\r").unwrap_or(first);
    if password.is_empty() {
        return Err(format!(
            "the password file {} is empty: put the password on its first line",
            path.display()
        ));
    }
    Ok(password.to_vec())
}

/// Reads and parses the config file at `path`.
///
/// # Errors
/// An unreadable or invalid file; the message names it.
pub fn read_config(path: &Path) -> Result<Settings, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    parse_config(&bytes).map_err(|e| format!("config file {}: {e}", path.display()))
}

/// Parses a config file's bytes.
///
/// # Errors
/// Oversized, non-UTF-8 or invalid TOML, unknown settings, wrongly typed values.
pub fn parse_config(bytes: &[u8]) -> Result<Settings, ConfigError> {
    if bytes.len() > CONFIG_MAX_BYTES {
        return Err(ConfigError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotText)?;
    toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string().trim_end().to_owned()))
}

/// The keys a config file may hold, in declaration order: those serde's derive of
/// [`Settings`] accepts.
#[must_use]
pub fn keys() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    // The derive hands its field names to `deserialize_struct`; the answer is thrown away.
    let _ = Settings::deserialize(FieldNames(&mut keys));
    keys
}

/// A deserializer that only records the field names of the struct asked of it.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only structs are introspected"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_mistakes() {
        let config = parse_config(b"dir = \"/var/lib/shiplog\"\nmax-clients = 10\n").unwrap();
        assert_eq!(config.dir, Some(PathBuf::from("/var/lib/shiplog")));
        assert_eq!(config.max_clients, Some(10));
        let unknown = parse_config(b"maxclients = 10\n").unwrap_err().to_string();
        assert!(unknown.contains("maxclients"), "{unknown}");
        assert!(parse_config(b"max-clients = \"ten\"\n").is_err());
        assert_eq!(parse_config(b"\xff"), Err(ConfigError::NotText));
        let sync = parse_config(
            b"sync-replicas = 1\nsync-level = \"applied\"\nsync-timeout-ms = 250\nsync-fallback = \"async\"\n",
        )
        .unwrap();
        assert_eq!(sync.sync_replicas, Some(1));
        assert_eq!(sync.sync_level, Some(SyncLevel::Applied));
        assert_eq!(sync.sync_timeout_ms, Some(250));
        assert_eq!(sync.sync_fallback, Some(SyncFallback::Async));
        let options = sync.server_options().unwrap();
        assert_eq!(options.sync.level, AckLevel::Applied(1));
        assert_eq!(options.sync.timeout_ms, 250);
    }

    #[test]
    fn enum_values_are_named_and_a_wrong_one_is_refused_with_the_choices() {
        let config = parse_config(b"durability = \"buffered\"\nlog-format = \"json\"\n").unwrap();
        assert_eq!(config.durability(), Durability::Buffered);
        assert_eq!(config.log_format(), LogFormat::Json);
        let wrong = parse_config(b"durability = \"fast\"\n")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("fast"), "{wrong}");
        assert!(wrong.contains("buffered"), "{wrong}");
        assert!(parse_config(b"config = \"/etc/other.toml\"\n").is_err());
    }

    #[test]
    fn absent_settings_take_the_library_defaults() {
        let settings = Settings::default();
        let options = settings.server_options().unwrap();
        let defaults = ServerOptions::default();
        assert_eq!(options.max_clients, defaults.max_clients);
        assert_eq!(options.bulk_max_bytes, defaults.bulk_max_bytes);
        assert_eq!(options.sync, defaults.sync);
        assert_eq!(options.dir, PathBuf::from(DEFAULT_DIR));
        assert_eq!(settings.listen(), super::super::DEFAULT_LISTEN);
        let (wal, defaults) = (settings.db_options().wal, crate::wal::Options::default());
        assert_eq!(wal.segment_bytes, defaults.segment_bytes);
        assert_eq!(wal.flush_interval_ms, defaults.flush_interval_ms);
        assert_eq!(wal.zero_fill_segments, defaults.zero_fill_segments);
        assert_eq!(settings.log_format(), LogFormat::Text);
    }

    #[test]
    fn ranges_are_checked() {
        let too_many = Settings {
            sync_replicas: Some(65),
            ..Settings::default()
        };
        let err = too_many.server_options().unwrap_err().to_string();
        assert_eq!(err, "sync-replicas must be at most 64, not 65");
        let never = Settings {
            sync_timeout_ms: Some(0),
            ..Settings::default()
        };
        assert!(never.server_options().is_err());
    }

    /// Everything the daemon takes from `settings`, as text to compare.
    #[cfg(feature = "cli")]
    fn resolved(settings: &Settings) -> String {
        format!(
            "{:?} {:?} {} {} {:?}",
            settings.server_options().unwrap(),
            settings.db_options(),
            settings.listen(),
            settings.log_level(),
            settings.log_format()
        )
    }

    /// Each doc comment states a default, and giving that value explicitly changes nothing:
    /// `--help`, the man page and `docs/operations.md` do not drift from the code.
    #[cfg(feature = "cli")]
    #[test]
    fn the_documented_defaults_are_the_defaults() {
        use clap::{Args as _, FromArgMatches as _};
        let command = Settings::augment_args(clap::Command::new("shiplogd"));
        let baseline = resolved(&Settings::default());
        let mut checked = 0;
        for arg in command.get_arguments() {
            let long = arg.get_long().unwrap();
            let help = arg.get_help().unwrap().to_string();
            let default = help
                .split("[default: ")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .unwrap_or_else(|| panic!("--{long} documents no default: {help}"));
            if default.starts_with("none") {
                continue;
            }
            let flag = format!("--{long}");
            let matches = command
                .clone()
                .try_get_matches_from(["shiplogd", flag.as_str(), default])
                .unwrap();
            let settings = Settings::from_arg_matches(&matches).unwrap();
            assert_eq!(
                resolved(&settings),
                baseline,
                "--{long}: the documented default {default} is not the default"
            );
            checked += 1;
        }
        assert!(checked >= 20, "{checked} defaults checked");
    }

    #[test]
    fn keys_are_the_field_names_in_kebab_case() {
        let keys = keys();
        assert_eq!(keys.first(), Some(&"dir"));
        assert!(keys.contains(&"max-clients"));
        assert!(keys.contains(&"sync-fallback"));
        assert!(!keys.contains(&"config"), "--config is a flag only");
    }
}
