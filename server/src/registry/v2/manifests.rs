//! `HEAD|GET|PUT|DELETE /v2/<name>/manifests/<tag|digest>` (`v2-compat.md` §1.6).
//!
//! * GET/HEAD: 200 with the exact stored bytes, `Content-Type` = the stored
//!   media type, `Content-Length`, `Docker-Content-Digest`. A tag pushed
//!   through V1 only is answered with its generated schema2 manifest
//!   (§2.5, generated once). By digest, only a manifest linked in this
//!   repository answers (pushed, derived from its V1 tag, mirrored for it):
//!   others are 404 `MANIFEST_UNKNOWN` whatever the store holds elsewhere
//!   (issue 14). An OCI object asked for by a client that accepts
//!   no OCI type (and no `*/*`) gets 404 `MANIFEST_UNKNOWN` (distribution's rule).
//!   Miss: 404 `MANIFEST_UNKNOWN`, or `NAME_UNKNOWN` for an unknown repository.
//! * PUT: 201 + `Location` + `Docker-Content-Digest`. Body capped at 4 MiB
//!   (413), schema1 and unparseable bodies 400 `MANIFEST_INVALID`, each blob /
//!   child not linked in this repository 400 `MANIFEST_BLOB_UNKNOWN` (the same
//!   answer whether or not the digest exists elsewhere; upload or mount it
//!   first; non-distributable layers are the exception: they are fetched
//!   from their `urls`, never pushed), digest reference ≠ digest of the
//!   body in the reference's algorithm (sha256, or sha512: the manifest is
//!   then stored and linked under its sha512 digest, which
//!   `Docker-Content-Digest` echoes; by tag it is sha256) 400
//!   `DIGEST_INVALID`. An image whose config's `rootfs.diff_ids` do not
//!   match its layers' uncompressed bytes is 400 `MANIFEST_INVALID` naming
//!   the layer (`diff_ids.rs`, issue 17). A tag PUT projects the image (or the index's default
//!   platform child) to V1 (§2.6); artifacts stay V2-only. A PUT by digest
//!   may name tags as `?tag=` parameters (each answered in `OCI-Tag`). A
//!   manifest with `subject` is recorded as a referrer of it in this
//!   repository (`store::referrers`; the subject need not exist) and the
//!   answer carries `OCI-Subject`.
//! * DELETE by tag: 202, removes the tag (V2 and V1). By digest: 202,
//!   removes the manifest from this repository with every tag naming it
//!   (and the V1 tags projected from or derived to it) and its referrer
//!   record; 404 `MANIFEST_UNKNOWN` when it is not here.

use berth_transport::wire::OCI_SUBJECT_HEADER;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::errors::{ErrorCode, OrV2, V2Error};
use super::routes::{query_params, Name, Reference};
use super::{located, with_digest, V2Result};
use crate::audit::AuditEvent;
use crate::names::{Digest, ImageId, RepoName, Tag};
use crate::registry::{blocking, response, Identity, Registry, ReqBody};
use crate::store::manifests::{LinkVia, TagRecord};
use crate::store::media::{self, ManifestKind};
use crate::store::referrers;
use crate::store::{translate, Store, StoreError, MAX_MANIFEST};

fn unknown_manifest(what: &str) -> Vec<V2Error> {
    vec![V2Error::new(ErrorCode::ManifestUnknown, "manifest unknown")
        .detail(json!({ "reference": what }))]
}

/// Whether the repository exists on either side.
fn repo_known(store: &Store, repo: &RepoName) -> std::io::Result<bool> {
    Ok(store.repo_exists(repo) || store.v2_repo_exists(repo))
}

/// Resolves a tag: the V2 record, else the V1 tag's derived manifest.
pub(crate) fn resolve_tag(
    store: &Store,
    repo: &RepoName,
    tag: &Tag,
) -> Result<Option<Digest>, Vec<V2Error>> {
    if let Some(rec) = store.v2_tag(repo, tag).v2()? {
        return Ok(Some(rec.digest));
    }
    let top = match store.get_tag(repo, tag) {
        Ok(id) => id,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(vec![e.into()]),
    };
    match store.derive_from_v1(&top) {
        Ok(rec) => {
            store.link_derived_to_repo(repo, &top, &rec).v2()?;
            Ok(Some(rec.manifest))
        }
        Err(StoreError::Io(e)) => Err(vec![V2Error::internal(e)]),
        Err(e) => {
            tracing::warn!(repository = %repo, %tag, image = %top, error = %e, "V1 image has no V2 form");
            Err(vec![V2Error::new(
                ErrorCode::ManifestUnknown,
                format!("the V1 image behind this tag cannot be served as V2: {e}"),
            )])
        }
    }
}

