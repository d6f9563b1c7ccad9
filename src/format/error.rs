use thiserror::Error;

/// Why a run of bytes is not a valid header or record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes remain than the structure needs.
    #[error("truncated: need {needed} bytes, {available} available")]
    Truncated { needed: u64, available: u64 },
    /// The segment header does not start with the shiplog magic.
    #[error("bad magic: this is not a shiplog segment file")]
    BadMagic,
    /// The header was written by a format version this build does not read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    /// A field reserved for future use is not zero.
    #[error("reserved field is not zero")]
    ReservedNotZero,
    /// A checksum does not match the bytes it covers.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    /// A length field exceeds the format's limit; checked before anything is allocated.
    #[error("length {len} exceeds the limit of {max} bytes")]
    LengthTooLarge { len: u64, max: u64 },
    /// Keys that must be strictly increasing are not.
    #[error("keys out of order")]
    OutOfOrder,
    /// A declared count differs from what the bytes hold.
    #[error("declared {declared} entries, found {found}")]
    CountMismatch { declared: u64, found: u64 },
    /// Bytes follow where the structure should end.
    #[error("{extra} unexpected trailing bytes")]
    TrailingBytes { extra: u64 },
    /// An LSN is 0 (which means "none") or at least 2^63 (reserved, so LSN arithmetic never
    /// overflows).
    #[error("LSN {0} is outside the valid range 1..2^63")]
    LsnOutOfRange(u64),
    /// The durable-lag field is zero or reaches below LSN 0.
    #[error("invalid durable lag {lag} for LSN {lsn}")]
    BadDurableLag { lsn: u64, lag: u32 },
    /// The record kind is zero or otherwise outside the valid range.
    #[error("invalid record kind {0:#04x}")]
    BadKind(u8),
}
