//! The Registry V2 calls push, pull and sync need (`v2-compat.md`
//! §1.4–1.6), over one [`HttpConnection`] each: HEAD/GET a blob (GET with
//! `Range` to resume), POST → PATCH (streamed) → PUT `?digest=` to upload
//! one (each step on its own too, for `archive/push.rs`, which commits
//! only verified blobs; DELETE to drop a session), and PUT/GET a manifest.
//! The reads are berth-transport's V2 read client ([`berth_transport::v2`],
//! which the server's mirror uses too), checked here: a manifest fetched by
//! digest must hash to it.
//!
//! Error statuses become [`ClientError::Status`] with the registry's
//! message; answers that break the protocol (a 200 to a ranged GET, a
//! missing `Location`) become [`ClientError::Protocol`].

use ::http::{header, HeaderMap, Method, Request, Response, StatusCode};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::AsyncRead;
use tokio_util::io::ReaderStream;

use berth_server::names::Digest;
use berth_server::store::media;
use berth_transport::v2::{self, ReadError};
use berth_transport::wire::{
    error_message, CONTENT_DIGEST_HEADER, DIFF_ID_HEADER, LAST_CHUNK_HEADER, UPLOAD_DIGEST_HEADER,
    VERIFIES_DIFF_ID, VERIFIES_HEADER,
};

use crate::error::ClientError;
use crate::http::{self, Body, BoxError, HttpConnection};
use crate::transport::Transport;

/// Retries of a request answered 503 (storage briefly unavailable).
pub const UNAVAILABLE_RETRIES: u32 = 5;
/// Longest `Retry-After` honoured; the default when the answer has none.
const RETRY_AFTER_MAX: std::time::Duration = std::time::Duration::from_secs(30);
const RETRY_AFTER_DEFAULT: std::time::Duration = std::time::Duration::from_secs(2);

/// The wait a 503 asks for (`Retry-After: <seconds>`), bounded.
fn retry_after(headers: &HeaderMap) -> std::time::Duration {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| std::time::Duration::from_secs(s).min(RETRY_AFTER_MAX))
        .unwrap_or(RETRY_AFTER_DEFAULT)
}

/// Read size of streamed uploads.
const CHUNK: usize = 256 * 1024;

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes.
    pub bytes: Bytes,
    /// `Content-Type` of the answer.
    pub media_type: String,
    /// Digest of the bytes: fetched by digest, in that digest's algorithm
    /// (sha256 or sha512) and checked against it; by tag, sha256.
    pub digest: Digest,
}

/// What `HEAD /v2/<name>/blobs/<digest>` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The repository has the blob.
    Present,
    /// It has not, but the registry holds it and a `?mount=` would link it.
    Mountable,
    /// Neither, as far as the registry says.
    Absent,
}

/// How a blob reached the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// Its bytes were sent.
    Sent,
    /// The registry already had it and linked it (cross-repository mount).
    Mounted,
}

/// The smallest blob sent on a bulk connection ([`V2Connection::is_bulk_upload`]).
const BULK_UPLOAD: u64 = 16 << 20;

/// One HTTP connection to the registry, used for V2 calls.
pub struct V2Connection {
    conn: HttpConnection,
    /// The registry answered a session POST with `Berth-Upload-Digest`: its
    /// PATCH answers report the sha256 of what the session holds.
    reports_upload_digest: bool,
    /// An answer on this connection carried `Berth-Verifies: diff-id`: the
    /// registry checks blob digests at the close and each layer's diff_id
    /// against the image config at manifest PUT (issue 17).
    verifies_diff_ids: bool,
    /// Opened for one long upload ([`Self::open_bulk`]).
    bulk: bool,
}

/// What a PATCH of a session answered.
#[derive(Debug, Clone)]
pub struct Patched {
    /// The session's next location.
    pub next: String,
    /// sha256 of every byte the session now holds, from a registry that
    /// reports it (`Berth-Upload-Digest`, berth only).
    pub digest: Option<Digest>,
    /// sha256 of the session's uncompressed bytes, from a berth registry
    /// that measured every byte of it (`Berth-Diff-Id` on the last PATCH).
    pub diff_id: Option<Digest>,
}

