//! The primary's retention slots file (`DIR/replica-slots`) and a node's replica identity file
//! (`DIR/replica-id`): small text files, parsed strictly (`docs/format.md`, "Replication
//! files"). Pure code, fuzzed as `replica_files`.
//!
//! ```text
//! shiplog-replica-slots 1
//! <replica id: 32 lowercase hex digits> <LSN the replica holds durably, decimal>
//! ...
//! ```

use std::fmt::Write as _;

use super::{LSN_MAX, Lsn};

/// First line of a slots file.
pub const SLOTS_MAGIC_LINE: &str = "shiplog-replica-slots 1";
/// Most slots a file may hold.
pub const SLOTS_MAX: usize = 1024;
/// Largest slots file accepted.
pub const SLOTS_FILE_MAX_BYTES: usize = 64 << 10;

/// One replica's retention slot: the log after `lsn` is kept for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The replica's identity.
    pub replica_id: u128,
    /// The last LSN it holds durably.
    pub lsn: Lsn,
}

/// Why a replication file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlotsError {
    /// Larger than [`SLOTS_FILE_MAX_BYTES`] or more than [`SLOTS_MAX`] slots.
    #[error("too large: at most {SLOTS_MAX} slots in {SLOTS_FILE_MAX_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8, or a line that does not parse.
    #[error("line {line}: {reason}")]
    Bad {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Parses a replica identity: 32 hex digits, optionally followed by a newline.
///
/// # Errors
/// Anything else.
pub fn parse_replica_id(bytes: &[u8]) -> Result<u128, SlotsError> {
    let bad = |reason| SlotsError::Bad { line: 1, reason };
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if text.len() != 32 || !text.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad("a replica id is 32 hex digits"));
    }
    let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?;
    u128::from_str_radix(text, 16).map_err(|_| bad("a replica id is 32 hex digits"))
}

/// The text of a replica identity file.
#[must_use]
pub fn encode_replica_id(id: u128) -> String {
    format!("{id:032x}\n")
}

/// Parses a slots file.
///
/// # Errors
/// A file too large, a wrong first line, a malformed or duplicate slot.
pub fn parse_slots(bytes: &[u8]) -> Result<Vec<Slot>, SlotsError> {
    if bytes.len() > SLOTS_FILE_MAX_BYTES {
        return Err(SlotsError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SlotsError::Bad {
        line: 1,
        reason: "not UTF-8",
    })?;
    let mut lines = text.lines();
    if lines.next() != Some(SLOTS_MAGIC_LINE) {
        return Err(SlotsError::Bad {
            line: 1,
            reason: "not a shiplog replica slots file (version 1)",
        });
    }
    let mut slots: Vec<Slot> = Vec::new();
    for (i, line) in lines.enumerate() {
        let bad = |reason| SlotsError::Bad {
            line: i + 2,
            reason,
        };
        if slots.len() == SLOTS_MAX {
            return Err(SlotsError::TooLarge);
        }
        let (id, lsn) = line.split_once(' ').ok_or(bad("expected `<id> <lsn>`"))?;
        let replica_id = parse_replica_id(id.as_bytes()).map_err(|_| bad("bad replica id"))?;
        if lsn.is_empty() || lsn.len() > 19 || !lsn.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("bad LSN"));
        }
        let lsn: Lsn = lsn.parse().map_err(|_| bad("bad LSN"))?;
        if lsn > LSN_MAX {
            return Err(bad("LSN beyond 2^63 - 1"));
        }
        if slots.iter().any(|s| s.replica_id == replica_id) {
            return Err(bad("a replica with two slots"));
        }
        slots.push(Slot { replica_id, lsn });
    }
    Ok(slots)
}

/// The text of a slots file.
///
/// # Panics
/// With more than [`SLOTS_MAX`] slots (the caller caps them first).
#[must_use]
pub fn encode_slots(slots: &[Slot]) -> String {
    assert!(slots.len() <= SLOTS_MAX, "too many slots");
    let mut out = String::from(SLOTS_MAGIC_LINE);
    out.push('\n');
    for slot in slots {
        let _ = writeln!(out, "{:032x} {}", slot.replica_id, slot.lsn);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_bad_files_are_refused() {
        let slots = [
            Slot {
                replica_id: 1,
                lsn: 0,
            },
            Slot {
                replica_id: u128::MAX,
                lsn: LSN_MAX,
            },
        ];
        assert_eq!(
            parse_slots(encode_slots(&slots).as_bytes()),
            Ok(slots.to_vec())
        );
        assert_eq!(parse_slots(b"shiplog-replica-slots 1\n"), Ok(Vec::new()));
        for bad in [
            &b""[..],
            b"shiplog-replica-slots 2\n",
            b"shiplog-replica-slots 1\nzz 1\n",
            b"shiplog-replica-slots 1\n00000000000000000000000000000001 -1\n",
            b"shiplog-replica-slots 1\n00000000000000000000000000000001 9223372036854775808\n",
            b"shiplog-replica-slots 1\n00000000000000000000000000000001 1\n00000000000000000000000000000001 2\n",
        ] {
            assert!(parse_slots(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_replica_id(encode_replica_id(77).as_bytes()), Ok(77));
        assert!(parse_replica_id(b"+0000000000000000000000000000001").is_err());
    }
}
