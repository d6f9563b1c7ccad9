//! Reading a snapshot as a stream of zstd frames: every entry is checked against the header
//! (order, count, bytes) as it is decompressed, decompression stops at the declared size, and the trailer's
//! checksum is checked at the end. A caller must not keep anything it was handed until the
//! whole read has succeeded.

use std::io::Read;
use std::path::Path;

use zstd::stream::raw::{DParameter, Decoder, Operation};

use crate::format::FormatError;
use crate::format::snapshot::{
    EntryCheck, SNAPSHOT_HEADER_BYTES, SNAPSHOT_TRAILER_BYTES, SNAPSHOT_TRAILER_MAGIC,
    SnapshotEntry, SnapshotHeader, SnapshotTrailer, decode_entry,
};

use super::WINDOW_LOG_MAX;
use super::error::{Result, SnapshotError};

const INPUT_BYTES: usize = 256 << 10;
const OUTPUT_BYTES: usize = 256 << 10;

/// What a whole, verified snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its header.
    pub header: SnapshotHeader,
    /// Bytes of its compressed body.
    pub body_bytes: u64,
    /// Bytes of the whole file.
    pub file_bytes: u64,
    /// Its checksum.
    pub crc: u32,
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads and checks a snapshot's header only (the rest is not verified).
///
/// # Errors
/// A short or malformed header, or read errors.
pub fn read_header(source: &mut dyn Read) -> Result<SnapshotHeader> {
    let mut head = [0u8; SNAPSHOT_HEADER_BYTES];
    let n = read_full(source, &mut head).map_err(SnapshotError::io("read", "<snapshot>"))?;
    if n < SNAPSHOT_HEADER_BYTES {
        return Err(SnapshotError::Truncated {
            read: n as u64,
            part: "header",
        });
    }
    Ok(SnapshotHeader::decode(&head)?)
}

