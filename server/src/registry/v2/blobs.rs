//! `HEAD|GET /v2/<name>/blobs/<digest>` (`v2-compat.md` §1.4):
//! 200 with `Content-Length`, `Docker-Content-Digest`, `Accept-Ranges`;
//! 206 for a single range; 416 past the end; 404 `BLOB_UNKNOWN` on a miss
//! (no body on HEAD). Manifests are pool blobs too, so they are served here.
//! A blob is visible in a repository once linked there: uploaded, mounted
//! (docker's cross-repository mount, "Mounted from"), pushed as a manifest,
//! derived from a V1 tag of the repository, or mirrored for it. Naming a
//! blob in a manifest links nothing (issue 14, `manifests.rs`).
//! `DELETE` (delete right) unlinks the blob from this repository only: 202,
//! 404 `BLOB_UNKNOWN` when it is not linked here; the pool copy goes when
//! `gc` finds nothing else referencing it. A digest that is a manifest here
//! answers 405 `UNSUPPORTED` naming the manifest route, which also removes
//! its tags and referrer record.
//!
//! A HEAD that misses answers `Berth-Blob-Mountable: true` when the blob is
//! in the pool and the caller could link it with a plain
//! `POST .../uploads/?mount=<digest>` (no access file, not anonymous: the
//! only case in which that mount needs no `from`, `uploads.rs`). It tells
//! `berth push` that the blob need not be sent, without linking it before
//! the archive is verified (issue 9); other clients ignore it. It is never
//! given under an access file or to anonymous callers, where it would tell
//! which digests other namespaces hold: there a miss is the same 404
//! whether or not the pool has the blob.
//!
//! A HEAD that finds the blob for a caller who may write the repository is
//! a push deciding not to send it: the blob is renewed for gc
//! (`Store::renew_held_for_gc`) until the push's manifest PUT names it.
//!
//! A layer blob's answers (HEAD and GET) carry `Berth-Diff-Id: sha256:…`
//! and `Berth-Uncompressed-Size: N` when its facts are recorded
//! (`store::layer_facts`); a HEAD never computes them (it stays one stat
//! and one small read): unknown facts, no headers.

use berth_transport::wire::MOUNTABLE_HEADER;
use http::header;
use http::request::Parts;

use super::errors::{ErrorCode, V2Error};
use super::routes::Name;
use super::{with_digest, with_layer_facts, V2Result};
use crate::names::Digest;
use crate::registry::{blocking, response, Identity, Registry};
use crate::store::layer_facts::LayerFacts;
use crate::store::StoreError;

/// What a blob lookup in one repository found.
enum Found {
    /// The blob is in the repository, with its layer facts when recorded.
    Here(std::fs::File, u64, Option<LayerFacts>),
    /// Not in the repository; `true` when the caller may mount it from the pool.
    Missing(bool),
}

/// Streams a pool blob (or one range of it).
pub async fn get(
    reg: &Registry,
    name: &Name,
    digest: Digest,
    req: &Parts,
    who: &Identity,
) -> V2Result {
    let store = reg.store().clone();
    let d = digest.clone();
    let repo = name.repo.clone();
    let head = req.method == http::Method::HEAD;
    // Exactly when `uploads::start` would mount without `from`.
    let may_mount = head && !reg.access().has_file() && !who.is_anonymous();
    // A writer's HEAD that finds the blob is a push deciding not to send it.
    let pushing = head
        && reg.access().policy().allows(
            who.subject(),
            name.repo.namespace(),
            crate::access::Action::Write,
        );
    let found = blocking(move || -> std::io::Result<_> {
        if !store.blob_in_repo(&repo, &d)? {
            return Ok(Found::Missing(may_mount && store.blob_size(&d)?.is_some()));
        }
        if pushing {
            store.renew_held_for_gc(&d);
        }
        Ok(match store.open_blob(&d)? {
            Some((file, size)) => Found::Here(file, size, store.layer_facts(&d)?),
            None => Found::Missing(false),
        })
    })
    .await
    .map_err(|e| vec![V2Error::internal(e)])?;
    let (file, size, facts) = match found {
        Found::Here(file, size, facts) => (file, size, facts),
        Found::Missing(true) => {
            let mut r = response::empty(http::StatusCode::NOT_FOUND);
            response::set_header(r.headers_mut(), MOUNTABLE_HEADER, "true");
            return Ok(r);
        }
        Found::Missing(false) => {
            return Err(vec![V2Error::new(
                ErrorCode::BlobUnknown,
                "blob unknown to registry",
            )
            .detail(serde_json::json!({ "digest": digest.as_str() }))]);
        }
    };
    let r = response::file_response(file, size, req.headers.get(header::RANGE), head)
        .await
        .map_err(|e| vec![V2Error::internal(e)])?;
    Ok(with_layer_facts(with_digest(r, &digest), facts.as_ref()))
}

/// What a blob DELETE found.
enum Unlink {
    /// Not linked here (or unlinked by a concurrent DELETE).
    NotHere,
    /// A manifest: deleted through the manifest route.
    IsManifest,
    /// Unlinked.
    Done,
}

/// `DELETE blobs/<digest>`: unlinks the blob from the repository.
pub async fn delete(reg: &Registry, name: &Name, digest: Digest, who: &Identity) -> V2Result {
    let store = reg.store().clone();
    let repo = name.repo.clone();
    let d = digest.clone();
    let outcome = blocking(move || -> Result<Unlink, StoreError> {
        if !store.blob_in_repo(&repo, &d)? {
            return Ok(Unlink::NotHere);
        }
        if store.manifest_in_repo(&repo, &d)?.is_some() {
            return Ok(Unlink::IsManifest);
        }
        Ok(match store.unlink_blob_from_repo(&repo, &d)? {
            true => Unlink::Done,
            false => Unlink::NotHere,
        })
    })
    .await
    .map_err(|e| vec![e.into()])?;
    match outcome {
        Unlink::NotHere => Err(vec![V2Error::new(
            ErrorCode::BlobUnknown,
            "blob unknown to registry",
        )
        .detail(serde_json::json!({ "digest": digest.as_str() }))]),
        Unlink::IsManifest => Err(vec![V2Error::new(
            ErrorCode::Unsupported,
            format!(
                "{digest} is a manifest in this repository: DELETE /v2/{}/manifests/{digest}",
                name.raw
            ),
        )]),
        Unlink::Done => {
            tracing::info!(user = %who.log_user(), repository = %name.repo, blob = %digest, "blob unlinked (V2)");
            reg.audit(
                who,
                crate::audit::AuditEvent {
                    op: "blob.delete",
                    repository: Some(name.repo.full()),
                    digest: Some(digest.to_string()),
                    ..Default::default()
                },
            )
            .await;
            Ok(response::empty(http::StatusCode::ACCEPTED))
        }
    }
}
