//! The mirror's upstream: the few reads a pull-through mirror needs
//! (manifest by tag or digest, tag list, blob HEAD and GET), made with
//! berth-transport's V2 read client ([`berth_transport::v2`], the one the
//! `berth` client uses too) over any berth transport, each on its own HTTP
//! connection (an SSH channel on the one shared SSH connection, an
//! in-process stream, or a TCP/TLS socket), each answer awaited for at
//! most [`ANSWER_TIMEOUT`].
//!
//! Nothing fetched is trusted: manifests are hashed here, blobs are hashed
//! by the store while they stream to disk, and a mismatch stores nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use berth_transport::http::HttpConnection;
use berth_transport::remote::Remote;
use berth_transport::transport::{ssh::SshOptions, InProcess, Transport, TransportError};
use berth_transport::v2::{self, ReadError};

use crate::names::Digest;
use crate::store::media;
use crate::store::uploads::UploadError;
use crate::store::Store;

/// How long one request may wait for the upstream's answer head; a hung
/// upstream must not hang the mirror's clients for ever.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the upstream could not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection (refused, unreachable, SSH login failed, ...).
    #[error("{0}")]
    Connect(String),
    /// The connection broke, or the answer did not come in time.
    #[error("{0}")]
    Broken(String),
    /// The upstream answered with an error status.
    #[error("{method} {path} answered {status}{message}")]
    Status {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// Status received.
        status: StatusCode,
        /// The first error message of the body, if any (": ..." form).
        message: String,
    },
    /// What arrived failed verification.
    #[error("{0}")]
    Corrupt(String),
}

/// A manifest fetched from the upstream, hashed here.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The exact bytes.
    pub bytes: Bytes,
    /// Their media type (from `Content-Type`, else the body's `mediaType`).
    pub media_type: String,
    /// Digest of the bytes: in the algorithm of the reference when fetched
    /// by digest, else of the upstream's claimed `Docker-Content-Digest`
    /// (a tag naming a sha512 manifest), else sha256.
    pub digest: Digest,
    /// The `Docker-Content-Digest` the upstream claimed, if any.
    pub claimed: Option<Digest>,
}

/// Opens a directory upstream as an in-process registry (the registry's
/// `in_process::open_local`, passed in: the mirror sits below the registry).
pub type OpenLocal = fn(&Path) -> Result<Arc<dyn InProcess>, TransportError>;

/// The upstream registry and the transport that reaches it.
pub struct Upstream {
    name: String,
    transport: Transport,
}

impl Upstream {
    /// An upstream reached over `transport`; `name` is how messages call it.
    pub fn new(name: String, transport: Transport) -> Upstream {
        Upstream { name, transport }
    }

    /// Parses `--mirror-of` and builds its transport: SSH with the given
    /// keys and known_hosts, a directory served in-process, or HTTP(S).
    pub fn open(options: &super::MirrorOptions, open_local: OpenLocal) -> Result<Upstream, String> {
        let spec = &options.upstream;
        let remote: Remote = spec
            .parse()
            .map_err(|e| format!("--mirror-of {spec}: {e}"))?;
        let ssh_options = SshOptions {
            identities: options.identities.clone(),
            known_hosts: options.known_hosts.clone(),
            ..SshOptions::default()
        };
        let transport = Transport::for_remote(&remote, ssh_options, open_local)
            .map_err(|e| format!("--mirror-of {spec}: {e}"))?;
        Ok(Upstream::new(spec.to_string(), transport))
    }

