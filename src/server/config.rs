//! The `shiplogd` configuration file: TOML, the same names as the command-line flags. Flags and
//! environment variables override the file; the file overrides the defaults.

use std::path::PathBuf;

use serde::Deserialize;

/// Largest config file read: a config is a few lines, anything bigger is a mistake.
pub const CONFIG_MAX_BYTES: usize = 1 << 20;

/// Every setting a config file may hold; each is optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub dir: Option<PathBuf>,
    /// Client address, `HOST:PORT`.
    pub listen: Option<String>,
    /// `sync` or `buffered`.
    pub durability: Option<String>,
    /// File holding the password clients must `AUTH` with.
    pub requirepass_file: Option<PathBuf>,
    /// Most client connections.
    pub max_clients: Option<usize>,
    /// Largest bulk string, in bytes.
    pub proto_max_bulk_len: Option<usize>,
    /// Most arguments in one command.
    pub max_args: Option<usize>,
    /// Largest reply one command may build, in bytes.
    pub client_output_limit: Option<usize>,
    /// Prometheus endpoint address, `HOST:PORT`.
    pub metrics_listen: Option<String>,
    /// Log filter (`info`, `debug`, `shiplog=trace`...).
    pub log_level: Option<String>,
    /// Segment rotation size, in bytes.
    pub segment_bytes: Option<u64>,
    /// Background sync interval for buffered writes, in milliseconds.
    pub flush_interval_ms: Option<u64>,
    /// Event-loop threads.
    pub io_threads: Option<usize>,
    /// Zero-fill new segment files.
    pub zero_fill_segments: Option<bool>,
    /// The primary to follow, `HOST:PORT`.
    pub replica_of: Option<String>,
    /// Most bytes of log kept for one lagging replica.
    pub max_retained_bytes: Option<u64>,
    /// File holding the primary's password, for a replica.
    pub masterauth_file: Option<PathBuf>,
    /// zstd level of bootstrap snapshots.
    pub snapshot_level: Option<i32>,
    /// Log size past which an empty replica is bootstrapped from a snapshot.
    pub snapshot_bootstrap_bytes: Option<u64>,
    /// On a replica, the staleness past which reads are refused, in milliseconds.
    pub max_staleness_ms: Option<u64>,
    /// Replicas that must acknowledge a write before it is answered (0: none).
    pub sync_replicas: Option<u32>,
    /// What they acknowledge: `replicated` (durable) or `applied` (durable and visible).
    pub sync_level: Option<String>,
    /// How long a write waits for its acknowledgements, in milliseconds.
    pub sync_timeout_ms: Option<u64>,
    /// `fail` (answer `-NOREPLICAS`) or `async` (answer OK and warn) when they do not come.
    pub sync_fallback: Option<String>,
}

/// Why a config file was rejected.
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
}

/// Reads a password file (`--requirepass-file`, `--masterauth-file`): its first line, without
/// a trailing `\r`.
///
/// # Errors
/// An unreadable file, or an empty first line; the message names the file.
pub fn read_password_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
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

/// Parses a config file's bytes.
///
/// # Errors
/// Oversized, non-UTF-8 or invalid TOML, unknown settings, wrongly typed values.
pub fn parse_config(bytes: &[u8]) -> Result<FileConfig, ConfigError> {
    if bytes.len() > CONFIG_MAX_BYTES {
        return Err(ConfigError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotText)?;
    toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string().trim_end().to_owned()))
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
        assert_eq!(sync.sync_level.as_deref(), Some("applied"));
        assert_eq!(sync.sync_timeout_ms, Some(250));
        assert_eq!(sync.sync_fallback.as_deref(), Some("async"));
    }
}
