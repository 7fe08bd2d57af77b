//! V2 records beside the blob pool (`v2-compat.md` §2.4).
//!
//! * A manifest is a pool blob (bytes verbatim) plus `_berth/manifests/<hex>`
//!   holding the media type it was pushed with (first writer wins).
//! * A V2 tag is `_berth/v2/<ns>/<repo>/_tags/<tag>` = `{"digest", "v1"}`,
//!   where `v1` is the top V1 id the push projected (or null).
//! * `_berth/derived/<top id>` = the config + manifest generated once for a
//!   V1-only image, so its digest never changes.
//! * `_berth/v1layers/<id>` = blob digest, diff_id and media type of a V1
//!   image's layer, computed once.
//!
//! Tag ownership: a V1 tag write ([`Store::v1_tag_changed`], called from
//! `store::v1`) drops the V2 mapping unless it still names the same top id, so
//! the next V2 read derives from what the V1 client tagged.

use std::fs;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::atomic::{remove_durable, write_atomic, TempFile, TEMP_PREFIX};
use super::{read_optional, Store};
use crate::names::digest_text as text;
use crate::names::{Algorithm, Digest, ImageId, RepoName, Tag};

/// What a V2 tag points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The manifest (or index) digest.
    #[serde(with = "text")]
    pub digest: Digest,
    /// The V1 top id written for the same tag by the projection, if any.
    #[serde(with = "opt_id")]
    pub v1: Option<ImageId>,
}

/// The V2 form generated for a V1-only top image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedRecord {
    /// Digest of the generated schema2 manifest.
    #[serde(with = "text")]
    pub manifest: Digest,
    /// Digest of the generated config.
    #[serde(with = "text")]
    pub config: Digest,
}

/// Facts about a V1 image's layer, as a V2 descriptor needs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// sha256 of the stored layer bytes (the pool blob).
    #[serde(with = "text")]
    pub blob: Digest,
    /// Size of the stored bytes.
    pub size: u64,
    /// sha256 of the uncompressed tar.
    #[serde(with = "text")]
    pub diff_id: Digest,
    /// Descriptor media type matching the bytes.
    pub media_type: String,
}

/// Why a blob is visible in a repository, recorded in its link file
/// (`_berth/v2/<repo>/_blobs/<hex>`) so that `fsck` can tell links a
/// repository earned from those the manifest-PUT leak of issue 14 made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "lowercase")]
pub enum LinkVia {
    /// Uploaded into the repository (a closed session or a monolithic POST).
    Upload,
    /// Mounted with `?mount=` (`from`: the source repository, when given).
    Mount {
        /// The repository it was mounted from (`None`: a from-less mount,
        /// allowed only without an access file).
        from: Option<String>,
    },
    /// A manifest pushed here whose references were all linked here.
    Manifest,
    /// Part of the V2 form generated for a V1 image tagged here.
    Derived {
        /// The V1 top image id.
        image: String,
    },
    /// A manifest given by a pull-through mirror's upstream for this
    /// repository (and, before [`LinkVia::MirrorBlob`] existed, a blob).
    Mirror,
    /// A blob given by a pull-through mirror's upstream for this
    /// repository: a blob there, never a manifest, whatever its bytes.
    #[serde(rename = "mirror-blob")]
    MirrorBlob,
}

/// What a link file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRecord {
    /// Written by this version: why the blob is here.
    Via(LinkVia),
    /// Empty: written before links recorded why (judged by `fsck`).
    Legacy,
    /// Anything else.
    Corrupt(String),
}

impl LinkRecord {
    /// Reads a link file's bytes.
    pub fn parse(raw: &[u8]) -> LinkRecord {
        if raw.is_empty() {
            return LinkRecord::Legacy;
        }
        match serde_json::from_slice(raw) {
            Ok(via) => LinkRecord::Via(via),
            Err(e) => LinkRecord::Corrupt(e.to_string()),
        }
    }
}

