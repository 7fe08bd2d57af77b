//! V1 ↔ V2 translation as pure functions over bytes and JSON values
//! (`v2-compat.md` §2.3, §2.5, §2.6). No I/O here: `store::projection` and
//! `store::derive` feed these from the store and write the results.
//!
//! * V2 → V1: the schema1-builder id scheme (§2.3): walking the config's
//!   history oldest first, a non-top step gets
//!   `sha256(hex(blob) + " " + parent)`, the top step
//!   `sha256(hex(blob) + " " + parent + " " + raw config)`.
//! * V1 → V2: a config from the top V1 json plus `rootfs`/`history`, and a
//!   schema2 manifest, serialised with sorted keys and no whitespace so the
//!   same input always gives the same digests (§2.5 step 5).

use std::collections::BTreeMap;

use berth_transport::manifest_refs::{manifest_refs, ManifestRef, RefKind};
use serde_json::{json, Map, Value};

use super::manifests::LayerInfo;
use super::media;
use crate::names::{Digest, ImageId};

/// Why a translation could not be made (the input is not a usable image).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The manifest, config or V1 json does not have the needed shape.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(m.into())
}

/// A blob a manifest references: enough to check it and to project it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Its digest.
    pub digest: Digest,
    /// Its declared size.
    pub size: u64,
    /// Its declared media type.
    pub media_type: String,
}

/// A descriptor [`manifest_refs`] found, checked: it must name a valid digest.
fn descriptor(r: &ManifestRef<'_>) -> Result<Descriptor, TranslateError> {
    let digest = r
        .digest()
        .ok_or_else(|| invalid("descriptor without digest"))?;
    let digest = Digest::parse(digest).map_err(|e| invalid(e.to_string()))?;
    Ok(Descriptor {
        digest,
        size: r.size().unwrap_or(0),
        media_type: r.media_type().to_string(),
    })
}

/// The config and layer descriptors of an image manifest (found by
/// [`manifest_refs`], like every reading of what a manifest references).
pub fn image_parts(manifest: &Value) -> Result<(Descriptor, Vec<Descriptor>), TranslateError> {
    let config = descriptor(&ManifestRef {
        kind: RefKind::Config,
        descriptor: manifest
            .get("config")
            .ok_or_else(|| invalid("manifest has no config"))?,
    })?;
    if !matches!(
        manifest.get("layers"),
        None | Some(Value::Null) | Some(Value::Array(_))
    ) {
        return Err(invalid("manifest layers is not an array"));
    }
    let layers = manifest_refs(manifest)
        .iter()
        .filter(|r| r.kind == RefKind::Layer)
        .map(descriptor)
        .collect::<Result<_, _>>()?;
    Ok((config, layers))
}

/// The child descriptors of an index / manifest list, with their platforms.
pub fn index_children(index: &Value) -> Result<Vec<(Descriptor, Value)>, TranslateError> {
    if !matches!(index.get("manifests"), Some(Value::Array(_))) {
        return Err(invalid("index has no manifests array"));
    }
    manifest_refs(index)
        .iter()
        .filter(|r| r.kind == RefKind::Child)
        .map(|r| {
            Ok((
                descriptor(r)?,
                r.descriptor.get("platform").cloned().unwrap_or(Value::Null),
            ))
        })
        .collect()
}

/// The child of an index projected to V1: linux/amd64 if present, else the
/// first child that is not an attestation (`unknown/unknown`) (§2.6 step 1).
pub fn default_platform_child(index: &Value) -> Result<Option<Descriptor>, TranslateError> {
    let children = index_children(index)?;
    let field = |p: &Value, k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if let Some((d, _)) = children
        .iter()
        .find(|(_, p)| field(p, "os") == "linux" && field(p, "architecture") == "amd64")
    {
        return Ok(Some(d.clone()));
    }
    Ok(children
        .into_iter()
        .find(|(d, p)| {
            media::manifest_kind(&d.media_type) == Some(media::ManifestKind::Image)
                && field(p, "os") != "unknown"
        })
        .map(|(d, _)| d))
}

