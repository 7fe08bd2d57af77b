//! Where interrupted blob uploads are remembered between runs of `berth
//! push`, so the next run continues at the registry's offset instead of
//! starting over (`docs/storage.md`: upload sessions live in the store, so
//! any server process on it can continue one).
//!
//! One small file per (repository, digest) under
//! `$BERTH_STATE_DIR`, else `$XDG_STATE_HOME/berth/uploads`, else
//! `~/.local/state/berth/uploads`, holding the session's location. It is
//! written right after the session opens and removed once the blob is
//! committed. The registry is deliberately not part of the key: another
//! server process on the same store (another host, another port) can
//! continue the session. A stale or foreign entry costs one `GET`: the
//! registry answers 404 and the upload starts afresh.
//!
//! **Claimed exclusively** (issue 15): a run that uses an entry holds a
//! lock on it (`<entry>.lock`, `flock`, which Linux forwards as an `fcntl`
//! lock on NFS) until it commits, forgets or exits. Two pushes of the same
//! blob by one user at once therefore never continue each other's *live*
//! session (which made two requests write one session): the second finds
//! the entry claimed and takes the next slot (`<entry>.1`, `.2`, ...), so it
//! opens a session of its own. An entry left by a run that died is free
//! again (the lock dies with the process) and the next run resumes it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use berth_server::names::Digest;

/// Concurrent runs of one blob that can each keep a resumable session; a
/// run beyond that many still pushes, only without resume.
const MAX_SLOTS: usize = 32;

/// The per-user state directory chosen from the environment:
/// `$BERTH_STATE_DIR`, else `$XDG_STATE_HOME/berth/uploads`, else
/// `~/.local/state/berth/uploads`. Upload sessions are remembered in it,
/// and `--compress`'s compressed layers under its `compressed/`
/// (`compress.rs`).
pub fn state_dir() -> Option<PathBuf> {
    std::env::var_os("BERTH_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("berth/uploads"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/berth/uploads"))
        })
}

