//! The running log digest: a cheap chained checksum over a segment's records in LSN order,
//! built from each record's stored CRC (which covers its LSN, epoch, kind and payload and is
//! seeded with the segment's salt). Two nodes whose copies of a segment are byte-identical
//! have the same digest at every LSN of it; heartbeats carry the primary's digest at its
//! durable LSN and replicas compare (`docs/format.md`, "Log digest").

use super::Lsn;

/// The digest of a segment before its first record.
#[must_use]
pub fn digest_seed(salt: u32) -> u64 {
    mix(0x5348_504c_4447_5354 ^ u64::from(salt))
}

/// The digest after one more record: the previous digest, the record's LSN and stored CRC.
#[must_use]
pub fn digest_chain(previous: u64, lsn: Lsn, record_crc: u32) -> u64 {
    mix(previous ^ mix(lsn.rotate_left(32) ^ u64::from(record_crc)))
}

/// A 64-bit finaliser (`SplitMix64`'s): every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_depends_on_order_lsn_and_crc() {
        let seed = digest_seed(7);
        let ab = digest_chain(digest_chain(seed, 1, 10), 2, 20);
        let ba = digest_chain(digest_chain(seed, 1, 20), 2, 10);
        assert_ne!(ab, ba);
        assert_ne!(digest_chain(seed, 1, 10), digest_chain(seed, 2, 10));
        assert_ne!(seed, digest_seed(8));
        assert_eq!(ab, digest_chain(digest_chain(digest_seed(7), 1, 10), 2, 20));
    }
}
