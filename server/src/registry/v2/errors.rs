//! V2 error codes and the one function that renders the V2 error body
//! `{"errors":[{"code","message","detail"}]}` (`v2-compat.md` §1.8).
//!
//! Each code has exactly one HTTP status, in [`ErrorCode::wire`]; handlers
//! build [`V2Error`] values and never write error bodies themselves.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::registry::response::{self, RespBody};
use crate::store::uploads::UploadError;
use crate::store::StoreError;

/// The V2 error codes berth sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Blob GET miss.
    BlobUnknown,
    /// Bad, finished or expired upload session.
    BlobUploadUnknown,
    /// Corrupt or aborted upload (the client's stream broke).
    BlobUploadInvalid,
    /// Digest mismatch, missing, or unparseable.
    DigestInvalid,
    /// Content-Length does not match Content-Range.
    SizeInvalid,
    /// Out-of-order chunk.
    RangeInvalid,
    /// Manifest miss.
    ManifestUnknown,
    /// Unparseable manifest or wrong type (schema1 included).
    ManifestInvalid,
    /// A manifest references a blob or child that is not stored.
    ManifestBlobUnknown,
    /// Manifest body over the size cap (413).
    ManifestTooLarge,
    /// Bad repository name.
    NameInvalid,
    /// Unknown repository.
    NameUnknown,
    /// Bad tag.
    TagInvalid,
    /// Operation not offered (DELETE of blobs / manifests by digest, bad method).
    Unsupported,
    /// No such V2 endpoint.
    RouteUnknown,
    /// A keyless client asked for something that needs a key (401).
    Unauthorized,
    /// An authenticated user lacks the right (403).
    Denied,
    /// A server fault; details go to the log, not to the client.
    Unknown,
    /// The storage is briefly unavailable (a shared filesystem's `ESTALE`,
    /// `EIO` from a brick going away, a lock manager out of reach): 503 with
    /// `Retry-After`, nothing was changed.
    Unavailable,
}

impl ErrorCode {
    /// The wire code and HTTP status of each error (distribution's table).
    pub fn wire(self) -> (&'static str, StatusCode) {
        use ErrorCode::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", StatusCode::NOT_FOUND),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST),
            DigestInvalid => ("DIGEST_INVALID", StatusCode::BAD_REQUEST),
            SizeInvalid => ("SIZE_INVALID", StatusCode::BAD_REQUEST),
            RangeInvalid => ("RANGE_INVALID", StatusCode::RANGE_NOT_SATISFIABLE),
            ManifestUnknown => ("MANIFEST_UNKNOWN", StatusCode::NOT_FOUND),
            ManifestInvalid => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST),
            ManifestBlobUnknown => ("MANIFEST_BLOB_UNKNOWN", StatusCode::BAD_REQUEST),
            ManifestTooLarge => ("SIZE_INVALID", StatusCode::PAYLOAD_TOO_LARGE),
            NameInvalid => ("NAME_INVALID", StatusCode::BAD_REQUEST),
            NameUnknown => ("NAME_UNKNOWN", StatusCode::NOT_FOUND),
            TagInvalid => ("TAG_INVALID", StatusCode::BAD_REQUEST),
            Unsupported => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED),
            RouteUnknown => ("UNSUPPORTED", StatusCode::NOT_FOUND),
            Unauthorized => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED),
            Denied => ("DENIED", StatusCode::FORBIDDEN),
            Unknown => ("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR),
            Unavailable => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

/// One entry of a V2 error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Error {
    /// The code (decides the status).
    pub code: ErrorCode,
    /// Human message for the client.
    pub message: String,
    /// Structured detail (the digest, name or range concerned), or null.
    pub detail: Value,
}

impl V2Error {
    /// An error with a message and no detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> V2Error {
        V2Error {
            code,
            message: message.into(),
            detail: Value::Null,
        }
    }

    /// Adds a detail value.
    pub fn detail(mut self, detail: Value) -> V2Error {
        self.detail = detail;
        self
    }

    /// A server fault: logged in full, sent as a generic `UNKNOWN`.
    pub fn internal(e: impl std::fmt::Display) -> V2Error {
        tracing::error!(error = %e, "V2 request failed");
        V2Error::new(ErrorCode::Unknown, "internal storage error")
    }

    /// A filesystem error: a transient one (`store::transient`) becomes 503
    /// `UNAVAILABLE` naming the storage error, anything else [`V2Error::internal`].
    pub fn storage(e: std::io::Error) -> V2Error {
        if crate::store::transient::is_transient_chain(&e) {
            tracing::warn!(error = %e, "V2 request failed on a transient storage error");
            return V2Error::new(
                ErrorCode::Unavailable,
                format!("storage temporarily unavailable ({e}); nothing was changed, retry"),
            );
        }
        V2Error::internal(e)
    }
}

/// Seconds a client is asked to wait after a 503 (`Retry-After`).
pub const RETRY_AFTER_SECS: u32 = 2;