    /// The upstream as configured (for messages and `/_berth/info`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connects ahead of the first request, so a bad address, host key or
    /// login shows at start rather than at the first pull.
    pub async fn prepare(&self) -> Result<(), UpstreamError> {
        self.transport
            .prepare()
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))
    }

    /// Runs one read on a fresh connection, waiting at most
    /// [`ANSWER_TIMEOUT`] for it; `method` and `path` name it in errors.
    /// `Ok(None)` is a 404.
    async fn read<T>(
        &self,
        method: Method,
        path: &str,
        read: impl AsyncFnOnce(&mut HttpConnection) -> Result<T, ReadError>,
    ) -> Result<Option<T>, UpstreamError> {
        let mut conn = HttpConnection::open(&self.transport)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let answer = match tokio::time::timeout(ANSWER_TIMEOUT, read(&mut conn)).await {
            Ok(answer) => answer,
            Err(_) => {
                return Err(UpstreamError::Broken(format!(
                    "no answer within {} s",
                    ANSWER_TIMEOUT.as_secs()
                )))
            }
        };
        match answer {
            Ok(t) => Ok(Some(t)),
            Err(ReadError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
            Err(ReadError::Status { status, body, .. }) => Err(UpstreamError::Status {
                method,
                path: path.to_string(),
                status,
                message: first_error_message(&body),
            }),
            Err(ReadError::Http(e)) => Err(UpstreamError::Broken(e.to_string())),
            Err(ReadError::TooLarge { limit, .. }) => Err(UpstreamError::Corrupt(format!(
                "the answer is larger than {limit} bytes"
            ))),
            Err(e @ ReadError::Protocol { .. }) => Err(UpstreamError::Corrupt(e.to_string())),
        }
    }

    /// `GET /v2/<name>/manifests/<reference>`; `None` when the upstream
    /// does not know it.
    pub async fn fetch_manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<Option<Fetched>, UpstreamError> {
        let path = format!("/v2/{name}/manifests/{reference}");
        let Some(answer) = self
            .read(Method::GET, &path, async |conn: &mut HttpConnection| {
                v2::get_manifest(conn, name, reference).await
            })
            .await?
        else {
            return Ok(None);
        };
        let claimed = answer
            .claimed_digest
            .as_deref()
            .map(|v| {
                Digest::parse(v).map_err(|e| {
                    UpstreamError::Corrupt(format!("Docker-Content-Digest {v:?}: {e}"))
                })
            })
            .transpose()?;
        let bytes = answer.bytes;
        let media_type = manifest_media_type(answer.content_type.as_deref(), &bytes)?;
        let algorithm = Digest::parse(reference)
            .ok()
            .or_else(|| claimed.clone())
            .map_or(crate::names::Algorithm::Sha256, |d| d.algorithm());
        Ok(Some(Fetched {
            digest: algorithm.digest_of(&bytes),
            bytes,
            media_type,
            claimed,
        }))
    }

    /// `GET /v2/<name>/tags/list` (first page, which is all of it unless
    /// the upstream pages unasked); `None` for an unknown repository.
    pub async fn tags(&self, name: &str) -> Result<Option<Vec<String>>, UpstreamError> {
        let path = format!("/v2/{name}/tags/list");
        self.read(Method::GET, &path, async |conn: &mut HttpConnection| {
            v2::tags(conn, name).await
        })
        .await
    }

    /// `HEAD /v2/<name>/blobs/<digest>`: whether the upstream holds it there.
    pub async fn has_blob(&self, name: &str, digest: &Digest) -> Result<bool, UpstreamError> {
        let path = format!("/v2/{name}/blobs/{digest}");
        // A HEAD's status is its answer: `read` sees no error status.
        let Some(head) = self
            .read(Method::HEAD, &path, async |conn: &mut HttpConnection| {
                v2::head_blob(conn, name, digest.as_str()).await
            })
            .await?
        else {
            return Ok(false);
        };
        match head.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(UpstreamError::Status {
                method: Method::HEAD,
                path,
                status,
                message: String::new(),
            }),
        }
    }

    /// `GET /v2/<name>/blobs/<digest>` streamed into the store's blob pool,
    /// verified against `digest`. Returns the size, or `None` on a 404.
    pub async fn fetch_blob(
        &self,
        name: &str,
        digest: &Digest,
        store: &Store,
    ) -> Result<Option<u64>, UpstreamError> {
        let path = format!("/v2/{name}/blobs/{digest}");
        let Some(resp) = self
            .read(Method::GET, &path, async |conn: &mut HttpConnection| {
                v2::get_blob(conn, name, digest.as_str(), 0).await
            })
            .await?
        else {
            return Ok(None);
        };
        match store.put_blob(resp.into_body(), digest).await {
            Ok((size, _)) => Ok(Some(size)),
            Err(UploadError::DigestMismatch { actual, .. }) => Err(UpstreamError::Corrupt(
                format!("its bytes hash to {actual}; nothing was stored"),
            )),
            Err(UploadError::Interrupted(e)) => Err(UpstreamError::Broken(format!(
                "the blob download broke off: {e}"
            ))),
            Err(e) => Err(UpstreamError::Broken(format!("storing the blob: {e}"))),
        }
    }
}

/// The first message of a V2 error body, in `": message"` form (empty when
/// there is none), for [`UpstreamError::Status`].
fn first_error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/errors/0/message")
                .and_then(|m| m.as_str())
                .map(|m| format!(": {m}"))
        })
        .unwrap_or_default()
}

/// The media type of a fetched manifest: the `Content-Type` when it names a
/// manifest type, else the body's `mediaType`; schema1 and unknown types
/// are refused (berth does not store them).
fn manifest_media_type(content_type: Option<&str>, bytes: &[u8]) -> Result<String, UpstreamError> {
    if let Some(ct) = content_type.filter(|ct| media::manifest_kind(ct).is_some()) {
        return Ok(ct.to_string());
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| UpstreamError::Corrupt(format!("the manifest is not JSON: {e}")))?;
    match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(mt) if media::manifest_kind(mt).is_some() => Ok(mt.to_string()),
        _ if value.get("manifests").is_some() => Ok(media::OCI_INDEX.to_string()),
        _ if value.get("config").is_some()
            && value.get("schemaVersion").and_then(|v| v.as_i64()) == Some(2) =>
        {
            Ok(media::OCI_MANIFEST.to_string())
        }
        _ => Err(UpstreamError::Corrupt(format!(
            "unsupported manifest type {:?} (schema1 is not mirrored)",
            content_type.unwrap_or("none")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_comes_from_the_header_then_the_body() {
        assert_eq!(
            manifest_media_type(Some(media::DOCKER_MANIFEST), b"{}").unwrap(),
            media::DOCKER_MANIFEST
        );
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media::OCI_INDEX
        );
        assert_eq!(
            manifest_media_type(Some("application/json"), body.as_bytes()).unwrap(),
            media::OCI_INDEX
        );
        assert_eq!(
            manifest_media_type(None, br#"{"schemaVersion":2,"config":{},"layers":[]}"#).unwrap(),
            media::OCI_MANIFEST
        );
    }

    #[test]
    fn schema1_and_garbage_are_refused() {
        assert!(manifest_media_type(Some(media::SCHEMA1), br#"{"schemaVersion":1}"#).is_err());
        assert!(manifest_media_type(None, b"not json").is_err());
    }
}
