//! V1 tags (`v1-protocol.md` §2.5–2.7): list, read, set and delete a
//! repository's tags, and the tag metadata kept from the client's User-Agent.

#![allow(clippy::result_large_err)]

use std::time::{SystemTime, UNIX_EPOCH};

use http::request::Parts;
use http::{header, StatusCode};
use serde_json::{json, Value};

use super::super::response::{self, no_cache, v1_error, ReqBody};
use super::super::{Identity, Registry};
use super::authorize::require_image_readable;
use super::{on_store, read_small_body, V1Result};
use crate::audit::AuditEvent;
use crate::names::{ImageId, RepoName, Tag};
use crate::store::StoreError;

/// `GET /v1/repositories/<r>/tags`: `{tag: image id}`.
pub(crate) async fn get_tags(reg: &Registry, repo: RepoName) -> V1Result {
    let tags = on_store(reg, move |store| store.list_tags(&repo)).await?;
    Ok(no_cache(response::json(StatusCode::OK, &json!(tags))))
}

/// `GET /v1/repositories/<r>/tags/<t>`: the image id as a JSON string.
pub(crate) async fn get_tag(reg: &Registry, repo: RepoName, tag: Tag) -> V1Result {
    let id = on_store(reg, move |store| store.get_tag(&repo, &tag)).await?;
    Ok(no_cache(response::json(
        StatusCode::OK,
        &json!(id.as_str()),
    )))
}

/// `PUT .../tags/<tag>` with body `"<id>"`: 200; 400 invalid data; 404 no
/// image, or one the caller may not read (announcing it grants nothing).
pub(crate) async fn put_tag(
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

/// `DELETE /v1/repositories/<r>/tags/<t>`: removes the tag (the image stays).
pub(crate) async fn delete_tag(
    reg: &Registry,
    repo: RepoName,
    tag: Tag,
    who: &Identity,
) -> V1Result {
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

/// `GET /v1/repositories/<r>/tags/<t>/json`: the tag's recorded metadata,
/// or the defaults.
pub(crate) async fn get_tag_json(reg: &Registry, repo: RepoName, tag: Tag) -> V1Result {
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

/// `GET /v1/repositories/<r>/json`: the metadata of `latest`, or the
/// defaults; 404 for an unknown repository.
pub(crate) async fn get_repo_json(reg: &Registry, repo: RepoName) -> V1Result {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_metadata() {
        let ua = http::HeaderValue::from_static(
            "docker/1.3.0 go/go1.3.3 kernel/3.16 os/linux arch/amd64",
        );
        let m = tag_metadata(Some(&ua));
        assert_eq!(m["docker_version"], "1.3.0");
        assert_eq!(m["arch"], "amd64");
    }
}
