//! `HEAD|GET /v2/<name>/blobs/<digest>` (`v2-compat.md` §1.4):
//! 200 with `Content-Length`, `Docker-Content-Digest`, `Accept-Ranges`;
//! 206 for a single range; 416 past the end; 404 `BLOB_UNKNOWN` on a miss
//! (no body on HEAD). Manifests are pool blobs too, so they are served here.
//! A blob is visible in a repository once pushed, mounted or referenced there
//! (so docker's cross-repository mount, "Mounted from", happens).
//! `DELETE` is not offered (405 `UNSUPPORTED`, from the dispatcher).

use http::header;
use http::request::Parts;

use super::errors::{ErrorCode, V2Error};
use super::routes::Name;
use super::{with_digest, V2Result};
use crate::names::Digest;
use crate::registry::{blocking, response, Registry};

/// Streams a pool blob (or one range of it).
pub async fn get(reg: &Registry, name: &Name, digest: Digest, req: &Parts) -> V2Result {
    let store = reg.store().clone();
    let d = digest.clone();
    let repo = name.repo.clone();
    let found = blocking(move || -> std::io::Result<_> {
        if !store.blob_in_repo(&repo, &d)? {
            return Ok(None);
        }
        store.open_blob(&d)
    })
    .await
    .map_err(|e| vec![V2Error::internal(e)])?;
    let Some((file, size)) = found else {
        return Err(vec![V2Error::new(
            ErrorCode::BlobUnknown,
            "blob unknown to registry",
        )
        .detail(serde_json::json!({ "digest": digest.as_str() }))]);
    };
    let head = req.method == http::Method::HEAD;
    let r = response::file_response(file, size, req.headers.get(header::RANGE), head)
        .await
        .map_err(|e| vec![V2Error::internal(e)])?;
    Ok(with_digest(r, &digest))
}
