//! V1 records: images (`json`, `layer`, `ancestry`, checksums and the
//! `_inprogress` publish state machine of `v1-protocol.md` §4) and
//! repositories (tags, tag metadata, the index image list).
//!
//! An image is *published* when its `json` exists and `_inprogress` does not.
//! Until then every read answers "being uploaded" and json/layer may be re-put.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;

use bytes::Bytes;
use http_body::Body;
use serde_json::Value;

use super::atomic::{remove_durable, write_atomic, FileLock, TempFile, TEMP_PREFIX};
use super::ingest::ingest;
use super::{hash_file, read_optional, Store, StoreError, StoreResult};
use crate::names::{ImageId, RepoName, Tag};

/// Longest ancestry chain accepted (deeper chains are almost certainly abuse).
pub const MAX_ANCESTRY: usize = 1024;

/// State of one V1 image as seen by readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    /// No `json`.
    Missing,
    /// `json` written, `_inprogress` still present.
    InProgress,
    /// Fully uploaded and verified.
    Published,
}

impl Store {
    /// Where an image stands in the upload state machine.
    pub fn image_state(&self, id: &ImageId) -> io::Result<ImageState> {
        let p = self.paths();
        if !p.image_json(id).exists() {
            return Ok(ImageState::Missing);
        }
        if p.image_inprogress(id).exists() {
            return Ok(ImageState::InProgress);
        }
        Ok(ImageState::Published)
    }

    /// Fails unless the image is published (the gate on every image read).
    pub fn require_published(&self, id: &ImageId) -> StoreResult<()> {
        match self.image_state(id)? {
            ImageState::Missing => Err(StoreError::NotFound("Image not found".into())),
            ImageState::InProgress => Err(StoreError::InProgress),
            ImageState::Published => Ok(()),
        }
    }

    /// `PUT /v1/images/<id>/json`: validates and stores the json verbatim,
    /// derives `ancestry` from `parent`, and marks the image in progress.
    pub fn put_image_json(&self, id: &ImageId, body: &[u8]) -> StoreResult<()> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| StoreError::Invalid(format!("Invalid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| StoreError::Invalid("Invalid JSON: not an object".into()))?;
        let json_id = match obj.get("id") {
            Some(Value::String(s)) => s,
            Some(_) => {
                return Err(StoreError::Invalid(
                    "Invalid JSON: id is not a string".into(),
                ))
            }
            None => return Err(StoreError::Invalid("Missing key `id' in JSON".into())),
        };
        if json_id != id.as_str() {
            return Err(StoreError::Invalid("JSON data contains invalid id".into()));
        }
        let parent = match obj.get("parent") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(
                ImageId::parse(s)
                    .map_err(|_| StoreError::Invalid("Invalid parent image id".into()))?,
            ),
            Some(_) => return Err(StoreError::Invalid("Invalid parent image id".into())),
        };
        let mut ancestry = vec![id.as_str().to_string()];
        if let Some(parent) = &parent {
            if parent == id {
                return Err(StoreError::Invalid("Image cannot be its own parent".into()));
            }
            match self.image_state(parent)? {
                ImageState::Missing => {
                    return Err(StoreError::Invalid(
                        "Image depends on a non existing parent".into(),
                    ))
                }
                ImageState::InProgress => {
                    return Err(StoreError::Invalid(
                        "Parent image is being uploaded, push it first".into(),
                    ))
                }
                ImageState::Published => {}
            }
            let parent_ancestry = self.read_ancestry(parent)?;
            if parent_ancestry.iter().any(|a| a == id.as_str()) {
                return Err(StoreError::Invalid(
                    "Image ancestry would form a cycle".into(),
                ));
            }
            ancestry.extend(parent_ancestry);
            if ancestry.len() > MAX_ANCESTRY {
                return Err(StoreError::Invalid(format!(
                    "Image ancestry deeper than {MAX_ANCESTRY}"
                )));
            }
        }

        let p = self.paths();
        super::atomic::create_dirs(p.image_dir(id))?;
        let _lock = FileLock::exclusive(&p.image_dir(id).join(".lock"))?;
        if self.image_state(id)? == ImageState::Published {
            return Err(StoreError::Exists);
        }
        // Marker first: from here until the checksum PUT, readers see "in progress".
        write_atomic(&p.image_inprogress(id), b"true")?;
        remove_durable(&p.image_checksum(id))?;
        write_atomic(&p.image_json(id), body)?;
        let ancestry = serde_json::to_vec(&ancestry).map_err(io::Error::other)?;
        write_atomic(&p.image_ancestry(id), &ancestry)?;
        Ok(())
    }

