//! Blob uploads (`v2-compat.md` §1.5):
//!
//! * `POST /v2/<name>/blobs/uploads/` → 202 + `Location`, `Docker-Upload-UUID`,
//!   `Range: 0-0`; `?digest-algorithm=sha256|sha512` is accepted (the close
//!   verifies whichever algorithm its digest names), another algorithm is
//!   400 `DIGEST_INVALID`; `?mount=<d>&from=<repo>` → 201 when the caller may read
//!   `<repo>` and the blob is linked there (without an access file: when the
//!   pool has it, every key may read everything then), else a session (202);
//!   `?digest=<d>` with a body → 201
//!   (monolithic upload), 400 `DIGEST_INVALID` on mismatch. The 201 carries
//!   `Berth-Diff-Id` / `Berth-Uncompressed-Size` for a layer (measured
//!   while the body streamed in, `store::layer_facts`).
//! * `PATCH <location>` → 202 + `Range: 0-<last>` (no `bytes=`: docker reads the
//!   pushed size from it) + `Berth-Upload-Digest` ([`UPLOAD_DIGEST_HEADER`]);
//!   a PATCH sent with `Berth-Last-Chunk: true` ([`LAST_CHUNK_HEADER`]) of a
//!   session measured whole also answers `Berth-Diff-Id` /
//!   `Berth-Uncompressed-Size` of its bytes.
//!   Without `Content-Range` the body is streamed as is;
//!   with `Content-Range: a-b` the chunk must start at the offset and match
//!   `Content-Length` (400 `SIZE_INVALID`).
//! * `PUT <location>?digest=<d>` (body optional, with the same `Content-Range`
//!   rules as a PATCH) → 201 + `Docker-Content-Digest`; 400 `DIGEST_INVALID`
//!   (session dropped) on mismatch or a missing digest. `<d>` is `sha256:` or
//!   `sha512:`; a malformed digest or another algorithm is 400 `DIGEST_INVALID`
//!   (distribution spec, "Pushing blobs"). The 201 carries `Berth-Diff-Id`
//!   / `Berth-Uncompressed-Size` when this process measured the whole
//!   session (every byte streamed through it) and the blob is a layer.
//! * Chunk order (distribution spec: "If a chunk is uploaded out of order, the
//!   registry MUST respond with a `416`", for the PATCH and the closing PUT's
//!   chunk alike): 416 `RANGE_INVALID` with `Range: 0-<offset-1>`, `Location`
//!   and `Docker-Upload-UUID`; nothing of the session changes, a small unread
//!   body is drained so the connection stays usable, and the client goes on
//!   from the offset it was told.
//! * `GET <location>` → 204 + `Range`; `DELETE <location>` → 204.
//! * Unknown session: 404 `BLOB_UPLOAD_UNKNOWN`.
//!
//! A session is bound to the repository and the user that opened it
//! ([`UploadOwner`], recorded in the session, so every server process on
//! the store knows it). Anyone else, and the owner through another
//! repository, gets the unknown-session answer for GET/PATCH/PUT/DELETE
//! (issue 14). Sessions opened before this binding existed carry no owner:
//! they are refused while an access file is in force and continue as
//! before without one (every key may then write everywhere anyway).
//!
//! Every blob a session or mount makes visible is linked into the
//! repository with the reason ([`LinkVia`]); a mount needs read on `from`
//! and, under an access file (or for anonymous callers), the blob linked
//! in `from`.
//!
//! * One writer per session (issue 15): a PATCH or PUT while another request
//!   writes the session → 416 `RANGE_INVALID` "upload session busy" with the
//!   session's current `Range` (never queued behind it); a session whose file
//!   changed under the close → 400 `BLOB_UPLOAD_INVALID`, nothing published.
//!   A transient storage error (ESTALE, EIO, ENOLCK) → 503 `UNAVAILABLE` with
//!   `Retry-After` (`errors.rs`).

use berth_transport::wire::{LAST_CHUNK_HEADER, UPLOAD_DIGEST_HEADER, UPLOAD_UUID_HEADER};
use http::request::Parts;
use http::{header, Response, StatusCode};

use super::errors::{ErrorCode, OrV2, V2Error};
use super::routes::{query_param, Name};
use super::{located, with_digest, with_layer_facts, V2Result};
use crate::names::Digest;
use crate::registry::{blocking, response, Identity, Registry, ReqBody, RespBody};
use crate::store::manifests::LinkVia;
use crate::store::uploads::{UploadError, UploadId, UploadOwner};
use crate::store::Store;

fn upload_location(name: &Name, id: &UploadId) -> String {
    format!("/v2/{}/blobs/uploads/{}", name.raw, id.as_str())
}

fn blob_location(name: &Name, d: &Digest) -> String {
    format!("/v2/{}/blobs/{}", name.raw, d)
}

