//! Pre-1.10 `docker save` archives: one directory per V1 image
//! (`<id>/json`, `<id>/layer.tar`, `<id>/VERSION`) and a `repositories`
//! file `{"name":{"tag":"<top id>"}}`, no `manifest.json`
//! (`v2-compat.md` §3.1).
//!
//! Each tag becomes a V2 image the way Docker's own legacy loader does it
//! (moby `image/tarexport/load.go` `legacyLoadImage` and
//! `image/v1/imagev1.go` `MakeConfigFromV1Config`): walk `parent` links to
//! the root, take every `layer.tar` as a layer (diff_id = sha256 of its
//! uncompressed bytes, computed before the push: unlike the other shapes,
//! nothing in the archive states it), build one history item per V1 image, and make the
//! config from the top image's json minus `id`, `parent`, `Size`,
//! `parent_id`, `layer_id`, `throwaway`, plus `rootfs` and `history`,
//! serialized as Go's `json.Marshal` does (sorted top-level keys, compact,
//! `<>&` escaped), so the image id matches what `docker load` computes.
//! Not reproduced: Docker's re-encoding of json written by Docker < 1.8.3.
//!
//! A 0-byte `layer.tar` (not a valid tar for every client) becomes the
//! 32-byte gzip empty tar (`v2-compat.md` §2.5).

use std::collections::BTreeMap;

use berth_server::names::Digest;
use berth_server::store::media;
use serde_json::{json, Map, Value};

use super::error::ArchiveError;
use super::members::{read_json, Members};
use super::reference::ImageRef;
use super::types::{synthesize_manifest, Blob, BlobData, Checks, Compression, Image};

/// Longest ancestry followed (Docker itself allowed 127 layers).
const MAX_DEPTH: usize = 1000;

/// The V1 keys `MakeConfigFromV1Config` drops.
const DROPPED: [&str; 6] = ["id", "parent", "Size", "parent_id", "layer_id", "throwaway"];

