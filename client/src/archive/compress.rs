//! `berth push --compress zstd|gzip` (issue 17): `docker save` from the
//! classic store writes every layer as a plain `layer.tar`; pushed as they
//! are, they cost their full size on the wire and in the store. With
//! `--compress`, each uncompressed layer of the archive is compressed
//! before the push, on every core, and the manifests are rewritten to
//! name the compressed blobs (the config and its `rootfs.diff_ids` are
//! not touched: the diff_id is the digest of the uncompressed tar either
//! way). Layers the archive already holds compressed are pushed as they
//! are.
//!
//! **Sent while it is compressed.** A manifest names each layer by the
//! digest and size of its bytes as pushed, known only once the whole layer
//! is compressed, but an upload session needs neither until it is
//! committed. So each layer to compress gets a session in the push's
//! first repository at once, and its compressed bytes go into one
//! streamed (chunked) PATCH while they are made: the push costs the longer
//! of compressing and sending, not their sum. The plain bytes are hashed
//! on the way (they must match the layer's diff_id: the archive is
//! checked here, and the PATCH's last piece goes out only once they
//! passed), the compressed ones on the way out, and a berth registry's
//! own digest and diff_id of the session must agree with them. The
//! session is committed by the push with the other blobs, once every one
//! passed (`push.rs`), so a bad archive still publishes nothing.
//!
//! The compressed bytes are also written to a temporary file (in
//! `$TMPDIR`, deleted when the push ends), for mounts into the push's
//! other repositories and for sending again. Memory stays flat (zstd's
//! workers and the gzip blocks below are a few MiB per core, the upload
//! queue 4 MiB). An interrupted push resumes: the session is remembered
//! (`resume.rs`) under the layer and the options until its digest is
//! known; compression with a given algorithm and level is deterministic,
//! so the next run compresses the same bytes, then sends only what the
//! session lacks.
//!
//! * zstd: the `zstd` crate's multithreaded encoder (`zstdmt`), one
//!   worker per core. Needs an OCI manifest (schema2 has no zstd type): a
//!   Docker schema2 manifest is converted to OCI.
//! * gzip: the input is cut into [`GZIP_BLOCK`] blocks, each compressed
//!   into a complete gzip member on its own thread; the members are
//!   concatenated in order (a multi-member gzip stream is one valid gzip
//!   file: Go's `compress/gzip`, zlib's `gunzip`, flate2's
//!   `MultiGzDecoder` read it whole). The manifest keeps its kind: Docker
//!   gzip type for schema2, OCI gzip type for OCI.
//!
//! **Re-push without compressing again.** After compressing a layer, the
//! client remembers (registry, diff_id, algorithm, level) → (digest, size)
//! in its per-user state directory, next to the upload sessions
//! (`resume.rs`): `<state dir>/compressed/<sha256 of the key>`. A later
//! push with the same options trusts an entry only after a blob HEAD in
//! the destination repository says the registry holds that digest there
//! (or that berth would mount it); the layer is then not read at all and
//! the blob stays [`BlobData::Held`]. The registry's manifest PUT still
//! checks the config's diff_ids against the facts it measured for that
//! blob, so a wrong entry cannot publish a wrong image. This needs no new
//! server route (and so no new authorization surface).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_server::names::Digest;
use berth_server::store::media;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::error::ArchiveError;
use super::members::Members;
use super::progress::Progress;
use super::push::Destination;
use super::resume::{key_of, ResumeState};
use super::types::{Blob, BlobData, Compression, Image, ManifestBytes};
use crate::http::{Body, BoxError};
use crate::registry::{Presence, V2Connection};
use crate::transport::Transport;

/// Bytes of plain input per gzip member (each compressed on its own
/// thread). Large enough that the 32 KiB window lost at each boundary and
/// the 18-byte member header cost well under 0.1%.
pub const GZIP_BLOCK: usize = 4 << 20;

/// The OCI media type of a zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A compression algorithm `--compress` can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// zstd, multithreaded; the manifest becomes OCI.
    Zstd,
    /// gzip as independent members compressed in parallel.
    Gzip,
}

impl Codec {
    /// Its name in messages, JSON events and the state's keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
        }
    }

    /// The level used when none is given (each tool's own default).
    pub fn default_level(self) -> i32 {
        match self {
            Codec::Zstd => 3,
            Codec::Gzip => 6,
        }
    }

    /// The levels the algorithm accepts.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Codec::Zstd => 1..=22,
            Codec::Gzip => 1..=9,
        }
    }

    /// The compression the result has, as the archive modules name it.
    pub fn compression(self) -> Compression {
        match self {
            Codec::Zstd => Compression::Zstd,
            Codec::Gzip => Compression::Gzip,
        }
    }
}

