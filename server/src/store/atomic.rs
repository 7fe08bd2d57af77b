//! Crash-safe file writes: temp file in the same directory, fsync, rename,
//! fsync of the directory; and `fcntl` record locks for the few
//! read-modify-write updates that cannot be avoided.
//!
//! A reader of the store sees either the old file or the new one, never a
//! partial one. A process killed mid-write leaves at most a `.tmp-*` file,
//! which is never read and which `fsck --repair` / `gc` remove. Locks use
//! `fcntl(F_SETLKW)` because `flock` does not lock over NFS.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Prefix of every temporary file; listings and lookups skip such names.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A file being written next to its final name; deleted on drop unless it was
/// committed (renamed or linked into place).
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
    done: bool,
}

impl TempFile {
    /// Creates `<dir>/.tmp-<label>-<random>` with `create_new`, creating `dir` if needed.
    pub fn new_in(dir: &Path, label: &str) -> io::Result<TempFile> {
        fs::create_dir_all(dir)?;
        loop {
            let name = format!("{TEMP_PREFIX}{label}-{:016x}", rand::random::<u64>());
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(file),
                        done: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The temporary path (for hard-linking before the final rename).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file handle.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("temp file used after commit")
    }

    /// Flushes data and metadata to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file().sync_all()
    }

    /// fsyncs and renames onto `dest` (same directory or filesystem), then
    /// fsyncs the destination directory so the rename itself is durable.
    pub fn commit(mut self, dest: &Path) -> io::Result<()> {
        self.sync()?;
        self.file = None;
        fs::rename(&self.path, dest)?;
        self.done = true;
        sync_parent(dest)
    }

    /// Gives up the file without removing it (its name is now owned elsewhere).
    pub fn forget(mut self) {
        self.done = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            self.file = None;
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to `dest` atomically (temp + fsync + rename + dir fsync).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| io::Error::other("destination has no parent"))?;
    let label = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = TempFile::new_in(dir, &label)?;
    tmp.file().write_all(bytes)?;
    tmp.commit(dest)
}

/// Removes a file and fsyncs its directory; a missing file is not an error.
pub fn remove_durable(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_parent(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// fsyncs the directory holding `path`, making a rename or unlink durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// An exclusive `fcntl` write lock on a lock file, released on drop.
///
/// Blocking: call from `spawn_blocking` or a blocking context.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for the exclusive lock on `path` (created if missing).
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: an all-zero `flock` struct is a valid value; fields set below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = 0;
        fl.l_len = 0; // whole file
        loop {
            // SAFETY: fd is open for the lifetime of `file`; `fl` is a valid flock.
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLKW, &fl) };
            if rc == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_file_is_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = TempFile::new_in(dir.path(), "x").unwrap();
        let p = tmp.path().to_path_buf();
        assert!(p.exists());
        drop(tmp);
        assert!(!p.exists());

        let mut tmp = TempFile::new_in(dir.path(), "x").unwrap();
        tmp.file().write_all(b"hello").unwrap();
        let dest = dir.path().join("final");
        tmp.commit(&dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_atomic_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/f");
        write_atomic(&dest, b"one").unwrap();
        write_atomic(&dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert!(remove_durable(&dest).unwrap());
        assert!(!remove_durable(&dest).unwrap());
    }

    #[test]
    fn lock_can_be_taken_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = FileLock::exclusive(&p).unwrap();
        drop(a);
        let _b = FileLock::exclusive(&p).unwrap();
    }
}
