//! Restoring a snapshot: its entries become the base of a new log, compacted segments that
//! together cover LSNs `1..=S` (entry `i` in key order is a put record at LSN `i`, which the
//! header check `key_count <= S` makes possible), after which the log goes on at `S + 1` just
//! as the primary's does. The base goes through the same checked path as a compacted segment
//! shipped by a primary (`Wal::receive_compacted`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::kv::{KIND_PUT, decode_kv, encode_put};
use crate::format::snapshot::{SnapshotEntry, SnapshotHeader};
use crate::format::{
    Lsn, RECORD_PAYLOAD_MAX_BYTES, RecordMeta, SEGMENT_HEADER_BYTES, SegmentHeader, encode_record,
};
use crate::wal::{self, Wal};

use super::error::{Result, SnapshotError};
use super::read::{SnapshotInfo, read_header, read_snapshot};

/// Builds the base segments of a restored log from a snapshot's entries, one segment at a
/// time (memory: one segment's records).
#[derive(Debug)]
pub struct BaseSegments {
    header: SnapshotHeader,
    segment_bytes: u64,
    segment: SegmentHeader,
    records: Vec<u8>,
    next_lsn: Lsn,
    payload: Vec<u8>,
}

/// Receives each base segment: its header, file size and records.
pub type BaseSink<'a> = &'a mut dyn FnMut([u8; SEGMENT_HEADER_BYTES], u64, Vec<u8>) -> Result<()>;

impl BaseSegments {
    /// A builder for the base described by `header`, in segments of about `segment_bytes`.
    #[must_use]
    pub fn new(header: &SnapshotHeader, segment_bytes: u64) -> Self {
        Self {
            header: *header,
            segment_bytes,
            segment: Self::segment_header(header, 1),
            records: Vec::new(),
            next_lsn: 1,
            payload: Vec::new(),
        }
    }

    fn segment_header(header: &SnapshotHeader, first_lsn: Lsn) -> SegmentHeader {
        SegmentHeader {
            cluster_id: header.cluster_id,
            first_lsn,
            epoch: header.epoch,
            salt: crate::wal::random_u32(),
            compacted_through: Some(first_lsn),
        }
    }

    /// Adds the next entry, handing a full segment to `sink` first when it would not fit.
    ///
    /// # Errors
    /// An error of `sink`.
    pub fn push(&mut self, entry: SnapshotEntry<'_>, sink: BaseSink<'_>) -> Result<()> {
        self.payload.clear();
        encode_put(&mut self.payload, entry.key, entry.value);
        let record_bytes = crate::format::encoded_record_bytes(self.payload.len()) as u64;
        let full = SEGMENT_HEADER_BYTES as u64 + self.records.len() as u64 + record_bytes
            > self.segment_bytes;
        if full && !self.records.is_empty() {
            self.emit(self.next_lsn - 1, sink)?;
            self.segment = Self::segment_header(&self.header, self.next_lsn);
        }
        let meta = RecordMeta {
            lsn: self.next_lsn,
            epoch: self.header.epoch,
            kind: KIND_PUT,
            batch_continues: false,
            durable_lsn: self.next_lsn - 1,
        };
        encode_record(&mut self.records, self.segment.salt, &meta, &self.payload);
        self.next_lsn += 1;
        Ok(())
    }

    /// Hands the last segment, which runs to the snapshot's LSN, to `sink`.
    ///
    /// # Errors
    /// An error of `sink`.
    pub fn finish(mut self, sink: BaseSink<'_>) -> Result<()> {
        if self.header.lsn >= self.segment.first_lsn {
            self.emit(self.header.lsn, sink)?;
        }
        Ok(())
    }

    fn emit(&mut self, through: Lsn, sink: BaseSink<'_>) -> Result<()> {
        debug_assert!(through >= self.segment.first_lsn);
        self.segment.compacted_through = Some(through);
        let capacity = SEGMENT_HEADER_BYTES as u64 + self.records.len() as u64;
        let records = std::mem::replace(
            &mut self.records,
            Vec::with_capacity(usize::try_from(self.segment_bytes).unwrap_or(0)),
        );
        sink(self.segment.encode(), capacity, records)
    }
}

