//! The store half of `shiplog verify`: live and dead bytes per segment (from a read-only replay
//! of the log) and a check of the index checkpoint against the records it points at.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::format::checkpoint::CheckpointImage;
use crate::format::kv::{KvOp, decode_kv};
use crate::format::{Lsn, RECORD_PAYLOAD_MAX_BYTES, encoded_record_bytes};
use crate::io::FileSystem;
use crate::wal::{SegmentReport, WalError, scan_dir};

use super::checkpoint::CHECKPOINT_FILE_NAME;

/// How much of a segment still holds live data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentUsage {
    /// The segment file.
    pub path: PathBuf,
    /// Bytes of records that hold a key's current value.
    pub live_bytes: u64,
    /// Bytes of superseded puts and of deletes.
    pub dead_bytes: u64,
}

/// The verdict on `index.ckpt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointVerdict {
    /// There is no checkpoint.
    Missing,
    /// Structurally valid and every entry points at a put of its key with its LSN.
    Valid { applied_lsn: Lsn, entries: u64 },
    /// Not usable; the store ignores it and rebuilds the index from the log.
    Invalid(String),
}

/// What `verify` found in a store directory.
#[derive(Debug, Clone)]
pub struct StoreReport {
    /// The log's own report, per segment.
    pub segments: Vec<SegmentReport>,
    /// Live and dead bytes per segment, in the same order (empty when the log is corrupt).
    pub usage: Vec<SegmentUsage>,
    /// The checkpoint's verdict.
    pub checkpoint: CheckpointVerdict,
}

/// Verifies a store directory without changing anything.
///
/// # Errors
/// Errors reading the log (corruption is reported per segment, not returned).
pub fn verify_store(fs: &dyn FileSystem, dir: &Path) -> Result<StoreReport, WalError> {
    // key -> (segment index, record bytes, lsn, offset)
    let mut newest: HashMap<Vec<u8>, (usize, u64, Lsn, u64)> = HashMap::new();
    let mut total: Vec<(PathBuf, u64)> = Vec::new();
    let mut puts: HashMap<(Lsn, u64), (Lsn, Vec<u8>)> = HashMap::new();
    let segments = scan_dir(fs, dir, |segment, record, offset| {
        if total.last().is_none_or(|(p, _)| *p != segment.path) {
            total.push((segment.path.clone(), 0));
        }
        let index = total.len() - 1;
        let bytes = encoded_record_bytes(record.payload.len()) as u64;
        total[index].1 += bytes;
        match decode_kv(record.kind, record.payload, RECORD_PAYLOAD_MAX_BYTES) {
            Ok(KvOp::Put { key, .. }) => {
                newest.insert(key.to_vec(), (index, bytes, record.lsn, offset));
                puts.insert((segment.first_lsn, offset), (record.lsn, key.to_vec()));
            }
            Ok(KvOp::Delete { key }) => {
                newest.remove(key);
            }
            Err(_) => {}
        }
    })?;
    let mut usage: Vec<SegmentUsage> = total
        .into_iter()
        .map(|(path, bytes)| SegmentUsage {
            path,
            live_bytes: 0,
            dead_bytes: bytes,
        })
        .collect();
    for &(index, bytes, _, _) in newest.values() {
        usage[index].live_bytes += bytes;
        usage[index].dead_bytes -= bytes;
    }
    let checkpoint = check_checkpoint(fs, dir, &puts);
    Ok(StoreReport {
        segments,
        usage,
        checkpoint,
    })
}

fn check_checkpoint(
    fs: &dyn FileSystem,
    dir: &Path,
    puts: &HashMap<(Lsn, u64), (Lsn, Vec<u8>)>,
) -> CheckpointVerdict {
    let Ok(names) = fs.list(dir) else {
        return CheckpointVerdict::Invalid("cannot list the directory".to_owned());
    };
    if !names.iter().any(|n| n == CHECKPOINT_FILE_NAME) {
        return CheckpointVerdict::Missing;
    }
    let mapping = match fs
        .open(&dir.join(CHECKPOINT_FILE_NAME), false)
        .and_then(|f| f.map())
    {
        Ok(mapping) => mapping,
        Err(e) => return CheckpointVerdict::Invalid(e.to_string()),
    };
    let image = match CheckpointImage::parse(mapping.bytes(), RECORD_PAYLOAD_MAX_BYTES) {
        Ok(image) => image,
        Err(e) => return CheckpointVerdict::Invalid(e.to_string()),
    };
    for entry in image.entries() {
        match puts.get(&(entry.segment, u64::from(entry.offset))) {
            Some((lsn, key)) if *lsn == entry.lsn && key.as_slice() == entry.key => {}
            _ => {
                return CheckpointVerdict::Invalid(format!(
                    "entry for LSN {} does not match the put at segment {} offset {}",
                    entry.lsn, entry.segment, entry.offset
                ));
            }
        }
    }
    CheckpointVerdict::Valid {
        applied_lsn: image.header.applied_lsn,
        entries: image.header.entry_count,
    }
}
