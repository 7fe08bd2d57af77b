//! Ownership and mode checks for files the server trusts, in the spirit of
//! sshd's `StrictModes` (issue 14 item 9): a file that another account can
//! replace or read is not used.
//!
//! * [`check_trusted`] — what the server *executes* (hooks and their
//!   directory): owned by the server's user or root, not writable by group
//!   or others.
//! * [`check_private`] — a secret (the SSH host key): owned by the server's
//!   user, no access at all for group or others.
//!
//! The messages name the path, what is wrong and the command that fixes it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The effective uid of this process (the "server's user").
pub fn server_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `path` (a file or directory, symlinks followed) is owned by the server's
/// user or root and neither group- nor world-writable.
pub fn check_trusted(path: &Path) -> Result<(), String> {
    check(
        path,
        true,
        0o022,
        "group or others may write it",
        "chmod go-w",
    )
}

/// `path` is owned by the server's user and gives group and others no
/// access (a private key).
pub fn check_private(path: &Path) -> Result<(), String> {
    check(
        path,
        false,
        0o077,
        "group and others must have no access",
        "chmod 600",
    )
}

/// The one owner-and-mode rule both checks apply: owned by the server's
/// user (or root, when `root_ok`), none of the `forbidden` mode bits set.
fn check(path: &Path, root_ok: bool, forbidden: u32, why: &str, fix: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let uid = meta.uid();
    if uid != server_uid() && !(root_ok && uid == 0) {
        let or_root = if root_ok { " or root" } else { "" };
        return Err(format!(
            "{} is owned by uid {uid}, not by the server's user (uid {}){or_root}",
            path.display(),
            server_uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & forbidden != 0 {
        return Err(format!(
            "{} has mode {mode:04o}: {why} ({fix} {})",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn with_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn modes_decide() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        with_mode(&f, 0o755);
        assert!(check_trusted(&f).is_ok());
        assert!(check_private(&f).unwrap_err().contains("0755"));
        with_mode(&f, 0o775);
        assert!(check_trusted(&f).unwrap_err().contains("chmod go-w"));
        with_mode(&f, 0o757);
        assert!(check_trusted(&f).is_err());
        with_mode(&f, 0o600);
        assert!(check_private(&f).is_ok());
        with_mode(&f, 0o640);
        assert!(check_private(&f).unwrap_err().contains("chmod 600"));
        assert!(check_trusted(&dir.path().join("missing")).is_err());
    }
}
