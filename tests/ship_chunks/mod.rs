//! Shared by the tests that ship a log by hand: a primary's log of small segments, and one
//! chunk from `Wal::ship_chunk` written into a replica's log the way a replica's session does
//! it.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use std::path::Path;

use shiplog::repl::Receiver;
use shiplog::wal::{Options, ShipChunk, WalError};
use shiplog::{Durability, Lsn, RecordKind, Wal};

/// A log of 200 durable 300-byte records in 8 KiB segments.
#[allow(dead_code, reason = "not every test file ships this log")]
pub fn small_segment_log(dir: &Path) -> Wal {
    let wal = Wal::open(
        dir,
        Options {
            segment_bytes: 8 << 10,
            ..Options::default()
        },
    )
    .unwrap();
    let kind = RecordKind::new(5).unwrap();
    for i in 0..200u32 {
        wal.append(kind, &vec![i as u8; 300], Durability::Sync)
            .unwrap();
    }
    wal
}

/// Writes `chunk` into `replica` (its segment header first, when it starts a segment) and
/// waits until the batch it completes is durable; returns that batch's last LSN, 0 if the
/// chunk completed none.
#[allow(dead_code, reason = "not every test file delivers chunks")]
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
