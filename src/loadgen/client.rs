//! The commands the load generator sends besides its workload (`SET` and `GET` checked one at
//! a time, `INFO`, `REPLICAOF`), over the crate's one blocking RESP connection
//! ([`crate::resp_conn::Connection`]), which the workload also pipelines through.

pub use crate::resp_conn::Connection;

use super::error::LoadError;
use crate::format::resp_reply::Reply;

/// `SET key value`, which must answer `+OK`.
///
/// # Errors
/// On any other reply, or when the exchange fails.
pub fn set(con: &mut Connection, key: &[u8], value: &[u8]) -> Result<(), LoadError> {
    match con.command(&[b"SET", key, value])? {
        Reply::Simple(b"OK") => Ok(()),
        other => {
            let reply = other.describe();
            Err(con.unexpected("SET", reply).into())
        }
    }
}

/// `GET key`: whether the value there is `expected` (false for a missing key or another
/// value).
///
/// # Errors
/// On an error reply or a reply that is not a bulk string, or when the exchange fails.
pub fn get_is(con: &mut Connection, key: &[u8], expected: &[u8]) -> Result<bool, LoadError> {
    match con.command(&[b"GET", key])? {
        Reply::Bulk(value) => Ok(value == Some(expected)),
        other => {
            let reply = other.describe();
            Err(con.unexpected("GET", reply).into())
        }
    }
}

/// `INFO section`: the text of the reply.
///
/// # Errors
/// On a reply that is not a bulk string, or when the exchange fails.
pub fn info(con: &mut Connection, section: &str) -> Result<String, LoadError> {
    match con.command(&[b"INFO", section.as_bytes()])? {
        Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(text).into_owned()),
        other => {
            let reply = other.describe();
            Err(con.unexpected("INFO", reply).into())
        }
    }
}

/// `REPLICAOF host port`: the node starts following that primary.
///
/// # Errors
/// On an error reply, or when the exchange fails.
pub fn replicaof(con: &mut Connection, primary: &str) -> Result<(), LoadError> {
    let (host, port) = primary
        .rsplit_once(':')
        .ok_or_else(|| LoadError::Options(format!("{primary} is not HOST:PORT")))?;
    match con.command(&[b"REPLICAOF", host.as_bytes(), port.as_bytes()])? {
        // `OK`, or `OK Already connected to specified master`.
        Reply::Simple(status) if status.starts_with(b"OK") => Ok(()),
        other => {
            let reply = other.describe();
            Err(con.unexpected("REPLICAOF", reply).into())
        }
    }
}

/// The value of `field` in an `INFO` text (`field:value` lines).
#[must_use]
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim_end)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn info_fields_are_found_by_their_whole_name() {
        let info =
            "# Replication\r\nrole:slave\r\nreplica_applied_lsn:42\r\nreplica_applied_lsn_x:7\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "replica_applied_lsn"), Some("42"));
        assert_eq!(info_field(info, "replica_applied"), None);
        assert_eq!(info_field(info, "missing"), None);
    }
}
