//! Fuzz target: arbitrary bytes as a retention slots file and a replica identity file. See
//! `shiplog::fuzzing::replica_files`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::replica_files(data);
});
