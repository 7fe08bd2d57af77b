//! The V1 index endpoints (`v1-protocol.md` §3.1): repository PUT and
//! DELETE, the image lists a push announces and a pull starts from, and
//! the repository's properties (private or public).

#![allow(clippy::result_large_err)]

use berth_transport::wire;
use http::request::Parts;
use http::{header, Response, StatusCode};
use serde_json::{json, Value};

use super::super::response::{self, no_cache, set_header, v1_error, ReqBody, RespBody};
use super::super::{Identity, Registry};
use super::{on_store, read_small_body, V1Result};
use crate::audit::AuditEvent;
use crate::names::RepoName;
use crate::store::StoreError;

/// The index headers: `X-Docker-Endpoints` (configured, else the request's
/// Host), `X-Docker-Token` and `WWW-Authenticate: Token` (pitfall §8.4).
pub(crate) fn index_headers(
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
    set_header(h, wire::V1_ENDPOINTS_HEADER, &endpoints);
    set_header(h, wire::V1_TOKEN_HEADER, &token);
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
pub(crate) async fn merge_announced(
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
pub(crate) async fn put_repository(
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
pub(crate) async fn put_repo_images(
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
pub(crate) async fn get_repo_images(reg: &Registry, repo: RepoName, req: &Parts) -> V1Result {
    let r2 = repo.clone();
    let items = on_store(reg, move |store| store.index_images(&r2)).await?;
    let r = no_cache(response::json(StatusCode::OK, &Value::Array(items)));
    Ok(index_headers(r, reg, &repo, req, "read"))
}

/// `DELETE /v1/repositories/<r>/` (and `.../tags`): removes every tag and the
/// repository's records; images are kept for garbage collection.
pub(crate) async fn delete_repository(reg: &Registry, repo: RepoName, who: &Identity) -> V1Result {
    let r2 = repo.clone();
    on_store(reg, move |store| store.delete_repository(&r2)).await?;
    reg.audit(who, AuditEvent::new("repository.delete").repository(&repo))
        .await;
    Ok(no_cache(response::json(StatusCode::OK, &json!(true))))
}

/// `GET /v1/repositories/<r>/properties`: `{"access": "private"|"public"}`;
/// 404 for an unknown repository.
pub(crate) async fn get_properties(reg: &Registry, repo: RepoName) -> V1Result {
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

/// `PUT /v1/repositories/<r>/properties` with `{"access": ...}`: marks the
/// repository private or public; 400 for anything else.
pub(crate) async fn put_properties(
    reg: &Registry,
    repo: RepoName,
    body: ReqBody,
    who: &Identity,
) -> V1Result {
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
