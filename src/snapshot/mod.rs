//! Snapshots: the whole key-value state at one LSN in one checksummed, zstd-compressed file
//! (`docs/format.md`, "Snapshot file"), for bootstrapping replicas and for backups. Creating
//! one reads a frozen view of sealed segments, so writers never wait for it; reading one
//! streams, with memory bounded by the format's caps whatever the file claims; restoring one
//! writes a new store into a temporary directory that is renamed into place only once the
//! whole file has been verified.

mod builds;
mod error;
mod read;
mod restore;
mod write;

pub use builds::{SNAPSHOTS_DIR, SnapshotBuilds, SnapshotFile};
pub use error::{Result, SnapshotError};
pub use read::{SnapshotInfo, read_header, read_snapshot, verify_snapshot};
pub use restore::{BaseSegments, install_base, restore_snapshot, restore_snapshot_with};
pub use write::{SnapshotSummary, create_snapshot_file, create_snapshot_file_in, write_snapshot};

/// Default zstd level: level 1 compresses key-value data faster than level 3 and, on such data,
/// about as well (`docs/benchmarks.md`, "Snapshots").
pub const DEFAULT_LEVEL: i32 = 1;

/// Largest zstd window a reader accepts (2^24 bytes): every level up to 19 stays below it, and
/// it bounds the decoder's memory whatever a hostile frame asks for.
pub const WINDOW_LOG_MAX: u32 = 24;
