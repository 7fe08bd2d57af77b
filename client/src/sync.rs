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

use ::http::Method;
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::io::StreamReader;

use berth_server::names::Digest;

use crate::archive::registry::{FetchedManifest, V2Connection};
use crate::catalog::{self, Reference};
use crate::cli::{SshArgs, EXIT_CODES};
use crate::error::ClientError;
use crate::transport::Transport;

/// Catalog page size asked for.
const PAGE: usize = 1000;

/// `berth sync`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct SyncArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Registry to copy from: ssh://[user@]host[:port], file:///abs/dir, a directory,
    /// http://host[:port] or https://host[:port].
    pub src: String,
    /// Registry to copy to (same forms).
    pub dst: String,
    /// Repositories (`NAME`, all tags) or tags (`NAME:TAG`) to copy; default: every repository.
    pub references: Vec<String>,
}

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

/// Runs `berth sync`.
pub async fn sync_command(a: SyncArgs) -> Result<(), ClientError> {
    let references = a
        .references
        .iter()
        .map(|r| Reference::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let src = a.ssh.transport(&a.src)?;
    let dst = a.ssh.transport(&a.dst)?;
    let report = sync(&src, &dst, &references).await?;
    let text = if a.json {
        format!(
            "{}\n",
            serde_json::to_string(&report).unwrap_or_else(|_| "{}".to_string())
        )
    } else {
        format!(
            "sync: {} tags ({} unchanged), {} manifests and {} blobs sent ({} bytes), {} blobs already there\n",
            report.tags,
            report.tags_unchanged,
            report.manifests_sent,
            report.blobs_sent,
            report.bytes_sent,
            report.blobs_present
        )
    };
    crate::cli::write_stdout(text.as_bytes()).await
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

/// What a manifest references: child manifests (an index) or blobs.
fn references_of(
    what: &str,
    m: &FetchedManifest,
) -> Result<(Vec<Digest>, Vec<BlobRef>), ClientError> {
    let v: Value = serde_json::from_slice(&m.bytes).map_err(|e| ClientError::Protocol {
        what: what.to_string(),
        message: format!("manifest is not JSON: {e}"),
    })?;
    let digest = |d: &Value| -> Result<Digest, ClientError> {
        d.as_str()
            .and_then(|s| Digest::parse(s).ok())
            .ok_or_else(|| ClientError::Protocol {
                what: what.to_string(),
                message: format!("bad digest {d} in manifest"),
            })
    };
    let mut children = Vec::new();
    let mut blobs = Vec::new();
    if let Some(list) = v["manifests"].as_array() {
        for c in list {
            children.push(digest(&c["digest"])?);
        }
    }
    let descriptors = v["config"]
        .is_object()
        .then(|| &v["config"])
        .into_iter()
        .chain(v["layers"].as_array().into_iter().flatten());
    for d in descriptors {
        blobs.push(BlobRef {
            digest: digest(&d["digest"])?,
            size: d["size"].as_u64(),
        });
    }
    // Schema 1 manifests name their layers in fsLayers.
    for l in v["fsLayers"].as_array().into_iter().flatten() {
        blobs.push(BlobRef {
            digest: digest(&l["blobSum"])?,
            size: None,
        });
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
            crate::archive::registry::Upload::Sent => {
                self.report.blobs_sent += 1;
                self.report.bytes_sent += size;
            }
            crate::archive::registry::Upload::Mounted => self.report.blobs_present += 1,
        }
        Ok(())
    }

    /// A blob's size from the source's HEAD answer (schema 1 manifests have none).
    async fn blob_size(&self, name: &str, digest: &Digest) -> Result<u64, ClientError> {
        let path = format!("/v2/{name}/blobs/{digest}");
        let mut conn = crate::http::HttpConnection::open(self.src_transport).await?;
        let req = ::http::Request::head(path.as_str())
            .header(crate::http::HOST_HEADER, crate::http::HOST)
            .body(crate::http::empty())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let resp = conn.send(req).await?;
        let len = resp
            .headers()
            .get(::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let _ = resp.into_body().collect().await;
        len.ok_or_else(|| ClientError::Protocol {
            what: crate::http::describe(&Method::HEAD, &path),
            message: "no Content-Length for the blob".to_string(),
        })
    }
}
