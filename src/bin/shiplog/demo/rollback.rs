//! What a rewind left in `rollback/`: how many records the file holds, and which of a list of
//! keys appear in them.

use std::path::Path;

use shiplog::format::{SEGMENT_HEADER_BYTES, decode_record};

/// The records of a rollback file, and how many of `keys` appear in their payloads.
pub fn count(path: &Path, keys: &[&str]) -> Result<(u64, usize), String> {
    let (mapping, header) = crate::map_segment(path)?;
    let bytes = mapping.bytes();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut records: u64 = 0;
    let mut found = vec![false; keys.len()];
    // The records end where the first one fails to decode (zeros, or the file's end).
    while let Some(Ok(record)) = bytes
        .get(offset..)
        .map(|rest| decode_record(rest, header.salt))
    {
        records += 1;
        for (key, seen) in keys.iter().zip(found.iter_mut()) {
            *seen |= contains(record.payload, key.as_bytes());
        }
        offset += record.encoded_bytes();
    }
    Ok((records, found.iter().filter(|f| **f).count()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