/// One V1 image of a projected V2 image, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Step {
    /// The derived V1 id.
    pub id: ImageId,
    /// Its parent (the previous step), if any.
    pub parent: Option<ImageId>,
    /// The pool blob that is its layer (the empty gzip tar for empty steps).
    pub blob: Digest,
    /// Size of that blob.
    pub size: u64,
    /// Media type of that blob's descriptor.
    pub media_type: String,
    /// diff_id of the layer, from `rootfs.diff_ids` (empty tar for empty steps).
    pub diff_id: Option<Digest>,
    /// The V1 json bytes.
    pub json: Vec<u8>,
}

fn sha_hex(s: &[u8]) -> ImageId {
    let d = Digest::of_bytes(s);
    ImageId::parse(d.hex()).expect("sha256 hex is a valid V1 id")
}

fn to_sorted_bytes(map: Map<String, Value>) -> Vec<u8> {
    let sorted: BTreeMap<String, Value> = map.into_iter().collect();
    serde_json::to_vec(&sorted).expect("JSON values serialise")
}

/// Projects an image (raw config bytes + layer descriptors) to V1 steps with
/// the schema1-builder ids (§2.3). Falls back to one V1 image per layer with
/// synthesized history when the history does not match the layers.
pub fn project(config_bytes: &[u8], layers: &[Descriptor]) -> Result<Vec<V1Step>, TranslateError> {
    let plan = Projection::plan(config_bytes, layers)?;
    plan.steps(|step, _| Ok::<_, std::convert::Infallible>(step))
        .map_err(|never| match never {})
}

/// Builds the json of a step under a given id (the id is part of the json).
pub type Rebuild<'a> = &'a dyn Fn(ImageId) -> V1Step;

/// One history entry of a projected image and the layer it stands for.
#[derive(Debug, Clone)]
struct Recipe {
    history: Value,
    empty: bool,
    blob: Digest,
    size: u64,
    media_type: String,
    diff_id: Option<Digest>,
}

/// A V2 image ready to be projected to V1: everything but the ids, which
/// are settled one step at a time (a child's id and json name its parent's).
#[derive(Debug, Clone)]
pub struct Projection {
    config: Map<String, Value>,
    config_bytes: Vec<u8>,
    recipes: Vec<Recipe>,
}

