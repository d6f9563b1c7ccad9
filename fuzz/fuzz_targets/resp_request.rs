//! Fuzz target: arbitrary bytes as a pipeline of RESP client requests (the first byte picks the
//! connection's limits). See `shiplog::fuzzing::resp_request`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::resp_request(data);
});
