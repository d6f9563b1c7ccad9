//! Pure encoding and decoding of everything shiplog puts on disk: no I/O, no panics, no
//! allocation driven by input. See `docs/format.md` for the byte-level specification.
//!
//! Decoders read bytes from disk and the network, so indexing and slicing that could panic are
//! denied here: every access goes through `get`, `split_at_checked` or a fixed-width reader and
//! a short input becomes a typed error.

#![deny(clippy::indexing_slicing)]

pub mod checkpoint;
pub mod digest;
pub mod epochs;
mod error;
pub mod http;
pub mod kv;
pub mod record;
pub mod repl;
pub mod resp;
pub mod resp_reply;
pub mod scan;
pub mod segment;
pub mod slots;
pub mod snapshot;

pub use error::FormatError;
pub use record::{
    BATCH_CONTINUES, DecodedRecord, KIND_MAX, KIND_MIN, RECORD_HEADER_BYTES,
    RECORD_PAYLOAD_MAX_BYTES, RecordKind, RecordMeta, decode_record, encode_record,
    encoded_record_bytes,
};
pub use scan::{ScanEnd, SegmentScan, TailState, classify_tail, scan_records};
pub use segment::{SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SegmentHeader};

/// A log sequence number: grows by one per record, never reused. `0` means "none".
pub type Lsn = u64;

/// The largest valid LSN (2^63 − 1): LSNs at or above 2^63 are rejected when decoded, so that
/// `lsn + 1` never overflows on any input.
pub const LSN_MAX: Lsn = (1 << 63) - 1;

/// A failover generation; every record and segment carries the epoch it was written in.
pub type Epoch = u32;
