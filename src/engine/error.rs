use crate::format::Lsn;
use crate::wal::WalError;

/// Errors of the key-value engine.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The write-ahead log failed; see the inner error for what to do.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A key longer than the configured limit.
    #[error("key of {bytes} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { bytes: u64, max: u64 },
    /// A value longer than the configured limit.
    #[error("value of {bytes} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { bytes: u64, max: u64 },
    /// A record in the log is not a valid key-value operation.
    #[error("record LSN {lsn} is not a valid key-value operation: {reason}. Run `shiplog verify`")]
    BadRecord { lsn: Lsn, reason: String },
    /// An option is out of its bounds.
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
}

/// Result of engine operations.
pub type Result<T, E = DbError> = std::result::Result<T, E>;
