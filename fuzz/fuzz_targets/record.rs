//! Arbitrary bytes as one record: the first four bytes are the CRC salt, the rest the record
//! (and, as a side check, a segment header). See `shiplog::fuzzing::record_decode`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::record_decode(data);
});
