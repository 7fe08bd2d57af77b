//! The Registry V2 / OCI Distribution API (`v2-compat.md` §0–1) on the same
//! store as V1: one file per resource (`blobs`, `uploads`, `manifests`,
//! `catalog`), routing in `routes`, error bodies in `errors`.
//!
//! Every V2 answer carries `Docker-Distribution-API-Version: registry/2.0`
//! (§1.2), added here once. Blobs and manifests live in one global pool
//! (stored once), and each repository records which of them it holds and
//! why (distribution's linked blob store): a blob or a manifest by digest is
//! readable only in a repository it is linked in — uploaded, mounted, pushed
//! as a manifest whose references were all linked there, derived from a V1
//! tag there, or fetched by the mirror for it (issue 14). Tags are per
//! repository.

pub mod blobs;
pub mod catalog;
pub mod diff_ids;
pub mod errors;
pub mod manifests;
pub mod referrers;
pub mod routes;
pub mod uploads;

use berth_transport::wire::{
    API_VERSION, API_VERSION_HEADER, CONTENT_DIGEST_HEADER, DIFF_ID_HEADER,
    UNCOMPRESSED_SIZE_HEADER, VERIFIES_DIFF_ID, VERIFIES_HEADER,
};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::response::{self, ReqBody, RespBody};
use super::{Identity, Registry};
use errors::{render, ErrorCode, V2Error};
use routes::V2Route;

/// What a V2 handler returns: an answer, or the errors to render.
pub type V2Result = Result<Response<RespBody>, Vec<V2Error>>;

/// Answers a `/v2` request whose path was parsed into `route`.
pub async fn handle(
    reg: &Registry,
    route: Result<V2Route, V2Error>,
    req: Request<ReqBody>,
    who: &Identity,
) -> Response<RespBody> {
    let result = match route {
        Ok(route) => dispatch(reg, route, req, who).await,
        // A reference that is neither a tag nor a digest names no manifest:
        // reads and deletes answer 404 as for any manifest that is not
        // there (the spec's codes); a PUT keeps 400 TAG_INVALID. Either
        // way a small body is drained so the connection stays usable, as
        // every other refusal does.
        Err(e) => {
            let method = req.method().clone();
            super::drain_small_body(req.into_body()).await;
            if e.code == ErrorCode::TagInvalid && method != Method::PUT {
                Err(vec![V2Error::new(
                    ErrorCode::ManifestUnknown,
                    "manifest unknown",
                )
                .detail(serde_json::json!({ "reason": e.message }))])
            } else {
                Err(vec![e])
            }
        }
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(errors) => render(&errors),
    };
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
    if !reg.config().skip_diff_id_check {
        resp.headers_mut()
            .insert(VERIFIES_HEADER, HeaderValue::from_static(VERIFIES_DIFF_ID));
    }
    resp
}

async fn dispatch(
    reg: &Registry,
    route: V2Route,
    req: Request<ReqBody>,
    who: &Identity,
) -> V2Result {
    use V2Route::*;
    let (parts, body) = req.into_parts();
    let m = &parts.method;
    let read = m == Method::GET || m == Method::HEAD;
    if let Err(e) = authorize(reg, &route, m, who) {
        super::drain_small_body(body).await;
        return Err(e);
    }
    if let Some(reason) = reg.refused_write(m) {
        super::drain_small_body(body).await;
        return Err(vec![V2Error::new(ErrorCode::Denied, reason)]);
    }
    if read {
        fill_from_mirror(reg, &route).await?;
    }
    match route {
        Base if read => Ok(response::json(StatusCode::OK, &serde_json::json!({}))),
        Catalog if read => catalog::catalog(reg, &parts, who).await,
        Tags(name) if read => catalog::tags(reg, &name, &parts).await,
        Manifest(name, r) if read => manifests::get(reg, &name, r, &parts).await,
        Manifest(name, r) if m == Method::PUT => {
            manifests::put(reg, &name, r, &parts, body, who).await
        }
        Manifest(name, r) if m == Method::DELETE => manifests::delete(reg, &name, r, who).await,
        Blob(name, d) if read => blobs::get(reg, &name, d, &parts, who).await,
        Blob(name, d) if m == Method::DELETE => blobs::delete(reg, &name, d, who).await,
        Referrers(name, d) if read => referrers::list(reg, &name, &d, &parts).await,
        UploadStart(name) if m == Method::POST => {
            uploads::start(reg, &name, &parts, body, who).await
        }
        Upload(name, id) if m == Method::PATCH => {
            uploads::patch(reg, &name, id, &parts, body, who).await
        }
        Upload(name, id) if m == Method::PUT => {
            uploads::close(reg, &name, id, &parts, body, who).await
        }
        Upload(name, id) if read => uploads::status(reg, &name, id, who).await,
        Upload(name, id) if m == Method::DELETE => uploads::cancel(reg, &name, id, who).await,
        _ => Err(vec![V2Error::new(
            ErrorCode::Unsupported,
            format!("{m} is not supported here"),
        )]),
    }
}

