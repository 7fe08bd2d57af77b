//! Walks of the store on disk, shared by `fsck` (which checks what it finds)
//! and `gc` (which marks and sweeps it), and by `earned`: directory
//! listings, file ages, the blob pools, repositories by marker directory,
//! V1 tags, referrer records, temp files, and what a manifest references.
//! Everything here reads; nothing writes. Every path comes from [`Paths`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_transport::manifest_refs::RefKind;
use serde_json::Value;

use super::atomic::TEMP_PREFIX;
use super::clock::StoreClock;
use super::transient;
use super::{Paths, Store};
use crate::names::{Algorithm, Digest, ImageId, RepoName, Tag, UploadId};

/// Deepest nesting of repository names walked (matches the store's listings).
const MAX_REPO_DEPTH: usize = 16;

/// One read-only step on `path`, as every walker takes it: looked up afresh
/// and retried while the filesystem fails transiently (another host
/// replaced or removed the entry: `ESTALE` until the client's cached handle
/// expires, [`transient::retry`]); "not found" is `None` (another host
/// removed it, which a walk of a live store must expect); any other error
/// names the path. Never reads a lasting error as absence: `gc` marks from
/// what the walkers find, and an unreadable root taken for a missing one
/// would let the sweep delete what it keeps alive.
pub(crate) fn optional<T>(
    path: &Path,
    mut step: impl FnMut(&Path) -> io::Result<T>,
) -> io::Result<Option<T>> {
    match transient::retry(path.display(), || step(path)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(transient::at_path(path, e)),
    }
}

/// Entries of a directory (name, path); a missing directory has none.
pub(crate) fn entries(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let listed = optional(dir, |dir| {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
        Ok(out)
    })?;
    let mut out = listed.unwrap_or_default();
    out.sort();
    Ok(out)
}

/// A file's metadata, not following a symlink; `None` if it is gone.
pub(crate) fn metadata(path: &Path) -> io::Result<Option<fs::Metadata>> {
    optional(path, |p| fs::symlink_metadata(p))
}

/// A file's metadata, following a symlink; `None` if it is gone.
pub(crate) fn metadata_followed(path: &Path) -> io::Result<Option<fs::Metadata>> {
    optional(path, |p| fs::metadata(p))
}

/// Whether a path names something (following a symlink); an error that is
/// not "not found" is an error, never `false` (see [`optional`]).
pub(crate) fn exists(path: &Path) -> io::Result<bool> {
    Ok(metadata_followed(path)?.is_some())
}

/// Time since a file last changed, on the store's clock (the newer of
/// mtime and ctime, [`StoreClock::age`]). `None` if gone.
pub(crate) fn age(path: &Path, clock: &StoreClock) -> io::Result<Option<Duration>> {
    Ok(metadata(path)?.map(|m| clock.age(&m)))
}

/// Age of the newest entry of a directory (and the directory itself).
pub(crate) fn dir_age(dir: &Path, clock: &StoreClock) -> io::Result<Option<Duration>> {
    let Some(mut youngest) = age(dir, clock)? else {
        return Ok(None);
    };
    for (_, p) in entries(dir)? {
        if let Some(a) = age(&p, clock)? {
            youngest = youngest.min(a);
        }
    }
    Ok(Some(youngest))
}

/// Every entry of the blob pools of all algorithms, with the digest its
/// name stands for (`None` for temp files and junk).
pub(crate) fn pool_entries(p: &Paths) -> io::Result<Vec<(Option<Digest>, PathBuf)>> {
    let mut out = Vec::new();
    for algorithm in Algorithm::ALL {
        for (name, path) in entries(&p.blobs_dir(algorithm))? {
            out.push((Paths::digest_of_blob_name(algorithm, &name), path));
        }
    }
    Ok(out)
}

/// One referrer record (`store::referrers`) found on disk.
pub(crate) struct ReferrerRecordFile {
    /// The repository it belongs to.
    pub repo: RepoName,
    /// The subject directory's digest.
    pub subject: Digest,
    /// The referrer the file is named after.
    pub referrer: Digest,
    /// The record file.
    pub path: PathBuf,
}

