//! Fuzz target: arbitrary bytes as the head of an HTTP request to the metrics endpoint. See
//! `shiplog::fuzzing::http_request`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::http_request(data);
});
