//! The content-addressed blob pool `_berth/blobs/<algorithm>/<hex>`
//! (sha256, and sha512 for blobs a client named by a sha512 digest).
//!
//! Every layer is stored once, whichever protocol brought it: a V1 layer file
//! `images/<id>/layer` is a hard link to its pool entry. Pool entries are
//! immutable and verified before they become visible, so two hosts writing the
//! same blob at once is harmless: the second link finds the first and reuses it.
//! The one exception: a pool file whose size shows it cannot hold its digest's
//! bytes is replaced by the next verified upload of them
//! ([`Store::present_blob_sound`]).

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::atomic::{sync_parent, TempFile};
use super::Store;
use crate::names::Digest;

impl Store {
    /// Size of a pool blob, or `None` if it is not there.
    pub fn blob_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.paths().blob(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a pool blob for reading, with its size.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<Option<(File, u64)>> {
        match File::open(self.paths().blob(digest)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Publishes a verified temp file (whose hash is `digest`) into the pool.
    /// Returns `false` when the blob was already there (the temp is dropped).
    /// The temp is fsynced before it gets the name: the pool is trusted by
    /// name (a re-push of present content writes nothing), so a power cut
    /// must not leave a short file there.
    ///
    /// When the pool has the blob already, it is kept as it is
    /// ([`Store::present_blob_sound`]) unless its size shows it cannot hold
    /// these bytes: then the verified temp takes its place.
    pub fn commit_blob(&self, mut temp: TempFile, digest: &Digest) -> io::Result<bool> {
        let dest = self.paths().blob(digest);
        super::atomic::create_dirs(self.paths().blobs_dir(digest.algorithm()))?;
        let size = temp.file().metadata()?.len();
        if dest.exists() {
            if self.present_blob_sound(digest, size)? {
                return Ok(false);
            }
            temp.commit(&dest)?; // fsynced, renamed over the damaged file
            return Ok(true);
        }
        temp.sync()?;
        match fs::hard_link(temp.path(), &dest) {
            Ok(()) => {
                sync_parent(&dest)?;
                Ok(true) // temp dropped: its name goes, the inode stays as the blob
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.present_blob_sound(digest, size)? {
                    return Ok(false);
                }
                temp.commit(&dest)?;
                Ok(true)
            }
            // Filesystems without hard links: rename instead (same filesystem).
            Err(_) => {
                temp.commit(&dest)?;
                Ok(true)
            }
        }
    }

    /// A request has verified its own copy of blob `digest` (`size` bytes)
    /// and found the pool naming it already. The pool's file is renewed for
    /// gc ([`Store::renew_held_for_gc`]: the request writes nothing to it,
    /// and the client goes on as if it had), and its size is compared: a
    /// file of another size cannot hold the digest's bytes (a write a crash
    /// cut short, an append by a writer that lost its lock), so `false`
    /// tells the caller to put its verified copy in its place. Trusted by
    /// name otherwise, a damaged blob was never healed by pushing it again.
    pub fn present_blob_sound(&self, digest: &Digest, size: u64) -> io::Result<bool> {
        self.renew_held_for_gc(digest);
        match fs::metadata(self.paths().blob(digest)) {
            Ok(m) if m.len() == size => Ok(true),
            Ok(m) => {
                tracing::warn!(
                    blob = %digest,
                    pool_size = m.len(),
                    size,
                    "the pool's copy has the wrong size; replacing it with the verified upload"
                );
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Places a verified temp file at `dest` *and* in the pool under `digest`,
    /// sharing one copy of the bytes (a hard link) whenever possible.
    /// fsynced first, as in [`Store::commit_blob`].
    pub fn commit_linked(
        &self,
        mut temp: TempFile,
        digest: &Digest,
        dest: &Path,
    ) -> io::Result<()> {
        let blob = self.paths().blob(digest);
        super::atomic::create_dirs(self.paths().blobs_dir(digest.algorithm()))?;
        temp.sync()?;
        match fs::hard_link(temp.path(), &blob) {
            Ok(()) => {
                sync_parent(&blob)?;
                temp.commit(dest)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // The pool already has these bytes: link the pool entry at dest
                // instead, so only one copy is kept; the temp is discarded.
                self.link_blob_to(digest, dest)
            }
            Err(_) => {
                // No hard links here: keep a file at dest and a copy in the pool.
                temp.commit(dest)?;
                let dir = self.paths().blobs_dir(digest.algorithm());
                let mut copy = TempFile::new_in(&dir, "blob")?;
                io::copy(&mut File::open(dest)?, copy.file())?;
                copy.commit(&blob)
            }
        }
    }

    /// Makes `dest` name the pool blob `digest` (hard link via a temp name and
    /// rename, so `dest` appears atomically), copying if links are unsupported.
    pub fn link_blob_to(&self, digest: &Digest, dest: &Path) -> io::Result<()> {
        let blob = self.paths().blob(digest);
        let dir = dest
            .parent()
            .ok_or_else(|| io::Error::other("destination has no parent"))?;
        super::atomic::create_dirs(dir)?;
        let tmp = TempFile::new_in(dir, "link")?;
        let tmp_path = tmp.path().to_path_buf();
        fs::remove_file(&tmp_path)?;
        match fs::hard_link(&blob, &tmp_path) {
            Ok(()) => {
                tmp.forget();
                fs::rename(&tmp_path, dest).inspect_err(|_| {
                    let _ = fs::remove_file(&tmp_path);
                })?;
                sync_parent(dest)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
            Err(_) => {
                drop(tmp);
                let mut copy = TempFile::new_in(dir, "copy")?;
                io::copy(&mut File::open(&blob)?, copy.file())?;
                copy.commit(dest)
            }
        }
    }
}
