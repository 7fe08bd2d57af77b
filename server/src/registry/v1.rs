//! The Registry V1 HTTP API (`v1-protocol.md` §2–3): image json, layer,
//! ancestry and checksum; tags; the index endpoints (repository PUT/DELETE,
//! image lists); users (login); search.
//!
//! Status codes and messages follow the reference server, with the fixes of
//! §8: RFC ranges, 400 instead of 500 for a checksum before the layer, a temp
//! file for layers, and 404 for unknown repositories' json.

// Handlers return `Result<Response, Response>`: the error *is* the HTTP
// answer, built once and sent as is, so boxing it would only add a hop.
#![allow(clippy::result_large_err)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::response::{self, no_cache, set_header, v1_error, ReqBody, RespBody};
use super::route::V1Route;
use super::{blocking, Identity, Registry};
use crate::access::{Action, Denied};
use crate::audit::AuditEvent;
use crate::names::{ImageId, RepoName, Tag};
use crate::store::v1::{image_json_parent, ChecksumPut, ImageState};
use crate::store::StoreError;

/// `X-Docker-Registry-Version` sent on ping.
pub const REGISTRY_VERSION: &str = "0.9.1";

/// Dispatches one V1 route.
pub async fn handle(
    reg: &Registry,
    route: V1Route,
    req: Request<ReqBody>,
    who: &Identity,
) -> Response<RespBody> {
    use V1Route::*;
    let (parts, body) = req.into_parts();
    let req = &parts;
    let m = req.method.clone();
    let get = m == Method::GET || m == Method::HEAD;
    if let Err(denied) = authorize(reg, &route, &m, who).await {
        super::drain_small_body(body).await;
        return denied;
    }
    let result: Result<Response<RespBody>, Response<RespBody>> = match (route, get, &m) {
        (Root, true, _) => Ok(response::json(
            StatusCode::OK,
            &json!("docker-registry server"),
        )),
        (Ping, true, _) => Ok(ping()),
        (ImageJson(id), true, _) => get_image_json(reg, id).await,
        (ImageJson(id), _, &Method::PUT) => put_image_json(reg, id, body, who).await,
        (ImageLayer(id), true, _) => get_image_layer(reg, id, req).await,
        (ImageLayer(id), _, &Method::PUT) => put_image_layer(reg, id, body, who).await,
        (ImageAncestry(id), true, _) => get_ancestry(reg, id).await,
        (ImageChecksum(id), _, &Method::PUT) => put_checksum(reg, id, req, who).await,
        (Tags(repo), true, _) => get_tags(reg, repo).await,
        (Tags(repo), _, &Method::DELETE) => delete_repository(reg, repo, who).await,
        (Tag(repo, tag), true, _) => get_tag(reg, repo, tag).await,
        (Tag(repo, tag), _, &Method::PUT) => put_tag(reg, repo, tag, req, body, who).await,
        (Tag(repo, tag), _, &Method::DELETE) => delete_tag(reg, repo, tag, who).await,
        (TagJson(repo, tag), true, _) => get_tag_json(reg, repo, tag).await,
        (RepoJson(repo), true, _) => get_repo_json(reg, repo).await,
        (Repository(repo), _, &Method::PUT) => put_repository(reg, repo, req, body, who).await,
        (Repository(repo), _, &Method::DELETE) => delete_repository(reg, repo, who).await,
        (RepoImages(repo), true, _) => get_repo_images(reg, repo, req).await,
        (RepoImages(repo), _, &Method::PUT) => put_repo_images(reg, repo, req, body, who).await,
        (RepoImages(repo), _, &Method::DELETE) => Ok(index_headers(
            response::empty(StatusCode::NO_CONTENT),
            reg,
            &repo,
            req,
            "delete",
        )),
        (RepoAuth(_), _, &Method::PUT) => Ok(response::json(StatusCode::OK, &json!("OK"))),
        (RepoProperties(repo), true, _) => get_properties(reg, repo).await,
        (RepoProperties(repo), _, &Method::PUT) => put_properties(reg, repo, body, who).await,
        (Users, true, _) => Ok(response::json(StatusCode::OK, &json!("OK"))),
        // Tells 1.0–1.10 clients to continue with the GET that logs in.
        (Users, _, &Method::POST) => create_user(reg, body, who).await,
        (User(_), _, &Method::PUT) => Ok(response::empty(StatusCode::NO_CONTENT)),
        (Search, true, _) => search(reg, req, who).await,
        _ => Err(v1_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        )),
    };
    result.unwrap_or_else(|e| e)
}

