//! Manifest PUT's check of an image config against its layers (issue 17):
//! the config's `rootfs.diff_ids` must name, in order, the sha256 of each
//! layer's uncompressed bytes, as the store measured them
//! (`store::layer_facts`: the record, or computed here by streaming the
//! layer once). Otherwise the PUT is 400 `MANIFEST_INVALID` naming the
//! layer (index and digest) and what the config says, and nothing is
//! stored, linked or tagged: the store never holds an image whose config
//! lies about its layers, whichever client pushed it.
//!
//! Checked: image manifests whose config has an image config media type
//! (Docker or OCI) and a `rootfs` (a config without one claims nothing;
//! artifacts are not images). The number of diff_ids must equal the number
//! of layers. Skipped layers (their position still counts): non-distributable
//! ones (their bytes are elsewhere) and layers of a media type that is not a
//! plain, gzip or zstd tar (encrypted layers, say: the registry cannot read
//! them).

use serde_json::{json, Value};

use super::errors::{ErrorCode, OrV2, V2Error};
use crate::names::{Algorithm, Digest};
use crate::store::layer_facts::FactsError;
use crate::store::media;
use crate::store::translate::{self, Descriptor};
use crate::store::Store;

/// Largest config read to check (configs are small; a long history is a
/// few hundred KiB).
pub const MAX_CONFIG: u64 = 16 << 20;

/// OCI zstd layer (not in `media`: V1 clients cannot read it).
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Whether the registry can read a layer of this type to check it.
fn is_checkable_layer(media_type: &str) -> bool {
    media::is_v1_readable_layer(media_type) || media_type == OCI_LAYER_ZSTD
}

fn invalid(message: impl Into<String>) -> Vec<V2Error> {
    vec![V2Error::new(ErrorCode::ManifestInvalid, message)]
}

fn layer_error(
    index: usize,
    layer: &Descriptor,
    message: String,
    says: Option<&str>,
) -> Vec<V2Error> {
    vec![
        V2Error::new(ErrorCode::ManifestInvalid, message).detail(json!({
            "layer": index,
            "digest": layer.digest.as_str(),
            "config_diff_id": says,
        })),
    ]
}

/// Checks an image manifest's config against its layers (module doc).
/// Blocking: call from the blocking pool. Every referenced blob is
/// already known to be linked in the repository.
pub fn check(store: &Store, manifest: &Value) -> Result<(), Vec<V2Error>> {
    let (config, layers) = translate::image_parts(manifest).map_err(|e| invalid(e.to_string()))?;
    if !media::is_image_config(&config.media_type) {
        return Ok(());
    }
    let Some(diff_ids) = config_diff_ids(store, &config.digest)? else {
        return Ok(());
    };
    if diff_ids.len() != layers.len() {
        return Err(invalid(format!(
            "the config {} lists {} diff_ids for {} layers",
            config.digest,
            diff_ids.len(),
            layers.len()
        )));
    }
    for (index, (layer, says)) in layers.iter().zip(&diff_ids).enumerate() {
        if media::is_nondistributable(&layer.media_type) || !is_checkable_layer(&layer.media_type) {
            continue;
        }
        // A config names sha256 diff_ids, or (OCI 1.1) sha512 ones.
        let algorithm = Digest::parse(says)
            .map(|d| d.algorithm())
            .unwrap_or(Algorithm::Sha256);
        let actual = match store.uncompressed_digest(&layer.digest, algorithm) {
            Ok(Some(actual)) => actual,
            Ok(None) => {
                return Err(layer_error(
                    index,
                    layer,
                    format!("layer {index} ({}) is not in the store", layer.digest),
                    Some(says),
                ))
            }
            Err(FactsError::Corrupt(why)) => {
                return Err(layer_error(
                    index,
                    layer,
                    format!("layer {index} ({}) is {why}", layer.digest),
                    Some(says),
                ))
            }
            // Transient storage errors answer 503 + Retry-After (`errors.rs`).
            Err(FactsError::Io(e)) => return Err(vec![e.into()]),
        };
        if actual.as_str() != says {
            return Err(layer_error(
                index,
                layer,
                format!(
                    "layer {index} ({}) uncompresses to {}, but the config's rootfs.diff_ids[{index}] says {says}",
                    layer.digest, actual
                ),
                Some(says),
            ));
        }
    }
    Ok(())
}

/// The config's `rootfs.diff_ids`, or `None` when it has no `rootfs`.
fn config_diff_ids(store: &Store, config: &Digest) -> Result<Option<Vec<String>>, Vec<V2Error>> {
    let Some((file, size)) = store.open_blob(config).v2()? else {
        return Err(invalid(format!("config {config} is not in the store")));
    };
    if size > MAX_CONFIG {
        return Err(invalid(format!(
            "config {config} is {size} bytes, more than the {MAX_CONFIG} checked"
        )));
    }
    let value: Value = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
        if e.is_io() {
            // The storage failed, not the config (503 when transient).
            vec![std::io::Error::from(e).into()]
        } else {
            invalid(format!("config {config} is not JSON: {e}"))
        }
    })?;
    let Some(rootfs) = value.get("rootfs") else {
        return Ok(None);
    };
    let list = rootfs
        .get("diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("config {config}: rootfs.diff_ids is not a list")))?;
    list.iter()
        .map(|v| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                invalid(format!(
                    "config {config}: rootfs.diff_ids holds a non-string"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