    /// `PUT /v1/images/<id>/layer`: streams the layer into a temp file while
    /// computing the payload checksum `sha256(json + "\n" + layer)`, then
    /// publishes it to `layer` (and the blob pool) and writes `_checksum`.
    /// Returns the number of bytes stored.
    pub async fn put_image_layer<B>(&self, id: &ImageId, body: B) -> StoreResult<u64>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let p = self.paths().clone();
        let json = match self.image_state(id)? {
            ImageState::Missing => return Err(StoreError::NotFound("Image not found".into())),
            ImageState::Published => return Err(StoreError::Exists),
            ImageState::InProgress => fs::read(p.image_json(id))?,
        };
        let mut prefix = json;
        prefix.push(b'\n');
        let temp = TempFile::new_in(&p.image_dir(id), "layer")?;
        let done = ingest(body, temp, Some(prefix), None).await?;
        let store = self.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || -> StoreResult<u64> {
            let p = store.paths();
            let _lock = FileLock::exclusive(&p.image_dir(&id).join(".lock"))?;
            if store.image_state(&id)? != ImageState::InProgress {
                return Err(StoreError::Conflict(
                    "Image was published or removed during the upload".into(),
                ));
            }
            store.commit_linked(done.temp, &done.digest, &p.image_layer(&id))?;
            let payload = done.prefixed.expect("prefix was given");
            let checksum = serde_json::to_vec(&[payload.as_str()]).map_err(io::Error::other)?;
            write_atomic(&p.image_checksum(&id), &checksum)?;
            Ok(done.size)
        })
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e.to_string())))?
    }

    /// `PUT /v1/images/<id>/checksum`: publishes the image when `payload`
    /// (`sha256:<hex>`) equals the checksum computed during the layer upload.
    pub fn put_image_checksum(&self, id: &ImageId, payload: &str) -> StoreResult<()> {
        let p = self.paths();
        if !p.image_json(id).exists() {
            return Err(StoreError::NotFound("Image not found".into()));
        }
        let _lock = FileLock::exclusive(&p.image_dir(id).join(".lock"))?;
        if !p.image_inprogress(id).exists() {
            return Err(StoreError::Conflict(
                "Cannot set this image checksum".into(),
            ));
        }
        let stored = self.stored_checksums(id)?;
        if stored.is_empty() || !p.image_layer(id).exists() {
            return Err(StoreError::Invalid(
                "Image layer not uploaded yet: PUT the layer before its checksum".into(),
            ));
        }
        let offered: Vec<&str> = payload.split(',').map(str::trim).collect();
        if !offered.iter().any(|c| stored.iter().any(|s| s == c)) {
            return Err(StoreError::Invalid("Checksum mismatch".into()));
        }
        remove_durable(&p.image_inprogress(id))?;
        Ok(())
    }

    /// The payload checksums of a published image, for V1 readers (the
    /// `X-Docker-Checksum-Payload` of its json). An image projected from a
    /// V2 push has none recorded yet: the first read computes
    /// `sha256(json + "\n" + layer)` under the image lock and records it in
    /// `_checksum`, so V2-only registries never pay for it (issue 9).
    pub fn payload_checksums(&self, id: &ImageId) -> StoreResult<Vec<String>> {
        let sums = self.stored_checksums(id)?;
        if !sums.is_empty() {
            return Ok(sums);
        }
        self.require_published(id)?;
        let p = self.paths();
        // Recording is a cache: a store this process may only read (or an
        // image gc is removing) still gets its checksum computed.
        let lock = FileLock::exclusive(&p.image_dir(id).join(".lock"));
        // Another reader may have recorded it while this one waited.
        let sums = self.stored_checksums(id)?;
        if !sums.is_empty() {
            return Ok(sums);
        }
        self.require_published(id)?;
        let mut prefix = fs::read(p.image_json(id))?;
        prefix.push(b'\n');
        let sum = hash_file(&p.image_layer(id), &prefix)?;
        let recorded = lock.and_then(|_lock| {
            let record = serde_json::to_vec(&[sum.as_str()]).map_err(io::Error::other)?;
            write_atomic(&p.image_checksum(id), &record)
        });
        if let Err(e) = recorded {
            tracing::warn!(image = %id, error = %e, "V1 payload checksum computed but not recorded: the next V1 read computes it again");
        }
        Ok(vec![sum.to_string()])
    }

    /// The payload checksums recorded for an image (`_checksum`).
    pub fn stored_checksums(&self, id: &ImageId) -> io::Result<Vec<String>> {
        let Some(raw) = read_optional(&self.paths().image_checksum(id))? else {
            return Ok(vec![]);
        };
        // The reference server also accepts a legacy plain-string file.
        Ok(match serde_json::from_slice::<Value>(&raw) {
            Ok(Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Ok(Value::String(s)) => vec![s],
            _ => vec![String::from_utf8_lossy(&raw).trim().to_string()],
        })
    }

    /// The stored json bytes of a published image.
    pub fn image_json(&self, id: &ImageId) -> StoreResult<Vec<u8>> {
        self.require_published(id)?;
        Ok(fs::read(self.paths().image_json(id))?)
    }

    /// Layer size of a published image, if it has a layer.
    pub fn image_layer_size(&self, id: &ImageId) -> io::Result<Option<u64>> {
        match fs::metadata(self.paths().image_layer(id)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the layer of a published image, with its size.
    pub fn open_image_layer(&self, id: &ImageId) -> StoreResult<(File, u64)> {
        self.require_published(id)?;
        match File::open(self.paths().image_layer(id)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok((f, len))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound("Image layer not found".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The stored ancestry bytes of a published image (self first, root last).
    pub fn image_ancestry(&self, id: &ImageId) -> StoreResult<Vec<u8>> {
        self.require_published(id)?;
        Ok(fs::read(self.paths().image_ancestry(id))?)
    }

    /// Parsed ancestry of an image (no publish check: used while writing children).
    pub fn read_ancestry(&self, id: &ImageId) -> StoreResult<Vec<String>> {
        let raw = fs::read(self.paths().image_ancestry(id))?;
        let list: Vec<String> = serde_json::from_slice(&raw).map_err(|e| {
            StoreError::Io(io::Error::other(format!("corrupt ancestry of {id}: {e}")))
        })?;
        Ok(list)
    }

    // ---- repositories -------------------------------------------------------

    /// All tags of a repository, `tag -> image id`.
    /// "Repository not found" if it has no directory or no tags.
    pub fn list_tags(&self, repo: &RepoName) -> StoreResult<BTreeMap<String, String>> {
        let dir = self.paths().repo_dir(repo);
        let mut tags = BTreeMap::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound("Repository not found".into()))
            }
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(tag) = name.strip_prefix("tag_") else {
                continue;
            };
            let Ok(tag) = Tag::parse(tag) else { continue };
            if let Some(id) = read_optional(&entry.path())? {
                tags.insert(
                    tag.to_string(),
                    String::from_utf8_lossy(&id).trim().to_string(),
                );
            }
        }
        if tags.is_empty() {
            return Err(StoreError::NotFound("Repository not found".into()));
        }
        Ok(tags)
    }

    /// The image id a tag points at.
    pub fn get_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<ImageId> {
        match read_optional(&self.paths().tag(repo, tag))? {
            Some(raw) => ImageId::parse(String::from_utf8_lossy(&raw).trim()).map_err(|_| {
                StoreError::Io(io::Error::other(format!("corrupt tag file {repo}:{tag}")))
            }),
            None => Err(StoreError::NotFound("Tag not found".into())),
        }
    }

    /// Points `tag` at a published image and records its metadata json.
    pub fn put_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        id: &ImageId,
        meta: &[u8],
    ) -> StoreResult<()> {
        self.require_published(id)?;
        let p = self.paths();
        super::atomic::create_dirs(p.repo_dir(repo))?;
        write_atomic(&p.tag_json(repo, tag), meta)?;
        write_atomic(&p.tag(repo, tag), id.as_str().as_bytes())?;
        if tag.as_str() == "latest" {
            write_atomic(&p.repo_json(repo), meta)?;
        }
        self.v1_tag_changed(repo, tag, Some(id))?; // V2 tag ownership (store::manifests)
        Ok(())
    }

    /// Removes a tag and its metadata.
    pub fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<()> {
        let p = self.paths();
        if !remove_durable(&p.tag(repo, tag))? {
            return Err(StoreError::NotFound(format!("Tag not found: {tag}")));
        }
        remove_durable(&p.tag_json(repo, tag))?;
        if tag.as_str() == "latest" {
            remove_durable(&p.repo_json(repo))?;
        }
        self.v1_tag_changed(repo, tag, None)?; // V2 tag ownership (store::manifests)
        Ok(())
    }

    /// Tag metadata json (`tag<tag>_json`), if recorded.
    pub fn tag_json(&self, repo: &RepoName, tag: &Tag) -> io::Result<Option<Vec<u8>>> {
        read_optional(&self.paths().tag_json(repo, tag))
    }

    /// Repository metadata json (`json`, the metadata of `latest`), if recorded.
    pub fn repo_json(&self, repo: &RepoName) -> io::Result<Option<Vec<u8>>> {
        read_optional(&self.paths().repo_json(repo))
    }

    /// Whether the repository has a directory.
    pub fn repo_exists(&self, repo: &RepoName) -> bool {
        self.paths().repo_dir(repo).is_dir()
    }

    /// Deletes every tag and record of a repository (images are kept).
    /// Nested repositories below it (`a/b/c` under `a/b`) are left alone.
    pub fn delete_repository(&self, repo: &RepoName) -> StoreResult<()> {
        let dir = self.paths().repo_dir(repo);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound("Repository not found".into()))
            }
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
            }
        }
        let _ = fs::remove_dir(&dir); // only succeeds when no nested repository remains
        super::atomic::sync_parent(&dir)?;
        Ok(())
    }

    /// Merges image entries into `_index_images` under an `fcntl` lock: one
    /// entry per id, entries carrying a checksum win (the reference's merge).
    pub fn merge_index_images(&self, repo: &RepoName, new: &[Value]) -> StoreResult<()> {
        let p = self.paths();
        super::atomic::create_dirs(p.repo_dir(repo))?;
        let _lock = FileLock::exclusive(&p.repo_lock(repo))?;
        let mut merged: Vec<Value> = match read_optional(&p.index_images(repo))? {
            Some(raw) => serde_json::from_slice(&raw).unwrap_or_default(),
            None => vec![],
        };
        for item in new {
            let Some(id) = item.get("id").and_then(Value::as_str) else {
                return Err(StoreError::Invalid(
                    "Invalid data: every entry needs an id".into(),
                ));
            };
            ImageId::parse(id)
                .map_err(|_| StoreError::Invalid(format!("Invalid image id {id:?}")))?;
            let mut entry = serde_json::Map::new();
            entry.insert("id".into(), Value::String(id.to_string()));
            if let Some(c) = item
                .get("checksum")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
            {
                entry.insert("checksum".into(), Value::String(c.to_string()));
            }
            match merged
                .iter_mut()
                .find(|e| e.get("id").and_then(Value::as_str) == Some(id))
            {
                Some(existing) => {
                    if entry.contains_key("checksum") {
                        *existing = Value::Object(entry);
                    }
                }
                None => merged.push(Value::Object(entry)),
            }
        }
        let bytes = serde_json::to_vec(&merged).map_err(io::Error::other)?;
        write_atomic(&p.index_images(repo), &bytes)?;
        Ok(())
    }

    /// The V1 index image list. A repository that only has tags (for example
    /// one projected from a V2 push) lists its tagged images.
    pub fn index_images(&self, repo: &RepoName) -> StoreResult<Vec<Value>> {
        if let Some(raw) = read_optional(&self.paths().index_images(repo))? {
            return serde_json::from_slice(&raw).map_err(|e| {
                StoreError::Io(io::Error::other(format!("corrupt _index_images: {e}")))
            });
        }
        let tags = self.list_tags(repo)?;
        let mut ids: Vec<&String> = tags.values().collect();
        ids.sort();
        ids.dedup();
        Ok(ids
            .into_iter()
            .map(|id| serde_json::json!({ "id": id }))
            .collect())
    }

    /// Whether a repository references an image: a tag's ancestry contains it,
    /// or the repository's index list announces it.
    pub fn repository_references(&self, repo: &RepoName, id: &ImageId) -> bool {
        if let Ok(tags) = self.list_tags(repo) {
            for top in tags.values() {
                if top == id.as_str() {
                    return true;
                }
                if let Ok(top) = ImageId::parse(top) {
                    if self
                        .read_ancestry(&top)
                        .is_ok_and(|a| a.iter().any(|x| x == id.as_str()))
                    {
                        return true;
                    }
                }
            }
        }
        if let Ok(Some(raw)) = read_optional(&self.paths().index_images(repo)) {
            if let Ok(items) = serde_json::from_slice::<Vec<Value>>(&raw) {
                return items
                    .iter()
                    .any(|i| i.get("id").and_then(Value::as_str) == Some(id.as_str()));
            }
        }
        false
    }

    /// Sets or clears the `_private` flag.
    pub fn set_private(&self, repo: &RepoName, private: bool) -> StoreResult<()> {
        let p = self.paths();
        if private {
            super::atomic::create_dirs(p.repo_dir(repo))?;
            write_atomic(&p.private_flag(repo), b"")?;
        } else {
            remove_durable(&p.private_flag(repo))?;
        }
        Ok(())
    }

    /// Whether the `_private` flag is set.
    pub fn is_private(&self, repo: &RepoName) -> bool {
        self.paths().private_flag(repo).exists()
    }

    /// Every repository in the store, sorted (directories holding tags or an index).
    pub fn list_repositories(&self) -> io::Result<Vec<RepoName>> {
        let mut out = Vec::new();
        let root = self.paths().repositories_dir();
        let mut stack = vec![(root.clone(), Vec::<String>::new())];
        while let Some((dir, parts)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut is_repo = false;
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                if entry.file_type()?.is_dir() {
                    if parts.len() < 16 {
                        let mut next = parts.clone();
                        next.push(name);
                        stack.push((entry.path(), next));
                    }
                } else if name.starts_with("tag_") || name == "_index_images" {
                    is_repo = true;
                }
            }
            if is_repo && parts.len() >= 2 {
                if let Ok(r) = RepoName::parse(&parts.join("/")) {
                    out.push(r);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::publish_v1_image as push;
    use http_body_util::Full;

    fn id(c: char) -> ImageId {
        ImageId::parse(&c.to_string().repeat(64)).unwrap()
    }

    fn json_for(id: &ImageId, parent: Option<&ImageId>) -> Vec<u8> {
        match parent {
            Some(p) => format!(r#"{{"id":"{id}","parent":"{p}","created":"x"}}"#).into_bytes(),
            None => format!(r#"{{"id":"{id}"}}"#).into_bytes(),
        }
    }

    #[tokio::test]
    async fn publish_state_machine() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = id('a');
        assert!(matches!(
            store
                .put_image_layer(&a, Full::new(Bytes::from_static(b"x")))
                .await,
            Err(StoreError::NotFound(_))
        ));
        store.put_image_json(&a, &json_for(&a, None)).unwrap();
        assert!(matches!(store.image_json(&a), Err(StoreError::InProgress)));
        assert!(matches!(
            store.put_image_checksum(&a, "sha256:00"),
            Err(StoreError::Invalid(_))
        ));
        store
            .put_image_layer(&a, Full::new(Bytes::from_static(b"layer")))
            .await
            .unwrap();
        // payload checksum = sha256(json + "\n" + layer)
        let mut payload = json_for(&a, None);
        payload.extend_from_slice(b"\nlayer");
        let expect = crate::names::Digest::of_bytes(&payload);
        assert_eq!(
            store.stored_checksums(&a).unwrap(),
            vec![expect.to_string()]
        );
        assert!(matches!(
            store.put_image_checksum(&a, "sha256:00"),
            Err(StoreError::Invalid(_))
        ));
        store.put_image_checksum(&a, expect.as_str()).unwrap();
        assert_eq!(store.image_json(&a).unwrap(), json_for(&a, None));
        assert!(matches!(
            store.put_image_json(&a, &json_for(&a, None)),
            Err(StoreError::Exists)
        ));
        // the layer is a hard link into the blob pool
        let blob = crate::names::Digest::of_bytes(b"layer");
        assert_eq!(store.blob_size(&blob).unwrap(), Some(5));
    }

    #[tokio::test]
    async fn ancestry_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (id('a'), id('b'));
        push(&store, &a, None, b"one").await;
        assert!(matches!(
            store.put_image_json(&id('c'), &json_for(&id('c'), Some(&id('d')))),
            Err(StoreError::Invalid(_))
        ));
        push(&store, &b, Some(&a), b"two").await;
        let anc: Vec<String> = serde_json::from_slice(&store.image_ancestry(&b).unwrap()).unwrap();
        assert_eq!(anc, vec![b.to_string(), a.to_string()]);
        let repo = RepoName::parse("foo").unwrap();
        let tag = Tag::parse("latest").unwrap();
        store.put_tag(&repo, &tag, &b, b"{}").unwrap();
        assert_eq!(
            store
                .get_tag(&RepoName::parse("library/foo").unwrap(), &tag)
                .unwrap(),
            b
        );
        assert_eq!(store.list_tags(&repo).unwrap().len(), 1);
        assert_eq!(store.list_repositories().unwrap(), vec![repo.clone()]);
        store.delete_tag(&repo, &tag).unwrap();
        assert!(matches!(
            store.list_tags(&repo),
            Err(StoreError::NotFound(_))
        ));
    }
}
