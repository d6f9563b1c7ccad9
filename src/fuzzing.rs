//! Bodies of the cargo-fuzz targets, shared with the test that replays the checked-in corpus so
//! `cargo test` exercises every finding on every run.

use crate::format::{
    RECORD_HEADER_BYTES, SegmentHeader, classify_tail, decode_record, scan_records,
};

/// Decodes arbitrary bytes as a record (salt from the first four bytes): must never panic, and a
/// decoded record must re-encode to the same bytes.
///
/// # Panics
/// When decoding breaks one of those properties: that is a bug for the fuzzer to find.
pub fn record_decode(data: &[u8]) {
    let Some((salt, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let salt = u32::from_le_bytes(*salt);
    let _ = SegmentHeader::decode(rest);
    if let Ok(record) = decode_record(rest, salt) {
        assert!(record.encoded_bytes() <= rest.len());
        assert!(record.encoded_bytes() >= RECORD_HEADER_BYTES);
        let mut again = Vec::new();
        crate::format::encode_record(&mut again, salt, &record.meta(), record.payload);
        assert_eq!(again, rest[..record.encoded_bytes()]);
    }
}

/// Runs segment recovery's pure analysis over arbitrary bytes: must never panic, and what it
/// reports must be consistent with the bytes.
///
/// # Panics
/// When the analysis contradicts the bytes: that is a bug for the fuzzer to find.
pub fn segment_recovery(data: &[u8]) {
    let Ok(scan) = scan_records(data, 4) else {
        return;
    };
    assert!(scan.batch_end <= scan.valid_end);
    assert!(scan.valid_end <= data.len() as u64);
    let last = scan
        .last_lsn
        .unwrap_or(scan.header.first_lsn.saturating_sub(1));
    let _ = classify_tail(data, scan.valid_end, scan.header.salt, last);
}

/// Decodes arbitrary bytes as a key-value payload (kind from the first byte): must never panic,
/// and a decoded put or delete must re-encode to the same bytes.
///
/// # Panics
/// When decoding breaks one of those properties: that is a bug for the fuzzer to find.
pub fn kv_payload(data: &[u8]) {
    use crate::format::RecordKind;
    use crate::format::kv::{KvOp, decode_kv, encode_delete, encode_put};
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let Some(kind) = RecordKind::new(kind & 0x7f) else {
        return;
    };
    let mut again = Vec::new();
    match decode_kv(kind, payload, 1 << 16) {
        Ok(KvOp::Put {
            key,
            value,
            value_offset,
        }) => {
            assert_eq!(&payload[value_offset..], value);
            encode_put(&mut again, key, value);
        }
        Ok(KvOp::Delete { key }) => encode_delete(&mut again, key),
        Err(_) => return,
    }
    assert_eq!(again, payload);
}

/// Parses arbitrary bytes as an index checkpoint: must never panic, and a parsed image must
/// yield exactly its declared entries in strictly increasing key order.
///
/// # Panics
/// When parsing breaks one of those properties: that is a bug for the fuzzer to find.
pub fn checkpoint(data: &[u8]) {
    use crate::format::checkpoint::CheckpointImage;
    let Ok(image) = CheckpointImage::parse(data, 1 << 20) else {
        return;
    };
    let mut count = 0u64;
    let mut previous: Option<&[u8]> = None;
    for entry in image.entries() {
        assert!(previous.is_none_or(|p| p < entry.key));
        assert!(entry.lsn >= 1 && entry.lsn <= image.header.applied_lsn);
        previous = Some(entry.key);
        count += 1;
    }
    assert_eq!(count, image.header.entry_count);
}
