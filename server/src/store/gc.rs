//! `berth-server gc`: deletes what no tag references, safely while other
//! processes and hosts keep pushing (`docs/storage.md`, "Garbage collection").
//!
//! Mark: every V1 tag (its ancestry chain, each image's layer blob, records
//! derived from it) and every V2 tag (its manifest, index children, configs,
//! layers) is a root, and so is every referrer (`store::referrers`) still
//! linked where it was pushed whose subject is marked; so is everything younger than the grace (a push in
//! flight has written objects no tag names yet) and every V1 image still in
//! progress. Young objects mark what they reference, so a manifest pushed a
//! second ago keeps its old layers alive before its tag exists.
//!
//! Sweep: unmarked objects older than the grace go, in an order that never
//! leaves a dangling reference even if gc itself is killed midway: links and
//! records first, then V1 images (children before parents, `json` first in
//! each, under the image's `fcntl` lock), then pool blobs. Right before each
//! group, and again whenever the sweep has run for a while, the references
//! are marked afresh, and each object's age is re-read just before it is
//! unlinked: an object a concurrent push started to reference (a new tag, a
//! new manifest naming it, a hard link to it) survives. A manifest PUT
//! renews what it names before it checks it ([`Store::renew_for_gc`]), so
//! that re-read also protects an old blob a push names without writing it.
//!
//! What it does not do: rewrite the V1 `_index_images` lists (an entry naming
//! a collected image is harmless: pulls go by tag and ancestry).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::atomic::{remove_durable, sync_parent, FileLock};
use super::clock::StoreClock;
use super::uploads::UPLOAD_MAX_IDLE;
use super::walk::{
    age, dir_age, entries, manifest_refs, metadata, metadata_followed, optional, pool_entries,
    read_ancestry, read_tag_file, referrer_records, repos_with, temp_files, v1_tags,
};
use super::{hash_file, read_optional, Store};
use crate::names::{Algorithm, Digest, ImageId, UploadId};
use crate::store::{Paths, MAX_MANIFEST};

/// Default grace period: nothing younger is collected.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// Marks older than this are refreshed before the next deletion.
const REMARK_AFTER: Duration = Duration::from_millis(200);
/// How long the sweep waits for an image's lock before skipping the image.
const IMAGE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// What `gc` was asked to do.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Objects younger than this are kept, referenced or not.
    pub grace: Duration,
    /// Report what would be freed, delete nothing.
    pub dry_run: bool,
}

/// What one run freed (or, with `dry_run`, would free).
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    /// V1 image directories.
    pub images: usize,
    /// Pool blobs (layers, configs, manifests).
    pub blobs: usize,
    /// Manifest, derived, layer-info and layer facts records.
    pub records: usize,
    /// Per-repository blob links.
    pub links: usize,
    /// Stale `.tmp-*` files.
    pub temps: usize,
    /// Expired upload sessions.
    pub sessions: usize,
    /// Bytes whose last name was removed.
    pub bytes: u64,
    /// Candidates spared because they became referenced or young meanwhile.
    pub rescued: usize,
}

/// Parses a duration like `30m`, `2h`, `1d`, `45s` or `0s` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30m, 2h, 1d, 0s"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// The live set: images and blobs some root reaches.
#[derive(Debug, Default)]
struct Marks {
    images: HashSet<ImageId>,
    blobs: HashSet<Digest>,
}

/// Whether an image directory is still being written (kept by the sweep).
fn image_in_progress(store: &Store, id: &ImageId, grace: Duration) -> io::Result<bool> {
    let p = store.paths();
    let in_progress = metadata(&p.image_inprogress(id))?.is_some();
    if !in_progress && metadata(&p.image_json(id))?.is_some() {
        return Ok(false);
    }
    // In progress, or json not written yet: an upload, unless abandoned long ago.
    Ok(dir_age(&p.image_dir(id), &store.clock())?.is_some_and(|a| a < UPLOAD_MAX_IDLE.max(grace)))
}

