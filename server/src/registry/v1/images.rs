//! V1 images (`v1-protocol.md` §2.1–2.4): json, layer, ancestry and
//! checksum, and the proof of possession an upload of known bytes makes.

#![allow(clippy::result_large_err)]

use std::time::{Duration, SystemTime};

use berth_transport::wire;
use http::request::Parts;
use http::{header, Method, Response, StatusCode};
use serde_json::json;

use super::super::response::{self, no_cache, set_header, v1_error, ReqBody, RespBody};
use super::super::{Identity, Registry};
use super::authorize::image_readable;
use super::errors::store_error;
use super::{on_store, read_small_body, V1Result};
use crate::audit::AuditEvent;
use crate::names::ImageId;
use crate::store::v1::{image_json_parent, ChecksumPut, ImageState};
use crate::store::StoreError;

/// Headers that make immutable image data cacheable for a year.
fn cacheable(mut r: Response<RespBody>) -> Response<RespBody> {
    let h = r.headers_mut();
    set_header(h, "cache-control", "public, max-age=31536000");
    let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(31_536_000));
    set_header(h, "expires", &expires);
    set_header(h, "last-modified", "Thu, 01 Jan 1970 00:00:00 GMT");
    r
}

/// `GET /v1/images/<id>/json`: 200 verbatim, with `X-Docker-Size` and
/// `X-Docker-Checksum-Payload`; 404 missing; 400 being uploaded.
pub(crate) async fn get_image_json(reg: &Registry, id: ImageId) -> V1Result {
    let (json, size, sums) = on_store(reg, move |store| {
        let json = store.image_json(&id)?;
        let size = store.image_layer_size(&id)?;
        let sums = store.payload_checksums(&id)?;
        Ok::<_, StoreError>((json, size, sums))
    })
    .await?;
    let mut r = cacheable(response::json_bytes(StatusCode::OK, json));
    if let Some(size) = size {
        set_header(r.headers_mut(), wire::V1_SIZE_HEADER, &size.to_string());
    }
    for sum in sums {
        if let Ok(v) = http::HeaderValue::try_from(sum) {
            r.headers_mut().append(wire::V1_CHECKSUM_PAYLOAD_HEADER, v);
        }
    }
    Ok(r)
}

/// `PUT /v1/images/<id>/json`: 200; 400 invalid / missing (or unreadable)
/// parent; 409 `Image already exists` when the caller can read it (a Docker
/// client then skips the image), 409 with another message when it exists
/// with other bytes. Identical bytes of an image the caller cannot read
/// answer 200: the caller goes on to prove possession (layer, checksum).
pub(crate) async fn put_image_json(
    reg: &Registry,
    id: ImageId,
    body: ReqBody,
    who: &Identity,
) -> V1Result {
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
pub(crate) async fn get_image_layer(reg: &Registry, id: ImageId, req: &Parts) -> V1Result {
    let (file, size) = on_store(reg, move |store| store.open_image_layer(&id)).await?;
    let head = req.method == Method::HEAD;
    let r = response::file_response(file, size, req.headers.get(header::RANGE), head)
        .await
        .map_err(|e| store_error(e.into()))?;
    Ok(cacheable(r))
}

/// `PUT /v1/images/<id>/layer`: chunked or sized body streamed to a temp file.
pub(crate) async fn put_image_layer(
    reg: &Registry,
    id: ImageId,
    body: ReqBody,
    who: &Identity,
) -> V1Result {
    // Refused before any byte is read: drain a small body so the
    // connection stays usable and the client reads the answer.
    let (id2, user) = (id.clone(), who.user.clone());
    if let Err(e) = on_store(reg, move |store| store.layer_put_state(&id2, &user)).await {
        super::super::drain_small_body(body).await;
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
pub(crate) async fn get_ancestry(reg: &Registry, id: ImageId) -> V1Result {
    let bytes = on_store(reg, move |store| store.image_ancestry(&id)).await?;
    Ok(cacheable(response::json_bytes(StatusCode::OK, bytes)))
}

/// `PUT /v1/images/<id>/checksum`: 412 without the payload header, 400 empty
/// or mismatching, 404 no json, 409 not in progress (nor the end of the
/// caller's proof of possession); 200 publishes, or completes that proof.
pub(crate) async fn put_checksum(
    reg: &Registry,
    id: ImageId,
    req: &Parts,
    who: &Identity,
) -> V1Result {
    let Some(value) = req.headers.get(wire::V1_CHECKSUM_PAYLOAD_HEADER) else {
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
