//! Fuzz target: arbitrary bytes as an uncompressed snapshot image. See
//! `shiplog::fuzzing::snapshot`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::snapshot(data);
});
