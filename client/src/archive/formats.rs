//! The archive shapes in the wild (`v2-compat.md` §3.1), each turned into
//! the same thing: [`Image`]s ready to push — exact manifest bytes, the
//! blobs they reference (as archive members), and the names the archive
//! gives them.
//!
//! Import order of preference (§3.3): (1) an OCI layout (`oci-layout` +
//! `index.json`: Docker 25+, containerd-store exports, `oci-archive:`),
//! whose manifest bytes are kept, so digests are preserved; (2)
//! `manifest.json` (Docker 1.10–24, skopeo/podman `docker-archive:`), for
//! which a schema2 manifest is synthesized from the stored layer files;
//! (3) pre-1.10 per-layer directories + `repositories` (see `legacy.rs`).
//!
//! What can be checked cheaply is checked here, before any request:
//! metadata (manifests, indexes, image configs) is read and hashed against
//! its digest, blob sizes against their descriptors, layer counts against
//! the configs' `rootfs.diff_ids`. The large blobs are not read here: each
//! [`Blob`] carries the digest the archive claims for it and the [`Checks`]
//! its bytes still owe, which `verify.rs` performs while the push reads the
//! blob for its upload; nothing is committed in the registry before every
//! blob of the push has passed (`push.rs`), so a refused archive still
//! publishes nothing.
//!
//! Layers stored uncompressed (as every `docker save` stores them) are
//! pushed as they are, with the uncompressed media type: the blob digest is
//! then the diff_id, a re-push of the same image finds every layer present,
//! and Docker, containerd and containers/image all read such layers.

use std::collections::BTreeMap;

use berth_server::names::{Algorithm, Digest};
use berth_server::store::media;
use serde_json::Value;

use super::error::ArchiveError;
use super::hashing::Hashes;
use super::legacy;
use super::members::{read_json, Member, Members};
use super::reference::ImageRef;
use super::types::{
    synthesize_manifest, Blob, BlobData, Checks, Compression, Image, ManifestBytes,
};

/// Which shape an archive had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `oci-layout` + `index.json` (Docker 25+, containerd, `oci-archive:`).
    OciLayout,
    /// `manifest.json` without an OCI layout (Docker 1.10–24, `docker-archive:`).
    DockerManifest,
    /// Per-layer directories + `repositories` (Docker before 1.10).
    Legacy,
}

impl Format {
    /// A short name for messages and `--json` events.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OciLayout => "oci-layout",
            Format::DockerManifest => "docker-manifest",
            Format::Legacy => "docker-legacy",
        }
    }
}

/// Recognizes the archive's shape and builds its images (metadata
/// checked; blob bytes are checked by the push, `verify.rs`).
pub fn images(members: &Members) -> Result<(Format, Vec<Image>), ArchiveError> {
    if members.contains("index.json") && members.contains("oci-layout") {
        let mut imgs = oci_images(members)?;
        if members.contains("manifest.json") {
            // Docker 25+ and containerd name images in manifest.json too;
            // use those names where index.json has none.
            let named = docker_manifest_names(members)?;
            for img in &mut imgs {
                if img.refs.is_empty() {
                    if let Some(refs) = named.get(&img.id) {
                        img.refs = refs.clone();
                    }
                }
            }
        }
        return Ok((Format::OciLayout, imgs));
    }
    if members.contains("manifest.json") {
        return Ok((Format::DockerManifest, docker_manifest_images(members)?));
    }
    if members.contains("repositories") {
        return Ok((Format::Legacy, legacy::images(members)?));
    }
    Err(ArchiveError::UnknownFormat)
}

/// A member blob with only its digest to check.
fn member_blob(digest: Digest, m: &Member) -> Blob {
    Blob {
        digest,
        size: m.size,
        data: BlobData::Member(m.path.clone()),
        checks: Checks {
            compression: m.compression,
            ..Checks::default()
        },
    }
}

fn digest_field(v: &Value, member: &str, field: &str) -> Result<Digest, ArchiveError> {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| ArchiveError::metadata(member, format!("missing {field:?}")))?;
    let d = Digest::parse(s).map_err(|e| ArchiveError::metadata(member, e.to_string()))?;
    if d.algorithm() != Algorithm::Sha256 {
        return Err(ArchiveError::metadata(
            member,
            format!(
                "{field} {d} is a {} digest: berth pushes Docker archives, which name blobs by sha256 only",
                d.algorithm()
            ),
        ));
    }
    Ok(d)
}

