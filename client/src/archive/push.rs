//! `berth push`: the verified [`Image`]s of an archive onto a registry over
//! the V2 API.
//!
//! Order of operations, so that a failure publishes nothing: the archive
//! was fully read and verified before this module runs (`formats.rs`);
//! then every distinct blob is checked with HEAD and only missing ones are
//! uploaded (POST `?mount=` → one streamed PATCH → PUT `?digest=`; a blob
//! the registry holds for another repository is mounted, not sent), several
//! at once on their own connections; manifests are PUT last — index children by
//! digest, then the manifest to each tag. A re-push of the same archive
//! therefore sends no blob bytes.

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_server::names::Digest;
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};
use tokio::task::JoinSet;

use super::error::ArchiveError;
use super::formats::{Blob, BlobData, Image};
use super::members::Members;
use super::progress::Progress;
use super::reference::ImageRef;
use super::registry::{Upload, V2Connection};
use super::resume::ResumeState;
use crate::error::ClientError;
use crate::transport::Transport;

/// Default number of blobs uploaded at once (Docker's default is 5).
pub const DEFAULT_JOBS: usize = 4;

/// Where one image goes: a repository and a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Index into the archive's images.
    pub image: usize,
    /// Repository and tag to push to.
    pub to: ImageRef,
}

