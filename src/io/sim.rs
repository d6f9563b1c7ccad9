//! A simulated file system for tests: it remembers what is durable, so a test can cut the power
//! at any point and reopen the image a real disk could have left, and it injects I/O errors.
//!
//! Model: a write lands in the "page cache" (visible to reads and new mappings) and becomes
//! durable at the file's next `sync_data`. Creations, renames and removals become durable at the
//! next `sync_dir` of their directory. A crash keeps the durable state plus, depending on the
//! [`CrashMode`], a prefix of the unsynced writes in issue order with the last one torn at a
//! 512-byte sector boundary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{DirLock, FileSystem, LockError, LogFile, Mapping};
use crate::sync::MutexExt;

const SECTOR_BYTES: u64 = 512;

/// What survives a simulated power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write and directory change is lost.
    DropUnsynced,
    /// The first `whole_writes` unsynced writes (in issue order) survive, then the next one keeps
    /// only its first `torn_sectors` sectors; everything later is lost.
    Ordered {
        whole_writes: usize,
        torn_sectors: u64,
    },
    /// Each 512-byte sector of each unsynced write independently survives or not, chosen by a
    /// pseudo-random sequence from `seed`: writes reaching the disk in any order.
    Scattered { seed: u64 },
    /// Every unsynced write is lost, and of the directory changes (creations, renames,
    /// removals) not yet made durable by a `sync_dir`, the first `dir_changes` in issue order
    /// survive: a journaling file system that commits metadata in order, cut part-way.
    DirPrefix { dir_changes: usize },
    /// Every unsynced write is lost, and of the directory changes not yet durable, those whose
    /// bit is set in `keep` (bit `i` for the `i`-th in issue order; later than the 64th are
    /// lost) survive: a file system that commits metadata in any order.
    DirSubset { keep: u64 },
}

/// Operations that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimOp {
    /// `LogFile::sync_data`.
    SyncData,
    /// `LogFile::write_all_at`.
    Write,
    /// `LogFile::allocate`.
    Allocate,
    /// `FileSystem::create`.
    Create,
    /// `FileSystem::rename`.
    Rename,
    /// `FileSystem::sync_dir`.
    SyncDir,
    /// `FileSystem::remove`.
    Remove,
    /// `LogFile::truncate`.
    Truncate,
    /// `LogFile::map` (mmap).
    Map,
}

impl SimOp {
    /// Every operation that can be made to fail, for loops that fail each in turn.
    pub const ALL: [SimOp; 9] = [
        SimOp::SyncData,
        SimOp::Write,
        SimOp::Allocate,
        SimOp::Create,
        SimOp::Rename,
        SimOp::SyncDir,
        SimOp::Remove,
        SimOp::Truncate,
        SimOp::Map,
    ];
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges `[start, end)` a failed `sync_data` marked clean without writing them (with
    /// fsyncgate on): the page cache shows the new bytes, the disk keeps the old ones, and no
    /// later sync writes them, until they are written again.
    lost: Vec<(u64, u64)>,
}

impl Inode {
    /// Takes `[start, end)` out of the lost ranges: it was written again.
    fn rewritten(&mut self, start: u64, end: u64) {
        let mut kept = Vec::with_capacity(self.lost.len());
        for &(lo, hi) in &self.lost {
            if hi <= start || lo >= end {
                kept.push((lo, hi));
                continue;
            }
            if lo < start {
                kept.push((lo, start));
            }
            if hi > end {
                kept.push((end, hi));
            }
        }
        self.lost = kept;
    }

