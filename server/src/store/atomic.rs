//! Crash-safe file writes: temp file in the same directory, fsync, rename,
//! fsync of the directory; and `fcntl` record locks for the few
//! read-modify-write updates that cannot be avoided.
//!
//! A reader of the store sees either the old file or the new one, never a
//! partial one. A process killed mid-write leaves at most a `.tmp-*` file,
//! which is never read and which `fsck --repair` / `gc` remove. Locks use
//! `fcntl(F_SETLKW)` because `flock` does not lock over NFS.
//!
//! This module also owns the permission bits of everything the store creates
//! ([`Sharing`]): directories 0750 and files 0640, so other local accounts
//! read nothing, or 2770/0660 in a group-shared store (a setgid root, made by
//! `berth-server init --group-shared`). Modes are set with `fchmod`/`chmod`
//! after creation, so the process umask neither widens nor narrows them.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Prefix of every temporary file; listings and lookups skip such names.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Who may read and write what the store creates, decided by the directory
/// it is created in: a directory with the setgid bit belongs to a
/// group-shared store (new directories inherit the bit and the group, so one
/// `chmod 2770` of the root decides for the whole tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Owner read/write, group read, others nothing (0750 / 0640).
    Private,
    /// Owner and group read/write, others nothing (2770 / 0660).
    Group,
}

impl Sharing {
    /// The sharing of files and directories created in `dir` (which exists).
    pub fn of_dir(dir: &Path) -> io::Result<Sharing> {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir)?.permissions().mode();
        Ok(if mode & 0o2000 != 0 {
            Sharing::Group
        } else {
            Sharing::Private
        })
    }

    /// Mode of a new directory.
    pub fn dir_mode(self) -> u32 {
        match self {
            Sharing::Private => 0o750,
            Sharing::Group => 0o2770,
        }
    }

    /// Mode of a new file.
    pub fn file_mode(self) -> u32 {
        match self {
            Sharing::Private => 0o640,
            Sharing::Group => 0o660,
        }
    }
}

/// `create_dir_all` with the store's directory mode: each directory this
/// call creates gets [`Sharing::dir_mode`] of the nearest existing ancestor.
///
/// Each one is made durable before the next, and before the caller names
/// anything inside: its parent is fsynced. Without that, a power cut could
/// take a new directory (a repository's `_tags/`, an image's directory)
/// with the fsynced files the caller renamed into it; journaling
/// filesystems usually hide this, POSIX does not promise it. A directory
/// another writer made at the same moment (`AlreadyExists`) is fsynced
/// too, since that writer may not have got there yet.
pub fn create_dirs(dir: impl AsRef<Path>) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = dir.as_ref();
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = vec![dir];
    let mut existing = dir.parent();
    while let Some(d) = existing {
        if d.as_os_str().is_empty() {
            existing = Some(Path::new("."));
            break;
        }
        if d.is_dir() {
            break;
        }
        missing.push(d);
        existing = d.parent();
    }
    let sharing = Sharing::of_dir(existing.unwrap_or(Path::new("/")))?;
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(sharing.dir_mode()).create(d) {
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(sharing.dir_mode()))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
        sync_parent(d)?;
    }
    Ok(())
}

/// A fresh temporary name in `dir`, `.tmp-<label>-<random>`: what a crash
/// leaves under it is a leftover gc and `fsck --repair` remove.
pub fn temp_path(dir: &Path, label: &str) -> PathBuf {
    dir.join(format!(
        "{TEMP_PREFIX}{label}-{:016x}",
        rand::random::<u64>()
    ))
}

/// Creates `path`, which must not exist (`O_EXCL`), with the store's file
/// mode for its directory; opened for writing.
pub fn create_file(path: &Path) -> io::Result<File> {
    create_with(path, OpenOptions::new().write(true))
}

/// Opens `path` with `options`, creating it first (`O_EXCL`, the store's
/// file mode) when it is missing: lock files and the audit log.
fn open_or_create(path: &Path, options: &OpenOptions) -> io::Result<File> {
    // Usually the file exists: one open. A lost creation race opens the winner's.
    match options.open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match create_with(path, options) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(path),
            other => other,
        },
        other => other,
    }
}