/// Marks everything reachable from tags, from young or in-progress objects,
/// and from what a push renewed within the grace.
fn mark(store: &Store, grace: Duration) -> io::Result<Marks> {
    let p = store.paths();
    let clock = store.clock();
    let mut m = Marks::default();
    let mut image_roots: Vec<ImageId> = Vec::new();
    let mut manifest_roots: Vec<Digest> = Vec::new();

    // Pool inodes, to find the blob a V1 layer file is a hard link of.
    let mut by_inode: HashMap<(u64, u64), Digest> = HashMap::new();
    for (d, path) in pool_entries(p)? {
        let Some(d) = d else {
            continue;
        };
        let Some(meta) = metadata_followed(&path)? else {
            continue;
        };
        by_inode.insert((meta.dev(), meta.ino()), d.clone());
        // A young blob that is a manifest keeps what it names (its tag may
        // not be written yet).
        if age(&path, &clock)?.is_some_and(|a| a < grace) && meta.len() <= MAX_MANIFEST as u64 {
            let head = optional(&path, |path| {
                let mut b = [0u8; 1];
                let n = fs::File::open(path)?.read(&mut b)?;
                Ok(n == 1 && b[0] == b'{')
            })?;
            if head == Some(true) {
                manifest_roots.push(d);
            }
        }
    }

    for (_, _, path) in v1_tags(store)? {
        if let Some(id) = read_tag_file(&path)? {
            image_roots.push(id);
        }
    }
    let v2 = p.v2_dir();
    for (repo, dir) in repos_with(&v2, Paths::V2_TAGS)? {
        for (name, _) in entries(&dir)? {
            let Ok(tag) = crate::names::Tag::parse(&name) else {
                continue;
            };
            // A record that cannot be read fails the mark: taken for a
            // missing tag, it would let the sweep delete the tagged image.
            if let Some(rec) = store.v2_tag(&repo, &tag)? {
                manifest_roots.push(rec.digest);
                image_roots.extend(rec.v1);
            }
        }
    }
    for (name, _) in entries(&p.images_dir())? {
        let Ok(id) = ImageId::parse(&name) else {
            continue;
        };
        let young = dir_age(&p.image_dir(&id), &clock)?.is_some_and(|a| a < grace);
        if young || image_in_progress(store, &id, grace)? {
            image_roots.push(id);
        }
    }
    for (name, path) in entries(&p.manifest_records_dir())? {
        if let Some(d) = Paths::digest_of_key(&name) {
            if age(&path, &clock)?.is_some_and(|a| a < grace) {
                manifest_roots.push(d);
            }
        }
    }
    for (name, path) in entries(&p.derived_dir())? {
        if let Ok(id) = ImageId::parse(&name) {
            if age(&path, &clock)?.is_some_and(|a| a < grace) {
                image_roots.push(id);
            }
        }
    }
    // What a push renewed (`Store::renew_for_gc`) is a root like a young
    // manifest: an index PUT renews its children, and their own config and
    // layers must last until its tag is written.
    for (name, path) in entries(&p.renewed_dir())? {
        let Some(d) = Paths::digest_of_key(&name) else {
            continue;
        };
        if age(&path, &clock)?.is_some_and(|a| a < grace) {
            // A layer (which may be larger than any manifest) is kept as
            // it is; only a manifest is read for what it names.
            if metadata(&p.manifest_record(&d))?.is_some() {
                manifest_roots.push(d);
            } else {
                m.blobs.insert(d);
            }
        }
    }

    // V1 chains.
    while let Some(id) = image_roots.pop() {
        if !m.images.insert(id.clone()) {
            continue;
        }
        match read_ancestry(store, &id)? {
            Some(anc) => image_roots.extend(anc.iter().filter_map(|a| ImageId::parse(a).ok())),
            None => {
                // No ancestry yet (an upload in progress): follow the json's parent.
                if let Some(raw) = read_optional(&p.image_json(&id))? {
                    if let Ok(v) = serde_json::from_slice(&raw) {
                        if let Ok(Some(parent)) = super::walk::json_parent(&v) {
                            image_roots.push(parent);
                        }
                    }
                }
            }
        }
        let layer = p.image_layer(&id);
        if let Some(meta) = metadata_followed(&layer)? {
            if let Some(d) = by_inode.get(&(meta.dev(), meta.ino())) {
                m.blobs.insert(d.clone());
            } else if let Some(info) = store.v1_layer_info(&id)? {
                m.blobs.insert(info.blob);
            } else if let Some(d) = optional(&layer, |l| hash_file(l, b"", Algorithm::Sha256))? {
                m.blobs.insert(d); // no hard links on this filesystem
            }
        }
        if let Some(rec) = store.derived(&id)? {
            manifest_roots.push(rec.manifest);
            m.blobs.insert(rec.config);
        }
    }

    // V2 graphs, then the referrers of what is live (a signature of a live
    // image, an attestation of that signature...) until nothing is added.
    let mut seen = HashSet::new();
    mark_manifests(p, &mut m, &mut seen, manifest_roots)?;
    let records = referrer_records(store)?;
    loop {
        let mut more = Vec::new();
        for rec in &records {
            if m.blobs.contains(&rec.subject)
                && !seen.contains(&rec.referrer)
                && metadata(&p.v2_blob_link(&rec.repo, &rec.referrer))?.is_some()
                && metadata_followed(&p.blob(&rec.referrer))?.is_some()
            {
                more.push(rec.referrer.clone());
            }
        }
        if more.is_empty() {
            break;
        }
        mark_manifests(p, &mut m, &mut seen, more)?;
    }
    Ok(m)
}

/// Marks manifests and everything they reference, children included.
/// A live manifest larger than [`MAX_MANIFEST`] cannot have been pushed and
/// is not parsed; what it names is unknown, so marking fails and nothing
/// is collected (`fsck` reports the manifest).
fn mark_manifests(
    p: &super::paths::Paths,
    m: &mut Marks,
    seen: &mut HashSet<Digest>,
    mut roots: Vec<Digest>,
) -> io::Result<()> {
    while let Some(d) = roots.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        m.blobs.insert(d.clone());
        let path = p.blob(&d);
        // Gone: a dangling reference, nothing to keep. Unreadable: the
        // mark fails rather than leave what the manifest names unmarked.
        let Some(meta) = metadata_followed(&path)? else {
            continue;
        };
        if meta.len() > MAX_MANIFEST as u64 {
            return Err(io::Error::other(format!(
                "manifest {d} is larger than {MAX_MANIFEST} bytes, so what it references \
                 cannot be read; nothing was collected (see berth-server fsck)"
            )));
        }
        let Some(bytes) = read_optional(&path)? else {
            continue;
        };
        for (r, child) in manifest_refs(&bytes) {
            if child {
                roots.push(r);
            } else {
                m.blobs.insert(r);
            }
        }
    }
    Ok(())
}

/// Marks that are refreshed when they get old, so every deletion is decided
/// against references at most [`REMARK_AFTER`] old.
struct Fresh<'a> {
    store: &'a Store,
    grace: Duration,
    /// The store's clock, on which ages are read this run.
    clock: StoreClock,
    marks: Marks,
    at: Instant,
    /// Runs right after each mark: what another host did while it was
    /// taken (tests only).
    #[cfg(test)]
    after_mark: Option<Box<dyn FnMut()>>,
}