/// On a pull-through mirror, fetches what a read needs from the upstream
/// into the store first; the handlers then answer from the store as usual.
async fn fill_from_mirror(reg: &Registry, route: &V2Route) -> Result<(), Vec<V2Error>> {
    use crate::mirror::MirrorError;
    let Some(mirror) = reg.mirror() else {
        return Ok(());
    };
    let store = reg.store();
    let filled = match route {
        V2Route::Manifest(name, routes::Reference::Tag(tag)) => {
            mirror.ensure_tag(store, &name.repo, &name.raw, tag).await
        }
        V2Route::Manifest(name, routes::Reference::Digest(d)) => {
            mirror
                .ensure_manifest_digest(store, &name.repo, &name.raw, d)
                .await
        }
        V2Route::Blob(name, d) => mirror.ensure_blob(store, &name.repo, &name.raw, d).await,
        _ => Ok(()),
    };
    // A miss the upstream could not fill is a 404 of the resource's kind
    // carrying the reason: Docker and skopeo show the message of 4xx
    // answers only (a 5xx is reported as a bare status, and retried).
    let code = match route {
        V2Route::Blob(..) => ErrorCode::BlobUnknown,
        _ => ErrorCode::ManifestUnknown,
    };
    filled.map_err(|e| match e {
        MirrorError::Store(e) => vec![V2Error::internal(e)],
        e @ (MirrorError::Unavailable { .. } | MirrorError::Corrupt { .. }) => {
            tracing::warn!(error = %e, "mirror fetch failed");
            vec![V2Error::new(code, e.to_string())]
        }
    })
}

/// Checks the caller's rights before a route runs: reads need read on the
/// repository's namespace (the referrers list included), uploads and
/// manifest PUTs write, manifest and blob DELETE delete. The catalog is filtered instead (see `catalog`), and a mount's
/// `from` repository is checked where the mount happens.
fn authorize(
    reg: &Registry,
    route: &V2Route,
    m: &Method,
    who: &Identity,
) -> Result<(), Vec<V2Error>> {
    use crate::access::Action;
    use V2Route::*;
    let read = m == Method::GET || m == Method::HEAD;
    let (name, action) = match route {
        Base | Catalog => return Ok(()),
        Tags(n) | Referrers(n, _) => (n, Action::Read),
        Manifest(n, _) | Blob(n, _) if read => (n, Action::Read),
        Manifest(n, _) | Blob(n, _) if m == Method::DELETE => (n, Action::Delete),
        Blob(n, _) => (n, Action::Read), // other methods answer 405-like UNSUPPORTED
        Manifest(n, _) | UploadStart(n) | Upload(n, _) => (n, Action::Write),
    };
    reg.access()
        .check(who, name.repo.namespace(), action)
        .map_err(|d| vec![denied(d)])
}

/// The V2 error for a denied request.
pub(crate) fn denied(d: crate::access::Denied) -> V2Error {
    let code = if d.anonymous {
        ErrorCode::Unauthorized
    } else {
        ErrorCode::Denied
    };
    V2Error::new(code, d.reason)
}

/// A bodiless answer (`Content-Length: 0` except on 204) with a `Location`.
pub(crate) fn located(status: StatusCode, location: &str) -> Response<RespBody> {
    let mut r = response::empty(status);
    response::set_header(r.headers_mut(), "location", location);
    r
}

/// Sets `Berth-Diff-Id` and `Berth-Uncompressed-Size` on a blob answer
/// (`blobs.rs`), when the blob's layer facts are known.
pub(crate) fn with_layer_facts(
    mut r: Response<RespBody>,
    facts: Option<&crate::store::layer_facts::LayerFacts>,
) -> Response<RespBody> {
    if let Some(f) = facts {
        let h = r.headers_mut();
        response::set_header(h, DIFF_ID_HEADER, f.diff_id.as_str());
        response::set_header(
            h,
            UNCOMPRESSED_SIZE_HEADER,
            &f.uncompressed_size.to_string(),
        );
    }
    r
}

/// Sets `Docker-Content-Digest` (and an ETag) on an answer.
pub(crate) fn with_digest(
    mut r: Response<RespBody>,
    digest: &crate::names::Digest,
) -> Response<RespBody> {
    response::set_header(r.headers_mut(), CONTENT_DIGEST_HEADER, digest.as_str());
    response::set_header(
        r.headers_mut(),
        header::ETAG.as_str(),
        &format!("\"{digest}\""),
    );
    r
}
