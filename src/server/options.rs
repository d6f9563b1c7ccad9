//! How the server runs: [`ServerOptions`] and its defaults.

use std::path::PathBuf;

use super::acks;
use crate::wal::Durability;

/// Default client port (Redis' 6379 plus one, so both can run side by side).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6380";
/// Default largest bulk string a client may send (Redis' `proto-max-bulk-len`).
pub const DEFAULT_BULK_MAX_BYTES: usize = 512 << 20;
/// Default most arguments in one command.
pub const DEFAULT_ARGS_MAX: usize = 1 << 20;
/// Default most client connections at once.
pub const DEFAULT_MAX_CLIENTS: usize = 4096;
/// Default largest reply one command may build before the connection is closed.
pub const DEFAULT_OUTPUT_MAX_BYTES: usize = 1 << 30;
/// Default number of event-loop threads.
pub const DEFAULT_IO_THREADS: usize = 1;

/// Default most bytes of log kept for one lagging replica (4 GiB).
pub const DEFAULT_MAX_RETAINED_BYTES: u64 = 4 << 30;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Durability a write reaches before it is answered (`Sync` or `Buffered`).
    pub durability: Durability,
    /// Password clients must send with `AUTH` (none: no authentication).
    pub password: Option<Vec<u8>>,
    /// Largest bulk string a client may send.
    pub bulk_max_bytes: usize,
    /// Most arguments in one command.
    pub args_max: usize,
    /// Most client connections at once.
    pub max_clients: usize,
    /// Largest reply one command may build.
    pub output_max_bytes: usize,
    /// The data directory, for `INFO`.
    pub dir: PathBuf,
    /// The config file, for `INFO`.
    pub config_file: Option<PathBuf>,
    /// Event-loop threads serving connections.
    pub io_threads: usize,
    /// The primary to follow at start (`HOST:PORT`): this node starts as a read-only replica.
    pub replica_of: Option<String>,
    /// Most bytes of log kept for one lagging replica before its retention slot is dropped.
    pub max_retained_bytes: u64,
    /// The password this node proves it knows to its primary (`--masterauth-file`).
    pub masterauth: Option<Vec<u8>>,
    /// zstd level of the snapshots built to bootstrap replicas.
    pub snapshot_level: i32,
    /// An empty replica gets a snapshot instead of the log when the log is larger than this.
    pub snapshot_bootstrap_bytes: u64,
    /// On a replica: reads are refused with `-STALE` while it is further behind its primary
    /// than this many milliseconds (`None`: never).
    pub max_staleness_ms: Option<u64>,
    /// Acknowledgement level, timeout and fallback of writes (`--sync-*`).
    pub sync: acks::SyncOptions,
}

/// Default of [`ServerOptions::snapshot_bootstrap_bytes`]: 64 MiB, one segment.
pub const DEFAULT_SNAPSHOT_BOOTSTRAP_BYTES: u64 = 64 << 20;

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            password: None,
            bulk_max_bytes: DEFAULT_BULK_MAX_BYTES,
            args_max: DEFAULT_ARGS_MAX,
            max_clients: DEFAULT_MAX_CLIENTS,
            output_max_bytes: DEFAULT_OUTPUT_MAX_BYTES,
            dir: PathBuf::new(),
            config_file: None,
            io_threads: DEFAULT_IO_THREADS,
            replica_of: None,
            max_retained_bytes: DEFAULT_MAX_RETAINED_BYTES,
            masterauth: None,
            snapshot_level: crate::snapshot::DEFAULT_LEVEL,
            snapshot_bootstrap_bytes: DEFAULT_SNAPSHOT_BOOTSTRAP_BYTES,
            max_staleness_ms: None,
            sync: acks::SyncOptions::default(),
        }
    }
}