type V1Result = Result<Response<RespBody>, Response<RespBody>>;

/// Runs store work on the blocking pool and turns a store error into the V1
/// answer: the one place handlers meet the store.
async fn on_store<T, F>(reg: &Registry, f: F) -> Result<T, Response<RespBody>>
where
    F: FnOnce(crate::store::Store) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let store = reg.store().clone();
    blocking(move || f(store)).await.map_err(store_error)
}

/// The V1 answer to a denied request: 401 (with `WWW-Authenticate: Token`)
/// for keyless clients, 403 for authenticated ones.
pub(crate) fn denied(d: Denied) -> Response<RespBody> {
    if d.anonymous {
        let mut r = v1_error(StatusCode::UNAUTHORIZED, &d.reason);
        set_header(r.headers_mut(), "www-authenticate", "Token");
        r
    } else {
        v1_error(StatusCode::FORBIDDEN, &d.reason)
    }
}

/// Checks the caller's rights for a route before anything else happens.
/// Images carry no repository in V1 URLs: reading one needs a readable
/// repository whose tags reference it, or proof of possession
/// ([`image_readable`]); writing one needs write access somewhere (the tag
/// PUT then ties it to a repository, checked there).
async fn authorize(
    reg: &Registry,
    route: &V1Route,
    m: &Method,
    who: &Identity,
) -> Result<(), Response<RespBody>> {
    use V1Route::*;
    let access = reg.access();
    let get = m == Method::GET || m == Method::HEAD;
    let check =
        |repo: &RepoName, action| access.check(who, repo.namespace(), action).map_err(denied);
    match route {
        Root | Ping | Users | User(_) | Search => Ok(()),
        ImageJson(id) | ImageLayer(id) | ImageAncestry(id) if get => {
            require_image_readable(reg, who, id).await
        }
        ImageJson(_) | ImageLayer(_) | ImageAncestry(_) | ImageChecksum(_) => {
            if access.policy().writes_somewhere(who.subject()) {
                Ok(())
            } else {
                Err(denied(Denied {
                    reason: format!("user {} may not push images anywhere", who.user),
                    anonymous: who.is_anonymous(),
                }))
            }
        }
        Tags(r) | Tag(r, _) | TagJson(r, _) | RepoJson(r) | RepoImages(r) | RepoProperties(r)
            if get =>
        {
            check(r, Action::Read)
        }
        Tags(r) | Tag(r, _) | Repository(r) if m == Method::DELETE => check(r, Action::Delete),
        Tags(r)
        | Tag(r, _)
        | TagJson(r, _)
        | RepoJson(r)
        | Repository(r)
        | RepoImages(r)
        | RepoAuth(r)
        | RepoProperties(r) => check(r, Action::Write),
    }
}

/// Fails unless `who` may read image `id` (see [`image_readable`]). The
/// answer is the one a missing image gets: nothing about what exists leaks.
pub(crate) async fn require_image_readable(
    reg: &Registry,
    who: &Identity,
    id: &ImageId,
) -> Result<(), Response<RespBody>> {
    if image_readable(reg, who, id).await {
        Ok(())
    } else {
        Err(v1_error(StatusCode::NOT_FOUND, "Image not found"))
    }
}

/// Whether `who` may read V1 image `id` (issue 14): V1 ids are global, so
/// an image is readable through a repository the caller may read whose
/// tags reference it (the tagged image or an ancestor, which includes the
/// V1 view of a V2 push), or when the caller proved possession by
/// uploading its exact json and layer bytes (`store::possession`).
/// Announcing an id in an index list grants nothing. Without an access
/// file every key reads everything.
async fn image_readable(reg: &Registry, who: &Identity, id: &ImageId) -> bool {
    let access = reg.access();
    if !access.has_file() && !who.is_anonymous() {
        return true;
    }
    let policy = access.policy();
    let subject = who.subject().map(str::to_string);
    let store = reg.store().clone();
    let id = id.clone();
    blocking(move || {
        if subject.as_deref().is_some_and(|u| store.has_proven(&id, u)) {
            return true;
        }
        let repos = store.list_repositories().unwrap_or_default();
        repos
            .iter()
            .filter(|r| policy.allows(subject.as_deref(), r.namespace(), Action::Read))
            .any(|r| store.repository_references(r, &id))
    })
    .await
}

