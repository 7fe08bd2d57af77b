//! V2 → V1 at manifest PUT (`v2-compat.md` §2.6): writes the V1 images of a
//! pushed image manifest (json, layer = hard link to the pool blob,
//! ancestry, published) and points the V1 tag at the top. The payload
//! checksum is not computed here: the first V1 read records it
//! ([`Store::payload_checksums`]), so a V2 push does not read and hash every
//! new layer a second time (issue 9).
//!
//! An existing V1 image is reused only when it holds exactly the step's json
//! and layer; any other image under a step's schema1-builder id (a squatted
//! id, issue 14) is left alone and the step gets another id
//! (`store::v1ids`). Artifacts (non-image configs) and layers V1 clients
//! cannot read are not projected.

use std::fs;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::atomic::{remove_durable, write_atomic, FileLock};
use super::manifests::LayerInfo;
use super::translate::{self, Projection, V1Step};
use super::v1::ImageState;
use super::{media, Store, StoreError, StoreResult};
use crate::names::{ImageId, RepoName, Tag};

/// `_inprogress` content while a projection writes an image (a V1 client's
/// upload writes `true`): tells a crashed projection's leftover from a live
/// V1 upload.
pub(crate) const PROJECTING: &[u8] = b"projection";

impl Store {
    /// Projects an image manifest (already stored, blobs checked) to V1 and
    /// sets the V1 tag. Returns the top V1 id, or `None` when the image is an
    /// artifact or has layers V1 clients cannot read (kept V2-only).
    pub fn project_to_v1(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Value,
    ) -> StoreResult<Option<ImageId>> {
        let (config, layers) =
            translate::image_parts(manifest).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if !media::is_image_config(&config.media_type) {
            return Ok(None);
        }
        if let Some(l) = layers
            .iter()
            .find(|l| !media::is_v1_readable_layer(&l.media_type))
        {
            tracing::info!(layer = %l.digest, media_type = %l.media_type, "not projected to V1: layer type V1 clients cannot read");
            return Ok(None);
        }
        let config_bytes = fs::read(self.paths().blob(&config.digest))?;
        let plan = match Projection::plan(&config_bytes, &layers) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::info!(error = %e, "not projected to V1");
                return Ok(None);
            }
        };
        if plan.uses_empty_layer() {
            self.put_small_blob(&media::EMPTY_GZIP_TAR)?;
        }
        // Parents first: each step's id (store::v1ids) and ancestry build on
        // the image written for the step before it.
        let steps = plan.steps(|candidate, rebuild| {
            let step = self.settle_projected_id(candidate, rebuild)?;
            self.write_projected_image(&step)?;
            Ok::<_, StoreError>(step)
        })?;
        let top = steps
            .last()
            .expect("project returns at least one step")
            .id
            .clone();
        let cfg: Value = serde_json::from_slice(&config_bytes).unwrap_or(Value::Null);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let meta = json!({
            "last_update": now,
            "docker_version": cfg.get("docker_version").cloned().unwrap_or(Value::Null),
            "docker_go_version": null,
            "arch": cfg.get("architecture").cloned().unwrap_or(Value::Null),
            "os": cfg.get("os").cloned().unwrap_or(Value::Null),
            "kernel": null,
        });
        let meta = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        self.put_tag(repo, tag, &top, &meta)?;
        Ok(Some(top))
    }

    /// Writes one V1 image as published, unless it already exists with
    /// exactly these bytes (an image with other bytes is never reused or
    /// replaced: [`Store::settle_projected_id`] chose an id without one).
    /// Its `_checksum` is left for the first V1 read to record.
    fn write_projected_image(&self, step: &V1Step) -> StoreResult<()> {
        let p = self.paths();
        let id = &step.id;
        super::atomic::create_dirs(p.image_dir(id))?;
        let _lock = FileLock::exclusive(&p.image_lock(id))?;
        match self.image_state(id)? {
            // Re-used as it is: renewed for gc under its lock, as a tag
            // renews its chain (`Store::renew_image_chain`).
            ImageState::Published if self.holds_step(step)? => {
                self.renew_locked_image(id)?;
                return Ok(());
            }
            // Published by a V1 client since the id was settled.
            ImageState::Published => {
                return Err(StoreError::Conflict(format!(
                    "V1 image {id} was uploaded with other content during this push; push again"
                )))
            }
            // A projection writes the whole image under this lock, so a
            // marker it left means that writer died midway (#7): redo it.
            ImageState::InProgress
                if fs::read(p.image_inprogress(id)).ok().as_deref() == Some(PROJECTING) => {}
            // A V1 client is pushing this very id: let it finish its own upload.
            ImageState::InProgress => {
                return Err(StoreError::Conflict(format!(
                    "V1 image {id} is being uploaded"
                )))
            }
            ImageState::Missing => {}
        }
        let mut ancestry = vec![id.as_str().to_string()];
        if let Some(parent) = &step.parent {
            ancestry.extend(self.read_ancestry(parent)?);
        }
        write_atomic(&p.image_inprogress(id), PROJECTING)?;
        write_atomic(&p.image_json(id), &step.json)?;
        self.link_blob_to(&step.blob, &p.image_layer(id))?;
        let ancestry = serde_json::to_vec(&ancestry).map_err(io::Error::other)?;
        write_atomic(&p.image_ancestry(id), &ancestry)?;
        if let Some(diff_id) = &step.diff_id {
            let info = LayerInfo {
                blob: step.blob.clone(),
                size: fs::metadata(p.image_layer(id))?.len(),
                diff_id: diff_id.clone(),
                media_type: step.media_type.clone(),
            };
            self.set_v1_layer_info(id, &info)?;
        }
        remove_durable(&p.image_inprogress(id))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Digest;
    use std::io::Read;

    #[test]
    fn projects_published_v1_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = b"\x1f\x8bnot really gzip".to_vec();
        let ld = store.put_small_blob(&layer).unwrap();
        let config = br#"{"architecture":"amd64","os":"linux","history":[{"created_by":"ADD"},{"created_by":"CMD","empty_layer":true}],"rootfs":{"type":"layers","diff_ids":["sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"]}}"#;
        let cd = store.put_small_blob(config).unwrap();
        let manifest = json!({
            "schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST,
            "config": {"mediaType": media::DOCKER_CONFIG, "size": config.len(), "digest": cd.as_str()},
            "layers": [{"mediaType": media::DOCKER_LAYER_GZIP, "size": layer.len(), "digest": ld.as_str()}],
        });
        let repo = RepoName::parse("x").unwrap();
        let tag = Tag::parse("1").unwrap();
        let top = store
            .project_to_v1(&repo, &tag, &manifest)
            .unwrap()
            .unwrap();
        assert_eq!(store.get_tag(&repo, &tag).unwrap(), top);
        let anc: Vec<String> =
            serde_json::from_slice(&store.image_ancestry(&top).unwrap()).unwrap();
        assert_eq!(anc.len(), 2);
        let root = ImageId::parse(&anc[1]).unwrap();
        // root layer is the pool blob, with a valid payload checksum.
        let (mut f, len) = store.open_image_layer(&root).unwrap();
        assert_eq!(len, layer.len() as u64);
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, layer);
        let mut payload = store.image_json(&root).unwrap();
        payload.push(b'\n');
        payload.extend_from_slice(&layer);
        // The payload checksum is recorded by the first V1 read, not by
        // the projection.
        assert!(store.stored_checksums(&root).unwrap().is_empty());
        let want = vec![Digest::of_bytes(&payload).to_string()];
        // The top image: a store where recording fails (here its lock file
        // cannot be opened) still answers, and records nothing.
        let top_lock = dir.path().join(format!("images/{top}/.lock"));
        let _ = std::fs::remove_file(&top_lock);
        std::fs::create_dir(&top_lock).unwrap();
        let mut top_payload = store.image_json(&top).unwrap();
        top_payload.push(b'\n');
        top_payload.extend_from_slice(&media::EMPTY_GZIP_TAR);
        assert_eq!(
            store.payload_checksums(&top).unwrap(),
            vec![Digest::of_bytes(&top_payload).to_string()]
        );
        assert!(store.stored_checksums(&top).unwrap().is_empty());
        std::fs::remove_dir(&top_lock).unwrap();
        assert_eq!(store.payload_checksums(&root).unwrap(), want);
        assert_eq!(store.stored_checksums(&root).unwrap(), want);
        // top is the empty step: the empty gzip tar.
        let (_, len) = store.open_image_layer(&top).unwrap();
        assert_eq!(len, 32);
        // again: idempotent, same ids
        assert_eq!(
            store.project_to_v1(&repo, &tag, &manifest).unwrap(),
            Some(top)
        );
        // an artifact is not projected
        let art = json!({"schemaVersion": 2, "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "size": 2, "digest": cd.as_str()}, "layers": []});
        assert_eq!(store.project_to_v1(&repo, &tag, &art).unwrap(), None);
    }

    /// V1 projection of an image pushed with sha512 digests works: the V1
    /// layer is the sha512 pool blob (one inode), its V1 payload checksum is
    /// sha256 as the V1 protocol has it, and fsck finds it consistent.
    #[test]
    fn projects_sha512_images_with_sha256_v1_checksums() {
        use crate::names::Algorithm;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = b"a sha512 layer".to_vec();
        let ld = store.put_small_blob_as(&layer, Algorithm::Sha512).unwrap();
        let diff_id = Algorithm::Sha512.digest_of(&layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","history":[{{"created_by":"ADD"}}],"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        let cd = store
            .put_small_blob_as(config.as_bytes(), Algorithm::Sha512)
            .unwrap();
        let manifest = json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "size": config.len(), "digest": cd.as_str()},
            "layers": [{"mediaType": media::OCI_LAYER_TAR, "size": layer.len(), "digest": ld.as_str()}],
        });
        let repo = RepoName::parse("x").unwrap();
        let tag = Tag::parse("512").unwrap();
        let top = store
            .project_to_v1(&repo, &tag, &manifest)
            .unwrap()
            .expect("a sha512 image is projected");
        let p = store.paths();
        let (v1, pool) = (
            std::fs::metadata(p.image_layer(&top)).unwrap(),
            std::fs::metadata(p.blob(&ld)).unwrap(),
        );
        assert_eq!((v1.dev(), v1.ino()), (pool.dev(), pool.ino()));
        let info = store.v1_layer_info(&top).unwrap().unwrap();
        assert_eq!((info.blob, info.diff_id), (ld.clone(), diff_id));
        let mut payload = store.image_json(&top).unwrap();
        payload.push(b'\n');
        payload.extend_from_slice(&layer);
        assert_eq!(
            store.payload_checksums(&top).unwrap(),
            vec![Digest::of_bytes(&payload).to_string()]
        );
        let report = crate::store::fsck::fsck(
            &store,
            &crate::store::fsck::FsckOptions {
                repair: false,
                deep: false,
                grace: std::time::Duration::ZERO,
            },
        )
        .unwrap();
        assert_eq!(report.problems(), 0, "{:#?}", report.findings);
    }
}
