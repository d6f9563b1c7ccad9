use crate::resp_conn::ConnError;

/// Why a load run could not be done or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// An option is out of its bounds or options contradict each other.
    #[error("invalid options: {0}")]
    Options(String),
    /// Connecting, reading or writing failed, or the server's reply was malformed, timed out
    /// or not one the command can have.
    #[error(transparent)]
    Connection(#[from] ConnError),
    /// `INFO` lacks a field the measurement needs (not a shiplog server, or the wrong role).
    #[error("{addr}: INFO {section} has no usable field {field}")]
    MissingInfoField {
        /// The server's address.
        addr: String,
        /// The `INFO` section asked for.
        section: &'static str,
        /// The field looked for.
        field: &'static str,
    },
    /// The replica stopped making progress, or did not reach the primary's LSN in time.
    #[error(
        "{addr}: the replica applied LSN {applied} of {target} and stopped there ({waited_secs} s \
         after it was attached); its last replication error: {last_error}"
    )]
    CatchUpTimeout {
        /// The replica's address.
        addr: String,
        /// Where it got to.
        applied: u64,
        /// Where it had to get to.
        target: u64,
        /// How long it was waited for.
        waited_secs: u64,
        /// `replica_last_error` from its `INFO replication`.
        last_error: String,
    },
    /// A worker thread could not be started or panicked.
    #[error("load thread: {0}")]
    Thread(String),
}