/// The `Berth-Upload-Digest` of a session answer, when it holds a digest.
fn upload_digest(resp: &Response<Incoming>) -> Option<Digest> {
    resp.headers()
        .get(UPLOAD_DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v).ok())
}

/// Whether an answer carries berth's `Berth-Verifies: diff-id`.
fn announces_verification(headers: &HeaderMap) -> bool {
    headers
        .get(VERIFIES_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|item| item.trim() == VERIFIES_DIFF_ID))
}

fn status_error(what: &str, status: StatusCode, body: &[u8]) -> ClientError {
    let mut message = error_message(body);
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_string();
    }
    ClientError::Status {
        what: what.to_string(),
        status,
        message,
    }
}

/// A failed read of the shared V2 client, as the client's error.
pub(crate) fn read_error(e: ReadError) -> ClientError {
    match e {
        ReadError::Http(e) => e.into(),
        ReadError::Status { what, status, body } => status_error(&what, status, &body),
        ReadError::Protocol { what, message } => ClientError::Protocol { what, message },
        ReadError::TooLarge { what, limit } => {
            protocol(&what, format!("manifest larger than {} MiB", limit >> 20))
        }
    }
}

fn protocol(what: &str, message: impl Into<String>) -> ClientError {
    ClientError::Protocol {
        what: what.to_string(),
        message: message.into(),
    }
}

/// `Location` resolved to a path (relative per §1.1; an absolute URL's
/// path is taken).
fn location(resp: &Response<Incoming>) -> Result<String, String> {
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| "no Location header".to_string())?;
    if loc.starts_with('/') {
        return Ok(loc.to_string());
    }
    match loc.parse::<::http::Uri>() {
        Ok(u) => Ok(u
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string())),
        Err(_) => Err(format!("bad Location {loc:?}")),
    }
}

impl V2Connection {
    /// Opens a new stream (SSH channel, ssh process, in-memory duplex).
    pub async fn open(transport: &Transport) -> Result<V2Connection, ClientError> {
        Ok(Self::over(HttpConnection::open(transport).await?, false))
    }

    /// [`Self::open`] for one long upload: through SSH jump hosts it gets
    /// an inner SSH connection no other upload uses when it can
    /// ([`Transport::open_bulk`]), and holds it until dropped.
    pub async fn open_bulk(transport: &Transport) -> Result<V2Connection, ClientError> {
        Ok(Self::over(
            HttpConnection::open_bulk(transport).await?,
            true,
        ))
    }

    /// A connection to send a blob of `size` bytes on: [`Self::open_bulk`]
    /// when [`Self::is_bulk_upload`], else [`Self::open`].
    pub async fn open_for_upload(
        transport: &Transport,
        size: u64,
    ) -> Result<V2Connection, ClientError> {
        if Self::is_bulk_upload(transport, size) {
            Self::open_bulk(transport).await
        } else {
            Self::open(transport).await
        }
    }

    /// Whether sending `size` bytes over `transport` is worth a bulk
    /// connection: through a jump host that can be an inner SSH connection
    /// of its own, a login at the registry (a few round trips) that pays
    /// back once the blob takes longer than that at the jump's window (a
    /// stock sshd's 2 MiB per round trip to the jump).
    pub fn is_bulk_upload(transport: &Transport, size: u64) -> bool {
        size >= BULK_UPLOAD && transport.spreads_bulk()
    }

    fn over(conn: HttpConnection, bulk: bool) -> V2Connection {
        V2Connection {
            conn,
            reports_upload_digest: false,
            verifies_diff_ids: false,
            bulk,
        }
    }

    /// Whether this connection was opened for one long upload, and so
    /// holds an SSH connection of its own until dropped.
    pub fn is_bulk(&self) -> bool {
        self.bulk
    }

