//! What a manifest references: the one reading of a manifest or index's
//! JSON for the descriptors it names, shared by the server (gc, fsck, blob
//! links, V1 projection) and the client (copying an image between
//! registries), so the two never disagree about what an image consists of.
//!
//! It only finds descriptors; what to do with a malformed one (skip it,
//! refuse the manifest) is the caller's policy, and digests stay strings
//! here (each side validates them with its own type).

use serde_json::Value;

/// The role of a descriptor in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// An image manifest's `config`.
    Config,
    /// An entry of an image manifest's `layers`.
    Layer,
    /// An entry of an index's (manifest list's) `manifests`: a child manifest.
    Child,
    /// An entry of a Docker schema 1 manifest's `fsLayers` (digest in `blobSum`).
    Schema1Layer,
}

/// One descriptor a manifest names, borrowed from the parsed JSON.
#[derive(Debug, Clone, Copy)]
pub struct ManifestRef<'a> {
    /// Its role.
    pub kind: RefKind,
    /// The descriptor object itself (for fields such as `platform` or `urls`).
    pub descriptor: &'a Value,
}

impl<'a> ManifestRef<'a> {
    /// The digest it names (`blobSum` for schema 1 layers); `None` when
    /// missing or not a string.
    pub fn digest(&self) -> Option<&'a str> {
        let key = match self.kind {
            RefKind::Schema1Layer => "blobSum",
            _ => "digest",
        };
        self.descriptor.get(key).and_then(Value::as_str)
    }

    /// Its declared size, when given as an unsigned integer.
    pub fn size(&self) -> Option<u64> {
        self.descriptor.get("size").and_then(Value::as_u64)
    }

    /// Its declared media type (`""` when absent).
    pub fn media_type(&self) -> &'a str {
        self.descriptor
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Every descriptor `manifest` names, in document order by role: the
/// `config` (when the key is present and not null), then `layers`, then
/// `manifests` (children), then schema 1 `fsLayers`. Fields of the wrong
/// shape (a `layers` that is not an array) name nothing. A referrer's
/// `subject` is not a reference: it does not keep its subject alive.
pub fn manifest_refs(manifest: &Value) -> Vec<ManifestRef<'_>> {
    let mut out = Vec::new();
    if let Some(config) = manifest.get("config").filter(|c| !c.is_null()) {
        out.push(ManifestRef {
            kind: RefKind::Config,
            descriptor: config,
        });
    }
    for (key, kind) in [
        ("layers", RefKind::Layer),
        ("manifests", RefKind::Child),
        ("fsLayers", RefKind::Schema1Layer),
    ] {
        for descriptor in manifest
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(ManifestRef { kind, descriptor });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_every_descriptor_by_role() {
        let m = json!({
            "config": {"digest": "sha256:c", "size": 2, "mediaType": "cfg"},
            "layers": [{"digest": "sha256:l1"}, {"size": 3}],
            "subject": {"digest": "sha256:s"},
        });
        let refs = manifest_refs(&m);
        let seen: Vec<_> = refs.iter().map(|r| (r.kind, r.digest())).collect();
        assert_eq!(
            seen,
            vec![
                (RefKind::Config, Some("sha256:c")),
                (RefKind::Layer, Some("sha256:l1")),
                (RefKind::Layer, None),
            ]
        );
        assert_eq!(refs[0].size(), Some(2));
        assert_eq!(refs[0].media_type(), "cfg");
        assert_eq!(refs[1].media_type(), "");

        let index = json!({"manifests": [{"digest": "sha256:a", "platform": {"os": "linux"}}]});
        let refs = manifest_refs(&index);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, RefKind::Child);
        assert_eq!(refs[0].descriptor["platform"]["os"], "linux");

        let schema1 = json!({"fsLayers": [{"blobSum": "sha256:b"}]});
        let refs = manifest_refs(&schema1);
        assert_eq!(refs[0].kind, RefKind::Schema1Layer);
        assert_eq!(refs[0].digest(), Some("sha256:b"));
    }

    #[test]
    fn wrong_shapes_name_nothing() {
        assert!(manifest_refs(&json!({"config": null, "layers": {}})).is_empty());
        assert!(manifest_refs(&json!("not an object")).is_empty());
    }
}
