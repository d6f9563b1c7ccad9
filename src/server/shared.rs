//! The state every event loop, command and background thread of the server shares: the keys,
//! the settings, the counters, the connected clients and the replication role.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::acks::AckGate;
use super::cursors::Cursors;
use super::keyspace::Keyspace;
use super::metrics::Metrics;
use super::options::ServerOptions;
use super::replication::Replication;
use crate::engine::DbError;
use crate::sync::MutexExt;
use crate::wal::Durability;

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

/// State shared by every event loop, command and background thread.
#[derive(Debug)]
pub struct Shared {
    /// The keys.
    pub keyspace: Arc<Keyspace>,
    /// Settings.
    pub options: Arc<ServerOptions>,
    /// Per-command counters.
    pub metrics: Metrics,
    /// Read counters.
    pub stats: ReadStats,
    /// Unix time of the last index checkpoint (`LASTSAVE`).
    pub last_save: AtomicU64,
    /// `SCAN` cursors.
    pub(super) cursors: Cursors,
    clients: Mutex<HashMap<u64, Client>>,
    next_client_id: AtomicU64,
    shutting_down: AtomicBool,
    /// A `BGSAVE` is running.
    pub(super) checkpoint_running: AtomicBool,
    /// When the server started.
    pub(super) started: Instant,
    /// The address clients connect to.
    pub(super) listen: SocketAddr,
    /// Role, replicas and the link to a primary.
    pub replication: Arc<Replication>,
    /// Wakes writers waiting for replica acknowledgements; counts timeouts and fallbacks.
    pub acks: Arc<AckGate>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Shared {
    /// The state of a server serving `keyspace` on `listen`, counting calls of the commands
    /// named in `commands`.
    ///
    /// # Errors
    /// The replica identity or the retention slots cannot be read or created.
    pub fn new(
        keyspace: Keyspace,
        options: ServerOptions,
        listen: SocketAddr,
        commands: &[&'static str],
    ) -> std::io::Result<Self> {
        let keyspace = Arc::new(keyspace);
        let options = Arc::new(options);
        let acks = Arc::new(AckGate::default());
        let replication = Replication::open(
            Arc::clone(&keyspace),
            Arc::clone(&options),
            listen.port(),
            Arc::clone(&acks),
        )?;
        Ok(Self {
            keyspace,
            options,
            metrics: Metrics::new(commands),
            stats: ReadStats::default(),
            last_save: AtomicU64::new(unix_now()),
            cursors: Cursors::default(),
            clients: Mutex::default(),
            next_client_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            checkpoint_running: AtomicBool::new(false),
            started: Instant::now(),
            listen,
            replication: Arc::new(replication),
            acks,
        })
    }

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

    /// Shutdown begins: loops and background threads stop once they see it.
    pub(super) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Registers a client connected from `addr`: its id, or `None` when `max_clients` are
    /// connected already.
    pub(super) fn add_client(&self, addr: SocketAddr) -> Option<u64> {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        let mut clients = self.clients.locked();
        if clients.len() >= self.options.max_clients {
            return None;
        }
        clients.insert(
            id,
            Client {
                addr,
                connected_at: Instant::now(),
                name: None,
            },
        );
        Some(id)
    }

    pub(super) fn forget_client(&self, id: u64) {
        self.clients.locked().remove(&id);
        self.cursors.client_closed(id);
    }

    pub(super) fn rename_client(&self, id: u64, name: Option<Vec<u8>>) {
        if let Some(client) = self.clients.locked().get_mut(&id) {
            client.name = name;
        }
    }

    /// `CLIENT LIST` lines (of one client, for `CLIENT INFO`).
    pub(super) fn describe_clients(&self, only: Option<u64>) -> String {
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
    pub(super) fn config_settings(&self) -> Vec<(String, String)> {
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
    pub(super) fn start_background_checkpoint(self: &Arc<Shared>) -> bool {
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
