//! Shared by the tests that ship a log by hand: one chunk from `Wal::ship_chunk` written into
//! a replica's log the way a replica's session does it.

use shiplog::repl::Receiver;
use shiplog::wal::{ShipChunk, WalError};
use shiplog::{Durability, Lsn, Wal};

/// Writes `chunk` into `replica` (its segment header first, when it starts a segment) and
/// waits until the batch it completes is durable; returns that batch's last LSN, 0 if the
/// chunk completed none.
pub fn deliver(replica: &Wal, receiver: &mut Receiver, chunk: &ShipChunk) -> Result<Lsn, WalError> {
    if let Some(header) = &chunk.header {
        receiver.segment_header(replica, header, chunk.capacity)?;
    }
    let last = receiver.segment_bytes(
        replica,
        chunk.segment,
        chunk.offset,
        &chunk.bytes,
        chunk.last_lsn,
    )?;
    if last != 0 {
        replica.wait_for(last, Durability::Sync)?;
    }
    Ok(last)
}
