//! `berth pull`: one image from a registry into a `docker load` archive in
//! the Docker 25+ shape (`v2-compat.md` §3.3), which Docker's classic and
//! containerd stores, Docker ≥ 29, and skopeo/podman (`docker-archive:` and
//! `oci-archive:`) all read:
//!
//! ```text
//! oci-layout              {"imageLayoutVersion":"1.0.0"}
//! index.json              one descriptor, annotated with
//!                         io.containerd.image.name = docker.io/<name>:<tag>
//!                         org.opencontainers.image.ref.name = <tag>
//! manifest.json           [{"Config":"blobs/sha256/<c>","RepoTags":[...],"Layers":[...]}]
//! repositories            {"<name>":{"<tag>":"<top diff_id hex>"}}
//! blobs/sha256/<hex>      manifest, config and layers, byte for byte as served
//! ```
//!
//! Blobs keep the registry's bytes (and so their digests); `manifest.json`
//! points at the same files (the classic store sniffs compression).
//! Metadata comes first so streaming readers know everything before the
//! layers arrive. Each blob is streamed straight into the archive and
//! hashed on the way; the last chunk of each blob is held back until its
//! digest checks out, so a bad blob never ends as a complete tar member.
//! A broken download (connection lost, or no data for two minutes) resumes
//! with `Range` on a new connection. With `--output FILE` the archive is
//! written to a temporary file next to FILE and renamed onto it only when
//! complete.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_server::names::{Algorithm, Digest};
use berth_server::store::{media, writeback};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::error::ArchiveError;
use super::progress::Progress;
use super::reference::ImageRef;
use crate::registry::{FetchedManifest, V2Connection};
use crate::transport::Transport;

/// Attempts per blob before a broken download is given up.
const MAX_ATTEMPTS: usize = 5;
/// A blob download that receives nothing for this long is treated as
/// broken and resumed on a new connection.
const STALL: std::time::Duration = std::time::Duration::from_secs(120);
/// Largest config blob read into memory.
const CONFIG_LIMIT: u64 = 16 << 20;
/// Layers at most this large are fetched ahead, whole, on a second
/// connection while the blobs before them stream: over a long link each
/// would otherwise cost a round trip of its own when its turn comes.
const AHEAD_MAX: u64 = 4 << 20;
/// Memory the layers fetched ahead may hold in all.
const AHEAD_BUDGET: u64 = 32 << 20;

/// Where the archive goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// Standard output, streamed.
    Stdout,
    /// A file, replaced only when the archive is complete.
    File(PathBuf),
}

impl Output {
    /// `-` or nothing means stdout.
    pub fn from_arg(arg: Option<&Path>) -> Output {
        match arg {
            Some(p) if p.as_os_str() != "-" => Output::File(p.to_path_buf()),
            _ => Output::Stdout,
        }
    }
}

/// A descriptor of the pulled image manifest.
#[derive(Debug, Clone)]
struct Descriptor {
    digest: Digest,
    size: u64,
}

fn verify(what: impl Into<String>, detail: impl Into<String>) -> ArchiveError {
    ArchiveError::Verify {
        what: what.into(),
        detail: detail.into(),
    }
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor, ArchiveError> {
    let digest = v
        .get("digest")
        .and_then(Value::as_str)
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| verify(what, "descriptor without a valid sha256 digest"))?;
    if digest.algorithm() != Algorithm::Sha256 {
        return Err(verify(
            what,
            format!(
                "{digest} is a {} digest: a Docker archive names blobs by sha256 only \
                 (`berth sync` copies such an image between registries)",
                digest.algorithm()
            ),
        ));
    }
    let size = v
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| verify(what, "descriptor without a size"))?;
    Ok(Descriptor { digest, size })
}

fn is_index(media_type: &str) -> bool {
    media_type == media::OCI_INDEX || media_type == media::DOCKER_LIST
}

