//! shiplog: a log-structured key-value storage engine whose write-ahead log is shipped to
//! replicas.
//!
//! The modules, bottom up:
//!
//! - [`sync`]: locks that ignore poisoning, so one panicking thread does not stop the others.
//! - [`format`](mod@format): pure encoding and decoding of every byte on disk and on the wire.
//! - [`io`]: the file-system boundary, real or simulated (crash images, injected I/O errors).
//! - [`wal`]: the segmented write-ahead log: group commit, recovery, epochs, rewind, retention.
//! - [`engine`]: the key-value store on the log ([`Db`]): index, batches, compaction.
//! - [`snapshot`]: the whole state at one LSN in one file, for backups and replica bootstrap.
//! - [`repl`]: log shipping between a primary and its replicas.
//! - [`server`]: the Redis-protocol server of `shiplogd`, replication roles and failover.
//! - [`resp_conn`]: one blocking RESP client connection (the admin tool, the load generator,
//!   promotion queries), over the client codec in `format::resp_reply`.
//! - [`loadgen`]: a load generator that drives a running server from outside (`shiplog load`).
//! - [`fuzzing`]: the bodies of the fuzz targets, shared with the corpus replay test.
//!
//! ```
//! use shiplog::{Durability, RecordKind, Wal, wal::Options};
//!
//! let dir = tempfile::tempdir()?;
//! let wal = Wal::open(dir.path(), Options::default())?;
//! let kind = RecordKind::new(1).expect("1 is a valid kind");
//! let lsn = wal.append(kind, b"hello", Durability::Sync)?;
//! let record = wal.read(lsn)?.expect("just written");
//! assert_eq!(&*record.payload, b"hello"); // a view into the mapped segment, not a copy
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```
//! use shiplog::{Db, DbOptions, WriteBatch};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path(), DbOptions::default())?;
//! db.put(b"user:1", b"ada")?;
//! let mut batch = WriteBatch::new();
//! batch.put(b"user:2", b"grace").delete(b"user:1");
//! db.write_batch(&batch)?;
//! assert_eq!(&*db.get(b"user:2")?.expect("written"), b"grace");
//! assert!(db.get(b"user:1")?.is_none());
//! let keys: Vec<_> = db.scan_prefix(b"user:").map(|e| e.map(|(k, _)| k)).collect::<Result<_, _>>()?;
//! assert_eq!(keys, [Box::from(&b"user:2"[..])]);
//! db.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// `unsafe` is denied in the whole crate, and forbidden (no `allow` below can lift it) in every
// module but `io`, whose `real` submodule alone maps files and resets SIGPIPE
// (docs/design.md, "`unsafe` inventory"). A new module falls under the `deny`, so `unsafe`
// anywhere else takes an `allow` or an edit of these lines, either of them plain in review.
#![deny(unsafe_code)]

#[forbid(unsafe_code)]
pub mod engine;
#[forbid(unsafe_code)]
pub mod format;
#[forbid(unsafe_code)]
pub mod fuzzing;
pub mod io;
#[forbid(unsafe_code)]
pub mod loadgen;
#[forbid(unsafe_code)]
pub mod repl;
#[forbid(unsafe_code)]
pub mod resp_conn;
#[forbid(unsafe_code)]
pub mod server;
#[forbid(unsafe_code)]
pub mod snapshot;
#[forbid(unsafe_code)]
pub mod sync;
#[forbid(unsafe_code)]
pub mod wal;

pub use engine::{Db, DbError, DbOptions, Value, WriteBatch};
pub use format::{Epoch, Lsn, RecordKind};
pub use wal::{Durability, Entry, LsnRange, Options, Wal, WalError};
