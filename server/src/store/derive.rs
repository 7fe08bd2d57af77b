//! V1 → V2 for images that exist only in V1 form (`v2-compat.md` §2.5):
//! the first V2 read of a V1 tag generates a config and a schema2 manifest
//! from the V1 chain, stores both in the pool and records them under the top
//! V1 id, so every later read (and every restart) serves the same digest.
//!
//! Layer bytes are served as stored (never recompressed). Each layer's blob
//! digest and diff_id are computed once in a single streaming pass (gzip
//! decompressed with `flate2`) and cached per V1 id. zstd-compressed V1
//! layers have no schema2 media type and are refused.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use super::atomic::{sync_parent, TempFile};
use super::manifests::{DerivedRecord, LayerInfo};
use super::translate::{self, V1Image};
use super::{media, Store, StoreError, StoreResult};
use crate::names::{Digest, ImageId};

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes all of `r` into `h`.
fn drain<R: Read>(r: &mut R, h: &mut Sha256) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// Blob digest, size, diff_id and media type of stored layer bytes (an open
/// file, read from its start), in one pass. `Ok(None)` for a 0-byte layer
/// (treated as adding no files).
fn layer_facts(file: &File) -> StoreResult<Option<LayerInfo>> {
    let mut file = BufReader::with_capacity(256 * 1024, file);
    let mut head = [0u8; 4];
    let got = {
        let probe = std::io::BufRead::fill_buf(&mut file)?;
        let got = probe.len().min(4);
        head[..got].copy_from_slice(&probe[..got]);
        got
    };
    if got == 0 {
        return Ok(None);
    }
    let compression = media::sniff(&head[..got]);
    let media_type = translate::layer_media_type(compression).ok_or_else(|| {
        StoreError::Invalid("V1 layer is zstd-compressed; it has no schema2 form".into())
    })?;
    let mut reader = HashingReader {
        inner: file,
        hash: Sha256::new(),
        count: 0,
    };
    let mut diff = Sha256::new();
    if compression == media::Compression::Gzip {
        let mut gz = MultiGzDecoder::new(&mut reader);
        drain(&mut gz, &mut diff)
            .map_err(|e| StoreError::Invalid(format!("V1 layer is not valid gzip: {e}")))?;
        // Any trailing bytes still belong to the blob.
        let mut rest = Sha256::new();
        drain(&mut reader, &mut rest)?;
    } else {
        drain(&mut reader, &mut diff)?;
    }
    let blob = Digest::from_sha256(&reader.hash.finalize());
    let diff_id = if compression == media::Compression::Gzip {
        Digest::from_sha256(&diff.finalize())
    } else {
        blob.clone()
    };
    Ok(Some(LayerInfo {
        blob,
        size: reader.count,
        diff_id,
        media_type: media_type.to_string(),
    }))
}

impl Store {
    /// The V2 form of a V1 top image: the recorded one, or generated now
    /// (and recorded, first writer wins).
    pub fn derive_from_v1(&self, top: &ImageId) -> StoreResult<DerivedRecord> {
        if let Some(rec) = self.derived(top)? {
            return Ok(rec);
        }
        self.require_published(top)?;
        let mut ids = self.read_ancestry(top)?;
        ids.reverse();
        let mut chain = Vec::with_capacity(ids.len());
        for id in ids {
            let id = ImageId::parse(&id).map_err(|e| {
                StoreError::Io(io::Error::other(format!("corrupt ancestry of {top}: {e}")))
            })?;
            self.require_published(&id)?;
            let json = fs::read(self.paths().image_json(&id))?;
            let layer = self.layer_info_of(&id)?;
            chain.push(V1Image { json, layer });
        }
        let (config, manifest) =
            translate::derive(&chain).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let config = self.put_small_blob(&config)?;
        let manifest = self.put_manifest(&manifest, media::DOCKER_MANIFEST)?;
        Ok(self.set_derived(top, &DerivedRecord { manifest, config })?)
    }

    /// Layer facts of a V1 image (cached), making sure the pool holds the
    /// bytes under their digest. `None` when the image has no layer bytes.
    fn layer_info_of(&self, id: &ImageId) -> StoreResult<Option<LayerInfo>> {
        let layer = self.paths().image_layer(id);
        let recorded = self.v1_layer_info(id)?;
        match &recorded {
            Some(info) if self.blob_size(&info.blob)?.is_some() => return Ok(recorded),
            None if !layer.exists() => return Ok(None),
            _ => {}
        }
        // No record yet; or the pool lacks the recorded blob: the layer
        // predates the pool (or links were impossible), or the record is
        // stale (it outlived an earlier image of this id). Measure the bytes,
        // and give the pool only the inode measured.
        let file = File::open(&layer)?;
        let Some(measured) = layer_facts(&file)? else {
            return Ok(None);
        };
        if recorded.as_ref() != Some(&measured) {
            if let Some(info) = &recorded {
                tracing::warn!(image = %id, recorded = %info.blob, measured = %measured.blob,
                    "a V1 layer record did not match the layer's bytes; recorded again");
            }
            self.set_v1_layer_info(id, &measured)?;
        }
        if self.blob_size(&measured.blob)?.is_none() {
            self.add_measured_to_pool(&layer, &file, &measured.blob)?;
        }
        Ok(Some(measured))
    }

