//! The Redis-protocol front end: a listener, one thread per client connection, and the state
//! they share. Writes are staged in the log as commands arrive and answered once durable, so
//! every connection's writes (and every pipeline's) share group-commit syncs.

pub mod acks;
pub mod commands;
pub mod config;
mod connection;
mod cursors;
mod error;
mod event_loop;
mod failover;
pub mod glob;
mod info;
pub mod keyspace;
pub mod metrics;
mod replication;
mod session;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use error::ServerError;
pub use keyspace::Keyspace;

use crate::engine::DbError;
use crate::sync::MutexExt;
use crate::wal::Durability;
use cursors::Cursors;
use metrics::Metrics;

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

/// Read-path counters for `INFO stats`.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// `GET`s that found their key.
    pub hits: AtomicU64,
    /// `GET`s that did not.
    pub misses: AtomicU64,
}

/// A connected client, as `CLIENT LIST` shows it and shutdown reaches it.
#[derive(Debug)]
struct Client {
    addr: SocketAddr,
    connected_at: Instant,
    name: Option<Vec<u8>>,
}

/// State shared by every connection thread.
#[derive(Debug)]
pub struct Shared {
    /// The keys.
    pub keyspace: Keyspace,
    /// Settings.
    pub options: ServerOptions,
    /// Per-command counters.
    pub metrics: Metrics,
    /// Read counters.
    pub stats: ReadStats,
    /// Unix time of the last index checkpoint (`LASTSAVE`).
    pub last_save: AtomicU64,
    cursors: Cursors,
    clients: Mutex<HashMap<u64, Client>>,
    next_client_id: AtomicU64,
    shutting_down: AtomicBool,
    checkpoint_running: AtomicBool,
    started: Instant,
    listen: SocketAddr,
    /// Role, replicas and the link to a primary.
    replication: replication::Replication,
    /// Wakes writers waiting for replica acknowledgements; counts timeouts and fallbacks.
    pub acks: Arc<acks::AckGate>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Shared {
    /// Connections open now.
    #[must_use]
    pub fn client_count(&self) -> usize {
        self.clients.locked().len()
    }

    /// Whether shutdown has begun.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    fn forget_client(&self, id: u64) {
        self.clients.locked().remove(&id);
        self.cursors.client_closed(id);
    }

    fn rename_client(&self, id: u64, name: Option<Vec<u8>>) {
        if let Some(client) = self.clients.locked().get_mut(&id) {
            client.name = name;
        }
    }

    /// `CLIENT LIST` lines (of one client, for `CLIENT INFO`).
    fn describe_clients(&self, only: Option<u64>) -> String {
        let clients = self.clients.locked();
        let mut ids: Vec<&u64> = clients
            .keys()
            .filter(|id| only.is_none_or(|o| o == **id))
            .collect();
        ids.sort_unstable();
        let mut out = String::new();
        for id in ids {
            let client = &clients[id];
            let _ = writeln!(
                out,
                "id={id} addr={} name={} age={}",
                client.addr,
                String::from_utf8_lossy(client.name.as_deref().unwrap_or_default()),
                client.connected_at.elapsed().as_secs()
            );
        }
        out
    }

    /// Settings for `CONFIG GET`, with Redis' names where one exists.
    fn config_settings(&self) -> Vec<(String, String)> {
        let o = &self.options;
        let mut settings = vec![
            ("appendonly".to_owned(), "yes".to_owned()),
            (
                "appendfsync".to_owned(),
                match o.durability {
                    Durability::Sync => "always",
                    Durability::Buffered | Durability::None => "everysec",
                }
                .to_owned(),
            ),
            ("save".to_owned(), String::new()),
            ("databases".to_owned(), "1".to_owned()),
            ("maxclients".to_owned(), o.max_clients.to_string()),
            (
                "proto-max-bulk-len".to_owned(),
                o.bulk_max_bytes.to_string(),
            ),
            ("port".to_owned(), self.listen.port().to_string()),
            ("bind".to_owned(), self.listen.ip().to_string()),
            ("dir".to_owned(), o.dir.display().to_string()),
            (
                "requirepass".to_owned(),
                // Never echo the secret itself.
                if o.password.is_some() { "(set)" } else { "" }.to_owned(),
            ),
        ];
        settings.sort();
        settings
    }

    /// Writes an index checkpoint now (`SAVE`).
    ///
    /// # Errors
    /// Store errors.
    pub fn checkpoint(&self) -> Result<(), DbError> {
        let lsn = self.keyspace.db().checkpoint()?;
        self.last_save.store(unix_now(), Ordering::Relaxed);
        tracing::info!(lsn, "index checkpoint written");
        Ok(())
    }

