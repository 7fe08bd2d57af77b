//! Response building: body types, JSON answers, the V1 error body, and
//! streamed file bodies with RFC 9110 single ranges (`v1-protocol.md` §8.8,
//! `v2-compat.md` §1.4). The one place that renders V1 error bodies.

use std::io::{self, SeekFrom};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// Error type carried by request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request body as seen by handlers, whatever the transport.
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;
/// Response body: small in-memory answers or streamed files.
pub type RespBody = UnsyncBoxBody<Bytes, io::Error>;

/// Read size for streamed files.
const FILE_CHUNK: usize = 256 * 1024;

/// An empty body.
pub fn empty_body() -> RespBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An in-memory body.
pub fn full_body(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with a status and no body (`Content-Length: 0` except on 204/304).
pub fn empty(status: StatusCode) -> Response<RespBody> {
    let mut r = Response::new(empty_body());
    *r.status_mut() = status;
    if status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED {
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    r
}

/// A JSON response from raw JSON bytes, not cacheable.
pub fn json_bytes(status: StatusCode, bytes: impl Into<Bytes>) -> Response<RespBody> {
    let bytes = bytes.into();
    let len = bytes.len();
    let mut r = Response::new(full_body(bytes));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// A JSON response from a value.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<RespBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    json_bytes(status, bytes)
}

/// Marks a V1 response as not cacheable (as the reference server does).
pub fn no_cache(mut r: Response<RespBody>) -> Response<RespBody> {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("-1"));
    r
}

/// The V1 error body `{"error": "..."}` with a status.
pub fn v1_error(status: StatusCode, message: &str) -> Response<RespBody> {
    no_cache(json(status, &serde_json::json!({ "error": message })))
}

/// A byte range resolved against a known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) Range header: send everything.
    Full,
    /// Send `start..=end`.
    Partial { start: u64, end: u64 },
    /// The range cannot be satisfied: 416.
    Unsatisfiable,
}

/// Resolves a `Range` header against `size` (RFC 9110 §14). Multi-range and
/// malformed headers are ignored (a full 200 answer is always allowed); an
/// inverted range (`500-0`) is unsatisfiable.
/// An end past the last byte is clamped (docker asks for `end = size`).
pub fn parse_range(header: Option<&HeaderValue>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.to_str().ok()) else {
        return RangeRequest::Full;
    };
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        // Suffix range: the last N bytes.
        if !digits(b) {
            return RangeRequest::Full;
        }
        let n: u64 = b.parse().unwrap_or(0);
        if n == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        let n = n.min(size);
        return RangeRequest::Partial {
            start: size - n,
            end: size - 1,
        };
    }
    if !digits(a) || !(b.is_empty() || digits(b)) {
        return RangeRequest::Full;
    }
    let start: u64 = a.parse().unwrap_or(u64::MAX);
    let end: u64 = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().unwrap_or(u64::MAX)
    };
    if end < start {
        // No byte satisfies it: 416, as the OCI conformance suite expects
        // (RFC 9110 also lets a server ignore it; a 416 tells the client).
        return RangeRequest::Unsatisfiable;
    }
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.min(size - 1),
    }
}

/// Streams a file (or one range of it). Always sets `Content-Length` and
/// `Accept-Ranges: bytes`; 206 with `Content-Range: bytes a-b/size`, or 416
/// with an empty body when the range starts past the end.
pub async fn file_response(
    file: std::fs::File,
    size: u64,
    range: Option<&HeaderValue>,
    head: bool,
) -> io::Result<Response<RespBody>> {
    let (status, start, len) = match parse_range(range, size) {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut r = empty(StatusCode::RANGE_NOT_SATISFIABLE);
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::try_from(format!("bytes */{size}")).map_err(io::Error::other)?,
            );
            r.headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(r);
        }
    };
    let body = if head || len == 0 {
        empty_body()
    } else {
        let mut file = tokio::fs::File::from_std(file);
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await?;
        }
        let stream = ReaderStream::with_capacity(file.take(len), FILE_CHUNK).map_ok(Frame::data);
        StreamBody::new(stream).boxed_unsync()
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = format!("bytes {}-{}/{}", start, start + len - 1, size);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::try_from(cr).map_err(io::Error::other)?,
        );
    }
    Ok(r)
}

/// Adds a header when the value is valid header text (silently skips otherwise).
pub fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(s: &str, size: u64) -> RangeRequest {
        parse_range(Some(&HeaderValue::from_str(s).unwrap()), size)
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(rng("bytes=0-4", 10), Partial { start: 0, end: 4 });
        assert_eq!(rng("bytes=5-", 10), Partial { start: 5, end: 9 });
        assert_eq!(rng("bytes=5-10", 10), Partial { start: 5, end: 9 }); // docker's end = size
        assert_eq!(rng("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(rng("bytes=10-", 10), Unsatisfiable);
        assert_eq!(rng("bytes=0-", 0), Unsatisfiable);
        assert_eq!(rng("bytes=4-2", 10), Unsatisfiable);
        assert_eq!(rng("bytes=0-1,3-4", 10), Full);
        assert_eq!(rng("items=0-1", 10), Full);
        assert_eq!(rng("bytes=a-b", 10), Full);
        assert_eq!(rng("bytes=99999999999999999999-", 10), Full);
    }
}