impl Fresh<'_> {
    fn get(&mut self) -> io::Result<&Marks> {
        if self.at.elapsed() >= REMARK_AFTER {
            self.refresh()?;
        }
        Ok(&self.marks)
    }

    fn refresh(&mut self) -> io::Result<()> {
        self.marks = mark(self.store, self.grace)?;
        self.at = Instant::now();
        #[cfg(test)]
        if let Some(during) = &mut self.after_mark {
            during();
        }
        Ok(())
    }
}

/// Whether a link or record at `path`, there for digest `d`, may go: `d` is
/// not marked, and then — read *after* the marks, which may have been
/// taken just now — `path` is older than the grace and `d` was not renewed
/// within it. In that order, a manifest PUT that renewed `d` while the
/// marks were taken, and so is missing from them, is still seen.
fn collectable(
    fresh: &mut Fresh,
    p: &Paths,
    d: &Digest,
    path: &Path,
    grace: Duration,
) -> io::Result<bool> {
    if fresh.get()?.blobs.contains(d) {
        return Ok(false);
    }
    let clock = &fresh.clock;
    Ok(old(path, grace, clock)? && !renewed_lately(p, d, grace, clock)?)
}

/// Whether V1 image `id` may be removed now; called under its lock, which
/// writers renewing it take too (`Store::renew_image_chain`). Young (its
/// directory, its lock file included), in progress, or marked: kept.
fn image_collectable(
    fresh: &mut Fresh,
    store: &Store,
    id: &ImageId,
    grace: Duration,
) -> io::Result<bool> {
    let young = dir_age(&store.paths().image_dir(id), &fresh.clock)?.is_none_or(|a| a < grace);
    Ok(!young && !image_in_progress(store, id, grace)? && !fresh.get()?.images.contains(id))
}

/// Whether pool blob `d` may be unlinked now, `links` being its link count
/// when it was chosen: unmarked, and then — read after the marks, as in
/// [`collectable`] — not linked again, rewritten, or renewed since.
/// `None`: it is gone already.
fn blob_collectable(
    fresh: &mut Fresh,
    p: &Paths,
    d: &Digest,
    path: &Path,
    links: u64,
    grace: Duration,
) -> io::Result<Option<bool>> {
    let marked = fresh.get()?.blobs.contains(d);
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let clock = &fresh.clock;
    let relinked =
        m.nlink() > links || clock.mtime_age(&m) < grace || renewed_lately(p, d, grace, clock)?;
    Ok(Some(!marked && !relinked))
}

/// Whether `path` is (still) older than the grace.
fn old(path: &Path, grace: Duration, clock: &StoreClock) -> io::Result<bool> {
    Ok(age(path, clock)?.is_some_and(|a| a >= grace))
}

/// Removes a file, returning the bytes freed (0 if other names remain).
fn remove_counted(path: &Path) -> io::Result<Option<u64>> {
    let freed = match fs::symlink_metadata(path) {
        Ok(m) if m.nlink() <= 1 => m.len(),
        Ok(_) => 0,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(remove_durable(path)?.then_some(freed))
}

impl Store {
    /// Records that a manifest PUT is about to name `named`: the mtime of
    /// each one's marker (`_berth/renewed/<key>`) becomes now, and gc counts
    /// the digest's link, pool blob and manifest record as no older than
    /// it. Called *before* the PUT checks that the digests are linked in its
    /// repository. A gc running meanwhile decides on marks that may predate
    /// the new tag, but re-reads ages right before each unlink: renewed
    /// first, an object is either spared by that re-read or already gone
    /// when the PUT checks it (the client is told to upload it again).
    /// Without it, an old unreferenced blob that a push names without
    /// rewriting it could be unlinked under the new tag for as long as gc's
    /// marks are stale (a mark pass and up to `REMARK_AFTER`). The objects
    /// themselves keep their times, which `fsck` reads (`store::earned`).
    /// Renewal only narrows gc's window: a marker that cannot be written is
    /// logged and the push goes on.
    ///
    /// Only digests linked in `repo` are renewed, so a writer cannot keep
    /// other repositories' objects from gc by naming them.
    pub fn renew_for_gc<'a>(
        &self,
        repo: &crate::names::RepoName,
        named: impl IntoIterator<Item = &'a Digest>,
    ) {
        let p = self.paths();
        for d in named {
            if p.v2_blob_link(repo, d).exists() {
                self.renew_held_for_gc(d);
            }
        }
    }

    /// Renews one digest for gc as [`Store::renew_for_gc`] does, for a
    /// request that holds it or has just been told it is present: the
    /// manifest a PUT carries (an identical manifest pushed where it is not
    /// linked yet writes nothing to its record), a blob uploaded again or
    /// mounted, a blob HEAD answering a writer 200. Each of those lets a
    /// client go on without writing the object, and its manifest PUT may
    /// come long after (other layers still uploading): gc must not remove
    /// the object in between.
    pub fn renew_held_for_gc(&self, digest: &Digest) {
        let p = self.paths();
        let path = p.renewed(digest);
        let now = std::time::SystemTime::now();
        // The directory exists after the first renewal: make it only then
        // (a writer's HEAD renews, so this stays one open and one utimes).
        let touched = match super::atomic::touch(&path, now) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                super::atomic::create_dirs(p.renewed_dir())
                    .and_then(|()| super::atomic::touch(&path, now))
            }
            done => done,
        };
        if let Err(e) = touched {
            tracing::info!("cannot renew {} for gc: {e}", path.display());
        }
    }
}

/// Whether a push renewed `digest` within the grace
/// ([`Store::renew_for_gc`], [`Store::renew_held_for_gc`]).
fn renewed_lately(
    p: &Paths,
    digest: &Digest,
    grace: Duration,
    clock: &StoreClock,
) -> io::Result<bool> {
    Ok(age(&p.renewed(digest), clock)?.is_some_and(|a| a < grace))
}

