//! The only code that turns names into paths under the store root.
//!
//! ```text
//! <root>/
//!   images/<id>/json                 V1 image json, bytes exactly as uploaded
//!   images/<id>/layer                layer bytes (a hard link to the blob pool entry)
//!   images/<id>/ancestry             ["<id>", "<parent>", ..., "<root>"]
//!   images/<id>/_checksum            ["sha256:<payload checksum>"]
//!   images/<id>/_inprogress          marker: present until the checksum PUT publishes the image
//!   images/<id>/_possession          users who uploaded its exact bytes; upload steps per user
//!   images/<id>/.lock                fcntl lock held while an image is written, projected or collected
//!   repositories/<ns>/<repo>/tag_<t>         bare image id
//!   repositories/<ns>/<repo>/tag<t>_json     tag metadata (no `_` after `tag`, as in the reference)
//!   repositories/<ns>/<repo>/json            metadata of `latest`
//!   repositories/<ns>/<repo>/_index_images   the V1 index image list
//!   repositories/<ns>/<repo>/_private        flag: repository marked private
//!   repositories/<ns>/<repo>/.lock           fcntl lock file for read-modify-write of the index
//!   _berth/audit.log                 the audit log, one JSON line per write (default of --audit)
//!   _berth/ssh_host_ed25519_key      old default host key: never read; `serve` refuses to start
//!                                    until it is moved out of the store (keys::host_key_path)
//!   _berth/blobs/sha256/<hex>        content-addressed pool: layers, configs, manifests
//!   _berth/blobs/sha512/<hex>        the same for sha512 digests (128 hex; a blob pushed under
//!                                    both algorithms is stored under both names)
//!   _berth/uploads/<uuid>/data       V2 upload session: the bytes so far (offset = file size)
//!   _berth/uploads/<uuid>/.lock      fcntl lock held while a request appends to or closes it
//!   _berth/uploads/<uuid>/owner      {"repository", "user"} the session is bound to
//!   _berth/v2/<ns>/<repo>/_tags/<t>  V2 tag -> manifest digest (see store::manifests)
//!   _berth/v2/<ns>/<repo>/_blobs/<key>  the pool blob is visible in this repository, and why
//!   _berth/v2/<ns>/<repo>/_referrers/<subject key>/<key>  descriptor of a manifest pushed
//!                                    here whose `subject` is that digest (the referrers API)
//!   _berth/manifests/<key>           media type of a pool blob that is a manifest
//!   _berth/layerfacts/<key>          diff_id, uncompressed size and compression of a pool
//!                                    blob that is a layer (gzip, zstd or plain tar)
//!   _berth/renewed/<key>             empty; its mtime: when a push last named the digest or
//!                                    was told it is present (gc counts its objects as that young)
//!   _berth/derived/<v1 id>           generated config + manifest of a V1-only top image
//!   _berth/v1layers/<v1 id>          blob digest, diff_id and media type of a V1 layer
//!   _berth/v1ids/key                 secret that keys the V1 ids given to squatted projections
//!   _berth/v1ids/<hex>               V1 id given to a projected step whose own id was squatted
//! ```
//!
//! `<key>` names a digest in the flat record directories: its hex for
//! sha256 (the layout from before sha512), `sha512-<hex>` for sha512
//! ([`Paths::digest_key`], read back by [`Paths::digest_of_key`]).
//!
//! Every argument is a validated name type from [`crate::names`], so nothing
//! here can escape the root. Temporary files live next to their final name and
//! start with `.tmp-` (see [`super::atomic`]), so a listing can ignore them.

use std::path::{Path, PathBuf};

use crate::names::{Algorithm, Digest, ImageId, RepoName, Tag, UploadId};

/// File name of the SSH host key: the default one outside the store
/// (`keys::default_host_key_path`) and the old one inside it
/// ([`Paths::legacy_host_key`]).
pub const HOST_KEY_NAME: &str = "ssh_host_ed25519_key";

