//! shiplog: a log-structured key-value storage engine whose write-ahead log is shipped to
//! replicas.
//!
//! The layers, bottom up: [`format`] (pure encoding of bytes on disk), [`io`] (the file-system
//! boundary, real or simulated) and [`wal`] (the segmented write-ahead log with group commit).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod format;
pub mod fuzzing;
pub mod io;
pub mod wal;

pub use format::{Epoch, Lsn, RecordKind};
pub use wal::{Durability, Entry, LsnRange, Options, Wal, WalError};