/// Maps a store error to the V1 answer; server faults are logged, not sent.
fn store_error(e: StoreError) -> Response<RespBody> {
    match e {
        StoreError::NotFound(m) => v1_error(StatusCode::NOT_FOUND, &m),
        StoreError::InProgress => {
            v1_error(StatusCode::BAD_REQUEST, &StoreError::InProgress.to_string())
        }
        StoreError::Exists => v1_error(StatusCode::CONFLICT, "Image already exists"),
        StoreError::Invalid(m) => v1_error(StatusCode::BAD_REQUEST, &m),
        StoreError::Conflict(m) => v1_error(StatusCode::CONFLICT, &m),
        StoreError::Interrupted(m) => {
            v1_error(StatusCode::BAD_REQUEST, &format!("Upload interrupted: {m}"))
        }
        // As in V2 (`v2::errors::V2Error::storage`): a shared filesystem
        // briefly away is "try again", never a silent 500.
        StoreError::Io(e) if crate::store::transient::is_transient_chain(&e) => {
            tracing::warn!(error = %e, "V1 request failed on a transient storage error");
            let mut r = v1_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("Storage temporarily unavailable ({e}); nothing was changed, retry"),
            );
            response::set_header(
                r.headers_mut(),
                "retry-after",
                &super::v2::errors::RETRY_AFTER_SECS.to_string(),
            );
            r
        }
        StoreError::Io(e) => {
            tracing::error!(error = %e, "storage failure");
            v1_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Storage error: {}", e.kind()),
            )
        }
    }
}

/// Reads a small JSON request body, refusing anything over the caller's cap
/// ([`super::RegistryConfig::json_body_limit`]): a declared length over it
/// is answered 413 before a byte of the body is read, a streamed body as
/// soon as it passes the cap.
pub(crate) async fn read_small_body(
    reg: &Registry,
    who: &Identity,
    mut body: ReqBody,
) -> Result<Bytes, Response<RespBody>> {
    let limit = reg.config().json_body_limit(who);
    let too_large = || {
        v1_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("Request body larger than {limit} bytes"),
        )
    };
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            v1_error(
                StatusCode::BAD_REQUEST,
                &format!("Error reading request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn ping() -> Response<RespBody> {
    let mut r = no_cache(response::json(StatusCode::OK, &json!({})));
    set_header(
        r.headers_mut(),
        "x-docker-registry-version",
        REGISTRY_VERSION,
    );
    set_header(r.headers_mut(), "x-docker-registry-standalone", "True");
    r
}

/// Headers that make immutable image data cacheable for a year.
fn cacheable(mut r: Response<RespBody>) -> Response<RespBody> {
    let h = r.headers_mut();
    set_header(h, "cache-control", "public, max-age=31536000");
    let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(31_536_000));
    set_header(h, "expires", &expires);
    set_header(h, "last-modified", "Thu, 01 Jan 1970 00:00:00 GMT");
    r
}

// ---- images ---------------------------------------------------------------

/// `GET /v1/images/<id>/json`: 200 verbatim, with `X-Docker-Size` and
/// `X-Docker-Checksum-Payload`; 404 missing; 400 being uploaded.
async fn get_image_json(reg: &Registry, id: ImageId) -> V1Result {
    let (json, size, sums) = on_store(reg, move |store| {
        let json = store.image_json(&id)?;
        let size = store.image_layer_size(&id)?;
        let sums = store.payload_checksums(&id)?;
        Ok::<_, StoreError>((json, size, sums))
    })
    .await?;
    let mut r = cacheable(response::json_bytes(StatusCode::OK, json));
    if let Some(size) = size {
        set_header(r.headers_mut(), "x-docker-size", &size.to_string());
    }
    for sum in sums {
        if let Ok(v) = http::HeaderValue::try_from(sum) {
            r.headers_mut().append("x-docker-checksum-payload", v);
        }
    }
    Ok(r)
}

