//! The Redis-protocol front end: a listener, a few event-loop threads that serve every client
//! connection, and the state they share. Writes are staged in the log as commands arrive and
//! answered once durable, so every connection's writes (and every pipeline's) share
//! group-commit syncs.
//!
//! Dependencies flow one way, from the leaves up (no file imports one above it):
//!
//! ```text
//! error, config, glob, cursors, keyspace, metrics, acks   leaves
//!   -> session, options
//!   -> replication/ (role, link, replicas, slots, failover)
//!   -> shared (the state every thread holds)
//!   -> info -> commands/ -> connection -> event_loop, prometheus
//!   -> mod.rs (Server: threads, accept loop, shutdown)
//! ```
//!
//! Replication wakes the event loops through the acknowledgement gate's wakers, which each
//! loop registers, so nothing below the event loop knows it.

pub mod acks;
pub mod commands;
pub mod config;
mod connection;
mod cursors;
mod error;
mod event_loop;
pub mod glob;
mod info;
pub mod keyspace;
pub mod metrics;
mod options;
mod prometheus;
mod replication;
mod session;
mod shared;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use error::ServerError;
pub use keyspace::Keyspace;
pub use options::{
    DEFAULT_ARGS_MAX, DEFAULT_BULK_MAX_BYTES, DEFAULT_IO_THREADS, DEFAULT_LISTEN,
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_RETAINED_BYTES, DEFAULT_OUTPUT_MAX_BYTES,
    DEFAULT_SNAPSHOT_BOOTSTRAP_BYTES, ServerOptions,
};
use shared::Shared;

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
        let replica_of = options.replica_of.clone();
        let names: Vec<&'static str> = commands::COMMANDS.iter().map(|c| c.name).collect();
        let shared = Arc::new(
            Shared::new(keyspace, options, listen, &names).map_err(ServerError::ReplicaId)?,
        );
        // Read-only (and compaction held) before the slot keeper's first tick decides.
        if let Some(primary) = replica_of {
            shared.replication.replicate_from(primary);
        }
        shared
            .replication
            .start_slot_keeper()
            .map_err(ServerError::Thread)?;
        let mut loops = Vec::new();
        let mut threads = Vec::new();
        for i in 0..io_threads {
            let (handle, wake) = event_loop::LoopHandle::new().map_err(ServerError::Listen)?;
            shared.acks.register(handle.ack_waker());
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
                    .spawn(move || prometheus::serve(&for_thread, &shared))
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
        self.shared.begin_shutdown();
        // Wakes a blocked accept() at once (Linux returns EINVAL from accept on a listening
        // socket that is shut down).
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some((listener, handle)) = self.metrics_thread.take() {
            let _ =
                nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            let _ = handle.join();
        }
        self.shared.replication.stop();
        for handle in &self.loops {
            handle.wake();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // A background checkpoint thread lets go of the state just after it reports done, a
        // snapshot sender or a fence notice once it sees the shutdown: each holds the keys.
        let mut keyspace = Arc::clone(&self.shared.keyspace);
        drop(self.shared);
        let deadline = Instant::now() + Duration::from_mins(10);
        let keyspace = loop {
            match Arc::try_unwrap(keyspace) {
                Ok(alone) => break alone,
                Err(_) if Instant::now() >= deadline => return Err(ServerError::StillShared),
                Err(still) => {
                    keyspace = still;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        keyspace.close().map_err(ServerError::Close)
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
        let Some(id) = shared.add_client(addr) else {
            shared
                .metrics
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%addr, max = shared.options.max_clients, "connection refused: max-clients reached");
            let _ =
                std::io::Write::write_all(&mut stream, b"-ERR max number of clients reached\r\n");
            continue;
        };
        let target = loops
            .iter()
            .min_by_key(|l| l.connections.load(Ordering::Relaxed))
            .unwrap_or_else(|| unreachable!("a server has at least one event loop"));
        target.hand_over(stream, id, addr);
    }
}