    /// Names in the pool, as `digest`, the bytes of `file` (open at `path`,
    /// just measured): a hard link of `path` when it is still that inode,
    /// else a copy from `file` itself. The link is made under a temporary
    /// name and checked there, so the digest's name is only ever given to
    /// the inode measured (a layer replaced between the check and the link
    /// never sits under it, not even for the moment a check takes).
    fn add_measured_to_pool(&self, path: &Path, file: &File, digest: &Digest) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        let dest = self.paths().blob(digest);
        let dir = self.paths().blobs_dir(digest.algorithm());
        super::atomic::create_dirs(&dir)?;
        let measured = file.metadata()?;
        let same_inode = |m: &fs::Metadata| m.dev() == measured.dev() && m.ino() == measured.ino();
        let temp = super::atomic::temp_path(&dir, "measured");
        if fs::hard_link(path, &temp).is_ok() {
            // `None`: replaced before the link, not what was measured.
            let named = fs::metadata(&temp)
                .is_ok_and(|m| same_inode(&m))
                .then(|| fs::hard_link(&temp, &dest));
            let _ = fs::remove_file(&temp);
            match named {
                Some(Ok(())) => return sync_parent(&dest),
                Some(Err(e)) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                _ => {} // not what was measured, or no hard links here: copy
            }
        }
        let mut copy = TempFile::new_in(&dir, "blob")?;
        let mut from = file;
        io::Seek::rewind(&mut from)?;
        io::copy(&mut from, copy.file())?;
        copy.commit(&dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use flate2::write::GzEncoder;
    use http_body_util::Full;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    async fn v1_push(store: &Store, id: &ImageId, json: String, layer: Vec<u8>) {
        store.put_image_json(id, json.as_bytes(), "test").unwrap();
        store
            .put_image_layer(id, Full::new(Bytes::from(layer)), "test")
            .await
            .unwrap();
        let sums = store.stored_checksums(id).unwrap();
        store.put_image_checksum(id, &sums[0], "test").unwrap();
    }

    #[tokio::test]
    async fn derives_once_and_keeps_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = ImageId::parse(&"a".repeat(64)).unwrap();
        let b = ImageId::parse(&"b".repeat(64)).unwrap();
        let tar_a = vec![7u8; 2048];
        let gz_a = gz(&tar_a);
        v1_push(&store, &a, format!(r#"{{"id":"{a}"}}"#), gz_a.clone()).await;
        let tar_b = vec![9u8; 1024];
        v1_push(
            &store,
            &b,
            format!(r#"{{"id":"{b}","parent":"{a}","os":"linux"}}"#),
            tar_b.clone(),
        )
        .await;
        let rec = store.derive_from_v1(&b).unwrap();
        let (mt, bytes) = store.manifest(&rec.manifest).unwrap().unwrap();
        assert_eq!(mt, media::DOCKER_MANIFEST);
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(m["layers"][0]["digest"], Digest::of_bytes(&gz_a).as_str());
        assert_eq!(m["layers"][0]["mediaType"], media::DOCKER_LAYER_GZIP);
        assert_eq!(m["layers"][1]["mediaType"], media::DOCKER_LAYER_TAR);
        let config = fs::read(store.paths().blob(&rec.config)).unwrap();
        let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(
            c["rootfs"]["diff_ids"],
            serde_json::json!([
                Digest::of_bytes(&tar_a).as_str(),
                Digest::of_bytes(&tar_b).as_str()
            ])
        );
        // Recorded: a second call (or another process) gets the same digests.
        assert_eq!(store.derive_from_v1(&b).unwrap(), rec);
        fs::remove_file(store.paths().v1_layer_info(&a)).unwrap();
        fs::remove_file(store.paths().derived(&b)).unwrap();
        assert_eq!(store.derive_from_v1(&b).unwrap(), rec);
    }

    /// A layer record can outlive its image (gc removes the image first; a
    /// quarantined image keeps it) and the id be pushed again with other
    /// bytes. When the pool lacks the recorded blob, deriving must not link
    /// the layer file under the recorded digest unverified: a later upload
    /// of the true bytes would then meet that name and link the impostor.
    #[tokio::test]
    async fn a_stale_layer_record_never_names_other_bytes_in_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = ImageId::parse(&"c".repeat(64)).unwrap();
        let first = gz(&[1u8; 3000]);
        let now = gz(&[2u8; 3000]);
        v1_push(&store, &a, format!(r#"{{"id":"{a}"}}"#), now.clone()).await;
        let stale = LayerInfo {
            blob: Digest::of_bytes(&first),
            size: first.len() as u64,
            diff_id: Digest::of_bytes(&[1u8; 3000]),
            media_type: media::DOCKER_LAYER_GZIP.to_string(),
        };
        store.set_v1_layer_info(&a, &stale).unwrap();
        fs::remove_file(store.paths().derived(&a)).ok();

        let rec = store.derive_from_v1(&a).unwrap();
        if let Ok(bytes) = fs::read(store.paths().blob(&stale.blob)) {
            assert_eq!(bytes, first, "the pool names other bytes {}", stale.blob);
        }
        let (_, manifest) = store.manifest(&rec.manifest).unwrap().unwrap();
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let named = Digest::parse(m["layers"][0]["digest"].as_str().unwrap()).unwrap();
        assert_eq!(
            named,
            Digest::of_bytes(&now),
            "the manifest names the layer's bytes"
        );
        assert_eq!(fs::read(store.paths().blob(&named)).unwrap(), now);
    }
}
