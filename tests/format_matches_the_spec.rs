//! The worked example of docs/format.md, built byte by byte from the spec (not with the
//! encoder), must decode; and the encoder must produce exactly those bytes.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test; casts are on small test values"
)]

use shiplog::format::{RecordKind, RecordMeta, SegmentHeader, encode_record, scan_records};

fn spec_example() -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"SHPLGSEG");
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(&0x0102_0304u32.to_le_bytes());
    bytes.extend_from_slice(&1u128.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 16]);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(bytes.len(), 64);

    let mut record = Vec::new();
    record.extend_from_slice(&2u32.to_le_bytes());
    record.extend_from_slice(&1u64.to_le_bytes());
    record.extend_from_slice(&1u32.to_le_bytes());
    record.push(1);
    record.extend_from_slice(&1u32.to_le_bytes()); // durable lag: nothing was durable yet
    record.extend_from_slice(b"hi");
    let mut crc = crc32fast::Hasher::new_with_initial(0x0102_0304);
    crc.update(&record);
    bytes.extend_from_slice(&crc.finalize().to_le_bytes());
    bytes.extend_from_slice(&record);
    assert_eq!(bytes.len(), 91);
    bytes.extend_from_slice(&[0; 37]);
    bytes
}

#[test]
fn the_worked_example_decodes_and_the_encoder_reproduces_it() {
    let bytes = spec_example();
    let scan = scan_records(&bytes, 1).unwrap();
    assert_eq!(
        scan.header,
        SegmentHeader {
            cluster_id: 1,
            first_lsn: 1,
            epoch: 1,
            salt: 0x0102_0304,
            compacted_through: None
        }
    );
    assert_eq!(
        (scan.last_lsn, scan.record_count, scan.batch_end),
        (Some(1), 1, 91)
    );

    let mut encoded = scan.header.encode().to_vec();
    let meta = RecordMeta {
        lsn: 1,
        epoch: 1,
        kind: RecordKind::new(1).unwrap(),
        batch_continues: false,
        durable_lsn: 0,
    };
    encode_record(&mut encoded, 0x0102_0304, &meta, b"hi");
    assert_eq!(encoded, bytes[..91]);
}