/// Every referrer record of every repository (temp files and names that are
/// not digests skipped: `fsck` reports those through its own walk).
pub(crate) fn referrer_records(store: &Store) -> io::Result<Vec<ReferrerRecordFile>> {
    let v2 = store.paths().v2_dir();
    let mut out = Vec::new();
    for (repo, root) in repos_with(&v2, Paths::V2_REFERRERS)? {
        for (subject_name, subject_dir) in entries(&root)? {
            let Some(subject) = Paths::digest_of_key(&subject_name) else {
                continue;
            };
            for (name, path) in entries(&subject_dir)? {
                if let Some(referrer) = Paths::digest_of_key(&name) {
                    out.push(ReferrerRecordFile {
                        repo: repo.clone(),
                        subject: subject.clone(),
                        referrer,
                        path,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Repositories under `base` that have a directory named `marker` (`_tags`,
/// `_blobs`), with that directory's path.
pub(crate) fn repos_with(base: &Path, marker: &str) -> io::Result<Vec<(RepoName, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(base.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, parts)) = stack.pop() {
        for (name, path) in entries(&dir)? {
            if name.starts_with(TEMP_PREFIX)
                || !metadata_followed(&path)?.is_some_and(|m| m.is_dir())
            {
                continue;
            }
            if name == marker {
                if let Ok(r) = RepoName::parse(&parts.join("/")) {
                    out.push((r, path));
                }
            } else if !name.starts_with('_') && parts.len() < MAX_REPO_DEPTH {
                let mut next = parts.clone();
                next.push(name);
                stack.push((path, next));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// V1 tags of every repository: (repository, tag, tag file).
pub(crate) fn v1_tags(store: &Store) -> io::Result<Vec<(RepoName, Tag, PathBuf)>> {
    let mut out = Vec::new();
    for repo in store.list_repositories()? {
        for (name, path) in entries(&store.paths().repo_dir(&repo))? {
            if let Some(t) = name.strip_prefix("tag_").and_then(|t| Tag::parse(t).ok()) {
                out.push((repo.clone(), t, path));
            }
        }
    }
    Ok(out)
}

/// The image id a V1 tag file names.
pub(crate) fn read_tag_file(path: &Path) -> io::Result<Option<ImageId>> {
    Ok(super::read_optional(path)?
        .and_then(|raw| ImageId::parse(String::from_utf8_lossy(&raw).trim()).ok()))
}

/// Blobs a manifest or index names that the registry holds: config, layers
/// (non-distributable ones excepted: their bytes live at their `urls`),
/// index children (with whether each is a child manifest), as
/// [`berth_transport::manifest_refs`] finds them. The `subject` is not a
/// reference: a referrer does not keep its subject alive (the subject keeps
/// its referrers, `gc`). Schema 1 `fsLayers` are not stored manifests'
/// references here. Unparseable input and invalid digests name nothing.
pub(crate) fn manifest_refs(bytes: &[u8]) -> Vec<(Digest, bool)> {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return vec![];
    };
    berth_transport::manifest_refs::manifest_refs(&v)
        .into_iter()
        .filter_map(|r| {
            let child = match r.kind {
                RefKind::Config => false,
                RefKind::Layer if super::media::is_nondistributable(r.media_type()) => {
                    return None; // fetched from its `urls`, never stored here
                }
                RefKind::Layer => false,
                RefKind::Child => true,
                RefKind::Schema1Layer => return None,
            };
            Some((Digest::parse(r.digest()?).ok()?, child))
        })
        .collect()
}

/// The parent id in a V1 image json (`None` for a base image).
pub(crate) fn json_parent(json: &Value) -> Result<Option<ImageId>, String> {
    match json.get("parent") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => ImageId::parse(s)
            .map(Some)
            .map_err(|_| format!("invalid parent id {s:?}")),
        Some(_) => Err("parent is not a string".into()),
    }
}

/// Parsed ancestry file of an image, if present and well-formed (an error
/// reading it is an error, not an absent file).
pub(crate) fn read_ancestry(store: &Store, id: &ImageId) -> io::Result<Option<Vec<String>>> {
    Ok(super::read_optional(&store.paths().image_ancestry(id))?
        .and_then(|raw| serde_json::from_slice(&raw).ok()))
}

/// Every `.tmp-*` file under `dir` (not descending into upload sessions,
/// which are judged as a whole).
pub(crate) fn temp_files(store: &Store) -> io::Result<Vec<PathBuf>> {
    let uploads = store.paths().uploads_dir();
    let mut out = Vec::new();
    let mut stack = vec![store.paths().root().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for (name, path) in entries(&dir)? {
            let Some(ft) = metadata(&path)?.map(|m| m.file_type()) else {
                continue;
            };
            if name.starts_with(TEMP_PREFIX) && !ft.is_dir() {
                out.push(path);
            } else if ft.is_dir() && !(dir == uploads && UploadId::parse(&name).is_some()) {
                stack.push(path);
            }
        }
    }
    Ok(out)
}
