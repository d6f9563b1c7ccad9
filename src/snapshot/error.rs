//! Errors of the snapshot layer.

use std::io;
use std::path::PathBuf;

use crate::engine::DbError;
use crate::format::FormatError;
use crate::wal::WalError;

/// Result of snapshot operations.
pub type Result<T> = std::result::Result<T, SnapshotError>;

/// What went wrong creating, reading or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing a file or stream failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or stream.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The snapshot's bytes break the format (wrong magic, lying sizes, entries out of order).
    #[error("the snapshot is malformed: {0}; it cannot be used, take a new one")]
    Format(#[from] FormatError),
    /// The compressed body is damaged, or asks for more memory than a reader allows.
    #[error("the snapshot's compressed body is damaged: {0}; it cannot be used, take a new one")]
    Compression(String),
    /// The body decompresses to more bytes than the header declared (a decompression bomb).
    #[error(
        "the snapshot's body decompresses past the {declared} bytes its header declares; it was \
         refused before writing any more"
    )]
    BeyondDeclared {
        /// What the header declared.
        declared: u64,
    },
    /// The file ends early.
    #[error("the snapshot ends after {read} bytes, inside its {part}: it is truncated")]
    Truncated {
        /// Bytes read.
        read: u64,
        /// Where it ended.
        part: &'static str,
    },
    /// Bytes follow the trailer.
    #[error("the snapshot has bytes after its trailer: it is not one snapshot file")]
    TrailingBytes,
    /// The trailer's checksum does not match the bytes.
    #[error(
        "the snapshot's checksum does not match (stored {stored:#010x}, computed \
         {computed:#010x}): the file is corrupt"
    )]
    Checksum {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// The trailer's body length does not match the body.
    #[error("the snapshot's trailer says its body has {stored} bytes, it has {found}")]
    BodyLength {
        /// Stored length.
        stored: u64,
        /// Found length.
        found: u64,
    },
    /// A restore target that already holds files.
    #[error(
        "{} is not empty: a snapshot is restored only into a new or empty directory, so that \
         nothing is overwritten",
        dir.display()
    )]
    TargetNotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// The store could not be read.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The log refused what was restored into it, or failed.
    #[error(transparent)]
    Wal(#[from] WalError),
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
