//! The running log digest of this log (see `format::digest`), computed incrementally: a small
//! cache remembers recent digests (one per shipping replica, in practice), so asking again a
//! little further costs only the records in between.

use std::sync::Arc;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::format::digest::{digest_chain, digest_seed};
use crate::format::{Lsn, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};

use super::Wal;
use super::error::Result;
use crate::sync::MutexExt;

/// Digests remembered: one per replica shipping at once is enough to keep each incremental.
pub(crate) const DIGEST_CACHE_ENTRIES: usize = 16;

/// A digest computed: segment (first LSN and salt), LSN and digest there.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DigestCache {
    segment: Lsn,
    salt: u32,
    lsn: Lsn,
    /// Offset just past record `lsn`.
    offset: u64,
    digest: u64,
}

pub(super) fn digest_at(wal: &Wal, lsn: Lsn) -> Result<Option<u64>> {
    if lsn == 0 || lsn > wal.written_lsn() || lsn < wal.first_lsn() {
        return Ok(None);
    }
    let segment = {
        let segments = wal.shared.segments();
        let at = segments.partition_point(|s| s.first_lsn() <= lsn);
        match at.checked_sub(1) {
            Some(index) => Arc::clone(&segments[index]),
            None => return Ok(None),
        }
    };
    if segment.is_compacted() {
        return Ok(None);
    }
    let salt = segment.header.salt;
    let mut cache = wal.shared.digest.locked();
    // The furthest usable entry: each replica's shipper advances its own.
    let usable = cache
        .iter()
        .enumerate()
        .filter(|(_, c)| c.segment == segment.first_lsn() && c.salt == salt && c.lsn <= lsn)
        .max_by_key(|(_, c)| c.lsn)
        .map(|(i, _)| i);
    let (mut at, mut offset, mut digest) = usable.map_or(
        (
            segment.first_lsn() - 1,
            SEGMENT_HEADER_BYTES as u64,
            digest_seed(salt),
        ),
        |i| (cache[i].lsn, cache[i].offset, cache[i].digest),
    );
    if at < lsn {
        // Only the record headers are read: every record here was checked whole when it
        // was appended or received, and shippers call this every heartbeat.
        let end = segment.records_end();
        let mapping = segment.view_covering(end)?;
        let bytes = mapping.bytes();
        while at < lsn {
            let Some(header) = usize::try_from(offset)
                .ok()
                .and_then(|o| bytes.get(o..o + RECORD_HEADER_BYTES))
                .filter(|_| offset + RECORD_HEADER_BYTES as u64 <= end)
            else {
                return Ok(None);
            };
            let record_lsn = LE::read_u64(&header[8..16]);
            if record_lsn != at + 1 {
                return Ok(None);
            }
            digest = digest_chain(digest, record_lsn, LE::read_u32(&header[0..4]));
            offset += RECORD_HEADER_BYTES as u64 + u64::from(LE::read_u32(&header[4..8]));
            at = record_lsn;
        }
    }
    debug_assert_eq!(at, lsn, "every LSN of an uncompacted segment is a record");
    let entry = DigestCache {
        segment: segment.first_lsn(),
        salt,
        lsn: at,
        offset,
        digest,
    };
    if let Some(i) = usable {
        cache[i] = entry;
    } else {
        if cache.len() == DIGEST_CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push(entry);
    }
    Ok(Some(digest))
}
