//! The types the archive modules share: what a member's bytes are
//! compressed with, and what an archive becomes for the push — [`Image`]s
//! of exact [`ManifestBytes`] and the [`Blob`]s they reference, with the
//! [`Checks`] those blobs' bytes still owe — plus the manifest synthesized
//! for archives that store none (`formats.rs`, `legacy.rs`).

use berth_server::names::Digest;
use berth_server::store::media;
use serde_json::json;

use super::error::ArchiveError;
use super::reference::ImageRef;

/// Compression of a member or of the outer archive, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No known compression magic (a plain tar, JSON, ...).
    #[default]
    None,
    /// `1f 8b`.
    Gzip,
    /// `28 b5 2f fd`.
    Zstd,
    /// `42 5a 68` (bzip2) or `fd 37 7a 58 5a 00` (xz): recognized, not read.
    Other(&'static str),
}

impl Compression {
    /// Sniffs the first bytes of a stream.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            Compression::Other("bzip2")
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Other("xz")
        } else {
            Compression::None
        }
    }
}

/// Where a blob's bytes come from.
#[derive(Debug, Clone)]
pub enum BlobData {
    /// An archive member, pushed byte for byte.
    Member(String),
    /// Bytes generated from the archive (a config converted from V1 json).
    Generated(Vec<u8>),
    /// An uncompressed member compressed for `--compress` into a temporary
    /// file (deleted with the last clone), named after the member in
    /// messages (`compress.rs`).
    Spilled {
        /// The compressed bytes.
        file: std::sync::Arc<tempfile::TempPath>,
        /// The archive member they were made from.
        member: String,
        /// An upload session of the push's first repository that already
        /// holds every one of these bytes, uncommitted: the layer was sent
        /// while it was compressed (`compress.rs`).
        sent: Option<String>,
    },
    /// Bytes the registry already holds under this digest (`--compress`
    /// found the layer compressed by an earlier push, `compress.rs`): there
    /// is nothing local to read or send.
    Held,
}

impl BlobData {
    /// What the bytes are called in messages.
    pub fn name(&self) -> String {
        match self {
            BlobData::Member(path) => path.clone(),
            BlobData::Generated(_) => "a generated blob".to_string(),
            BlobData::Spilled { member, .. } => format!("{member} (compressed)"),
            BlobData::Held => "a compressed layer the registry holds".to_string(),
        }
    }
}

/// A blob to push.
#[derive(Debug, Clone)]
pub struct Blob {
    /// sha256 of the bytes, as the archive claims it (checked when the
    /// bytes are read for the push).
    pub digest: Digest,
    /// Byte length.
    pub size: u64,
    /// The bytes.
    pub data: BlobData,
    /// What else the bytes of a member blob must satisfy.
    pub checks: Checks,
}

/// What a member blob's bytes are checked against besides its digest,
/// while they are read for the push (`verify.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    /// The digest was taken from the config's diff_id (an uncompressed
    /// layer that the archive names by nothing else), so a mismatch is
    /// reported as the diff_id mismatch it is.
    pub digest_is_diff_id: bool,
    /// sha256 of the decompressed bytes must equal each of these: the
    /// `rootfs.diff_ids` entries of the configs listing this layer.
    pub diff_ids: Vec<String>,
    /// The member's compression: a gzip or zstd layer with diff_ids is
    /// decompressed to check them.
    pub compression: Compression,
}

/// A manifest to push, byte-exact.
#[derive(Debug, Clone)]
pub struct ManifestBytes {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Its media type (the `Content-Type` of the PUT).
    pub media_type: String,
    /// sha256 of the bytes.
    pub digest: Digest,
}

impl ManifestBytes {
    /// Wraps manifest bytes, computing the digest.
    pub fn new(bytes: Vec<u8>, media_type: &str) -> ManifestBytes {
        ManifestBytes {
            digest: Digest::of_bytes(&bytes),
            bytes,
            media_type: media_type.to_string(),
        }
    }
}

/// One image (or index) of an archive.
#[derive(Debug, Clone)]
pub struct Image {
    /// Names the archive gives it (possibly none).
    pub refs: Vec<ImageRef>,
    /// Config and layer blobs of every manifest involved.
    pub blobs: Vec<Blob>,
    /// Child manifests of an index, pushed by digest before `manifest`.
    pub children: Vec<ManifestBytes>,
    /// The manifest pushed to the tags.
    pub manifest: ManifestBytes,
    /// The image id (config digest) of the platform image, for messages.
    pub id: Digest,
}

/// The media type of a layer file as stored, for a schema2 (or OCI, when
/// `oci`) manifest.
pub fn layer_media_type(
    c: Compression,
    oci: bool,
    member: &str,
) -> Result<&'static str, ArchiveError> {
    Ok(match (c, oci) {
        (Compression::None, false) => media::DOCKER_LAYER_TAR,
        (Compression::None, true) => media::OCI_LAYER_TAR,
        (Compression::Gzip, false) => media::DOCKER_LAYER_GZIP,
        (Compression::Gzip, true) => media::OCI_LAYER_GZIP,
        (Compression::Zstd, _) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (Compression::Other(kind), _) => {
            return Err(ArchiveError::metadata(
                member,
                format!(
                    "{kind}-compressed layers cannot be pushed; registries carry tar, gzip or zstd"
                ),
            ))
        }
    })
}

/// A manifest for a config and layer files, in Docker's field order:
/// schema2, or OCI when a layer is zstd (schema2 has no zstd type).
pub fn synthesize_manifest(
    config: &Blob,
    layers: &[(Blob, Compression, String)],
) -> Result<ManifestBytes, ArchiveError> {
    let oci = layers.iter().any(|(_, c, _)| *c == Compression::Zstd);
    let (mt, config_mt) = if oci {
        (media::OCI_MANIFEST, media::OCI_CONFIG)
    } else {
        (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
    };
    let mut ls = Vec::new();
    for (b, c, member) in layers {
        ls.push(json!({
            "mediaType": layer_media_type(*c, oci, member)?,
            "size": b.size,
            "digest": b.digest.as_str(),
        }));
    }
    let v = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": config_mt, "size": config.size, "digest": config.digest.as_str()},
        "layers": ls,
    });
    let bytes =
        serde_json::to_vec(&v).map_err(|e| ArchiveError::metadata("manifest", e.to_string()))?;
    Ok(ManifestBytes::new(bytes, mt))
}
