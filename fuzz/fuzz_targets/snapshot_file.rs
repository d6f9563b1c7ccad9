//! Fuzz target: arbitrary bytes as a whole snapshot file, zstd body included. See
//! `shiplog::fuzzing::snapshot_file`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::snapshot_file(data);
});
