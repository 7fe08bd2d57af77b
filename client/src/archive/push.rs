//! `berth push`: the [`Image`]s of an archive onto a registry over the V2
//! API, verifying the blobs while they are uploaded (issue 9).
//!
//! Order of operations, so that a bad archive publishes nothing:
//!
//! 1. Before this module runs, the archive's structure and metadata were
//!    checked (`members.rs`, `formats.rs`): no request has been made yet.
//! 2. **Stage** every distinct blob, `--jobs` at a time, largest first, each
//!    on a connection of its own while it is staged (one an earlier step
//!    finished with when there is one, `idle.rs`: over a long link a new
//!    connection costs two round trips): `HEAD` it in the first repository. A blob the
//!    repository has, or one berth says a mount would link
//!    (`Berth-Blob-Mountable`), is only read and checked locally: nothing is
//!    sent. Any other blob gets an upload session (`POST`, no mount: nothing
//!    is linked yet), or continues one an interrupted run left
//!    (`resume.rs`), and one streamed `PATCH` carries its bytes while the
//!    same bytes are hashed, and for layers decompressed and hashed, on
//!    other threads (`verify.rs`). A layer `--compress` already sent
//!    while compressing it (`compress.rs`) comes with its session: staged
//!    as it is.
//! 3. If any blob fails its checks, every session of the push is cancelled
//!    (`DELETE`) and forgotten, and the push fails with that blob's error:
//!    the registry keeps no blob, link, manifest or tag of the archive.
//!    (A registry or transport failure keeps the sessions for a resume.)
//! 4. Only once every blob has passed: **commit** them (`PUT ?digest=`, or
//!    the deferred `POST ?mount=`), then make each visible in the other
//!    repositories that need it (mounted from the first).
//! 5. Manifests last: index children by digest, then the manifest to each
//!    tag (with several destinations, every manifest by digest first, so a
//!    refused one leaves no tag).
//!
//! A registry announcing `Berth-Verifies: diff-id` (berth, issue 17)
//! checks what this module would otherwise check: the digest of every
//! blob it receives (its `Berth-Upload-Digest` report is compared before
//! the commit) and every layer's diff_id at manifest PUT. Then blobs the
//! registry has are not read at all, and layers sent are neither hashed
//! nor inflated here: the diff_id the registry measured is reported on the
//! last PATCH and compared before any commit, and a config lying about
//! layers the registry already had is refused by its manifest PUT (no
//! manifest, no tag). A re-push of the same archive therefore reads only
//! its metadata. Against other registries every blob is read and checked,
//! as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use berth_server::names::Digest;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::error::ArchiveError;
use super::idle::IdleConnections;
use super::members::Members;
use super::progress::Progress;
use super::reference::ImageRef;
use super::resume::ResumeState;
use super::types::{Blob, BlobData, Image};
use super::verify::{self, Checked, Feed};
use crate::error::ClientError;
use crate::http::{Body, BoxError};
use crate::registry::{Presence, V2Connection};
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

/// Chunks queued between a blob's reading thread and its upload body.
const UPLOAD_QUEUE: usize = 8;

/// An upload body fed by a blob's reading thread ([`verify::check_blob`]),
/// counting the bytes into the progress report. The receiver is shared so
/// that [`send_checked`] can close it when the request ends early: the
/// reading thread then stops instead of waiting on a full queue. If the
/// thread stops first (a failed check or read, or the push is stopping),
/// the body fails, so the request is abandoned rather than left waiting
/// for the rest of its `Content-Length`.
struct FeedBody {
    rx: Arc<Mutex<mpsc::Receiver<Bytes>>>,
    /// Bytes still due.
    left: u64,
    progress: Arc<Progress>,
    digest: String,
    sent: Arc<AtomicU64>,
}

