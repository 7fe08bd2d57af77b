//! The Registry V1 HTTP API (`v1-protocol.md` §2–3), one file per resource
//! like `v2/`: [`images`] (json, layer, ancestry, checksum), [`tags`],
//! [`repositories`] (the index endpoints: repository PUT/DELETE, image
//! lists, properties), [`users`] (login) and [`search`]; routing in
//! [`routes`], rights in [`authorize`], error answers in [`errors`].
//!
//! Status codes and messages follow the reference server, with the fixes of
//! §8: RFC ranges, 400 instead of 500 for a checksum before the layer, a temp
//! file for layers, and 404 for unknown repositories' json.

// Handlers return `Result<Response, Response>`: the error *is* the HTTP
// answer, built once and sent as is, so boxing it would only add a hop.
#![allow(clippy::result_large_err)]

pub mod authorize;
pub mod errors;
pub mod images;
pub mod repositories;
pub mod routes;
pub mod search;
pub mod tags;
pub mod users;

use berth_transport::wire;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;

use super::response::{self, no_cache, set_header, v1_error, ReqBody, RespBody};
use super::{blocking, Identity, Registry};
use crate::store::StoreError;
use errors::store_error;
use routes::{RouteError, V1Route};

/// `X-Docker-Registry-Version` sent on ping.
pub const REGISTRY_VERSION: &str = "0.9.1";

/// Answers a V1 (or ping/root) request whose path was parsed into `route`:
/// the one place V1 parse errors become answers, as `v2::handle` is for V2.
/// A read-only mirror refuses writes before the path is looked at.
pub async fn handle(
    reg: &Registry,
    route: Result<V1Route, RouteError>,
    req: Request<ReqBody>,
    who: &Identity,
) -> Response<RespBody> {
    if let Some(reason) = reg.refused_write(req.method()) {
        super::drain_small_body(req.into_body()).await;
        return v1_error(StatusCode::FORBIDDEN, &reason);
    }
    match route {
        Ok(route) => dispatch(reg, route, req, who).await,
        Err(RouteError::InvalidImageId) => v1_error(StatusCode::NOT_FOUND, "Invalid image ID"),
        Err(RouteError::NotFound(_)) => v1_error(StatusCode::NOT_FOUND, "Not found"),
        Err(e) => v1_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// Dispatches one valid V1 route to its resource's handler.
async fn dispatch(
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
    if let Err(denied) = authorize::authorize(reg, &route, &m, who).await {
        super::drain_small_body(body).await;
        return denied;
    }
    let result: Result<Response<RespBody>, Response<RespBody>> = match (route, get, &m) {
        (Root, true, _) => Ok(response::json(
            StatusCode::OK,
            &json!("docker-registry server"),
        )),
        (Ping, true, _) => Ok(ping()),
        (ImageJson(id), true, _) => images::get_image_json(reg, id).await,
        (ImageJson(id), _, &Method::PUT) => images::put_image_json(reg, id, body, who).await,
        (ImageLayer(id), true, _) => images::get_image_layer(reg, id, req).await,
        (ImageLayer(id), _, &Method::PUT) => images::put_image_layer(reg, id, body, who).await,
        (ImageAncestry(id), true, _) => images::get_ancestry(reg, id).await,
        (ImageChecksum(id), _, &Method::PUT) => images::put_checksum(reg, id, req, who).await,
        (Tags(repo), true, _) => tags::get_tags(reg, repo).await,
        (Tags(repo), _, &Method::DELETE) => repositories::delete_repository(reg, repo, who).await,
        (Tag(repo, tag), true, _) => tags::get_tag(reg, repo, tag).await,
        (Tag(repo, tag), _, &Method::PUT) => tags::put_tag(reg, repo, tag, req, body, who).await,
        (Tag(repo, tag), _, &Method::DELETE) => tags::delete_tag(reg, repo, tag, who).await,
        (TagJson(repo, tag), true, _) => tags::get_tag_json(reg, repo, tag).await,
        (RepoJson(repo), true, _) => tags::get_repo_json(reg, repo).await,
        (Repository(repo), _, &Method::PUT) => {
            repositories::put_repository(reg, repo, req, body, who).await
        }
        (Repository(repo), _, &Method::DELETE) => {
            repositories::delete_repository(reg, repo, who).await
        }
        (RepoImages(repo), true, _) => repositories::get_repo_images(reg, repo, req).await,
        (RepoImages(repo), _, &Method::PUT) => {
            repositories::put_repo_images(reg, repo, req, body, who).await
        }
        (RepoImages(repo), _, &Method::DELETE) => Ok(repositories::index_headers(
            response::empty(StatusCode::NO_CONTENT),
            reg,
            &repo,
            req,
            "delete",
        )),
        (RepoAuth(_), _, &Method::PUT) => Ok(response::json(StatusCode::OK, &json!("OK"))),
        (RepoProperties(repo), true, _) => repositories::get_properties(reg, repo).await,
        (RepoProperties(repo), _, &Method::PUT) => {
            repositories::put_properties(reg, repo, body, who).await
        }
        (Users, true, _) => Ok(response::json(StatusCode::OK, &json!("OK"))),
        // Tells 1.0–1.10 clients to continue with the GET that logs in.
        (Users, _, &Method::POST) => users::create_user(reg, body, who).await,
        (User(_), _, &Method::PUT) => Ok(response::empty(StatusCode::NO_CONTENT)),
        (Search, true, _) => search::search(reg, req, who).await,
        _ => Err(v1_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        )),
    };
    result.unwrap_or_else(|e| e)
}

/// What a V1 handler returns: the answer, or the error answer to send.
pub(crate) type V1Result = Result<Response<RespBody>, Response<RespBody>>;

/// Runs store work on the blocking pool and turns a store error into the V1
/// answer: the one place handlers meet the store.
pub(crate) async fn on_store<T, F>(reg: &Registry, f: F) -> Result<T, Response<RespBody>>
where
    F: FnOnce(crate::store::Store) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let store = reg.store().clone();
    blocking(move || f(store)).await.map_err(store_error)
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
        wire::V1_REGISTRY_VERSION_HEADER,
        REGISTRY_VERSION,
    );
    set_header(r.headers_mut(), wire::V1_REGISTRY_STANDALONE_HEADER, "True");
    r
}