/// What `--compress` asks for: an algorithm and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressOptions {
    /// The algorithm.
    pub codec: Codec,
    /// Its level, checked against [`Codec::levels`].
    pub level: i32,
}

impl CompressOptions {
    /// `codec` at `level` (its default if `None`), refusing a level the
    /// algorithm does not have.
    pub fn new(codec: Codec, level: Option<i32>) -> Result<CompressOptions, ArchiveError> {
        let level = level.unwrap_or(codec.default_level());
        if !codec.levels().contains(&level) {
            return Err(ArchiveError::Selection(format!(
                "--compress-level {level}: {} takes {}..={}",
                codec.as_str(),
                codec.levels().start(),
                codec.levels().end()
            )));
        }
        Ok(CompressOptions { codec, level })
    }
}

/// What compressing one input produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// sha256 of the plain input (a layer's diff_id).
    pub plain_digest: Digest,
    /// Bytes of plain input.
    pub plain_size: u64,
    /// sha256 of the compressed output (the blob digest).
    pub digest: Digest,
    /// Bytes of compressed output.
    pub size: u64,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// One gzip member holding `block`.
fn gzip_member(block: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(block.len() / 2 + 64),
        flate2::Compression::new(level.clamp(0, 9) as u32),
    );
    enc.write_all(block)?;
    enc.finish()
}

/// Compresses `input` into `out` with `threads` threads (blocking),
/// hashing both sides. Streams: memory is bounded by the encoder's
/// buffers (zstd) or `threads` × [`GZIP_BLOCK`] × 2 (gzip), whatever the
/// input's size.
pub fn compress(
    input: &mut dyn Read,
    out: &mut dyn Write,
    opts: CompressOptions,
    threads: usize,
) -> io::Result<Outcome> {
    let threads = threads.max(1);
    let mut sink = Hashing {
        inner: out,
        sha: Sha256::new(),
        n: 0,
    };
    let mut plain = Sha256::new();
    let mut plain_size = 0u64;
    match opts.codec {
        Codec::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut sink, opts.level)?;
            // Always the multithreaded mode (one worker at least): its output
            // does not depend on the number of workers, so a resumed push on
            // another machine makes the same blob.
            enc.multithread(threads as u32)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = read_full(input, &mut buf)?;
                if n == 0 {
                    break;
                }
                plain.update(&buf[..n]);
                plain_size += n as u64;
                enc.write_all(&buf[..n])?;
            }
            enc.finish()?;
        }
        Codec::Gzip => {
            let mut blocks: Vec<Vec<u8>> = (0..threads).map(|_| vec![0u8; GZIP_BLOCK]).collect();
            loop {
                // A batch: up to one block per thread.
                let mut lens = Vec::with_capacity(threads);
                for b in blocks.iter_mut() {
                    let n = read_full(input, b)?;
                    if n == 0 {
                        break;
                    }
                    plain.update(&b[..n]);
                    plain_size += n as u64;
                    lens.push(n);
                    if n < GZIP_BLOCK {
                        break;
                    }
                }
                if lens.is_empty() {
                    if plain_size == 0 {
                        // An empty input is still one valid gzip stream.
                        sink.write_all(&gzip_member(&[], opts.level)?)?;
                    }
                    break;
                }
                let members: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
                    let handles: Vec<_> = blocks
                        .iter()
                        .zip(&lens)
                        .map(|(b, &n)| s.spawn(move || gzip_member(&b[..n], opts.level)))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join()
                                .unwrap_or_else(|_| Err(io::Error::other("gzip thread panicked")))
                        })
                        .collect()
                });
                for m in members {
                    sink.write_all(&m?)?;
                }
                if lens.len() < threads || lens.last().is_some_and(|&n| n < GZIP_BLOCK) {
                    break;
                }
            }
        }
    }
    sink.flush()?;
    Ok(Outcome {
        plain_digest: Digest::from_sha256(&plain.finalize()),
        plain_size,
        digest: Digest::from_sha256(&sink.sha.finalize()),
        size: sink.n,
    })
}

/// Where compressed layers are remembered: `<state dir>/compressed/`, the
/// state directory being the upload sessions' (`resume.rs`).
#[derive(Debug, Clone)]
pub struct CompressedCache {
    dir: Option<PathBuf>,
}

impl CompressedCache {
    /// The directory chosen from the environment, as for upload sessions.
    pub fn from_env() -> CompressedCache {
        CompressedCache {
            dir: super::resume::state_dir().map(|d| d.join("compressed")),
        }
    }

