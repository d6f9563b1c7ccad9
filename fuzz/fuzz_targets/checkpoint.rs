//! Fuzz target: arbitrary bytes through `shiplog::fuzzing::checkpoint`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::checkpoint(data);
});