/// Resolves the reference to an image manifest: an index's linux/amd64
/// child (attestations, `unknown/unknown`, are skipped), or the only
/// image in it.
async fn image_manifest(
    conn: &mut V2Connection,
    r: &ImageRef,
) -> Result<FetchedManifest, ArchiveError> {
    let top = conn.get_manifest(&r.name, r.tag_or_default()).await?;
    let v: Value = serde_json::from_slice(&top.bytes)
        .map_err(|e| verify(format!("manifest of {r}"), format!("invalid JSON: {e}")))?;
    let media_type = v
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or(&top.media_type)
        .to_string();
    if !is_index(&media_type) {
        return Ok(top);
    }
    let children = v
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let plat = |c: &Value, k: &str| {
        c.pointer(&format!("/platform/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string()
    };
    let images: Vec<&Value> = children
        .iter()
        .filter(|c| plat(c, "os") != "unknown")
        .collect();
    let pick = images
        .iter()
        .find(|c| plat(c, "os") == "linux" && plat(c, "architecture") == "amd64")
        .or_else(|| (images.len() == 1).then(|| images.first()).flatten())
        .ok_or_else(|| {
            let platforms: Vec<String> = images
                .iter()
                .map(|c| format!("{}/{}", plat(c, "os"), plat(c, "architecture")))
                .collect();
            ArchiveError::Selection(format!(
                "{r} is a multi-platform index without linux/amd64 (has {})",
                platforms.join(", ")
            ))
        })?;
    let d = descriptor(pick, &format!("index of {r}"))?;
    Ok(conn.get_manifest(&r.name, d.digest.as_str()).await?)
}

/// A tar header for a regular file or a directory (mtime 0: reproducible).
fn header(path: &str, size: u64, dir: bool) -> Result<[u8; 512], ArchiveError> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)
        .map_err(|e| ArchiveError::io(format!("naming {path} in the archive"), e))?;
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    if dir {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
    } else {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
    }
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// The archive being written: a tar stream over any writer.
struct TarOut<'a> {
    w: &'a mut (dyn AsyncWrite + Unpin + Send),
    what: String,
}

impl TarOut<'_> {
    async fn raw(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        let what = &self.what;
        self.w
            .write_all(data)
            .await
            .map_err(|e| ArchiveError::io(format!("writing {what}"), e))
    }

    async fn dir(&mut self, path: &str) -> Result<(), ArchiveError> {
        self.raw(&header(path, 0, true)?).await
    }

    async fn file(&mut self, path: &str, data: &[u8]) -> Result<(), ArchiveError> {
        self.raw(&header(path, data.len() as u64, false)?).await?;
        self.raw(data).await?;
        self.raw(&[0u8; 512][..padding(data.len() as u64)]).await
    }

    async fn finish(&mut self) -> Result<(), ArchiveError> {
        self.raw(&[0u8; 1024]).await?;
        let what = &self.what;
        self.w
            .flush()
            .await
            .map_err(|e| ArchiveError::io(format!("writing {what}"), e))
    }
}

/// Fetches a small blob (the config) whole, verified.
async fn small_blob(
    conn: &mut V2Connection,
    name: &str,
    d: &Descriptor,
) -> Result<Bytes, ArchiveError> {
    if d.size > CONFIG_LIMIT {
        return Err(verify(
            d.digest.as_str(),
            format!("config of {} bytes is too large", d.size),
        ));
    }
    whole_blob(conn, name, d).await
}