/// `PUT /v1/images/<id>/json`: 200; 400 invalid / missing (or unreadable)
/// parent; 409 `Image already exists` when the caller can read it (a Docker
/// client then skips the image), 409 with another message when it exists
/// with other bytes. Identical bytes of an image the caller cannot read
/// answer 200: the caller goes on to prove possession (layer, checksum).
async fn put_image_json(reg: &Registry, id: ImageId, body: ReqBody, who: &Identity) -> V1Result {
    let body = read_small_body(reg, who, body).await?;
    let parent = image_json_parent(&id, &body).map_err(store_error)?;
    if let Some(parent) = &parent {
        // A child would put its parent in the ancestry of the caller's tags.
        if !image_readable(reg, who, parent).await {
            return Err(v1_error(
                StatusCode::BAD_REQUEST,
                "Image depends on a non existing parent",
            ));
        }
    }
    let id2 = id.clone();
    let published = on_store(reg, move |store| Ok(store.image_state(&id2)?)).await?;
    if published == ImageState::Published && image_readable(reg, who, &id).await {
        return Err(store_error(StoreError::Exists));
    }
    let (id2, user) = (id.clone(), who.user.clone());
    on_store(reg, move |store| store.put_image_json(&id2, &body, &user)).await?;
    reg.audit(who, AuditEvent::new("image.json").image(&id))
        .await;
    Ok(no_cache(response::json(StatusCode::OK, &json!(true))))
}

/// `GET /v1/images/<id>/layer`: streamed, ranges honoured.
async fn get_image_layer(reg: &Registry, id: ImageId, req: &Parts) -> V1Result {
    let (file, size) = on_store(reg, move |store| store.open_image_layer(&id)).await?;
    let head = req.method == Method::HEAD;
    let r = response::file_response(file, size, req.headers.get(header::RANGE), head)
        .await
        .map_err(|e| store_error(e.into()))?;
    Ok(cacheable(r))
}

/// `PUT /v1/images/<id>/layer`: chunked or sized body streamed to a temp file.
async fn put_image_layer(reg: &Registry, id: ImageId, body: ReqBody, who: &Identity) -> V1Result {
    // Refused before any byte is read: drain a small body so the
    // connection stays usable and the client reads the answer.
    let (id2, user) = (id.clone(), who.user.clone());
    if let Err(e) = on_store(reg, move |store| store.layer_put_state(&id2, &user)).await {
        super::drain_small_body(body).await;
        return Err(e);
    }
    let size = reg
        .store()
        .put_image_layer(&id, body, &who.user)
        .await
        .map_err(store_error)?;
    tracing::debug!(image = %id, bytes = size, "layer stored");
    reg.audit(who, AuditEvent::new("image.layer").image(&id))
        .await;
    Ok(no_cache(response::json(StatusCode::OK, &json!(true))))
}

/// `GET /v1/images/<id>/ancestry`: the stored list, self first.
async fn get_ancestry(reg: &Registry, id: ImageId) -> V1Result {
    let bytes = on_store(reg, move |store| store.image_ancestry(&id)).await?;
    Ok(cacheable(response::json_bytes(StatusCode::OK, bytes)))
}

/// `PUT /v1/images/<id>/checksum`: 412 without the payload header, 400 empty
/// or mismatching, 404 no json, 409 not in progress (nor the end of the
/// caller's proof of possession); 200 publishes, or completes that proof.
async fn put_checksum(reg: &Registry, id: ImageId, req: &Parts, who: &Identity) -> V1Result {
    let Some(value) = req.headers.get("x-docker-checksum-payload") else {
        return Err(v1_error(
            StatusCode::PRECONDITION_FAILED,
            "Missing X-Docker-Checksum-Payload header: upgrade your docker client to 0.10 or later",
        ));
    };
    let payload = value.to_str().unwrap_or("").trim().to_string();
    if payload.is_empty() {
        return Err(v1_error(
            StatusCode::BAD_REQUEST,
            "Missing Image's checksum",
        ));
    }
    let (id2, user) = (id.clone(), who.user.clone());
    let done = on_store(reg, move |store| {
        store.put_image_checksum(&id2, &payload, &user)
    })
    .await?;
    let op = match done {
        ChecksumPut::Published => "image.publish",
        ChecksumPut::Proven => "image.possession",
    };
    reg.audit(who, AuditEvent::new(op).image(&id)).await;
    Ok(no_cache(response::json(StatusCode::OK, &json!(true))))
}

// ---- tags -----------------------------------------------------------------

