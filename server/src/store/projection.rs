//! V2 → V1 at manifest PUT (`v2-compat.md` §2.6): writes the V1 images of a
//! pushed image manifest (json, layer = hard link to the pool blob,
//! ancestry, payload checksum, published) and points the V1 tag at the top.
//!
//! V1 json is first-writer-wins: an id that already exists is left alone
//! (its bytes are fixed, and its payload checksum covers them). Artifacts
//! (non-image configs) and layers V1 clients cannot read are not projected.

use std::fs::{self, File};
use std::io::{self, Read};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::atomic::{remove_durable, write_atomic, FileLock};
use super::manifests::LayerInfo;
use super::translate::{self, V1Step};
use super::v1::ImageState;
use super::{media, Store, StoreError, StoreResult};
use crate::names::{Digest, ImageId, RepoName, Tag};

/// `_inprogress` content while a projection writes an image (a V1 client's
/// upload writes `true`): tells a crashed projection's leftover from a live
/// V1 upload.
const PROJECTING: &[u8] = b"projection";

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
        let steps = match translate::project(&config_bytes, &layers) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(error = %e, "not projected to V1");
                return Ok(None);
            }
        };
        if steps
            .iter()
            .any(|s| s.blob.as_str() == media::EMPTY_GZIP_TAR_DIGEST)
        {
            self.put_small_blob(&media::EMPTY_GZIP_TAR)?;
        }
        let checksums = self.payload_checksums(&steps)?;
        for (step, checksum) in steps.iter().zip(checksums) {
            self.write_projected_image(step, checksum)?;
        }
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

    /// The payload checksums of the steps not yet published, computed from
    /// their pool blobs (the V1 layer is a link to, or a copy of, that file)
    /// on up to one thread per core: this reads and hashes every new layer,
    /// and runs while the manifest PUT waits (issue 9).
    fn payload_checksums(&self, steps: &[V1Step]) -> StoreResult<Vec<Option<Digest>>> {
        let mut todo = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            if self.image_state(&step.id)? != ImageState::Published {
                todo.push(i);
            }
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(todo.len())
            .max(1);
        let mut out: Vec<Option<Digest>> = vec![None; steps.len()];
        let results: Vec<io::Result<Vec<(usize, Digest)>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let mine: Vec<usize> = todo.iter().copied().skip(t).step_by(threads).collect();
                    scope.spawn(move || {
                        mine.into_iter()
                            .map(|i| {
                                let step = &steps[i];
                                let layer = self.paths().blob(&step.blob);
                                payload_checksum(&step.json, &layer).map(|d| (i, d))
                            })
                            .collect::<io::Result<Vec<_>>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("checksum thread panicked")))
                })
                .collect()
        });
        for r in results {
            for (i, d) in r? {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(d);
                }
            }
        }
        Ok(out)
    }

    /// Writes one V1 image as published, unless it already exists;
    /// `checksum` is its payload checksum when already computed.
    fn write_projected_image(&self, step: &V1Step, checksum: Option<Digest>) -> StoreResult<()> {
        let p = self.paths();
        let id = &step.id;
        if self.image_state(id)? == ImageState::Published {
            return Ok(());
        }
        fs::create_dir_all(p.image_dir(id))?;
        let _lock = FileLock::exclusive(&p.image_dir(id).join(".lock"))?;
        match self.image_state(id)? {
            ImageState::Published => return Ok(()),
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
        let checksum = match checksum {
            Some(c) => c,
            None => payload_checksum(&step.json, &p.image_layer(id))?,
        };
        let checksum = serde_json::to_vec(&[checksum.as_str()]).map_err(io::Error::other)?;
        write_atomic(&p.image_checksum(id), &checksum)?;
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

/// The V1 payload checksum `sha256(json + "\n" + layer)`, streaming the layer.
fn payload_checksum(json: &[u8], layer: &std::path::Path) -> io::Result<Digest> {
    let mut h = Sha256::new();
    h.update(json);
    h.update(b"\n");
    let mut f = File::open(layer)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_sha256(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            store.stored_checksums(&root).unwrap(),
            vec![Digest::of_bytes(&payload).to_string()]
        );
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
}
