//! V2 blob upload sessions (`v2-compat.md` §1.5): `_berth/uploads/<uuid>/data`.
//!
//! A session is a directory holding one data file; its offset is the file's
//! size, so any process on the same store (another host on NFS, a restarted
//! server) can continue it. Bytes are streamed to disk and hashed on a
//! blocking thread; the running sha256 is cached in this process keyed by
//! (path, offset), and re-computed from the file when another process wrote
//! the previous chunk. Closing verifies the digest and hard-links the data
//! into the blob pool, so the blob appears atomically, then the session is
//! removed. Sessions untouched for [`UPLOAD_MAX_IDLE`] are swept when a new
//! one starts.
//!
//! Layer facts (issue 17): a session whose bytes all stream through this
//! process (from offset 0, in one PATCH or several, then the close) is
//! measured on the way by a [`FactsThread`] kept with the cached hash; the
//! close records its diff_id next to the blob. A session another process
//! wrote part of is not measured here: its facts are computed on demand.
//!
//! Resuming (`docs/storage.md`, #7): a request whose body breaks off keeps the
//! bytes that arrived, so the session's offset is where the client can go on
//! from, through this process or any other on the same store. Appends and
//! the close of one session are serialised by an `fcntl` lock on
//! `<session>/.lock`, and the offset is read under it, so a late writer of a
//! dropped connection can never interleave with the client's resumed PATCH.
//!
//! One writer per session (issue 15): a PATCH or closing PUT holds the lock
//! for its whole duration, and a second writer arriving meanwhile — through
//! this process or any other on the store, on any host — is refused at once
//! ([`UploadError::Busy`], 416 with the current `Range`) instead of queueing
//! behind it and appending after it. Closing publishes only what it verified:
//! the digest is checked by hashing the session file itself under the lock
//! ([`verify_session_file`]), the very inode that is then linked into the
//! pool, so bytes another writer or the storage slipped in are never
//! published under the name.
//!
//! sha512 (OCI Distribution 1.1): the running hash stays sha256 (it is what
//! `Berth-Upload-Digest` reports), so a close naming a `sha512:` digest
//! verifies by hashing the session file with sha512 under the lock — the
//! same single read of the file a sha256 close makes to check the inode it
//! publishes. A monolithic upload hashes with the named algorithm while it
//! streams.
//!
//! Chunk order: a chunk (PATCH, or the closing PUT's body) whose
//! `Content-Range` does not start at the session's offset is refused
//! before a byte of it is read ([`UploadError::RangeInvalid`]) and changes
//! nothing: the session, its offset and its cached hash stay as they were.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body::Body;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::atomic::{sync_parent, FileLock, TempFile};
use super::ingest::{forward_body, ingest, IngestError, QUEUE_DEPTH, WRITE_BUFFER};
use super::layer_facts::{FactsThread, LayerFacts, Measured};
use super::transient::{is_transient, retry};
use super::writeback::Writeback;
use super::Store;
pub use crate::names::UploadId;
use crate::names::{Algorithm, Digest};

/// Sessions untouched this long are removed by the next sweep.
pub const UPLOAD_MAX_IDLE: Duration = Duration::from_secs(24 * 3600);
/// How long a request waits for another request still writing the same
/// session (typically the server side of a connection that just dropped).
const SESSION_LOCK_WAIT: Duration = Duration::from_secs(30);

/// Why an upload step failed; the registry maps each to a V2 error code.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No such session (never started, finished, cancelled or expired).
    #[error("upload session unknown")]
    Unknown,
    /// A chunk did not start at the current offset.
    #[error("chunk starts at {start}, but the upload holds {offset} bytes")]
    RangeInvalid {
        /// Bytes already received.
        offset: u64,
        /// Where the chunk claimed to start.
        start: u64,
    },
    /// Another request is writing the session right now (one writer per
    /// session): retry from `offset` once `GET <location>` answers.
    #[error("upload session busy: another request is writing it (one writer per session); it holds {offset} bytes so far")]
    Busy {
        /// Bytes the session held when the request was refused.
        offset: u64,
    },
    /// The session's file on disk does not hash to the digest although the
    /// bytes this request streamed did: something else wrote into it (a
    /// second writer the locks did not stop, or the storage). Nothing was
    /// published and the session was dropped.
    #[error("upload session corrupted on the registry's storage: its data hashes to {on_disk}, not {expected} (changed by another writer or by the storage, not by the client); nothing was published, start a new upload")]
    SessionCorrupt {
        /// The digest the client named (and its bytes had).
        expected: Digest,
        /// What the session file hashes to.
        on_disk: Digest,
    },
    /// The uploaded bytes do not hash to the digest given at close.
    #[error("digest mismatch: expected {expected}, uploaded content has {actual}")]
    DigestMismatch {
        /// The digest the client named.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// The client's stream broke; nothing of this request was kept.
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    /// The filesystem failed.
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

impl From<IngestError> for UploadError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Body(m) => UploadError::Interrupted(m),
            IngestError::Io(e) => UploadError::Io(e),
        }
    }
}