/// The 202/204 answer describing a session at `offset`; `digest` (of the
/// bytes it holds) when known.
fn session_answer(
    status: StatusCode,
    name: &Name,
    id: &UploadId,
    offset: u64,
    digest: Option<&Digest>,
) -> Response<RespBody> {
    let mut r = located(status, &upload_location(name, id));
    let h = r.headers_mut();
    response::set_header(h, UPLOAD_UUID_HEADER, id.as_str());
    // distribution's form: `0-0` for an empty session, else `0-<last byte>`.
    response::set_header(h, "range", &format!("0-{}", offset.saturating_sub(1)));
    if let Some(d) = digest {
        response::set_header(h, UPLOAD_DIGEST_HEADER, d.as_str());
    }
    r
}

/// A write refused without touching the session — a chunk out of order, or
/// another request holding the session: the V2 error (416) with the
/// session's `Range`, `Location` and `Docker-Upload-UUID`, so the client can
/// go on from the offset it is told (or ask `GET <location>`). Other errors
/// pass through as they are.
fn refused(name: &Name, id: &UploadId, e: UploadError) -> V2Result {
    let offset = match e {
        UploadError::Busy { offset } | UploadError::RangeInvalid { offset, .. } => offset,
        other => return Err(vec![other.into()]),
    };
    let mut r = super::errors::render(&[e.into()]);
    let h = r.headers_mut();
    response::set_header(h, "location", &upload_location(name, id));
    response::set_header(h, UPLOAD_UUID_HEADER, id.as_str());
    response::set_header(h, "range", &format!("0-{}", offset.saturating_sub(1)));
    Ok(r)
}

/// Whether a write was refused before any byte of its body was read (the
/// body is then drained, as for the handlers' own refusals).
fn refused_unread(e: &UploadError) -> bool {
    matches!(
        e,
        UploadError::Busy { .. } | UploadError::RangeInvalid { .. }
    )
}

/// `?digest-algorithm=` of a session POST (distribution spec: a client
/// pushing with another algorithm than sha256 SHOULD name it): sha256 and
/// sha512 are accepted, anything else is 400 `DIGEST_INVALID` like an
/// unsupported digest. Nothing is recorded: the closing PUT's digest names
/// the algorithm the session is verified with.
fn check_digest_algorithm(req: &Parts) -> Result<(), Vec<V2Error>> {
    match query_param(req.uri.query(), "digest-algorithm") {
        Some(a) if crate::names::Algorithm::from_name(&a).is_none() => Err(vec![V2Error::new(
            ErrorCode::DigestInvalid,
            format!("unsupported digest algorithm {a:?} (berth supports sha256 and sha512)"),
        )]),
        _ => Ok(()),
    }
}

fn digest_param(req: &Parts, key: &str) -> Result<Option<Digest>, Vec<V2Error>> {
    match query_param(req.uri.query(), key) {
        None => Ok(None),
        Some(s) => Digest::parse(&s)
            .map(Some)
            .map_err(|e| vec![V2Error::new(ErrorCode::DigestInvalid, e.to_string())]),
    }
}

/// Makes a just-uploaded blob visible in the repository it was pushed to.
async fn link(store: &Store, name: &Name, digest: &Digest) -> Result<(), Vec<V2Error>> {
    let (s, r, d) = (store.clone(), name.repo.clone(), digest.clone());
    blocking(move || s.link_blob_to_repo(&r, &d, &LinkVia::Upload))
        .await
        .v2()
}

fn unknown_session() -> Vec<V2Error> {
    vec![V2Error::new(
        ErrorCode::BlobUploadUnknown,
        "upload session unknown",
    )]
}

/// The owner record a session started by `who` in `name` gets.
fn owner_of(name: &Name, who: &Identity) -> UploadOwner {
    UploadOwner {
        repository: name.repo.full(),
        user: who.user.clone(),
    }
}

/// Lets a request on session `id` through only for its owner, in the
/// repository it was opened in; everyone else sees an unknown session
/// (module doc). A session that does not exist passes: the operation
/// itself answers that it is unknown.
async fn check_owner(
    reg: &Registry,
    name: &Name,
    id: &UploadId,
    who: &Identity,
) -> Result<(), Vec<V2Error>> {
    let (s, i) = (reg.store().clone(), id.clone());
    let allowed = match blocking(move || s.upload_owner(&i)).await.v2()? {
        Some(owner) => owner == owner_of(name, who),
        None => !reg.access().has_file(),
    };
    if allowed {
        Ok(())
    } else {
        tracing::info!(user = %who.user, repository = %name.repo, upload = id.as_str(),
            "upload session refused: not the caller's, or not in this repository");
        Err(unknown_session())
    }
}

