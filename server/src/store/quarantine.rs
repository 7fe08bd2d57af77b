//! Quarantine (issue 15): where `fsck --repair` moves an object whose
//! content does not match its name — a pool blob (layer, config or
//! manifest) that does not hash to its digest, a V1 image whose layer does
//! not match its recorded payload checksum.
//!
//! Such an object is worse than a missing one: `HEAD` answers it as present,
//! so every later push skips it and every pull fails. Moving it out of the
//! store (one `rename`, atomic, within the store's filesystem) makes its
//! name free: HEAD answers 404, the next push uploads the object again, and
//! the bad bytes stay in `_berth/quarantine/` for a human to inspect
//! (nothing reads them; delete them at will).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::atomic::sync_parent;
use super::Store;

/// Moves `path` (a file or an image directory) into the quarantine under a
/// name saying where it came from and when; logs why. Returns the new path.
pub fn quarantine(store: &Store, path: &Path, why: &str) -> io::Result<PathBuf> {
    let root = store.paths().root().to_path_buf();
    let rel = path.strip_prefix(&root).unwrap_or(path);
    let flat: String = rel
        .to_string_lossy()
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = store.paths().quarantine_dir();
    super::atomic::create_dirs(&dir)?;
    let dest = dir.join(format!("{secs}-{:08x}-{flat}", rand::random::<u32>()));
    fs::rename(path, &dest)?;
    sync_parent(path)?;
    sync_parent(&dest)?;
    tracing::warn!(from = %path.display(), to = %dest.display(), why, "quarantined");
    Ok(dest)
}

/// How many objects the quarantine holds (fsck notes them).
pub fn quarantined(store: &Store) -> io::Result<usize> {
    match fs::read_dir(store.paths().quarantine_dir()) {
        Ok(entries) => Ok(entries.count()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}
