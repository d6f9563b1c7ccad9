//! Fuzz target: arbitrary bytes as a stream of log-shipping frames. See
//! `shiplog::fuzzing::repl_frame`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::repl_frame(data);
});