/// Collects garbage under `store` (see the module doc for the protocol).
pub fn gc(store: &Store, opts: &GcOptions) -> io::Result<GcReport> {
    let p = store.paths().clone();
    let grace = opts.grace;
    let clock = store.clock();
    let mut r = GcReport::default();
    let mut fresh = Fresh {
        store,
        grace,
        clock,
        // The mark only reads: a pass another host's rename made stale
        // (ESTALE) is simply marked again (see `fsck`).
        marks: super::transient::retry("gc mark", || mark(store, grace))?,
        at: Instant::now(),
        #[cfg(test)]
        after_mark: None,
    };
    let dry = opts.dry_run;

    // Crash leftovers: stale temp files and expired upload sessions.
    for path in temp_files(store)? {
        if old(&path, grace, &clock)? {
            let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            if dry || remove_durable(&path)? {
                r.temps += 1;
                r.bytes += size;
            }
        }
    }
    for (name, path) in entries(&p.uploads_dir())? {
        let Some(id) = UploadId::parse(&name) else {
            continue;
        };
        if dir_age(&path, &clock)?.is_some_and(|a| a > UPLOAD_MAX_IDLE.max(grace)) {
            let size = fs::metadata(p.upload_data(&id))
                .map(|m| m.len())
                .unwrap_or(0);
            if dry || store.cancel_upload(&id)? {
                r.sessions += 1;
                r.bytes += size;
            }
        }
    }

    // Pool candidates are chosen now, before this run's own image deletions
    // unlink layers (which changes the blobs' ctime and link count): later a
    // blob is spared if it is marked afresh, rewritten, or linked again.
    let mut blob_candidates: Vec<(Digest, PathBuf, u64)> = Vec::new();
    for (d, path) in pool_entries(&p)? {
        let Some(d) = d else {
            continue;
        };
        if fresh.marks.blobs.contains(&d) || !old(&path, grace, &clock)? {
            continue;
        }
        if let Ok(meta) = fs::symlink_metadata(&path) {
            blob_candidates.push((d, path, meta.nlink()));
        }
    }

    // 1. Links and records: they only point at blobs and images.
    fresh.refresh()?;
    let v2 = p.v2_dir();
    for (_, dir) in repos_with(&v2, Paths::V2_BLOB_LINKS)? {
        for (name, path) in entries(&dir)? {
            let Some(d) = Paths::digest_of_key(&name) else {
                continue;
            };
            if !collectable(&mut fresh, &p, &d, &path, grace)? {
                continue;
            }
            if dry || remove_durable(&path)? {
                r.links += 1;
            }
        }
    }
    for rec in referrer_records(store)? {
        if fresh.get()?.blobs.contains(&rec.referrer) || !old(&rec.path, grace, &clock)? {
            continue;
        }
        if dry || remove_durable(&rec.path)? {
            r.records += 1;
        }
    }
    for (name, path) in entries(&p.manifest_records_dir())? {
        let Some(d) = Paths::digest_of_key(&name) else {
            continue;
        };
        if !collectable(&mut fresh, &p, &d, &path, grace)? {
            continue;
        }
        if dry || remove_durable(&path)? {
            r.records += 1;
        }
    }
    for records in [p.derived_dir(), p.v1_layers_dir()] {
        for (name, path) in entries(&records)? {
            let Ok(id) = ImageId::parse(&name) else {
                continue;
            };
            if fresh.get()?.images.contains(&id) || !old(&path, grace, &clock)? {
                continue;
            }
            if dry || remove_durable(&path)? {
                r.records += 1;
            }
        }
    }

    // 2. V1 images, children (longer ancestry) first.
    fresh.refresh()?;
    let mut images: Vec<(usize, ImageId)> = Vec::new();
    for (name, _) in entries(&p.images_dir())? {
        let Ok(id) = ImageId::parse(&name) else {
            continue;
        };
        if !fresh.marks.images.contains(&id) {
            let depth = read_ancestry(store, &id)?.map_or(0, |a| a.len());
            images.push((depth, id));
        }
    }
    images.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
    for (_, id) in images {
        let dir = p.image_dir(&id);
        if dry {
            if dir_age(&dir, &clock)?.is_some_and(|a| a >= grace)
                && !image_in_progress(store, &id, grace)?
            {
                r.images += 1;
                r.bytes += dir_bytes(&dir)?;
            }
            continue;
        }
        let Some(_lock) =
            FileLock::exclusive_within(&p.image_lock(&id), IMAGE_LOCK_WAIT).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            })?
        else {
            continue;
        };
        if !image_collectable(&mut fresh, store, &id, grace)? {
            r.rescued += 1;
            continue;
        }
        // json first: from here readers see "not found", never a partial image.
        let mut freed = remove_counted(&p.image_json(&id))?.unwrap_or(0);
        let lock = p.image_lock(&id);
        for (_, path) in entries(&dir)? {
            if path != lock {
                freed += remove_counted(&path)?.unwrap_or(0);
            }
        }
        // The lock file goes last, while we still hold it.
        let _ = fs::remove_file(&lock);
        match fs::remove_dir(&dir) {
            Ok(()) => sync_parent(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        r.images += 1;
        r.bytes += freed;
    }

    // 3. Pool blobs.
    fresh.refresh()?;
    for (d, path, links) in blob_candidates {
        if dry {
            if let Ok(m) = fs::symlink_metadata(&path) {
                r.blobs += 1;
                r.bytes += m.len();
            }
            continue;
        }
        // Re-check right before the unlink, against fresh references.
        match blob_collectable(&mut fresh, &p, &d, &path, links, grace)? {
            None => continue,
            Some(false) => {
                r.rescued += 1;
                continue;
            }
            Some(true) => {}
        }
        if let Some(freed) = remove_counted(&path)? {
            r.blobs += 1;
            r.bytes += freed;
            // Its layer facts go with it.
            if remove_durable(&p.layer_facts(&d))? {
                r.records += 1;
            }
        }
    }

    // 4. Layer facts records whose blob is gone (an older gc, a crash
    // between the two removals).
    for (name, path) in entries(&p.layer_facts_dir())? {
        let Some(d) = Paths::digest_of_key(&name) else {
            continue;
        };
        if metadata_followed(&p.blob(&d))?.is_some() || !old(&path, grace, &clock)? {
            continue;
        }
        if dry || remove_durable(&path)? {
            r.records += 1;
        }
    }
    // 5. Renewal markers past the grace: they protect nothing any more.
    for (_, path) in entries(&p.renewed_dir())? {
        if old(&path, grace, &clock)? && !dry {
            remove_durable(&path)?;
        }
    }
    if !dry {
        record_run(store, &r)?;
    }
    Ok(r)
}

