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