/// A metadata member's bytes, checked to hash to `digest`.
fn read_verified(
    members: &Members,
    m: &Member,
    digest: &Digest,
    needed_by: &str,
) -> Result<Vec<u8>, ArchiveError> {
    let bytes = members.read_small(&m.path, needed_by)?;
    let actual = Digest::of_bytes(&bytes);
    if &actual != digest {
        return Err(ArchiveError::DigestMismatch {
            member: m.path.clone(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}

/// Checks a layer's decompressed content, hashed before the push, against
/// a diff_id.
pub fn check_diff_id(member: &str, h: &Hashes, diff_id: &str) -> Result<(), ArchiveError> {
    match &h.uncompressed {
        Ok(d) if d.as_str() == diff_id => Ok(()),
        Ok(d) => Err(ArchiveError::DiffIdMismatch {
            member: member.to_string(),
            expected: diff_id.to_string(),
            actual: d.to_string(),
        }),
        Err(e) => Err(ArchiveError::DiffIdMismatch {
            member: member.to_string(),
            expected: diff_id.to_string(),
            actual: e.clone(),
        }),
    }
}

/// The `rootfs.diff_ids` of a config.
pub fn diff_ids(config: &Value, member: &str) -> Result<Vec<String>, ArchiveError> {
    config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| ArchiveError::metadata(member, "config has no rootfs.diff_ids"))?
        .iter()
        .map(|d| {
            d.as_str()
                .map(str::to_string)
                .ok_or_else(|| ArchiveError::metadata(member, "diff_id is not a string"))
        })
        .collect()
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// A blob of the OCI layout, its size checked against its descriptor (its
/// digest is checked when it is read: [`read_verified`] for metadata, the
/// push for the rest).
fn oci_blob(
    members: &Members,
    desc: &Value,
    needed_by: &str,
) -> Result<(Blob, Member), ArchiveError> {
    let digest = digest_field(desc, needed_by, "digest")?;
    let path = blob_path(&digest);
    let m = members.get(&path, needed_by)?;
    if let Some(size) = desc.get("size").and_then(Value::as_u64) {
        if size != m.size {
            return Err(ArchiveError::metadata(
                &path,
                format!("is {} bytes, but {needed_by} says {size}", m.size),
            ));
        }
    }
    Ok((member_blob(digest, m), m.clone()))
}

fn is_index(media_type: &str) -> bool {
    media_type == media::OCI_INDEX || media_type == media::DOCKER_LIST
}

fn is_image_config(media_type: &str) -> bool {
    media_type == media::DOCKER_CONFIG || media_type == media::OCI_CONFIG
}

/// An image manifest of the layout (checked): its blobs and config digest.
fn oci_manifest(
    members: &Members,
    desc: &Value,
) -> Result<(ManifestBytes, Vec<Blob>, Digest), ArchiveError> {
    let (b, m) = oci_blob(members, desc, "index.json")?;
    let bytes = read_verified(members, &m, &b.digest, "index.json")?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ArchiveError::metadata(&m.path, format!("invalid manifest JSON: {e}")))?;
    let media_type = desc
        .get("mediaType")
        .and_then(Value::as_str)
        .or_else(|| v.get("mediaType").and_then(Value::as_str))
        .unwrap_or(media::OCI_MANIFEST)
        .to_string();
    let cdesc = v
        .get("config")
        .ok_or_else(|| ArchiveError::metadata(&m.path, "manifest has no config"))?;
    let (config, cm) = oci_blob(members, cdesc, &m.path)?;
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| ArchiveError::metadata(&m.path, "manifest has no layers"))?;
    let mut blobs = vec![config.clone()];
    let image_config = cdesc
        .get("mediaType")
        .and_then(Value::as_str)
        .is_some_and(is_image_config);
    let ids = if image_config {
        let cv: Value =
            serde_json::from_slice(&read_verified(members, &cm, &config.digest, &m.path)?)
                .map_err(|e| {
                    ArchiveError::metadata(&cm.path, format!("invalid config JSON: {e}"))
                })?;
        let ids = diff_ids(&cv, &cm.path)?;
        if ids.len() != layers.len() {
            return Err(ArchiveError::metadata(
                &m.path,
                format!(
                    "{} layers but the config lists {} diff_ids",
                    layers.len(),
                    ids.len()
                ),
            ));
        }
        Some(ids)
    } else {
        None
    };
    for (i, l) in layers.iter().enumerate() {
        let (mut blob, _) = oci_blob(members, l, &m.path)?;
        if let Some(id) = ids.as_ref().and_then(|ids| ids.get(i)) {
            blob.checks.diff_ids.push(id.clone());
        }
        blobs.push(blob);
    }
    Ok((ManifestBytes::new(bytes, &media_type), blobs, config.digest))
}

fn platform_of(desc: &Value) -> (String, String) {
    let p = |k: &str| {
        desc.pointer(&format!("/platform/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string()
    };
    (p("os"), p("architecture"))
}

/// Names from an index.json descriptor's annotations.
fn oci_ref(desc: &Value) -> Option<ImageRef> {
    let ann = desc.get("annotations")?;
    if let Some(full) = ann.get("io.containerd.image.name").and_then(Value::as_str) {
        if let Some(r) = ImageRef::parse(full) {
            return Some(r);
        }
    }
    let name = ann
        .get("org.opencontainers.image.ref.name")
        .and_then(Value::as_str)?;
    if name.contains([':', '/']) {
        ImageRef::parse(name)
    } else {
        // Docker 25+ writes the tag alone; the name comes from manifest.json.
        None
    }
}

fn oci_images(members: &Members) -> Result<Vec<Image>, ArchiveError> {
    let index = read_json(members, "index.json", "OCI layout")?;
    let descs = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| ArchiveError::metadata("index.json", "no manifests"))?;
    let mut out: Vec<Image> = Vec::new();
    for desc in descs {
        let mt = desc
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let img = if is_index(mt) {
            oci_index_image(members, desc)?
        } else {
            let (manifest, blobs, id) = oci_manifest(members, desc)?;
            Image {
                refs: Vec::new(),
                blobs,
                children: Vec::new(),
                manifest,
                id,
            }
        };
        let r = oci_ref(desc);
        match out
            .iter_mut()
            .find(|i| i.manifest.digest == img.manifest.digest)
        {
            Some(existing) => existing.refs.extend(r),
            None => {
                let mut img = img;
                img.refs.extend(r);
                out.push(img);
            }
        }
    }
    if out.is_empty() {
        return Err(ArchiveError::metadata("index.json", "no images"));
    }
    Ok(out)
}

/// A nested index (containerd exports, multi-platform `oci-archive:`):
/// pushed whole when every child is in the archive, otherwise the
/// linux/amd64 child (or the only complete one) is pushed on its own.
fn oci_index_image(members: &Members, desc: &Value) -> Result<Image, ArchiveError> {
    let (b, m) = oci_blob(members, desc, "index.json")?;
    let bytes = read_verified(members, &m, &b.digest, "index.json")?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ArchiveError::metadata(&m.path, format!("invalid index JSON: {e}")))?;
    let children = v
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| ArchiveError::metadata(&m.path, "index has no manifests"))?;
    let mut complete = Vec::new();
    let mut missing = 0;
    for c in children {
        let digest = digest_field(c, &m.path, "digest")?;
        if !members.contains(&blob_path(&digest)) {
            missing += 1;
            continue;
        }
        match oci_manifest(members, c) {
            Ok(parts) => complete.push((c, parts)),
            Err(ArchiveError::Missing { .. }) => missing += 1,
            Err(e) => return Err(e),
        }
    }
    if missing == 0 && !complete.is_empty() {
        let media_type = desc
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(media::OCI_INDEX)
            .to_string();
        let mut blobs = Vec::new();
        let mut kids = Vec::new();
        let mut id = None;
        for (c, (manifest, b, cid)) in &complete {
            if id.is_none() || platform_of(c) == ("linux".into(), "amd64".into()) {
                id = Some(cid.clone());
            }
            blobs.extend(b.iter().cloned());
            kids.push(manifest.clone());
        }
        let id = id.ok_or_else(|| ArchiveError::metadata(&m.path, "index has no manifests"))?;
        return Ok(Image {
            refs: Vec::new(),
            blobs,
            children: kids,
            manifest: ManifestBytes::new(bytes, &media_type),
            id,
        });
    }
    let pick = complete
        .iter()
        .position(|(c, _)| platform_of(c) == ("linux".into(), "amd64".into()))
        .or_else(|| {
            let real: Vec<usize> = complete
                .iter()
                .enumerate()
                .filter(|(_, (c, _))| platform_of(c).0 != "unknown")
                .map(|(i, _)| i)
                .collect();
            (real.len() == 1).then(|| real.first().copied()).flatten()
        });
    match pick.and_then(|i| complete.into_iter().nth(i)) {
        Some((_, (manifest, blobs, id))) => Ok(Image {
            refs: Vec::new(),
            blobs,
            children: Vec::new(),
            manifest,
            id,
        }),
        None => Err(ArchiveError::Missing {
            member: m.path.clone(),
            needed_by: "a linux/amd64 image of the index, or all of its children".to_string(),
        }),
    }
}

/// `manifest.json` entries' names by config digest.
fn docker_manifest_names(
    members: &Members,
) -> Result<BTreeMap<Digest, Vec<ImageRef>>, ArchiveError> {
    let v = read_json(members, "manifest.json", "Docker archive")?;
    let mut out = BTreeMap::new();
    for e in v.as_array().into_iter().flatten() {
        let Some(config) = e.get("Config").and_then(Value::as_str) else {
            continue;
        };
        let Ok(bytes) = members.read_small(config, "manifest.json") else {
            continue;
        };
        out.insert(Digest::of_bytes(&bytes), repo_tags(e));
    }
    Ok(out)
}

fn repo_tags(entry: &Value) -> Vec<ImageRef> {
    entry
        .get("RepoTags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(ImageRef::parse)
        .collect()
}

fn docker_manifest_images(members: &Members) -> Result<Vec<Image>, ArchiveError> {
    let v = read_json(members, "manifest.json", "Docker archive")?;
    let entries = v
        .as_array()
        .ok_or_else(|| ArchiveError::metadata("manifest.json", "not a JSON array"))?;
    let mut out = Vec::new();
    for e in entries {
        let config_path = e
            .get("Config")
            .and_then(Value::as_str)
            .ok_or_else(|| ArchiveError::metadata("manifest.json", "entry without Config"))?;
        let cm = members.get(config_path, "manifest.json Config")?;
        let config_bytes = members.read_small(config_path, "manifest.json Config")?;
        let config_digest = Digest::of_bytes(&config_bytes);
        // The config's name is its digest (`<hex>.json`, `blobs/sha256/<hex>`).
        let stem = config_path.rsplit('/').next().unwrap_or_default();
        let stem = stem.strip_suffix(".json").unwrap_or(stem);
        if stem.len() == 64
            && stem.bytes().all(|b| b.is_ascii_hexdigit())
            && stem != config_digest.hex()
        {
            return Err(ArchiveError::DigestMismatch {
                member: config_path.to_string(),
                expected: format!("sha256:{stem}"),
                actual: config_digest.to_string(),
            });
        }
        let cv: Value = serde_json::from_slice(&config_bytes).map_err(|e| {
            ArchiveError::metadata(config_path, format!("invalid config JSON: {e}"))
        })?;
        let ids = diff_ids(&cv, config_path)?;
        let layer_paths: Vec<&str> = e
            .get("Layers")
            .and_then(Value::as_array)
            .ok_or_else(|| ArchiveError::metadata("manifest.json", "entry without Layers"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if layer_paths.len() != ids.len() {
            return Err(ArchiveError::metadata(
                "manifest.json",
                format!(
                    "{} lists {} layers but its config has {} diff_ids",
                    config_path,
                    layer_paths.len(),
                    ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (p, id) in layer_paths.iter().zip(&ids) {
            let lm = members.get(p, "manifest.json Layers")?;
            // Only a sha256 diff_id can be a `docker save` layer's digest.
            let claimed = Digest::parse(id)
                .ok()
                .filter(|d| d.algorithm() == Algorithm::Sha256);
            let blob = match claimed {
                // An uncompressed layer (what `docker save` writes): its
                // digest is its diff_id, checked while it is pushed.
                Some(digest) if lm.compression == Compression::None => {
                    let mut b = member_blob(digest, lm);
                    b.checks.digest_is_diff_id = true;
                    b
                }
                // Otherwise its digest must be computed before the manifest
                // can be made: hash (and decompress) it now.
                _ => {
                    let h = members.hashes(lm)?;
                    check_diff_id(&lm.path, &h, id)?;
                    member_blob(h.digest, lm)
                }
            };
            layers.push((blob, lm.compression, lm.path.clone()));
        }
        let config = member_blob(config_digest, cm);
        let manifest = synthesize_manifest(&config, &layers)?;
        let mut blobs = vec![config.clone()];
        blobs.extend(layers.into_iter().map(|(b, _, _)| b));
        out.push(Image {
            refs: repo_tags(e),
            blobs,
            children: Vec::new(),
            manifest,
            id: config.digest,
        });
    }
    if out.is_empty() {
        return Err(ArchiveError::metadata("manifest.json", "no images"));
    }
    Ok(out)
}