    /// What a successful `sync_data` leaves on disk: the page cache, except the lost ranges,
    /// which keep what the disk had (zeros past its old end).
    fn synced(&self) -> Vec<u8> {
        let mut durable = self.data.clone();
        for &(lo, hi) in &self.lost {
            let (Ok(lo), Ok(hi)) = (usize::try_from(lo), usize::try_from(hi)) else {
                continue;
            };
            for i in lo..hi.min(durable.len()) {
                durable[i] = self.durable.get(i).copied().unwrap_or(0);
            }
        }
        durable
    }
}

#[derive(Debug)]
struct UnsyncedWrite {
    inode: u64,
    offset: u64,
    bytes: Vec<u8>,
}

/// A directory change not yet durable.
#[derive(Debug, Clone)]
enum DirChange {
    /// Names inside `dir` set (`Some`) or unset (`None`) at once (a rename does both).
    Names {
        dir: PathBuf,
        names: Vec<(PathBuf, Option<u64>)>,
    },
    /// The directory `from` renamed to `to`: only what is durable under `from` moves, as a
    /// file system that commits the rename of a directory whose own entries it never
    /// committed leaves the new directory without them.
    MoveDir {
        parent: PathBuf,
        from: PathBuf,
        to: PathBuf,
    },
}

impl DirChange {
    /// The directory whose `sync_dir` makes this change durable.
    fn dir(&self) -> &Path {
        match self {
            DirChange::Names { dir, .. } => dir,
            DirChange::MoveDir { parent, .. } => parent,
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            DirChange::Names { names: changes, .. } => {
                for (path, id) in changes {
                    match id {
                        Some(id) => names.insert(path.clone(), *id),
                        None => names.remove(path),
                    };
                }
            }
            DirChange::MoveDir { from, to, .. } => {
                let moved: Vec<(PathBuf, u64)> = names
                    .iter()
                    .filter_map(|(path, &id)| Some((to.join(path.strip_prefix(from).ok()?), id)))
                    .collect();
                names.retain(|path, _| !path.starts_with(from));
                names.extend(moved);
            }
        }
    }
}

fn parent_of(path: &Path) -> PathBuf {
    // A bare name is in the current directory, which `sync_dir(".")` makes durable.
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    unsynced: Vec<UnsyncedWrite>,
    /// Directory changes not yet durable, in issue order.
    unsynced_dir: Vec<DirChange>,
    locks: HashSet<PathBuf>,
    next_inode: u64,
    faults: HashMap<SimOp, (u64, i32)>,
    op_counts: HashMap<SimOp, u64>,
    /// Whether a failed `sync_data` drops the file's dirty pages (Linux's behaviour, which
    /// Postgres developers called "fsyncgate"): see [`SimFs::set_fsyncgate`].
    fsyncgate: bool,
}

impl State {
    /// Counts an operation and returns the injected error if this call is the one to fail.
    fn check(&mut self, op: SimOp) -> io::Result<()> {
        let count = self.op_counts.entry(op).or_default();
        *count += 1;
        match self.faults.get(&op) {
            Some(&(nth, errno)) if *count == nth => Err(io::Error::from_raw_os_error(errno)),
            _ => Ok(()),
        }
    }
}

/// The simulated file system; clones share one state.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl SimFs {
    /// An empty file system.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the `nth` call (counting from 1, including calls already made) of `op` fail with
    /// the OS error `errno` (e.g. `libc`'s `EIO` = 5, `ENOSPC` = 28).
    pub fn fail_nth(&self, op: SimOp, nth: u64, errno: i32) {
        self.state.locked().faults.insert(op, (nth, errno));
    }

    /// With `on`, a failed `sync_data` behaves as Linux's writeback error handling does: the
    /// file's unsynced writes are marked clean without reaching the disk. Reads (and a
    /// restarted process) still see them in the page cache, a later `sync_data` succeeds
    /// without writing them, and a power loss reveals the old bytes, until they are written
    /// again. Kept by [`SimFs::process_crash`].
    pub fn set_fsyncgate(&self, on: bool) {
        self.state.locked().fsyncgate = on;
    }

    /// How many times `op` has been called.
    #[must_use]
    pub fn op_count(&self, op: SimOp) -> u64 {
        self.state.locked().op_counts.get(&op).copied().unwrap_or(0)
    }

    /// How many writes are not yet durable: the range of `whole_writes` worth trying in
    /// [`CrashMode::Ordered`].
    #[must_use]
    pub fn unsynced_writes(&self) -> usize {
        self.state.locked().unsynced.len()
    }

    /// How many directory changes are not yet durable: the range of `dir_changes` worth
    /// trying in [`CrashMode::DirPrefix`].
    #[must_use]
    pub fn unsynced_dir_changes(&self) -> usize {
        self.state.locked().unsynced_dir.len()
    }