/// The `from` repository of a mount: a valid name the caller may read.
fn mount_source(
    reg: &Registry,
    req: &Parts,
    who: &Identity,
) -> Result<Option<crate::names::RepoName>, Vec<V2Error>> {
    let Some(from) = query_param(req.uri.query(), "from") else {
        return Ok(None);
    };
    let from = crate::names::RepoName::parse(&from)
        .map_err(|e| vec![V2Error::new(ErrorCode::NameInvalid, e.to_string())])?;
    reg.access()
        .check(who, from.namespace(), crate::access::Action::Read)
        .map_err(|d| vec![super::denied(d)])?;
    Ok(Some(from))
}

/// `POST /v2/<name>/blobs/uploads/`
pub async fn start(
    reg: &Registry,
    name: &Name,
    req: &Parts,
    body: ReqBody,
    who: &Identity,
) -> V2Result {
    if let Err(e) = check_digest_algorithm(req) {
        crate::registry::drain_small_body(body).await;
        return Err(e);
    }
    let store = reg.store().clone();
    // A mount source must be a valid name the caller may read; otherwise
    // the mount is refused outright (no session is opened).
    let from = match mount_source(reg, req, who) {
        Ok(from) => from,
        Err(e) => {
            crate::registry::drain_small_body(body).await;
            return Err(e);
        }
    };
    // Under access rules the blob must really be in the (readable) source
    // repository; otherwise the pool's presence would leak across namespaces.
    let restricted = reg.access().has_file() || who.is_anonymous();
    if let Some(Ok(mount)) = query_param(req.uri.query(), "mount").map(|m| Digest::parse(&m)) {
        let s = store.clone();
        let d = mount.clone();
        let repo = name.repo.clone();
        let via = LinkVia::Mount {
            from: from.as_ref().map(|f| f.full()),
        };
        let from = from.clone();
        let mounted = blocking(move || -> std::io::Result<bool> {
            if s.blob_size(&d)?.is_none() {
                return Ok(false);
            }
            if restricted {
                match &from {
                    Some(f) if s.blob_in_repo(f, &d)? => {}
                    _ => return Ok(false),
                }
            }
            s.link_blob_to_repo(&repo, &d, &via)?;
            // Nothing was written to the blob: until the push's manifest
            // PUT names it, only this keeps gc from it.
            s.renew_held_for_gc(&d);
            Ok(true)
        });
        if mounted.await.v2()? {
            tracing::info!(user = %who.log_user(), repository = %name.repo, blob = %mount, "blob mounted");
            return Ok(with_digest(
                located(StatusCode::CREATED, &blob_location(name, &mount)),
                &mount,
            ));
        }
    }
    let digest = match digest_param(req, "digest") {
        Ok(digest) => digest,
        Err(e) => {
            crate::registry::drain_small_body(body).await;
            return Err(e);
        }
    };
    if let Some(digest) = digest {
        let (size, facts) = store.put_blob(body, &digest).await.v2()?;
        link(&store, name, &digest).await?;
        tracing::info!(user = %who.log_user(), repository = %name.repo, blob = %digest, size, "blob uploaded (monolithic)");
        reg.audit(
            who,
            crate::audit::AuditEvent {
                op: "blob.upload",
                repository: Some(name.repo.full()),
                digest: Some(digest.to_string()),
                ..Default::default()
            },
        )
        .await;
        return Ok(with_layer_facts(
            with_digest(
                located(StatusCode::CREATED, &blob_location(name, &digest)),
                &digest,
            ),
            facts.as_ref(),
        ));
    }
    drop(body);
    let owner = owner_of(name, who);
    let id = blocking(move || -> std::io::Result<UploadId> {
        let id = store.start_upload()?;
        store.bind_upload(&id, &owner)?;
        Ok(id)
    })
    .await
    .v2()?;
    let empty = Digest::of_bytes(b"");
    Ok(session_answer(
        StatusCode::ACCEPTED,
        name,
        &id,
        0,
        Some(&empty),
    ))
}

/// The chunk range of a PATCH or closing PUT: `Content-Range` parsed, and
/// checked against `Content-Length` when both are given (400 `SIZE_INVALID`).
fn chunk_range(req: &Parts) -> Result<Option<(u64, u64)>, Vec<V2Error>> {
    let range = content_range(req)?;
    if let (Some((a, b)), Some(len)) = (range, content_length(req)) {
        if len != b - a + 1 {
            return Err(vec![V2Error::new(
                ErrorCode::SizeInvalid,
                format!("Content-Length {len} does not match Content-Range {a}-{b}"),
            )]);
        }
    }
    Ok(range)
}

