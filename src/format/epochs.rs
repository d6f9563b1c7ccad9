//! A node's epoch history (`DIR/epoch-history`, `PostgreSQL`'s timeline history): for every
//! epoch, the first LSN it wrote or would write. Its text file and its wire form (the history
//! frame of log shipping), and the fork point of two histories, from which a diverged node
//! rewinds. Pure code, fuzzed as `epoch_history`.
//!
//! ```text
//! shiplog-epoch-history 1
//! <epoch, decimal> <start LSN, decimal>
//! ...
//! ```
//!
//! Epochs strictly increase; start LSNs never decrease (an epoch that wrote nothing shares its
//! start with the next one). One primary writes each epoch, so two nodes whose histories give
//! the same epoch to an LSN hold the same record there.

use std::fmt::Write as _;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{Epoch, LSN_MAX, Lsn};

/// First line of a history file.
pub const EPOCHS_MAGIC_LINE: &str = "shiplog-epoch-history 1";
/// Most epochs a history holds (65,536 failovers).
pub const EPOCHS_MAX: usize = 1 << 16;
/// Bytes of one epoch in the wire form: `[epoch: u32][start_lsn: u64]`.
pub const EPOCH_WIRE_BYTES: usize = 12;
/// Largest history file accepted.
pub const EPOCHS_FILE_MAX_BYTES: usize = 2 << 20;

/// One epoch and the first LSN it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    /// The epoch.
    pub epoch: Epoch,
    /// Its first LSN.
    pub start_lsn: Lsn,
}

/// Why a history was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EpochsError {
    /// More than [`EPOCHS_MAX`] epochs, or a file over [`EPOCHS_FILE_MAX_BYTES`].
    #[error("too large: at most {EPOCHS_MAX} epochs")]
    TooLarge,
    /// A line or entry that does not parse or breaks the order.
    #[error("entry {entry}: {reason}")]
    Bad {
        /// 1-based entry (line of the file, after the first).
        entry: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The epochs a node knows, oldest first; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochStart>,
}

impl Default for EpochHistory {
    fn default() -> Self {
        Self::initial()
    }
}

impl EpochHistory {
    /// A new cluster's history: epoch 1 from LSN 1.
    #[must_use]
    pub fn initial() -> Self {
        Self {
            entries: vec![EpochStart {
                epoch: 1,
                start_lsn: 1,
            }],
        }
    }

    /// A history from entries, checked.
    ///
    /// # Errors
    /// No entries, too many, an epoch 0, epochs not increasing, start LSNs decreasing or out of
    /// range.
    pub fn from_entries(entries: Vec<EpochStart>) -> Result<Self, EpochsError> {
        if entries.len() > EPOCHS_MAX {
            return Err(EpochsError::TooLarge);
        }
        if entries.is_empty() {
            return Err(EpochsError::Bad {
                entry: 1,
                reason: "a history holds at least one epoch",
            });
        }
        for (i, e) in entries.iter().enumerate() {
            let bad = |reason| EpochsError::Bad {
                entry: i + 1,
                reason,
            };
            if e.epoch == 0 {
                return Err(bad("epoch 0 does not exist"));
            }
            if !(1..=LSN_MAX).contains(&e.start_lsn) {
                return Err(bad("start LSN out of range"));
            }
            if let Some(previous) = i.checked_sub(1).and_then(|p| entries.get(p)) {
                if e.epoch <= previous.epoch {
                    return Err(bad("epochs must increase"));
                }
                if e.start_lsn < previous.start_lsn {
                    return Err(bad("start LSNs must not decrease"));
                }
            }
        }
        Ok(Self { entries })
    }

