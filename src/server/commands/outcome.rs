//! What a command handler returns, and the pieces every family of handlers shares: error
//! texts and small reply helpers.

use crate::engine::DbError;
use crate::format::resp::ReplyWriter;
use crate::server::keyspace::Current;
use crate::server::shared::Shared;

/// Why a command failed, as the client reads it.
#[derive(Debug)]
pub enum Failure {
    /// A complete error reply text (starting with its code).
    Reply(String),
    /// The store failed.
    Db(DbError),
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Send what is buffered, then close (`QUIT`).
    Close,
    /// Send what is buffered, then hand the connection to a shipping session.
    Ship,
}

/// A handler's result: what the connection does next, or the error reply.
pub type Outcome = Result<Flow, Failure>;

pub(super) fn err(text: &str) -> Failure {
    Failure::Reply(text.to_owned())
}

pub(super) const SYNTAX: &str = "ERR syntax error";
pub(super) const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub(super) const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub(super) const NO_EXPIRY: &str = "ERR key expiry is not supported by shiplog: keys never expire (EX/PX/EXAT/PXAT, EXPIRE, SETEX)";
pub(super) const TIMEOUT_NOT_INTEGER: &str = "ERR timeout is not an integer or out of range";

/// Refuses to build a reply larger than the client output limit.
pub(super) fn check_reply_size(shared: &Shared, bytes: usize) -> Result<(), Failure> {
    let max = shared.options.output_max_bytes;
    if bytes > max {
        return Err(Failure::Reply(format!(
            "ERR reply of about {bytes} bytes exceeds the client output limit of {max} bytes (--client-output-limit)"
        )));
    }
    Ok(())
}

pub(super) fn bulk_or_null(reply: &mut ReplyWriter<'_>, value: Option<&Current>) {
    match value {
        Some(v) => reply.bulk(v.as_bytes()),
        None => reply.null(),
    }
}

/// A count as a RESP integer (saturating: no count here comes near `i64::MAX`).
pub(super) fn int<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