    /// Starts a checkpoint in a thread of its own (`BGSAVE`); false if one is running.
    fn start_background_checkpoint(self: &Arc<Shared>) -> bool {
        if self.checkpoint_running.swap(true, Ordering::AcqRel) {
            return false;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("bgsave".into())
            .spawn(move || {
                if let Err(e) = me.checkpoint() {
                    tracing::error!(error = %e, "background checkpoint failed");
                }
                me.checkpoint_running.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the background checkpoint thread");
            self.checkpoint_running.store(false, Ordering::Release);
            return false;
        }
        true
    }
}

/// A running server: the accept thread and the event loops.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    loops: Vec<Arc<event_loop::LoopHandle>>,
    threads: Vec<JoinHandle<()>>,
    metrics_thread: Option<(TcpListener, JoinHandle<()>)>,
}

impl Server {
    /// Starts serving `keyspace` on `listener` with `io_threads` event loops (and metrics on
    /// `metrics`, if given).
    ///
    /// # Errors
    /// Failing to start a thread or to set up a socket.
    pub fn start(
        keyspace: Keyspace,
        listener: TcpListener,
        metrics: Option<TcpListener>,
        options: ServerOptions,
    ) -> Result<Self, ServerError> {
        let listen = listener.local_addr().map_err(ServerError::Listen)?;
        let io_threads = options.io_threads.max(1);
        let replication = replication::Replication::open(
            &options.dir,
            options.max_retained_bytes,
            options.snapshot_level,
        )
        .map_err(ServerError::ReplicaId)?;
        let replica_of = options.replica_of.clone();
        let shared = Arc::new(Shared {
            keyspace,
            options,
            metrics: Metrics::default(),
            stats: ReadStats::default(),
            last_save: AtomicU64::new(unix_now()),
            cursors: Cursors::default(),
            clients: Mutex::default(),
            next_client_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            checkpoint_running: AtomicBool::new(false),
            started: Instant::now(),
            listen,
            replication,
            acks: Arc::default(),
        });
        // Read-only (and compaction held) before the slot keeper's first tick decides.
        if let Some(primary) = replica_of {
            shared.replicate_from(primary);
        }
        shared.start_slot_keeper().map_err(ServerError::Thread)?;
        let mut loops = Vec::new();
        let mut threads = Vec::new();
        for i in 0..io_threads {
            let (handle, wake) = event_loop::LoopHandle::new().map_err(ServerError::Listen)?;
            shared.acks.register(Arc::clone(&handle));
            let shared = Arc::clone(&shared);
            let for_thread = Arc::clone(&handle);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("io-{i}"))
                    .spawn(move || event_loop::run_loop(&shared, &for_thread, &wake))
                    .map_err(ServerError::Thread)?,
            );
            loops.push(handle);
        }
        {
            let listener = listener.try_clone().map_err(ServerError::Listen)?;
            let shared = Arc::clone(&shared);
            let loops = loops.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("accept".into())
                    .spawn(move || accept_loop(&listener, &shared, &loops))
                    .map_err(ServerError::Thread)?,
            );
        }
        let metrics_thread = match metrics {
            Some(metrics_listener) => {
                let for_thread = metrics_listener.try_clone().map_err(ServerError::Listen)?;
                let shared = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("metrics".into())
                    .spawn(move || metrics::serve(&for_thread, &shared))
                    .map_err(ServerError::Thread)?;
                Some((metrics_listener, handle))
            }
            None => None,
        };
        Ok(Self {
            shared,
            listener,
            loops,
            threads,
            metrics_thread,
        })
    }

    /// The address clients connect to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Stops accepting, lets every connection commit and answer the commands it has already
    /// run, then checkpoints, syncs and closes the store.
    ///
    /// # Errors
    /// A failed final checkpoint or sync.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.shared.shutting_down.store(true, Ordering::Release);
        // Wakes a blocked accept() at once (Linux returns EINVAL from accept on a listening
        // socket that is shut down).
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some((listener, handle)) = self.metrics_thread.take() {
            let _ =
                nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            let _ = handle.join();
        }
        self.shared.stop_replication();
        for handle in &self.loops {
            handle.wake();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // A background checkpoint thread lets go of the state just after it reports done.
        let mut shared = self.shared;
        let deadline = Instant::now() + Duration::from_mins(10);
        let shared = loop {
            match Arc::try_unwrap(shared) {
                Ok(alone) => break alone,
                Err(_) if Instant::now() >= deadline => return Err(ServerError::StillShared),
                Err(still) => {
                    shared = still;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        shared.keyspace.close().map_err(ServerError::Close)
    }
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    loops: &[Arc<event_loop::LoopHandle>],
) {
    for stream in listener.incoming() {
        if shared.is_shutting_down() {
            return;
        }
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of descriptors, say: do not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared
            .metrics
            .connections_received
            .fetch_add(1, Ordering::Relaxed);
        let Ok(addr) = stream.peer_addr() else {
            continue;
        };
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut clients = shared.clients.locked();
            if clients.len() >= shared.options.max_clients {
                drop(clients);
                shared
                    .metrics
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%addr, max = shared.options.max_clients, "connection refused: max-clients reached");
                let _ = std::io::Write::write_all(
                    &mut stream,
                    b"-ERR max number of clients reached\r\n",
                );
                continue;
            }
            clients.insert(
                id,
                Client {
                    addr,
                    connected_at: Instant::now(),
                    name: None,
                },
            );
        }
        let target = loops
            .iter()
            .min_by_key(|l| l.connections.load(Ordering::Relaxed))
            .unwrap_or_else(|| unreachable!("a server has at least one event loop"));
        target.hand_over(stream, id, addr);
    }
}
