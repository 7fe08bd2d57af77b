//! V1 ids for projected V2 images whose schema1-builder id is taken
//! (issue 14). Those ids are predictable from public layer digests, so a
//! user who may push V1 images anywhere can upload an image under the id
//! someone else's base layer will get. A projected step therefore reuses an
//! existing image only when it holds exactly the step's json and layer;
//! otherwise the step gets another id,
//! `sha256(key + " " + schema1 id + " " + step key + " " + n)` for the
//! first `n` that is free or already holds this very step, where `key` is
//! a random secret of the store (`_berth/v1ids/key`), so nobody can squat
//! that id in advance, and the step key hashes the step's schema1 json and
//! layer digest. The choice is recorded in `_berth/v1ids/<step key>` (first
//! writer wins) and looked up first, so restarts and other processes on the
//! store give the same answer, also once the squatting image is gone. Nothing here speaks HTTP or decides access.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::atomic::{sync_parent, TempFile};
use super::projection::PROJECTING;
use super::translate::{Rebuild, V1Step};
use super::v1::ImageState;
use super::{hash_file, read_optional, Store, StoreError, StoreResult};
use crate::names::{Digest, ImageId};

/// How many alternative ids a squatted step tries before the push fails.
/// With a secret key a second squat would need the key; the bound only
/// keeps a corrupted store from looping.
const MAX_ALIASES: u32 = 16;

impl Store {
    /// The step to write for `candidate` (its schema1-builder form): itself
    /// when its id is free or already holds it, else the same step under
    /// the recorded or newly derived alternative id.
    pub(crate) fn settle_projected_id(
        &self,
        candidate: V1Step,
        rebuild: Rebuild<'_>,
    ) -> StoreResult<V1Step> {
        // A recorded choice comes first, so the answer stays the same even
        // after the squatting image is gone (collected, say).
        let key = step_key(&candidate);
        if let Some(id) = self.recorded_alias(&key)? {
            let step = rebuild(id);
            if self.holds_step(&step)? {
                return Ok(step);
            }
        }
        if self.holds_step(&candidate)? {
            return Ok(candidate);
        }
        let secret = self.v1_ids_secret()?;
        for n in 0..MAX_ALIASES {
            let seed = format!("{secret} {} {} {n}", candidate.id, key.hex());
            let step = rebuild(id_of(seed.as_bytes()));
            if !self.holds_step(&step)? {
                continue;
            }
            let chosen = self.record_alias(&key, &step.id)?;
            let step = if chosen == step.id {
                step
            } else {
                rebuild(chosen)
            };
            tracing::warn!(squatted = %candidate.id, id = %step.id, "projected V1 id is taken by another image: using an alternative id");
            return Ok(step);
        }
        Err(StoreError::Conflict(format!(
            "V1 image {} and its alternative ids are taken by other images",
            candidate.id
        )))
    }

    /// Whether `step.id` can be `step`: no image there, a projection's
    /// leftover (redone under the image lock), or a published image with
    /// exactly the step's json and layer bytes.
    pub(crate) fn holds_step(&self, step: &V1Step) -> StoreResult<bool> {
        let p = self.paths();
        Ok(match self.image_state(&step.id)? {
            ImageState::Missing => true,
            ImageState::InProgress => {
                read_optional(&p.image_inprogress(&step.id))?.as_deref() == Some(PROJECTING)
            }
            ImageState::Published => {
                read_optional(&p.image_json(&step.id))?.as_deref() == Some(step.json.as_slice())
                    && self.layer_is_blob(&step.id, &step.blob)?
            }
        })
    }