/// Builds one image per tag of `repositories`.
pub fn images(members: &Members) -> Result<Vec<Image>, ArchiveError> {
    let repos = read_json(members, "repositories", "pre-1.10 archive")?;
    let repos = repos
        .as_object()
        .ok_or_else(|| ArchiveError::metadata("repositories", "not a JSON object"))?;
    let mut by_top: BTreeMap<String, Vec<ImageRef>> = BTreeMap::new();
    for (name, tags) in repos {
        let tags = tags.as_object().ok_or_else(|| {
            ArchiveError::metadata("repositories", format!("{name:?}: not an object"))
        })?;
        for (tag, id) in tags {
            let id = id.as_str().ok_or_else(|| {
                ArchiveError::metadata("repositories", format!("{name}:{tag}: id is not a string"))
            })?;
            let r = ImageRef::parse(&format!("{name}:{tag}")).ok_or_else(|| {
                ArchiveError::metadata("repositories", format!("bad reference {name}:{tag}"))
            })?;
            by_top.entry(id.to_string()).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    for (top, refs) in by_top {
        let mut img = image(members, &top)?;
        img.refs = refs;
        out.push(img);
    }
    if out.is_empty() {
        return Err(ArchiveError::metadata("repositories", "no tags"));
    }
    Ok(out)
}

fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The V2 image of the V1 image `top` and its ancestry.
fn image(members: &Members, top: &str) -> Result<Image, ArchiveError> {
    let mut chain: Vec<(String, Value)> = Vec::new();
    let mut id = top.to_string();
    loop {
        if !valid_id(&id) {
            return Err(ArchiveError::metadata(
                "repositories",
                format!("bad V1 image id {id:?}"),
            ));
        }
        if chain.len() >= MAX_DEPTH || chain.iter().any(|(i, _)| i == &id) {
            return Err(ArchiveError::metadata(
                format!("{id}/json"),
                "parent chain loops or is too long",
            ));
        }
        let path = format!("{id}/json");
        let v = read_json(members, &path, "pre-1.10 image")?;
        let parent = v
            .get("parent")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        chain.push((id.clone(), v));
        match parent {
            Some(p) => id = p,
            None => break,
        }
    }
    chain.reverse();

    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for (id, v) in &chain {
        let path = format!("{id}/layer.tar");
        let m = members.get(&path, "pre-1.10 image")?;
        if m.size == 0 {
            layers.push((
                Blob {
                    digest: Digest::parse(media::EMPTY_GZIP_TAR_DIGEST)
                        .map_err(|e| ArchiveError::metadata(&path, e.to_string()))?,
                    size: media::EMPTY_GZIP_TAR.len() as u64,
                    data: BlobData::Generated(media::EMPTY_GZIP_TAR.to_vec()),
                    checks: Checks::default(),
                },
                Compression::Gzip,
                path.clone(),
            ));
            diff_ids.push(media::EMPTY_TAR_DIFF_ID.to_string());
        } else {
            // The diff_ids go into the config this program makes, so the
            // layers are hashed (and decompressed) before the push.
            let h = members.hashes(m)?;
            let diff_id = h
                .uncompressed
                .clone()
                .map_err(|e| ArchiveError::DiffIdMismatch {
                    member: path.clone(),
                    expected: "a readable layer".to_string(),
                    actual: e,
                })?;
            layers.push((
                Blob {
                    digest: h.digest,
                    size: m.size,
                    data: BlobData::Member(m.path.clone()),
                    checks: Checks {
                        compression: m.compression,
                        ..Checks::default()
                    },
                },
                m.compression,
                path.clone(),
            ));
            diff_ids.push(diff_id.to_string());
        }
        history.push(history_item(v));
    }
    let (_, top_json) = chain
        .last()
        .ok_or_else(|| ArchiveError::metadata("repositories", "empty ancestry"))?;
    let config_bytes = config_from_v1(top_json, &diff_ids, history)?;
    let config = Blob {
        digest: Digest::of_bytes(&config_bytes),
        size: config_bytes.len() as u64,
        data: BlobData::Generated(config_bytes),
        checks: Checks::default(),
    };
    let manifest = synthesize_manifest(&config, &layers)?;
    let mut blobs = vec![config.clone()];
    blobs.extend(layers.into_iter().map(|(b, _, _)| b));
    Ok(Image {
        refs: Vec::new(),
        blobs,
        children: Vec::new(),
        manifest,
        id: config.digest,
    })
}

/// moby `v1.HistoryFromConfig`: created, author, created_by (the
/// container's Cmd joined by spaces), comment; empty strings omitted.
fn history_item(v: &Value) -> Value {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let created_by = v
        .pointer("/container_config/Cmd")
        .and_then(Value::as_array)
        .map(|cmd| {
            cmd.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let mut h = Map::new();
    h.insert("created".into(), Value::String(s("created")));
    for (k, val) in [
        ("author", s("author")),
        ("created_by", created_by),
        ("comment", s("comment")),
    ] {
        if !val.is_empty() {
            h.insert(k.into(), Value::String(val));
        }
    }
    Value::Object(h)
}

/// moby `MakeConfigFromV1Config`, byte for byte (see the module doc).
pub fn config_from_v1(
    v1: &Value,
    diff_ids: &[String],
    history: Vec<Value>,
) -> Result<Vec<u8>, ArchiveError> {
    let obj = v1
        .as_object()
        .ok_or_else(|| ArchiveError::metadata("json", "V1 image json is not an object"))?;
    let mut sorted: BTreeMap<String, Value> = obj
        .iter()
        .filter(|(k, _)| !DROPPED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    sorted.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    sorted.insert("history".into(), Value::Array(history));
    if !sorted.contains_key("architecture") {
        sorted.insert("architecture".into(), Value::String("amd64".into()));
    }
    if !sorted.contains_key("os") {
        sorted.insert("os".into(), Value::String("linux".into()));
    }
    let mut out = String::from("{");
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let key =
            serde_json::to_string(k).map_err(|e| ArchiveError::metadata("json", e.to_string()))?;
        let val =
            serde_json::to_string(v).map_err(|e| ArchiveError::metadata("json", e.to_string()))?;
        out.push_str(&key);
        out.push(':');
        out.push_str(&val);
    }
    out.push('}');
    Ok(go_escape(&out).into_bytes())
}

/// Go's `json.Marshal` escapes `<`, `>`, `&`, U+2028 and U+2029; these
/// only occur inside strings in JSON text, so replacing them is safe.
fn go_escape(s: &str) -> String {
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_follows_make_config_from_v1_config() {
        let v1 = json!({
            "id": "a".repeat(64), "parent": "b".repeat(64), "Size": 3, "throwaway": false,
            "os": "linux", "created": "2015-01-01T00:00:00Z",
            "container_config": {"Cmd": ["/bin/sh", "-c", "echo <hi> & bye"]},
            "architecture": "amd64",
        });
        let hist = vec![history_item(&v1)];
        let bytes = config_from_v1(&v1, &["sha256:x".to_string()], hist).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            r#"{"architecture":"amd64","container_config":{"Cmd":["/bin/sh","-c","echo \u003chi\u003e \u0026 bye"]},"created":"2015-01-01T00:00:00Z","history":[{"created":"2015-01-01T00:00:00Z","created_by":"/bin/sh -c echo \u003chi\u003e \u0026 bye"}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#
        );
    }
}