/// Reads a whole snapshot from `source`, handing each entry to `on_entry` in key order and
/// the compressed bytes read so far to `progress`; verifies everything, the trailer last.
///
/// # Errors
/// Any damage or lie in the file (see [`SnapshotError`]), read errors, or an error of
/// `on_entry`.
pub fn read_snapshot(
    source: &mut dyn Read,
    on_entry: &mut dyn FnMut(&SnapshotHeader, SnapshotEntry<'_>) -> Result<()>,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotInfo> {
    let io = |e| SnapshotError::io("read", "<snapshot>")(e);
    let header = read_header(source)?;
    let mut crc = crc32fast::Hasher::new();
    // The decoded header re-encodes to exactly the bytes read (checksum and reserved bytes
    // were checked).
    crc.update(&header.encode());
    let compression = |e: std::io::Error| SnapshotError::Compression(e.to_string());
    let mut decoder = Decoder::new().map_err(compression)?;
    decoder
        .set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
        .map_err(compression)?;
    let mut input = vec![0u8; INPUT_BYTES];
    let mut output = vec![0u8; OUTPUT_BYTES];
    let (mut pos, mut filled) = (0, 0);
    let mut pending: Vec<u8> = Vec::new();
    let mut check = EntryCheck::new(&header);
    let (mut consumed, mut produced) = (0u64, 0u64);
    let mut output_full = false;
    let mut between_frames = false;
    loop {
        if pos == filled && !output_full {
            filled = match read_full(source, &mut input) {
                Ok(n) => n,
                Err(e) => return Err(io(e)),
            };
            pos = 0;
            if filled == 0 {
                return Err(SnapshotError::Truncated {
                    read: SNAPSHOT_HEADER_BYTES as u64 + consumed,
                    part: "body",
                });
            }
        }
        if between_frames {
            // The trailer where another frame should be: the body ended short.
            if filled - pos < SNAPSHOT_TRAILER_MAGIC.len() {
                input.copy_within(pos..filled, 0);
                filled -= pos;
                pos = 0;
                filled += read_full(source, &mut input[filled..]).map_err(io)?;
            }
            if input[pos..filled].starts_with(&SNAPSHOT_TRAILER_MAGIC) {
                return Err(FormatError::Truncated {
                    needed: header.uncompressed_bytes,
                    available: produced,
                }
                .into());
            }
            between_frames = false;
        }
        let status = decoder
            .run_on_buffers(&input[pos..filled], &mut output)
            .map_err(compression)?;
        crc.update(&input[pos..pos + status.bytes_read]);
        pos += status.bytes_read;
        consumed += status.bytes_read as u64;
        produced += status.bytes_written as u64;
        // A full output buffer may leave decoded bytes inside the decoder, unless the frame
        // ended: zstd reports nothing remaining only once a frame is decoded and wholly flushed
        // (a frame whose last bytes fill the buffer exactly ends here too).
        output_full = status.bytes_written == output.len() && status.remaining != 0;
        if produced > header.uncompressed_bytes {
            return Err(SnapshotError::BeyondDeclared {
                declared: header.uncompressed_bytes,
            });
        }
        pending.extend_from_slice(&output[..status.bytes_written]);
        let mut at = 0;
        while let Some((entry, len)) = decode_entry(&pending[at..])? {
            check.next(&entry, len)?;
            on_entry(&header, entry)?;
            at += len;
        }
        pending.drain(..at);
        progress(SNAPSHOT_HEADER_BYTES as u64 + consumed);
        // A frame ended: the body ends with the frame that completes the declared bytes.
        if status.remaining == 0 {
            if produced == header.uncompressed_bytes {
                break;
            }
            between_frames = true;
        }
    }
    check.finish()?;
    read_trailer(
        source,
        &input[pos..filled],
        header,
        consumed,
        crc.finalize(),
    )
}

/// Reads the trailer (`buffered` are its first bytes, already read) and checks it against the
/// body: its length and the checksum of header and body.
fn read_trailer(
    source: &mut dyn Read,
    buffered: &[u8],
    header: SnapshotHeader,
    consumed: u64,
    computed: u32,
) -> Result<SnapshotInfo> {
    let mut tail = [0u8; SNAPSHOT_TRAILER_BYTES + 1];
    if buffered.len() > tail.len() {
        return Err(SnapshotError::TrailingBytes);
    }
    let mut have = buffered.len();
    tail[..have].copy_from_slice(buffered);
    have +=
        read_full(source, &mut tail[have..]).map_err(SnapshotError::io("read", "<snapshot>"))?;
    if have < SNAPSHOT_TRAILER_BYTES {
        return Err(SnapshotError::Truncated {
            read: SNAPSHOT_HEADER_BYTES as u64 + consumed + have as u64,
            part: "trailer",
        });
    }
    if have > SNAPSHOT_TRAILER_BYTES {
        return Err(SnapshotError::TrailingBytes);
    }
    let trailer = SnapshotTrailer::decode(&tail[..SNAPSHOT_TRAILER_BYTES])?;
    if trailer.body_bytes != consumed {
        return Err(SnapshotError::BodyLength {
            stored: trailer.body_bytes,
            found: consumed,
        });
    }
    if trailer.crc != computed {
        return Err(SnapshotError::Checksum {
            stored: trailer.crc,
            computed,
        });
    }
    Ok(SnapshotInfo {
        header,
        body_bytes: consumed,
        file_bytes: (SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES) as u64 + consumed,
        crc: computed,
    })
}

/// Reads the snapshot file at `path` whole and verifies it, keeping nothing.
///
/// # Errors
/// As [`read_snapshot`], or the file cannot be opened.
pub fn verify_snapshot(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<SnapshotInfo> {
    let file = std::fs::File::open(path).map_err(SnapshotError::io("open", path))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    read_snapshot(&mut reader, &mut |_, _| Ok(()), progress)
}
