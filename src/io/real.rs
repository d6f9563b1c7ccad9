//! The real file system: std files, `fallocate` and `flock` through nix, `mmap` through memmap2.
//! This is the only module with `unsafe` in the crate (see `docs/design.md`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{FallocateFlags, Flock, FlockArg, fallocate};

use super::{DirLock, FileSystem, LockError, LogFile, Mapping};

/// Name of the lock file inside a locked directory; it holds the holder's pid.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

#[derive(Debug)]
struct RealMapping(memmap2::Mmap);

#[derive(Debug)]
struct RealDirLock(#[expect(dead_code, reason = "held for its Drop, which unlocks")] Flock<File>);

impl DirLock for RealDirLock {}

impl FileSystem for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        self.create_dir_all(parent)?;
        match fs::create_dir(dir) {
            Ok(()) => {}
            // Created by someone else meanwhile: theirs to sync.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
            Err(e) => return Err(e),
        }
        // IMPORTANT: a new directory's name is durable only once its parent is synced; without
        // this, the files synced inside it could vanish with it at a power loss.
        self.sync_dir(parent)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn LogFile>> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn entries(&self, dir: &Path) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        entries
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }

    fn lock_dir(&self, dir: &Path) -> Result<Box<dyn DirLock>, LockError> {
        let io_err = |source| LockError::Io {
            dir: dir.to_owned(),
            source,
        };
        let path = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                lock.set_len(0).map_err(io_err)?;
                lock.rewind().map_err(io_err)?;
                writeln!(lock, "{}", std::process::id()).map_err(io_err)?;
                Ok(Box::new(RealDirLock(lock)))
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let holder_pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                Err(LockError::Locked {
                    dir: dir.to_owned(),
                    holder_pid,
                })
            }
            Err((_, errno)) => Err(io_err(errno.into())),
        }
    }

    fn mappings_are_live(&self) -> bool {
        true
    }
}

impl LogFile for RealFile {
    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let len = i64::try_from(len).map_err(|_| io::Error::other("allocation too large"))?;
        fallocate(&self.0, FallocateFlags::empty(), 0, len)?;
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn map(&self) -> io::Result<Arc<dyn Mapping>> {
        // SAFETY: memmap2 requires that the file is not truncated while mapped (a read past the
        // end would fault) and that bytes handed out are not modified underneath. Segment files
        // are preallocated to their full size before anyone maps them and are never truncated
        // afterwards (only a compaction output is truncated, before it is first mapped); appends
        // write only past the bytes any reader is handed (readers stop at the written LSN);
        // recovery zeroes a torn tail before the log is readable; index checkpoints are written
        // to a new file and renamed, never rewritten in place; and the directory lock keeps other
        // shiplog processes out. Unlinking a file leaves its mapping valid on Linux.
        let map = unsafe { memmap2::Mmap::map(&self.0)? };
        Ok(Arc::new(RealMapping(map)))
    }
}

impl Mapping for RealMapping {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Restores the default `SIGPIPE` action, so a command-line tool piped into `head` exits quietly
/// instead of panicking on a failed write (Rust ignores `SIGPIPE` by default).
pub fn restore_default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called at the start of `main`, before any other thread exists, and installs the
    // default disposition (no Rust handler runs in signal context).
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_all_makes_every_missing_level_and_accepts_an_existing_one() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        RealFs.create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        RealFs.create_dir_all(&deep).unwrap();
        let file = root.path().join("a/file");
        std::fs::write(&file, b"x").unwrap();
        assert!(RealFs.create_dir_all(&file.join("d")).is_err());
    }
}
