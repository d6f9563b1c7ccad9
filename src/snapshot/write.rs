//! Writing a snapshot: header, one zstd frame of entries in key order, trailer.

use std::io::Write;
use std::path::Path;

use crate::engine::FrozenState;
use crate::format::snapshot::{
    SNAPSHOT_ENTRY_FIXED_BYTES, SnapshotHeader, SnapshotTrailer, encode_entry, encode_entry_head,
};

use super::error::{Result, SnapshotError};

/// Entries are gathered into chunks of this size before compression; bigger values go to the
/// compressor straight from the mapped segment.
const CHUNK_BYTES: usize = 1 << 20;

/// What a written snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Its header.
    pub header: SnapshotHeader,
    /// Bytes of the whole file.
    pub file_bytes: u64,
}

/// Counts and checksums what passes through to the inner writer.
struct CrcWriter<'a> {
    inner: &'a mut dyn Write,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl Write for CrcWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streams `state` as a snapshot into `out` at zstd `level`; `progress` is told the
/// uncompressed bytes written so far.
///
/// # Errors
/// Reading the frozen state, or writing `out`.
pub fn write_snapshot(
    state: &FrozenState,
    out: &mut dyn Write,
    level: i32,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotSummary> {
    let header = SnapshotHeader {
        cluster_id: state.cluster_id(),
        lsn: state.lsn(),
        epoch: state.epoch(),
        key_count: state.key_count(),
        uncompressed_bytes: state.key_count() * SNAPSHOT_ENTRY_FIXED_BYTES as u64
            + state.live_bytes(),
    };
    let stream = "<snapshot stream>";
    let mut counted = CrcWriter {
        inner: out,
        crc: crc32fast::Hasher::new(),
        bytes: 0,
    };
    counted
        .write_all(&header.encode())
        .map_err(SnapshotError::io("write", stream))?;
    let compression = |e: std::io::Error| SnapshotError::Compression(e.to_string());
    let mut encoder =
        zstd::stream::write::Encoder::new(&mut counted, level).map_err(compression)?;
    encoder.include_checksum(true).map_err(compression)?;
    // The frame then states its size, and zstd itself refuses a body of any other size.
    encoder
        .set_pledged_src_size(Some(header.uncompressed_bytes))
        .map_err(compression)?;
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut done = 0u64;
    for entry in state.entries() {
        let (key, value) = entry?;
        if value.len() > CHUNK_BYTES / 4 {
            // A big value is not copied into the chunk: its fixed bytes and key are, then the
            // value follows from the mapping.
            encode_entry_head(&mut chunk, key, value.len());
            encoder
                .write_all(&chunk)
                .and_then(|()| encoder.write_all(&value))
                .map_err(SnapshotError::io("write", stream))?;
            done += (chunk.len() + value.len()) as u64;
            chunk.clear();
            progress(done);
            continue;
        }
        encode_entry(&mut chunk, key, &value);
        if chunk.len() >= CHUNK_BYTES {
            encoder
                .write_all(&chunk)
                .map_err(SnapshotError::io("write", stream))?;
            done += chunk.len() as u64;
            chunk.clear();
            progress(done);
        }
    }
    encoder
        .write_all(&chunk)
        .map_err(SnapshotError::io("write", stream))?;
    done += chunk.len() as u64;
    progress(done);
    debug_assert_eq!(done, header.uncompressed_bytes);
    encoder.finish().map_err(compression)?;
    let body_bytes = counted.bytes - header.encode().len() as u64;
    let trailer = SnapshotTrailer {
        body_bytes,
        crc: counted.crc.clone().finalize(),
    };
    let trailer = trailer.encode();
    counted
        .inner
        .write_all(&trailer)
        .and_then(|()| counted.inner.flush())
        .map_err(SnapshotError::io("write", stream))?;
    Ok(SnapshotSummary {
        header,
        file_bytes: counted.bytes + trailer.len() as u64,
    })
}

/// Writes `state` as a snapshot file at `path`: into a temporary file beside it, synced, then
/// renamed, so `path` is only ever a whole snapshot.
///
/// # Errors
/// As [`write_snapshot`], or file errors.
pub fn create_snapshot_file(
    state: &FrozenState,
    path: &Path,
    level: i32,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotSummary> {
    let name = path
        .file_name()
        .map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
    let temp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let file = std::fs::File::create(&temp).map_err(SnapshotError::io("create", &temp))?;
    let result = (|| {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &file);
        let summary = write_snapshot(state, &mut writer, level, progress)?;
        writer
            .into_inner()
            .map_err(|e| SnapshotError::io("write", &temp)(e.into_error()))?;
        file.sync_all().map_err(SnapshotError::io("fsync", &temp))?;
        std::fs::rename(&temp, path).map_err(SnapshotError::io("rename", path))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(SnapshotError::io("fsync directory", parent))?;
        }
        Ok(summary)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