/// Optional V1 ids in records, re-validated on read.
mod opt_id {
    use crate::names::ImageId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<ImageId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_some(id.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ImageId>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => ImageId::parse(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ManifestRecord {
    #[serde(rename = "mediaType")]
    media_type: String,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("corrupt {what}: {e}"))
}

impl Store {
    /// Writes bytes into the pool under their sha256 (no-op if present).
    pub fn put_small_blob(&self, bytes: &[u8]) -> io::Result<Digest> {
        self.put_small_blob_as(bytes, Algorithm::Sha256)
    }

    /// Writes bytes into the pool under their digest in `algorithm` (no-op
    /// if present): sha512 when a client pushed a manifest by a sha512 digest.
    pub fn put_small_blob_as(&self, bytes: &[u8], algorithm: Algorithm) -> io::Result<Digest> {
        let digest = algorithm.digest_of(bytes);
        if self.blob_size(&digest)?.is_none() {
            let mut temp = TempFile::new_in(&self.paths().blobs_dir(algorithm), "blob")?;
            temp.file().write_all(bytes)?;
            self.commit_blob(temp, &digest)?;
        }
        Ok(digest)
    }

    /// Stores manifest bytes verbatim in the pool and records their media
    /// type, named by their sha256.
    pub fn put_manifest(&self, bytes: &[u8], media_type: &str) -> io::Result<Digest> {
        self.put_manifest_as(bytes, media_type, Algorithm::Sha256)
    }

    /// [`Store::put_manifest`] named by the digest in `algorithm` (a PUT by
    /// a sha512 digest reference).
    pub fn put_manifest_as(
        &self,
        bytes: &[u8],
        media_type: &str,
        algorithm: Algorithm,
    ) -> io::Result<Digest> {
        let digest = self.put_small_blob_as(bytes, algorithm)?;
        let record = self.paths().manifest_record(&digest);
        if !record.exists() {
            let rec = ManifestRecord {
                media_type: media_type.to_string(),
            };
            write_atomic(
                &record,
                &serde_json::to_vec(&rec).map_err(io::Error::other)?,
            )?;
        }
        Ok(digest)
    }

    /// A manifest's media type and bytes, or `None` if no manifest has this digest.
    pub fn manifest(&self, digest: &Digest) -> io::Result<Option<(String, Vec<u8>)>> {
        let Some(raw) = read_optional(&self.paths().manifest_record(digest))? else {
            return Ok(None);
        };
        let rec: ManifestRecord =
            serde_json::from_slice(&raw).map_err(|e| corrupt("manifest record", e))?;
        match read_optional(&self.paths().blob(digest))? {
            Some(bytes) => Ok(Some((rec.media_type, bytes))),
            None => Ok(None),
        }
    }

    /// Whether the repository has any V2 record (tags or blobs).
    pub fn v2_repo_exists(&self, repo: &RepoName) -> bool {
        self.paths().v2_repo_dir(repo).is_dir()
    }

    /// Whether a pool blob is visible in a repository (uploaded, mounted,
    /// pushed as a manifest, derived or mirrored there, see [`LinkVia`]);
    /// the pool itself is shared and never answers reads on its own.
    pub fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> io::Result<bool> {
        Ok(self.paths().v2_blob_link(repo, digest).exists() && self.blob_size(digest)?.is_some())
    }

    /// Makes a pool blob visible in a repository, recording why. An existing
    /// link keeps what it says (first writer wins), legacy ones included:
    /// re-pushing what a leaked link allows must not make it look earned to
    /// `fsck` (`store::earned`).
    pub fn link_blob_to_repo(
        &self,
        repo: &RepoName,
        digest: &Digest,
        via: &LinkVia,
    ) -> io::Result<()> {
        let link = self.paths().v2_blob_link(repo, digest);
        if link.exists() {
            return Ok(());
        }
        write_atomic(&link, &serde_json::to_vec(via).map_err(io::Error::other)?)
    }

    /// Removes a blob's link from one repository (V2 blob DELETE); whether
    /// there was one. The pool copy stays until `gc` finds it unreferenced.
    pub fn unlink_blob_from_repo(&self, repo: &RepoName, digest: &Digest) -> io::Result<bool> {
        remove_durable(&self.paths().v2_blob_link(repo, digest))
    }

    /// Deletes a manifest from one repository (V2 manifest DELETE by
    /// digest): every tag naming it (V2 records and the V1 tags projected
    /// from them or derived to it), its referrer record, then its link, in
    /// that order, so a crash midway leaves at worst a manifest that is
    /// still readable and can be deleted again. `None` when the manifest is
    /// not in the repository; else the tags removed.
    pub fn delete_manifest_from_repo(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Vec<Tag>>, super::StoreError> {
        use super::StoreError;
        let Some((_, bytes)) = self.manifest_in_repo(repo, digest)? else {
            return Ok(None);
        };
        let mut removed = Vec::new();
        for tag in self.list_v2_tags(repo)? {
            let Some(rec) = self.v2_tag(repo, &tag)? else {
                continue;
            };
            if rec.digest != *digest {
                continue;
            }
            // The V1 tag projected with it goes too (its hook drops the V2
            // record); a V1 tag that moved on since is left alone.
            if rec.v1.is_some() && self.get_tag(repo, &tag).ok() == rec.v1 {
                match self.delete_tag(repo, &tag) {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            remove_durable(&self.paths().v2_tag(repo, &tag))?;
            removed.push(tag);
        }
        let v1_tags = match self.list_tags(repo) {
            Ok(tags) => tags,
            Err(StoreError::NotFound(_)) => Default::default(),
            Err(e) => return Err(e),
        };
        for (tag, id) in v1_tags {
            let (Ok(tag), Ok(top)) = (Tag::parse(&tag), ImageId::parse(&id)) else {
                continue;
            };
            if self.derived(&top)?.is_some_and(|d| d.manifest == *digest) {
                match self.delete_tag(repo, &tag) {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                if !removed.contains(&tag) {
                    removed.push(tag);
                }
            }
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Ok(Some(subject)) = super::referrers::subject_of(&value) {
            self.drop_referrer(repo, &subject, digest)?;
        }
        self.unlink_blob_from_repo(repo, digest)?;
        removed.sort();
        Ok(Some(removed))
    }

    /// Why a blob is linked in a repository: `None` when it is not,
    /// [`LinkRecord::Legacy`] for a link written before links said why.
    pub fn blob_link(&self, repo: &RepoName, digest: &Digest) -> io::Result<Option<LinkRecord>> {
        Ok(read_optional(&self.paths().v2_blob_link(repo, digest))?
            .map(|raw| LinkRecord::parse(&raw)))
    }

    /// A manifest as seen from one repository: only one that entered it *as
    /// a manifest* (pushed there with its references linked there, the
    /// manifest derived for a V1 tag there, or mirrored for it as a
    /// manifest; a [`LinkRecord::Legacy`] link predates the distinction
    /// and is judged by `fsck`). The same bytes uploaded, mounted,
    /// mirrored as a blob, or linked as a derived image's config or layer
    /// (a V1 layer can be any bytes) are a blob there and nothing more:
    /// knowing a manifest's bytes must not make what it names reachable
    /// (an index over it, its V1 projection, the catalog).
    pub fn manifest_in_repo(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> io::Result<Option<(String, Vec<u8>)>> {
        let as_manifest = match self.blob_link(repo, digest)? {
            Some(LinkRecord::Via(LinkVia::Manifest | LinkVia::Mirror))
            | Some(LinkRecord::Legacy) => true,
            Some(LinkRecord::Via(LinkVia::Derived { image })) => match ImageId::parse(&image) {
                Ok(top) => self
                    .derived(&top)?
                    .is_some_and(|record| record.manifest == *digest),
                Err(_) => false,
            },
            Some(LinkRecord::Via(
                LinkVia::Upload | LinkVia::Mount { .. } | LinkVia::MirrorBlob,
            ))
            | Some(LinkRecord::Corrupt(_))
            | None => false,
        };
        if !as_manifest || self.blob_size(digest)?.is_none() {
            return Ok(None);
        }
        self.manifest(digest)
    }

    /// Makes the V2 form generated for V1 image `top` (manifest, config and
    /// layers) visible in a repository whose V1 tag names `top`.
    pub fn link_derived_to_repo(
        &self,
        repo: &RepoName,
        top: &ImageId,
        record: &DerivedRecord,
    ) -> io::Result<()> {
        let via = LinkVia::Derived {
            image: top.to_string(),
        };
        let Some((_, bytes)) = self.manifest(&record.manifest)? else {
            return Err(io::Error::other(format!(
                "derived manifest {} of {top} is missing",
                record.manifest
            )));
        };
        // References first: the manifest becomes readable only when its
        // blobs are.
        for (d, _) in super::walk::manifest_refs(&bytes) {
            if self.blob_size(&d)?.is_some() {
                self.link_blob_to_repo(repo, &d, &via)?;
            }
        }
        self.link_blob_to_repo(repo, &record.manifest, &via)
    }

    /// The V2 tag record, if the tag was pushed through V2 and still owns it.
    pub fn v2_tag(&self, repo: &RepoName, tag: &Tag) -> io::Result<Option<TagRecord>> {
        match read_optional(&self.paths().v2_tag(repo, tag))? {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| corrupt("V2 tag record", e)),
            None => Ok(None),
        }
    }

    /// Points a V2 tag at a manifest.
    pub fn set_v2_tag(&self, repo: &RepoName, tag: &Tag, record: &TagRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        write_atomic(&self.paths().v2_tag(repo, tag), &bytes)
    }

    /// Tags recorded through V2 (sorted; V1 tags are listed by `list_tags`).
    pub fn list_v2_tags(&self, repo: &RepoName) -> io::Result<Vec<Tag>> {
        let entries = match fs::read_dir(self.paths().v2_tags_dir(repo)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut tags = Vec::new();
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            if let Ok(t) = Tag::parse(&name) {
                tags.push(t);
            }
        }
        tags.sort();
        Ok(tags)
    }

    /// Repositories that hold at least one V2 tag record.
    pub fn list_v2_repositories(&self) -> io::Result<Vec<RepoName>> {
        let mut out = Vec::new();
        let root = self.paths().v2_dir();
        let mut stack = vec![(root, Vec::<String>::new())];
        while let Some((dir, parts)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == super::Paths::V2_TAGS {
                    if let Ok(r) = RepoName::parse(&parts.join("/")) {
                        out.push(r);
                    }
                } else if parts.len() < 16 && !name.starts_with(TEMP_PREFIX) {
                    let mut next = parts.clone();
                    next.push(name);
                    stack.push((entry.path(), next));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Hook for V1 tag writes (`put_tag`: `Some(id)`, `delete_tag`: `None`):
    /// drops the V2 mapping unless it was projected to this very id.
    pub fn v1_tag_changed(
        &self,
        repo: &RepoName,
        tag: &Tag,
        id: Option<&ImageId>,
    ) -> io::Result<()> {
        if let Some(rec) = self.v2_tag(repo, tag)? {
            if rec.v1.is_none() || rec.v1.as_ref() != id {
                remove_durable(&self.paths().v2_tag(repo, tag))?;
            }
        }
        Ok(())
    }

    /// The V2 form generated for a V1 top image, if generated already.
    pub fn derived(&self, top: &ImageId) -> io::Result<Option<DerivedRecord>> {
        match read_optional(&self.paths().derived(top))? {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| corrupt("derived record", e)),
            None => Ok(None),
        }
    }

    /// Records the V2 form of a V1 top image. First writer wins: generation is
    /// deterministic, and a recorded digest must never change.
    pub fn set_derived(&self, top: &ImageId, record: &DerivedRecord) -> io::Result<DerivedRecord> {
        if let Some(existing) = self.derived(top)? {
            return Ok(existing);
        }
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        write_atomic(&self.paths().derived(top), &bytes)?;
        Ok(record.clone())
    }

    /// Cached layer facts of a V1 image.
    pub fn v1_layer_info(&self, id: &ImageId) -> io::Result<Option<LayerInfo>> {
        match read_optional(&self.paths().v1_layer_info(id))? {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| corrupt("layer info", e)),
            None => Ok(None),
        }
    }

    /// Records layer facts of a V1 image (V1 layers are immutable).
    pub fn set_v1_layer_info(&self, id: &ImageId, info: &LayerInfo) -> io::Result<()> {
        let bytes = serde_json::to_vec(info).map_err(io::Error::other)?;
        write_atomic(&self.paths().v1_layer_info(id), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_tags_and_ownership() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store
            .put_manifest(br#"{"schemaVersion":2}"#, super::super::media::OCI_MANIFEST)
            .unwrap();
        let (mt, bytes) = store.manifest(&d).unwrap().unwrap();
        assert_eq!(mt, super::super::media::OCI_MANIFEST);
        assert_eq!(bytes, br#"{"schemaVersion":2}"#);
        assert!(store.manifest(&Digest::of_bytes(b"x")).unwrap().is_none());

        let repo = RepoName::parse("team/app").unwrap();
        let tag = Tag::parse("1").unwrap();
        let top = ImageId::parse(&"a".repeat(64)).unwrap();
        let rec = TagRecord {
            digest: d.clone(),
            v1: Some(top.clone()),
        };
        store.set_v2_tag(&repo, &tag, &rec).unwrap();
        assert_eq!(store.list_v2_tags(&repo).unwrap(), vec![tag.clone()]);
        assert_eq!(store.list_v2_repositories().unwrap(), vec![repo.clone()]);
        // Re-tagging the same V1 id keeps the mapping; another id drops it.
        store.v1_tag_changed(&repo, &tag, Some(&top)).unwrap();
        assert_eq!(store.v2_tag(&repo, &tag).unwrap(), Some(rec));
        let other = ImageId::parse(&"b".repeat(64)).unwrap();
        store.v1_tag_changed(&repo, &tag, Some(&other)).unwrap();
        assert_eq!(store.v2_tag(&repo, &tag).unwrap(), None);
    }

    #[test]
    fn derived_is_first_writer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let top = ImageId::parse(&"c".repeat(64)).unwrap();
        let a = DerivedRecord {
            manifest: Digest::of_bytes(b"m1"),
            config: Digest::of_bytes(b"c1"),
        };
        let b = DerivedRecord {
            manifest: Digest::of_bytes(b"m2"),
            config: Digest::of_bytes(b"c2"),
        };
        assert_eq!(store.set_derived(&top, &a).unwrap(), a);
        assert_eq!(store.set_derived(&top, &b).unwrap(), a);
        assert_eq!(store.derived(&top).unwrap(), Some(a));
    }
}