/// For callers that only speak `io::Error` (fsck, gc): the message survives.
impl From<UploadError> for io::Error {
    fn from(e: UploadError) -> io::Error {
        match e {
            UploadError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// The layer measurement of a session whose every byte this process saw.
pub(crate) enum Measuring {
    /// Still being fed.
    Running(FactsThread),
    /// Finished at a PATCH the client said was its last (`Berth-Last-Chunk`):
    /// the result (`None`: not a readable layer), kept for the close.
    Done(Option<Measured>),
}

impl Measuring {
    /// The result, once finished.
    fn finish(self) -> Option<Measured> {
        match self {
            Measuring::Running(t) => t.finish().ok(),
            Measuring::Done(m) => m,
        }
    }
}

/// What this process knows of a session it wrote, at one offset: the
/// running sha256, and the layer measurement when it saw every byte.
struct Running {
    offset: u64,
    hash: Sha256,
    facts: Option<Measuring>,
}

type HashCache = Mutex<HashMap<PathBuf, Running>>;

/// Running hashes of sessions written by this process, by path.
fn hash_cache() -> &'static HashCache {
    static CACHE: OnceLock<HashCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cache_take(path: &Path, offset: u64) -> Option<(Sha256, Option<Measuring>)> {
    let mut map = hash_cache().lock().unwrap_or_else(|e| e.into_inner());
    match map.remove(path) {
        Some(r) if r.offset == offset => Some((r.hash, r.facts)),
        _ => None,
    }
}

fn cache_put(path: &Path, offset: u64, hash: Sha256, facts: Option<Measuring>) {
    let mut map = hash_cache().lock().unwrap_or_else(|e| e.into_inner());
    map.insert(
        path.to_path_buf(),
        Running {
            offset,
            hash,
            facts,
        },
    );
}

fn cache_forget(path: &Path) {
    let mut map = hash_cache().lock().unwrap_or_else(|e| e.into_inner());
    map.remove(path);
}

/// sha256 of the first `len` bytes of a file (resuming another process's session).
fn rehash(path: &Path, len: u64) -> io::Result<Sha256> {
    let mut h = Sha256::new();
    let mut f = File::open(path)?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        h.update(&buf[..n]);
    }
}

/// Puts the verified session file `data` in the place of the pool's
/// `blob`, atomically (a hard link under a temp name, renamed over it), so
/// readers see the old file or the verified one, never neither.
fn replace_with(data: &Path, blob: &Path) -> io::Result<()> {
    let dir = blob
        .parent()
        .ok_or_else(|| io::Error::other("pool blob has no parent"))?;
    let temp = super::atomic::TempFile::new_in(dir, "heal")?;
    let name = temp.path().to_path_buf();
    fs::remove_file(&name)?;
    temp.forget();
    if fs::hard_link(data, &name).is_err() {
        // No hard links here: the session's name is dropped next anyway.
        fs::rename(data, &name)?;
    }
    fs::rename(&name, blob)?;
    sync_parent(blob)
}

/// Checks, under the session lock, that the session file itself — the
/// inode about to be linked into the pool — holds `size` bytes hashing to
/// `expected`: the streamed hash covered the bytes this process wrote and
/// read, which on a shared filesystem need not be the bytes on disk.
///
/// `streamed` is the running sha256 of the bytes the requests wrote. When
/// the client named a sha256 digest it is compared first (a mismatch is the
/// client's: [`UploadError::DigestMismatch`]), and the file's hash tells
/// only whether storage changed it ([`UploadError::SessionCorrupt`]). For
/// another algorithm the file's hash is the only one there is, so a
/// mismatch is the client's unless the size shows the file changed.
fn verify_session_file(
    data: &Path,
    size: u64,
    expected: &Digest,
    streamed: Digest,
) -> Result<(), UploadError> {
    #[cfg(test)]
    if tests::storage_fails_for(data) {
        return Err(UploadError::Io(io::Error::from_raw_os_error(libc::ESTALE)));
    }
    let streamed_counts = expected.algorithm() == Algorithm::Sha256;
    if streamed_counts && streamed != *expected {
        return Err(UploadError::DigestMismatch {
            expected: expected.clone(),
            actual: streamed,
        });
    }
    let on_disk = retry("verifying an upload session", || {
        super::hash_file(data, b"", expected.algorithm())
    })?;
    let len = fs::metadata(data)?.len();
    if &on_disk == expected && len == size {
        return Ok(());
    }
    if !streamed_counts && len == size {
        return Err(UploadError::DigestMismatch {
            expected: expected.clone(),
            actual: on_disk,
        });
    }
    tracing::error!(
        session = %data.display(), %expected, %on_disk, len, size,
        "upload session data differs from the bytes streamed into it; not published"
    );
    Err(UploadError::SessionCorrupt {
        expected: expected.clone(),
        on_disk,
    })
}

impl Store {
    /// Starts a session (after sweeping expired ones) and returns its id.
    pub fn start_upload(&self) -> io::Result<UploadId> {
        if let Err(e) = self.sweep_uploads(UPLOAD_MAX_IDLE) {
            tracing::warn!(error = %e, "sweeping expired upload sessions");
        }
        let id = UploadId::new();
        let p = self.paths();
        // `create_dirs` makes the session's directory durable (it fsyncs
        // `_berth/uploads`) before the data file is named inside it.
        super::atomic::create_dirs(p.upload_dir(&id))?;
        super::atomic::create_file(&p.upload_data(&id))?;
        Ok(id)
    }

    /// Bytes received so far, or `None` for an unknown session. Waits (a
    /// bounded time) for a request still appending to the session, so the
    /// answer is where a resumed upload must continue.
    pub fn upload_offset(&self, id: &UploadId) -> io::Result<Option<u64>> {
        let _lock =
            match FileLock::exclusive_within(&self.paths().upload_lock(id), SESSION_LOCK_WAIT) {
                Ok(l) => l, // `None` on timeout: the size so far is still a valid offset
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
        match fs::metadata(self.paths().upload_data(id)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a session (DELETE), waiting (a bounded time) for a request
    /// still writing it; `false` if it did not exist. A session still busy
    /// after the wait is [`UploadError::Busy`].
    pub fn cancel_upload(&self, id: &UploadId) -> Result<bool, UploadError> {
        let lock =
            match FileLock::exclusive_within(&self.paths().upload_lock(id), SESSION_LOCK_WAIT) {
                Ok(Some(l)) => l,
                Ok(None) => {
                    return Err(UploadError::Busy {
                        offset: self.unlocked_size(id),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e.into()),
            };
        let removed = self.remove_session(id)?;
        drop(lock);
        Ok(removed)
    }

    /// Removes a session whose lock the caller holds: first renamed out of
    /// the way (`.tmp-gone-<id>`, a single atomic step after which no one
    /// can open its lock or data by name), then deleted. `false` if it did
    /// not exist.
    fn remove_session(&self, id: &UploadId) -> io::Result<bool> {
        let p = self.paths();
        cache_forget(&p.upload_data(id));
        let gone = p.uploads_dir().join(format!(
            "{}gone-{}",
            super::atomic::TEMP_PREFIX,
            id.as_str()
        ));
        match fs::rename(p.upload_dir(id), &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        // Durable before the answer: a closed session's data is the pool
        // blob's inode, and a session a power cut brought back would take
        // a retried close's bytes onto the end of it.
        sync_parent(&gone)?;
        match fs::remove_dir_all(&gone) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            // Unreachable by name already; fsck/gc remove stale temp entries.
            Err(e) => {
                tracing::warn!(error = %e, path = %gone.display(), "removing a closed upload session");
                Ok(true)
            }
        }
    }

    /// The session's size read without its lock (for a busy answer: the
    /// writer may still be adding to it).
    fn unlocked_size(&self, id: &UploadId) -> u64 {
        fs::metadata(self.paths().upload_data(id))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Appends a request body to a session (PATCH). With `start`, the chunk
    /// must begin at the current offset. Returns the new offset and the
    /// sha256 of everything the session holds (the running hash, so
    /// reporting it costs nothing: a client can check it instead of hashing
    /// the bytes it sent itself). On any failure the data file is cut back
    /// to where it was. With `last` (the client sends nothing more before
    /// the close), the layer measurement of a session this process saw
    /// whole is finished and returned too: a client can compare the diff_id
    /// with the image config's before it commits anything.
    pub async fn append_upload<B>(
        &self,
        id: &UploadId,
        body: B,
        start: Option<u64>,
        last: bool,
    ) -> Result<(u64, Digest, Option<Measured>), UploadError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (offset, hasher, facts, lock) = self.append_inner(id, body, start, last).await?;
        let digest = Digest::from_sha256(&hasher.clone().finalize());
        let measured = match &facts {
            Some(Measuring::Done(m)) => m.clone(),
            _ => None,
        };
        cache_put(&self.paths().upload_data(id), offset, hasher, facts);
        drop(lock);
        Ok((offset, digest, measured))
    }

    /// Closes a session (PUT `?digest=`): appends `body` (possibly empty;
    /// with `start`, it must begin at the current offset, else nothing
    /// changes), verifies the digest over everything in its own algorithm,
    /// publishes the blob into the pool and removes the session. A mismatch
    /// removes the session too. Returns the size, and the blob's layer
    /// facts when this process measured every byte of it (module doc).
    pub async fn finish_upload<B>(
        &self,
        id: &UploadId,
        body: B,
        expected: &Digest,
        start: Option<u64>,
    ) -> Result<(u64, Option<LayerFacts>), UploadError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (size, hasher, facts, lock) = self.append_inner(id, body, start, false).await?;
        let streamed = Digest::from_sha256(&hasher.finalize());
        let store = self.clone();
        let id = id.clone();
        let expected = expected.clone();
        tokio::task::spawn_blocking(move || -> Result<(u64, Option<LayerFacts>), UploadError> {
            // Held until the session is gone: no append can slip in between
            // the digest check and the link (the pool entry shares the inode).
            let _lock = lock;
            let p = store.paths();
            let data = p.upload_data(&id);
            if let Err(e) = verify_session_file(&data, size, &expected, streamed) {
                // Bytes that can never be published go; a storage error
                // says nothing about them, and the client told to retry
                // must find its session (a multi-GB upload) still there.
                if matches!(
                    e,
                    UploadError::DigestMismatch { .. } | UploadError::SessionCorrupt { .. }
                ) {
                    store.remove_session(&id)?;
                }
                return Err(e);
            }
            let blob = p.blob(&expected);
            super::atomic::create_dirs(p.blobs_dir(expected.algorithm()))?;
            match retry("linking an upload into the pool", || {
                fs::hard_link(&data, &blob)
            }) {
                Ok(()) => sync_parent(&blob)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !store.present_blob_sound(&expected, size)? {
                        replace_with(&data, &blob)?;
                    }
                }
                Err(e) if is_transient(&e) => return Err(e.into()),
                // No hard links on this filesystem: move the data instead.
                Err(_) => {
                    fs::rename(&data, &blob)?;
                    sync_parent(&blob)?;
                }
            }
            store.remove_session(&id)?;
            let facts = facts
                .and_then(Measuring::finish)
                .and_then(|m| store.keep_measured(&expected, Ok(m)));
            Ok((size, facts))
        })
        .await
        .map_err(|e| UploadError::Io(io::Error::other(e.to_string())))?
    }

    /// Monolithic upload (POST `?digest=` with a body, `v2-compat.md` §1.5):
    /// streams to a temp file, verifies, publishes, and records the layer
    /// facts measured on the way. Returns the size and those facts.
    pub async fn put_blob<B>(
        &self,
        body: B,
        expected: &Digest,
    ) -> Result<(u64, Option<LayerFacts>), UploadError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let temp = TempFile::new_in(&self.paths().uploads_dir(), "blob")?;
        let done = ingest(body, temp, None, expected.algorithm(), true).await?;
        if &done.digest != expected {
            return Err(UploadError::DigestMismatch {
                expected: expected.clone(),
                actual: done.digest,
            });
        }
        let store = self.clone();
        let digest = done.digest.clone();
        let size = done.size;
        let measured = done.measured;
        let facts = tokio::task::spawn_blocking(move || -> io::Result<Option<LayerFacts>> {
            store.commit_blob(done.temp, &digest)?;
            Ok(measured.and_then(|m| store.keep_measured(&digest, m)))
        })
        .await
        .map_err(|e| UploadError::Io(io::Error::other(e.to_string())))??;
        Ok((size, facts))
    }

    /// Removes sessions whose data was last written more than `max_idle` ago.
    /// Returns how many were removed.
    pub fn sweep_uploads(&self, max_idle: Duration) -> io::Result<usize> {
        let dir = self.paths().uploads_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        // Ages on the store's clock: a host whose clock runs a day ahead
        // must not take other hosts' paused sessions for abandoned ones.
        let clock = self.clock();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = UploadId::parse(&name) else {
                continue; // temp files of monolithic uploads: owned by their request
            };
            let data = self.paths().upload_data(&id);
            let touched = fs::metadata(&data)
                .or_else(|_| entry.metadata())
                .and_then(|m| m.modified());
            let Ok(touched) = touched else { continue };
            if clock.since(touched) > max_idle {
                // A session someone is writing right now is not idle.
                let Some(_lock) =
                    FileLock::exclusive_within(&self.paths().upload_lock(&id), Duration::ZERO)?
                else {
                    continue;
                };
                self.remove_session(&id)?;
                tracing::info!(upload = %id.as_str(), "expired upload session removed");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Streams `body` onto the end of the session's data file and returns the
    /// new size with the sha256 state over the whole file, the layer-facts
    /// thread when it has seen every byte, and the session lock (held
    /// throughout). A body that breaks off keeps what arrived.
    async fn append_inner<B>(
        &self,
        id: &UploadId,
        body: B,
        start: Option<u64>,
        last: bool,
    ) -> Result<(u64, Sha256, Option<Measuring>, FileLock), UploadError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let data = self.paths().upload_data(id);
        let lock_path = self.paths().upload_lock(id);
        // One writer per session: never wait behind another writer (and
        // then append after it); refuse at once.
        let lock = tokio::task::spawn_blocking(move || {
            retry("locking an upload session", || {
                FileLock::exclusive_within(&lock_path, Duration::ZERO)
            })
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
        let lock = match lock {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Err(UploadError::Busy {
                    offset: self.unlocked_size(id),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(UploadError::Unknown),
            Err(e) => return Err(e.into()),
        };
        let file = match OpenOptions::new().append(true).open(&data) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(UploadError::Unknown),
            Err(e) => return Err(e.into()),
        };
        let offset = file.metadata()?.len();
        if let Some(start) = start {
            if start != offset {
                return Err(UploadError::RangeInvalid { offset, start });
            }
        }
        let cached = cache_take(&data, offset);
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_DEPTH);
        let path = data.clone();
        type Written = (u64, Sha256, Option<Measuring>);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<Written> {
            let mut file = file;
            let (mut h, facts) = match cached {
                Some(cached) => cached,
                None => (rehash(&path, offset)?, None),
            };
            // Measured only when this process sees the session from its start.
            let mut facts = match facts {
                Some(f) => Some(f),
                None if offset == 0 => FactsThread::spawn().ok().map(Measuring::Running),
                None => None,
            };
            let mut size = offset;
            {
                let mut out = BufWriter::with_capacity(WRITE_BUFFER, &mut file);
                let mut writeback = Writeback::from(offset);
                while let Some(chunk) = rx.blocking_recv() {
                    match &facts {
                        Some(Measuring::Running(f)) => f.feed(chunk.clone()),
                        // Bytes after a finished measurement: it no longer
                        // describes the session (computed on demand instead).
                        Some(Measuring::Done(_)) => facts = None,
                        None => {}
                    }
                    h.update(&chunk);
                    out.write_all(&chunk)?;
                    size += chunk.len() as u64;
                    writeback.advance(out.get_ref(), size - out.buffer().len() as u64);
                }
                out.flush()?;
            }
            file.sync_data()?;
            if last {
                facts = facts.map(|f| Measuring::Done(f.finish()));
            }
            Ok((size, h, facts))
        });
        let body_error = forward_body(body, tx).await;
        let result = writer
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r);
        let failure = match (body_error, result) {
            (None, Ok((size, h, facts))) => return Ok((size, h, facts, lock)),
            // Everything that arrived is on disk and hashed: keep it, so the
            // client resumes from here instead of resending this request.
            (Some(e), Ok((size, h, facts))) => {
                cache_put(&data, size, h, facts);
                return Err(UploadError::Interrupted(e));
            }
            (Some(e), Err(_)) => UploadError::Interrupted(e),
            (None, Err(e)) => UploadError::Io(e),
        };
        // Keep the session consistent: offset = file size = hashed bytes.
        if let Ok(f) = OpenOptions::new().write(true).open(&data) {
            let _ = f.set_len(offset);
        }
        Err(failure)
    }
}

/// Who opened an upload session and for which repository (issue 14),
/// recorded in the session directory so that every server process on the
/// store answers the session to them, through that repository, only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadOwner {
    /// The repository's full name (`library/foo` for `foo`).
    pub repository: String,
    /// The user who opened the session.
    pub user: String,
}

impl Store {
    /// Binds a session just started (its id not yet given to anyone) to
    /// its owner; the session is removed if the record cannot be written.
    pub fn bind_upload(&self, id: &UploadId, owner: &UploadOwner) -> io::Result<()> {
        let bytes = serde_json::to_vec(owner).map_err(io::Error::other)?;
        super::atomic::write_atomic(&self.paths().upload_owner(id), &bytes).inspect_err(|_| {
            let _ = self.cancel_upload(id);
        })
    }

    /// The owner a session is bound to; `None` for an unknown session or
    /// one opened before sessions were bound (no record).
    pub fn upload_owner(&self, id: &UploadId) -> io::Result<Option<UploadOwner>> {
        match super::read_optional(&self.paths().upload_owner(id))? {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| io::Error::other(format!("corrupt upload owner record: {e}"))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn body(b: &'static [u8]) -> Full<Bytes> {
        Full::new(Bytes::from_static(b))
    }

    #[test]
    fn upload_ids_are_canonical_uuids() {
        let id = UploadId::new();
        assert_eq!(UploadId::parse(id.as_str()), Some(id.clone()));
        for bad in [
            "",
            "..",
            "../x",
            "0F0E0D0C-0B0A-4908-8706-050403020100",
            "0f0e0d0c0b0a490887060504030201000",
            "0f0e0d0c0b0a49088706050403020100",
        ] {
            assert_eq!(UploadId::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn chunks_then_close_publishes_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.start_upload().unwrap();
        assert_eq!(store.upload_offset(&id).unwrap(), Some(0));
        assert_eq!(
            store
                .append_upload(&id, body(b"hello "), Some(0), false)
                .await
                .unwrap(),
            (6, Digest::of_bytes(b"hello "), None)
        );
        assert!(matches!(
            store.append_upload(&id, body(b"x"), Some(3), false).await,
            Err(UploadError::RangeInvalid {
                offset: 6,
                start: 3
            })
        ));
        // A different process would not have the cached hash: drop it.
        cache_forget(&store.paths().upload_data(&id));
        let want = Digest::of_bytes(b"hello world");
        let size = store
            .finish_upload(&id, body(b"world"), &want, None)
            .await
            .unwrap();
        assert_eq!(size.0, 11);
        assert_eq!(store.blob_size(&want).unwrap(), Some(11));
        assert_eq!(store.upload_offset(&id).unwrap(), None);
        assert!(matches!(
            store.append_upload(&id, body(b"x"), None, false).await,
            Err(UploadError::Unknown)
        ));
    }

    /// #7: a PATCH cut off midway keeps what arrived; the client resumes at
    /// the reported offset, here as if through another process (no cache).
    #[tokio::test]
    async fn broken_body_keeps_bytes_for_resume() {
        use http_body::Frame;
        use http_body_util::StreamBody;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.start_upload().unwrap();
        let frames: Vec<Result<Frame<Bytes>, &'static str>> = vec![
            Ok(Frame::data(Bytes::from_static(b"first half, "))),
            Err("connection reset"),
        ];
        let cut = StreamBody::new(futures_util::stream::iter(frames));
        assert!(matches!(
            store.append_upload(&id, cut, Some(0), false).await,
            Err(UploadError::Interrupted(_))
        ));
        assert_eq!(store.upload_offset(&id).unwrap(), Some(12));
        cache_forget(&store.paths().upload_data(&id));
        // The reported digest covers the session's bytes from the first one,
        // rehashed here since no process cached them.
        let (offset, so_far, _) = store
            .append_upload(&id, body(b"second half"), Some(12), false)
            .await
            .unwrap();
        let want = Digest::of_bytes(b"first half, second half");
        assert_eq!((offset, &so_far), (23, &want));
        assert_eq!(
            store
                .finish_upload(&id, body(b""), &want, None)
                .await
                .unwrap()
                .0,
            23
        );
        assert_eq!(store.blob_size(&want).unwrap(), Some(23));
    }

    #[tokio::test]
    async fn mismatch_drops_session_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.start_upload().unwrap();
        store
            .append_upload(&id, body(b"abc"), None, false)
            .await
            .unwrap();
        let wrong = Digest::of_bytes(b"abd");
        assert!(matches!(
            store.finish_upload(&id, body(b""), &wrong, None).await,
            Err(UploadError::DigestMismatch { .. })
        ));
        assert_eq!(store.upload_offset(&id).unwrap(), None);
        assert_eq!(store.blob_size(&wrong).unwrap(), None);
        assert_eq!(store.blob_size(&Digest::of_bytes(b"abc")).unwrap(), None);
    }

    #[tokio::test]
    async fn sweep_removes_idle_sessions_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.start_upload().unwrap();
        assert_eq!(store.sweep_uploads(Duration::from_secs(3600)).unwrap(), 0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(store.sweep_uploads(Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(store.upload_offset(&id).unwrap(), None);
    }

    #[tokio::test]
    async fn monolithic_put_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"blob");
        assert!(matches!(
            store.put_blob(body(b"blub"), &d).await,
            Err(UploadError::DigestMismatch { .. })
        ));
        assert_eq!(store.put_blob(body(b"blob"), &d).await.unwrap().0, 4);
        assert_eq!(store.blob_size(&d).unwrap(), Some(4));
    }

    /// Session data files whose verification fails as storage would
    /// (ESTALE after the retries), for the test below.
    fn failing() -> &'static Mutex<std::collections::HashSet<PathBuf>> {
        static FAILING: OnceLock<Mutex<std::collections::HashSet<PathBuf>>> = OnceLock::new();
        FAILING.get_or_init(Default::default)
    }

    pub(super) fn storage_fails_for(data: &Path) -> bool {
        failing().lock().unwrap().contains(data)
    }

    /// A close whose verification meets a storage error (a GlusterFS
    /// volume losing quorum, an NFS handle gone stale past the retries)
    /// answers an error the client may retry, and keeps the session for
    /// that retry. Before, every failed verification removed the session,
    /// and the retry found none: a multi-GB upload lost to a blip.
    #[tokio::test]
    async fn a_storage_error_at_close_keeps_the_session_for_the_retry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.start_upload().unwrap();
        store
            .append_upload(&id, body(b"hello world"), Some(0), false)
            .await
            .unwrap();
        let want = Digest::of_bytes(b"hello world");
        let data = store.paths().upload_data(&id);
        failing().lock().unwrap().insert(data.clone());
        let first = store.finish_upload(&id, body(b""), &want, None).await;
        failing().lock().unwrap().remove(&data);
        assert!(matches!(first, Err(UploadError::Io(_))), "{first:?}");
        assert_eq!(store.upload_offset(&id).unwrap(), Some(11), "session lost");
        assert_eq!(store.blob_size(&want).unwrap(), None);
        let retry = store.finish_upload(&id, body(b""), &want, None).await;
        assert_eq!(retry.unwrap().0, 11);
        assert_eq!(store.blob_size(&want).unwrap(), Some(11));
    }

    /// A pool blob whose size shows it cannot hold its digest's bytes (a
    /// write a crash cut short; an append by a writer that lost its lock)
    /// is put right by the next upload of those bytes, by a session and by
    /// a monolithic PUT alike. Before, present content was trusted by name
    /// and the damaged file stayed, whatever was pushed again.
    #[tokio::test]
    async fn a_blob_of_the_wrong_size_is_replaced_by_the_next_upload_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = b"the bytes the digest names";
        let d = Digest::of_bytes(good);
        for (how, damage) in [
            ("session", &b"the bytes"[..]),
            ("monolithic", &b"the bytes the digest names, and more"[..]),
        ] {
            store.put_small_blob(good).unwrap();
            let pool = store.paths().blob(&d);
            fs::write(&pool, damage).unwrap();
            if how == "session" {
                let id = store.start_upload().unwrap();
                store
                    .finish_upload(&id, body(good), &d, None)
                    .await
                    .unwrap();
            } else {
                store.put_blob(body(good), &d).await.unwrap();
            }
            assert_eq!(
                fs::read(&pool).unwrap(),
                good,
                "{how} upload left the damaged blob"
            );
            fs::remove_file(&pool).unwrap();
        }
    }

    /// Issue 15 attack: a second writer arriving while the first streams
    /// into the session must be refused, not queued to append after it
    /// (that made `blob ‖ blob` out of two pushes of one blob).
    #[tokio::test]
    async fn a_second_writer_is_refused_while_the_first_writes() {
        use http_body::Frame;
        use http_body_util::StreamBody;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.start_upload().unwrap();
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
        let first = {
            let (store, id) = (store.clone(), id.clone());
            let body = StreamBody::new(tokio_stream_from(rx));
            tokio::spawn(async move { store.append_upload(&id, body, None, false).await })
        };
        tx.send(Ok(Frame::data(Bytes::from_static(b"first "))))
            .await
            .unwrap();
        // Wait for the event: the first writer took its frame, so it holds
        // the session (the lock is taken before the body is read).
        let data = store.paths().upload_data(&id);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while tx.capacity() < tx.max_capacity() {
            assert!(
                std::time::Instant::now() < deadline,
                "first writer never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut second = {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(
                async move { store.append_upload(&id, body(b"second"), None, false).await },
            )
        };
        // The second writer must be answered while the first still holds the
        // session (the old code queued it behind the lock and let it append
        // once the first finished): wait for its answer, the first still
        // unfinished; the deadline only bounds a hang.
        let second_result = tokio::time::timeout(Duration::from_secs(300), &mut second)
            .await
            .expect("the second writer was queued behind the first, not answered")
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"done"))))
            .await
            .unwrap();
        drop(tx);
        let (offset, _, _) = first.await.unwrap().unwrap();
        assert_eq!(offset, 10);
        assert_eq!(
            String::from_utf8_lossy(&fs::read(&data).unwrap()),
            "first done",
            "the second writer appended after the first"
        );
        assert!(
            second_result.is_err(),
            "second writer was let in: {second_result:?}"
        );
    }

    /// Issue 15 attack: the close must verify the bytes that become the blob
    /// (the session file), not only the bytes it streamed: data changed
    /// behind the lock (a writer on a host whose lock was lost, the
    /// storage) is never published under the name.
    #[tokio::test]
    async fn close_verifies_the_session_file_not_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.start_upload().unwrap();
        store
            .append_upload(&id, body(b"good bytes"), None, false)
            .await
            .unwrap();
        // Another writer, bypassing this process, rewrites the data.
        fs::write(store.paths().upload_data(&id), b"evil bytes").unwrap();
        let want = Digest::of_bytes(b"good bytes");
        let r = store.finish_upload(&id, body(b""), &want, None).await;
        assert!(
            r.is_err(),
            "a session whose file changed was published: {r:?}"
        );
        assert_eq!(store.blob_size(&want).unwrap(), None);
        assert_eq!(
            store.upload_offset(&id).unwrap(),
            None,
            "the bad session is dropped"
        );
    }

    /// sha512 (OCI Distribution 1.1): a chunked session closed with a
    /// sha512 digest is verified by hashing the session file with sha512
    /// and lands in the sha512 pool; a wrong one publishes nothing.
    #[tokio::test]
    async fn sha512_close_verifies_and_publishes_in_its_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let want = Algorithm::Sha512.digest_of(b"chunk one, chunk two");
        let id = store.start_upload().unwrap();
        let (offset, running, _) = store
            .append_upload(&id, body(b"chunk one, "), Some(0), false)
            .await
            .unwrap();
        // The running hash reported to clients stays sha256.
        assert_eq!((offset, running), (11, Digest::of_bytes(b"chunk one, ")));
        let size = store
            .finish_upload(&id, body(b"chunk two"), &want, Some(11))
            .await
            .unwrap();
        assert_eq!(size.0, 20);
        assert_eq!(store.blob_size(&want).unwrap(), Some(20));
        assert_eq!(
            fs::read(store.paths().blob(&want)).unwrap(),
            b"chunk one, chunk two"
        );
        assert!(store
            .paths()
            .blob(&want)
            .starts_with(dir.path().join("_berth/blobs/sha512")));
        assert_eq!(store.upload_offset(&id).unwrap(), None);

        let id = store.start_upload().unwrap();
        store
            .append_upload(&id, body(b"abc"), None, false)
            .await
            .unwrap();
        let wrong = Algorithm::Sha512.digest_of(b"abd");
        assert!(matches!(
            store.finish_upload(&id, body(b""), &wrong, None).await,
            Err(UploadError::DigestMismatch { actual, .. })
                if actual == Algorithm::Sha512.digest_of(b"abc")
        ));
        assert_eq!(store.blob_size(&wrong).unwrap(), None);
        assert_eq!(store.upload_offset(&id).unwrap(), None);
    }

    #[tokio::test]
    async fn sha512_monolithic_put_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Algorithm::Sha512.digest_of(b"blob");
        assert!(matches!(
            store.put_blob(body(b"blub"), &d).await,
            Err(UploadError::DigestMismatch { .. })
        ));
        assert_eq!(store.blob_size(&d).unwrap(), None);
        assert_eq!(store.put_blob(body(b"blob"), &d).await.unwrap().0, 4);
        assert_eq!(store.blob_size(&d).unwrap(), Some(4));
        // The same bytes under sha256 are another name, not this one.
        assert_eq!(store.blob_size(&Digest::of_bytes(b"blob")).unwrap(), None);
    }

    /// A closing PUT whose chunk does not continue the session is refused
    /// before it is read and changes nothing: the session keeps its bytes
    /// and can still be closed correctly.
    #[tokio::test]
    async fn out_of_order_final_chunk_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.start_upload().unwrap();
        store
            .append_upload(&id, body(b"head "), Some(0), false)
            .await
            .unwrap();
        let want = Digest::of_bytes(b"head tail");
        for start in [0, 4, 9] {
            assert!(matches!(
                store.finish_upload(&id, body(b"tail"), &want, Some(start)).await,
                Err(UploadError::RangeInvalid { offset: 5, start: s }) if s == start
            ));
            assert_eq!(store.upload_offset(&id).unwrap(), Some(5));
        }
        assert_eq!(store.blob_size(&want).unwrap(), None);
        assert_eq!(
            store
                .finish_upload(&id, body(b"tail"), &want, Some(5))
                .await
                .unwrap()
                .0,
            9
        );
        assert_eq!(store.blob_size(&want).unwrap(), Some(9));
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
