//! Crash-safe file writes: temp file in the same directory, fsync, rename,
//! fsync of the directory; and `fcntl` record locks for the few
//! read-modify-write updates that cannot be avoided.
//!
//! A reader of the store sees either the old file or the new one, never a
//! partial one. A process killed mid-write leaves at most a `.tmp-*` file,
//! which is never read and which `fsck --repair` / `gc` remove. Locks use
//! `fcntl(F_SETLKW)` because `flock` does not lock over NFS.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// Lock files held by this process. POSIX record locks belong to the
/// *process*: a second `fcntl(F_SETLKW)` from another thread of the same
/// process succeeds at once, and closing any descriptor of the file drops the
/// lock for every thread. So threads of one process queue here first, and
/// only the winner takes (and later releases) the `fcntl` lock that excludes
/// other processes and hosts.
fn held_locks() -> &'static (Mutex<HashSet<PathBuf>>, Condvar) {
    static HELD: OnceLock<(Mutex<HashSet<PathBuf>>, Condvar)> = OnceLock::new();
    HELD.get_or_init(|| (Mutex::new(HashSet::new()), Condvar::new()))
}

/// An exclusive `fcntl` write lock on a lock file, released on drop.
///
/// Excludes other threads of this process (an in-process table) and other
/// processes and hosts (`fcntl`, which NFS forwards to the server's lock
/// manager; `flock` does not). Blocking: call from `spawn_blocking` or a
/// blocking context.
#[derive(Debug)]
pub struct FileLock {
    file: Option<File>,
    path: PathBuf,
}

impl FileLock {
    /// Waits for the exclusive lock on `path` (created, with its directory, if missing).
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        Self::acquire(path, None)?.ok_or_else(|| io::Error::other("lock wait ended"))
    }

    /// Like [`FileLock::exclusive`], but never creates the directory (a
    /// vanished directory is `NotFound`) and gives up after `wait`, returning
    /// `None` while someone else still holds the lock.
    pub fn exclusive_within(path: &Path, wait: Duration) -> io::Result<Option<FileLock>> {
        Self::acquire(path, Some(Instant::now() + wait))
    }

    fn acquire(path: &Path, deadline: Option<Instant>) -> io::Result<Option<FileLock>> {
        let key = path.to_path_buf();
        {
            let (table, cond) = held_locks();
            let mut held = table.lock().unwrap_or_else(|e| e.into_inner());
            while held.contains(&key) {
                match deadline {
                    None => held = cond.wait(held).unwrap_or_else(|e| e.into_inner()),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return Ok(None);
                        }
                        held = cond
                            .wait_timeout(held, d - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
            held.insert(key.clone());
        }
        // From here on the table entry is ours; `release` undoes it on every path.
        let mut lock = FileLock {
            file: None,
            path: key,
        };
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
        let cmd = if deadline.is_some() {
            libc::F_SETLK
        } else {
            libc::F_SETLKW
        };
        loop {
            // SAFETY: fd is open for the lifetime of `file`; `fl` is a valid flock.
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl) };
            if rc == 0 {
                lock.file = Some(file);
                return Ok(Some(lock));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::EACCES) if deadline.is_some() => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return Err(err),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the fcntl lock; only then let the
        // next thread of this process in.
        self.file = None;
        let (table, cond) = held_locks();
        let mut held = table.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.path);
        cond.notify_all();
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

    /// fcntl locks are per process: without the in-process table, two
    /// threads would both "hold" the lock at once.
    #[test]
    fn lock_excludes_threads_of_one_process() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(dir.path().join("l"));
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (p, inside) = (p.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _l = FileLock::exclusive(&p).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let held = FileLock::exclusive(&p).unwrap();
        let waited = FileLock::exclusive_within(&p, Duration::from_millis(50)).unwrap();
        assert!(waited.is_none(), "a held lock must not be granted twice");
        drop(held);
        assert!(FileLock::exclusive_within(&p, Duration::from_millis(50))
            .unwrap()
            .is_some());
        assert_eq!(
            FileLock::exclusive_within(&dir.path().join("gone/l"), Duration::ZERO)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
