//! The store: the mount point directory that *is* the registry.
//!
//! It keeps the Registry V1 reference layout (`v1-protocol.md` §6) so that
//! any tool that knows that layout can read it, plus a `_berth/` sidecar with
//! a content-addressed blob pool for V2. All paths come from [`paths`], all
//! writes go through [`atomic`]. Methods are synchronous (call them from
//! `spawn_blocking`) except those that stream request bodies.

pub mod atomic;
pub mod blobs;
pub mod clock;
pub mod derive;
pub mod earned;
pub mod error;
pub mod fsck;
pub mod gc;
pub mod ingest;
pub mod layer_facts;
pub mod manifests;
pub mod media;
pub mod paths;
pub mod possession;
pub mod projection;
pub mod quarantine;
pub mod referrers;
pub mod transient;
pub mod translate;
pub mod uploads;
pub mod v1;
pub mod v1ids;
pub mod walk;
pub mod writeback;

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::names::{Algorithm, Digest};

pub use error::{StoreError, StoreResult};
pub use paths::Paths;

/// Largest manifest the store holds: the registry refuses a bigger one
/// (413; the spec suggests accepting at least 4 MB), the mirror will not
/// fetch one, and `gc`/`fsck` do not parse a pool file over it as a
/// manifest (none can have been pushed). The same number as the V2 read
/// client's cap (`berth_transport::v2::MANIFEST_LIMIT`), defined once there.
pub const MAX_MANIFEST: usize = berth_transport::v2::MANIFEST_LIMIT;

/// Runs blocking store work off the async threads, flattening join errors
/// (a panic in `f` resumes in the caller). Store methods are synchronous;
/// the registry's handlers and the mirror call them through this.
pub async fn blocking<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A registry store rooted at one directory. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Store {
    paths: Paths,
    /// The last reading of the store's clock ([`Store::clock`]).
    clock: Arc<Mutex<Option<clock::StoreClock>>>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`. A root that other
    /// accounts may read or enter is logged as a warning (docs/storage.md
    /// says what to chmod).
    pub fn open(root: &Path) -> io::Result<Store> {
        let paths = Paths::new(root);
        if let Ok(meta) = fs::metadata(root) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o007 != 0 {
                tracing::warn!(root = %root.display(), mode = %format!("{mode:04o}"), "other accounts can read this store; chmod o-rwx it (docs/storage.md, File modes)");
            }
        }
        atomic::create_dirs(paths.images_dir())?;
        atomic::create_dirs(paths.repositories_dir())?;
        atomic::create_dirs(paths.blobs_dir(crate::names::Algorithm::Sha256))?;
        atomic::create_dirs(paths.uploads_dir())?;
        Ok(Store {
            paths,
            clock: Arc::default(),
        })
    }

    /// Creates (or converts the root of) a group-shared store: the root
    /// becomes 2770 (setgid, so every directory below inherits its group and
    /// the bit, and [`atomic::Sharing`] makes new files 0660). Existing
    /// contents keep their modes (docs/storage.md has the commands).
    pub fn create_group_shared(root: &Path) -> io::Result<Store> {
        use std::os::unix::fs::PermissionsExt;
        atomic::create_dirs(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o2770))?;
        Store::open(root)
    }

    /// The path builder of this store.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The store's clock, on which every age (gc, fsck, the upload sweep)
    /// is read: measured on first use and again once
    /// [`clock::REMEASURE_AFTER`] old (see [`clock`]).
    pub fn clock(&self) -> clock::StoreClock {
        let mut cached = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        match *cached {
            Some(c) if !c.stale() => c,
            _ => {
                let c = clock::StoreClock::measure(&self.paths.berth_dir());
                *cached = Some(c);
                c
            }
        }
    }

    /// Records that this store backs a pull-through mirror of `upstream`,
    /// so `fsck` expects blobs that were never asked for to be absent.
    pub fn mark_mirror(&self, upstream: &str) -> io::Result<()> {
        let marker = self.paths.mirror_marker();
        if read_optional(&marker)?.as_deref() == Some(upstream.as_bytes()) {
            return Ok(());
        }
        atomic::write_atomic(&marker, upstream.as_bytes())
    }

    /// The upstream this store mirrors, if it backs a mirror.
    pub fn mirror_of(&self) -> io::Result<Option<String>> {
        Ok(read_optional(&self.paths.mirror_marker())?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

/// Reads a file, mapping "missing" to `None`; a transient shared-filesystem
/// error is retried and any other error names the path ([`walk::optional`]).
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    walk::optional(path, |p| fs::read(p))
}

/// `algorithm`'s digest of `prefix` followed by a file's bytes, streamed:
/// blob verification (`prefix` empty, the blob's own algorithm) and the V1
/// payload checksum (sha256, `json + "\n"` before the layer) in fsck, gc,
/// upload sessions and V1 reads.
pub(crate) fn hash_file(path: &Path, prefix: &[u8], algorithm: Algorithm) -> io::Result<Digest> {
    let mut h = algorithm.hasher();
    h.update(prefix);
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// Helpers shared by the store's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use bytes::Bytes;
    use http_body_util::Full;

    use super::Store;
    use crate::names::ImageId;

    /// Pushes and publishes a V1 image (json, layer, checksum) as a client would.
    pub(crate) async fn publish_v1_image(
        store: &Store,
        id: &ImageId,
        parent: Option<&ImageId>,
        layer: &'static [u8],
    ) {
        let json = match parent {
            Some(p) => format!(r#"{{"id":"{id}","parent":"{p}"}}"#),
            None => format!(r#"{{"id":"{id}"}}"#),
        };
        store.put_image_json(id, json.as_bytes(), "test").unwrap();
        store
            .put_image_layer(id, Full::new(Bytes::from_static(layer)), "test")
            .await
            .unwrap();
        let sums = store.stored_checksums(id).unwrap();
        store.put_image_checksum(id, &sums[0], "test").unwrap();
    }
}
