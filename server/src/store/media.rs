//! Media types of the V2 / OCI world (`v2-compat.md` §1.6, §2.5), in one
//! place, with the small classification questions the store and the
//! registry both ask.

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema1 (unsigned); refused on PUT.
pub const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker schema1 (signed); refused on PUT.
pub const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The canonical 32-byte gzip of an empty tar (distribution's `gzippedEmptyTar`):
/// the V1 layer of every history step that adds no files (§2.1, §2.3).
pub const EMPTY_GZIP_TAR: [u8; 32] = [
    31, 139, 8, 0, 0, 9, 110, 136, 0, 255, 98, 24, 5, 163, 96, 20, 140, 88, 0, 8, 0, 0, 255, 255,
    46, 175, 181, 239, 0, 4, 0, 0,
];
/// Digest of [`EMPTY_GZIP_TAR`].
pub const EMPTY_GZIP_TAR_DIGEST: &str =
    "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
/// diff_id of the empty tar (1024 zero bytes).
pub const EMPTY_TAR_DIFF_ID: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// What kind of manifest a media type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// A single image (or artifact) manifest: config + layers.
    Image,
    /// A manifest list / OCI index: child manifests.
    Index,
}

/// The media type of a `Content-Type` or `Accept` item without its
/// parameters, lowercased (`application/json; charset=utf-8` →
/// `application/json`), as media types are compared.
pub fn essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The kind of an acceptable manifest media type; `None` for anything else
/// (schema1 included).
pub fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        DOCKER_MANIFEST | OCI_MANIFEST => Some(ManifestKind::Image),
        DOCKER_LIST | OCI_INDEX => Some(ManifestKind::Index),
        _ => None,
    }
}

/// Whether a media type is one of the two OCI manifest types (for Accept negotiation).
pub fn is_oci(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == OCI_INDEX
}

/// Whether a config media type is an image config (projected to V1) rather
/// than an artifact's (cosign, Helm, in-toto: V2-only).
pub fn is_image_config(media_type: &str) -> bool {
    media_type == DOCKER_CONFIG || media_type == OCI_CONFIG
}

/// Whether V1 clients can read a layer of this type (gzip or plain tar).
pub fn is_v1_readable_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        DOCKER_LAYER_GZIP | DOCKER_LAYER_TAR | OCI_LAYER_GZIP | OCI_LAYER_TAR
    )
}

/// Prefix of the OCI non-distributable layer types (deprecated by image-spec
/// 1.1, still pushed by Windows base images).
pub const OCI_NONDISTRIBUTABLE_PREFIX: &str = "application/vnd.oci.image.layer.nondistributable.";
/// Docker's foreign layer type (Windows base layers fetched from `urls`).
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// Whether a layer type is non-distributable: its bytes are fetched from
/// the descriptor's `urls`, not the registry, so a manifest may name it
/// without the blob ever being pushed (distribution-spec, "Pushing
/// Manifests"); nothing about it is linked, served or kept by berth.
pub fn is_nondistributable(media_type: &str) -> bool {
    media_type.starts_with(OCI_NONDISTRIBUTABLE_PREFIX) || media_type == DOCKER_FOREIGN_LAYER
}

/// Compression of stored layer bytes, sniffed from their magic (§2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `1f 8b`
    Gzip,
    /// `28 b5 2f fd`
    Zstd,
    /// Anything else: taken as a plain tar.
    None,
}

/// Sniffs the compression from the first bytes of a layer.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Digest;

    #[test]
    fn empty_layer_constants_agree() {
        assert_eq!(
            Digest::of_bytes(&EMPTY_GZIP_TAR).as_str(),
            EMPTY_GZIP_TAR_DIGEST
        );
        assert_eq!(Digest::of_bytes(&[0u8; 1024]).as_str(), EMPTY_TAR_DIFF_ID);
        assert_eq!(sniff(&EMPTY_GZIP_TAR), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(sniff(b"ustar"), Compression::None);
    }

    #[test]
    fn kinds() {
        assert_eq!(manifest_kind(OCI_INDEX), Some(ManifestKind::Index));
        assert_eq!(manifest_kind(DOCKER_MANIFEST), Some(ManifestKind::Image));
        assert_eq!(manifest_kind(SCHEMA1_SIGNED), None);
        assert_eq!(manifest_kind("application/json"), None);
        assert!(is_oci(OCI_MANIFEST) && !is_oci(DOCKER_LIST));
    }
}