async fn get_tags(reg: &Registry, repo: RepoName) -> V1Result {
    let tags = on_store(reg, move |store| store.list_tags(&repo)).await?;
    Ok(no_cache(response::json(StatusCode::OK, &json!(tags))))
}

async fn get_tag(reg: &Registry, repo: RepoName, tag: Tag) -> V1Result {
    let id = on_store(reg, move |store| store.get_tag(&repo, &tag)).await?;
    Ok(no_cache(response::json(
        StatusCode::OK,
        &json!(id.as_str()),
    )))
}

/// `PUT .../tags/<tag>` with body `"<id>"`: 200; 400 invalid data; 404 no
/// image, or one the caller may not read (announcing it grants nothing).
async fn put_tag(
    reg: &Registry,
    repo: RepoName,
    tag: Tag,
    req: &Parts,
    body: ReqBody,
    who: &Identity,
) -> V1Result {
    let meta = tag_metadata(req.headers.get(header::USER_AGENT));
    let body = read_small_body(reg, who, body).await?;
    let id = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::String(s)) => s,
        _ => return Err(v1_error(StatusCode::BAD_REQUEST, "Invalid data")),
    };
    let id = ImageId::parse(&id).map_err(|_| v1_error(StatusCode::NOT_FOUND, "Image not found"))?;
    require_image_readable(reg, who, &id).await?;
    let (r2, t2, i2) = (repo.clone(), tag.clone(), id.clone());
    let meta = serde_json::to_vec(&meta).unwrap_or_default();
    on_store(reg, move |store| store.put_tag(&r2, &t2, &i2, &meta)).await?;
    reg.audit(
        who,
        AuditEvent::new("tag.put")
            .repository(&repo)
            .tag(&tag)
            .image(&id),
    )
    .await;
    Ok(no_cache(response::json(StatusCode::OK, &json!(true))))
}

async fn delete_tag(reg: &Registry, repo: RepoName, tag: Tag, who: &Identity) -> V1Result {
    let (r2, t2) = (repo.clone(), tag.clone());
    on_store(reg, move |store| store.delete_tag(&r2, &t2)).await?;
    reg.audit(
        who,
        AuditEvent::new("tag.delete").repository(&repo).tag(&tag),
    )
    .await;
    Ok(no_cache(response::json(StatusCode::OK, &json!(true))))
}

/// Default tag metadata when none was recorded (`v1-protocol.md` §2.7).
fn default_tag_metadata() -> Value {
    json!({"last_update": null, "docker_version": null, "docker_go_version": null,
           "arch": "amd64", "kernel": null, "os": "linux"})
}

async fn get_tag_json(reg: &Registry, repo: RepoName, tag: Tag) -> V1Result {
    let meta = on_store(reg, move |store| {
        store.get_tag(&repo, &tag)?;
        Ok::<_, StoreError>(store.tag_json(&repo, &tag)?)
    })
    .await?;
    Ok(no_cache(match meta {
        Some(bytes) => response::json_bytes(StatusCode::OK, bytes),
        None => response::json(StatusCode::OK, &default_tag_metadata()),
    }))
}

async fn get_repo_json(reg: &Registry, repo: RepoName) -> V1Result {
    let meta = on_store(reg, move |store| {
        if !store.repo_exists(&repo) {
            return Err(StoreError::NotFound("Repository not found".into()));
        }
        Ok(store.repo_json(&repo)?)
    })
    .await?;
    Ok(no_cache(match meta {
        Some(bytes) => response::json_bytes(StatusCode::OK, bytes),
        None => response::json(StatusCode::OK, &default_tag_metadata()),
    }))
}

/// Tag metadata parsed from a Docker User-Agent such as
/// `docker/1.3.0 go/go1.3.3 kernel/3.16 os/linux arch/amd64`.
fn tag_metadata(ua: Option<&http::HeaderValue>) -> Value {
    let ua = ua.and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut meta = default_tag_metadata();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    meta["last_update"] = json!(now);
    for token in ua.split_whitespace() {
        let Some((k, v)) = token.split_once('/') else {
            continue;
        };
        let key = match k {
            "docker" => "docker_version",
            "go" => "docker_go_version",
            "kernel" => "kernel",
            "os" => "os",
            "arch" => "arch",
            _ => continue,
        };
        meta[key] = json!(v);
    }
    meta
}

