//! Fuzz target: arbitrary bytes as a pipeline of RESP server replies, decoded as a client
//! decodes them (the first byte picks the limits). See `shiplog::fuzzing::resp_reply`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::resp_reply(data);
});