    /// Remembers in `dir` (tests).
    pub fn in_dir(dir: PathBuf) -> CompressedCache {
        CompressedCache { dir: Some(dir) }
    }

    fn entry(&self, registry: &str, diff_id: &Digest, opts: CompressOptions) -> Option<PathBuf> {
        let key = key_of(&[
            registry,
            diff_id.as_str(),
            opts.codec.as_str(),
            &opts.level.to_string(),
        ]);
        Some(self.dir.as_ref()?.join(hex::encode(key)))
    }

    /// The compressed blob remembered for this layer, not yet checked
    /// against the registry.
    pub fn get(
        &self,
        registry: &str,
        diff_id: &Digest,
        opts: CompressOptions,
    ) -> Option<(Digest, u64)> {
        let text = fs::read_to_string(self.entry(registry, diff_id, opts)?).ok()?;
        let (digest, size) = text.trim().split_once(' ')?;
        Some((Digest::parse(digest).ok()?, size.parse().ok()?))
    }

    /// Remembers a compressed blob (best effort: without a state directory
    /// the next push compresses again).
    pub fn put(
        &self,
        registry: &str,
        diff_id: &Digest,
        opts: CompressOptions,
        digest: &Digest,
        size: u64,
    ) {
        let Some(entry) = self.entry(registry, diff_id, opts) else {
            return;
        };
        let Some(dir) = entry.parent() else { return };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = entry.with_extension("tmp");
        if fs::write(&tmp, format!("{digest} {size}\n")).is_ok() {
            let _ = fs::rename(&tmp, &entry);
        }
    }
}

/// Whether `--compress` applies to a blob: a layer (one of
/// `layer_digests`) stored uncompressed in the archive.
fn wants_compression(b: &Blob, layer_digests: &[Digest]) -> bool {
    matches!(b.data, BlobData::Member(_))
        && b.checks.compression == Compression::None
        && layer_digests.contains(&b.digest)
}

/// The digests an image's manifests (its children's too) list as layers.
fn layer_digests(img: &Image) -> Result<Vec<Digest>, ArchiveError> {
    let mut out = Vec::new();
    for m in img.children.iter().chain([&img.manifest]) {
        let v = parse(m)?;
        for l in v
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(d) = l
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| Digest::parse(d).ok())
            {
                out.push(d);
            }
        }
    }
    Ok(out)
}

fn blocking_error(e: tokio::task::JoinError) -> ArchiveError {
    ArchiveError::io("compressing a layer", io::Error::other(e.to_string()))
}

/// Bytes of compressed output per piece sent to a streamed upload.
const STREAM_CHUNK: usize = 256 * 1024;

/// Pieces queued between the compressing thread and the upload body (at
/// most this many × [`STREAM_CHUNK`] in memory).
const STREAM_QUEUE: usize = 16;

/// What the compressing thread hands a streamed upload.
pub(super) enum Piece {
    /// More compressed bytes.
    Data(Bytes),
    /// The last piece was sent and the layer passed its checks.
    End,
}

/// Where compressed bytes go: the temporary file, and, when the layer is
/// sent while it is compressed, the upload's queue too. The queue gets
/// its last piece only from [`Tee::end`], after the layer's checks: a
/// layer that fails them never completes its upload.
struct Tee<W> {
    file: W,
    upstream: Option<mpsc::Sender<Piece>>,
    pending: BytesMut,
}

impl<W: Write> Tee<W> {
    fn new(file: W, upstream: Option<mpsc::Sender<Piece>>) -> Tee<W> {
        Tee {
            file,
            upstream,
            pending: BytesMut::new(),
        }
    }