/// Builds every path under one store root.
#[derive(Clone, Debug)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// The directory name of a repository's blob links under `_berth/v2/`
    /// (walkers find repositories by it, `store::walk`).
    pub const V2_BLOB_LINKS: &'static str = "_blobs";
    /// The directory name of a repository's V2 tags under `_berth/v2/`.
    pub const V2_TAGS: &'static str = "_tags";
    /// The directory name of a repository's referrer records under `_berth/v2/`.
    pub const V2_REFERRERS: &'static str = "_referrers";

    /// Paths under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Paths {
        Paths { root: root.into() }
    }

    /// The store root itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `images/`
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `images/<id>/`
    pub fn image_dir(&self, id: &ImageId) -> PathBuf {
        self.images_dir().join(id.as_str())
    }

    /// `images/<id>/json`
    pub fn image_json(&self, id: &ImageId) -> PathBuf {
        self.image_dir(id).join("json")
    }

    /// `images/<id>/layer`
    pub fn image_layer(&self, id: &ImageId) -> PathBuf {
        self.image_dir(id).join("layer")
    }

    /// `images/<id>/ancestry`
    pub fn image_ancestry(&self, id: &ImageId) -> PathBuf {
        self.image_dir(id).join("ancestry")
    }

    /// `images/<id>/_checksum`
    pub fn image_checksum(&self, id: &ImageId) -> PathBuf {
        self.image_dir(id).join("_checksum")
    }

    /// `images/<id>/_inprogress`
    pub fn image_inprogress(&self, id: &ImageId) -> PathBuf {
        self.image_dir(id).join("_inprogress")
    }

    /// `images/<id>/_possession`: who proved they hold the image's bytes.
    pub fn image_possession(&self, id: &ImageId) -> PathBuf {
        self.image_dir(id).join("_possession")
    }

    /// `images/<id>/.lock`: `fcntl` lock held while the image is written,
    /// projected to V2, repaired or collected.
    pub fn image_lock(&self, id: &ImageId) -> PathBuf {
        self.image_dir(id).join(".lock")
    }

    /// `repositories/`
    pub fn repositories_dir(&self) -> PathBuf {
        self.root.join("repositories")
    }

    /// `repositories/<ns>/<repo>/`
    pub fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        let mut p = self.repositories_dir().join(repo.namespace());
        for part in repo.repository().split('/') {
            p.push(part);
        }
        p
    }

    /// `repositories/<ns>/<repo>/tag_<tag>`
    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.repo_dir(repo).join(format!("tag_{tag}"))
    }

    /// `repositories/<ns>/<repo>/tag<tag>_json`
    pub fn tag_json(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.repo_dir(repo).join(format!("tag{tag}_json"))
    }

    /// `repositories/<ns>/<repo>/json`
    pub fn repo_json(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join("json")
    }

    /// `repositories/<ns>/<repo>/_index_images`
    pub fn index_images(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join("_index_images")
    }

    /// `repositories/<ns>/<repo>/_private`
    pub fn private_flag(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join("_private")
    }

    /// `repositories/<ns>/<repo>/.lock`
    pub fn repo_lock(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join(".lock")
    }

    /// `_berth/`: everything berth adds beside the V1 reference layout.
    pub fn berth_dir(&self) -> PathBuf {
        self.root.join("_berth")
    }

    /// `_berth/audit.log`: the audit log unless `--audit` names another file.
    pub fn audit_log(&self) -> PathBuf {
        self.berth_dir().join("audit.log")
    }

    /// `_berth/ssh_host_ed25519_key`: where the host key was kept before it
    /// moved out of the store; never read, only refused (`keys::host_key_path`).
    pub fn legacy_host_key(&self) -> PathBuf {
        self.berth_dir().join(HOST_KEY_NAME)
    }

    /// `_berth/mirror-of`: the upstream, when this store backs a
    /// pull-through mirror (whose manifests may name blobs not fetched yet).
    pub fn mirror_marker(&self) -> PathBuf {
        self.berth_dir().join("mirror-of")
    }

    /// `_berth/quarantine/`: objects `fsck --repair` moved out of the store
    /// because their content does not match their name (issue 15).
    pub fn quarantine_dir(&self) -> PathBuf {
        self.berth_dir().join("quarantine")
    }

    /// `_berth/blobs/<algorithm>/`: the pool of one digest algorithm.
    pub fn blobs_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.berth_dir().join("blobs").join(algorithm.name())
    }

    /// `_berth/blobs/<algorithm>/<hex>`
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir(digest.algorithm()).join(digest.hex())
    }

    /// The digest a pool file name stands for in `algorithm`'s pool
    /// (`None` for temp files and junk).
    pub fn digest_of_blob_name(algorithm: Algorithm, name: &str) -> Option<Digest> {
        Digest::parse(&format!("{}:{name}", algorithm.name())).ok()
    }

    /// A digest's file name in the flat record directories (`_blobs/`,
    /// `manifests/`): the hex for sha256, `sha512-<hex>` for sha512. The
    /// sha256 form is the layout from before sha512; the prefix keeps the
    /// algorithm readable and `-` is valid on every filesystem (`:` is not).
    pub fn digest_key(digest: &Digest) -> String {
        match digest.algorithm() {
            Algorithm::Sha256 => digest.hex().to_string(),
            other => format!("{}-{}", other.name(), digest.hex()),
        }
    }

    /// The digest a record file name stands for ([`Paths::digest_key`]
    /// read back; `None` for temp files and junk).
    pub fn digest_of_key(name: &str) -> Option<Digest> {
        match name.split_once('-') {
            Some((alg, hex)) if alg != Algorithm::Sha256.name() => {
                Paths::digest_of_blob_name(Algorithm::from_name(alg)?, hex)
            }
            Some(_) => None,
            None => Paths::digest_of_blob_name(Algorithm::Sha256, name),
        }
    }

    /// `_berth/gc-totals.json`: runs of `gc` on this store and the bytes they
    /// freed, summed (the metrics listener reports them).
    pub fn gc_totals(&self) -> PathBuf {
        self.berth_dir().join("gc-totals.json")
    }

    /// `_berth/gc-totals.lock`: serialises updates of [`Paths::gc_totals`].
    pub fn gc_totals_lock(&self) -> PathBuf {
        self.berth_dir().join("gc-totals.lock")
    }

    /// `_berth/uploads/`
    pub fn uploads_dir(&self) -> PathBuf {
        self.berth_dir().join("uploads")
    }

    /// `_berth/v2/`: the V2 records of every repository.
    pub fn v2_dir(&self) -> PathBuf {
        self.berth_dir().join("v2")
    }

    /// `_berth/v2/<ns>/<repo>/`: V2 records of one repository.
    pub fn v2_repo_dir(&self, repo: &RepoName) -> PathBuf {
        let mut p = self.v2_dir().join(repo.namespace());
        for part in repo.repository().split('/') {
            p.push(part);
        }
        p
    }

    /// `_berth/uploads/<uuid>/`: one V2 upload session.
    pub fn upload_dir(&self, id: &UploadId) -> PathBuf {
        self.uploads_dir().join(id.as_str())
    }

    /// `_berth/uploads/<uuid>/data`: the bytes received so far.
    pub fn upload_data(&self, id: &UploadId) -> PathBuf {
        self.upload_dir(id).join("data")
    }

    /// `_berth/uploads/<uuid>/.lock`: `fcntl` lock serialising appends and
    /// the close of one session, across processes and hosts.
    pub fn upload_lock(&self, id: &UploadId) -> PathBuf {
        self.upload_dir(id).join(".lock")
    }

    /// `_berth/uploads/<uuid>/owner`: the repository and user a session
    /// is bound to (only they may continue it, issue 14).
    pub fn upload_owner(&self, id: &UploadId) -> PathBuf {
        self.upload_dir(id).join("owner")
    }

    /// `_berth/v2/<ns>/<repo>/_tags/`: V2 tag records (`_` cannot start a
    /// name component, so this never collides with a nested repository).
    pub fn v2_tags_dir(&self, repo: &RepoName) -> PathBuf {
        self.v2_repo_dir(repo).join(Paths::V2_TAGS)
    }

    /// `_berth/v2/<ns>/<repo>/_tags/<tag>`
    pub fn v2_tag(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.v2_tags_dir(repo).join(tag.as_str())
    }

    /// `_berth/v2/<ns>/<repo>/_blobs/<key>`: marks a pool blob as part of the
    /// repository (what V2 blob HEAD/GET see; a cross-repository mount adds one).
    pub fn v2_blob_link(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.v2_blob_links_dir(repo).join(Paths::digest_key(digest))
    }

    /// `_berth/v2/<ns>/<repo>/_blobs/`: every blob link of one repository.
    pub fn v2_blob_links_dir(&self, repo: &RepoName) -> PathBuf {
        self.v2_repo_dir(repo).join(Paths::V2_BLOB_LINKS)
    }

    /// `_berth/v2/<ns>/<repo>/_referrers/`: every subject with referrers here.
    pub fn v2_referrers_root(&self, repo: &RepoName) -> PathBuf {
        self.v2_repo_dir(repo).join(Paths::V2_REFERRERS)
    }

    /// `_berth/v2/<ns>/<repo>/_referrers/<subject key>/`: the referrers of
    /// one subject in one repository (the subject need not exist).
    pub fn v2_referrers_dir(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.v2_referrers_root(repo)
            .join(Paths::digest_key(subject))
    }

    /// `_berth/v2/<ns>/<repo>/_referrers/<subject key>/<key>`: the
    /// descriptor of referrer `referrer`, as the referrers index lists it.
    pub fn v2_referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> PathBuf {
        self.v2_referrers_dir(repo, subject)
            .join(Paths::digest_key(referrer))
    }

    /// `_berth/manifests/`: the manifest records.
    pub fn manifest_records_dir(&self) -> PathBuf {
        self.berth_dir().join("manifests")
    }

    /// `_berth/manifests/<key>`: the media type a manifest was pushed with.
    pub fn manifest_record(&self, digest: &Digest) -> PathBuf {
        self.manifest_records_dir().join(Paths::digest_key(digest))
    }

    /// `_berth/layerfacts/`: the layer fact records.
    pub fn layer_facts_dir(&self) -> PathBuf {
        self.berth_dir().join("layerfacts")
    }

    /// `_berth/layerfacts/<key>`: diff_id and uncompressed size of the
    /// layer blob `digest` (`store::layer_facts`).
    pub fn layer_facts(&self, digest: &Digest) -> PathBuf {
        self.layer_facts_dir().join(Paths::digest_key(digest))
    }

    /// `_berth/renewed/`: when pushes last named or found each digest
    /// (`Store::renew_for_gc`, `Store::renew_held_for_gc`).
    pub fn renewed_dir(&self) -> PathBuf {
        self.berth_dir().join("renewed")
    }

    /// `_berth/renewed/<key>`: empty; its mtime is when a push last named
    /// `digest` or was told it is present.
    pub fn renewed(&self, digest: &Digest) -> PathBuf {
        self.renewed_dir().join(Paths::digest_key(digest))
    }

    /// `_berth/derived/`: the derived records.
    pub fn derived_dir(&self) -> PathBuf {
        self.berth_dir().join("derived")
    }

    /// `_berth/derived/<id>`: the V2 form generated once for a V1 top image.
    pub fn derived(&self, id: &ImageId) -> PathBuf {
        self.derived_dir().join(id.as_str())
    }

    /// `_berth/v1layers/`: the V1 layer info records.
    pub fn v1_layers_dir(&self) -> PathBuf {
        self.berth_dir().join("v1layers")
    }

    /// `_berth/v1layers/<id>`: cached blob facts of a V1 image's layer.
    pub fn v1_layer_info(&self, id: &ImageId) -> PathBuf {
        self.v1_layers_dir().join(id.as_str())
    }

    /// `_berth/v1ids/`: V1 ids of projected steps whose own id was squatted.
    pub fn v1_ids_dir(&self) -> PathBuf {
        self.berth_dir().join("v1ids")
    }

    /// `_berth/v1ids/key`: the store's secret for those ids (first writer wins).
    pub fn v1_ids_key(&self) -> PathBuf {
        self.v1_ids_dir().join("key")
    }

    /// `_berth/v1ids/<hex>`: the id chosen for one squatted step (`hex` hashes
    /// the step's schema1 json and layer digest).
    pub fn v1_id_alias(&self, key: &Digest) -> PathBuf {
        self.v1_ids_dir().join(key.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_table() {
        let p = Paths::new("/r");
        let id = ImageId::parse(&"ab".repeat(32)).unwrap();
        let repo = RepoName::parse("team/app").unwrap();
        let lib = RepoName::parse("foo").unwrap();
        let deep = RepoName::parse("a/b/c").unwrap();
        let tag = Tag::parse("v1").unwrap();
        let d = Digest::of_bytes(b"x");
        let d512 = Algorithm::Sha512.digest_of(b"x");
        let up = UploadId::parse("0f0e0d0c-0b0a-4908-8706-050403020100").unwrap();
        let rows: Vec<(PathBuf, String)> = vec![
            (p.image_json(&id), format!("/r/images/{id}/json")),
            (p.image_layer(&id), format!("/r/images/{id}/layer")),
            (p.image_ancestry(&id), format!("/r/images/{id}/ancestry")),
            (p.image_checksum(&id), format!("/r/images/{id}/_checksum")),
            (
                p.image_inprogress(&id),
                format!("/r/images/{id}/_inprogress"),
            ),
            (p.tag(&repo, &tag), "/r/repositories/team/app/tag_v1".into()),
            (
                p.tag_json(&repo, &tag),
                "/r/repositories/team/app/tagv1_json".into(),
            ),
            (p.repo_json(&lib), "/r/repositories/library/foo/json".into()),
            (
                p.index_images(&deep),
                "/r/repositories/a/b/c/_index_images".into(),
            ),
            (p.blob(&d), format!("/r/_berth/blobs/sha256/{}", d.hex())),
            (
                p.blob(&d512),
                format!("/r/_berth/blobs/sha512/{}", d512.hex()),
            ),
            (
                p.v2_blob_link(&repo, &d512),
                format!("/r/_berth/v2/team/app/_blobs/sha512-{}", d512.hex()),
            ),
            (
                p.manifest_record(&d512),
                format!("/r/_berth/manifests/sha512-{}", d512.hex()),
            ),
            (p.v2_repo_dir(&repo), "/r/_berth/v2/team/app".into()),
            (
                p.v2_tag(&repo, &tag),
                "/r/_berth/v2/team/app/_tags/v1".into(),
            ),
            (p.v2_tag(&deep, &tag), "/r/_berth/v2/a/b/c/_tags/v1".into()),
            (
                p.v2_blob_link(&lib, &d),
                format!("/r/_berth/v2/library/foo/_blobs/{}", d.hex()),
            ),
            (
                p.upload_data(&up),
                format!("/r/_berth/uploads/{}/data", up.as_str()),
            ),
            (
                p.upload_lock(&up),
                format!("/r/_berth/uploads/{}/.lock", up.as_str()),
            ),
            (
                p.upload_owner(&up),
                format!("/r/_berth/uploads/{}/owner", up.as_str()),
            ),
            (
                p.manifest_record(&d),
                format!("/r/_berth/manifests/{}", d.hex()),
            ),
            (p.derived(&id), format!("/r/_berth/derived/{id}")),
            (p.v1_layer_info(&id), format!("/r/_berth/v1layers/{id}")),
            (
                p.image_possession(&id),
                format!("/r/images/{id}/_possession"),
            ),
            (p.v1_ids_key(), "/r/_berth/v1ids/key".into()),
            (p.v1_id_alias(&d), format!("/r/_berth/v1ids/{}", d.hex())),
        ];
        for (got, want) in rows {
            assert_eq!(got, PathBuf::from(want));
        }
    }

    #[test]
    fn digest_keys_read_back() {
        let d = Digest::of_bytes(b"x");
        let d512 = Algorithm::Sha512.digest_of(b"x");
        for digest in [&d, &d512] {
            let key = Paths::digest_key(digest);
            assert_eq!(Paths::digest_of_key(&key).as_ref(), Some(digest));
        }
        assert_eq!(Paths::digest_key(&d), d.hex());
        assert_eq!(
            Paths::digest_of_blob_name(Algorithm::Sha512, d512.hex()),
            Some(d512.clone())
        );
        for junk in [
            "".to_string(),
            ".tmp-link-1".into(),
            format!("sha256-{}", d.hex()),
            format!("sha384-{}", d512.hex()),
            format!("sha512-{}", d.hex()),
            d512.hex().to_string(),
        ] {
            assert_eq!(Paths::digest_of_key(&junk), None, "{junk:?}");
        }
        assert_eq!(
            Paths::digest_of_blob_name(Algorithm::Sha256, d512.hex()),
            None
        );
    }
}