/// Every `gc` run on a store, summed: kept in the store because runs are
/// separate processes (cron, a systemd timer) while the server reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GcTotals {
    /// Runs that completed (dry runs excluded).
    pub runs: u64,
    /// Bytes those runs freed.
    pub bytes: u64,
}

/// The totals recorded so far (zero when no run completed yet).
pub fn totals(store: &Store) -> io::Result<GcTotals> {
    match fs::read(store.paths().gc_totals()) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(GcTotals::default()),
        Err(e) => Err(e),
    }
}

/// Adds one completed run to the totals (read-modify-write under a lock,
/// replaced whole by rename).
fn record_run(store: &Store, r: &GcReport) -> io::Result<()> {
    let p = store.paths();
    let _lock = FileLock::exclusive(&p.gc_totals_lock())?;
    let before = totals(store).unwrap_or_default();
    let after = GcTotals {
        runs: before.runs + 1,
        bytes: before.bytes + r.bytes,
    };
    crate::store::atomic::write_atomic(&p.gc_totals(), &serde_json::to_vec(&after)?)
}

/// Bytes an image directory would free (files with no other name).
fn dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for (_, path) in entries(dir)? {
        if let Ok(m) = fs::symlink_metadata(&path) {
            if m.nlink() <= 1 {
                n += m.len();
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{RepoName, Tag};
    use crate::store::fsck::{fsck, FsckOptions};
    use crate::store::test_support::publish_v1_image as v1_image;
    use bytes::Bytes;
    use http_body_util::Full;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        for bad in ["", "m", "1w", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    fn id(c: char) -> ImageId {
        ImageId::parse(&c.to_string().repeat(64)).unwrap()
    }

    /// sha512 blobs live in their own pool: gc keeps the ones a tag
    /// reaches, reclaims an unreferenced one (and its link), and untagging
    /// frees the rest; fsck finds the store consistent after each step.
    #[test]
    fn sha512_pool_is_collected_like_sha256() {
        use crate::store::manifests::{LinkVia, TagRecord};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("team/app").unwrap();
        let tag = Tag::parse("512").unwrap();
        let sha512 = Algorithm::Sha512;
        let cfg = store
            .put_small_blob_as(b"{\"config\":512}", sha512)
            .unwrap();
        let layer = store.put_small_blob_as(b"sha512 layer", sha512).unwrap();
        let orphan = store.put_small_blob_as(b"sha512 orphan", sha512).unwrap();
        let man = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{cfg}"}},"layers":[{{"digest":"{layer}"}}]}}"#
        );
        let md = store
            .put_manifest_as(man.as_bytes(), crate::store::media::OCI_MANIFEST, sha512)
            .unwrap();
        store
            .set_v2_tag(
                &repo,
                &tag,
                &TagRecord {
                    digest: md.clone(),
                    v1: None,
                },
            )
            .unwrap();
        for d in [&cfg, &layer, &orphan] {
            store.link_blob_to_repo(&repo, d, &LinkVia::Upload).unwrap();
        }
        store
            .link_blob_to_repo(&repo, &md, &LinkVia::Manifest)
            .unwrap();
        let clean = |store: &Store| {
            let report = fsck(
                store,
                &FsckOptions {
                    repair: false,
                    deep: false,
                    grace: Duration::ZERO,
                },
            )
            .unwrap();
            assert_eq!(report.problems(), 0, "{:#?}", report.findings);
        };
        let now = GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
        };
        let done = gc(&store, &now).unwrap();
        assert_eq!((done.blobs, done.links), (1, 1), "{done:?}");
        assert_eq!(done.bytes, b"sha512 orphan".len() as u64);
        assert_eq!(store.blob_size(&orphan).unwrap(), None);
        assert!(!store.paths().v2_blob_link(&repo, &orphan).exists());
        for d in [&cfg, &layer, &md] {
            assert!(store.blob_size(d).unwrap().is_some(), "{d} collected");
            assert!(store.blob_in_repo(&repo, d).unwrap(), "{d} unlinked");
        }
        clean(&store);

        fs::remove_file(store.paths().v2_tag(&repo, &tag)).unwrap();
        let all = gc(&store, &now).unwrap();
        assert_eq!((all.blobs, all.records), (3, 1), "{all:?}");
        assert!(pool_entries(store.paths()).unwrap().is_empty());
        clean(&store);
    }

    /// Waits (an event: the files' own ages) until every path that exists
    /// is older than `grace`.
    fn wait_until_old(paths: &[PathBuf], grace: Duration) {
        let deadline = Instant::now() + grace + Duration::from_secs(60);
        let clock = StoreClock::local();
        let aged = |p: &PathBuf| age(p, &clock).unwrap().is_none_or(|a| a >= grace);
        while !paths.iter().all(aged) {
            assert!(
                Instant::now() < deadline,
                "{paths:?} never aged past {grace:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What a manifest PUT does to the store (`registry::v2::manifests`),
    /// in its order: renew, check, write the manifest, link it, tag it.
    fn push_manifest(store: &Store, repo: &RepoName, config: &Digest) -> Digest {
        use crate::store::manifests::{LinkVia, TagRecord};
        let body = format!(r#"{{"schemaVersion":2,"config":{{"digest":"{config}"}},"layers":[]}}"#);
        let m = Digest::of_bytes(body.as_bytes());
        store.renew_held_for_gc(&m);
        store.renew_for_gc(repo, [config]);
        assert!(store.blob_in_repo(repo, config).unwrap(), "the PUT's check");
        store
            .put_manifest_as(
                body.as_bytes(),
                crate::store::media::OCI_MANIFEST,
                m.algorithm(),
            )
            .unwrap();
        store
            .link_blob_to_repo(repo, &m, &LinkVia::Manifest)
            .unwrap();
        let tag = Tag::parse("latest").unwrap();
        let record = TagRecord {
            digest: m.clone(),
            v1: None,
        };
        store.set_v2_tag(repo, &tag, &record).unwrap();
        m
    }

    /// gc whose next mark is taken while another host runs `during`: the
    /// marks miss what `during` writes, as a mark pass that read the tags
    /// before a push wrote its tag does.
    fn fresh_with_push_during_next_mark<'a>(
        store: &'a Store,
        grace: Duration,
        during: impl FnOnce() + 'static,
    ) -> Fresh<'a> {
        let mut once = Some(during);
        Fresh {
            store,
            grace,
            clock: store.clock(),
            marks: mark(store, grace).unwrap(),
            at: Instant::now().checked_sub(REMARK_AFTER).unwrap(),
            after_mark: Some(Box::new(move || {
                if let Some(f) = once.take() {
                    f()
                }
            })),
        }
    }

    /// An old unreferenced blob that a manifest PUT names while gc re-marks
    /// (on a big shared store a mark takes longer than `REMARK_AFTER`, so
    /// gc re-marks all through its sweep) is missing from those marks. gc
    /// must read the PUT's renewal *after* the marks; it read it before,
    /// and unlinked a blob the new tag names.
    #[test]
    fn a_blob_a_push_names_while_gc_marks_is_spared() {
        use crate::store::manifests::LinkVia;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("team/app").unwrap();
        let grace = Duration::from_secs(1);
        let x = store.put_small_blob(b"{\"old\":\"orphan\"}").unwrap();
        store
            .link_blob_to_repo(&repo, &x, &LinkVia::Upload)
            .unwrap();
        let blob = store.paths().blob(&x);
        wait_until_old(
            &[blob.clone(), store.paths().v2_blob_link(&repo, &x)],
            grace,
        );
        let links = fs::symlink_metadata(&blob).unwrap().nlink();

        let (s, r, c) = (store.clone(), repo.clone(), x.clone());
        let mut fresh = fresh_with_push_during_next_mark(&store, grace, move || {
            push_manifest(&s, &r, &c);
        });
        assert!(!fresh.marks.blobs.contains(&x));
        let verdict = blob_collectable(&mut fresh, store.paths(), &x, &blob, links, grace);
        assert_eq!(
            verdict.unwrap(),
            Some(false),
            "a blob the new tag names was collectable"
        );
    }

    /// The same manifest pushed again where it is not linked yet (another
    /// repository; a re-push after a DELETE) writes nothing to its record.
    /// The PUT renews the manifest itself, so a gc whose marks miss the new
    /// tag keeps the record; before, it removed it, and the new tag
    /// answered 404 (the blob stays, the record that types it is gone).
    #[test]
    fn a_manifest_pushed_again_elsewhere_while_gc_marks_keeps_its_record() {
        use crate::store::manifests::LinkVia;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (
            RepoName::parse("team/a").unwrap(),
            RepoName::parse("team/b").unwrap(),
        );
        let grace = Duration::from_secs(1);
        let config = store.put_small_blob(b"{\"config\":1}").unwrap();
        for repo in [&a, &b] {
            store
                .link_blob_to_repo(repo, &config, &LinkVia::Upload)
                .unwrap();
        }
        // Pushed to team/a, then deleted there: unreferenced, and old.
        let m = push_manifest(&store, &a, &config);
        store.delete_manifest_from_repo(&a, &m).unwrap().unwrap();
        let record = store.paths().manifest_record(&m);
        wait_until_old(
            &[
                record.clone(),
                store.paths().renewed(&m),
                store.paths().blob(&config),
            ],
            grace,
        );

        let (s, r, c) = (store.clone(), b.clone(), config.clone());
        let mut fresh = fresh_with_push_during_next_mark(&store, grace, move || {
            push_manifest(&s, &r, &c);
        });
        assert!(!fresh.marks.blobs.contains(&m));
        let verdict = collectable(&mut fresh, store.paths(), &m, &record, grace).unwrap();
        assert!(
            !verdict,
            "the record of a manifest just pushed was collectable"
        );
        assert!(store.manifest_in_repo(&b, &m).unwrap().is_some());
    }

    /// An index PUT renews its children (linked in its repository) before
    /// it checks them and writes its tag; a client that found the children
    /// present PUTs no child again. Until the tag is written, what keeps the
    /// children's own config and layers? gc must follow a renewed manifest
    /// like a young one; before, it kept the renewed child and removed the
    /// layers it names, and the new tag named an image with no layers.
    #[test]
    fn the_layers_of_a_renewed_index_child_are_kept() {
        use crate::store::manifests::LinkVia;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("team/multi").unwrap();
        let grace = Duration::from_secs(1);
        let config = store.put_small_blob(b"{\"os\":\"linux\"}").unwrap();
        let layer = store.put_small_blob(b"layer bytes").unwrap();
        let child = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#
        );
        let child = store
            .put_manifest_as(
                child.as_bytes(),
                crate::store::media::OCI_MANIFEST,
                Algorithm::Sha256,
            )
            .unwrap();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"digest":"{child}"}}]}}"#,
            crate::store::media::OCI_INDEX
        );
        let index = store
            .put_manifest_as(
                index.as_bytes(),
                crate::store::media::OCI_INDEX,
                Algorithm::Sha256,
            )
            .unwrap();
        for d in [&config, &layer] {
            store.link_blob_to_repo(&repo, d, &LinkVia::Upload).unwrap();
        }
        for d in [&child, &index] {
            store
                .link_blob_to_repo(&repo, d, &LinkVia::Manifest)
                .unwrap();
        }
        let p = store.paths();
        let mut files = vec![p.manifest_record(&child), p.manifest_record(&index)];
        for d in [&config, &layer, &child, &index] {
            files.extend([p.blob(d), p.v2_blob_link(&repo, d)]);
        }
        wait_until_old(&files, grace);

        // The index PUT's renewal, its tag not written yet.
        store.renew_held_for_gc(&index);
        store.renew_for_gc(&repo, [&child]);
        let opts = GcOptions {
            grace,
            dry_run: false,
        };
        let report = gc(&store, &opts).unwrap();
        for d in [&config, &layer, &child, &index] {
            assert!(
                store.blob_in_repo(&repo, d).unwrap(),
                "{d} collected under a renewed index: {report:?}"
            );
        }
    }

    /// A renewed layer is kept as it is, never read as a manifest: one
    /// larger than any manifest must not fail the mark (a writer's HEAD
    /// renews layers of any size).
    #[test]
    fn a_renewed_layer_larger_than_a_manifest_is_kept_without_failing_gc() {
        use crate::store::manifests::LinkVia;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("team/big").unwrap();
        let layer = store.put_small_blob(&vec![b'{'; MAX_MANIFEST + 1]).unwrap();
        store
            .link_blob_to_repo(&repo, &layer, &LinkVia::Upload)
            .unwrap();
        store.renew_held_for_gc(&layer);
        let opts = GcOptions {
            grace: Duration::from_secs(3600),
            dry_run: false,
        };
        gc(&store, &opts).unwrap();
        assert!(store.blob_in_repo(&repo, &layer).unwrap());
    }

    /// A V1 tag written to an old, unreferenced image chain while gc works
    /// from marks taken before it (a V1 client re-tagging an old image; a
    /// V2 push whose projection re-uses old V1 images) wrote nothing in the
    /// images' directories, so gc, judging them under their locks, removed
    /// the chain the new tag names. The tag now renews the chain under
    /// those locks first.
    #[tokio::test]
    async fn an_image_chain_a_new_tag_names_is_kept_from_stale_marks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("team/v1").unwrap();
        let grace = Duration::from_secs(1);
        let (base, top) = (id('a'), id('b'));
        v1_image(&store, &base, None, b"base layer").await;
        v1_image(&store, &top, Some(&base), b"top layer").await;
        let p = store.paths();
        let mut files = Vec::new();
        for i in [&base, &top] {
            files.push(p.image_dir(i));
            files.extend(
                fs::read_dir(p.image_dir(i))
                    .unwrap()
                    .map(|e| e.unwrap().path()),
            );
        }
        wait_until_old(&files, grace);

        let stale = mark(&store, grace).unwrap();
        assert!(!stale.images.contains(&top));
        store
            .put_tag(&repo, &Tag::parse("again").unwrap(), &top, b"{}")
            .unwrap();
        let mut fresh = Fresh {
            store: &store,
            grace,
            clock: store.clock(),
            marks: stale,
            at: Instant::now(),
            after_mark: None,
        };
        for i in [&top, &base] {
            let _lock = FileLock::exclusive(&p.image_lock(i)).unwrap();
            assert!(
                !image_collectable(&mut fresh, &store, i, grace).unwrap(),
                "image {i} of the new tag's chain was collectable"
            );
        }
    }

    /// A root that cannot be read is not a missing root: a tag record or a
    /// live manifest that fails to read (a shared filesystem's lasting
    /// error; a directory in its place stands in for one here, since root
    /// reads what a permission bit hides) fails the mark, and nothing is
    /// collected. Taken for absent, it let the sweep delete a tagged image.
    #[test]
    fn an_unreadable_root_fails_the_mark_and_collects_nothing() {
        use crate::store::manifests::{LinkVia, TagRecord};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("team/app").unwrap();
        let tag = Tag::parse("latest").unwrap();
        let cfg = store.put_small_blob(b"{\"config\":1}").unwrap();
        let layer = store.put_small_blob(b"a layer").unwrap();
        let man = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{cfg}"}},"layers":[{{"digest":"{layer}"}}]}}"#
        );
        let md = store
            .put_manifest_as(
                man.as_bytes(),
                crate::store::media::OCI_MANIFEST,
                Algorithm::Sha256,
            )
            .unwrap();
        let record = TagRecord {
            digest: md.clone(),
            v1: None,
        };
        store.set_v2_tag(&repo, &tag, &record).unwrap();
        for d in [&cfg, &layer, &md] {
            store.link_blob_to_repo(&repo, d, &LinkVia::Upload).unwrap();
        }
        let now = GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
        };
        let all_there = |store: &Store| {
            for d in [&cfg, &layer, &md] {
                assert!(store.blob_size(d).unwrap().is_some(), "{d} collected");
                assert!(store.blob_in_repo(&repo, d).unwrap(), "{d} unlinked");
            }
        };

        // The tag record unreadable.
        let tag_path = store.paths().v2_tag(&repo, &tag);
        fs::remove_file(&tag_path).unwrap();
        fs::create_dir(&tag_path).unwrap();
        let e = gc(&store, &now).unwrap_err();
        assert!(
            e.to_string().contains(&tag_path.display().to_string()),
            "the error names the tag record: {e}"
        );
        all_there(&store);
        fs::remove_dir(&tag_path).unwrap();
        store.set_v2_tag(&repo, &tag, &record).unwrap();

        // The tagged manifest unreadable.
        let man_path = store.paths().blob(&md);
        let bytes = fs::read(&man_path).unwrap();
        fs::remove_file(&man_path).unwrap();
        fs::create_dir(&man_path).unwrap();
        let e = gc(&store, &now).unwrap_err();
        assert!(
            e.to_string().contains(&man_path.display().to_string()),
            "the error names the manifest: {e}"
        );
        fs::remove_dir(&man_path).unwrap();
        fs::write(&man_path, bytes).unwrap();
        all_there(&store);

        // Readable again: the image is kept, nothing else to collect.
        let done = gc(&store, &now).unwrap();
        assert_eq!((done.blobs, done.links), (0, 0), "{done:?}");
        all_there(&store);
    }

    #[tokio::test]
    async fn collects_only_unreferenced_and_old() {
        use crate::store::manifests::LinkVia;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b, c) = (id('a'), id('b'), id('c'));
        v1_image(&store, &a, None, b"shared base").await;
        v1_image(&store, &b, Some(&a), b"tagged child").await;
        v1_image(&store, &c, Some(&a), b"untagged child").await;
        let repo = RepoName::parse("team/app").unwrap();
        store
            .put_tag(&repo, &Tag::parse("1").unwrap(), &b, b"{}")
            .unwrap();
        // A V2 image: tagged manifest with config + layer; an orphan blob.
        let cfg = store.put_small_blob(b"{\"config\":1}").unwrap();
        let layer = store.put_small_blob(b"v2 layer").unwrap();
        let orphan = store.put_small_blob(b"orphan").unwrap();
        let man = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{cfg}"}},"layers":[{{"digest":"{layer}"}}]}}"#
        );
        let md = store
            .put_manifest(man.as_bytes(), crate::store::media::OCI_MANIFEST)
            .unwrap();
        store
            .set_v2_tag(
                &repo,
                &Tag::parse("v2").unwrap(),
                &crate::store::manifests::TagRecord {
                    digest: md.clone(),
                    v1: None,
                },
            )
            .unwrap();
        for (d, via) in [
            (&cfg, LinkVia::Upload),
            (&layer, LinkVia::Upload),
            (&md, LinkVia::Manifest),
            (&orphan, LinkVia::Upload),
        ] {
            store.link_blob_to_repo(&repo, d, &via).unwrap();
        }

        // Everything is young: a 1h grace keeps it all.
        let keep = gc(
            &store,
            &GcOptions {
                grace: DEFAULT_GRACE,
                dry_run: false,
            },
        )
        .unwrap();
        assert_eq!(
            keep.images + keep.blobs + keep.records + keep.links,
            0,
            "{keep:?}"
        );

        let now = GcOptions {
            grace: Duration::ZERO,
            dry_run: true,
        };
        let dry = gc(&store, &now).unwrap();
        assert_eq!((dry.images, dry.blobs, dry.links), (1, 2, 1), "{dry:?}");
        assert!(store.paths().image_json(&c).exists(), "dry run deleted");

        let done = gc(
            &store,
            &GcOptions {
                dry_run: false,
                ..now
            },
        )
        .unwrap();
        assert_eq!((done.images, done.blobs, done.links), (1, 2, 1), "{done:?}");
        assert!(done.bytes >= (b"untagged child".len() + b"orphan".len()) as u64);
        assert!(!store.paths().image_dir(&c).exists());
        assert_eq!(store.blob_size(&orphan).unwrap(), None);
        for d in [&cfg, &layer, &md, &Digest::of_bytes(b"shared base")] {
            assert!(store.blob_size(d).unwrap().is_some(), "{d} collected");
        }
        assert!(store.image_json(&a).is_ok() && store.image_json(&b).is_ok());
        let report = fsck(
            &store,
            &FsckOptions {
                repair: false,
                deep: false,
                grace: Duration::ZERO,
            },
        )
        .unwrap();
        assert_eq!(report.problems(), 0, "{:#?}", report.findings);

        // Untag both: everything goes, and the store is still consistent.
        store.delete_tag(&repo, &Tag::parse("1").unwrap()).unwrap();
        fs::remove_file(store.paths().v2_tag(&repo, &Tag::parse("v2").unwrap())).unwrap();
        let all = gc(
            &store,
            &GcOptions {
                dry_run: false,
                ..now
            },
        )
        .unwrap();
        assert_eq!(all.images, 2, "{all:?}");
        assert!(pool_entries(store.paths()).unwrap().is_empty());
        let report = fsck(
            &store,
            &FsckOptions {
                repair: false,
                deep: false,
                grace: Duration::ZERO,
            },
        )
        .unwrap();
        assert_eq!(report.problems(), 0, "{:#?}", report.findings);
    }

    #[tokio::test]
    async fn in_progress_images_and_sessions_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = id('a');
        store
            .put_image_json(&a, format!(r#"{{"id":"{a}"}}"#).as_bytes(), "test")
            .unwrap();
        let session = store.start_upload().unwrap();
        store
            .append_upload(
                &session,
                Full::new(Bytes::from_static(b"half")),
                None,
                false,
            )
            .await
            .unwrap();
        let r = gc(
            &store,
            &GcOptions {
                grace: Duration::ZERO,
                dry_run: false,
            },
        )
        .unwrap();
        assert_eq!(r.images + r.sessions, 0, "{r:?}");
        assert!(store.paths().image_json(&a).exists());
        assert_eq!(store.upload_offset(&session).unwrap(), Some(4));
    }
}
