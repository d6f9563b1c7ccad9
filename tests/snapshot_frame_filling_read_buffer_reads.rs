//! A snapshot whose last zstd frame ends exactly where the reader's 256 KiB decompression
//! buffer fills reads back whole. The reader used to take a full buffer as "more may follow"
//! even when zstd had reported the frame finished, fed the trailer to the decoder and refused
//! a good file as "Unknown frame descriptor": every body of a multiple of 256 KiB (say 4096
//! entries of 1 KiB), so such a store could be neither restored nor bootstrapped from.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

use shiplog::engine::{Db, DbOptions};
use shiplog::format::snapshot::SNAPSHOT_ENTRY_FIXED_BYTES;
use shiplog::snapshot::{read_snapshot, write_snapshot};

/// The reader's decompression buffer.
const OUTPUT_BYTES: usize = 256 << 10;
/// Every key is this long, so an entry's size is known.
const KEY_BYTES: usize = 8;

/// Writes a snapshot of one entry per size in `entry_bytes` (each whole entry that many
/// bytes), with compressible or incompressible values, and reads it back.
fn write_and_read(entry_bytes: &[usize], incompressible: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for (i, &bytes) in entry_bytes.iter().enumerate() {
        let value: Vec<u8> = (0..bytes - SNAPSHOT_ENTRY_FIXED_BYTES - KEY_BYTES)
            .map(|j| {
                if incompressible {
                    // xorshift64: nothing for zstd to find.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                } else {
                    (j % 7) as u8
                }
            })
            .collect();
        db.put(format!("key{i:05}").as_bytes(), &value).unwrap();
    }
    let mut file = Vec::new();
    let summary = write_snapshot(&db.freeze().unwrap(), &mut file, 1, &mut |_| {}).unwrap();
    let declared: usize = entry_bytes.iter().sum();
    assert_eq!(summary.header.uncompressed_bytes, declared as u64);
    let mut entries = 0;
    let info = read_snapshot(
        &mut &file[..],
        &mut |_, _| {
            entries += 1;
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("a good snapshot of {entry_bytes:?} bytes is refused: {e}"));
    assert_eq!(entries, entry_bytes.len());
    assert_eq!(info.file_bytes, file.len() as u64);
}

#[test]
fn one_frame_of_one_buffer() {
    write_and_read(&[OUTPUT_BYTES], false);
    write_and_read(&[OUTPUT_BYTES], true);
}

#[test]
fn one_frame_of_several_buffers() {
    write_and_read(&[OUTPUT_BYTES, OUTPUT_BYTES], false);
    write_and_read(&[16 * OUTPUT_BYTES], false);
}

#[test]
fn frames_each_ending_on_a_buffer() {
    // The writer closes a frame once it holds 4 MiB: two entries of 4 MiB are two frames.
    write_and_read(&[16 * OUTPUT_BYTES, 16 * OUTPUT_BYTES], false);
}

#[test]
fn one_byte_either_side_still_reads() {
    write_and_read(&[OUTPUT_BYTES - 1], false);
    write_and_read(&[OUTPUT_BYTES + 1], false);
}