// ---- repositories (index) ---------------------------------------------------

/// The index headers: `X-Docker-Endpoints` (configured, else the request's
/// Host), `X-Docker-Token` and `WWW-Authenticate: Token` (pitfall §8.4).
fn index_headers(
    mut r: Response<RespBody>,
    reg: &Registry,
    repo: &RepoName,
    req: &Parts,
    access: &str,
) -> Response<RespBody> {
    let endpoints = if reg.config().endpoints.is_empty() {
        req.headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost")
            .to_string()
    } else {
        reg.config().endpoints.join(", ")
    };
    let token = format!(
        "signature=berth,repository=\"{}\",access={access}",
        repo.full()
    );
    let h = r.headers_mut();
    set_header(h, "x-docker-endpoints", &endpoints);
    set_header(h, "x-docker-token", &token);
    set_header(h, "www-authenticate", &format!("Token {token}"));
    r
}

/// Parses a JSON array body of image entries.
fn image_list(body: &[u8]) -> Result<Vec<Value>, Response<RespBody>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) if items.iter().all(Value::is_object) => Ok(items),
        _ => Err(v1_error(StatusCode::BAD_REQUEST, "Invalid data")),
    }
}

/// Reads an announced image list (empty body = none) and merges it into the
/// repository's index, auditing it as `op`. Shared by the two index PUTs.
async fn merge_announced(
    reg: &Registry,
    repo: &RepoName,
    body: ReqBody,
    who: &Identity,
    op: &'static str,
) -> Result<(), Response<RespBody>> {
    let body = read_small_body(reg, who, body).await?;
    let items = if body.iter().all(u8::is_ascii_whitespace) {
        vec![]
    } else {
        image_list(&body)?
    };
    let r2 = repo.clone();
    on_store(reg, move |store| store.merge_index_images(&r2, &items)).await?;
    reg.audit(who, AuditEvent::new(op).repository(repo)).await;
    Ok(())
}

/// `PUT /v1/repositories/<r>/`: records the announced images; 200 + index headers.
async fn put_repository(
    reg: &Registry,
    repo: RepoName,
    req: &Parts,
    body: ReqBody,
    who: &Identity,
) -> V1Result {
    merge_announced(reg, &repo, body, who, "repository.put").await?;
    let r = no_cache(response::json(StatusCode::OK, &json!("")));
    Ok(index_headers(r, reg, &repo, req, "write"))
}

/// `PUT /v1/repositories/<r>/images`: merges the pushed images; **204**.
async fn put_repo_images(
    reg: &Registry,
    repo: RepoName,
    req: &Parts,
    body: ReqBody,
    who: &Identity,
) -> V1Result {
    merge_announced(reg, &repo, body, who, "repository.images").await?;
    Ok(index_headers(
        response::empty(StatusCode::NO_CONTENT),
        reg,
        &repo,
        req,
        "write",
    ))
}

/// `GET /v1/repositories/<r>/images`: the index list (start of a pull).
async fn get_repo_images(reg: &Registry, repo: RepoName, req: &Parts) -> V1Result {
    let r2 = repo.clone();
    let items = on_store(reg, move |store| store.index_images(&r2)).await?;
    let r = no_cache(response::json(StatusCode::OK, &Value::Array(items)));
    Ok(index_headers(r, reg, &repo, req, "read"))
}

/// `DELETE /v1/repositories/<r>/` (and `.../tags`): removes every tag and the
/// repository's records; images are kept for garbage collection.
async fn delete_repository(reg: &Registry, repo: RepoName, who: &Identity) -> V1Result {
    let r2 = repo.clone();
    on_store(reg, move |store| store.delete_repository(&r2)).await?;
    reg.audit(who, AuditEvent::new("repository.delete").repository(&repo))
        .await;
    Ok(no_cache(response::json(StatusCode::OK, &json!(true))))
}

async fn get_properties(reg: &Registry, repo: RepoName) -> V1Result {
    let private = on_store(reg, move |store| {
        if !store.repo_exists(&repo) {
            return Err(StoreError::NotFound("Repository not found".into()));
        }
        Ok(store.is_private(&repo))
    })
    .await?;
    let access = if private { "private" } else { "public" };
    Ok(no_cache(response::json(
        StatusCode::OK,
        &json!({ "access": access }),
    )))
}

