//! Fuzz target: arbitrary bytes as a `shiplogd` TOML config file. See `shiplog::fuzzing::config`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::config(data);
});