    /// The image a power loss now would leave, as a new independent file system.
    ///
    /// # Panics
    /// Only if a simulated file outgrew the address space.
    #[must_use]
    pub fn crash(&self, mode: CrashMode) -> SimFs {
        let state = self.state.locked();
        let mut inodes: HashMap<u64, Inode> = state
            .inodes
            .iter()
            .map(|(&id, inode)| {
                (
                    id,
                    Inode {
                        data: inode.durable.clone(),
                        durable: inode.durable.clone(),
                        lost: Vec::new(),
                    },
                )
            })
            .collect();
        if let CrashMode::Scattered { seed } = mode {
            let mut rng = seed | 1;
            for write in &state.unsynced {
                let Some(inode) = inodes.get_mut(&write.inode) else {
                    continue;
                };
                let end = write.offset + write.bytes.len() as u64;
                let mut sector = write.offset / SECTOR_BYTES * SECTOR_BYTES;
                while sector < end {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let lo = sector.max(write.offset);
                    let hi = (sector + SECTOR_BYTES).min(end);
                    if rng & 1 == 1 {
                        let at = |x: u64| usize::try_from(x - write.offset).expect("in memory");
                        let range = at(lo)..at(hi);
                        apply_write(&mut inode.data, lo, &write.bytes[range]);
                    }
                    sector += SECTOR_BYTES;
                }
                inode.durable.clone_from(&inode.data);
            }
        }
        if let CrashMode::Ordered {
            whole_writes,
            torn_sectors,
        } = mode
        {
            for (index, write) in state.unsynced.iter().enumerate() {
                let keep = match index.cmp(&whole_writes) {
                    std::cmp::Ordering::Less => write.bytes.len(),
                    std::cmp::Ordering::Equal => {
                        let end = (write.offset / SECTOR_BYTES + torn_sectors) * SECTOR_BYTES;
                        usize::try_from(end.saturating_sub(write.offset))
                            .map_or(write.bytes.len(), |n| n.min(write.bytes.len()))
                    }
                    std::cmp::Ordering::Greater => break,
                };
                if let Some(inode) = inodes.get_mut(&write.inode) {
                    apply_write(&mut inode.data, write.offset, &write.bytes[..keep]);
                    inode.durable.clone_from(&inode.data);
                }
            }
        }
        let mut names = state.durable_names.clone();
        if let CrashMode::DirPrefix { dir_changes } = mode {
            for change in state.unsynced_dir.iter().take(dir_changes) {
                change.apply(&mut names);
            }
        }
        if let CrashMode::DirSubset { keep } = mode {
            for (i, change) in state.unsynced_dir.iter().enumerate().take(64) {
                if keep >> i & 1 == 1 {
                    change.apply(&mut names);
                }
            }
        }
        SimFs {
            state: Arc::new(Mutex::new(State {
                inodes,
                durable_names: names.clone(),
                names,
                next_inode: state.next_inode,
                ..State::default()
            })),
        }
    }

    /// The state a process crash (`kill -9`) leaves, as a new independent file system: the page
    /// cache survives (every write and name is still there), durability is unchanged (unsynced
    /// writes stay unsynced), and locks are released.
    #[must_use]
    pub fn process_crash(&self) -> SimFs {
        let state = self.state.locked();
        let inodes = state
            .inodes
            .iter()
            .map(|(&id, inode)| {
                (
                    id,
                    Inode {
                        data: inode.data.clone(),
                        durable: inode.durable.clone(),
                        lost: inode.lost.clone(),
                    },
                )
            })
            .collect();
        let unsynced = state
            .unsynced
            .iter()
            .map(|w| UnsyncedWrite {
                inode: w.inode,
                offset: w.offset,
                bytes: w.bytes.clone(),
            })
            .collect();
        SimFs {
            state: Arc::new(Mutex::new(State {
                inodes,
                names: state.names.clone(),
                durable_names: state.durable_names.clone(),
                unsynced,
                unsynced_dir: state.unsynced_dir.clone(),
                next_inode: state.next_inode,
                fsyncgate: state.fsyncgate,
                ..State::default()
            })),
        }
    }
}

