//! V1 error answers: a store error or a denied request turned into the
//! reference server's status and `{"error": ...}` body, in one place.

use http::{Response, StatusCode};

use super::super::response::{self, set_header, v1_error, RespBody};
use crate::access::Denied;
use crate::store::StoreError;

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

/// Maps a store error to the V1 answer; server faults are logged, not sent.
pub(crate) fn store_error(e: StoreError) -> Response<RespBody> {
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
                &super::super::v2::errors::RETRY_AFTER_SECS.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_storage_errors_answer_503_with_retry_after() {
        for errno in [libc::ESTALE, libc::EIO, libc::ENOLCK, libc::EROFS] {
            let r = store_error(StoreError::Io(std::io::Error::from_raw_os_error(errno)));
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "errno {errno}");
            assert_eq!(
                r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                Some(
                    super::super::super::v2::errors::RETRY_AFTER_SECS
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
