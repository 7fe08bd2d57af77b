//! What a manifest references, read from its JSON bytes: the config and
//! layer blobs of an image manifest (schema 2, OCI, and schema 1's
//! `fsLayers`), the child manifests of an index, and the `subject` of an
//! OCI 1.1 artifact. One function for every side that walks manifests
//! (`berth sync` copies what a manifest references; the server's checks
//! and garbage collection keep it), so they cannot disagree on what a
//! manifest holds on to.
//!
//! Digests are returned as written; parsing and checking them is the
//! caller's (berth-transport knows no digest type).

use serde_json::Value;

/// A descriptor a manifest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The `digest` (or schema 1's `blobSum`) as written.
    pub digest: String,
    /// The `size`, when the manifest gives one (schema 1 does not).
    pub size: Option<u64>,
    /// The `mediaType`, when the manifest gives one.
    pub media_type: Option<String>,
}

/// Everything one manifest references, in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestRefs {
    /// The image config (`config`), for an image manifest.
    pub config: Option<Descriptor>,
    /// The layers (`layers`, then schema 1's `fsLayers`).
    pub layers: Vec<Descriptor>,
    /// The child manifests of an index (`manifests`).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one is about (`subject`, OCI 1.1 referrers).
    pub subject: Option<Descriptor>,
}

impl ManifestRefs {
    /// The blobs: the config, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(&self.layers)
    }
}

/// Why a manifest's references could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefsError {
    /// The bytes are not a JSON document.
    #[error("manifest is not JSON: {0}")]
    NotJson(String),
    /// A descriptor's digest is missing or not a string; the field's JSON
    /// text (`null` when absent).
    #[error("bad digest {0} in manifest")]
    BadDigest(String),
}

/// Reads what the manifest `bytes` reference.
pub fn manifest_refs(bytes: &[u8]) -> Result<ManifestRefs, RefsError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| RefsError::NotJson(e.to_string()))?;
    let mut refs = ManifestRefs::default();
    for c in v["manifests"].as_array().into_iter().flatten() {
        refs.manifests.push(descriptor(c, "digest")?);
    }
    if v["config"].is_object() {
        refs.config = Some(descriptor(&v["config"], "digest")?);
    }
    for l in v["layers"].as_array().into_iter().flatten() {
        refs.layers.push(descriptor(l, "digest")?);
    }
    // Schema 1 manifests name their layers in fsLayers.
    for l in v["fsLayers"].as_array().into_iter().flatten() {
        refs.layers.push(descriptor(l, "blobSum")?);
    }
    if v["subject"].is_object() {
        refs.subject = Some(descriptor(&v["subject"], "digest")?);
    }
    Ok(refs)
}

fn descriptor(d: &Value, field: &str) -> Result<Descriptor, RefsError> {
    let digest = d[field]
        .as_str()
        .ok_or_else(|| RefsError::BadDigest(d[field].to_string()))?;
    Ok(Descriptor {
        digest: digest.to_string(),
        size: d["size"].as_u64(),
        media_type: d["mediaType"].as_str().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(digest: &str, size: Option<u64>, media_type: Option<&str>) -> Descriptor {
        Descriptor {
            digest: digest.to_string(),
            size,
            media_type: media_type.map(str::to_string),
        }
    }

    #[test]
    fn an_image_manifest_references_its_config_layers_and_subject() {
        let m = br#"{"schemaVersion":2,
            "config":{"mediaType":"c","digest":"sha256:c","size":1},
            "layers":[{"mediaType":"l","digest":"sha256:l0","size":2},{"digest":"sha256:l1","size":3}],
            "subject":{"mediaType":"m","digest":"sha256:s","size":4}}"#;
        let refs = manifest_refs(m).unwrap();
        assert_eq!(refs.config, Some(d("sha256:c", Some(1), Some("c"))));
        assert_eq!(
            refs.layers,
            vec![
                d("sha256:l0", Some(2), Some("l")),
                d("sha256:l1", Some(3), None)
            ]
        );
        assert_eq!(refs.subject, Some(d("sha256:s", Some(4), Some("m"))));
        assert!(refs.manifests.is_empty());
        let blobs: Vec<&str> = refs.blobs().map(|b| b.digest.as_str()).collect();
        assert_eq!(blobs, ["sha256:c", "sha256:l0", "sha256:l1"]);
    }

    #[test]
    fn an_index_references_its_manifests_and_schema1_its_blob_sums() {
        let index = br#"{"manifests":[{"digest":"sha256:a","size":5},{"digest":"sha256:b"}]}"#;
        let refs = manifest_refs(index).unwrap();
        assert_eq!(
            refs.manifests,
            vec![d("sha256:a", Some(5), None), d("sha256:b", None, None)]
        );
        assert_eq!(refs.config, None);
        let schema1 = br#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:x"}]}"#;
        assert_eq!(
            manifest_refs(schema1).unwrap().layers,
            vec![d("sha256:x", None, None)]
        );
    }

    #[test]
    fn broken_manifests_are_refused() {
        assert!(matches!(manifest_refs(b"nope"), Err(RefsError::NotJson(_))));
        assert_eq!(
            manifest_refs(br#"{"layers":[{"size":1}]}"#),
            Err(RefsError::BadDigest("null".to_string()))
        );
        assert_eq!(
            manifest_refs(br#"{"manifests":[{"digest":7}]}"#)
                .unwrap_err()
                .to_string(),
            "bad digest 7 in manifest"
        );
    }
}
