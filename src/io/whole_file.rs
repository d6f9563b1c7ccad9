//! Small files read and replaced whole (the server's retention slots and replica id): the
//! replacement is crash-atomic, so a reader finds the old bytes or the new ones, never a mix.

use std::io;
use std::path::{Path, PathBuf};

use super::FileSystem;

/// The temporary name a replacement of `path` is written under (`<path>.tmp`).
#[must_use]
pub fn replacement_path(path: &Path) -> PathBuf {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    PathBuf::from(temp)
}

/// Replaces the file at `path` with `bytes` durably: written and synced under a temporary name
/// beside it, renamed over it, and the directory synced. After a crash at any step the file
/// holds the old bytes (or is absent, if it was) or the new ones; a returned error leaves
/// either, and a later call replaces whatever is there.
///
/// # Errors
/// The OS error of the step that failed.
pub fn replace_file(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = replacement_path(path);
    // A replacement cut short leaves its temporary file behind; it never holds the only copy.
    match fs.remove(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = fs.create(&temp)?;
    file.write_all_at(bytes, 0)?;
    // IMPORTANT: the new bytes are durable before they take the name, and the name is durable
    // before anyone relies on it.
    file.sync_data()?;
    fs.rename(&temp, path)?;
    fs.sync_dir(dir)
}

/// The whole file at `path`, or `None` when there is none.
///
/// # Errors
/// The OS error from opening or reading it.
pub fn read_file(fs: &dyn FileSystem, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match fs.open(path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = usize::try_from(file.size_bytes()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to read"))?;
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(Some(bytes))
}
