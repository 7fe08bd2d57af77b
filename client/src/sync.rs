//! `berth sync SRC DST [NAME[:TAG]...]`: copies repositories between two
//! registries berth can reach (ssh://, a directory, http:// or https://),
//! over the V2 API.
//!
//! Repositories come from `/v2/_catalog` (paged) and tags from
//! `/v2/<name>/tags/list`, unless named. For each tag the source manifest is
//! compared with the destination's by digest; when they differ, every blob
//! the manifest references is checked with HEAD and only missing ones are
//! streamed across (the destination verifies each digest), child manifests
//! of an index are copied by digest first, and then the manifest bytes are
//! PUT unchanged, so digests are preserved. A second sync sends nothing.
//!
//! The command line (`cli.rs`) parses the references and prints the
//! [`SyncReport`].

use ::http::Method;
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::io::StreamReader;

use berth_server::names::Digest;
use berth_transport::manifest_refs::{manifest_refs, RefKind};
use berth_transport::v2;

use crate::catalog::{self, Reference};
use crate::error::ClientError;
use crate::registry::{read_error, FetchedManifest, V2Connection};
use crate::transport::Transport;

/// Catalog page size asked for.
const PAGE: usize = 1000;

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Tags looked at.
    pub tags: usize,
    /// Tags whose manifest the destination already had.
    pub tags_unchanged: usize,
    /// Manifests PUT (tags and index children).
    pub manifests_sent: usize,
    /// Blobs uploaded.
    pub blobs_sent: usize,
    /// Bytes of the uploaded blobs.
    pub bytes_sent: u64,
    /// Blobs the destination already had (HEAD) or linked from another repository.
    pub blobs_present: usize,
}

/// Copies `references` (every repository when empty) from `src` to `dst`.
pub async fn sync(
    src: &Transport,
    dst: &Transport,
    references: &[Reference],
) -> Result<SyncReport, ClientError> {
    let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
    if references.is_empty() {
        for name in repositories(src).await? {
            let tags = tags(src, &name).await?;
            wanted.push((name, tags));
        }
    } else {
        for r in references {
            let tags = match &r.tag {
                Some(t) => vec![t.clone()],
                None => tags(src, &r.name).await?,
            };
            wanted.push((r.name.clone(), tags));
        }
    }
    let mut copier = Copier {
        src: V2Connection::open(src).await?,
        dst: V2Connection::open(dst).await?,
        src_transport: src,
        report: SyncReport::default(),
    };
    for (name, tags) in wanted {
        for tag in tags {
            copier.copy_tag(&name, &tag).await?;
        }
    }
    Ok(copier.report)
}

/// Every repository of the registry (`/v2/_catalog`, all pages).
async fn repositories(t: &Transport) -> Result<Vec<String>, ClientError> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let path = match all.last() {
            Some(last) => format!("/v2/_catalog?n={PAGE}&last={last}"),
            None => format!("/v2/_catalog?n={PAGE}"),
        };
        let v = catalog::call(t, Method::GET, &path).await?;
        let page = strings(&v["repositories"]);
        let done = page.len() < PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// Tags of a repository (`/v2/<name>/tags/list`).