    fn send(&mut self, piece: Piece) -> io::Result<()> {
        match &self.upstream {
            Some(tx) => tx.blocking_send(piece).map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the layer's upload stopped")
            }),
            None => Ok(()),
        }
    }

    /// Sends what is left and the end mark; returns the file.
    fn end(mut self) -> io::Result<W> {
        if self.upstream.is_some() {
            let rest = self.pending.split().freeze();
            if !rest.is_empty() {
                self.send(Piece::Data(rest))?;
            }
            self.send(Piece::End)?;
        }
        Ok(self.file)
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        if self.upstream.is_some() {
            self.pending.extend_from_slice(buf);
            if self.pending.len() >= STREAM_CHUNK {
                let piece = self.pending.split().freeze();
                self.send(Piece::Data(piece))?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The body of a streamed upload: the compressed pieces as they come. It
/// ends only at [`Piece::End`]; if the compressing thread stops without
/// sending it (a failed check or read), the body fails, so the request is
/// abandoned instead of ending a short blob. The receiver is shared so
/// that the sender can close it when the request ends early: the thread
/// then stops instead of waiting on a full queue.
struct Upstream {
    rx: Arc<std::sync::Mutex<mpsc::Receiver<Piece>>>,
    ended: bool,
    progress: Arc<Progress>,
    /// The plain layer's digest, which the progress counts the bytes under.
    layer: String,
}

impl futures_util::Stream for Upstream {
    type Item = Result<Frame<Bytes>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = match self.rx.lock() {
            Ok(mut rx) => rx.poll_recv(cx),
            Err(_) => return Poll::Ready(Some(Err("upload queue poisoned".into()))),
        };
        match polled {
            Poll::Ready(Some(Piece::Data(b))) => {
                self.progress.blob_bytes(&self.layer, b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err("compressing the layer failed".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Compresses one member into a temporary file, checking its plain bytes
/// against the layer's digest and diff_ids (blocking). With `upstream`,
/// the compressed bytes are also handed to a streamed upload as they are
/// made, the last of them only once the checks passed.
pub(super) fn spill(
    members: &Members,
    blob: &Blob,
    opts: CompressOptions,
    upstream: Option<mpsc::Sender<Piece>>,
) -> Result<Blob, ArchiveError> {
    let BlobData::Member(path) = &blob.data else {
        return Ok(blob.clone());
    };
    let m = members.get(path, "a layer to compress")?;
    let mut input = members.open(m)?;
    let what = || format!("compressing {path} with {}", opts.codec.as_str());
    let tmp = tempfile::Builder::new()
        .prefix(".berth-compress-")
        .tempfile()
        .map_err(|e| ArchiveError::io(what(), e))?;
    let (file, tmp_path) = tmp.into_parts();
    let mut out = Tee::new(io::BufWriter::with_capacity(1 << 20, file), upstream);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let outcome =
        compress(&mut input, &mut out, opts, threads).map_err(|e| ArchiveError::io(what(), e))?;
    if outcome.plain_size != m.size {
        return Err(ArchiveError::io(
            what(),
            io::Error::other(format!(
                "read {} of its {} bytes (the input changed while it was pushed?)",
                outcome.plain_size, m.size
            )),
        ));
    }
    let mismatch = |expected: &str| {
        let (member, expected, actual) = (
            path.clone(),
            expected.to_string(),
            outcome.plain_digest.to_string(),
        );
        if blob.checks.digest_is_diff_id || expected != blob.digest.as_str() {
            ArchiveError::DiffIdMismatch {
                member,
                expected,
                actual,
            }
        } else {
            ArchiveError::DigestMismatch {
                member,
                expected,
                actual,
            }
        }
    };
    if outcome.plain_digest != blob.digest {
        return Err(mismatch(blob.digest.as_str()));
    }
    if let Some(id) = blob
        .checks
        .diff_ids
        .iter()
        .find(|id| id.as_str() != outcome.plain_digest.as_str())
    {
        return Err(mismatch(id));
    }
    out.end()
        .map_err(|e| ArchiveError::io(what(), e))?
        .into_inner()
        .map_err(|e| ArchiveError::io(what(), e.into_error()))?;
    let mut out = blob.clone();
    out.digest = outcome.digest;
    out.size = outcome.size;
    out.data = BlobData::Spilled {
        file: Arc::new(tmp_path),
        member: path.clone(),
        sent: None,
    };
    out.checks.digest_is_diff_id = false;
    out.checks.compression = opts.codec.compression();
    Ok(out)
}

/// [`spill`] off the async runtime.
async fn spill_blocking(
    members: &Arc<Members>,
    blob: &Blob,
    opts: CompressOptions,
    upstream: Option<mpsc::Sender<Piece>>,
) -> Result<Blob, ArchiveError> {
    let (m, b) = (members.clone(), blob.clone());
    tokio::task::spawn_blocking(move || spill(&m, &b, opts, upstream))
        .await
        .map_err(blocking_error)?
}

/// The key an upload session sent while compressing is remembered under
/// (`resume.rs`) until its blob digest is known: the plain layer and the
/// options, which determine the compressed bytes.
fn streamed_session_key(diff_id: &Digest, opts: CompressOptions) -> Digest {
    Digest::from_sha256(&key_of(&[
        "berth --compress upload",
        diff_id.as_str(),
        opts.codec.as_str(),
        &opts.level.to_string(),
    ]))
}

/// What compressing the push's layers needs besides the layer.
pub struct Sending<'a> {
    /// The archive.
    pub members: &'a Arc<Members>,
    /// The registry's transport.
    pub transport: &'a Transport,
    /// The upload sessions remembered across runs.
    pub resume: &'a ResumeState,
    /// The push's report.
    pub progress: &'a Arc<Progress>,
}

/// Compresses one plain layer and sends it into an upload session of
/// `repo` at the same time, so the push costs the longer of compressing
/// and sending instead of their sum. The session is left uncommitted (the
/// push commits it with the others once every blob passed) and named in
/// the returned blob. The compressed bytes are also kept in a temporary
/// file, for mounts into the push's other repositories and for an upload
/// that must be sent again.
///
/// A run interrupted while streaming left its session under
/// [`streamed_session_key`]: the layer is then compressed whole first
/// (the same bytes again: compression is deterministic) and the session
/// handed to the push under the blob's digest, which sends only the rest.
async fn compress_and_send(
    s: &Sending<'_>,
    blob: &Blob,
    repo: &str,
    opts: CompressOptions,
) -> Result<Blob, ArchiveError> {
    let key = streamed_session_key(&blob.digest, opts);
    if let Some(loc) = s.resume.saved(repo, &key) {
        let new = spill_blocking(s.members, blob, opts, None).await?;
        s.resume.forget(repo, &key);
        s.resume.save(repo, &new.digest, &loc);
        return Ok(new);
    }
    let mut conn = V2Connection::open_for_upload(s.transport, blob.size).await?;
    let loc = conn.start_upload(repo).await?;
    s.resume.save(repo, &key, &loc);
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let compressing = spill_blocking(s.members, blob, opts, Some(tx));
    let body: Body = StreamBody::new(Upstream {
        rx: rx.clone(),
        ended: false,
        progress: s.progress.clone(),
        layer: blob.digest.to_string(),
    })
    .boxed_unsync();
    let sending = async {
        let patched = conn.patch_streamed(&loc, body).await;
        // However the request ended, the compressing thread must not wait for it.
        if let Ok(mut rx) = rx.lock() {
            rx.close();
        }
        patched
    };
    let (compressed, patched) = tokio::join!(compressing, sending);
    let refused = |e: ArchiveError| async {
        // Nothing of a layer that lies may stay on the registry.
        s.resume.forget(repo, &key);
        if let Ok(mut c) = V2Connection::open(s.transport).await {
            let _ = c.cancel_upload(&loc).await;
        }
        Err(e)
    };
    let (mut new, patched) = match (compressed, patched) {
        (
            Err(e @ (ArchiveError::DiffIdMismatch { .. } | ArchiveError::DigestMismatch { .. })),
            _,
        ) => {
            return refused(e).await;
        }
        // The upload failed (and stopped the compression): the session stays
        // remembered, for the next run to continue.
        (_, Err(e)) => return Err(e.into()),
        (Err(e), Ok(_)) => return Err(e),
        (Ok(new), Ok(patched)) => (new, patched),
    };
    let lost = |what: &str, got: &Digest, sent: &Digest| {
        ArchiveError::io(
            format!("uploading {} (compressed)", blob.data.name()),
            io::Error::other(format!(
                "the registry measured {what} {got}, the client sent {sent}"
            )),
        )
    };
    if let Some(got) = patched.digest.as_ref().filter(|d| **d != new.digest) {
        return refused(lost("the digest", got, &new.digest)).await;
    }
    if let Some(got) = patched.diff_id.as_ref().filter(|d| **d != blob.digest) {
        return refused(lost("the diff_id", got, &blob.digest)).await;
    }
    s.resume.forget(repo, &key);
    s.resume.save(repo, &new.digest, &patched.next);
    if let BlobData::Spilled { sent, .. } = &mut new.data {
        *sent = Some(patched.next);
    }
    Ok(new)
}

/// The layer media type of a compressed layer in a manifest of type
/// `manifest_type`.
fn compressed_layer_type(codec: Codec, manifest_type: &str) -> &'static str {
    match (codec, manifest_type == media::DOCKER_MANIFEST) {
        (Codec::Zstd, _) => OCI_LAYER_ZSTD,
        (Codec::Gzip, true) => media::DOCKER_LAYER_GZIP,
        (Codec::Gzip, false) => media::OCI_LAYER_GZIP,
    }
}

/// The OCI equivalent of a Docker schema2 media type (others unchanged).
fn to_oci(media_type: &str) -> &str {
    match media_type {
        media::DOCKER_CONFIG => media::OCI_CONFIG,
        media::DOCKER_LAYER_TAR => media::OCI_LAYER_TAR,
        media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
        other => other,
    }
}

/// A manifest's JSON, or the archive's error naming it.
fn parse(m: &ManifestBytes) -> Result<Value, ArchiveError> {
    serde_json::from_slice(&m.bytes)
        .map_err(|e| ArchiveError::metadata(format!("manifest {}", m.digest), e.to_string()))
}

fn serialize(v: &Value, media_type: &str) -> Result<ManifestBytes, ArchiveError> {
    let bytes =
        serde_json::to_vec(v).map_err(|e| ArchiveError::metadata("manifest", e.to_string()))?;
    Ok(ManifestBytes::new(bytes, media_type))
}

/// An image manifest naming the compressed layers of `swapped` (plain
/// digest → compressed blob) instead of the plain ones; `None` if it names
/// none of them. A schema2 manifest that gets a zstd layer becomes OCI.
pub fn rewrite_image_manifest(
    m: &ManifestBytes,
    swapped: &HashMap<Digest, Blob>,
    codec: Codec,
) -> Result<Option<ManifestBytes>, ArchiveError> {
    let mut v = parse(m)?;
    let Some(layers) = v.get_mut("layers").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    let hit = |l: &Value| {
        l.get("digest")
            .and_then(Value::as_str)
            .and_then(|d| Digest::parse(d).ok())
            .and_then(|d| swapped.get(&d))
    };
    if !layers.iter().any(|l| hit(l).is_some()) {
        return Ok(None);
    }
    let oci = codec == Codec::Zstd || m.media_type != media::DOCKER_MANIFEST;
    let media_type = if oci {
        match m.media_type.as_str() {
            media::DOCKER_MANIFEST => media::OCI_MANIFEST.to_string(),
            other => other.to_string(),
        }
    } else {
        m.media_type.clone()
    };
    for l in layers.iter_mut() {
        let new = hit(l).cloned();
        let Some(obj) = l.as_object_mut() else {
            continue;
        };
        match new {
            Some(b) => {
                obj.insert(
                    "mediaType".into(),
                    compressed_layer_type(codec, &media_type).into(),
                );
                obj.insert("digest".into(), b.digest.as_str().into());
                obj.insert("size".into(), b.size.into());
            }
            None if oci => {
                if let Some(t) = obj.get("mediaType").and_then(Value::as_str) {
                    let t = to_oci(t).to_string();
                    obj.insert("mediaType".into(), t.into());
                }
            }
            None => {}
        }
    }
    if oci {
        if let Some(config) = v.get_mut("config").and_then(Value::as_object_mut) {
            if let Some(t) = config.get("mediaType").and_then(Value::as_str) {
                let t = to_oci(t).to_string();
                config.insert("mediaType".into(), t.into());
            }
        }
    }
    if let Some(obj) = v.as_object_mut() {
        if obj.contains_key("mediaType") {
            obj.insert("mediaType".into(), media_type.clone().into());
        }
    }
    Ok(Some(serialize(&v, &media_type)?))
}

/// An index naming the rewritten children of `moved` (old digest → new
/// manifest) instead of the old ones; `None` if it names none of them.
fn rewrite_index(
    m: &ManifestBytes,
    moved: &HashMap<Digest, ManifestBytes>,
) -> Result<Option<ManifestBytes>, ArchiveError> {
    let mut v = parse(m)?;
    let Some(list) = v.get_mut("manifests").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    let mut changed = false;
    for d in list.iter_mut() {
        let new = d
            .get("digest")
            .and_then(Value::as_str)
            .and_then(|s| Digest::parse(s).ok())
            .and_then(|old| moved.get(&old));
        if let (Some(new), Some(obj)) = (new, d.as_object_mut()) {
            obj.insert("mediaType".into(), new.media_type.clone().into());
            obj.insert("digest".into(), new.digest.as_str().into());
            obj.insert("size".into(), (new.bytes.len() as u64).into());
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(serialize(&v, &m.media_type)?))
}

/// An image whose plain layers in `swapped` are replaced by their
/// compressed blobs, with its manifests (children, then the top one)
/// rewritten to match.
pub fn rewrite_image(
    img: &Image,
    swapped: &HashMap<Digest, Blob>,
    codec: Codec,
) -> Result<Image, ArchiveError> {
    let mut out = img.clone();
    let layers = layer_digests(img)?;
    for b in out.blobs.iter_mut() {
        if let Some(new) = swapped.get(&b.digest) {
            if wants_compression(b, &layers) {
                *b = new.clone();
            }
        }
    }
    let mut moved: HashMap<Digest, ManifestBytes> = HashMap::new();
    for c in out.children.iter_mut() {
        let new = match rewrite_image_manifest(c, swapped, codec)? {
            Some(n) => Some(n),
            None => rewrite_index(c, &moved)?,
        };
        if let Some(n) = new {
            moved.insert(c.digest.clone(), n.clone());
            *c = n;
        }
    }
    let top = match rewrite_image_manifest(&out.manifest, swapped, codec)? {
        Some(n) => Some(n),
        None => rewrite_index(&out.manifest, &moved)?,
    };
    if let Some(n) = top {
        out.manifest = n;
    }
    Ok(out)
}

/// The images of the push with their uncompressed layers compressed
/// (`--compress`): each layer found compressed by an earlier push (a
/// remembered entry the registry confirms with a HEAD) is taken as it is,
/// every other is compressed and sent at once ([`compress_and_send`]).
/// Reports a `compress` event per layer.
pub async fn apply(
    sending: &Sending<'_>,
    images: Vec<Image>,
    destinations: &[Destination],
    opts: CompressOptions,
    registry: &str,
    cache: &CompressedCache,
) -> Result<Vec<Image>, ArchiveError> {
    let (transport, progress) = (sending.transport, sending.progress);
    // Each plain layer once, with the first repository it goes to.
    let mut todo: Vec<(Blob, String)> = Vec::new();
    for d in destinations {
        let Some(img) = images.get(d.image) else {
            continue;
        };
        let layers = layer_digests(img)?;
        for b in img.blobs.iter().filter(|b| wants_compression(b, &layers)) {
            if !todo.iter().any(|(t, _)| t.digest == b.digest) {
                todo.push((b.clone(), d.to.name.clone()));
            }
        }
    }
    if todo.is_empty() {
        return Ok(images);
    }
    let mut conn: Option<V2Connection> = None;
    let mut swapped: HashMap<Digest, Blob> = HashMap::new();
    for (blob, repo) in todo {
        let remembered = cache.get(registry, &blob.digest, opts);
        if let Some((digest, size)) = remembered {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(V2Connection::open(transport).await?),
            };
            let presence = c.blob_presence(&repo, &digest).await?;
            if presence != Presence::Absent {
                progress.event(serde_json::json!({
                    "event": "compress", "layer": blob.digest.as_str(),
                    "algorithm": opts.codec.as_str(), "level": opts.level,
                    "from": blob.size, "to": size, "digest": digest.as_str(),
                    "action": "held",
                }));
                let mut held = blob.clone();
                held.digest = digest;
                held.size = size;
                held.data = BlobData::Held;
                held.checks.digest_is_diff_id = false;
                held.checks.compression = opts.codec.compression();
                swapped.insert(blob.digest.clone(), held);
                continue;
            }
        }
        progress.note(&format!(
            "compressing {} ({} bytes) with {} level {}",
            blob.data.name(),
            blob.size,
            opts.codec.as_str(),
            opts.level
        ));
        let started = std::time::Instant::now();
        let new = compress_and_send(sending, &blob, &repo, opts).await?;
        progress.event(serde_json::json!({
            "event": "compress", "layer": blob.digest.as_str(),
            "algorithm": opts.codec.as_str(), "level": opts.level,
            "from": blob.size, "to": new.size, "digest": new.digest.as_str(),
            "action": "compressed", "seconds": started.elapsed().as_secs_f64(),
            "sent": matches!(new.data, BlobData::Spilled { sent: Some(_), .. }),
        }));
        cache.put(registry, &blob.digest, opts, &new.digest, new.size);
        swapped.insert(blob.digest.clone(), new);
    }
    images
        .iter()
        .map(|img| rewrite_image(img, &swapped, opts.codec))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: text with a counter.
        let mut out = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(format!("line {i} of a layer, {}\n", i * 7919 % 1013).as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn run(data: &[u8], codec: Codec, threads: usize) -> (Outcome, Vec<u8>) {
        let opts = CompressOptions::new(codec, None).unwrap();
        let mut out = Vec::new();
        let o = compress(&mut &data[..], &mut out, opts, threads).unwrap();
        (o, out)
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(b)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn zstd_round_trips_and_hashes_both_sides() {
        let data = sample(3 * 1024 * 1024 + 17);
        let (o, out) = run(&data, Codec::Zstd, 4);
        assert_eq!(Compression::sniff(&out), Compression::Zstd);
        assert_eq!(zstd::stream::decode_all(&out[..]).unwrap(), data);
        assert_eq!(o.plain_digest, Digest::of_bytes(&data));
        assert_eq!(o.plain_size, data.len() as u64);
        assert_eq!(o.digest, Digest::of_bytes(&out));
        assert_eq!(o.size, out.len() as u64);
        assert!(o.size < o.plain_size / 4, "{} of {}", o.size, o.plain_size);
    }

    #[test]
    fn gzip_is_parallel_members_that_read_back_whole() {
        // Several blocks and batches, the last block partial.
        let data = sample(3 * GZIP_BLOCK * 2 + 12345);
        let (o, out) = run(&data, Codec::Gzip, 3);
        assert_eq!(Compression::sniff(&out), Compression::Gzip);
        assert_eq!(gunzip(&out), data);
        assert_eq!(o.digest, Digest::of_bytes(&out));
        assert_eq!(o.plain_digest, Digest::of_bytes(&data));
        // One member per block: a single-member decoder stops at the first.
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut first)
            .unwrap();
        assert_eq!(first.len(), GZIP_BLOCK);
    }

    #[test]
    fn output_does_not_depend_on_the_thread_count() {
        let data = sample(2 * GZIP_BLOCK + 99);
        assert_eq!(run(&data, Codec::Gzip, 1).1, run(&data, Codec::Gzip, 4).1);
        assert_eq!(run(&data, Codec::Zstd, 1).1, run(&data, Codec::Zstd, 4).1);
    }

    #[test]
    fn empty_and_exact_block_inputs_are_valid_streams() {
        for data in [Vec::new(), sample(GZIP_BLOCK), sample(2 * GZIP_BLOCK)] {
            let (o, out) = run(&data, Codec::Gzip, 2);
            assert_eq!(gunzip(&out), data);
            assert_eq!(o.plain_size, data.len() as u64);
            let (_, out) = run(&data, Codec::Zstd, 2);
            assert_eq!(zstd::stream::decode_all(&out[..]).unwrap(), data);
        }
    }

    #[test]
    fn levels_are_checked() {
        assert!(CompressOptions::new(Codec::Gzip, Some(10)).is_err());
        assert!(CompressOptions::new(Codec::Zstd, Some(0)).is_err());
        assert_eq!(
            CompressOptions::new(Codec::Zstd, None).unwrap().level,
            Codec::Zstd.default_level()
        );
    }

    #[test]
    fn schema2_manifest_becomes_oci_for_zstd_and_stays_docker_for_gzip() {
        let plain = Digest::of_bytes(b"layer");
        let config = Digest::of_bytes(b"config");
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST,
            "config": {"mediaType": media::DOCKER_CONFIG, "size": 6, "digest": config.as_str()},
            "layers": [{"mediaType": media::DOCKER_LAYER_TAR, "size": 5, "digest": plain.as_str()}],
        });
        let m = ManifestBytes::new(serde_json::to_vec(&m).unwrap(), media::DOCKER_MANIFEST);
        let new = Digest::of_bytes(b"compressed");
        let blob = Blob {
            digest: new.clone(),
            size: 3,
            data: BlobData::Held,
            checks: Default::default(),
        };
        let swapped = HashMap::from([(plain, blob)]);
        let z = rewrite_image_manifest(&m, &swapped, Codec::Zstd)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&z.bytes).unwrap();
        assert_eq!(z.media_type, media::OCI_MANIFEST);
        assert_eq!(v["mediaType"], media::OCI_MANIFEST);
        assert_eq!(v["config"]["mediaType"], media::OCI_CONFIG);
        assert_eq!(v["config"]["digest"], config.as_str());
        assert_eq!(v["layers"][0]["mediaType"], OCI_LAYER_ZSTD);
        assert_eq!(v["layers"][0]["digest"], new.as_str());
        assert_eq!(v["layers"][0]["size"], 3);
        let g = rewrite_image_manifest(&m, &swapped, Codec::Gzip)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&g.bytes).unwrap();
        assert_eq!(g.media_type, media::DOCKER_MANIFEST);
        assert_eq!(v["config"]["mediaType"], media::DOCKER_CONFIG);
        assert_eq!(v["layers"][0]["mediaType"], media::DOCKER_LAYER_GZIP);
        assert!(rewrite_image_manifest(&m, &HashMap::new(), Codec::Gzip)
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_cache_keys_on_registry_layer_algorithm_and_level() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompressedCache::in_dir(dir.path().join("compressed"));
        let id = Digest::of_bytes(b"plain");
        let out = Digest::of_bytes(b"z");
        let z3 = CompressOptions::new(Codec::Zstd, Some(3)).unwrap();
        let z9 = CompressOptions::new(Codec::Zstd, Some(9)).unwrap();
        assert_eq!(cache.get("ssh://a", &id, z3), None);
        cache.put("ssh://a", &id, z3, &out, 42);
        assert_eq!(cache.get("ssh://a", &id, z3), Some((out, 42)));
        assert_eq!(cache.get("ssh://a", &id, z9), None);
        assert_eq!(cache.get("ssh://b", &id, z3), None);
        let g = CompressOptions::new(Codec::Gzip, Some(3)).unwrap();
        assert_eq!(cache.get("ssh://a", &id, g), None);
    }
}