/// Whether `digest` is the V2 form already generated for a V1 image a tag
/// of this repository names (pulled by digest before any V2 read of the
/// tag linked it); links it if so. Nothing is generated here.
fn derived_here(store: &Store, repo: &RepoName, digest: &Digest) -> Result<bool, Vec<V2Error>> {
    let tags = match store.list_tags(repo) {
        Ok(tags) => tags,
        Err(StoreError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(vec![e.into()]),
    };
    for id in tags.values() {
        let Ok(top) = ImageId::parse(id) else {
            continue;
        };
        if let Some(rec) = store.derived(&top).v2()? {
            if rec.manifest == *digest {
                store.link_derived_to_repo(repo, &top, &rec).v2()?;
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The media types a request's `Accept` headers list (parameters stripped).
fn accepted(req: &Parts) -> Vec<String> {
    req.headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(media::essence)
        .filter(|t| !t.is_empty())
        .collect()
}

/// `HEAD|GET manifests/<ref>`
pub async fn get(reg: &Registry, name: &Name, reference: Reference, req: &Parts) -> V2Result {
    let store = reg.store().clone();
    let repo = name.repo.clone();
    let r = reference.clone();
    let found = blocking(move || -> Result<_, Vec<V2Error>> {
        let digest = match &r {
            Reference::Digest(d) => {
                let here = match store.manifest_in_repo(&repo, d).v2()? {
                    None if derived_here(&store, &repo, d)? => store.manifest(d).v2()?,
                    found => found,
                };
                return Ok(Ok((d.clone(), here)));
            }
            Reference::Tag(t) => resolve_tag(&store, &repo, t)?,
        };
        let Some(digest) = digest else {
            return Ok(Err(repo_known(&store, &repo).v2()?));
        };
        // A tag record is the repository's own: what it names is readable.
        Ok(Ok((digest.clone(), store.manifest(&digest).v2()?)))
    })
    .await?;
    let what = match &reference {
        Reference::Digest(d) => d.to_string(),
        Reference::Tag(t) => t.to_string(),
    };
    let (digest, media_type, bytes) = match found {
        Ok((digest, Some((mt, bytes)))) => (digest, mt, bytes),
        Ok((_, None)) | Err(true) => return Err(unknown_manifest(&what)),
        Err(false) => {
            return Err(vec![V2Error::new(
                ErrorCode::NameUnknown,
                "repository name not known to registry",
            )
            .detail(json!({ "name": name.raw }))])
        }
    };
    let accept = accepted(req);
    if media::is_oci(&media_type)
        && !accept.is_empty()
        && !accept
            .iter()
            .any(|a| a == "*/*" || a == media::OCI_MANIFEST || a == media::OCI_INDEX)
    {
        return Err(vec![V2Error::new(
            ErrorCode::ManifestUnknown,
            format!("the manifest is {media_type}, which the client does not accept"),
        )]);
    }
    let len = bytes.len();
    let mut r = Response::new(response::full_body(bytes));
    let h = r.headers_mut();
    response::set_header(h, header::CONTENT_TYPE.as_str(), &media_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(with_digest(r, &digest))
}

/// Reads the body up to [`MAX_MANIFEST`]; 413 beyond.
async fn read_manifest_body(req: &Parts, body: ReqBody) -> Result<Bytes, Vec<V2Error>> {
    let too_big = || {
        vec![V2Error::new(
            ErrorCode::ManifestTooLarge,
            format!("manifest larger than {MAX_MANIFEST} bytes"),
        )]
    };
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_MANIFEST as u64) {
        return Err(too_big());
    }
    let mut body = body;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            vec![V2Error::new(
                ErrorCode::ManifestInvalid,
                format!("request body: {e}"),
            )]
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_MANIFEST {
                return Err(too_big());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Decides the media type of a pushed manifest and checks it is acceptable.
fn manifest_type(req: &Parts, value: &Value) -> Result<(String, ManifestKind), Vec<V2Error>> {
    let invalid = |m: String| vec![V2Error::new(ErrorCode::ManifestInvalid, m)];
    let declared = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media::essence)
        .unwrap_or_default();
    let in_body = value
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_string);
    if value.get("schemaVersion").and_then(Value::as_i64) == Some(1)
        || declared == media::SCHEMA1
        || declared == media::SCHEMA1_SIGNED
    {
        return Err(invalid(
            "schema1 manifests are not supported; push schema2 or OCI".into(),
        ));
    }
    let chosen = if media::manifest_kind(&declared).is_some() {
        if let Some(b) = &in_body {
            if *b != declared {
                return Err(invalid(format!(
                    "mediaType {b} in the body does not match Content-Type {declared}"
                )));
            }
        }
        declared
    } else if let Some(b) = in_body.filter(|b| media::manifest_kind(b).is_some()) {
        b
    } else if value.get("manifests").is_some() {
        media::OCI_INDEX.to_string()
    } else if value.get("config").is_some() {
        media::OCI_MANIFEST.to_string()
    } else {
        return Err(invalid(format!(
            "unsupported manifest media type {declared:?}"
        )));
    };
    let kind = media::manifest_kind(&chosen).expect("chosen type is a manifest type");
    Ok((chosen, kind))
}

/// Every digest a manifest references that must be linked where it is
/// pushed: an image's config and stored layers, an index's children.
fn references(value: &Value, kind: ManifestKind) -> Result<Vec<Digest>, Vec<V2Error>> {
    let invalid = |e: translate::TranslateError| {
        vec![V2Error::new(ErrorCode::ManifestInvalid, e.to_string())]
    };
    Ok(match kind {
        ManifestKind::Image => {
            let (config, layers) = translate::image_parts(value).map_err(invalid)?;
            let stored = layers
                .into_iter()
                .filter(|l| !media::is_nondistributable(&l.media_type));
            std::iter::once(config.digest)
                .chain(stored.map(|l| l.digest))
                .collect()
        }
        ManifestKind::Index => translate::index_children(value)
            .map_err(invalid)?
            .into_iter()
            .map(|(d, _)| d.digest)
            .collect(),
    })
}

/// Every digest of `refs` (a manifest's [`references`]) that is not linked
/// in the repository it is pushed to. Whether the digest exists in another
/// repository is never looked at: the answer must not tell (issue 14), and
/// a repository may only name what it already holds. An index's children
/// must be there as manifests ([`Store::manifest_in_repo`]), not as the
/// same bytes uploaded as a blob: that child's own references were never
/// checked here.
fn missing_references(
    store: &Store,
    repo: &RepoName,
    refs: &[Digest],
    kind: ManifestKind,
) -> Result<Vec<V2Error>, Vec<V2Error>> {
    let mut missing = Vec::new();
    for d in refs {
        let present = match kind {
            ManifestKind::Image => store.blob_in_repo(repo, d).v2()?,
            ManifestKind::Index => store.manifest_in_repo(repo, d).v2()?.is_some(),
        };
        if !present {
            missing.push(
                V2Error::new(ErrorCode::ManifestBlobUnknown, "blob unknown to registry")
                    .detail(json!({ "digest": d.as_str() })),
            );
        }
    }
    Ok(missing)
}

/// Projects a tagged manifest to V1 (§2.6); returns the V1 top id, if any.
fn project(
    store: &Store,
    repo: &RepoName,
    tag: &Tag,
    value: &Value,
    kind: ManifestKind,
) -> Option<ImageId> {
    let image = match kind {
        ManifestKind::Image => Some(value.clone()),
        ManifestKind::Index => translate::default_platform_child(value)
            .ok()
            .flatten()
            .and_then(|child| store.manifest_in_repo(repo, &child.digest).ok().flatten())
            .filter(|(mt, _)| media::manifest_kind(mt) == Some(ManifestKind::Image))
            .and_then(|(_, bytes)| serde_json::from_slice(&bytes).ok()),
    };
    let projected = match image {
        Some(image) => match store.project_to_v1(repo, tag, &image) {
            Ok(top) => top,
            Err(e) => {
                tracing::error!(repository = %repo, %tag, error = %e, "V1 projection failed; tag is V2-only");
                None
            }
        },
        None => None,
    };
    if projected.is_none() {
        // The tag now names something V1 cannot show: drop a stale V1 tag.
        match store.delete_tag(repo, tag) {
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => {
                tracing::error!(repository = %repo, %tag, error = %e, "dropping stale V1 tag")
            }
        }
    }
    projected
}

/// Most tags one manifest PUT may name with `?tag=` (the spec asks for at
/// least 10).
const MAX_TAG_PARAMS: usize = 100;

/// The tags a manifest PUT writes: its tag reference, or the `?tag=`
/// parameters of a PUT by digest (all validated before anything is stored).
fn tags_to_write(reference: &Reference, req: &Parts) -> Result<Vec<Tag>, Vec<V2Error>> {
    let params = query_params(req.uri.query(), "tag");
    if params.len() > MAX_TAG_PARAMS {
        return Err(vec![V2Error::new(
            ErrorCode::TagInvalid,
            format!("at most {MAX_TAG_PARAMS} tag parameters per request"),
        )]);
    }
    let mut tags = match reference {
        Reference::Tag(t) => vec![t.clone()],
        Reference::Digest(_) => vec![],
    };
    for p in params {
        let tag =
            Tag::parse(&p).map_err(|e| vec![V2Error::new(ErrorCode::TagInvalid, e.to_string())])?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// `PUT manifests/<ref>`
pub async fn put(
    reg: &Registry,
    name: &Name,
    reference: Reference,
    req: &Parts,
    body: ReqBody,
    who: &Identity,
) -> V2Result {
    let tags = match tags_to_write(&reference, req) {
        Ok(tags) => tags,
        Err(e) => {
            crate::registry::drain_small_body(body).await;
            return Err(e);
        }
    };
    let bytes = read_manifest_body(req, body).await?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        vec![V2Error::new(
            ErrorCode::ManifestInvalid,
            format!("manifest is not JSON: {e}"),
        )]
    })?;
    if !value.is_object() {
        return Err(vec![V2Error::new(
            ErrorCode::ManifestInvalid,
            "manifest is not a JSON object",
        )]);
    }
    let (media_type, kind) = manifest_type(req, &value)?;
    let subject = referrers::subject_of(&value)
        .map_err(|e| vec![V2Error::new(ErrorCode::ManifestInvalid, e.to_string())])?;
    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => crate::names::Algorithm::Sha256,
    };
    let digest = algorithm.digest_of(&bytes);
    if let Reference::Digest(d) = &reference {
        if *d != digest {
            return Err(vec![V2Error::new(
                ErrorCode::DigestInvalid,
                format!("manifest digest is {digest}, not {d}"),
            )]);
        }
    }
    let store = reg.store().clone();
    let repo = name.repo.clone();
    let d = digest.clone();
    let s = subject.clone();
    let written_tags = tags.clone();
    let check_diff_ids = kind == ManifestKind::Image && !reg.config().skip_diff_id_check;
    let tops = blocking(move || -> Result<Vec<Option<ImageId>>, Vec<V2Error>> {
        let refs = references(&value, kind)?;
        // Renewed before they are checked (`Store::renew_for_gc`): a gc
        // running now either spares them or has removed them already.
        store.renew_held_for_gc(&d);
        store.renew_for_gc(&repo, &refs);
        let missing = missing_references(&store, &repo, &refs, kind)?;
        if !missing.is_empty() {
            return Err(missing);
        }
        if check_diff_ids {
            super::diff_ids::check(&store, &value)?;
        }
        store.put_manifest_as(&bytes, &media_type, algorithm).v2()?;
        store
            .link_blob_to_repo(&repo, &d, &LinkVia::Manifest)
            .v2()?;
        if let Some(subject) = &s {
            let desc = referrers::describe(&value, &media_type, &d, bytes.len() as u64);
            store.record_referrer(&repo, subject, &desc).v2()?;
        }
        let mut tops = Vec::with_capacity(written_tags.len());
        for tag in &written_tags {
            let top = project(&store, &repo, tag, &value, kind);
            let record = TagRecord {
                digest: d.clone(),
                v1: top.clone(),
            };
            store.set_v2_tag(&repo, tag, &record).v2()?;
            tops.push(top);
        }
        Ok(tops)
    })
    .await?;
    tracing::info!(user = %who.log_user(), repository = %name.repo, manifest = %digest, tags = ?tags.iter().map(Tag::as_str).collect::<Vec<_>>(), subject = ?subject.as_ref().map(Digest::as_str), "manifest pushed");
    let events: Vec<(Option<String>, Option<String>)> = if tags.is_empty() {
        vec![(None, None)]
    } else {
        tags.iter()
            .zip(&tops)
            .map(|(t, top)| (Some(t.to_string()), top.as_ref().map(|i| i.to_string())))
            .collect()
    };
    for (tag, image) in events {
        reg.audit(
            who,
            crate::audit::AuditEvent {
                op: "manifest.put",
                repository: Some(name.repo.full()),
                tag,
                digest: Some(digest.to_string()),
                image,
            },
        )
        .await;
    }
    let location = format!("/v2/{}/manifests/{}", name.raw, digest);
    let mut r = with_digest(located(StatusCode::CREATED, &location), &digest);
    if let Some(subject) = &subject {
        response::set_header(r.headers_mut(), OCI_SUBJECT_HEADER, subject.as_str());
    }
    if matches!(reference, Reference::Digest(_)) && !tags.is_empty() {
        let list = tags.iter().map(Tag::as_str).collect::<Vec<_>>().join(", ");
        response::set_header(r.headers_mut(), "oci-tag", &list);
    }
    Ok(r)
}

/// `DELETE manifests/<ref>`: a tag, or a manifest by digest.
pub async fn delete(reg: &Registry, name: &Name, reference: Reference, who: &Identity) -> V2Result {
    match reference {
        Reference::Tag(tag) => delete_tag(reg, name, tag, who).await,
        Reference::Digest(digest) => delete_manifest(reg, name, digest, who).await,
    }
}

/// Deletes one tag (V2 and V1).
async fn delete_tag(reg: &Registry, name: &Name, tag: Tag, who: &Identity) -> V2Result {
    let store = reg.store().clone();
    let repo = name.repo.clone();
    let t = tag.clone();
    let removed = blocking(move || -> Result<bool, Vec<V2Error>> {
        let v2 = store.v2_tag(&repo, &t).v2()?.is_some();
        let v1 = match store.delete_tag(&repo, &t) {
            Ok(()) => true,
            Err(StoreError::NotFound(_)) => false,
            Err(e) => return Err(vec![e.into()]),
        };
        // delete_tag's hook dropped the V2 record; drop it too when V1 had none.
        store.v1_tag_changed(&repo, &t, None).v2()?;
        Ok(v1 || v2)
    })
    .await?;
    if !removed {
        return Err(unknown_manifest(tag.as_str()));
    }
    tracing::info!(user = %who.log_user(), repository = %name.repo, %tag, "tag deleted (V2)");
    reg.audit(
        who,
        AuditEvent::new("tag.delete")
            .repository(&name.repo)
            .tag(&tag),
    )
    .await;
    Ok(response::empty(StatusCode::ACCEPTED))
}

/// Deletes a manifest from the repository, with its tags and referrer record
/// (`Store::delete_manifest_from_repo`).
async fn delete_manifest(reg: &Registry, name: &Name, digest: Digest, who: &Identity) -> V2Result {
    let store = reg.store().clone();
    let repo = name.repo.clone();
    let d = digest.clone();
    let removed = blocking(move || -> Result<Option<Vec<Tag>>, Vec<V2Error>> {
        // A V1 tag's generated manifest is in the repository even before a
        // V2 read linked it.
        if !store.blob_in_repo(&repo, &d).v2()? {
            derived_here(&store, &repo, &d)?;
        }
        store
            .delete_manifest_from_repo(&repo, &d)
            .map_err(|e| vec![e.into()])
    })
    .await?;
    let Some(tags) = removed else {
        return Err(unknown_manifest(digest.as_str()));
    };
    tracing::info!(user = %who.log_user(), repository = %name.repo, manifest = %digest, tags = ?tags.iter().map(Tag::as_str).collect::<Vec<_>>(), "manifest deleted (V2)");
    let event = |op| AuditEvent::new(op).repository(&name.repo).digest(&digest);
    reg.audit(who, event("manifest.delete")).await;
    for tag in tags {
        reg.audit(who, event("tag.delete").tag(&tag)).await;
    }
    Ok(response::empty(StatusCode::ACCEPTED))
}