/// Opens `path` for appending, creating it (with the store's file mode) if
/// missing: the audit log.
pub fn open_append(path: &Path) -> io::Result<File> {
    open_or_create(path, OpenOptions::new().append(true))
}

/// Sets the mtime of `path` to `at`, creating it empty (with the store's
/// file mode) if missing: a marker whose only content is its time (gc's
/// renewal markers).
pub fn touch(path: &Path, at: std::time::SystemTime) -> io::Result<()> {
    open_or_create(path, OpenOptions::new().write(true))?.set_modified(at)
}

fn create_with(path: &Path, options: &OpenOptions) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mode = Sharing::of_dir(dir)?.file_mode();
    let file = options.clone().create_new(true).mode(mode).open(path)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

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
        create_dirs(dir)?;
        loop {
            let path = temp_path(dir, label);
            match create_file(&path) {
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
        Some(dir) if dir.as_os_str().is_empty() => File::open(".")?.sync_all(),
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
    /// The locked file's metadata: which file (device, inode) the lock is
    /// on, for checks that it is the one the lock file's name lists.
    pub fn metadata(&self) -> io::Result<fs::Metadata> {
        match &self.file {
            Some(f) => f.metadata(),
            None => Err(io::Error::other("lock already released")),
        }
    }

    /// Waits for the exclusive lock on `path` (created, with its directory, if missing).
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        if let Some(dir) = path.parent() {
            create_dirs(dir)?;
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
        // The listing's inode numbers are trusted until they prove not to
        // be comparable with `stat`'s (see `names_file`).
        let mut listing_counts = true;
        let mut unlisted_again = 0;
        let mut stale_since: Option<Instant> = None;
        loop {
            match lock_named(path, deadline, listing_counts) {
                Ok(Attempt::Held(file)) => {
                    lock.file = Some(file);
                    return Ok(Some(lock));
                }
                Ok(Attempt::TimedOut) => return Ok(None),
                Ok(Attempt::Replaced(Naming::NotListed)) => {
                    // A path that keeps resolving to a file we can lock
                    // while the listing names another inode: this
                    // filesystem's listing numbers are not `stat`'s (a
                    // stale name fails the open or the lock with ESTALE
                    // once the holder's last descriptor is gone).
                    unlisted_again += 1;
                    if unlisted_again >= 3 {
                        tracing::warn!(
                            "directory listing of {} disagrees with stat about inode numbers; \
                             checking lock files by stat alone",
                            path.display()
                        );
                        listing_counts = false;
                    }
                }
                Ok(Attempt::Replaced(_)) => unlisted_again = 0,
                // The name resolved (through this host's name cache) to a
                // file another host has deleted: the open, the lock or the
                // check of the name fails with ESTALE; or, waiting without
                // a deadline, the name vanished between our open and our
                // create. Open again (making the directory again below)
                // once the cache lets go of it (GlusterFS keeps a name for
                // its entry-timeout, 1 s by default); no event tells when.
                Err(e)
                    if e.raw_os_error() == Some(libc::ESTALE)
                        || (deadline.is_none() && e.kind() == io::ErrorKind::NotFound) =>
                {
                    let since = *stale_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > STALE_LOCK_FILE_PATIENCE
                        || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
            tracing::debug!(
                "lock file {} was replaced while we waited; locking again",
                path.display()
            );
            if deadline.is_none() {
                if let Some(dir) = path.parent() {
                    create_dirs(dir)?;
                }
            }
        }
    }
}

/// What one attempt of [`lock_named`] came to.
enum Attempt {
    /// Locked, on the file the path names.
    Held(File),
    /// The deadline passed while another holder kept the lock.
    TimedOut,
    /// Locked a file the path no longer names (how [`names_file`] knew);
    /// the lock is dropped with the file, to be taken again.
    Replaced(Naming),
}

/// Opens (or creates) the lock file at `path`, locks it, and checks the
/// lock is on the file the path names: the holder we waited for may have
/// unlinked the file before it let go (gc removing an image's directory),
/// and then the lock is on a file no path names while the next comer
/// creates another. Only a lock on the file the path names now excludes
/// anyone. Any step can meet a name another host deleted (ESTALE), which
/// the caller retries.
fn lock_named(path: &Path, deadline: Option<Instant>, listing: bool) -> io::Result<Attempt> {
    #[cfg(test)]
    tests::maybe_stale(path)?;
    let file = open_or_create(path, OpenOptions::new().read(true).write(true))?;
    if !lock_fd(&file, deadline)? {
        return Ok(Attempt::TimedOut);
    }
    #[cfg(test)]
    tests::maybe_stale(path)?;
    Ok(match names_file(path, &file, listing)? {
        Naming::Yes => Attempt::Held(file),
        other => Attempt::Replaced(other),
    })
}

/// How long a lock file name may keep resolving to a file another host
/// deleted (ESTALE, or gone between open and create) before the lock
/// attempt gives up with that error.
const STALE_LOCK_FILE_PATIENCE: Duration = Duration::from_secs(30);

/// What [`names_file`] found.
#[derive(Debug, PartialEq, Eq)]
enum Naming {
    /// The path names the file.
    Yes,
    /// `stat` of the path says another file, or none.
    No,
    /// `stat` of the path agrees, the directory's listing does not.
    NotListed,
}

/// Whether `path` names the open `file`, asked twice: of the path (same
/// device and inode), then — `listing` — of its directory's listing. The
/// first is answered by this host's name cache, which a network
/// filesystem may keep stale: GlusterFS's FUSE client keeps a name for its
/// entry-timeout, so after another host unlinked the lock file (and
/// perhaps created a new one), `stat` still answers the old inode, seen on
/// a replicated volume mounted twice. A listing comes from the server.
fn names_file(path: &Path, file: &File, listing: bool) -> io::Result<Naming> {
    use std::os::unix::fs::{DirEntryExt as _, MetadataExt as _};
    let held = match file.metadata() {
        Ok(m) => m,
        // The file we hold is gone: another host unlinked it, and its
        // filesystem (GlusterFS, seen under load) no longer answers for
        // it even through our descriptor. Not the file the path names.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Naming::No),
        Err(e) => return Err(e),
    };
    match fs::metadata(path) {
        Ok(m) if m.dev() == held.dev() && m.ino() == held.ino() => {}
        Ok(_) => return Ok(Naming::No),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Naming::No),
        Err(e) => return Err(e),
    }
    if !listing {
        return Ok(Naming::Yes);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Naming::Yes);
    };
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == name {
            return Ok(if entry.ino() == held.ino() {
                Naming::Yes
            } else {
                Naming::NotListed
            });
        }
    }
    Ok(Naming::NotListed)
}