async fn tags(t: &Transport, name: &str) -> Result<Vec<String>, ClientError> {
    let v = catalog::call(t, Method::GET, &format!("/v2/{name}/tags/list")).await?;
    Ok(strings(&v["tags"]))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A blob a manifest references, with its size when the manifest says it.
struct BlobRef {
    digest: Digest,
    size: Option<u64>,
}

/// What a manifest references that a copy needs first: child manifests
/// (an index) and blobs (config, layers, schema 1 `fsLayers`), read by
/// berth-transport's [`manifest_refs`], digests checked here. A `subject`
/// is not copied: it is another manifest, copied (or not) under its own tag.
fn references_of(
    what: &str,
    m: &FetchedManifest,
) -> Result<(Vec<Digest>, Vec<BlobRef>), ClientError> {
    let protocol = |message: String| ClientError::Protocol {
        what: what.to_string(),
        message,
    };
    let v: Value = serde_json::from_slice(&m.bytes)
        .map_err(|e| protocol(format!("manifest is not JSON: {e}")))?;
    let mut children = Vec::new();
    let mut blobs = Vec::new();
    for r in manifest_refs(&v) {
        let digest = r
            .digest()
            .and_then(|s| Digest::parse(s).ok())
            .ok_or_else(|| {
                let key = if r.kind == RefKind::Schema1Layer {
                    "blobSum"
                } else {
                    "digest"
                };
                protocol(format!("bad digest {} in manifest", r.descriptor[key]))
            })?;
        match r.kind {
            RefKind::Child => children.push(digest),
            RefKind::Config | RefKind::Layer => blobs.push(BlobRef {
                digest,
                size: r.size(),
            }),
            RefKind::Schema1Layer => blobs.push(BlobRef { digest, size: None }),
        }
    }
    Ok((children, blobs))
}

struct Copier<'a> {
    src: V2Connection,
    dst: V2Connection,
    src_transport: &'a Transport,
    report: SyncReport,
}

impl Copier<'_> {
    async fn copy_tag(&mut self, name: &str, tag: &str) -> Result<(), ClientError> {
        self.report.tags += 1;
        let m = self.src.get_manifest(name, tag).await?;
        match self.dst.get_manifest(name, tag).await {
            Ok(have) if have.digest == m.digest => {
                self.report.tags_unchanged += 1;
                return Ok(());
            }
            Ok(_) => {}
            Err(ClientError::Status { status, .. }) if status == ::http::StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
        self.copy_manifest(name, tag, &m).await
    }

    /// Copies what `m` references, then `m` itself under `reference`.
    async fn copy_manifest(
        &mut self,
        name: &str,
        reference: &str,
        m: &FetchedManifest,
    ) -> Result<(), ClientError> {
        let what = format!("{name}@{}", m.digest);
        let (children, blobs) = references_of(&what, m)?;
        for child in children {
            let c = self.src.get_manifest(name, child.as_str()).await?;
            Box::pin(self.copy_manifest(name, child.as_str(), &c)).await?;
        }
        for blob in blobs {
            self.copy_blob(name, &blob).await?;
        }
        self.dst
            .put_manifest(name, reference, &m.media_type, &m.bytes, &m.digest)
            .await?;
        self.report.manifests_sent += 1;
        tracing::info!(repository = name, reference, digest = %m.digest, "manifest copied");
        Ok(())
    }

    async fn copy_blob(&mut self, name: &str, blob: &BlobRef) -> Result<(), ClientError> {
        if self.dst.blob_exists(name, &blob.digest).await? {
            self.report.blobs_present += 1;
            return Ok(());
        }
        let size = match blob.size {
            Some(s) => s,
            None => self.blob_size(name, &blob.digest).await?,
        };
        let body = self.src.get_blob(name, &blob.digest, 0).await?;
        let reader = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
        let upload = self
            .dst
            .upload_blob(name, None, &blob.digest, size, reader, |_| {})
            .await?;
        match upload {
            crate::registry::Upload::Sent => {
                self.report.blobs_sent += 1;
                self.report.bytes_sent += size;
            }
            crate::registry::Upload::Mounted => self.report.blobs_present += 1,
        }
        Ok(())
    }

    /// A blob's size from the source's HEAD answer (schema 1 manifests have none).
    async fn blob_size(&self, name: &str, digest: &Digest) -> Result<u64, ClientError> {
        let mut conn = crate::http::HttpConnection::open(self.src_transport).await?;
        let head = v2::head_blob(conn.shared(), name, digest.as_str())
            .await
            .map_err(read_error)?;
        head.size.ok_or_else(|| ClientError::Protocol {
            what: crate::http::describe(&Method::HEAD, &format!("/v2/{name}/blobs/{digest}")),
            message: "no Content-Length for the blob".to_string(),
        })
    }
}
