//! The V2 read client both sides use (`v2-compat.md` §1.4–1.6): GET a
//! manifest by tag or digest with one `Accept` list, GET a blob streamed
//! (from an offset, with the `Range` answer checked), HEAD a blob, list a
//! repository's tags. The client's push, pull and sync (`berth`'s
//! `registry.rs`) and the pull-through mirror's upstream reader
//! (berth-server's `mirror/upstream.rs`) call these on an
//! [`HttpConnection`] of theirs, and each turns a [`ReadError`] into its
//! own error type.
//!
//! Nothing here is trusted or hashed: the callers check digests (of a
//! manifest's bytes here, of a blob's while it streams to its destination)
//! with berth's digest type, which this crate does not know.

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::http::{describe, empty, explain, HttpConnection, HttpError};
use crate::wire::{CONTENT_DIGEST_HEADER, MOUNTABLE_HEADER};

/// Every manifest type berth reads, as one `Accept` list: OCI index,
/// Docker manifest list, OCI manifest, Docker schema 2 manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest read: `v2-compat.md` §1.6 caps manifest PUTs at 4 MiB,
/// so nothing larger can be a manifest a registry accepted.
pub const MANIFEST_LIMIT: usize = 4 << 20;

/// Largest error body or tag list read.
const SMALL_LIMIT: usize = 16 << 20;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No stream, or the HTTP exchange broke.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The registry answered with an error status; `body` is its error
    /// body (see [`crate::wire::error_message`]).
    #[error("{what}: {status}")]
    Status {
        /// The request (`GET /v2/...`).
        what: String,
        /// The status received.
        status: StatusCode,
        /// The answer's body (empty for a HEAD).
        body: Bytes,
    },
    /// The answer breaks the protocol (a 200 to a ranged GET, a tag list
    /// that is not JSON).
    #[error("{what}: unexpected answer: {message}")]
    Protocol {
        /// The request.
        what: String,
        /// What was wrong with it.
        message: String,
    },
    /// The answer's body is larger than what was asked for allows.
    #[error("{what}: the answer is larger than {limit} bytes")]
    TooLarge {
        /// The request.
        what: String,
        /// The limit in bytes.
        limit: usize,
    },
}

/// A manifest as the registry served it (not yet checked).
#[derive(Debug, Clone)]
pub struct ManifestAnswer {
    /// The exact bytes.
    pub bytes: Bytes,
    /// The `Content-Type` without parameters, if any.
    pub content_type: Option<String>,
    /// The `Docker-Content-Digest` the registry claimed, if any (unparsed).
    pub claimed_digest: Option<String>,
    /// Every header of the answer (for a caller's extension headers).
    pub headers: HeaderMap,
}

/// What a blob HEAD answered.
#[derive(Debug, Clone)]
pub struct BlobHead {
    /// The status (200: the repository has it; 404: it has not).
    pub status: StatusCode,
    /// `Content-Length`, if given.
    pub size: Option<u64>,
    /// berth's `Berth-Blob-Mountable: true` on a 404: a mount would link it.
    pub mountable: bool,
    /// Every header of the answer.
    pub headers: HeaderMap,
}

/// Sends a bodiless request with `headers` on `conn`.
async fn send(
    conn: &mut HttpConnection,
    method: Method,
    path: &str,
    headers: &[(header::HeaderName, String)],
) -> Result<(String, Response<Incoming>), ReadError> {
    let what = describe(&method, path);
    let mut b = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        b = b.header(name, value);
    }
    let req = b.body(empty()).map_err(|e| ReadError::Protocol {
        what: what.clone(),
        message: e.to_string(),
    })?;
    let resp = conn.send(req).await?;
    Ok((what, resp))
}

/// Reads a whole body of at most `limit` bytes.
async fn read_limited(
    conn: &HttpConnection,
    what: &str,
    mut body: Incoming,
    limit: usize,
) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(source) => {
                return Err(ReadError::Http(HttpError::Exchange {
                    what: format!("{what}: reading the response"),
                    detail: explain(&source, &conn.diagnostics()).await,
                    source,
                }))
            }
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ReadError::TooLarge {
                    what: what.to_string(),
                    limit,
                });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Turns an error status into [`ReadError::Status`], with its body.
