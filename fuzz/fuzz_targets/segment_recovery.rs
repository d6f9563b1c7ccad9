//! Arbitrary bytes as a whole segment image: header, record scan and tail classification. See
//! `shiplog::fuzzing::segment_recovery`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shiplog::fuzzing::segment_recovery(data);
});