fn apply_write(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = usize::try_from(offset).expect("simulated offsets fit in memory");
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    writable: bool,
}

#[derive(Debug)]
struct SimMapping(Vec<u8>);

#[derive(Debug)]
struct SimDirLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
}

impl DirLock for SimDirLock {}

impl Drop for SimDirLock {
    fn drop(&mut self) {
        self.state.locked().locks.remove(&self.dir);
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.locked();
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let mut state = self.state.locked();
        state.check(SimOp::Create)?;
        if state.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        state.next_inode += 1;
        let id = state.next_inode;
        state.inodes.insert(id, Inode::default());
        state.names.insert(path.to_owned(), id);
        state.unsynced_dir.push(DirChange::Names {
            dir: parent_of(path),
            names: vec![(path.to_owned(), Some(id))],
        });
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            inode: id,
            writable: true,
        }))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn LogFile>> {
        let state = self.state.locked();
        let id = *state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            inode: id,
            writable,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.locked();
        state.check(SimOp::Rename)?;
        let id = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_owned(), id);
        state.unsynced_dir.push(DirChange::Names {
            dir: parent_of(to),
            names: vec![(from.to_owned(), None), (to.to_owned(), Some(id))],
        });
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.locked();
        state.check(SimOp::Remove)?;
        state.names.remove(path).ok_or_else(|| not_found(path))?;
        state.unsynced_dir.push(DirChange::Names {
            dir: parent_of(path),
            names: vec![(path.to_owned(), None)],
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.locked();
        state.check(SimOp::SyncDir)?;
        let State {
            unsynced_dir,
            durable_names,
            ..
        } = &mut *state;
        unsynced_dir.retain(|change| {
            let here = change.dir() == dir;
            if here {
                change.apply(durable_names);
            }
            !here
        });
        Ok(())
    }

    fn entries(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.locked();
        let names: std::collections::BTreeSet<String> = state
            .names
            .keys()
            .filter_map(|path| path.strip_prefix(dir).ok()?.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Ok(names.into_iter().collect())
    }

    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.locked();
        state.check(SimOp::Rename)?;
        if !state.names.keys().any(|p| p.starts_with(from)) {
            return Err(not_found(from));
        }
        if state.names.keys().any(|p| p.starts_with(to)) {
            return Err(io::Error::from_raw_os_error(39));
        }
        let change = DirChange::MoveDir {
            parent: parent_of(from),
            from: from.to_owned(),
            to: to.to_owned(),
        };
        change.apply(&mut state.names);
        state.unsynced_dir.push(change);
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.locked();
        state.check(SimOp::Remove)?;
        // Each file's removal is a change of its own directory (as `unlink` is), durable when
        // that directory is synced; the directories are implicit here.
        let removed: Vec<PathBuf> = state
            .names
            .keys()
            .filter(|path| path.starts_with(dir))
            .cloned()
            .collect();
        for path in removed {
            state.names.remove(&path);
            state.unsynced_dir.push(DirChange::Names {
                dir: parent_of(&path),
                names: vec![(path, None)],
            });
        }
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> Result<Box<dyn DirLock>, LockError> {
        let mut state = self.state.locked();
        if !state.locks.insert(dir.to_owned()) {
            return Err(LockError::Locked {
                dir: dir.to_owned(),
                holder_pid: None,
            });
        }
        Ok(Box::new(SimDirLock {
            state: Arc::clone(&self.state),
            dir: dir.to_owned(),
        }))
    }

    fn mappings_are_live(&self) -> bool {
        false
    }
}

impl LogFile for SimFile {
    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.state.locked().inodes[&self.inode].data.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let state = self.state.locked();
        let data = &state.inodes[&self.inode].data;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let bytes = data
            .get(start..start.saturating_add(buf.len()))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(9));
        }
        let mut state = self.state.locked();
        state.check(SimOp::Write)?;
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .ok_or(io::ErrorKind::NotFound)?;
        apply_write(&mut inode.data, offset, buf);
        inode.rewritten(offset, offset + buf.len() as u64);
        state.unsynced.push(UnsyncedWrite {
            inode: self.inode,
            offset,
            bytes: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state.locked();
        let id = self.inode;
        if let Err(e) = state.check(SimOp::SyncData) {
            if state.fsyncgate {
                let dropped: Vec<(u64, u64)> = state
                    .unsynced
                    .iter()
                    .filter(|w| w.inode == id)
                    .map(|w| (w.offset, w.offset + w.bytes.len() as u64))
                    .collect();
                state.unsynced.retain(|w| w.inode != id);
                if let Some(inode) = state.inodes.get_mut(&id) {
                    inode.lost.extend(dropped);
                }
            }
            return Err(e);
        }
        let inode = state.inodes.get_mut(&id).ok_or(io::ErrorKind::NotFound)?;
        inode.durable = inode.synced();
        state.unsynced.retain(|w| w.inode != id);
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.locked();
        state.check(SimOp::Allocate)?;
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .ok_or(io::ErrorKind::NotFound)?;
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(28))?;
        if inode.data.len() < len {
            inode.data.resize(len, 0);
        }
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.locked();
        state.check(SimOp::Truncate)?;
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .ok_or(io::ErrorKind::NotFound)?;
        inode.rewritten(len, u64::MAX);
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(22))?;
        inode.data.truncate(len);
        Ok(())
    }

    fn map(&self) -> io::Result<Arc<dyn Mapping>> {
        let mut state = self.state.locked();
        state.check(SimOp::Map)?;
        Ok(Arc::new(SimMapping(state.inodes[&self.inode].data.clone())))
    }
}