    /// Whether the connection has ended and cannot carry another request
    /// (a kept-alive one the registry closed, or one broken mid-answer).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        self.conn.send(req).await
    }

    async fn small_body(&self, what: &str, resp: Response<Incoming>) -> Result<Bytes, ClientError> {
        http::read_small_body(what, resp.into_body(), &self.conn.diagnostics()).await
    }

    /// Consumes an answer, turning an unexpected status into an error.
    async fn expect(
        &self,
        what: &str,
        resp: Response<Incoming>,
        ok: &[StatusCode],
    ) -> Result<Bytes, ClientError> {
        let status = resp.status();
        let body = self.small_body(what, resp).await?;
        if ok.contains(&status) {
            Ok(body)
        } else {
            Err(status_error(what, status, &body))
        }
    }

    /// Sends one request; `what` (method and path) names it in errors.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        body: Body,
    ) -> Result<(String, Response<Incoming>), ClientError> {
        let what = http::describe(&method, path);
        let mut b = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            b = b.header(name, value);
        }
        let req = b.body(body).map_err(|e| protocol(&what, e.to_string()))?;
        let resp = self.send(req).await?;
        if announces_verification(resp.headers()) {
            self.verifies_diff_ids = true;
        }
        Ok((what, resp))
    }

    /// [`V2Connection::call`] for a request with a small, known body: a 503
    /// (the registry's storage briefly unavailable, e.g. a shared
    /// filesystem's brick away; issue 15) is retried after its
    /// `Retry-After`, up to [`UNAVAILABLE_RETRIES`] times. Such a 503 means
    /// nothing was changed, so sending the request again is safe.
    async fn call_retrying(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
        bytes: Bytes,
    ) -> Result<(String, Response<Incoming>), ClientError> {
        let mut attempt = 0;
        loop {
            let body = if bytes.is_empty() {
                http::empty()
            } else {
                http::full(bytes.clone())
            };
            let (what, resp) = self.call(method.clone(), path, headers, body).await?;
            if resp.status() != StatusCode::SERVICE_UNAVAILABLE || attempt >= UNAVAILABLE_RETRIES {
                return Ok((what, resp));
            }
            let wait = retry_after(resp.headers());
            self.small_body(&what, resp).await?;
            tracing::warn!(request = %what, wait_s = wait.as_secs(), "registry storage temporarily unavailable (503), retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// `HEAD /v2/<name>/blobs/<digest>`: whether the registry has the blob.
    pub async fn blob_exists(&mut self, name: &str, digest: &Digest) -> Result<bool, ClientError> {
        Ok(self.blob_presence(name, digest).await? == Presence::Present)
    }

    /// `HEAD /v2/<name>/blobs/<digest>`: whether the repository has the
    /// blob, and if not, whether berth said a mount would link it
    /// (`Berth-Blob-Mountable`).
    pub async fn blob_presence(
        &mut self,
        name: &str,
        digest: &Digest,
    ) -> Result<Presence, ClientError> {
        let what = http::describe(&Method::HEAD, &format!("/v2/{name}/blobs/{digest}"));
        let mut attempt = 0;
        let head = loop {
            let head = v2::head_blob(self.conn.shared(), name, digest.as_str())
                .await
                .map_err(read_error)?;
            if announces_verification(&head.headers) {
                self.verifies_diff_ids = true;
            }
            if head.status != StatusCode::SERVICE_UNAVAILABLE || attempt >= UNAVAILABLE_RETRIES {
                break head;
            }
            let wait = retry_after(&head.headers);
            tracing::warn!(request = %what, wait_s = wait.as_secs(), "registry storage temporarily unavailable (503), retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        };
        match head.status {
            StatusCode::OK => Ok(Presence::Present),
            StatusCode::NOT_FOUND if head.mountable => Ok(Presence::Mountable),
            StatusCode::NOT_FOUND => Ok(Presence::Absent),
            s => Err(status_error(&what, s, b"")),
        }
    }

    /// Uploads one blob: POST a session, PATCH the bytes (one streamed
    /// request with `Content-Length`), PUT `?digest=` to commit. `reader`
    /// yields exactly `size` bytes; the registry verifies the digest.
    ///
    /// The POST asks to mount the blob (`?mount=<digest>[&from=<repo>]`,
    /// §1.5): a registry that already holds it for another repository (for
    /// `from`, when access rules need to know which) links it with a 201,
    /// and nothing is sent ([`Upload::Mounted`]); otherwise its 202 session
    /// is used for the upload, as Docker does. `on_session` learns the
    /// session's location before any byte is sent, so an interrupted upload
    /// can be resumed by a later run ([`V2Connection::resume_upload`]).
    pub async fn upload_blob(
        &mut self,
        name: &str,
        from: Option<&str>,
        digest: &Digest,
        size: u64,
        reader: impl AsyncRead + Send + 'static,
        on_session: impl FnOnce(&str),
    ) -> Result<Upload, ClientError> {
        let Some(loc) = self.mount_blob(name, from, digest).await? else {
            return Ok(Upload::Mounted);
        };
        on_session(&loc);
        self.finish_upload(&loc, 0, digest, size, reader).await?;
        Ok(Upload::Sent)
    }

    /// `POST /v2/<name>/blobs/uploads/?mount=<digest>[&from=<repo>]`:
    /// `None` when the registry linked the blob (201), else the location of
    /// the upload session it opened instead (202).
    pub async fn mount_blob(
        &mut self,
        name: &str,
        from: Option<&str>,
        digest: &Digest,
    ) -> Result<Option<String>, ClientError> {
        let start = match from {
            Some(f) => format!("/v2/{name}/blobs/uploads/?mount={digest}&from={f}"),
            None => format!("/v2/{name}/blobs/uploads/?mount={digest}"),
        };
        self.open_session(&start, Some(digest)).await
    }

    /// `POST /v2/<name>/blobs/uploads/`: a new upload session, without
    /// asking for a mount (so nothing is linked before the bytes are
    /// committed). Returns its location.
    pub async fn start_upload(&mut self, name: &str) -> Result<String, ClientError> {
        let start = format!("/v2/{name}/blobs/uploads/");
        let what = http::describe(&Method::POST, &start);
        self.open_session(&start, None)
            .await?
            .ok_or_else(|| protocol(&what, "201 to a POST that asked for no mount"))
    }

    /// POSTs `start`; `None` for a 201 mount of `mounting`.
    async fn open_session(
        &mut self,
        start: &str,
        mounting: Option<&Digest>,
    ) -> Result<Option<String>, ClientError> {
        let (what, resp) = self
            .call_retrying(
                Method::POST,
                start,
                &[(header::CONTENT_LENGTH, 0.to_string())],
                Bytes::new(),
            )
            .await?;
        let status = resp.status();
        if status == StatusCode::ACCEPTED && upload_digest(&resp).is_some() {
            self.reports_upload_digest = true;
        }
        let mounted = mounting.is_some_and(|digest| {
            resp.headers()
                .get(CONTENT_DIGEST_HEADER)
                .and_then(|v| v.to_str().ok())
                == Some(digest.as_str())
        });
        let loc = location(&resp).map_err(|e| protocol(&what, e));
        self.expect(&what, resp, &[StatusCode::ACCEPTED, StatusCode::CREATED])
            .await?;
        if status == StatusCode::CREATED {
            if mounted {
                return Ok(None);
            }
            return Err(protocol(&what, "201 to a mount without the blob's digest"));
        }
        Ok(Some(loc?))
    }

    /// Where an upload session stands: `Some(offset)` (bytes the registry
    /// holds) from `GET <location>` → 204 `Range: 0-<last>`, `None` when the
    /// session is gone (expired, committed, or another registry).
    pub async fn upload_offset(&mut self, loc: &str) -> Result<Option<u64>, ClientError> {
        let (what, resp) = self
            .call_retrying(Method::GET, loc, &[], Bytes::new())
            .await?;
        let status = resp.status();
        let range = resp
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.small_body(&what, resp).await?;
        if status != StatusCode::NO_CONTENT {
            return Ok(None);
        }
        // `0-<last>`; an empty session also answers `0-0`, so a 1-byte
        // session reads as 0 here and is simply re-sent from the start.
        let last = range
            .as_deref()
            .and_then(|r| r.trim().trim_start_matches("bytes=").split_once('-'))
            .and_then(|(_, b)| b.trim().parse::<u64>().ok());
        Ok(Some(match last {
            Some(0) | None => 0,
            Some(n) => n + 1,
        }))
    }

    /// PATCH bytes `offset..size` to a session, then commit it with the digest.
    async fn finish_upload(
        &mut self,
        loc: &str,
        offset: u64,
        digest: &Digest,
        size: u64,
        reader: impl AsyncRead + Send + 'static,
    ) -> Result<(), ClientError> {
        let mut loc = loc.to_string();
        if offset < size || size == 0 {
            let body = StreamBody::new(
                ReaderStream::with_capacity(reader, CHUNK)
                    .map_ok(Frame::data)
                    .map_err(BoxError::from),
            )
            .boxed_unsync();
            loc = self.patch_upload(&loc, offset, size, body).await?.next;
        }
        self.commit_upload(&loc, digest).await
    }

    /// `PATCH <location>` with bytes `offset..size` of the blob (`body`
    /// yields exactly those). Returns the session's next location.
    pub async fn patch_upload(
        &mut self,
        loc: &str,
        offset: u64,
        size: u64,
        body: Body,
    ) -> Result<Patched, ClientError> {
        let mut headers = vec![(header::CONTENT_LENGTH, (size - offset).to_string())];
        if offset > 0 {
            headers.push((header::CONTENT_RANGE, format!("{offset}-{}", size - 1)));
        }
        self.patch_last(loc, headers, body).await
    }

    /// `PATCH <location>` with the whole blob, of a length nobody knows
    /// yet (chunked: the distribution spec's streamed upload). `berth push
    /// --compress` sends a layer this way while it is still compressing it.
    pub async fn patch_streamed(&mut self, loc: &str, body: Body) -> Result<Patched, ClientError> {
        self.patch_last(loc, Vec::new(), body).await
    }

    /// The PATCH that ends a session's bytes, with `headers` saying which.
    async fn patch_last(
        &mut self,
        loc: &str,
        mut headers: Vec<(header::HeaderName, String)>,
        body: Body,
    ) -> Result<Patched, ClientError> {
        headers.push((header::CONTENT_TYPE, "application/octet-stream".to_string()));
        // The rest of the blob: a berth registry that measured the whole
        // session reports its diff_id (other registries ignore the header).
        headers.push((
            header::HeaderName::from_static(LAST_CHUNK_HEADER),
            "true".to_string(),
        ));
        let (what, resp) = self.call(Method::PATCH, loc, &headers, body).await?;
        let next = location(&resp).map_err(|e| protocol(&what, e));
        let digest = upload_digest(&resp);
        let diff_id = resp
            .headers()
            .get(DIFF_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        self.expect(&what, resp, &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT])
            .await?;
        Ok(Patched {
            next: next?,
            digest,
            diff_id,
        })
    }

    /// Whether the registry announced that it verifies blob digests and
    /// layer diff_ids itself (learnt from any answer on this connection,
    /// the first blob HEAD of a push included): `berth push` then neither
    /// reads blobs the registry has nor inflates the layers it sends.
    pub fn verifies_diff_ids(&self) -> bool {
        self.verifies_diff_ids
    }

    /// Whether this registry's PATCH answers report the sha256 of the
    /// session (learnt from a session POST on this connection): then
    /// `berth push` checks that instead of hashing the bytes it sends.
    pub fn reports_upload_digest(&self) -> bool {
        self.reports_upload_digest
    }

    /// `PUT <location>?digest=<digest>`: the registry verifies the bytes it
    /// holds and publishes the blob.
    pub async fn commit_upload(&mut self, loc: &str, digest: &Digest) -> Result<(), ClientError> {
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={digest}");
        let (what, resp) = self
            .call_retrying(
                Method::PUT,
                &put,
                &[(header::CONTENT_LENGTH, 0.to_string())],
                Bytes::new(),
            )
            .await?;
        let got = resp
            .headers()
            .get(CONTENT_DIGEST_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.expect(&what, resp, &[StatusCode::CREATED]).await?;
        if let Some(got) = got {
            if got != digest.as_str() {
                return Err(protocol(
                    &what,
                    format!("registry committed {got}, expected {digest}"),
                ));
            }
        }
        Ok(())
    }

    /// Drops an upload session so the registry keeps none of its bytes:
    /// `GET <location>` first (berth answers it only once a request still
    /// writing the session, such as an abandoned PATCH, has finished), then
    /// `DELETE <location>`. A session already gone is not an error.
    pub async fn cancel_upload(&mut self, loc: &str) -> Result<(), ClientError> {
        if self.upload_offset(loc).await?.is_none() {
            return Ok(());
        }
        let (what, resp) = self.call(Method::DELETE, loc, &[], http::empty()).await?;
        self.expect(
            &what,
            resp,
            &[
                StatusCode::NO_CONTENT,
                StatusCode::ACCEPTED,
                StatusCode::OK,
                StatusCode::NOT_FOUND,
            ],
        )
        .await?;
        Ok(())
    }

    /// `PUT /v2/<name>/manifests/<reference>` with the exact bytes.
    pub async fn put_manifest(
        &mut self,
        name: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<(), ClientError> {
        let path = format!("/v2/{name}/manifests/{reference}");
        let (what, resp) = self
            .call_retrying(
                Method::PUT,
                &path,
                &[
                    (header::CONTENT_TYPE, media_type.to_string()),
                    (header::CONTENT_LENGTH, bytes.len().to_string()),
                ],
                Bytes::copy_from_slice(bytes),
            )
            .await?;
        let got = resp
            .headers()
            .get(CONTENT_DIGEST_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.expect(&what, resp, &[StatusCode::CREATED, StatusCode::OK])
            .await?;
        match got {
            Some(g) if g != digest.as_str() => Err(protocol(
                &what,
                format!("registry stored the manifest as {g}, expected {digest}"),
            )),
            _ => Ok(()),
        }
    }

    /// `GET /v2/<name>/manifests/<reference>`; by digest, the bytes must
    /// hash to it.
    pub async fn get_manifest(
        &mut self,
        name: &str,
        reference: &str,
    ) -> Result<FetchedManifest, ClientError> {
        let what = http::describe(&Method::GET, &format!("/v2/{name}/manifests/{reference}"));
        let answer = v2::get_manifest(self.conn.shared(), name, reference)
            .await
            .map_err(read_error)?;
        if announces_verification(&answer.headers) {
            self.verifies_diff_ids = true;
        }
        let body = answer.bytes;
        let media_type = answer.content_type;
        // By digest, the bytes must hash to it in its own algorithm; a
        // reference with a ':' that is no digest berth can check is refused
        // rather than passed on unverified.
        let digest = if reference.contains(':') {
            let wanted = Digest::parse(reference).map_err(|e| protocol(&what, e.to_string()))?;
            let digest = wanted.algorithm().digest_of(&body);
            if digest != wanted {
                return Err(protocol(&what, format!("manifest bytes hash to {digest}")));
            }
            digest
        } else {
            Digest::of_bytes(&body)
        };
        let media_type = match media_type {
            Some(m) if !m.is_empty() && m != "application/json" => m,
            _ => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| media::OCI_MANIFEST.to_string()),
        };
        Ok(FetchedManifest {
            bytes: body,
            media_type,
            digest,
        })
    }

    /// `GET /v2/<name>/blobs/<digest>` from byte `offset` (a `Range`
    /// request when non-zero; the answer must then be 206 starting there).
    /// The body streams from the returned response.
    pub async fn get_blob(
        &mut self,
        name: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<Incoming, ClientError> {
        let resp = v2::get_blob(self.conn.shared(), name, digest.as_str(), offset)
            .await
            .map_err(read_error)?;
        if announces_verification(resp.headers()) {
            self.verifies_diff_ids = true;
        }
        Ok(resp.into_body())
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_and_bounded() {
        let with = |v: Option<&str>| {
            let mut b = Response::builder().status(StatusCode::SERVICE_UNAVAILABLE);
            if let Some(v) = v {
                b = b.header(header::RETRY_AFTER, v);
            }
            retry_after(b.body(()).unwrap().headers())
        };
        assert_eq!(with(Some("2")), std::time::Duration::from_secs(2));
        assert_eq!(with(Some("3600")), RETRY_AFTER_MAX);
        assert_eq!(
            with(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            RETRY_AFTER_DEFAULT
        );
        assert_eq!(with(None), RETRY_AFTER_DEFAULT);
    }
}