    /// Whether an image's layer has the bytes of pool blob `blob`: the same
    /// inode (every layer berth stores is a link into the pool), else the
    /// same size and sha256.
    fn layer_is_blob(&self, id: &ImageId, blob: &Digest) -> io::Result<bool> {
        let p = self.paths();
        let layer = match fs::metadata(p.image_layer(id)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if let Ok(pooled) = fs::metadata(p.blob(blob)) {
            if pooled.dev() == layer.dev() && pooled.ino() == layer.ino() {
                return Ok(true);
            }
            if pooled.len() != layer.len() {
                return Ok(false);
            }
        }
        Ok(hash_file(&p.image_layer(id), b"", blob.algorithm())? == *blob)
    }

    fn recorded_alias(&self, key: &Digest) -> StoreResult<Option<ImageId>> {
        let Some(raw) = read_optional(&self.paths().v1_id_alias(key))? else {
            return Ok(None);
        };
        let id = ImageId::parse(String::from_utf8_lossy(&raw).trim()).map_err(|e| {
            StoreError::Io(io::Error::other(format!("corrupt V1 id record {key}: {e}")))
        })?;
        Ok(Some(id))
    }

    /// Records `id` for the step `key`; returns the recorded id (another
    /// process may have recorded first).
    fn record_alias(&self, key: &Digest, id: &ImageId) -> StoreResult<ImageId> {
        let raw = first_writer_wins(&self.paths().v1_id_alias(key), id.as_str().as_bytes())?;
        ImageId::parse(String::from_utf8_lossy(&raw).trim()).map_err(|e| {
            StoreError::Io(io::Error::other(format!("corrupt V1 id record {key}: {e}")))
        })
    }

    /// The store's secret for alternative ids, created on first use.
    fn v1_ids_secret(&self) -> io::Result<String> {
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let raw = first_writer_wins(&self.paths().v1_ids_key(), fresh.as_bytes())?;
        Ok(String::from_utf8_lossy(&raw).trim().to_string())
    }
}

/// What identifies a step's content: its schema1 json and its layer.
fn step_key(step: &V1Step) -> Digest {
    let mut seed = step.json.clone();
    seed.push(b' ');
    seed.extend_from_slice(step.blob.as_str().as_bytes());
    Digest::of_bytes(&seed)
}

fn id_of(seed: &[u8]) -> ImageId {
    ImageId::parse(Digest::of_bytes(seed).hex()).expect("sha256 hex is a valid V1 id")
}

/// Writes `bytes` at `dest` unless a file is there; returns what `dest`
/// holds afterwards. The file is complete before it gets its name (temp +
/// fsync + `link(2)`, which fails on an existing name, so the first writer
/// wins, also over NFS; where links are unsupported, a rename).
fn first_writer_wins(dest: &Path, bytes: &[u8]) -> io::Result<Vec<u8>> {
    if let Some(existing) = read_optional(dest)? {
        return Ok(existing);
    }
    let dir = dest
        .parent()
        .ok_or_else(|| io::Error::other("record has no parent directory"))?;
    let mut temp = TempFile::new_in(dir, "v1id")?;
    temp.file().write_all(bytes)?;
    temp.sync()?;
    match fs::hard_link(temp.path(), dest) {
        Ok(()) => {
            sync_parent(dest)?;
            Ok(bytes.to_vec())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::read(dest),
        // No hard links here: rename (a racing writer may then win last;
        // whatever `dest` holds afterwards is the answer for everyone).
        Err(_) => {
            temp.commit(dest)?;
            fs::read(dest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{RepoName, Tag};
    use crate::store::media;
    use crate::store::test_support::publish_v1_image;
    use serde_json::json;

    /// A stored two-layer image manifest: (manifest, base layer bytes).
    fn pushed_image(store: &Store) -> (serde_json::Value, Vec<u8>) {
        let base = b"base layer bytes".to_vec();
        let app = b"app layer bytes".to_vec();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "history": [{"created_by": "base"}, {"created_by": "app"}],
            "rootfs": {"type": "layers", "diff_ids": [
                Digest::of_bytes(&base).as_str(), Digest::of_bytes(&app).as_str()]},
        }))
        .unwrap();
        let cd = store.put_small_blob(&config).unwrap();
        let bd = store.put_small_blob(&base).unwrap();
        let ad = store.put_small_blob(&app).unwrap();
        let layer = |d: &Digest, len: usize| json!({"mediaType": media::DOCKER_LAYER_TAR, "size": len, "digest": d.as_str()});
        let manifest = json!({
            "schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST,
            "config": {"mediaType": media::DOCKER_CONFIG, "size": config.len(), "digest": cd.as_str()},
            "layers": [layer(&bd, base.len()), layer(&ad, app.len())],
        });
        (manifest, base)
    }

    #[tokio::test]
    async fn a_squatted_id_gets_a_recorded_alternative() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (manifest, base) = pushed_image(&store);
        let predicted = id_of(format!("{} ", Digest::of_bytes(&base).hex()).as_bytes());
        publish_v1_image(&store, &predicted, None, b"squatter's bytes").await;
        let repo = RepoName::parse("private/app").unwrap();
        let top = store
            .project_to_v1(&repo, &Tag::parse("1").unwrap(), &manifest)
            .unwrap()
            .unwrap();
        let ancestry: Vec<String> =
            serde_json::from_slice(&store.image_ancestry(&top).unwrap()).unwrap();
        let root = ImageId::parse(&ancestry[1]).unwrap();
        assert_ne!(root, predicted);
        let (mut f, _) = store.open_image_layer(&root).unwrap();
        let mut got = Vec::new();
        io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert_eq!(got, base);
        let (mut f, _) = store.open_image_layer(&predicted).unwrap();
        let mut got = Vec::new();
        io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert_eq!(got, b"squatter's bytes");
        assert_eq!(fs::read_dir(store.paths().v1_ids_dir()).unwrap().count(), 2);
        // Recorded: neither a new key nor the squatter's image going away
        // moves the answer; a second projection lands on the same ids.
        fs::write(store.paths().v1_ids_key(), "another key").unwrap();
        fs::remove_dir_all(store.paths().image_dir(&predicted)).unwrap();
        let again = store
            .project_to_v1(&repo, &Tag::parse("2").unwrap(), &manifest)
            .unwrap()
            .unwrap();
        assert_eq!(again, top);
        // Without a squatter, the schema1 ids are used as before.
        let clean = tempfile::tempdir().unwrap();
        let store2 = Store::open(clean.path()).unwrap();
        let (manifest2, _) = pushed_image(&store2);
        let top2 = store2
            .project_to_v1(&repo, &Tag::parse("1").unwrap(), &manifest2)
            .unwrap()
            .unwrap();
        let ancestry2: Vec<String> =
            serde_json::from_slice(&store2.image_ancestry(&top2).unwrap()).unwrap();
        assert_eq!(ancestry2[1], predicted.as_str());
        assert!(!store2.paths().v1_ids_dir().exists());
    }

    #[test]
    fn first_writer_wins_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rec");
        assert_eq!(first_writer_wins(&dest, b"one").unwrap(), b"one");
        assert_eq!(first_writer_wins(&dest, b"two").unwrap(), b"one");
        assert_eq!(fs::read(&dest).unwrap(), b"one");
    }
}
