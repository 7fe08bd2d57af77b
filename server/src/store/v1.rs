//! V1 records: images (`json`, `layer`, `ancestry`, checksums and the
//! `_inprogress` publish state machine of `v1-protocol.md` §4) and
//! repositories (tags, tag metadata, the index image list).
//!
//! An image is *published* when its `json` exists and `_inprogress` does not.
//! Until then every read answers "being uploaded" and json/layer may be re-put
//! by the user who PUT the json last. Once published it is never written
//! again: identical bytes re-uploaded are a proof of possession
//! (`store::possession`, issue 14), other bytes a conflict.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;

use bytes::Bytes;
use http_body::Body;
use serde_json::Value;

use super::atomic::{remove_durable, write_atomic, FileLock, TempFile, TEMP_PREFIX};
use super::ingest::ingest;
use super::possession::UploadStep;
use super::{hash_file, read_optional, Store, StoreError, StoreResult};
use crate::names::{Algorithm, ImageId, RepoName, Tag};

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

/// What a json PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonPut {
    /// Stored: a new (or unfinished) image is being uploaded.
    Started,
    /// The image is published with these very bytes: the caller's proof of
    /// possession has started (the stored image is not touched).
    Proving,
}

/// What a checksum PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumPut {
    /// The upload is complete: the image is published.
    Published,
    /// The caller re-uploaded a published image's exact bytes.
    Proven,
}

/// The `parent` a V1 image json names, after checking that the json is an
/// object whose `id` is `id` (the first checks of a json PUT; callers check
/// access to the parent before storing anything).
pub fn image_json_parent(id: &ImageId, body: &[u8]) -> StoreResult<Option<ImageId>> {
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
            ImageId::parse(s).map_err(|_| StoreError::Invalid("Invalid parent image id".into()))?,
        ),
        Some(_) => return Err(StoreError::Invalid("Invalid parent image id".into())),
    };
    if parent.as_ref() == Some(id) {
        return Err(StoreError::Invalid("Image cannot be its own parent".into()));
    }
    Ok(parent)
}

/// The answer to bytes that differ from a published image's.
fn different_content(id: &ImageId, what: &str) -> StoreError {
    StoreError::Conflict(format!(
        "Image {id} already exists with different content ({what}); it is not replaced"
    ))
}

/// The answer to a step of an upload another client (or user) started.
fn uploaded_by_another(id: &ImageId) -> StoreError {
    StoreError::Conflict(format!(
        "Image {id} is being uploaded by another client: PUT its json first"
    ))
}