    /// The epochs, oldest first.
    #[must_use]
    pub fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    /// The newest epoch.
    #[must_use]
    #[expect(
        clippy::missing_panics_doc,
        reason = "every constructor refuses an empty history"
    )]
    pub fn latest(&self) -> EpochStart {
        *self
            .entries
            .last()
            .expect("a history is never empty: from_entries refuses none")
    }

    /// This history with `epoch` starting at `start_lsn` appended.
    ///
    /// # Errors
    /// An epoch not above the latest, a start LSN before the latest's, or too many epochs.
    pub fn with(&self, epoch: Epoch, start_lsn: Lsn) -> Result<Self, EpochsError> {
        let mut entries = self.entries.clone();
        entries.push(EpochStart { epoch, start_lsn });
        Self::from_entries(entries)
    }

    /// The epoch in force at `lsn` (0 before the first epoch starts).
    #[must_use]
    pub fn epoch_at(&self, lsn: Lsn) -> Epoch {
        let at = self.entries.partition_point(|e| e.start_lsn <= lsn);
        at.checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map_or(0, |e| e.epoch)
    }

    /// Parses a history file.
    ///
    /// # Errors
    /// A file too large, a wrong first line, a malformed entry or a broken order.
    pub fn parse(bytes: &[u8]) -> Result<Self, EpochsError> {
        if bytes.len() > EPOCHS_FILE_MAX_BYTES {
            return Err(EpochsError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| EpochsError::Bad {
            entry: 0,
            reason: "not UTF-8",
        })?;
        let mut lines = text.lines();
        if lines.next() != Some(EPOCHS_MAGIC_LINE) {
            return Err(EpochsError::Bad {
                entry: 0,
                reason: "the first line must be `shiplog-epoch-history 1`",
            });
        }
        let mut entries = Vec::new();
        for (i, line) in lines.enumerate() {
            if entries.len() == EPOCHS_MAX {
                return Err(EpochsError::TooLarge);
            }
            let bad = |reason| EpochsError::Bad {
                entry: i + 1,
                reason,
            };
            let (epoch, start) = line
                .split_once(' ')
                .ok_or(bad("an entry is `<epoch> <start LSN>`"))?;
            let digits =
                |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(epoch) || !digits(start) {
                return Err(bad("an entry is two decimal numbers"));
            }
            entries.push(EpochStart {
                epoch: epoch.parse().map_err(|_| bad("epoch out of range"))?,
                start_lsn: start.parse().map_err(|_| bad("start LSN out of range"))?,
            });
        }
        Self::from_entries(entries)
    }

    /// The text of the history file.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = format!("{EPOCHS_MAGIC_LINE}\n");
        for e in &self.entries {
            let _ = writeln!(out, "{} {}", e.epoch, e.start_lsn);
        }
        out
    }

    /// Decodes the wire form: `[epoch: u32][start_lsn: u64]` per epoch, oldest first.
    ///
    /// # Errors
    /// A length that is not a whole number of entries, and everything
    /// [`EpochHistory::from_entries`] refuses.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, EpochsError> {
        if !bytes.len().is_multiple_of(EPOCH_WIRE_BYTES) {
            return Err(EpochsError::Bad {
                entry: bytes.len() / EPOCH_WIRE_BYTES + 1,
                reason: "a partial entry",
            });
        }
        if bytes.len() / EPOCH_WIRE_BYTES > EPOCHS_MAX {
            return Err(EpochsError::TooLarge);
        }
        Self::from_entries(
            bytes
                .as_chunks::<EPOCH_WIRE_BYTES>()
                .0
                .iter()
                .map(|c| EpochStart {
                    epoch: LE::read_u32(&c[0..4]),
                    start_lsn: LE::read_u64(&c[4..12]),
                })
                .collect(),
        )
    }

    /// Appends the wire form to `out`.
    pub fn to_wire(&self, out: &mut Vec<u8>) {
        for e in &self.entries {
            out.extend_from_slice(&e.epoch.to_le_bytes());
            out.extend_from_slice(&e.start_lsn.to_le_bytes());
        }
    }

    /// The last LSN up to which `self` and `other` give every LSN the same epoch, capped at
    /// `last_lsn` (the last LSN the node holding `self` has): the records up to it are the
    /// same on both nodes, those after it on that node were never written by `other`'s
    /// lineage (Kafka's leader-epoch truncation).
    #[must_use]
    pub fn fork_point(&self, other: &Self, last_lsn: Lsn) -> Lsn {
        // Both are step functions of the LSN: they can differ first only where one steps.
        let mut steps: Vec<Lsn> = self
            .entries
            .iter()
            .chain(&other.entries)
            .map(|e| e.start_lsn)
            .chain([1])
            .collect();
        steps.sort_unstable();
        steps.dedup();
        steps
            .into_iter()
            .find(|&lsn| self.epoch_at(lsn) != other.epoch_at(lsn))
            .map_or(last_lsn, |first_different| {
                last_lsn.min(first_different - 1)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(Epoch, Lsn)]) -> EpochHistory {
        EpochHistory::from_entries(
            entries
                .iter()
                .map(|&(epoch, start_lsn)| EpochStart { epoch, start_lsn })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn file_and_wire_forms_round_trip() {
        let h = history(&[(1, 1), (2, 101), (5, 101), (6, 250)]);
        assert_eq!(EpochHistory::parse(h.encode().as_bytes()), Ok(h.clone()));
        let mut wire = Vec::new();
        h.to_wire(&mut wire);
        assert_eq!(wire.len(), 4 * EPOCH_WIRE_BYTES);
        assert_eq!(EpochHistory::from_wire(&wire), Ok(h));
    }

    #[test]
    fn bad_histories_are_refused() {
        for text in [
            "",
            "shiplog-epoch-history 2\n1 1\n",
            "shiplog-epoch-history 1\n",
            "shiplog-epoch-history 1\n0 1\n",
            "shiplog-epoch-history 1\n1 0\n",
            "shiplog-epoch-history 1\n2 1\n1 5\n",
            "shiplog-epoch-history 1\n1 5\n2 4\n",
            "shiplog-epoch-history 1\n1 1\n1 1\n",
            "shiplog-epoch-history 1\n1  1\n",
            "shiplog-epoch-history 1\n+1 1\n",
            "shiplog-epoch-history 1\n1 9223372036854775808\n",
            "shiplog-epoch-history 1\n4294967296 1\n",
        ] {
            assert!(EpochHistory::parse(text.as_bytes()).is_err(), "{text:?}");
        }
        assert!(EpochHistory::from_wire(&[0; 11]).is_err());
        assert!(EpochHistory::from_wire(&[]).is_err());
    }

    #[test]
    fn epoch_at_follows_the_steps() {
        let h = history(&[(1, 1), (3, 101), (4, 101), (7, 300)]);
        assert_eq!(h.epoch_at(0), 0);
        assert_eq!(h.epoch_at(1), 1);
        assert_eq!(h.epoch_at(100), 1);
        assert_eq!(h.epoch_at(101), 4);
        assert_eq!(h.epoch_at(299), 4);
        assert_eq!(h.epoch_at(300), 7);
        assert_eq!(h.epoch_at(u64::MAX), 7);
    }

    #[test]
    fn fork_points() {
        let old_primary = history(&[(1, 1)]);
        let new_primary = history(&[(1, 1), (2, 101)]);
        // The old primary wrote 101..=110 in epoch 1 that the new one never had.
        assert_eq!(old_primary.fork_point(&new_primary, 110), 100);
        // A replica that stopped at 90 keeps everything.
        assert_eq!(old_primary.fork_point(&new_primary, 90), 90);
        // The same lineage: nothing to cut.
        assert_eq!(new_primary.fork_point(&new_primary, 500), 500);
        // A node promoted itself at 101 (epoch 2) while another took epoch 3 at 96.
        let split = history(&[(1, 1), (2, 101)]);
        let winner = history(&[(1, 1), (3, 96)]);
        assert_eq!(split.fork_point(&winner, 120), 95);
        // An epoch that wrote nothing changes nothing.
        let quiet = history(&[(1, 1), (2, 50), (3, 50)]);
        let other = history(&[(1, 1), (3, 50)]);
        assert_eq!(quiet.fork_point(&other, 80), 80);
        // Histories that disagree from the first LSN share nothing.
        assert_eq!(history(&[(2, 1)]).fork_point(&old_primary, 40), 0);
    }
}