/// An entry this run holds: its path and the open, locked lock file.
#[derive(Debug)]
struct Claim {
    entry: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

/// sha256 of `parts`, each ended by a NUL byte (so no two lists of parts
/// run together): the names of the state directory's entries.
pub(super) fn key_of(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// Remembered upload sessions, and the entries this run has claimed.
#[derive(Debug)]
pub struct ResumeState {
    dir: Option<PathBuf>,
    claims: Mutex<HashMap<String, Claim>>,
}

impl ResumeState {
    /// The state directory chosen from the environment.
    pub fn from_env() -> ResumeState {
        ResumeState::with_dir(state_dir())
    }

    /// Remembers nothing (every interrupted upload starts over).
    pub fn disabled() -> ResumeState {
        ResumeState::with_dir(None)
    }

    /// State kept in `dir` (tests; `new` picks the directory from the environment).
    pub fn in_dir(dir: &Path) -> ResumeState {
        ResumeState::with_dir(Some(dir.to_path_buf()))
    }

    fn with_dir(dir: Option<PathBuf>) -> ResumeState {
        ResumeState {
            dir,
            claims: Mutex::new(HashMap::new()),
        }
    }

    fn key(repo: &str, digest: &Digest) -> String {
        hex::encode(key_of(&[repo, digest.as_str()]))
    }

    /// The entry this run holds for the blob, claiming the first free slot
    /// if it holds none yet; `None` without a state directory or a free slot.
    fn claimed(&self, repo: &str, digest: &Digest) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let key = Self::key(repo, digest);
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = claims.get(&key) {
            return Some(c.entry.clone());
        }
        fs::create_dir_all(dir).ok()?;
        let slots: Vec<PathBuf> = (0..MAX_SLOTS)
            .map(|slot| match slot {
                0 => dir.join(&key),
                n => dir.join(format!("{key}.{n}")),
            })
            .collect();
        // A free slot holding a session left by an ended run first (to
        // resume it), else the first free slot.
        let (saved, empty): (Vec<PathBuf>, Vec<PathBuf>) =
            slots.into_iter().partition(|e| e.exists());
        for entry in saved.into_iter().chain(empty) {
            if let Some(claim) = try_claim(entry) {
                let path = claim.entry.clone();
                claims.insert(key, claim);
                return Some(path);
            }
        }
        tracing::debug!(blob = %digest, "every resume slot is in use: this upload is not resumable");
        None
    }

    /// The session location saved for this blob by an earlier run, claimed
    /// for this run (a session another live run is using is never returned).
    pub fn saved(&self, repo: &str, digest: &Digest) -> Option<String> {
        let text = fs::read_to_string(self.claimed(repo, digest)?).ok()?;
        let loc = text.trim();
        loc.starts_with("/v2/").then(|| loc.to_string())
    }

    /// Remembers a session in this run's entry (best effort: without a
    /// state directory an interrupted upload simply starts over next time).
    pub fn save(&self, repo: &str, digest: &Digest, location: &str) {
        let Some(entry) = self.claimed(repo, digest) else {
            return;
        };
        let tmp = PathBuf::from(format!("{}.tmp", entry.display()));
        if fs::write(&tmp, location).is_ok() {
            let _ = fs::rename(&tmp, &entry);
        }
    }

    /// Forgets a session (committed, or gone) and releases the entry.
    pub fn forget(&self, repo: &str, digest: &Digest) {
        let Some(entry) = self.claimed(repo, digest) else {
            return;
        };
        let _ = fs::remove_file(&entry);
        let key = Self::key(repo, digest);
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = claims.remove(&key) {
            // Removed while still locked: a run that opened it meanwhile
            // sees the name point elsewhere and tries again (`try_claim`).
            let _ = fs::remove_file(&c.lock_path);
        }
    }
}

/// Locks `<entry>.lock` without waiting; `None` when another run holds it.
fn try_claim(entry: PathBuf) -> Option<Claim> {
    let lock_path = PathBuf::from(format!("{}.lock", entry.display()));
    // A holder may remove the lock file while releasing it: retry until the
    // locked file is the one under the name.
    for _ in 0..8 {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ok()?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Error(e)) => {
                tracing::debug!(error = %e, "locking a resume entry");
                return None;
            }
        }
        let same = match (fs::metadata(&lock_path), file.metadata()) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            return Some(Claim {
                entry,
                lock_path,
                _lock: file,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_forgets_per_repo_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let a = ResumeState::in_dir(dir.path());
        let d = Digest::of_bytes(b"x");
        assert_eq!(a.saved("team/app", &d), None);
        a.save("team/app", &d, "/v2/team/app/blobs/uploads/123");
        assert_eq!(
            a.saved("team/app", &d).as_deref(),
            Some("/v2/team/app/blobs/uploads/123")
        );
        assert_eq!(a.saved("team/other", &d), None);
        a.forget("team/app", &d);
        assert_eq!(a.saved("team/app", &d), None);
    }

    /// Issue 15 attack: a second run of the same blob while the first still
    /// uses its session must not be handed that live session.
    #[test]
    fn a_live_session_is_never_handed_to_a_second_run() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of_bytes(b"x");
        let first = ResumeState::in_dir(dir.path());
        first.save("team/app", &d, "/v2/team/app/blobs/uploads/live");
        let second = ResumeState::in_dir(dir.path());
        assert_eq!(
            second.saved("team/app", &d),
            None,
            "the live session leaked"
        );
        // The second run keeps its own session in its own slot...
        second.save("team/app", &d, "/v2/team/app/blobs/uploads/own");
        assert_eq!(
            first.saved("team/app", &d).as_deref(),
            Some("/v2/team/app/blobs/uploads/live")
        );
        // ...and once a run ends (its claims dropped, as when the process
        // dies), the next run may continue its session: another server
        // process on the same store can serve it.
        drop(first);
        let third = ResumeState::in_dir(dir.path());
        assert_eq!(
            third.saved("team/app", &d).as_deref(),
            Some("/v2/team/app/blobs/uploads/live")
        );
        drop(second);
        third.forget("team/app", &d);
        let fourth = ResumeState::in_dir(dir.path());
        assert_eq!(
            fourth.saved("team/app", &d).as_deref(),
            Some("/v2/team/app/blobs/uploads/own"),
            "the other run's entry is still there to resume"
        );
    }
}