/// Takes the `fcntl` write lock on all of `file`: waits for it without a
/// `deadline`, else tries until then (`false` when it passed).
fn lock_fd(file: &File, deadline: Option<Instant>) -> io::Result<bool> {
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
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if deadline.is_some() => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => return Err(err),
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

    /// What the steps of [`lock_named`] for a path answer, in order: an
    /// errno (`ESTALE`, `ENOENT`), as a GlusterFS client answers for a lock
    /// file name another mount deleted while this one still caches it, or
    /// 0 for the step to go on.
    type Answers = std::collections::HashMap<PathBuf, Vec<i32>>;
    fn stale_answers() -> &'static Mutex<Answers> {
        static ANSWERS: OnceLock<Mutex<Answers>> = OnceLock::new();
        ANSWERS.get_or_init(Default::default)
    }

    pub(super) fn maybe_stale(path: &Path) -> io::Result<()> {
        let mut answers = stale_answers().lock().unwrap();
        let errno = match answers.get_mut(path) {
            Some(steps) if !steps.is_empty() => steps.remove(0),
            _ => 0,
        };
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }

    /// A CI run on GlusterFS: after the holder on another mount unlinked
    /// the lock file and let go, this mount's cached name to the deleted
    /// file failed a step after the lock with ESTALE, and the lock attempt
    /// gave up with that error instead of opening the name again; under
    /// load the same test met ENOENT. Each step (the open, the check of
    /// the name) may meet the stale name; the lock is taken once the cache
    /// lets go, on the file the path names.
    #[test]
    fn a_stale_lock_file_name_at_any_step_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let (fine, stale, gone) = (0, libc::ESTALE, libc::ENOENT);
        // Open fine, check after the lock stale, the open stale twice, the
        // open gone, then open fine and the check gone, then all fine.
        stale_answers()
            .lock()
            .unwrap()
            .insert(p.clone(), vec![fine, stale, stale, stale, gone, fine, gone]);
        let lock = FileLock::exclusive(&p).expect("the lock, once the name is fresh");
        assert!(stale_answers().lock().unwrap()[&p].is_empty());
        use std::os::unix::fs::MetadataExt as _;
        let held = lock.metadata().unwrap();
        let named = fs::metadata(&p).unwrap();
        assert_eq!((held.dev(), held.ino()), (named.dev(), named.ino()));
    }

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
    fn modes_follow_the_directory_not_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("p");
        write_atomic(&private.join("a/b/f"), b"x").unwrap();
        drop(FileLock::exclusive(&private.join("a/.lock")).unwrap());
        assert_eq!(mode(&private), 0o750);
        assert_eq!(mode(&private.join("a/b")), 0o750);
        assert_eq!(mode(&private.join("a/b/f")), 0o640);
        assert_eq!(mode(&private.join("a/.lock")), 0o640);
        let shared = dir.path().join("s");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o2770)).unwrap();
        write_atomic(&shared.join("a/f"), b"x").unwrap();
        let mut log = open_append(&shared.join("a/log")).unwrap();
        log.write_all(b"line\n").unwrap();
        assert_eq!(mode(&shared.join("a")), 0o2770);
        assert_eq!(mode(&shared.join("a/f")), 0o660);
        assert_eq!(mode(&shared.join("a/log")), 0o660);
        // Existing files keep their mode; appends go to the end.
        drop(open_append(&shared.join("a/log")).unwrap());
        assert_eq!(fs::read(shared.join("a/log")).unwrap(), b"line\n");
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
        // Free now: granted at once (the long wait only bounds a hang).
        assert!(FileLock::exclusive_within(&p, Duration::from_secs(60))
            .unwrap()
            .is_some());
        assert_eq!(
            FileLock::exclusive_within(&dir.path().join("gone/l"), Duration::ZERO)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    /// Another process (gc removing an image) holds the lock and unlinks the
    /// lock file before it lets go, while this one waits in `fcntl` on that
    /// file. The wait then ends with a lock on a file no path names, and a
    /// third process creates a new lock file and takes it too: two holders.
    /// A granted lock must be on the file the path names now.
    #[test]
    fn a_lock_granted_on_an_unlinked_lock_file_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        fs::write(&p, b"").unwrap();
        // The holder: takes the lock, waits until a waiter is blocked on it
        // (a "->" line in /proc/locks for this inode), unlinks, releases.
        let holder = r#"
import fcntl, os, sys, time
path = sys.argv[1]
f = open(path, "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
ino = os.fstat(f.fileno()).st_ino
print("locked", flush=True)
while not any("->" in l and f":{ino} " in l for l in open("/proc/locks")):
    time.sleep(0.01)
os.unlink(path)
f.close()
"#;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(holder)
            .arg(&p)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        io::BufRead::read_line(
            &mut io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        let lock = FileLock::exclusive(&p).unwrap();
        assert!(child.wait().unwrap().success());
        use std::os::unix::fs::MetadataExt as _;
        let held = lock.file.as_ref().unwrap().metadata().unwrap();
        let named = fs::metadata(&p).expect("the lock file the path names");
        assert_eq!(
            (held.dev(), held.ino()),
            (named.dev(), named.ino()),
            "the lock is held on a file the path no longer names"
        );
    }
}