impl futures_util::Stream for FeedBody {
    type Item = Result<Frame<Bytes>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = match self.rx.lock() {
            Ok(mut rx) => rx.poll_recv(cx),
            Err(_) => return Poll::Ready(Some(Err("upload queue poisoned".into()))),
        };
        match polled {
            Poll::Ready(Some(chunk)) => {
                let n = chunk.len() as u64;
                self.left = self.left.saturating_sub(n);
                self.progress.blob_bytes(&self.digest, n);
                self.sent.fetch_add(n, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) if self.left > 0 => {
                self.left = 0;
                Poll::Ready(Some(Err("the blob was not read to its end".into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> ArchiveError {
    ArchiveError::io(
        "checking a blob",
        std::io::Error::other(format!("checking thread failed: {e}")),
    )
}

/// The error of a task that gave up because the push is failing anyway
/// (never reported: the failure that stopped the push is).
fn stopped() -> ArchiveError {
    ArchiveError::io(
        "pushing",
        std::io::Error::new(std::io::ErrorKind::Interrupted, "stopped"),
    )
}

/// Reads and checks a blob without sending it (the registry has it, or
/// will link it).
async fn check_only(
    members: &Arc<Members>,
    blob: &Blob,
    stop: &Arc<AtomicBool>,
) -> Result<(), ArchiveError> {
    let (m, b, s) = (members.clone(), blob.clone(), stop.clone());
    match tokio::task::spawn_blocking(move || verify::check_blob(&m, &b, None, &s))
        .await
        .map_err(join_error)??
    {
        Checked::Passed => Ok(()),
        Checked::Abandoned => Err(stopped()),
    }
}

/// Sends bytes `offset..` of `blob` into the session at `loc` (one PATCH)
/// while the reading thread checks every byte of it, the ones before
/// `offset` too. A registry that reports the session's digest on the PATCH
/// answer checks the blob digest for us; the reading thread then only
/// checks diff_ids. Returns the session's next location once both the
/// PATCH and the checks succeeded; a failed check wins over a failed PATCH,
/// since it explains it. `sent` counts the bytes that went out.
async fn send_checked(
    ctx: &Ctx,
    conn: &mut V2Connection,
    blob: &Blob,
    loc: &str,
    offset: u64,
    sent: &Arc<AtomicU64>,
) -> Result<String, ArchiveError> {
    if offset >= blob.size && blob.size > 0 {
        // The registry holds every byte already: check, commit later.
        check_only(&ctx.members, blob, &ctx.stop).await?;
        return Ok(loc.to_string());
    }
    let (tx, rx) = mpsc::channel::<Bytes>(UPLOAD_QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let (m, b, s) = (ctx.members.clone(), blob.clone(), ctx.stop.clone());
    let registry_hashes = conn.reports_upload_digest();
    let registry_verifies = conn.verifies_diff_ids();
    let check = tokio::task::spawn_blocking(move || {
        let feed = Feed {
            from: offset,
            tx,
            registry_hashes,
            registry_verifies,
        };
        verify::check_blob(&m, &b, Some(feed), &s)
    });
    let body: Body = StreamBody::new(FeedBody {
        rx: rx.clone(),
        left: blob.size - offset,
        progress: ctx.progress.clone(),
        digest: blob.digest.to_string(),
        sent: sent.clone(),
    })
    .boxed_unsync();
    let patched = conn.patch_upload(loc, offset, blob.size, body).await;
    // However the request ended, the reading thread must not wait for it.
    if let Ok(mut rx) = rx.lock() {
        rx.close();
    }
    let checked = check.await.map_err(join_error)?;
    match (checked?, patched) {
        (Checked::Abandoned, _) if ctx.stopping() => Err(stopped()),
        (_, Err(e)) => Err(e.into()),
        (Checked::Passed, Ok(patched)) if registry_hashes => match &patched.digest {
            Some(reported) => match verify::check_reported_digest(blob, reported) {
                Ok(()) if registry_verifies => {
                    check_reported_diff_id(ctx, blob, patched.diff_id.as_ref()).await?;
                    Ok(patched.next)
                }
                Ok(()) => Ok(patched.next),
                Err(mismatch) => {
                    let (m, b, r) = (ctx.members.clone(), blob.clone(), reported.clone());
                    Err(tokio::task::spawn_blocking(move || {
                        verify::blame_reported_mismatch(&m, &b, &r, mismatch)
                    })
                    .await
                    .map_err(join_error)?)
                }
            },
            None => Err(ArchiveError::io(
                format!("uploading {}", blob.digest),
                std::io::Error::other(
                    "the registry did not report the digest of the bytes it received",
                ),
            )),
        },
        (Checked::Passed, Ok(patched)) => Ok(patched.next),
        (Checked::Abandoned, Ok(_)) => Err(ArchiveError::io(
            format!("uploading {}", blob.digest),
            std::io::Error::other("the registry answered before the whole blob was sent"),
        )),
    }
}

/// A layer sent unchecked to a registry that verifies (`Feed::registry_verifies`):
/// the diff_id it measured, reported on the PATCH answer, must be what the
/// image configs say, before anything is committed. A registry that could
/// not measure the session (continued from another process, not a
/// readable layer) reported none: the layer is then read and checked here.
async fn check_reported_diff_id(
    ctx: &Ctx,
    blob: &Blob,
    reported: Option<&Digest>,
) -> Result<(), ArchiveError> {
    if blob.checks.diff_ids.is_empty() {
        return Ok(());
    }
    match reported {
        Some(d) => verify::check_reported_diff_id(blob, d),
        None => {
            tracing::debug!(blob = %blob.digest, "the registry reported no diff_id: checking locally");
            check_only(&ctx.members, blob, &ctx.stop).await
        }
    }
}

/// A manifest PUT the registry refused as invalid (400 `MANIFEST_INVALID`:
/// a berth registry checking the config's diff_ids against the layers it
/// holds) is the archive's fault, like a layer failing a local check;
/// any other failure stays the registry's.
fn image_refused(img: &Image, e: ClientError) -> ArchiveError {
    match &e {
        ClientError::Status {
            status, message, ..
        } if *status == ::http::StatusCode::BAD_REQUEST && message.contains("MANIFEST_INVALID") => {
            ArchiveError::BadMetadata {
                member: format!("the image {}", img.id),
                detail: format!("the registry refused it: {message}"),
            }
        }
        _ => e.into(),
    }
}

/// Where a blob stands once staged (step 2 of the module doc).
#[derive(Debug)]
enum Staged {
    /// The first repository has it: nothing to send or commit.
    Present,
    /// The registry holds it elsewhere: to be mounted once all blobs passed.
    Mount,
    /// Sent (`resumed_at`: partly, by an earlier run) into the session at
    /// `loc`, not committed yet.
    Session {
        loc: String,
        resumed_at: Option<u64>,
    },
}

/// One distinct blob of the push and the repositories that need it (the
/// first gets the upload, the others a mount from it).
struct Job {
    repos: Vec<String>,
    blob: Blob,
}

/// What every task of a push shares.
#[derive(Clone)]
struct Ctx {
    transport: Arc<Transport>,
    members: Arc<Members>,
    progress: Arc<Progress>,
    resume: Arc<ResumeState>,
    /// Open sessions of this push by blob digest (repository, location):
    /// cancelled if the archive turns out bad.
    sessions: Arc<Mutex<HashMap<Digest, (String, String)>>>,
    /// Set once a blob failed: the other tasks stop at their next step
    /// (after recording any session they opened, so it can be cancelled).
    stop: Arc<AtomicBool>,
    /// When the push began, for the phase timings logged at debug level
    /// (`BERTH_LOG=berth=debug`).
    started: Instant,
    /// Connections a finished step left for the next one.
    conns: Arc<IdleConnections>,
}

impl Ctx {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    fn opened(&self, repo: &str, digest: &Digest, loc: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(digest.clone(), (repo.to_string(), loc.to_string()));
        }
    }

    fn closed(&self, digest: &Digest) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(digest);
        }
    }

    /// Cancels every session this push opened (best effort: the push is
    /// failing already) and forgets them for resume.
    async fn cancel_all(&self) {
        let open: Vec<(Digest, (String, String))> = match self.sessions.lock() {
            Ok(mut s) => s.drain().collect(),
            Err(_) => return,
        };
        if open.is_empty() {
            return;
        }
        let mut conn = match V2Connection::open(&self.transport).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot cancel the upload sessions: {e}");
                return;
            }
        };
        for (digest, (repo, loc)) in open {
            self.resume.forget(&repo, &digest);
            if let Err(e) = conn.cancel_upload(&loc).await {
                tracing::warn!(session = %loc, "cancelling an upload session: {e}");
            }
        }
    }
}

/// The session an interrupted run left for this blob and the registry's
/// offset in it, if there is one to continue.
async fn resumable(
    conn: &mut V2Connection,
    repo: &str,
    blob: &Blob,
    resume: &ResumeState,
) -> Result<Option<(String, u64)>, ArchiveError> {
    let Some(loc) = resume.saved(repo, &blob.digest) else {
        return Ok(None);
    };
    match conn.upload_offset(&loc).await? {
        Some(offset) if offset <= blob.size => Ok(Some((loc, offset))),
        _ => {
            resume.forget(repo, &blob.digest);
            Ok(None)
        }
    }
}

/// Whether a failed resume means "start afresh" (the session moved on:
/// another client, a mismatch, busy with another writer, changed on the
/// registry's side) rather than a failure.
fn session_gone(e: &ArchiveError) -> bool {
    match e {
        ArchiveError::SessionMismatch { .. } => true,
        ArchiveError::Client(c) => matches!(
            c.as_ref(),
            ClientError::Status { status, .. }
                if *status == ::http::StatusCode::NOT_FOUND
                    || *status == ::http::StatusCode::RANGE_NOT_SATISFIABLE
                    || *status == ::http::StatusCode::BAD_REQUEST
        ),
        _ => false,
    }
}

/// Step 2 for one blob: HEAD, then check only, or send into a session
/// (continuing a saved one when the registry still has it) while checking.
async fn stage(ctx: &Ctx, job: &Job) -> Result<Staged, ArchiveError> {
    let blob = &job.blob;
    let digest = blob.digest.as_str();
    let Some(first) = job.repos.first() else {
        return Ok(Staged::Present);
    };
    if let BlobData::Spilled {
        sent: Some(loc), ..
    } = &blob.data
    {
        // Sent while it was compressed (`compress.rs`), checked on the way:
        // only its commit is left.
        ctx.opened(first, &blob.digest, loc);
        return Ok(Staged::Session {
            loc: loc.clone(),
            resumed_at: None,
        });
    }
    let mut conn = ctx.conns.take().await?;
    if ctx.stopping() {
        return Err(stopped());
    }
    let presence = conn.blob_presence(first, &blob.digest).await?;
    // A registry that verifies holds exactly the bytes named by the digest
    // and checks diff_ids at manifest PUT: a blob it has is not read here.
    let read_present = !conn.verifies_diff_ids();
    match presence {
        Presence::Present => {
            ctx.conns.give_back(conn);
            ctx.resume.forget(first, &blob.digest);
            if read_present {
                check_only(&ctx.members, blob, &ctx.stop).await?;
            }
            ctx.progress.blob_done(digest, blob.size, "skipped");
            return Ok(Staged::Present);
        }
        Presence::Mountable => {
            ctx.conns.give_back(conn);
            if read_present {
                check_only(&ctx.members, blob, &ctx.stop).await?;
            }
            return Ok(Staged::Mount);
        }
        Presence::Absent => {}
    }
    if V2Connection::is_bulk_upload(&ctx.transport, blob.size) {
        // Through a jump host the jump's window holds back each inner SSH
        // connection: a big blob goes on one of its own.
        ctx.conns.give_back(conn);
        conn = V2Connection::open_bulk(&ctx.transport).await?;
    }
    let sent = Arc::new(AtomicU64::new(0));
    if let Some((loc, offset)) = resumable(&mut conn, first, blob, &ctx.resume).await? {
        ctx.opened(first, &blob.digest, &loc);
        ctx.progress.blob_start(digest, blob.size);
        let r = send_checked(ctx, &mut conn, blob, &loc, offset, &sent).await;
        match r {
            Ok(next) => {
                ctx.opened(first, &blob.digest, &next);
                ctx.conns.give_back(conn);
                return Ok(Staged::Session {
                    loc: next,
                    resumed_at: Some(offset),
                });
            }
            Err(e) if session_gone(&e) => {
                ctx.closed(&blob.digest);
                ctx.resume.forget(first, &blob.digest);
                ctx.progress
                    .blob_rewind(digest, sent.swap(0, Ordering::Relaxed));
                // The connection may be mid-request: start afresh on a new one.
                conn = V2Connection::open(&ctx.transport).await?;
            }
            Err(e) => {
                ctx.progress
                    .blob_rewind(digest, sent.load(Ordering::Relaxed));
                return Err(e);
            }
        }
    } else {
        ctx.progress.blob_start(digest, blob.size);
    }
    if ctx.stopping() {
        return Err(stopped());
    }
    let loc = conn.start_upload(first).await?;
    ctx.resume.save(first, &blob.digest, &loc);
    ctx.opened(first, &blob.digest, &loc);
    if ctx.stopping() {
        return Err(stopped());
    }
    match send_checked(ctx, &mut conn, blob, &loc, 0, &sent).await {
        Ok(next) => {
            ctx.opened(first, &blob.digest, &next);
            ctx.conns.give_back(conn);
            Ok(Staged::Session {
                loc: next,
                resumed_at: None,
            })
        }
        Err(e) => {
            ctx.progress
                .blob_rewind(digest, sent.load(Ordering::Relaxed));
            if matches!(e, ArchiveError::SessionMismatch { .. }) {
                // Useless to resume: drop it here and on the registry.
                ctx.closed(&blob.digest);
                ctx.resume.forget(first, &blob.digest);
                if let Ok(mut c) = V2Connection::open(&ctx.transport).await {
                    let _ = c.cancel_upload(&loc).await;
                }
            }
            Err(e)
        }
    }
}

/// Uploads a blob the checks already passed for into `repo` now: mounted
/// from `from` when the registry can, otherwise sent (and checked again
/// while read, in case the input changed) and committed at once. With
/// `announce`, a blob that has to be sent gets its own progress bar.
async fn upload_now(
    ctx: &Ctx,
    conn: &mut V2Connection,
    repo: &str,
    from: Option<&str>,
    blob: &Blob,
    announce: bool,
) -> Result<&'static str, ArchiveError> {
    let Some(loc) = conn.mount_blob(repo, from, &blob.digest).await? else {
        return Ok("mounted");
    };
    if announce {
        ctx.progress.blob_start(blob.digest.as_str(), blob.size);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let next = match send_checked(ctx, conn, blob, &loc, 0, &sent).await {
        Ok(next) => next,
        Err(e) => {
            ctx.progress
                .blob_rewind(blob.digest.as_str(), sent.load(Ordering::Relaxed));
            if verify::is_archive_fault(&e) {
                if let Ok(mut c) = V2Connection::open(&ctx.transport).await {
                    let _ = c.cancel_upload(&loc).await;
                }
            }
            return Err(e);
        }
    };
    conn.commit_upload(&next, &blob.digest).await?;
    Ok("uploaded")
}

/// Step 4 for one blob: commit its session or mount it, then link it into
/// the other repositories.
async fn commit(ctx: &Ctx, job: &Job, staged: Staged) -> Result<(), ArchiveError> {
    let blob = &job.blob;
    let digest = blob.digest.as_str();
    let Some((first, others)) = job.repos.split_first() else {
        return Ok(());
    };
    if matches!(staged, Staged::Present) && others.is_empty() {
        return Ok(());
    }
    let mut conn = ctx.conns.take().await?;
    match staged {
        Staged::Present => {}
        Staged::Mount => {
            // The registry no longer holding it (collected since the HEAD)
            // only costs sending it after all.
            let action = upload_now(ctx, &mut conn, first, None, blob, true).await?;
            ctx.progress.blob_done(digest, blob.size, action);
        }
        Staged::Session { loc, resumed_at } => {
            if let Err(e) = conn.commit_upload(&loc, &blob.digest).await {
                let e = ArchiveError::from(e);
                if resumed_at.is_none() || !session_gone(&e) {
                    return Err(e);
                }
                // A resumed session whose earlier bytes were not these: the
                // registry refused (and dropped) it; send the blob whole.
                ctx.resume.forget(first, &blob.digest);
                ctx.closed(&blob.digest);
                let done = blob.size.saturating_sub(resumed_at.unwrap_or(0));
                ctx.progress.blob_rewind(digest, done);
                conn = V2Connection::open(&ctx.transport).await?;
                upload_now(ctx, &mut conn, first, None, blob, false).await?;
            }
            ctx.closed(&blob.digest);
            ctx.resume.forget(first, &blob.digest);
            let action = match resumed_at {
                Some(offset) => format!("resumed at {offset}"),
                None => "uploaded".to_string(),
            };
            ctx.progress.blob_done(digest, blob.size, &action);
        }
    }
    for repo in others {
        if !conn.blob_exists(repo, &blob.digest).await? {
            upload_now(ctx, &mut conn, repo, Some(first), blob, false).await?;
        }
    }
    ctx.conns.give_back(conn);
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
    // once, under the first; mounted into the others) and every check any
    // image asks of it.
    let mut blobs: BTreeMap<Digest, Job> = BTreeMap::new();
    for d in destinations {
        let img = images
            .get(d.image)
            .ok_or_else(|| ArchiveError::Selection("no such image".into()))?;
        for b in &img.blobs {
            let job = blobs.entry(b.digest.clone()).or_insert_with(|| Job {
                repos: Vec::new(),
                blob: b.clone(),
            });
            if !job.repos.contains(&d.to.name) {
                job.repos.push(d.to.name.clone());
            }
            for id in &b.checks.diff_ids {
                if !job.blob.checks.diff_ids.contains(id) {
                    job.blob.checks.diff_ids.push(id.clone());
                }
            }
        }
    }
    let total: u64 = blobs.values().map(|j| j.blob.size).sum();
    let what: Vec<String> = destinations.iter().map(|d| d.to.to_string()).collect();
    progress.start(&what.join(", "), blobs.len(), total);
    // Largest first: the longest check (a big layer's inflate) starts at once.
    let mut order: Vec<Arc<Job>> = blobs.into_values().map(Arc::new).collect();
    order.sort_by_key(|j| std::cmp::Reverse(j.blob.size));

    let ctx = Ctx {
        transport: transport.clone(),
        members,
        progress: progress.clone(),
        resume,
        sessions: Arc::new(Mutex::new(HashMap::new())),
        stop: Arc::new(AtomicBool::new(false)),
        started: Instant::now(),
        conns: Arc::new(IdleConnections::new(transport.clone())),
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));

    // Step 2: stage every blob.
    let mut tasks = JoinSet::new();
    for job in &order {
        let (ctx, job, limit) = (ctx.clone(), job.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let begun = ctx.ms();
            let staged = stage(&ctx, &job).await;
            tracing::debug!(
                blob = %job.blob.digest, size = job.blob.size, begun_ms = begun,
                done_ms = ctx.ms(), result = ?staged.as_ref().map_err(|e| e.to_string()),
                "blob staged"
            );
            (job, staged)
        });
    }
    // Every task runs to its end (stopping early once one failed), so that
    // every session opened is known when they have to be cancelled.
    let mut staged = Vec::new();
    let mut failed: Option<ArchiveError> = None;
    let mut bad_archive = false;
    while let Some(done) = tasks.join_next().await {
        let e = match done {
            Ok((job, Ok(s))) => {
                staged.push((job, s));
                continue;
            }
            Ok((_, Err(e))) => e,
            Err(e) => join_error(e),
        };
        if ctx.stopping()
            && matches!(&e, ArchiveError::Io { source, .. } if source.kind() == std::io::ErrorKind::Interrupted)
        {
            continue;
        }
        bad_archive |= verify::is_archive_fault(&e);
        ctx.stop.store(true, Ordering::Relaxed);
        failed.get_or_insert(e);
    }
    // Step 3: a bad archive leaves nothing behind.
    if let Some(e) = failed {
        if bad_archive {
            ctx.cancel_all().await;
        }
        return Err(e);
    }

    tracing::debug!(at_ms = ctx.ms(), "every blob passed its checks");
    // Step 4: every blob passed; commit them.
    staged.sort_by_key(|(j, _)| std::cmp::Reverse(j.blob.size));
    let mut tasks = JoinSet::new();
    for (job, s) in staged {
        let (ctx, limit) = (ctx.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            commit(&ctx, &job, s).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(join_error(e)),
        }
    }

    tracing::debug!(at_ms = ctx.ms(), "blobs committed");
    // Step 5: manifests. With several destinations, every image manifest
    // is first put by digest: a registry that checks diff_ids refuses a bad
    // one there, before any tag of the push is written.
    let mut conn = ctx.conns.take().await?;
    if destinations.len() > 1 {
        for d in destinations {
            let img = images
                .get(d.image)
                .ok_or_else(|| ArchiveError::Selection("no such image".into()))?;
            for c in img.children.iter().chain([&img.manifest]) {
                conn.put_manifest(
                    &d.to.name,
                    c.digest.as_str(),
                    &c.media_type,
                    &c.bytes,
                    &c.digest,
                )
                .await
                .map_err(|e| image_refused(img, e))?;
            }
        }
    }
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
        .await
        .map_err(|e| image_refused(img, e))?;
        tracing::debug!(at_ms = ctx.ms(), reference = %d.to, "manifest pushed");
        progress.manifest(&d.to.to_string(), m.digest.as_str());
        out.push((d.to.clone(), m.digest.clone()));
    }
    Ok(out)
}
