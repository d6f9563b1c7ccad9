//! Errors of the server layer.

use std::io;

use crate::engine::DbError;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket failed.
    #[error("listening socket: {0}")]
    Listen(#[source] io::Error),
    /// The replica identity or retention slots file cannot be read or written.
    #[error("replication files: {0}")]
    ReplicaId(#[source] io::Error),
    /// A thread could not be started (out of memory or process limits: check `ulimit -u`).
    #[error("cannot start a thread: {0} (check the process and memory limits)")]
    Thread(#[source] io::Error),
    /// Shutdown found the server state still in use by a thread that did not finish.
    #[error(
        "a server thread did not finish; the log is synced but no index checkpoint was written"
    )]
    StillShared,
    /// The final checkpoint or sync failed.
    #[error("closing the store: {0}")]
    Close(#[source] DbError),
}
