//! Writing and loading index checkpoints (`index.ckpt`), so a restart rebuilds the index from
//! one sequential file and replays only the log after it. A checkpoint is never trusted: any
//! doubt (checksum, structure, cluster, LSN range, a segment that is gone) and the index is
//! rebuilt from the log instead.

use std::path::Path;

use crate::format::Lsn;
use crate::format::RECORD_PAYLOAD_MAX_BYTES;
use crate::format::checkpoint::{
    CheckpointEntry, CheckpointHeader, CheckpointImage, encode_checkpoint_entry,
};
use crate::io::FileSystem;
use crate::wal::{Wal, WalError};

use super::index::{Index, Location};

/// Name of the checkpoint file in the data directory.
pub const CHECKPOINT_FILE_NAME: &str = "index.ckpt";
const TEMP_NAME: &str = "index.ckpt.tmp";
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Writes the index durably as the directory's checkpoint, replacing any earlier one.
pub(crate) fn write(
    fs: &dyn FileSystem,
    dir: &Path,
    cluster_id: u128,
    applied_lsn: Lsn,
    index: &Index,
    segments: &[(Lsn, u64)],
) -> Result<(), WalError> {
    let temp = dir.join(TEMP_NAME);
    let io = |op| move |e| WalError::io(op, dir.join(TEMP_NAME), e);
    if fs
        .list(dir)
        .map_err(|e| WalError::io("list", dir, e))?
        .iter()
        .any(|n| n == TEMP_NAME)
    {
        fs.remove(&temp).map_err(io("remove stale"))?;
    }
    let file = fs.create(&temp).map_err(io("create"))?;
    let header = CheckpointHeader {
        cluster_id,
        applied_lsn,
        entry_count: index.len() as u64,
    };
    let mut crc = crc32fast::Hasher::new();
    let mut buffer = header.encode().to_vec();
    let mut offset = 0u64;
    let mut flush = |buffer: &mut Vec<u8>, crc: &mut crc32fast::Hasher| -> Result<(), WalError> {
        crc.update(buffer);
        file.write_all_at(buffer, offset).map_err(io("write"))?;
        offset += buffer.len() as u64;
        buffer.clear();
        Ok(())
    };
    for (key, location) in index.iter() {
        let entry = CheckpointEntry {
            key,
            lsn: location.lsn,
            segment: segment_holding(segments, location.lsn),
            offset: location.offset,
            value_bytes: location.value_bytes,
        };
        encode_checkpoint_entry(&mut buffer, &entry);
        if buffer.len() >= WRITE_CHUNK_BYTES {
            flush(&mut buffer, &mut crc)?;
        }
    }
    flush(&mut buffer, &mut crc)?;
    buffer.extend_from_slice(&crc.clone().finalize().to_le_bytes());
    file.write_all_at(&buffer, offset).map_err(io("write"))?;
    // IMPORTANT: the contents must be durable before the rename makes them the checkpoint.
    file.sync_data().map_err(io("fdatasync"))?;
    fs.rename(&temp, &dir.join(CHECKPOINT_FILE_NAME))
        .map_err(io("rename"))?;
    fs.sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))
}

/// First LSN of the segment whose range holds `lsn` (the segment list is in LSN order).
fn segment_holding(segments: &[(Lsn, u64)], lsn: Lsn) -> Lsn {
    let at = segments.partition_point(|&(first, _)| first <= lsn);
    at.checked_sub(1).map_or(0, |i| segments[i].0)
}

/// Removes the checkpoint, durably, if there is one.
pub(crate) fn remove(fs: &dyn FileSystem, dir: &Path) -> Result<(), WalError> {
    let names = fs.list(dir).map_err(|e| WalError::io("list", dir, e))?;
    if names.iter().any(|n| n == CHECKPOINT_FILE_NAME) {
        let path = dir.join(CHECKPOINT_FILE_NAME);
        fs.remove(&path)
            .map_err(|e| WalError::io("remove", &path, e))?;
        fs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync directory", dir, e))?;
    }
    Ok(())
}

/// What happened to the checkpoint at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// No checkpoint file: the index was rebuilt from the whole log.
    Missing,
    /// Loaded; the log was replayed after this LSN.
    Loaded { applied_lsn: Lsn, entries: u64 },
    /// Present but not usable (the reason); the index was rebuilt from the whole log.
    Ignored(String),
}

/// Loads the checkpoint if it is valid for this log.
pub(crate) fn load(
    fs: &dyn FileSystem,
    dir: &Path,
    wal: &Wal,
) -> (Option<(Index, Lsn)>, CheckpointStatus) {
    match try_load(fs, dir, wal) {
        Ok(None) => (None, CheckpointStatus::Missing),
        Ok(Some((index, lsn))) => {
            let entries = index.len() as u64;
            (
                Some((index, lsn)),
                CheckpointStatus::Loaded {
                    applied_lsn: lsn,
                    entries,
                },
            )
        }
        Err(reason) => (None, CheckpointStatus::Ignored(reason)),
    }
}

fn try_load(fs: &dyn FileSystem, dir: &Path, wal: &Wal) -> Result<Option<(Index, Lsn)>, String> {
    let names = fs.list(dir).map_err(|e| e.to_string())?;
    if !names.iter().any(|n| n == CHECKPOINT_FILE_NAME) {
        return Ok(None);
    }
    let file = fs
        .open(&dir.join(CHECKPOINT_FILE_NAME), false)
        .map_err(|e| e.to_string())?;
    let mapping = file.map().map_err(|e| e.to_string())?;
    let image = CheckpointImage::parse(mapping.bytes(), RECORD_PAYLOAD_MAX_BYTES)
        .map_err(|e| e.to_string())?;
    let header = image.header;
    if header.cluster_id != wal.cluster_id() {
        return Err(format!("it belongs to cluster {:032x}", header.cluster_id));
    }
    if header.applied_lsn > wal.written_lsn() || header.applied_lsn + 1 < wal.first_lsn() {
        return Err(format!(
            "it is at LSN {}, outside the log's LSNs {}..={}",
            header.applied_lsn,
            wal.first_lsn(),
            wal.written_lsn()
        ));
    }
    let segments = wal.segment_extents();
    let mut entries = Vec::with_capacity(usize::try_from(header.entry_count).unwrap_or(0));
    for entry in image.entries() {
        // The segment holding the entry's LSN must be the one the entry names.
        let holder = segments
            .partition_point(|&(first, _)| first <= entry.lsn)
            .checked_sub(1);
        let known = holder.is_some_and(|i| {
            segments[i].0 == entry.segment && u64::from(entry.offset) < segments[i].1
        });
        if !known {
            return Err(format!(
                "an entry points into segment {} offset {}, which does not exist",
                entry.segment, entry.offset
            ));
        }
        let location = Location {
            lsn: entry.lsn,
            offset: entry.offset,
            value_bytes: entry.value_bytes,
        };
        entries.push((entry.key, location));
    }
    Ok(Some((Index::from_sorted(entries), header.applied_lsn)))
}
