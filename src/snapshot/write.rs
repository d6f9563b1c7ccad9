//! Writing a snapshot: header, one zstd frame of entries in key order, trailer.

use std::io::Write;
use std::path::Path;

use crate::engine::FrozenState;
use crate::format::snapshot::{
    SNAPSHOT_ENTRY_FIXED_BYTES, SnapshotHeader, SnapshotTrailer, encode_entry,
};
use crate::io::{FileSystem, LogFile, RealFs};

use super::error::{Result, SnapshotError};

/// Uncompressed bytes per zstd frame (a frame holds whole entries: one bigger value makes a
/// bigger frame).
pub const FRAME_BYTES: usize = 4 << 20;

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
/// The body is a run of zstd frames of about [`FRAME_BYTES`] each, each compressed in one call
/// on a second thread while this one gathers the next: one-shot compression of contiguous
/// input is zstd's fastest path (the streaming encoder works from a ring buffer and took 40%
/// longer here, `docs/benchmarks.md`), and gathering overlaps compressing.
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
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(compression)?;
    compressor
        .set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))
        .map_err(compression)?;
    let done = compress_body(state, &mut counted, compressor, progress)?;
    debug_assert_eq!(done, header.uncompressed_bytes);
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

/// Compresses the entries into frames on a second thread while this one gathers the next
/// chunk, and writes the frames in order; returns the uncompressed bytes.
fn compress_body(
    state: &FrozenState,
    counted: &mut CrcWriter<'_>,
    mut compressor: zstd::bulk::Compressor<'static>,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let stream = "<snapshot stream>";
    let compression = |e: std::io::Error| SnapshotError::Compression(e.to_string());
    std::thread::scope(|scope| -> Result<u64> {
        // Chunks go to the compressing thread and come back compressed, with the chunk's
        // buffer for reuse; at most two are in flight, so memory stays a few frames.
        let (to_compress, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        let (to_write, compressed) =
            std::sync::mpsc::sync_channel::<std::io::Result<(Vec<u8>, Vec<u8>)>>(1);
        let worker = scope.spawn(move || {
            for chunk in chunks {
                let bound = zstd::zstd_safe::compress_bound(chunk.len());
                let mut frame = Vec::with_capacity(bound);
                let result = compressor
                    .compress_to_buffer(chunk.as_slice(), &mut frame)
                    .map(|_| (chunk, frame));
                if to_write.send(result).is_err() {
                    return;
                }
            }
        });
        let write_one = |counted: &mut CrcWriter<'_>| -> Result<Option<Vec<u8>>> {
            match compressed.recv() {
                Ok(Ok((mut chunk, frame))) => {
                    counted
                        .write_all(&frame)
                        .map_err(SnapshotError::io("write", stream))?;
                    chunk.clear();
                    Ok(Some(chunk))
                }
                Ok(Err(e)) => Err(compression(e)),
                Err(_) => Err(SnapshotError::Compression(
                    "the compressing thread ended early".into(),
                )),
            }
        };
        let mut in_flight = 0usize;
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut chunk = Vec::with_capacity(FRAME_BYTES + 4096);
        let mut done = 0u64;
        let mut entries = state.entries().peekable();
        // At least one frame, even for an empty store: readers expect a body.
        let mut first = true;
        while first || entries.peek().is_some() {
            first = false;
            while chunk.len() < FRAME_BYTES {
                let Some(entry) = entries.next() else { break };
                let (key, value) = entry?;
                encode_entry(&mut chunk, key, &value);
            }
            done += chunk.len() as u64;
            let next = spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(FRAME_BYTES + 4096));
            if to_compress
                .send(std::mem::replace(&mut chunk, next))
                .is_err()
            {
                break;
            }
            in_flight += 1;
            if in_flight == 2 {
                spare.extend(write_one(counted)?);
                in_flight -= 1;
            }
            progress(done);
        }
        drop(to_compress);
        while in_flight > 0 {
            spare.extend(write_one(counted)?);
            in_flight -= 1;
        }
        if worker.join().is_err() {
            return Err(SnapshotError::Compression(
                "the compressing thread panicked".into(),
            ));
        }
        Ok(done)
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
    create_snapshot_file_in(&RealFs, state, path, level, progress)
}

/// [`create_snapshot_file`] through `fs`.
///
/// # Errors
/// As [`create_snapshot_file`].
pub fn create_snapshot_file_in(
    fs: &dyn FileSystem,
    state: &FrozenState,
    path: &Path,
    level: i32,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotSummary> {
    let name = path
        .file_name()
        .map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
    let temp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    // A temporary file of an earlier attempt by a process of the same pid is garbage.
    if fs.open(&temp, false).is_ok() {
        fs.remove(&temp)
            .map_err(SnapshotError::io("remove", &temp))?;
    }
    let file = fs
        .create(&temp)
        .map_err(SnapshotError::io("create", &temp))?;
    let result = (|| {
        let mut writer = std::io::BufWriter::with_capacity(
            1 << 20,
            FileWriter {
                file: file.as_ref(),
                offset: 0,
            },
        );
        let summary = write_snapshot(state, &mut writer, level, progress)?;
        writer
            .into_inner()
            .map_err(|e| SnapshotError::io("write", &temp)(e.into_error()))?;
        file.sync_data()
            .map_err(SnapshotError::io("fsync", &temp))?;
        fs.rename(&temp, path)
            .map_err(SnapshotError::io("rename", path))?;
        // A bare file name lives in the current directory, which needs its sync as much.
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs.sync_dir(parent)
            .map_err(SnapshotError::io("fsync directory", parent))?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = fs.remove(&temp);
    }
    result
}

/// Appends to a [`LogFile`] through `std::io::Write`.
struct FileWriter<'a> {
    file: &'a dyn LogFile,
    offset: u64,
}

impl std::io::Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all_at(buf, self.offset)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
