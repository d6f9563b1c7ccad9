//! The running log digest of this log (see `format::digest`), computed incrementally: a cache
//! remembers the last digest computed, so asking again a little further costs only the records
//! in between.

use std::sync::{Arc, PoisonError};

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::format::Lsn;
use crate::format::digest::{digest_chain, digest_seed};

use super::Wal;
use super::error::Result;

/// The last digest computed: segment (first LSN and salt), LSN and digest there.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DigestCache {
    segment: Lsn,
    salt: u32,
    lsn: Lsn,
    digest: u64,
}

impl Wal {
    /// The digest of the segment holding `lsn`, over its records up to `lsn`; `None` when
    /// `lsn` is not written here, or its segment was compacted (its LSNs have gaps, so it is
    /// no copy of anything and is not compared).
    ///
    /// # Errors
    /// Read errors.
    pub fn digest_at(&self, lsn: Lsn) -> Result<Option<u64>> {
        if lsn == 0 || lsn > self.written_lsn() || lsn < self.first_lsn() {
            return Ok(None);
        }
        let segment = {
            let segments = self.shared.segments();
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
        let mut cache = self
            .shared
            .digest
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut at, mut digest) = match *cache {
            c if c.segment == segment.first_lsn() && c.salt == salt && c.lsn <= lsn => {
                (c.lsn, c.digest)
            }
            _ => (segment.first_lsn() - 1, digest_seed(salt)),
        };
        if at < lsn {
            for record in self.read_range(at + 1, lsn)? {
                let record = record?;
                let header_at = record.payload.start - crate::format::RECORD_HEADER_BYTES;
                let crc = LE::read_u32(&record.payload.mapping.bytes()[header_at..header_at + 4]);
                digest = digest_chain(digest, record.lsn, crc);
                at = record.lsn;
            }
        }
        debug_assert_eq!(at, lsn, "every LSN of an uncompacted segment is a record");
        *cache = DigestCache {
            segment: segment.first_lsn(),
            salt,
            lsn: at,
            digest,
        };
        Ok(Some(digest))
    }
}
