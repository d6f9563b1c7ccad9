//! The file-system boundary. Every byte the log stores goes through [`FileSystem`] and
//! [`LogFile`], so tests can swap the real implementation for [`SimFs`], which produces crash
//! images and injects I/O errors.

// The one module of the crate allowed `unsafe` (see the crate root).
#[allow(
    unsafe_code,
    reason = "mmap and SIGPIPE; each block has its SAFETY comment"
)]
mod real;
#[forbid(unsafe_code)]
mod sim;
#[forbid(unsafe_code)]
mod whole_file;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use real::{RealFs, restore_default_sigpipe};
pub use sim::{CrashMode, SimFs, SimOp};
pub use whole_file::{read_file, replace_file, replacement_path};

/// A directory of log files: naming, creation, removal and directory durability.
#[expect(
    clippy::missing_errors_doc,
    reason = "every method fails only with the OS's error for that call"
)]
pub trait FileSystem: Send + Sync + Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly inside `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `path` empty for reading and writing; fails if a file of that name exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn LogFile>>;
    /// Opens an existing file, for writing too when `writable`.
    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn LogFile>>;
    /// Renames a file within one directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file; open handles and mappings stay usable.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals inside `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Names of every entry directly inside `dir`, files and directories; none if it is missing.
    fn entries(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Renames the directory `from` to `to`, in the same parent; `to` must be missing or empty.
    /// Durable at the next `sync_dir` of the parent.
    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes `dir` and everything below it; a missing `dir` is not an error.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on `dir`, held until the guard drops.
    ///
    /// # Errors
    /// `Locked` when another holder has it, with that holder's pid when known.
    fn lock_dir(&self, dir: &Path) -> Result<Box<dyn DirLock>, LockError>;
    /// Whether a mapping shows bytes written after it was made (true for `mmap(MAP_SHARED)`).
    fn mappings_are_live(&self) -> bool;
}

/// One open file.
#[expect(
    clippy::missing_errors_doc,
    reason = "every method fails only with the OS's error for that call"
)]
pub trait LogFile: Send + Sync + Debug {
    /// Current length in bytes.
    fn size_bytes(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; fails on a short read.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: makes written data (and the size needed to read it) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves space so the file is at least `len` bytes, reading as zeros (`fallocate`).
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Cuts the file to `len` bytes (only for files nothing has mapped yet).
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// A read-only view of the whole file as it is now.
    fn map(&self) -> io::Result<Arc<dyn Mapping>>;
}

/// Read-only bytes of a mapped file; the mapping lives as long as this value.
pub trait Mapping: Send + Sync + Debug {
    /// The mapped bytes.
    fn bytes(&self) -> &[u8];
}

/// Holds a directory lock until dropped.
pub trait DirLock: Send + Sync + Debug {}

/// Why a directory lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process or instance holds the lock.
    #[error("{dir} is locked by {}; stop that process or use another directory", holder(*.holder_pid))]
    Locked {
        dir: PathBuf,
        holder_pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(
        || "another process".to_owned(),
        |pid| format!("process {pid}"),
    )
}