/// Parses `Content-Range: <start>-<end>` (also tolerating a `bytes ` prefix).
fn content_range(req: &Parts) -> Result<Option<(u64, u64)>, Vec<V2Error>> {
    let Some(v) = req.headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        vec![V2Error::new(
            ErrorCode::RangeInvalid,
            "malformed Content-Range",
        )]
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s
        .strip_prefix("bytes=")
        .or_else(|| s.strip_prefix("bytes "))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if b < a {
        return Err(bad());
    }
    Ok(Some((a, b)))
}

fn content_length(req: &Parts) -> Option<u64> {
    req.headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `PATCH <location>`
pub async fn patch(
    reg: &Registry,
    name: &Name,
    id: UploadId,
    req: &Parts,
    body: ReqBody,
    who: &Identity,
) -> V2Result {
    let checked = async {
        check_owner(reg, name, &id, who).await?;
        chunk_range(req)
    };
    // A refusal leaves the body unread: drain a small one so the
    // connection stays usable (hyper closes it otherwise).
    let range = match checked.await {
        Ok(range) => range,
        Err(e) => {
            crate::registry::drain_small_body(body).await;
            return Err(e);
        }
    };
    let mut body = body;
    let last = req
        .headers
        .get(LAST_CHUNK_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let (offset, digest, measured) = match reg
        .store()
        .append_upload(&id, &mut body, range.map(|(a, _)| a), last)
        .await
    {
        Ok(done) => done,
        Err(e) => {
            if refused_unread(&e) {
                crate::registry::drain_small_body(body).await;
            }
            return refused(name, &id, e);
        }
    };
    Ok(with_layer_facts(
        session_answer(StatusCode::ACCEPTED, name, &id, offset, Some(&digest)),
        measured.as_ref().map(|m| &m.facts),
    ))
}

/// `PUT <location>?digest=<d>`
pub async fn close(
    reg: &Registry,
    name: &Name,
    id: UploadId,
    req: &Parts,
    body: ReqBody,
    who: &Identity,
) -> V2Result {
    let store = reg.store().clone();
    let checked = async {
        check_owner(reg, name, &id, who).await?;
        let s = store.clone();
        let i = id.clone();
        if blocking(move || s.upload_offset(&i)).await.v2()?.is_none() {
            return Err(unknown_session());
        }
        let range = chunk_range(req)?;
        match digest_param(req, "digest") {
            Ok(Some(d)) => Ok((d, range)),
            Ok(None) => Err(vec![V2Error::new(
                ErrorCode::DigestInvalid,
                "the closing PUT needs ?digest=",
            )]),
            Err(e) => {
                let s = store.clone();
                let i = id.clone();
                let _ = blocking(move || s.cancel_upload(&i)).await;
                Err(e)
            }
        }
    };
    // As in `patch`: a refusal drains a small unread body.
    let (digest, range) = match checked.await {
        Ok(checked) => checked,
        Err(e) => {
            crate::registry::drain_small_body(body).await;
            return Err(e);
        }
    };
    let mut body = body;
    let (size, facts) = match store
        .finish_upload(&id, &mut body, &digest, range.map(|(a, _)| a))
        .await
    {
        Ok(size) => size,
        Err(e) => {
            if refused_unread(&e) {
                crate::registry::drain_small_body(body).await;
            }
            return refused(name, &id, e);
        }
    };
    link(&store, name, &digest).await?;
    tracing::info!(user = %who.log_user(), repository = %name.repo, blob = %digest, size, "blob uploaded");
    reg.audit(
        who,
        crate::audit::AuditEvent {
            op: "blob.upload",
            repository: Some(name.repo.full()),
            digest: Some(digest.to_string()),
            ..Default::default()
        },
    )
    .await;
    Ok(with_layer_facts(
        with_digest(
            located(StatusCode::CREATED, &blob_location(name, &digest)),
            &digest,
        ),
        facts.as_ref(),
    ))
}

/// `GET <location>`
pub async fn status(reg: &Registry, name: &Name, id: UploadId, who: &Identity) -> V2Result {
    check_owner(reg, name, &id, who).await?;
    let store = reg.store().clone();
    let i = id.clone();
    match blocking(move || store.upload_offset(&i)).await.v2()? {
        Some(offset) => Ok(session_answer(
            StatusCode::NO_CONTENT,
            name,
            &id,
            offset,
            None,
        )),
        None => Err(unknown_session()),
    }
}

/// `DELETE <location>`: only the owner, through the session's repository.
pub async fn cancel(reg: &Registry, name: &Name, id: UploadId, who: &Identity) -> V2Result {
    check_owner(reg, name, &id, who).await?;
    let store = reg.store().clone();
    if blocking(move || store.cancel_upload(&id)).await.v2()? {
        Ok(response::empty(StatusCode::NO_CONTENT))
    } else {
        Err(unknown_session())
    }
}