impl Projection {
    /// Checks that the config can be projected and lines history up with
    /// the layers (falling back to one V1 image per layer).
    pub fn plan(config_bytes: &[u8], layers: &[Descriptor]) -> Result<Projection, TranslateError> {
        let config: Value =
            serde_json::from_slice(config_bytes).map_err(|e| invalid(format!("config: {e}")))?;
        let obj = config
            .as_object()
            .ok_or_else(|| invalid("config is not an object"))?;
        let diff_ids: Vec<Option<Digest>> = obj
            .get("rootfs")
            .and_then(|r| r.get("diff_ids"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().and_then(|s| Digest::parse(s).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let mut history: Vec<Value> = obj
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let is_empty = |h: &Value| h.get("empty_layer").and_then(Value::as_bool) == Some(true);
        let non_empty = history.iter().filter(|h| !is_empty(h)).count();
        if history.is_empty() || non_empty != layers.len() {
            let created = obj.get("created").cloned().unwrap_or(Value::Null);
            history = layers
                .iter()
                .map(|_| json!({ "created": created }))
                .collect();
        }
        if history.is_empty() {
            return Err(invalid("image has neither layers nor history"));
        }
        let empty_blob = Digest::parse(media::EMPTY_GZIP_TAR_DIGEST).expect("constant digest");
        let empty_diff = Digest::parse(media::EMPTY_TAR_DIFF_ID).expect("constant digest");
        let mut layer_index = 0;
        let recipes = history
            .into_iter()
            .map(|h| {
                let empty = is_empty(&h);
                let (blob, size, media_type, diff_id) = if empty {
                    (
                        empty_blob.clone(),
                        media::EMPTY_GZIP_TAR.len() as u64,
                        media::DOCKER_LAYER_GZIP.to_string(),
                        Some(empty_diff.clone()),
                    )
                } else {
                    let l = &layers[layer_index];
                    let diff = diff_ids.get(layer_index).cloned().flatten();
                    layer_index += 1;
                    (l.digest.clone(), l.size, l.media_type.clone(), diff)
                };
                Recipe {
                    history: h,
                    empty,
                    blob,
                    size,
                    media_type,
                    diff_id,
                }
            })
            .collect();
        Ok(Projection {
            config: obj.clone(),
            config_bytes: config_bytes.to_vec(),
            recipes,
        })
    }

    /// Whether a step stands for an empty layer (its blob is the empty gzip tar).
    pub fn uses_empty_layer(&self) -> bool {
        self.recipes.iter().any(|r| r.empty)
    }

    /// The V1 steps, oldest first. Each step is offered to `settle` with
    /// its schema1-builder id; `settle` returns it, or the same step under
    /// another id (built with the [`Rebuild`] it is given), and the next
    /// step's id and `parent` follow from what it returned.
    pub fn steps<E>(
        &self,
        mut settle: impl FnMut(V1Step, Rebuild<'_>) -> Result<V1Step, E>,
    ) -> Result<Vec<V1Step>, E> {
        let mut steps: Vec<V1Step> = Vec::with_capacity(self.recipes.len());
        for i in 0..self.recipes.len() {
            let parent = steps.last().map(|s| s.id.clone());
            let rebuild = |id: ImageId| self.build(i, id, parent.clone());
            let candidate = rebuild(self.schema1_id(i, parent.as_ref()));
            steps.push(settle(candidate, &rebuild)?);
        }
        Ok(steps)
    }

    /// The schema1-builder id of step `i` under `parent` (§2.3).
    fn schema1_id(&self, i: usize, parent: Option<&ImageId>) -> ImageId {
        let blob = &self.recipes[i].blob;
        let parent_text = parent.map(ImageId::as_str).unwrap_or("");
        if i == self.recipes.len() - 1 {
            let mut seed = format!("{} {} ", blob.hex(), parent_text).into_bytes();
            seed.extend_from_slice(&self.config_bytes);
            sha_hex(&seed)
        } else {
            sha_hex(format!("{} {}", blob.hex(), parent_text).as_bytes())
        }
    }

    /// Step `i` with the given id and parent.
    fn build(&self, i: usize, id: ImageId, parent: Option<ImageId>) -> V1Step {
        let r = &self.recipes[i];
        let h = &r.history;
        let json = if i == self.recipes.len() - 1 {
            let mut m = self.config.clone();
            m.remove("rootfs");
            m.remove("history");
            m.insert("id".into(), json!(id.as_str()));
            if let Some(p) = &parent {
                m.insert("parent".into(), json!(p.as_str()));
            }
            if r.empty {
                m.insert("throwaway".into(), json!(true));
            }
            to_sorted_bytes(m)
        } else {
            // Field order of distribution's v1Compatibility struct.
            let mut m = Map::new();
            m.insert("id".into(), json!(id.as_str()));
            if let Some(p) = &parent {
                m.insert("parent".into(), json!(p.as_str()));
            }
            for key in ["comment"] {
                if let Some(v) = h.get(key).filter(|v| v.as_str() != Some("")) {
                    m.insert(key.into(), v.clone());
                }
            }
            m.insert(
                "created".into(),
                h.get("created")
                    .cloned()
                    .unwrap_or(json!("0001-01-01T00:00:00Z")),
            );
            let cmd = h.get("created_by").and_then(Value::as_str).unwrap_or("");
            m.insert("container_config".into(), json!({ "Cmd": [cmd] }));
            if let Some(v) = h.get("author").filter(|v| v.as_str() != Some("")) {
                m.insert("author".into(), v.clone());
            }
            if r.empty {
                m.insert("throwaway".into(), json!(true));
            }
            serde_json::to_vec(&Value::Object(m)).expect("serialises")
        };
        V1Step {
            id,
            parent,
            blob: r.blob.clone(),
            size: r.size,
            media_type: r.media_type.clone(),
            diff_id: r.diff_id.clone(),
            json,
        }
    }
}

/// One V1 image on the way to V2: its json and, unless it adds no files, its layer.
#[derive(Debug, Clone)]
pub struct V1Image {
    /// The stored V1 json bytes.
    pub json: Vec<u8>,
    /// The layer facts; `None` for throwaway / empty layers.
    pub layer: Option<LayerInfo>,
}

/// Builds the config and schema2 manifest of a V1 chain (root first) (§2.5).
/// Returns `(config bytes, manifest bytes)`.
pub fn derive(chain: &[V1Image]) -> Result<(Vec<u8>, Vec<u8>), TranslateError> {
    let top = chain.last().ok_or_else(|| invalid("empty V1 chain"))?;
    let top: Value =
        serde_json::from_slice(&top.json).map_err(|e| invalid(format!("V1 json: {e}")))?;
    let mut config = top
        .as_object()
        .cloned()
        .ok_or_else(|| invalid("V1 json is not an object"))?;
    for key in ["id", "parent", "Size", "parent_id", "layer_id", "throwaway"] {
        config.remove(key);
    }
    let mut history = Vec::with_capacity(chain.len());
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for img in chain {
        let v: Value =
            serde_json::from_slice(&img.json).map_err(|e| invalid(format!("V1 json: {e}")))?;
        let mut h = Map::new();
        for key in ["created", "author"] {
            if let Some(x) = v
                .get(key)
                .filter(|x| !x.is_null() && x.as_str() != Some(""))
            {
                h.insert(key.into(), x.clone());
            }
        }
        if let Some(cmd) = v
            .get("container_config")
            .and_then(|c| c.get("Cmd"))
            .and_then(Value::as_array)
        {
            let words: Vec<&str> = cmd.iter().filter_map(Value::as_str).collect();
            h.insert("created_by".into(), json!(words.join(" ")));
        }
        if let Some(x) = v
            .get("comment")
            .filter(|x| x.as_str().is_some_and(|s| !s.is_empty()))
        {
            h.insert("comment".into(), x.clone());
        }
        let throwaway = v.get("throwaway").and_then(Value::as_bool) == Some(true);
        match (&img.layer, throwaway) {
            (Some(layer), false) => {
                diff_ids.push(json!(layer.diff_id.as_str()));
                layers.push(json!({
                    "mediaType": layer.media_type,
                    "size": layer.size,
                    "digest": layer.blob.as_str(),
                }));
            }
            _ => {
                h.insert("empty_layer".into(), json!(true));
            }
        }
        history.push(Value::Object(h));
    }
    if layers.is_empty() {
        return Err(invalid("V1 image has no layer data"));
    }
    let arch_missing = config
        .get("architecture")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if arch_missing {
        config.insert("architecture".into(), json!("amd64"));
    }
    let os_missing = config
        .get("os")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if os_missing {
        config.insert("os".into(), json!("linux"));
    }
    config.insert(
        "rootfs".into(),
        json!({ "type": "layers", "diff_ids": diff_ids }),
    );
    config.insert("history".into(), Value::Array(history));
    let config_bytes = to_sorted_bytes(config);
    let mut manifest = Map::new();
    manifest.insert("schemaVersion".into(), json!(2));
    manifest.insert("mediaType".into(), json!(media::DOCKER_MANIFEST));
    manifest.insert(
        "config".into(),
        json!({
            "mediaType": media::DOCKER_CONFIG,
            "size": config_bytes.len(),
            "digest": Digest::of_bytes(&config_bytes).as_str(),
        }),
    );
    manifest.insert("layers".into(), Value::Array(layers));
    let manifest_bytes = serde_json::to_vec(&Value::Object(manifest)).expect("serialises");
    Ok((config_bytes, manifest_bytes))
}

/// The descriptor media type for stored layer bytes of a given compression
/// (schema2 has no zstd type: such layers cannot be derived).
pub fn layer_media_type(c: media::Compression) -> Option<&'static str> {
    match c {
        media::Compression::Gzip => Some(media::DOCKER_LAYER_GZIP),
        media::Compression::None => Some(media::DOCKER_LAYER_TAR),
        media::Compression::Zstd => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(b: &[u8]) -> Descriptor {
        Descriptor {
            digest: Digest::of_bytes(b),
            size: b.len() as u64,
            media_type: media::DOCKER_LAYER_GZIP.into(),
        }
    }

    #[test]
    fn schema1_builder_ids() {
        let l0 = layer(b"l0");
        let config = br#"{"architecture":"amd64","os":"linux","created":"2020-01-01T00:00:00Z","history":[{"created":"2020-01-01T00:00:00Z","created_by":"ADD x /"},{"created":"2020-01-02T00:00:00Z","created_by":"ENV A=1","empty_layer":true}],"rootfs":{"type":"layers","diff_ids":["sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"]}}"#;
        let steps = project(config, std::slice::from_ref(&l0)).unwrap();
        assert_eq!(steps.len(), 2);
        // root: sha256(hex(blob) + " ") — the string ends in a single space.
        let root = sha_hex(format!("{} ", l0.digest.hex()).as_bytes());
        assert_eq!(steps[0].id, root);
        assert_eq!(steps[0].parent, None);
        assert_eq!(steps[0].blob, l0.digest);
        let j: Value = serde_json::from_slice(&steps[0].json).unwrap();
        assert_eq!(j["container_config"]["Cmd"], json!(["ADD x /"]));
        assert!(j.get("parent").is_none());
        // top: empty step, blob = empty gzip, id hashes the raw config.
        let mut seed = format!("{} {} ", &media::EMPTY_GZIP_TAR_DIGEST[7..], root).into_bytes();
        seed.extend_from_slice(config);
        assert_eq!(steps[1].id, sha_hex(&seed));
        assert_eq!(steps[1].blob.as_str(), media::EMPTY_GZIP_TAR_DIGEST);
        let top: Value = serde_json::from_slice(&steps[1].json).unwrap();
        assert_eq!(top["parent"], json!(root.as_str()));
        assert_eq!(top["throwaway"], json!(true));
        assert!(top.get("rootfs").is_none() && top.get("history").is_none());
        assert_eq!(top["os"], "linux");
        // Deterministic.
        assert_eq!(project(config, std::slice::from_ref(&l0)).unwrap(), steps);
        // Settling the root under another id carries that id into the
        // root's json and the child's parent, id and json.
        let other = sha_hex(b"other");
        let plan = Projection::plan(config, &[l0]).unwrap();
        let moved = plan
            .steps(|step, rebuild| {
                Ok::<_, ()>(if step.parent.is_none() {
                    rebuild(other.clone())
                } else {
                    step
                })
            })
            .unwrap();
        assert_eq!(moved[0].id, other);
        let j: Value = serde_json::from_slice(&moved[0].json).unwrap();
        assert_eq!(j["id"], json!(other.as_str()));
        assert_eq!(moved[0].blob, steps[0].blob);
        assert_eq!(moved[1].parent.as_ref(), Some(&other));
        let mut seed = format!("{} {} ", &media::EMPTY_GZIP_TAR_DIGEST[7..], other).into_bytes();
        seed.extend_from_slice(config);
        assert_eq!(moved[1].id, sha_hex(&seed));
        let top: Value = serde_json::from_slice(&moved[1].json).unwrap();
        assert_eq!(top["parent"], json!(other.as_str()));
    }

    #[test]
    fn history_mismatch_falls_back_to_one_image_per_layer() {
        let config =
            br#"{"created":"2021-01-01T00:00:00Z","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let steps = project(config, &[layer(b"a"), layer(b"b")]).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].parent.as_ref(), Some(&steps[0].id));
        assert_eq!(steps[1].blob, Digest::of_bytes(b"b"));
        assert!(project(b"[]", &[]).is_err());
        assert!(project(b"{}", &[]).is_err());
    }

    fn info(b: &[u8]) -> LayerInfo {
        LayerInfo {
            blob: Digest::of_bytes(b),
            size: b.len() as u64,
            diff_id: Digest::of_bytes(b"diff"),
            media_type: media::DOCKER_LAYER_GZIP.into(),
        }
    }

    #[test]
    fn derive_v1_chain() {
        let root = V1Image {
            json: br##"{"id":"aa","created":"2014-01-01T00:00:00Z","container_config":{"Cmd":["/bin/sh","-c","#(nop) ADD file"]}}"##.to_vec(),
            layer: Some(info(b"root")),
        };
        let mid = V1Image {
            json: br#"{"id":"bb","parent":"aa","throwaway":true}"#.to_vec(),
            layer: None,
        };
        let top = V1Image {
            json: br#"{"id":"cc","parent":"bb","Size":3,"config":{"Cmd":["sh"]},"author":"me"}"#
                .to_vec(),
            layer: Some(info(b"top")),
        };
        let (config, manifest) = derive(&[root.clone(), mid.clone(), top.clone()]).unwrap();
        let c: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["architecture"], "amd64");
        assert_eq!(c["os"], "linux");
        assert!(c.get("id").is_none() && c.get("parent").is_none() && c.get("Size").is_none());
        assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        let h = c["history"].as_array().unwrap();
        assert_eq!(h[0]["created_by"], "/bin/sh -c #(nop) ADD file");
        assert_eq!(h[1]["empty_layer"], true);
        assert_eq!(h[2]["author"], "me");
        let m: Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["mediaType"], media::DOCKER_MANIFEST);
        assert_eq!(m["config"]["digest"], Digest::of_bytes(&config).as_str());
        assert_eq!(m["layers"][1]["digest"], Digest::of_bytes(b"top").as_str());
        // Same input, same bytes (the digest must never move).
        // No whitespace.
        assert!(!manifest.contains(&b' '));
        assert_eq!(derive(&[root, mid, top]).unwrap(), (config, manifest));
    }

    #[test]
    fn index_default_child() {
        let a = Digest::of_bytes(b"arm");
        let x = Digest::of_bytes(b"amd");
        let att = Digest::of_bytes(b"att");
        let idx = json!({"manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": att.as_str(), "size": 1, "platform": {"os":"unknown","architecture":"unknown"}},
            {"mediaType": media::OCI_MANIFEST, "digest": a.as_str(), "size": 1, "platform": {"os":"linux","architecture":"arm64"}},
            {"mediaType": media::OCI_MANIFEST, "digest": x.as_str(), "size": 1, "platform": {"os":"linux","architecture":"amd64"}},
        ]});
        assert_eq!(default_platform_child(&idx).unwrap().unwrap().digest, x);
        let idx = json!({"manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": att.as_str(), "size": 1, "platform": {"os":"unknown","architecture":"unknown"}},
            {"mediaType": media::OCI_MANIFEST, "digest": a.as_str(), "size": 1, "platform": {"os":"linux","architecture":"arm64"}},
        ]});
        assert_eq!(default_platform_child(&idx).unwrap().unwrap().digest, a);
        assert!(default_platform_child(&json!({})).is_err());
    }
}