/// Fetches blob `d` whole into memory, verified (its size was checked to
/// be small by the caller).
async fn whole_blob(
    conn: &mut V2Connection,
    name: &str,
    d: &Descriptor,
) -> Result<Bytes, ArchiveError> {
    let body = conn.get_blob(name, &d.digest, 0).await?;
    let limited = http_body_util::Limited::new(body, d.size as usize + 1);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| verify(d.digest.as_str(), format!("reading: {e}")))?
        .to_bytes();
    let got = Digest::of_bytes(&bytes);
    if got != d.digest || bytes.len() as u64 != d.size {
        return Err(verify(
            d.digest.as_str(),
            format!("registry served {} bytes hashing to {got}", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// A layer fetched ahead, once it has arrived (or failed: then it is
/// streamed in its turn like any other, which reports the failure).
type Ahead = oneshot::Receiver<Result<Bytes, ArchiveError>>;

/// The layers to fetch ahead: the small ones that come after a large one
/// (whose transfer hides theirs; a small layer next in line is fetched as
/// soon by the main connection), in archive order, within the budget.
fn ahead_plan(unique: &[Descriptor]) -> Vec<Descriptor> {
    let mut budget = AHEAD_BUDGET;
    let mut plan = Vec::new();
    let first_large = unique.iter().position(|l| l.size > AHEAD_MAX);
    for l in unique
        .iter()
        .skip(first_large.map_or(unique.len(), |i| i + 1))
    {
        if l.size <= AHEAD_MAX && l.size <= budget {
            budget -= l.size;
            plan.push(l.clone());
        }
    }
    plan
}

/// Fetches the planned layers one after another on a connection of its
/// own, handing each to the archive writer. Stops at the first failure or
/// stall (the writer streams the rest itself) or once the writer is gone.
async fn fetch_ahead(
    transport: &Transport,
    name: &str,
    plan: Vec<(Descriptor, oneshot::Sender<Result<Bytes, ArchiveError>>)>,
) {
    if plan.is_empty() {
        return;
    }
    let Ok(mut conn) = V2Connection::open(transport).await else {
        return;
    };
    for (d, tx) in plan {
        // A fetch not finished within STALL (a bound on the whole layer,
        // at most AHEAD_MAX bytes, not a no-progress timeout like the main
        // stream's) gives its layer back to the writer, whose own stream
        // has the stall timeout and the resume. On a link slower than
        // AHEAD_MAX per STALL that layer is fetched twice.
        let Ok(got) = tokio::time::timeout(STALL, whole_blob(&mut conn, name, &d)).await else {
            return;
        };
        let failed = got.is_err();
        if tx.send(got).is_err() || failed {
            return;
        }
    }
}

/// Writes a layer fetched ahead (verified already) as its tar member.
async fn write_fetched(
    out: &mut TarOut<'_>,
    d: &Descriptor,
    bytes: &[u8],
    progress: &Progress,
) -> Result<(), ArchiveError> {
    let path = format!("blobs/sha256/{}", d.digest.hex());
    progress.blob_start(d.digest.as_str(), d.size);
    out.raw(&header(&path, d.size, false)?).await?;
    out.raw(bytes).await?;
    out.raw(&[0u8; 512][..padding(d.size)]).await?;
    progress.blob_bytes(d.digest.as_str(), d.size);
    progress.blob_done(d.digest.as_str(), d.size, "downloaded");
    Ok(())
}

/// Streams one blob into the archive: verified, resumed with `Range` when
/// the connection breaks.
async fn stream_blob(
    transport: &Transport,
    conn: &mut V2Connection,
    name: &str,
    d: &Descriptor,
    out: &mut TarOut<'_>,
    progress: &Progress,
) -> Result<(), ArchiveError> {
    let path = format!("blobs/sha256/{}", d.digest.hex());
    out.raw(&header(&path, d.size, false)?).await?;
    progress.blob_start(d.digest.as_str(), d.size);
    let mut sha = Sha256::new();
    let mut got = 0u64;
    let mut pending: Option<Bytes> = None;
    let mut attempts = 0;
    while got < d.size || attempts == 0 {
        attempts += 1;
        let interrupted = match conn.get_blob(name, &d.digest, got).await {
            Err(e)
                if attempts < MAX_ATTEMPTS
                    && matches!(e, crate::error::ClientError::Http { .. }) =>
            {
                Some(e.to_string())
            }
            Err(e) => return Err(e.into()),
            Ok(mut body) => loop {
                let Ok(next) = tokio::time::timeout(STALL, body.frame()).await else {
                    break Some(format!("no data for {} s", STALL.as_secs()));
                };
                match next {
                    None => break None,
                    Some(Err(e)) => break Some(e.to_string()),
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        got += data.len() as u64;
                        if got > d.size {
                            return Err(verify(
                                d.digest.as_str(),
                                format!(
                                    "registry sent more than the {} bytes of the descriptor",
                                    d.size
                                ),
                            ));
                        }
                        sha.update(&data);
                        progress.blob_bytes(d.digest.as_str(), data.len() as u64);
                        if let Some(p) = pending.replace(data) {
                            out.raw(&p).await?;
                        }
                    }
                }
            },
        };
        if got >= d.size {
            break;
        }
        let why = interrupted.unwrap_or_else(|| "connection closed early".to_string());
        if attempts >= MAX_ATTEMPTS {
            return Err(verify(
                d.digest.as_str(),
                format!(
                    "download failed after {attempts} attempts at byte {got} of {}: {why}",
                    d.size
                ),
            ));
        }
        progress.resume(d.digest.as_str(), got, &why);
        *conn = V2Connection::open(transport).await?;
    }
    let actual = Digest::from_sha256(&sha.finalize());
    if actual != d.digest {
        return Err(verify(
            d.digest.as_str(),
            format!("registry served bytes hashing to {actual}"),
        ));
    }
    if let Some(p) = pending {
        out.raw(&p).await?;
    }
    out.raw(&[0u8; 512][..padding(d.size)]).await?;
    progress.blob_done(d.digest.as_str(), d.size, "downloaded");
    Ok(())
}

/// The archive's metadata files for one image.
struct Metadata {
    index: Vec<u8>,
    manifest_json: Vec<u8>,
    repositories: Option<Vec<u8>>,
}

fn metadata(
    r: &ImageRef,
    m: &FetchedManifest,
    config: &Descriptor,
    layers: &[Descriptor],
    config_json: &Value,
) -> Result<Metadata, ArchiveError> {
    let tag = r.tag_or_default();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": m.media_type,
            "digest": m.digest.as_str(),
            "size": m.bytes.len(),
            "annotations": {
                "io.containerd.image.name": r.full(),
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let manifest_json = json!([{
        "Config": blob(&config.digest),
        "RepoTags": [r.short()],
        "Layers": layers.iter().map(|l| blob(&l.digest)).collect::<Vec<_>>(),
    }]);
    let top = config_json
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .and_then(|ids| ids.last())
        .and_then(Value::as_str)
        .and_then(|d| d.strip_prefix("sha256:"));
    let repositories = top.map(|hex| {
        let name = r.name.strip_prefix("library/").unwrap_or(&r.name);
        json!({ name: { tag: hex } })
    });
    let enc = |v: &Value| {
        serde_json::to_vec(v).map_err(|e| ArchiveError::metadata("archive metadata", e.to_string()))
    };
    Ok(Metadata {
        index: enc(&index)?,
        manifest_json: enc(&manifest_json)?,
        repositories: repositories.as_ref().map(enc).transpose()?,
    })
}

/// Writes the archive of `r` to `w` as it is fetched (`what` names `w` in
/// messages); every blob is verified on the way. Used by `berth pull` and
/// by `docker berth pull` (into the engine's image load).
pub async fn write_archive(
    transport: &Transport,
    r: &ImageRef,
    w: &mut (dyn AsyncWrite + Unpin + Send),
    what: &str,
    progress: &Progress,
) -> Result<Digest, ArchiveError> {
    let mut conn = V2Connection::open(transport).await?;
    let m = image_manifest(&mut conn, r).await?;
    let v: Value = serde_json::from_slice(&m.bytes).map_err(|e| {
        verify(
            format!("manifest {}", m.digest),
            format!("invalid JSON: {e}"),
        )
    })?;
    let config = descriptor(
        v.get("config")
            .ok_or_else(|| verify(format!("manifest {}", m.digest), "no config"))?,
        "config",
    )?;
    let layers: Vec<Descriptor> = v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| verify(format!("manifest {}", m.digest), "no layers"))?
        .iter()
        .map(|l| descriptor(l, "layer"))
        .collect::<Result<_, _>>()?;
    let config_bytes = small_blob(&mut conn, &r.name, &config).await?;
    let config_json: Value = serde_json::from_slice(&config_bytes).map_err(|e| {
        verify(
            format!("config {}", config.digest),
            format!("invalid JSON: {e}"),
        )
    })?;
    let meta = metadata(r, &m, &config, &layers, &config_json)?;

    let mut unique = Vec::new();
    let mut seen: HashSet<Digest> = [m.digest.clone(), config.digest.clone()].into();
    for l in &layers {
        if seen.insert(l.digest.clone()) {
            unique.push(l.clone());
        }
    }
    let total: u64 = unique.iter().map(|l| l.size).sum();
    progress.start(&r.to_string(), unique.len() + 1, total + config.size);
    progress.blob_bytes(config.digest.as_str(), config.size);
    progress.blob_done(config.digest.as_str(), config.size, "downloaded");

    let mut out = TarOut {
        w,
        what: what.to_string(),
    };
    out.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .await?;
    out.file("index.json", &meta.index).await?;
    out.file("manifest.json", &meta.manifest_json).await?;
    if let Some(repos) = &meta.repositories {
        out.file("repositories", repos).await?;
    }
    out.dir("blobs/").await?;
    out.dir("blobs/sha256/").await?;
    out.file(&format!("blobs/sha256/{}", m.digest.hex()), &m.bytes)
        .await?;
    out.file(
        &format!("blobs/sha256/{}", config.digest.hex()),
        &config_bytes,
    )
    .await?;
    let (plan, ahead): (Vec<_>, HashMap<Digest, Ahead>) = ahead_plan(&unique)
        .into_iter()
        .map(|d| {
            let (tx, rx) = oneshot::channel();
            let digest = d.digest.clone();
            ((d, tx), (digest, rx))
        })
        .unzip();
    let fetching = fetch_ahead(transport, &r.name, plan);
    let writing = async {
        // Owned by this block: when it ends, early or not, the fetcher
        // finds the writer gone and stops.
        let mut ahead = ahead;
        for l in &unique {
            if let Some(rx) = ahead.remove(&l.digest) {
                if let Ok(Ok(bytes)) = rx.await {
                    write_fetched(&mut out, l, &bytes, progress).await?;
                    continue;
                }
            }
            stream_blob(transport, &mut conn, &r.name, l, &mut out, progress).await?;
        }
        out.finish().await
    };
    let ((), written) = tokio::join!(fetching, writing);
    written?;
    progress.manifest(&r.to_string(), m.digest.as_str());
    Ok(m.digest)
}

/// The archive file's writer with early writeback
/// (`berth_server::store::writeback`): the archive is fsynced before it is
/// renamed into place, and without this the whole file would go to disk
/// only then. Each stretch is started a [`writeback::STEP`] behind what was
/// handed to the file (whose writes land on the blocking pool a little
/// later), on the blocking pool too.
struct EarlyWriteback<W> {
    inner: W,
    file: Arc<std::fs::File>,
    handed: u64,
    due: writeback::Writeback,
}

impl<W> EarlyWriteback<W> {
    /// Wraps `inner`, the async writer of `file` (a second descriptor of
    /// the same file, for the writeback requests).
    fn new(inner: W, file: std::fs::File) -> EarlyWriteback<W> {
        EarlyWriteback {
            inner,
            file: Arc::new(file),
            handed: 0,
            due: writeback::Writeback::from(0),
        }
    }

    /// The file's async writer back.
    fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for EarlyWriteback<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            this.handed += *n as u64;
            let landed = this.handed.saturating_sub(writeback::STEP);
            if let Some((at, len)) = this.due.due(landed) {
                let file = this.file.clone();
                tokio::task::spawn_blocking(move || writeback::start_writeback(&file, at, len));
            }
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `berth pull`: writes the archive of `r` to `output`.
pub async fn pull(
    transport: Arc<Transport>,
    r: &ImageRef,
    output: &Output,
    progress: &Progress,
) -> Result<Digest, ArchiveError> {
    match output {
        Output::Stdout => {
            let mut out = tokio::io::stdout();
            write_archive(&transport, r, &mut out, "stdout", progress).await
        }
        Output::File(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let shown = path.display().to_string();
            let tmp = tempfile::Builder::new()
                .prefix(".berth-pull-")
                .suffix(".tmp")
                .tempfile_in(&dir)
                .map_err(|e| {
                    ArchiveError::io(format!("creating a temporary file in {}", dir.display()), e)
                })?;
            let std_file = tmp
                .reopen()
                .map_err(|e| ArchiveError::io(format!("opening {}", tmp.path().display()), e))?;
            let second = std_file
                .try_clone()
                .map_err(|e| ArchiveError::io(format!("opening {}", tmp.path().display()), e))?;
            let mut file = tokio::io::BufWriter::with_capacity(
                1 << 20,
                EarlyWriteback::new(tokio::fs::File::from_std(std_file), second),
            );
            let digest = write_archive(&transport, r, &mut file, &shown, progress).await?;
            let inner = file.into_inner().into_inner();
            inner
                .sync_all()
                .await
                .map_err(|e| ArchiveError::io(format!("writing {shown}"), e))?;
            drop(inner);
            {
                use std::os::unix::fs::PermissionsExt;
                let _ =
                    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
            }
            tmp.persist(path).map_err(|e| {
                ArchiveError::io(format!("renaming the archive onto {shown}"), e.error)
            })?;
            Ok(digest)
        }
    }
}
