use std::io;
use std::sync::Arc;

use crate::format::repl::{FrameError, RefuseCode};
use crate::wal::WalError;

/// Why a shipping session ended.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReplError {
    /// The connection failed or timed out; the replica reconnects.
    #[error("replication connection: {0}")]
    Io(Arc<io::Error>),
    /// The peer sent bytes that are not a valid frame.
    #[error("replication peer sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The log refused or failed on shipped records.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The peer refused the session.
    #[error("refused by the peer ({code:?}): {reason}")]
    Refused {
        /// Machine-readable cause.
        code: RefuseCode,
        /// The peer's explanation.
        reason: String,
    },
    /// The peer broke the protocol (a frame out of place, a bad handshake reply).
    #[error("replication protocol: {0}")]
    Protocol(String),
    /// The replica's log differs from the primary's at an LSN both hold: apply stops.
    #[error(
        "DIVERGED: at LSN {lsn} the primary's log digest is {primary:016x} and this replica's is \
         {replica:016x}; replication stopped. Compare the nodes with `shiplog verify --compare` \
         and rebuild this replica"
    )]
    Diverged {
        /// Where the digests were compared.
        lsn: crate::format::Lsn,
        /// The primary's digest there.
        primary: u64,
        /// This replica's.
        replica: u64,
    },
    /// This node's log forked from the primary's: it was rewound to the fork point (the cut
    /// records saved under `rollback/`), or emptied to be bootstrapped; the link reconnects.
    #[error("rewound the log to LSN {fork} to follow the primary's history; reconnecting")]
    Rewound {
        /// The last LSN kept.
        fork: crate::format::Lsn,
    },
    /// The primary is of an older epoch than this node has seen: it was replaced and must
    /// not be followed.
    #[error(
        "the primary is of epoch {primary}, older than epoch {seen} this node has seen: it was \
         replaced by a failover; point this node at the new primary (REPLICAOF host port)"
    )]
    StalePrimary {
        /// The primary's epoch.
        primary: crate::format::Epoch,
        /// The highest epoch this node knows.
        seen: crate::format::Epoch,
    },
    /// The store failed while a snapshot was restored into it.
    #[error("restoring the primary's snapshot: {0}")]
    Store(String),
    /// The session was stopped (shutdown or `REPLICAOF`).
    #[error("replication stopped")]
    Stopped,
}

impl ReplError {
    /// The peer's refusal frame, as an error.
    pub(crate) fn refused(code: RefuseCode, reason: &str) -> Self {
        Self::Refused {
            code,
            reason: reason.to_owned(),
        }
    }
}

impl From<crate::engine::DbError> for ReplError {
    fn from(e: crate::engine::DbError) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<io::Error> for ReplError {
    fn from(e: io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}