impl From<StoreError> for V2Error {
    fn from(e: StoreError) -> V2Error {
        match e {
            StoreError::Io(e) => V2Error::storage(e),
            other => V2Error::new(ErrorCode::Unknown, other.to_string()),
        }
    }
}

impl From<std::io::Error> for V2Error {
    fn from(e: std::io::Error) -> V2Error {
        V2Error::storage(e)
    }
}

impl From<UploadError> for V2Error {
    fn from(e: UploadError) -> V2Error {
        match e {
            UploadError::Unknown => V2Error::new(ErrorCode::BlobUploadUnknown, e.to_string()),
            UploadError::RangeInvalid { offset, .. } => {
                V2Error::new(ErrorCode::RangeInvalid, e.to_string())
                    .detail(json!({ "offset": offset }))
            }
            UploadError::DigestMismatch { ref actual, .. } => {
                let actual = actual.to_string();
                V2Error::new(ErrorCode::DigestInvalid, e.to_string())
                    .detail(json!({ "actual": actual }))
            }
            UploadError::Interrupted(_) => {
                V2Error::new(ErrorCode::BlobUploadInvalid, e.to_string())
            }
            UploadError::Busy { offset } => V2Error::new(ErrorCode::RangeInvalid, e.to_string())
                .detail(json!({ "offset": offset })),
            UploadError::SessionCorrupt { .. } => {
                V2Error::new(ErrorCode::BlobUploadInvalid, e.to_string())
            }
            UploadError::Io(e) => V2Error::storage(e),
        }
    }
}

/// Converts a lower layer's error into the handlers' error list, so that
/// `store_call().v2()?` reads like a plain `?`.
pub trait OrV2<T> {
    /// Maps the error into a one-element V2 error list.
    fn v2(self) -> Result<T, Vec<V2Error>>;
}

impl<T, E: Into<V2Error>> OrV2<T> for Result<T, E> {
    fn v2(self) -> Result<T, Vec<V2Error>> {
        self.map_err(|e| vec![e.into()])
    }
}

/// Renders errors as one V2 answer; the status is the first error's.
pub fn render(errors: &[V2Error]) -> Response<RespBody> {
    let status = errors
        .first()
        .map(|e| e.code.wire().1)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let list: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "code": e.code.wire().0, "message": e.message, "detail": e.detail }))
        .collect();
    let mut r = response::json(status, &json!({ "errors": list }));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response::set_header(
            r.headers_mut(),
            "retry-after",
            &RETRY_AFTER_SECS.to_string(),
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        response::set_header(
            r.headers_mut(),
            "www-authenticate",
            "Basic realm=\"berth (connect over SSH with a key)\"",
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_envelope_with_first_status() {
        let r = render(&[
            V2Error::new(ErrorCode::ManifestBlobUnknown, "blob unknown")
                .detail(json!({"digest": "sha256:aa"})),
            V2Error::new(ErrorCode::ManifestBlobUnknown, "blob unknown"),
        ]);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()["content-type"], "application/json");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"].as_array().unwrap().len(), 2);
        assert_eq!(v["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["detail"]["digest"], "sha256:aa");
    }

    /// Issue 15: a shared filesystem's ESTALE is "retry later", not a silent 500.
    #[tokio::test]
    async fn transient_storage_errors_answer_503_with_retry_after() {
        let stale = std::io::Error::from_raw_os_error(libc::ESTALE);
        let e = V2Error::from(StoreError::Io(stale));
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.message.contains("Stale file handle"), "{}", e.message);
        let r = render(&[e]);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["retry-after"], "2");
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(V2Error::from(full).code, ErrorCode::Unknown);
    }

    #[test]
    fn statuses() {
        for (code, wire, status) in [
            (ErrorCode::BlobUnknown, "BLOB_UNKNOWN", 404),
            (ErrorCode::BlobUploadUnknown, "BLOB_UPLOAD_UNKNOWN", 404),
            (ErrorCode::DigestInvalid, "DIGEST_INVALID", 400),
            (ErrorCode::RangeInvalid, "RANGE_INVALID", 416),
            (ErrorCode::ManifestUnknown, "MANIFEST_UNKNOWN", 404),
            (ErrorCode::ManifestInvalid, "MANIFEST_INVALID", 400),
            (ErrorCode::ManifestTooLarge, "SIZE_INVALID", 413),
            (ErrorCode::NameInvalid, "NAME_INVALID", 400),
            (ErrorCode::NameUnknown, "NAME_UNKNOWN", 404),
            (ErrorCode::TagInvalid, "TAG_INVALID", 400),
            (ErrorCode::Unsupported, "UNSUPPORTED", 405),
            (ErrorCode::Unknown, "UNKNOWN", 500),
            (ErrorCode::Unavailable, "UNAVAILABLE", 503),
        ] {
            assert_eq!(code.wire(), (wire, StatusCode::from_u16(status).unwrap()));
        }
    }
}
