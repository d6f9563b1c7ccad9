//! The state of one client connection.

use std::net::SocketAddr;

use super::acks::{AckLevel, WaitAcks};
use super::keyspace::Uncommitted;
use crate::format::resp::Protocol;

/// What the server knows about one connection.
#[derive(Debug)]
pub struct Session {
    /// Unique id (`CLIENT ID`), never reused while the server runs.
    pub id: u64,
    /// The peer's address.
    pub addr: SocketAddr,
    /// Name set by `CLIENT SETNAME` or `HELLO SETNAME`.
    pub name: Option<Vec<u8>>,
    /// RESP2 until `HELLO 3`.
    pub protocol: Protocol,
    /// True once `AUTH` succeeded, or from the start when no password is configured.
    pub authenticated: bool,
    /// Writes staged by this connection and not yet committed.
    pub uncommitted: Uncommitted,
    /// The challenge sent with `SHIPLOG.SHIP` when a password is set: the replica must answer
    /// it before anything is shipped.
    pub ship_challenge: Option<[u8; crate::format::repl::AUTH_BYTES]>,
    /// `SHIPLOG.SNAPSHOT` asked for the connection to be handed to a snapshot sender.
    pub wants_snapshot: bool,
    /// The LSN of this connection's last committed write (or of a staged write it read): the
    /// token a client hands to `SHIPLOG.WAITLSN` on a replica to read its own writes.
    pub last_write_lsn: crate::format::Lsn,
    /// The epoch this node was the primary of when it made that write: `WAIT` counts replicas
    /// only while it still is (after a failover, that LSN may hold another write).
    pub last_write_epoch: crate::format::Epoch,
    /// `SHIPLOG.WAITLSN` is waiting for this LSN to be applied, until the deadline (`None`:
    /// no deadline); nothing more of this connection runs meanwhile.
    pub waiting: Option<(crate::format::Lsn, Option<std::time::Instant>)>,
    /// `SHIPLOG.ACKLEVEL` chose this connection's level (`None`: the server's default).
    pub ack_level: Option<AckLevel>,
    /// `WAIT` is waiting for replicas; nothing more of this connection runs meanwhile.
    pub waiting_acks: Option<WaitAcks>,
}

impl Session {
    /// A new connection; it must authenticate when `password_required`.
    #[must_use]
    pub fn new(id: u64, addr: SocketAddr, password_required: bool) -> Self {
        Self {
            id,
            addr,
            name: None,
            protocol: Protocol::Resp2,
            authenticated: !password_required,
            uncommitted: Uncommitted::default(),
            ship_challenge: None,
            wants_snapshot: false,
            last_write_lsn: 0,
            last_write_epoch: 0,
            waiting: None,
            ack_level: None,
            waiting_acks: None,
        }
    }

    /// Sets (or, with an empty name, clears) the connection name, with Redis' rules.
    ///
    /// # Errors
    /// The Redis error text for a name with spaces or special characters.
    pub fn set_name(&mut self, name: &[u8]) -> Result<(), String> {
        if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return Err(
                "ERR Client names cannot contain spaces, newlines or special characters."
                    .to_owned(),
            );
        }
        self.name = (!name.is_empty()).then(|| name.to_vec());
        Ok(())
    }
}
