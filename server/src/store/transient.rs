//! Transient storage errors of a shared filesystem (issue 15): which
//! `io::Error`s mean "the storage is briefly unavailable" rather than "this
//! request is wrong" or "the disk is broken", and a bounded retry for the
//! idempotent steps (open, stat, link, rename, lock) that may hit one.
//!
//! A GlusterFS or NFS client answers `ESTALE` when a file handle it cached
//! was replaced on another host, `EIO`/`ENOTCONN` while a brick or server is
//! away, `ENOLCK` when the lock manager cannot be reached, `EINTR` when a
//! lock wait is interrupted, and `EROFS` while a replicated volume has lost
//! its quorum (GlusterFS turns it read-only until the brick is back). The
//! registry answers what survives the retry with 503 and `Retry-After`
//! (`registry::v2::errors`), never with a silent 500, and nothing
//! half-written is ever published (every publishing step is a link or
//! rename of a verified file).

use std::io;
use std::time::Duration;

/// Attempts of [`retry`] (the first included) for most transient errors:
/// 350 ms of pauses, short enough for a request to wait out.
const ATTEMPTS: u32 = 4;
/// Attempts for `ESTALE`: 3.15 s of pauses. A stale handle heals when the
/// client looks the path up afresh, which a FUSE client does only once its
/// cached entry expires (GlusterFS caches entries and attributes for 1 s by
/// default); the GlusterFS tests saw a stale entry outlast 350 ms.
const STALE_ATTEMPTS: u32 = 7;
/// Pause before the second attempt; doubled before each further one.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// Whether `e` is a transient shared-filesystem condition worth retrying
/// (or answering "try again later").
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ESTALE)
            | Some(libc::EIO)
            | Some(libc::ENOTCONN)
            | Some(libc::ENOLCK)
            | Some(libc::EINTR)
            | Some(libc::EROFS)
    )
}

/// Whether an error anywhere in `e`'s source chain is transient.
pub fn is_transient_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if is_transient(io) {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                if is_transient_chain(inner) {
                    return true;
                }
            }
        }
        cur = err.source();
    }
    false
}

/// Attempts [`retry`] makes while `e` is what a step fails with.
fn attempts_for(e: &io::Error) -> u32 {
    if stale(e) {
        STALE_ATTEMPTS
    } else if is_transient_chain(e) {
        ATTEMPTS
    } else {
        1
    }
}

/// Whether `e`, or an error anywhere in its source chain, is `ESTALE`.
fn stale(e: &io::Error) -> bool {
    if e.raw_os_error() == Some(libc::ESTALE) {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = match e.get_ref() {
        Some(inner) => Some(inner),
        None => None,
    };
    while let Some(err) = cur {
        if err.downcast_ref::<io::Error>().is_some_and(stale) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An I/O error with the path it happened on, keeping the original as its
/// source (so [`is_transient_chain`] still sees the OS error): a walk of
/// the whole store that fails says where.
#[derive(Debug)]
pub struct AtPath {
    path: std::path::PathBuf,
    source: io::Error,
}

impl std::fmt::Display for AtPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for AtPath {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `e`, naming `path` (same kind; an error that already names its path is
/// returned as it is).
pub fn at_path(path: &std::path::Path, e: io::Error) -> io::Error {
    if e.get_ref().is_some_and(|i| i.is::<AtPath>()) {
        return e;
    }
    io::Error::new(
        e.kind(),
        AtPath {
            path: path.to_path_buf(),
            source: e,
        },
    )
}

/// Runs an idempotent filesystem step, retrying it (with a short growing
/// pause, blocking) while it fails transiently; `what` names it in the log.
/// `ESTALE` is waited out longer than the other transient errors (see
/// [`STALE_ATTEMPTS`]). The step must look its paths up again on every
/// attempt (open by path, not through a handle it keeps).
pub fn retry<T>(
    what: impl std::fmt::Display,
    mut step: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match step() {
            Err(e) if attempt < attempts_for(&e) => {
                tracing::warn!(error = %e, attempt, "{what}: transient storage error, retrying");
                std::thread::sleep(pause);
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_retries_only_transient_errors() {
        let stale = io::Error::from_raw_os_error(libc::ESTALE);
        assert!(is_transient(&stale));
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(!is_transient(&io::Error::other("x")));
        let wrapped = io::Error::other(io::Error::from_raw_os_error(libc::EIO));
        assert!(is_transient_chain(&wrapped));

        let mut calls = 0;
        let r = retry("test", || {
            calls += 1;
            if calls < 3 {
                Err(io::Error::from_raw_os_error(libc::ESTALE))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 3);

        let mut calls = 0;
        let r: io::Result<()> = retry("test", || {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1, "a lasting error is not retried");

        let mut calls = 0;
        let r: io::Result<()> = retry("test", || {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::ENOTCONN))
        });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOTCONN));
        assert_eq!(calls, ATTEMPTS);

        // ESTALE, also wrapped with its path, is waited out longer.
        let mut calls = 0;
        let r: io::Result<()> = retry("test", || {
            calls += 1;
            Err(at_path(
                std::path::Path::new("/store/x"),
                io::Error::from_raw_os_error(libc::ESTALE),
            ))
        });
        let e = r.unwrap_err();
        assert_eq!(calls, STALE_ATTEMPTS);
        assert!(e.to_string().starts_with("/store/x: "), "{e}");
        assert!(is_transient_chain(&e));
    }
}