fn describe(images: &[Image]) -> String {
    let names: Vec<String> = images
        .iter()
        .map(|i| {
            if i.refs.is_empty() {
                format!("(untagged {})", i.id)
            } else {
                i.refs
                    .iter()
                    .map(|r| r.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        })
        .collect();
    names.join("; ")
}

/// Decides what goes where.
///
/// * no `target`: every image to every name the archive gives it;
/// * `NAME:TAG`: the image the archive calls `NAME:TAG`, else the only
///   image, pushed as `NAME:TAG`;
/// * `NAME`: every image the archive names `NAME:*`, to the same tags;
///   else the only image, to `NAME` with its archive tags (or `latest`).
pub fn select(
    images: &[Image],
    target: Option<&ImageRef>,
) -> Result<Vec<Destination>, ArchiveError> {
    let mut out = Vec::new();
    let only = (images.len() == 1).then_some(0usize);
    match target {
        None => {
            for (i, img) in images.iter().enumerate() {
                if img.refs.is_empty() {
                    return Err(ArchiveError::Selection(format!(
                        "image {} has no name in the archive; give NAME[:TAG] to push it",
                        img.id
                    )));
                }
                for r in &img.refs {
                    out.push(Destination {
                        image: i,
                        to: ImageRef {
                            name: r.name.clone(),
                            tag: Some(r.tag_or_default().to_string()),
                        },
                    });
                }
            }
        }
        Some(t) if t.tag.is_some() => {
            let named = images.iter().position(|img| {
                img.refs.iter().any(|r| {
                    ImageRef::same_name(&r.name, &t.name)
                        && r.tag_or_default() == t.tag_or_default()
                })
            });
            match named.or(only) {
                Some(i) => out.push(Destination {
                    image: i,
                    to: t.clone(),
                }),
                None => {
                    return Err(ArchiveError::Selection(format!(
                        "the archive holds several images and none is named {t}: {}",
                        describe(images)
                    )))
                }
            }
        }
        Some(t) => {
            for (i, img) in images.iter().enumerate() {
                for r in img
                    .refs
                    .iter()
                    .filter(|r| ImageRef::same_name(&r.name, &t.name))
                {
                    out.push(Destination {
                        image: i,
                        to: ImageRef {
                            name: t.name.clone(),
                            tag: Some(r.tag_or_default().to_string()),
                        },
                    });
                }
            }
            if out.is_empty() {
                let Some(i) = only else {
                    return Err(ArchiveError::Selection(format!(
                        "the archive holds several images and none is named {t}: {}",
                        describe(images)
                    )));
                };
                let img = images
                    .get(i)
                    .ok_or_else(|| ArchiveError::Selection("no image".into()))?;
                let mut tags: Vec<String> = img
                    .refs
                    .iter()
                    .map(|r| r.tag_or_default().to_string())
                    .collect();
                tags.dedup();
                if tags.is_empty() {
                    tags.push(super::reference::DEFAULT_TAG.to_string());
                }
                for tag in tags {
                    out.push(Destination {
                        image: i,
                        to: ImageRef {
                            name: t.name.clone(),
                            tag: Some(tag),
                        },
                    });
                }
            }
        }
    }
    let mut seen = HashSet::new();
    out.retain(|d| seen.insert(d.to.to_string()));
    Ok(out)
}

/// Counts bytes read into the progress report.
struct Counted<R> {
    inner: R,
    progress: Arc<Progress>,
    digest: String,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.progress.blob_bytes(&self.digest, n);
            self.sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

async fn blob_reader(
    members: &Members,
    blob: &Blob,
    skip: u64,
) -> Result<Box<dyn AsyncRead + Send + Unpin>, ArchiveError> {
    match &blob.data {
        BlobData::Generated(bytes) => {
            let from = (skip as usize).min(bytes.len());
            Ok(Box::new(std::io::Cursor::new(bytes[from..].to_vec())))
        }
        BlobData::Member(path) => {
            let m = members.get(path, "a blob to push")?;
            let (file, offset) = members.location(m).ok_or_else(|| ArchiveError::Missing {
                member: path.clone(),
                needed_by: "a blob to push".to_string(),
            })?;
            let what = || format!("reading {path} from {}", members.input());
            let mut f = tokio::fs::File::open(&file)
                .await
                .map_err(|e| ArchiveError::io(what(), e))?;
            let skip = skip.min(m.size);
            f.seek(std::io::SeekFrom::Start(offset + skip))
                .await
                .map_err(|e| ArchiveError::io(what(), e))?;
            Ok(Box::new(tokio::io::AsyncReadExt::take(f, m.size - skip)))
        }
    }
}

/// HEAD, then mount or upload if missing, in the first repository; then
/// makes it visible in the other repositories that need it (berth links
/// blobs per repository) by mounting it from the first.
/// Continues an upload an earlier, interrupted run left in the registry:
/// asks the session's offset and sends only the rest. `Ok(false)` when there
/// is nothing to resume (no saved session, or the registry no longer has it).
async fn resume_blob(
    conn: &mut V2Connection,
    members: &Members,
    repo: &str,
    blob: &Blob,
    progress: &Arc<Progress>,
    resume: &ResumeState,
) -> Result<bool, ArchiveError> {
    let Some(loc) = resume.saved(repo, &blob.digest) else {
        return Ok(false);
    };
    let offset = match conn.upload_offset(&loc).await? {
        Some(offset) if offset <= blob.size => offset,
        _ => {
            resume.forget(repo, &blob.digest);
            return Ok(false);
        }
    };
    progress.blob_start(blob.digest.as_str(), blob.size);
    let reader = Counted {
        inner: blob_reader(members, blob, offset).await?,
        progress: progress.clone(),
        digest: blob.digest.to_string(),
        sent: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    match conn
        .resume_upload(&loc, offset, &blob.digest, blob.size, reader)
        .await
    {
        Ok(()) => {
            resume.forget(repo, &blob.digest);
            progress.blob_done(
                blob.digest.as_str(),
                blob.size,
                &format!("resumed at {offset}"),
            );
            Ok(true)
        }
        // The session moved on (another client, a mismatch): start afresh.
        Err(ClientError::Status { status, .. })
            if status == ::http::StatusCode::NOT_FOUND
                || status == ::http::StatusCode::RANGE_NOT_SATISFIABLE
                || status == ::http::StatusCode::BAD_REQUEST =>
        {
            resume.forget(repo, &blob.digest);
            progress.blob_rewind(blob.digest.as_str(), blob.size);
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

async fn push_blob(
    transport: Arc<Transport>,
    members: Arc<Members>,
    repos: Vec<String>,
    blob: Blob,
    progress: Arc<Progress>,
    resume: Arc<ResumeState>,
) -> Result<(), ArchiveError> {
    let mut conn = V2Connection::open(&transport).await?;
    let Some((first, others)) = repos.split_first() else {
        return Ok(());
    };
    if conn.blob_exists(first, &blob.digest).await? {
        resume.forget(first, &blob.digest);
        progress.blob_done(blob.digest.as_str(), blob.size, "skipped");
    } else if resume_blob(&mut conn, &members, first, &blob, &progress, &resume).await? {
    } else {
        progress.blob_start(blob.digest.as_str(), blob.size);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = Counted {
            inner: blob_reader(&members, &blob, 0).await?,
            progress: progress.clone(),
            digest: blob.digest.to_string(),
            sent: sent.clone(),
        };
        let remember = |loc: &str| resume.save(first, &blob.digest, loc);
        match conn
            .upload_blob(first, None, &blob.digest, blob.size, reader, remember)
            .await
        {
            Ok(Upload::Sent) => {
                resume.forget(first, &blob.digest);
                progress.blob_done(blob.digest.as_str(), blob.size, "uploaded")
            }
            Ok(Upload::Mounted) => progress.blob_done(blob.digest.as_str(), blob.size, "mounted"),
            Err(e) => {
                let n = sent.load(std::sync::atomic::Ordering::Relaxed);
                progress.blob_rewind(blob.digest.as_str(), n);
                return Err(e.into());
            }
        }
    }
    for repo in others {
        if conn.blob_exists(repo, &blob.digest).await? {
            continue;
        }
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = Counted {
            inner: blob_reader(&members, &blob, 0).await?,
            progress: progress.clone(),
            digest: blob.digest.to_string(),
            sent: sent.clone(),
        };
        conn.upload_blob(repo, Some(first), &blob.digest, blob.size, reader, |_| {})
            .await?;
    }
    Ok(())
}

/// Pushes the chosen images. Returns each destination with the manifest
/// digest it now points at.
pub async fn push(
    transport: Arc<Transport>,
    members: Arc<Members>,
    images: &[Image],
    destinations: &[Destination],
    jobs: usize,
    progress: Arc<Progress>,
    resume: Arc<ResumeState>,
) -> Result<Vec<(ImageRef, Digest)>, ArchiveError> {
    // Distinct blobs, each with the repositories that need it (uploaded
    // once, under the first; mounted into the others).
    let mut blobs: BTreeMap<Digest, (Vec<String>, Blob)> = BTreeMap::new();
    for d in destinations {
        let img = images
            .get(d.image)
            .ok_or_else(|| ArchiveError::Selection("no such image".into()))?;
        for b in &img.blobs {
            let (repos, _) = blobs
                .entry(b.digest.clone())
                .or_insert_with(|| (Vec::new(), b.clone()));
            if !repos.contains(&d.to.name) {
                repos.push(d.to.name.clone());
            }
        }
    }
    let total: u64 = blobs.values().map(|(_, b)| b.size).sum();
    let what: Vec<String> = destinations.iter().map(|d| d.to.to_string()).collect();
    progress.start(&what.join(", "), blobs.len(), total);

    let limit = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks = JoinSet::new();
    for (_, (repos, blob)) in blobs {
        let (t, m, p, l, r) = (
            transport.clone(),
            members.clone(),
            progress.clone(),
            limit.clone(),
            resume.clone(),
        );
        tasks.spawn(async move {
            let _permit = l.acquire_owned().await;
            push_blob(t, m, repos, blob, p, r).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(ArchiveError::io(
                    "uploading blobs",
                    std::io::Error::other(e.to_string()),
                ))
            }
        }
    }

    let mut conn = V2Connection::open(&transport).await?;
    let mut out = Vec::new();
    for d in destinations {
        let img = images
            .get(d.image)
            .ok_or_else(|| ArchiveError::Selection("no such image".into()))?;
        for c in &img.children {
            conn.put_manifest(
                &d.to.name,
                c.digest.as_str(),
                &c.media_type,
                &c.bytes,
                &c.digest,
            )
            .await?;
        }
        let m = &img.manifest;
        conn.put_manifest(
            &d.to.name,
            d.to.tag_or_default(),
            &m.media_type,
            &m.bytes,
            &m.digest,
        )
        .await?;
        progress.manifest(&d.to.to_string(), m.digest.as_str());
        out.push((d.to.clone(), m.digest.clone()));
    }
    Ok(out)
}
