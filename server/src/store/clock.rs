//! The store's clock: what time it is on the filesystem that holds the
//! store.
//!
//! gc, fsck and the upload sweep judge objects by their age, "now" minus
//! the file's time. On a shared store those times come from the file
//! server (NFS stamps a create, a write and a `utimes(NOW)` with its own
//! clock, and a file's ctime always with its own), whatever the clock of
//! the host that wrote them says. So "now" has to come from there too: a
//! host whose clock runs two hours ahead saw a blob uploaded a moment ago
//! as two hours old, and its gc collected a push in flight. A
//! [`StoreClock`] reads the store's time off a probe file it creates, and
//! keeps it running on this host's monotonic clock.

use std::fs::Metadata;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::atomic::{create_file, temp_path};

/// The largest difference between this host's clock and the store's
/// that is taken for measurement error and ignored: file times of whole
/// seconds on some filesystems, the kernel's coarse timestamps, the
/// probe's round trip. A larger one is corrected for, and logged (the
/// operator should fix the host's clock: logs, TLS and cron read it too).
const SKEW_TOLERANCE: Duration = Duration::from_secs(2);

/// How long a measurement is used before the store's time is read again
/// (clocks drift apart slowly; a measurement is a create and an unlink).
pub const REMEASURE_AFTER: Duration = Duration::from_secs(600);

/// The store's time, read once from a probe file and carried forward on
/// this host's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct StoreClock {
    /// The store's time at `taken`.
    store_time: SystemTime,
    /// When, on this host's monotonic clock, `store_time` was read.
    taken: Instant,
}

impl StoreClock {
    /// Reads the store's time: creates a probe file in `dir` (the store's
    /// `_berth/`), whose mtime the filesystem stamps, and removes it. A
    /// store where no file can be created (read-only, or not made yet)
    /// falls back to this host's clock, logged.
    pub fn measure(dir: &Path) -> StoreClock {
        let local_before = SystemTime::now();
        let started = Instant::now();
        let stamped = probe_stamp(dir);
        let took = started.elapsed();
        let stamp = match stamped {
            Ok(stamp) => stamp,
            Err(e) => {
                tracing::info!(
                    dir = %dir.display(),
                    "cannot read the store's clock ({e}); ages are read on this host's clock"
                );
                return StoreClock::local();
            }
        };
        // The filesystem stamped the probe somewhere in the `took` this
        // host waited: take the middle as the moment it did.
        let local = local_before + took / 2;
        let (ahead, by) = match local.duration_since(stamp) {
            Ok(by) => (true, by),
            Err(e) => (false, e.duration()),
        };
        if by <= SKEW_TOLERANCE {
            return StoreClock::local();
        }
        tracing::warn!(
            dir = %dir.display(),
            "this host's clock is {:.1} s {} the store's; gc, fsck and the upload sweep \
             read ages on the store's clock, but fix this host's clock (NTP)",
            by.as_secs_f64(),
            if ahead { "ahead of" } else { "behind" },
        );
        StoreClock {
            store_time: stamp,
            taken: started + took / 2,
        }
    }

    /// This host's clock: for a store whose own cannot be read, or that
    /// agrees with it within [`SKEW_TOLERANCE`].
    pub fn local() -> StoreClock {
        StoreClock {
            store_time: SystemTime::now(),
            taken: Instant::now(),
        }
    }

    /// The store's time now.
    pub fn now(&self) -> SystemTime {
        self.store_time + self.taken.elapsed()
    }

    /// Whether this measurement is old enough to take again.
    pub fn stale(&self) -> bool {
        self.taken.elapsed() >= REMEASURE_AFTER
    }

    /// Time since a file last changed, on the store's clock: the newer of
    /// mtime and ctime, because a hard link (reusing a pool blob) updates
    /// only the ctime. Whole seconds, as file times are compared across
    /// filesystems that keep no finer ones.
    pub fn age(&self, m: &Metadata) -> Duration {
        use std::os::unix::fs::MetadataExt;
        self.secs_since(m.mtime().max(m.ctime()))
    }

    /// Time since a file's content last changed (its mtime alone), on the
    /// store's clock, in whole seconds: gc's test of a pool blob, whose
    /// ctime its own removal of a V1 layer link changes.
    pub fn mtime_age(&self, m: &Metadata) -> Duration {
        use std::os::unix::fs::MetadataExt;
        self.secs_since(m.mtime())
    }

    /// Whole seconds from Unix time `secs` to now; zero for a time ahead.
    fn secs_since(&self, secs: i64) -> Duration {
        let now = self
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Duration::from_secs(now.saturating_sub(secs).max(0) as u64)
    }

    /// Time since `t` (a file's mtime), on the store's clock; zero for a
    /// time still ahead of it.
    pub fn since(&self, t: SystemTime) -> Duration {
        self.now().duration_since(t).unwrap_or_default()
    }
}

/// The time the filesystem stamps on a file created in `dir` now: a probe
/// (`.tmp-clock-<random>`, which gc sweeps should a crash leave it) made
/// with `O_EXCL` and removed at once. `dir` is never created: a read-only
/// `fsck` must not write a directory, and a missing one means no clock.
fn probe_stamp(dir: &Path) -> std::io::Result<SystemTime> {
    let path = temp_path(dir, "clock");
    let stamped = create_file(&path).and_then(|probe| probe.metadata()?.modified());
    if stamped.is_ok() {
        let _ = std::fs::remove_file(&path);
    }
    stamped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a local directory the store's clock is this host's: a file
    /// written now is no older than the measurement's own uncertainty.
    #[test]
    fn on_a_local_directory_the_store_clock_is_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let clock = StoreClock::measure(dir.path());
        let local = SystemTime::now();
        let diff = match clock.now().duration_since(local) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(
            diff < Duration::from_secs(1),
            "store and host differ by {diff:?}"
        );
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(clock.age(&std::fs::metadata(&f).unwrap()) <= Duration::from_secs(1));
        // The probe is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A directory that does not exist: this host's clock, no error, and
    /// the directory is not made (a read-only `fsck` writes nothing).
    #[test]
    fn without_a_probe_the_hosts_clock_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("_berth");
        let clock = StoreClock::measure(&missing);
        assert!(clock.since(SystemTime::now()) < Duration::from_secs(1));
        assert!(!missing.exists(), "measuring made the directory");
    }
}