async fn refused(
    conn: &HttpConnection,
    what: String,
    resp: Response<Incoming>,
) -> Result<ReadError, ReadError> {
    let status = resp.status();
    let body = read_limited(conn, &what, resp.into_body(), SMALL_LIMIT).await?;
    Ok(ReadError::Status { what, status, body })
}

fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `GET /v2/<name>/manifests/<reference>` with [`MANIFEST_ACCEPT`]; the
/// body is read whole, up to [`MANIFEST_LIMIT`].
pub async fn get_manifest(
    conn: &mut HttpConnection,
    name: &str,
    reference: &str,
) -> Result<ManifestAnswer, ReadError> {
    let path = format!("/v2/{name}/manifests/{reference}");
    let (what, resp) = send(
        conn,
        Method::GET,
        &path,
        &[(header::ACCEPT, MANIFEST_ACCEPT.to_string())],
    )
    .await?;
    if !resp.status().is_success() {
        return Err(refused(conn, what, resp).await?);
    }
    let headers = resp.headers().clone();
    let bytes = read_limited(conn, &what, resp.into_body(), MANIFEST_LIMIT).await?;
    Ok(ManifestAnswer {
        bytes,
        content_type: header_text(&headers, header::CONTENT_TYPE)
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string()),
        claimed_digest: header_text(&headers, CONTENT_DIGEST_HEADER).map(str::to_string),
        headers,
    })
}

/// `HEAD /v2/<name>/blobs/<digest>`; any status is an answer.
pub async fn head_blob(
    conn: &mut HttpConnection,
    name: &str,
    digest: &str,
) -> Result<BlobHead, ReadError> {
    let path = format!("/v2/{name}/blobs/{digest}");
    let (what, resp) = send(conn, Method::HEAD, &path, &[]).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    read_limited(conn, &what, resp.into_body(), SMALL_LIMIT).await?;
    Ok(BlobHead {
        status,
        size: header_text(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        mountable: headers
            .get(MOUNTABLE_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true")),
        headers,
    })
}

/// `GET /v2/<name>/blobs/<digest>` from byte `offset` (a `Range` request
/// when non-zero; the answer must then be 206 starting there). The body
/// streams from the returned response.
pub async fn get_blob(
    conn: &mut HttpConnection,
    name: &str,
    digest: &str,
    offset: u64,
) -> Result<Response<Incoming>, ReadError> {
    let path = format!("/v2/{name}/blobs/{digest}");
    let range = if offset > 0 {
        vec![(header::RANGE, format!("bytes={offset}-"))]
    } else {
        vec![]
    };
    let (what, resp) = send(conn, Method::GET, &path, &range).await?;
    let status = resp.status();
    match (status, offset) {
        (StatusCode::OK, 0) => Ok(resp),
        (StatusCode::PARTIAL_CONTENT, o) if o > 0 => {
            let start = header_text(resp.headers(), header::CONTENT_RANGE)
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(o) {
                return Err(ReadError::Protocol {
                    what,
                    message: format!(
                        "asked for bytes from {o}, got Content-Range starting at {start:?}"
                    ),
                });
            }
            Ok(resp)
        }
        _ if status.is_success() => {
            read_limited(conn, &what, resp.into_body(), SMALL_LIMIT).await?;
            Err(ReadError::Protocol {
                what,
                message: format!("{status} to a request from byte {offset}"),
            })
        }
        _ => Err(refused(conn, what, resp).await?),
    }
}

/// `GET /v2/<name>/tags/list`: the first page (all of it unless the
/// registry pages unasked).
pub async fn tags(conn: &mut HttpConnection, name: &str) -> Result<Vec<String>, ReadError> {
    let path = format!("/v2/{name}/tags/list");
    let (what, resp) = send(conn, Method::GET, &path, &[]).await?;
    if !resp.status().is_success() {
        return Err(refused(conn, what, resp).await?);
    }
    let body = read_limited(conn, &what, resp.into_body(), SMALL_LIMIT).await?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ReadError::Protocol {
            what,
            message: format!("the tag list is not JSON: {e}"),
        })?;
    Ok(value
        .get("tags")
        .and_then(|t| t.as_array())
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}