/// Runs store work on the blocking pool from an async upload.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e.to_string())))?
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

    /// `PUT /v1/images/<id>/json` by `user`: validates the json and, for a
    /// new or unfinished image, stores it verbatim, derives `ancestry` from
    /// `parent` and marks the image in progress (this user's upload; anyone
    /// else's unfinished steps no longer count).
    ///
    /// A published image is never replaced: identical bytes start `user`'s
    /// proof of possession ([`JsonPut::Proving`]), other bytes are a
    /// [`StoreError::Conflict`] (a Docker 1.x client stops on it, where
    /// "Image already exists" would make it skip the image).
    pub fn put_image_json(&self, id: &ImageId, body: &[u8], user: &str) -> StoreResult<JsonPut> {
        let parent = image_json_parent(id, body)?;
        let p = self.paths();
        if self.image_state(id)? == ImageState::Published {
            let _lock = FileLock::exclusive(&p.image_lock(id))?;
            return self.claim_identical_json(id, body, user);
        }
        let mut ancestry = vec![id.as_str().to_string()];
        if let Some(parent) = &parent {
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

        super::atomic::create_dirs(p.image_dir(id))?;
        let _lock = FileLock::exclusive(&p.image_lock(id))?;
        if self.image_state(id)? == ImageState::Published {
            return self.claim_identical_json(id, body, user);
        }
        // Marker first: from here until the checksum PUT, readers see "in progress".
        write_atomic(&p.image_inprogress(id), b"true")?;
        remove_durable(&p.image_checksum(id))?;
        let mut record = self.possession(id)?;
        record.steps = [(user.to_string(), UploadStep::Json)].into();
        self.write_possession(id, &record)?;
        write_atomic(&p.image_json(id), body)?;
        let ancestry = serde_json::to_vec(&ancestry).map_err(io::Error::other)?;
        write_atomic(&p.image_ancestry(id), &ancestry)?;
        Ok(JsonPut::Started)
    }

    /// A json PUT on a published image (image lock held): identical bytes
    /// are `user`'s first step of a proof of possession, others a conflict.
    fn claim_identical_json(&self, id: &ImageId, body: &[u8], user: &str) -> StoreResult<JsonPut> {
        if fs::read(self.paths().image_json(id))? != body {
            return Err(different_content(id, "json"));
        }
        let mut record = self.possession(id)?;
        record.steps.insert(user.to_string(), UploadStep::Json);
        self.write_possession(id, &record)?;
        Ok(JsonPut::Proving)
    }

    /// `PUT /v1/images/<id>/layer` by `user`: streams the layer into a temp
    /// file while computing the payload checksum `sha256(json + "\n" +
    /// layer)`, then publishes it to `layer` (and the blob pool) and writes
    /// `_checksum`. Needs `user`'s json PUT first. On a published image the
    /// bytes are only compared (a proof of possession) and never stored.
    /// Returns the number of bytes received.
    pub async fn put_image_layer<B>(&self, id: &ImageId, body: B, user: &str) -> StoreResult<u64>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let p = self.paths().clone();
        if self.layer_put_state(id, user)? == ImageState::Published {
            return self.prove_layer(id, body, user).await;
        }
        let json = fs::read(p.image_json(id))?;
        let mut prefix = json.clone();
        prefix.push(b'\n');
        let temp = TempFile::new_in(&p.image_dir(id), "layer")?;
        let done = ingest(body, temp, Some(prefix), Algorithm::Sha256, false).await?;
        let (store, id, user) = (self.clone(), id.clone(), user.to_string());
        blocking(move || {
            let p = store.paths();
            let _lock = FileLock::exclusive(&p.image_lock(&id))?;
            if store.image_state(&id)? != ImageState::InProgress {
                return Err(StoreError::Conflict(
                    "Image was published or removed during the upload".into(),
                ));
            }
            // Only the uploader has a step (a json PUT by anyone else resets
            // the steps and removes `_checksum`), so `_checksum` is theirs.
            if store.possession(&id)?.step(&user).is_none() {
                return Err(uploaded_by_another(&id));
            }
            // The payload checksum was hashed with the json read before the
            // upload; another PUT json (the same user elsewhere) may have
            // replaced it since.
            if fs::read(p.image_json(&id))? != json {
                return Err(StoreError::Conflict(
                    "the image's json was replaced during the layer upload; upload the layer again"
                        .into(),
                ));
            }
            store.commit_linked(done.temp, &done.digest, &p.image_layer(&id))?;
            let payload = done.prefixed.expect("prefix was given");
            let checksum = serde_json::to_vec(&[payload.as_str()]).map_err(io::Error::other)?;
            write_atomic(&p.image_checksum(&id), &checksum)?;
            Ok(done.size)
        })
        .await
    }

    /// Whether `user` may PUT the image's layer now (before any byte is
    /// read, so a refused request's body can be drained): the image is in
    /// progress with `user` as its uploader, or published with `user`'s
    /// proof of possession under way. Returns that state.
    pub fn layer_put_state(&self, id: &ImageId, user: &str) -> StoreResult<ImageState> {
        let state = self.image_state(id)?;
        let step = self.possession(id)?.step(user);
        match (state, step) {
            (ImageState::Missing, _) => Err(StoreError::NotFound("Image not found".into())),
            (ImageState::Published, None) => Err(StoreError::Exists),
            (ImageState::InProgress, None) => Err(uploaded_by_another(id)),
            (state, Some(_)) => Ok(state),
        }
    }

    /// The layer PUT of a proof of possession: the bytes are hashed with the
    /// stored json and compared with the image's payload checksum; the
    /// temp file is always dropped, the image never touched.
    async fn prove_layer<B>(&self, id: &ImageId, body: B, user: &str) -> StoreResult<u64>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (store, id2) = (self.clone(), id.clone());
        let expected = blocking(move || store.payload_checksums(&id2)).await?;
        let p = self.paths().clone();
        let mut prefix = fs::read(p.image_json(id))?;
        prefix.push(b'\n');
        let temp = TempFile::new_in(&p.image_dir(id), "proof")?;
        let done = ingest(body, temp, Some(prefix), Algorithm::Sha256, false).await?;
        let (store, id, user) = (self.clone(), id.clone(), user.to_string());
        blocking(move || {
            let _lock = FileLock::exclusive(&store.paths().image_lock(&id))?;
            let mut record = store.possession(&id)?;
            if record.step(&user).is_none() {
                return Err(StoreError::Exists);
            }
            let payload = done.prefixed.expect("prefix was given");
            if expected.iter().any(|s| s == payload.as_str()) {
                record.steps.insert(user, UploadStep::Layer);
                store.write_possession(&id, &record)?;
                Ok(done.size)
            } else {
                record.steps.remove(&user);
                store.write_possession(&id, &record)?;
                Err(different_content(&id, "layer"))
            }
        })
        .await
    }

    /// `PUT /v1/images/<id>/checksum` by `user`: publishes the image when
    /// `payload` (`sha256:<hex>`) equals the checksum computed during
    /// `user`'s layer upload, and records `user` as holding it. On a
    /// published image it completes `user`'s proof of possession instead.
    pub fn put_image_checksum(
        &self,
        id: &ImageId,
        payload: &str,
        user: &str,
    ) -> StoreResult<ChecksumPut> {
        let p = self.paths();
        let offered: Vec<&str> = payload.split(',').map(str::trim).collect();
        let matches = |stored: &[String]| offered.iter().any(|c| stored.iter().any(|s| s == c));
        match self.image_state(id)? {
            ImageState::Missing => return Err(StoreError::NotFound("Image not found".into())),
            ImageState::Published => {
                let stored = self.payload_checksums(id)?;
                let _lock = FileLock::exclusive(&p.image_lock(id))?;
                let mut record = self.possession(id)?;
                if record.step(user) != Some(UploadStep::Layer) {
                    return Err(StoreError::Conflict(
                        "Cannot set this image checksum".into(),
                    ));
                }
                if !matches(&stored) {
                    return Err(StoreError::Invalid("Checksum mismatch".into()));
                }
                record.steps.remove(user);
                record.proven.insert(user.to_string());
                self.write_possession(id, &record)?;
                return Ok(ChecksumPut::Proven);
            }
            ImageState::InProgress => {}
        }
        let _lock = FileLock::exclusive(&p.image_lock(id))?;
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
        let mut record = self.possession(id)?;
        if record.step(user).is_none() {
            return Err(uploaded_by_another(id));
        }
        if !matches(&stored) {
            return Err(StoreError::Invalid("Checksum mismatch".into()));
        }
        // The uploader holds the image from the moment it is published.
        record.steps.clear();
        record.proven.insert(user.to_string());
        self.write_possession(id, &record)?;
        remove_durable(&p.image_inprogress(id))?;
        Ok(ChecksumPut::Published)
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
        let lock = FileLock::exclusive(&p.image_lock(id));
        // Another reader may have recorded it while this one waited.
        let sums = self.stored_checksums(id)?;
        if !sums.is_empty() {
            return Ok(sums);
        }
        self.require_published(id)?;
        let mut prefix = fs::read(p.image_json(id))?;
        prefix.push(b'\n');
        let sum = hash_file(&p.image_layer(id), &prefix, Algorithm::Sha256)?;
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
        self.renew_image_chain(id)?;
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

    /// Renews a published image and its ancestors for gc before a tag
    /// names them: under each image's lock it checks the image is still
    /// published and sets its lock file's mtime to now. gc judges an image's
    /// age (its directory's newest entry) under that same lock, from marks
    /// that may predate the new tag, so it either sees the renewal and keeps
    /// the image, or removed it first and the tag is refused (not found).
    /// Without it, tagging an old, unreferenced chain — a V1 client
    /// re-tagging an image, a V2 push whose projection re-uses old images —
    /// wrote nothing gc could see, and the chain could go under the new tag.
    pub(crate) fn renew_image_chain(&self, id: &ImageId) -> StoreResult<()> {
        self.require_published(id)?;
        let p = self.paths();
        for step in self.read_ancestry(id)? {
            let step = ImageId::parse(&step).map_err(|_| {
                StoreError::Io(io::Error::other(format!("corrupt ancestry of {id}")))
            })?;
            self.require_published(&step)?;
            let _lock = FileLock::exclusive(&p.image_lock(&step))?;
            self.require_published(&step)?;
            self.renew_locked_image(&step)?;
        }
        Ok(())
    }

    /// Sets the mtime of image `id`'s lock file to now, which gc reads as
    /// the image's age (its directory's newest entry). The caller holds
    /// that lock, under which gc judges the image too.
    pub(crate) fn renew_locked_image(&self, id: &ImageId) -> io::Result<()> {
        super::atomic::touch(&self.paths().image_lock(id), std::time::SystemTime::now())
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
    ///
    /// Runs under the repository's lock, whose file goes last while still
    /// held: a merge of `_index_images` another host is in the middle of
    /// is not cut in two (unlinked under it, the lock file would let a
    /// third writer lock a new one and merge at the same time), and a
    /// waiter finds the name gone and locks anew (`FileLock`).
    pub fn delete_repository(&self, repo: &RepoName) -> StoreResult<()> {
        let p = self.paths();
        let dir = p.repo_dir(repo);
        if !dir.is_dir() {
            return Err(StoreError::NotFound("Repository not found".into()));
        }
        let lock_path = p.repo_lock(repo);
        let lock = FileLock::exclusive(&lock_path)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() && entry.path() != lock_path {
                fs::remove_file(entry.path())?;
            }
        }
        // Durable (the directory fsynced) even when the directory stays, a
        // nested repository below it: deleted tags must not come back.
        remove_durable(&lock_path)?;
        drop(lock);
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

    /// Whether a repository references an image through one of its tags:
    /// the tagged image or one of its ancestors. The index list does not
    /// count: announcing an id there grants nothing (issue 14).
    pub fn repository_references(&self, repo: &RepoName, id: &ImageId) -> bool {
        let Ok(tags) = self.list_tags(repo) else {
            return false;
        };
        tags.values().any(|top| {
            top == id.as_str()
                || ImageId::parse(top).is_ok_and(|top| {
                    self.read_ancestry(&top)
                        .is_ok_and(|a| a.iter().any(|x| x == id.as_str()))
                })
        })
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

    /// Another host merging `_index_images` holds the repository's lock
    /// while a V1 DELETE of the repository runs here. The delete used to
    /// unlink every file of the repository, the held lock file too, so a
    /// third writer created a new lock file and merged while the first
    /// still did: two holders, and one merge lost. The delete waits for
    /// the lock instead, and unlinks its file last, still holding it.
    #[test]
    fn a_repository_delete_waits_for_the_merge_holding_its_lock() {
        use std::io::{BufRead, Write};
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("library/busy").unwrap();
        let entry = serde_json::json!({ "id": id('a').to_string() });
        store.merge_index_images(&repo, &[entry]).unwrap();
        let lock = store.paths().repo_lock(&repo);
        let ino = fs::metadata(&lock).unwrap().ino();
        // The other host: holds the lock until told to let go.
        let holder = r#"
import fcntl, sys
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"#;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(holder)
            .arg(&lock)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");

        let deleter = {
            let (store, repo) = (store.clone(), repo.clone());
            std::thread::spawn(move || store.delete_repository(&repo))
        };
        // The event: the delete queued on the held lock (a blocked "->"
        // request for the lock file's inode in /proc/locks), or ended.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let queued = loop {
            let locks = fs::read_to_string("/proc/locks").unwrap();
            if locks
                .lines()
                .any(|l| l.contains("->") && l.contains(&format!(":{ino} ")))
            {
                break true;
            }
            if deleter.is_finished() {
                break false;
            }
            assert!(std::time::Instant::now() < deadline, "neither event came");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let still_named = fs::metadata(&lock).is_ok_and(|m| m.ino() == ino);
        writeln!(child.stdin.take().unwrap()).unwrap();
        assert!(child.wait().unwrap().success());
        deleter.join().unwrap().unwrap();
        assert!(
            queued && still_named,
            "the delete ran while another host held the repository's lock \
             (queued: {queued}, lock file still named: {still_named})"
        );
        assert!(!store.repo_exists(&repo), "the repository is deleted");
    }

    #[tokio::test]
    async fn publish_state_machine() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = id('a');
        let layer = |b: &'static [u8]| Full::new(Bytes::from_static(b));
        assert!(matches!(
            store.put_image_layer(&a, layer(b"x"), "u").await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            store.put_image_json(&a, &json_for(&a, None), "u").unwrap(),
            JsonPut::Started
        );
        assert!(matches!(store.image_json(&a), Err(StoreError::InProgress)));
        assert!(matches!(
            store.put_image_checksum(&a, "sha256:00", "u"),
            Err(StoreError::Invalid(_))
        ));
        // Another user cannot continue this upload.
        assert!(matches!(
            store.put_image_layer(&a, layer(b"other"), "v").await,
            Err(StoreError::Conflict(_))
        ));
        store
            .put_image_layer(&a, layer(b"layer"), "u")
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
            store.put_image_checksum(&a, "sha256:00", "u"),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.put_image_checksum(&a, expect.as_str(), "v"),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            store.put_image_checksum(&a, expect.as_str(), "u").unwrap(),
            ChecksumPut::Published
        );
        assert_eq!(store.image_json(&a).unwrap(), json_for(&a, None));
        assert!(store.has_proven(&a, "u") && !store.has_proven(&a, "v"));
        // the layer is a hard link into the blob pool
        let blob = crate::names::Digest::of_bytes(b"layer");
        assert_eq!(store.blob_size(&blob).unwrap(), Some(5));
    }

    /// The same user on two hosts: one streams the layer while the other
    /// PUTs a different json for the id. The layer's payload checksum was
    /// hashed with the json read when the upload began; committing it under
    /// the new json would record a checksum of json the image no longer has.
    #[tokio::test]
    async fn a_layer_whose_json_changed_during_its_upload_is_refused() {
        use futures_util::stream;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = id('d');
        let first = json_for(&a, None);
        store.put_image_json(&a, &first, "u").unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let body =
            http_body_util::StreamBody::new(Box::pin(stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| {
                    (
                        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)),
                        rx,
                    )
                })
            })));
        let upload = {
            let store = store.clone();
            let a = a.clone();
            tokio::spawn(async move { store.put_image_layer(&a, body, "u").await })
        };
        // The second send waits for the first to be taken: the upload is
        // under way, its json read.
        tx.send(Bytes::from_static(b"half ")).await.unwrap();
        tx.send(Bytes::from_static(b"more ")).await.unwrap();
        let second = format!(r#"{{"id":"{a}","comment":"second"}}"#).into_bytes();
        store.put_image_json(&a, &second, "u").unwrap();
        tx.send(Bytes::from_static(b"layer")).await.unwrap();
        drop(tx);
        let result = upload.await.unwrap();
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "a layer hashed with the old json was committed: {result:?}"
        );
        assert!(
            !store.paths().image_checksum(&a).exists(),
            "a checksum of the old json was recorded"
        );
    }

    #[tokio::test]
    async fn published_images_are_never_replaced_and_identical_bytes_prove_possession() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = id('a');
        push(&store, &a, None, b"layer").await;
        let layer = |b: &'static [u8]| Full::new(Bytes::from_static(b));
        let before = crate::store::fsck::fsck(
            &store,
            &crate::store::fsck::FsckOptions {
                repair: false,
                deep: false,
                grace: std::time::Duration::from_secs(3600),
            },
        )
        .unwrap();
        // Other json: refused with a message a Docker client will not skip.
        let other = format!(r#"{{"id":"{a}","created":"x"}}"#);
        let err = store.put_image_json(&a, other.as_bytes(), "v").unwrap_err();
        assert!(err.to_string().contains("different content"), "{err}");
        // A layer or checksum without the json step: "already exists".
        assert!(matches!(
            store.put_image_layer(&a, layer(b"layer"), "v").await,
            Err(StoreError::Exists)
        ));
        // Identical json, other layer: refused, the step is forgotten.
        assert_eq!(
            store.put_image_json(&a, &json_for(&a, None), "v").unwrap(),
            JsonPut::Proving
        );
        let err = store
            .put_image_layer(&a, layer(b"forged"), "v")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("different content"), "{err}");
        assert_eq!(store.possession(&a).unwrap().step("v"), None);
        // Identical json and layer, then the checksum: proven.
        store.put_image_json(&a, &json_for(&a, None), "v").unwrap();
        store
            .put_image_layer(&a, layer(b"layer"), "v")
            .await
            .unwrap();
        let sum = store.stored_checksums(&a).unwrap().remove(0);
        assert_eq!(
            store.put_image_checksum(&a, &sum, "v").unwrap(),
            ChecksumPut::Proven
        );
        assert!(store.has_proven(&a, "v"));
        let mut layer_bytes = Vec::new();
        std::io::Read::read_to_end(&mut store.open_image_layer(&a).unwrap().0, &mut layer_bytes)
            .unwrap();
        assert_eq!(layer_bytes, b"layer");
        // Nothing of the proof is left behind as a problem or a temp file.
        let after = crate::store::fsck::fsck(
            &store,
            &crate::store::fsck::FsckOptions {
                repair: false,
                deep: false,
                grace: std::time::Duration::from_secs(3600),
            },
        )
        .unwrap();
        assert_eq!(
            before.findings.len(),
            after.findings.len(),
            "{:?}",
            after.findings
        );
        let names: Vec<String> = fs::read_dir(store.paths().image_dir(&a))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(TEMP_PREFIX)),
            "{names:?}"
        );
    }

    #[tokio::test]
    async fn ancestry_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (id('a'), id('b'));
        push(&store, &a, None, b"one").await;
        assert!(matches!(
            store.put_image_json(&id('c'), &json_for(&id('c'), Some(&id('d'))), "u"),
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
