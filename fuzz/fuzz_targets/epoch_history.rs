//! Fuzz target: arbitrary bytes as an epoch history (file and wire forms) and as two
//! histories to find the fork point of. See `shiplog::fuzzing::epoch_history`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::epoch_history(data);
});
