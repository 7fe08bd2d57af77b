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

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use berth_server::names::Digest;

/// Remembered upload sessions.
#[derive(Debug, Clone)]
pub struct ResumeState {
    dir: Option<PathBuf>,
}

impl ResumeState {
    /// The state directory chosen from the environment.
    pub fn from_env() -> ResumeState {
        let dir = std::env::var_os("BERTH_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("berth/uploads"))
            })
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".local/state/berth/uploads"))
            });
        ResumeState { dir }
    }

    /// Remembers nothing (every interrupted upload starts over).
    pub fn disabled() -> ResumeState {
        ResumeState { dir: None }
    }

    /// State kept in `dir` (tests; `new` picks the directory from the environment).
    pub fn in_dir(dir: &std::path::Path) -> ResumeState {
        ResumeState {
            dir: Some(dir.to_path_buf()),
        }
    }

    fn file(&self, repo: &str, digest: &Digest) -> Option<PathBuf> {
        let mut h = Sha256::new();
        for part in [repo, digest.as_str()] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        Some(self.dir.as_ref()?.join(hex::encode(h.finalize())))
    }

    /// The session location saved for this blob by an earlier run.
    pub fn saved(&self, repo: &str, digest: &Digest) -> Option<String> {
        let text = std::fs::read_to_string(self.file(repo, digest)?).ok()?;
        let loc = text.trim();
        loc.starts_with("/v2/").then(|| loc.to_string())
    }

    /// Remembers a session (best effort: without a state directory an
    /// interrupted upload simply starts over next time).
    pub fn save(&self, repo: &str, digest: &Digest, location: &str) {
        let Some(file) = self.file(repo, digest) else {
            return;
        };
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, location).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }

    /// Forgets a session (committed, or gone).
    pub fn forget(&self, repo: &str, digest: &Digest) {
        if let Some(file) = self.file(repo, digest) {
            let _ = std::fs::remove_file(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_forgets_per_repo_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let a = ResumeState::in_dir(dir.path());
        let b = ResumeState::in_dir(dir.path());
        let d = Digest::of_bytes(b"x");
        assert_eq!(a.saved("team/app", &d), None);
        a.save("team/app", &d, "/v2/team/app/blobs/uploads/123");
        assert_eq!(
            a.saved("team/app", &d).as_deref(),
            Some("/v2/team/app/blobs/uploads/123")
        );
        // Another server on the same store may continue the session.
        assert_eq!(
            b.saved("team/app", &d).as_deref(),
            Some("/v2/team/app/blobs/uploads/123")
        );
        assert_eq!(a.saved("team/other", &d), None);
        a.forget("team/app", &d);
        assert_eq!(a.saved("team/app", &d), None);
    }
}