impl Mapping for SimMapping {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(fs: &SimFs, dir: &str) -> Vec<String> {
        fs.entries(Path::new(dir)).unwrap_or_default()
    }

    #[test]
    fn a_directory_rename_is_durable_at_the_parents_sync_and_moves_only_durable_entries() {
        let fs = SimFs::new();
        fs.create(Path::new("/p/tmp/a")).unwrap();
        fs.sync_dir(Path::new("/p/tmp")).unwrap();
        fs.create(Path::new("/p/tmp/b")).unwrap();
        fs.rename_dir(Path::new("/p/tmp"), Path::new("/p/dir"))
            .unwrap();
        assert_eq!(entries(&fs, "/p/dir"), ["a", "b"]);
        assert_eq!(entries(&fs, "/p"), ["dir"]);
        let before = fs.crash(CrashMode::DropUnsynced);
        assert_eq!(entries(&before, "/p"), ["tmp"]);
        assert_eq!(entries(&before, "/p/tmp"), ["a"]);
        fs.sync_dir(Path::new("/p")).unwrap();
        let after = fs.crash(CrashMode::DropUnsynced);
        assert_eq!(entries(&after, "/p"), ["dir"]);
        assert_eq!(
            entries(&after, "/p/dir"),
            ["a"],
            "b's creation was never synced"
        );
        assert!(
            fs.rename_dir(Path::new("/p/nothing"), Path::new("/p/x"))
                .is_err()
        );
        fs.create(Path::new("/p/other/c")).unwrap();
        assert!(
            fs.rename_dir(Path::new("/p/other"), Path::new("/p/dir"))
                .is_err(),
            "the target is not empty"
        );
    }

    #[test]
    fn a_removed_directory_stays_removed_only_once_its_entries_removal_is_synced() {
        let fs = SimFs::new();
        fs.create(Path::new("/p/d/a")).unwrap();
        fs.sync_dir(Path::new("/p/d")).unwrap();
        fs.remove_dir_all(Path::new("/p/d")).unwrap();
        fs.remove_dir_all(Path::new("/p/missing")).unwrap();
        assert!(entries(&fs, "/p").is_empty());
        assert_eq!(entries(&fs.crash(CrashMode::DropUnsynced), "/p/d"), ["a"]);
        // A new file of the same name, created and synced after the removal, survives.
        fs.create(Path::new("/p/d/a")).unwrap();
        fs.sync_dir(Path::new("/p/d")).unwrap();
        assert_eq!(entries(&fs.crash(CrashMode::DropUnsynced), "/p/d"), ["a"]);
    }
}