/// Reads the snapshot from `source` into `wal`, which must hold no records: its entries
/// become the log's base, LSNs `1..=S`, each segment installed durably as it is complete.
/// Nothing here checks the snapshot's trailer before installing: a caller that must not
/// install a damaged snapshot verifies it first ([`super::verify_snapshot`]).
///
/// # Errors
/// A damaged snapshot, or the log refusing or failing to take the base.
pub fn install_base(
    wal: &Wal,
    source: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotInfo> {
    let check = |kind, payload: &[u8]| {
        decode_kv(kind, payload, RECORD_PAYLOAD_MAX_BYTES)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let segment_bytes = wal.segment_bytes();
    // Segments are installed (written, synced, named) on a second thread while this one
    // decompresses and encodes the next: at most two are in memory.
    std::thread::scope(|scope| {
        let (to_install, segments) =
            std::sync::mpsc::sync_channel::<([u8; SEGMENT_HEADER_BYTES], u64, Vec<u8>)>(1);
        let install_thread = scope.spawn(move || -> Result<()> {
            for (header, capacity, records) in segments {
                wal.receive_compacted(&header, capacity, &records, &check)?;
            }
            Ok(())
        });
        let mut sink = move |header, capacity, records| {
            // A send fails only when the installer stopped on an error, reported below.
            to_install
                .send((header, capacity, records))
                .map_err(|_| SnapshotError::Compression("the installing thread stopped".into()))
        };
        let mut base: Option<BaseSegments> = None;
        let read = read_snapshot(
            source,
            &mut |header, entry| {
                base.get_or_insert_with(|| BaseSegments::new(header, segment_bytes))
                    .push(entry, &mut sink)
            },
            progress,
        )
        .and_then(|info| {
            base.take()
                .unwrap_or_else(|| BaseSegments::new(&info.header, segment_bytes))
                .finish(&mut sink)?;
            Ok(info)
        });
        drop(sink);
        let installed = install_thread.join().unwrap_or_else(|_| {
            Err(SnapshotError::Compression(
                "the installing thread panicked".into(),
            ))
        });
        // The installer's own error explains a failed send better than the send does.
        match (read, installed) {
            (_, Err(e)) | (Err(e), Ok(())) => Err(e),
            (Ok(info), Ok(())) => Ok(info),
        }
    })
}

/// Restores the snapshot file at `snapshot` as a new store in `dir`, which must not exist or
/// be empty. Everything is written into a temporary directory beside `dir`, synced, and
/// renamed to `dir` only once the whole snapshot has been verified; on any error `dir` is
/// left as it was.
///
/// # Errors
/// A damaged snapshot (nothing is left behind then), a non-empty `dir`, or I/O errors.
pub fn restore_snapshot(
    snapshot: &Path,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotInfo> {
    restore_snapshot_with(snapshot, dir, wal::Options::default(), progress)
}

/// [`restore_snapshot`] with the new log's `options`: its file system (`options.fs`; the
/// snapshot file itself is read from the operating system's) and segment size. The cluster id
/// is the snapshot's.
///
/// # Errors
/// As [`restore_snapshot`].
pub fn restore_snapshot_with(
    snapshot: &Path,
    dir: &Path,
    options: wal::Options,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotInfo> {
    let fs = Arc::clone(&options.fs);
    if !fs
        .entries(dir)
        .map_err(SnapshotError::io("list", dir))?
        .is_empty()
    {
        return Err(SnapshotError::TargetNotEmpty {
            dir: dir.to_owned(),
        });
    }
    let file = std::fs::File::open(snapshot).map_err(SnapshotError::io("open", snapshot))?;
    let mut source = std::io::BufReader::with_capacity(1 << 20, file);
    let header = read_header(&mut source)?;
    let mut source = std::io::Cursor::new(header.encode()).chain(source);
    let temp = temp_dir_beside(dir);
    fs.remove_dir_all(&temp)
        .map_err(SnapshotError::io("remove", &temp))?;
    let sync_dir = |dir: &Path| {
        fs.sync_dir(dir)
            .map_err(SnapshotError::io("fsync directory", dir))
    };
    // Set when the temporary directory must not be emptied on failure: it may be what is
    // on disk under `dir`'s name.
    let mut keep_temp = false;
    let result = (|| {
        let options = wal::Options {
            cluster_id: Some(header.cluster_id),
            prepare_next_segment: false,
            ..options
        };
        let wal = Wal::open(&temp, options)?;
        let info = install_base(&wal, &mut source, progress)?;
        wal.close()?;
        sync_dir(&temp)?;
        // An empty directory at `dir` (allowed above) is replaced by the rename.
        fs.rename_dir(&temp, dir)
            .map_err(SnapshotError::io("rename into place", dir))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
            && let Err(e) = sync_dir(parent)
        {
            // The rename may not be durable: undo it, durably, so a failed restore leaves
            // `dir` as it was (and a retry finds it empty) rather than a store it reported
            // failed. Emptying the temporary directory before the undo is durable could leave
            // a part of the store under `dir` after a power loss: if the undo fails, the
            // store stays whole wherever it is.
            let undone = fs.rename_dir(dir, &temp).is_ok() && fs.sync_dir(parent).is_ok();
            if !undone {
                keep_temp = true;
                tracing::warn!(
                    target_dir = %dir.display(),
                    temp_dir = %temp.display(),
                    "a restore failed after its rename and could not be undone: the whole \
                     restored store is in one of these directories; check with `shiplog verify`"
                );
            }
            return Err(e);
        }
        debug_assert_eq!(info.header, header);
        Ok(info)
    })();
    if result.is_err() && !keep_temp {
        let _ = fs.remove_dir_all(&temp);
    }
    result
}

fn temp_dir_beside(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(".{name}.restore-{}", std::process::id()))
}