async fn put_properties(reg: &Registry, repo: RepoName, body: ReqBody, who: &Identity) -> V1Result {
    let body = read_small_body(reg, who, body).await?;
    let private = match serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("access").cloned())
    {
        Some(Value::String(s)) if s == "private" => true,
        Some(Value::String(s)) if s == "public" => false,
        _ => {
            return Err(v1_error(
                StatusCode::BAD_REQUEST,
                "Invalid data: access must be \"private\" or \"public\"",
            ))
        }
    };
    let r2 = repo.clone();
    on_store(reg, move |store| store.set_private(&r2, private)).await?;
    reg.audit(
        who,
        AuditEvent::new("repository.properties").repository(&repo),
    )
    .await;
    Ok(no_cache(response::json(StatusCode::OK, &json!(true))))
}

/// `POST /v1/users/`: accounts are SSH keys, so nothing is created; the
/// reference's "already exists" answer tells 1.0–1.10 clients to continue
/// with the `GET /v1/users/` that logs in (`v1-protocol.md` §3.2).
async fn create_user(reg: &Registry, body: ReqBody, who: &Identity) -> V1Result {
    let body = read_small_body(reg, who, body).await?;
    if serde_json::from_slice::<Value>(&body).is_err() {
        return Err(v1_error(StatusCode::BAD_REQUEST, "Error Decoding JSON"));
    }
    Ok(response::json(
        StatusCode::BAD_REQUEST,
        &json!("Username or email already exists"),
    ))
}

// ---- search -----------------------------------------------------------------

/// Query parameters of a request, percent-decoded.
pub(crate) fn query_params(req: &Parts) -> Vec<(String, String)> {
    let q = req.uri.query().unwrap_or("");
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` and `+` in a query component (invalid escapes are kept as is).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|v| v as u8)
}

/// `GET /v1/search?q=<term>[&n=&page=]`: substring match over repository
/// names; without `n` every match is returned (docker-registry-client lists
/// namespaces this way).
async fn search(reg: &Registry, req: &Parts, who: &Identity) -> V1Result {
    let params = query_params(req);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let q = get("q").unwrap_or_default();
    let n: Option<usize> = get("n")
        .and_then(|v| v.parse().ok())
        .map(|n: usize| n.clamp(1, 100));
    let page: usize = get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let store = reg.store().clone();
    let repos = blocking(move || store.list_repositories())
        .await
        .map_err(|e| store_error(e.into()))?;
    let needle = q.to_lowercase();
    let policy = reg.access().policy();
    let matches: Vec<String> = repos
        .iter()
        .filter(|r| policy.allows(who.subject(), r.namespace(), Action::Read))
        .map(RepoName::full)
        .filter(|name| name.contains(&needle))
        .collect();
    let total = matches.len();
    let page_size = n.unwrap_or(total.max(1));
    let results: Vec<Value> = matches
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .map(|name| {
            json!({"name": name, "description": "", "star_count": 0, "is_official": false,
                   "is_trusted": false, "is_automated": false})
        })
        .collect();
    let pages = total.div_ceil(page_size);
    Ok(no_cache(response::json(
        StatusCode::OK,
        &json!({"query": q, "num_results": total, "num_pages": pages,
                "page": page, "page_size": page_size, "results": results}),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("x%2"), "x%2");
    }

    #[test]
    fn user_agent_metadata() {
        let ua = http::HeaderValue::from_static(
            "docker/1.3.0 go/go1.3.3 kernel/3.16 os/linux arch/amd64",
        );
        let m = tag_metadata(Some(&ua));
        assert_eq!(m["docker_version"], "1.3.0");
        assert_eq!(m["arch"], "amd64");
    }

    #[test]
    fn transient_storage_errors_answer_503_with_retry_after() {
        for errno in [libc::ESTALE, libc::EIO, libc::ENOLCK, libc::EROFS] {
            let r = store_error(StoreError::Io(std::io::Error::from_raw_os_error(errno)));
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "errno {errno}");
            assert_eq!(
                r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                Some(
                    super::super::v2::errors::RETRY_AFTER_SECS
                        .to_string()
                        .as_str()
                )
            );
        }
        let r = store_error(StoreError::Io(std::io::Error::from_raw_os_error(
            libc::ENOSPC,
        )));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().get("retry-after").is_none());
    }
}
