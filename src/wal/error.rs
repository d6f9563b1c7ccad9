use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::format::{FormatError, Lsn};
use crate::io::LockError;

/// Errors of the write-ahead log.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file operation failed.
    #[error("{op} {path}: {source}{}", io_hint(source))]
    Io {
        op: &'static str,
        path: PathBuf,
        source: Arc<io::Error>,
    },
    /// Stored bytes are damaged in a way that is not a torn tail; nothing was truncated.
    #[error(
        "corrupt log: {file}, offset {offset}, LSN {lsn}: {reason}. Nothing was truncated; \
         run `shiplog verify` on the directory and restore this node from a replica or snapshot"
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        lsn: Lsn,
        reason: String,
    },
    /// A segment's header cannot be read.
    #[error("bad segment header in {file}: {source}. Nothing was truncated")]
    BadHeader { file: PathBuf, source: FormatError },
    /// Segments of one directory name different clusters.
    #[error("{file} belongs to cluster {found:032x}, but this log is cluster {expected:032x}")]
    ClusterMismatch {
        file: PathBuf,
        expected: u128,
        found: u128,
    },
    /// The directory is locked by another writer.
    #[error(transparent)]
    Locked(Arc<LockError>),
    /// An earlier write or sync failed; the instance refuses all writes until reopened.
    #[error(
        "the log stopped accepting writes after a failed {op}: {source}. Reopen it to recover \
         from what is on disk"
    )]
    Poisoned {
        op: &'static str,
        source: Arc<io::Error>,
    },
    /// A record's payload exceeds the configured limit.
    #[error("record payload of {bytes} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { bytes: u64, max: u64 },
    /// A batch with no records.
    #[error("a batch needs at least one record")]
    EmptyBatch,
    /// A batch larger than the configured limit.
    #[error("batch of {records} records and {bytes} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        records: usize,
        bytes: u64,
        max: u64,
    },
    /// The LSN was removed by retention.
    #[error("LSN {lsn} is no longer retained (the log starts at LSN {first})")]
    NotRetained { lsn: Lsn, first: Lsn },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// Bytes shipped by a primary do not continue this log; nothing of them was written.
    #[error(
        "refused shipped log at segment {segment}, offset {offset}: {reason}. Nothing of it was \
         written; check that the replica follows the right primary (`INFO replication`)"
    )]
    Shipment {
        segment: Lsn,
        offset: u64,
        reason: String,
    },
    /// The epoch history file does not parse.
    #[error(
        "bad epoch history {file}: {reason}. Restore it from a replica's copy (the primary's \
         history is shipped to every replica) or remove it to have it derived from the segments"
    )]
    BadEpochHistory { file: PathBuf, reason: String },
    /// An epoch change that would break the order of epochs.
    #[error("epoch {epoch} cannot start here: {reason}")]
    EpochOrder {
        epoch: crate::format::Epoch,
        reason: String,
    },
    /// A rewind cannot cut the log where asked (a compacted range or a removed prefix holds
    /// that LSN); the caller empties the log instead.
    #[error("cannot rewind the log to LSN {lsn}: {reason}")]
    CannotRewind { lsn: Lsn, reason: String },
    /// Records queued for a write were cut from the log (a rewind or a restore) before they
    /// were committed: the write is not in the log, or its outcome is unknown.
    #[error(
        "LSN {lsn} was cut from the log before it was committed (this node rewound to rejoin a \
         new primary, or restored a snapshot): the write may be lost; check it on the primary"
    )]
    Cut { lsn: Lsn },
    /// An option is out of its bounds.
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
}

/// What the operator can do about an I/O error, where that is clear from the error alone.
fn io_hint(error: &io::Error) -> &'static str {
    if error.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) {
        "; the file system is full: free space on it or grow it"
    } else {
        ""
    }
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// Result of log operations.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
