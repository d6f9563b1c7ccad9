use std::io;

use super::resp::ReplyError;

/// Why a load run could not be done or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// An option is out of its bounds or options contradict each other.
    #[error("invalid options: {0}")]
    Options(String),
    /// Connecting, reading or writing failed.
    #[error("{addr}: {source}")]
    Io {
        /// The server's address.
        addr: String,
        /// What the socket reported.
        #[source]
        source: io::Error,
    },
    /// The server closed the connection.
    #[error("{addr}: the server closed the connection")]
    Closed {
        /// The server's address.
        addr: String,
    },
    /// A reply did not arrive within the reply timeout.
    #[error("{addr}: no reply within {timeout_ms} ms")]
    Timeout {
        /// The server's address.
        addr: String,
        /// The timeout that passed.
        timeout_ms: u128,
    },
    /// The server sent bytes that are not a RESP reply.
    #[error("{addr}: malformed reply: {source}")]
    Malformed {
        /// The server's address.
        addr: String,
        /// What is wrong with the bytes.
        #[source]
        source: ReplyError,
    },
    /// A well-formed reply that the command cannot have (a status where a value belongs).
    #[error("{addr}: unexpected reply to {command}: {reply}")]
    Unexpected {
        /// The server's address.
        addr: String,
        /// The command sent.
        command: &'static str,
        /// The reply, shortened for display.
        reply: String,
    },
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
