//! Hashing and checking blob bytes while they are read for the push
//! (issue 9: verification overlaps the upload instead of preceding it).
//!
//! [`check_blob`] reads one blob of the archive once, on a blocking
//! thread, in chunks of [`CHUNK`] bytes. Every chunk is hashed on that
//! thread (sha256 of the bytes as stored: the blob digest), handed to a
//! decoder thread when a diff_id must be checked (gzip/zstd layers; the
//! decompressed bytes are hashed on a third thread), and handed to the
//! upload body when the blob is being sent. The upload therefore carries
//! exactly the bytes that were checked. The verdict comes at the end of the
//! blob; the caller commits the upload session only once every blob of
//! the push has passed (`push.rs`).
//!
//! [`Digester`] is the same hashing without a blob to judge, used for the
//! few members whose digests must be known before the push (`members.rs`).

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use berth_server::names::Digest;
use bytes::{Buf, Bytes};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::error::ArchiveError;
use super::formats::{Blob, BlobData};
use super::members::{Compression, Members};

/// Read size, and the size of the chunks handed to the upload and the
/// decoder.
pub const CHUNK: usize = 256 * 1024;
/// Queue depth between the reading thread and its helper threads: memory
/// per queue is at most this many chunks.
const PIPE_DEPTH: usize = 4;

/// sha256 of a member's bytes as stored, and of its decompressed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    /// sha256 of the bytes as stored: the blob digest.
    pub digest: Digest,
    /// sha256 of the decompressed bytes (the diff_id of a layer); for an
    /// uncompressed member the same as `digest`; `Err` says why the bytes
    /// could not be decompressed.
    pub uncompressed: Result<Digest, String>,
}

/// sha256 of byte chunks, computed on a helper thread (issue 9: the
/// decompressed bytes of a layer are hashed on another core than the one
/// decompressing them).
struct HashThread {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    worker: std::thread::JoinHandle<Digest>,
}

impl HashThread {
    fn spawn() -> io::Result<HashThread> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
        let worker = std::thread::Builder::new()
            .name("berth-hash".into())
            .spawn(move || {
                let mut sha = Sha256::new();
                for chunk in rx {
                    sha.update(&chunk);
                }
                Digest::from_sha256(&sha.finalize())
            })?;
        Ok(HashThread { tx, worker })
    }

    fn send(&self, chunk: Vec<u8>) -> io::Result<()> {
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::other("hashing thread ended early"))
    }

    fn finish(self) -> io::Result<Digest> {
        drop(self.tx);
        self.worker
            .join()
            .map_err(|_| io::Error::other("hashing thread failed"))
    }
}

/// The chunks handed to a decoder thread, as a [`BufRead`] that ends when
/// the sender is dropped. The decoders read straight from the chunks and
/// decompress straight into the buffers sent on to the [`HashThread`]: no
/// copy in between.
struct Chunks {
    rx: std::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Chunks {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk,
                Err(_) => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        self.current.advance(n.min(self.current.len()));
    }
}

/// Decompresses everything `input` yields, hashing the output on a
/// [`HashThread`].
fn inflate_and_hash(compression: Compression, input: Chunks) -> io::Result<Digest> {
    let mut decoder: Box<dyn Read> = match compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        _ => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
    };
    let hasher = HashThread::spawn()?;
    loop {
        let mut out = Vec::with_capacity(CHUNK);
        (&mut decoder).take(CHUNK as u64).read_to_end(&mut out)?;
        if out.is_empty() {
            break;
        }
        hasher.send(out)?;
    }
    hasher.finish()
}

/// A member's decoder running on its own thread, fed the chunks read
/// (issue 9: hashing the stored bytes, inflating them and hashing the
/// inflated bytes run on different cores). Yields the sha256 of the
/// decompressed bytes, or why they could not be decompressed.
struct DecodeThread {
    tx: Option<std::sync::mpsc::SyncSender<Bytes>>,
    worker: Option<std::thread::JoinHandle<Result<Digest, String>>>,
}

impl DecodeThread {
    fn spawn(compression: Compression) -> io::Result<DecodeThread> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(PIPE_DEPTH);
        let input = Chunks {
            rx,
            current: Bytes::new(),
        };
        // On an error the thread ends and drops the receiver, so the
        // reader's later sends fail at once instead of blocking.
        let worker = std::thread::Builder::new()
            .name("berth-decode".into())
            .spawn(move || {
                inflate_and_hash(compression, input).map_err(|e| format!("cannot decompress: {e}"))
            })?;
        Ok(DecodeThread {
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    fn feed(&mut self, chunk: Bytes) {
        if let Some(tx) = &self.tx {
            // Fails only once the decoder gave up; `finish` says why.
            let _ = tx.send(chunk);
        }
    }

    fn finish(mut self) -> Result<Digest, String> {
        drop(self.tx.take());
        match self.worker.take() {
            Some(w) => w
                .join()
                .unwrap_or_else(|_| Err("cannot decompress: decoder thread failed".to_string())),
            None => Err("cannot decompress: no decoder".to_string()),
        }
    }
}

/// The sha256 of a member's decompressed bytes (its diff_id), computed
/// from chunks of its stored bytes: decompression and hashing run on two
/// helper threads when the member is gzip or zstd.
struct DiffIdHasher {
    decoder: Option<DecodeThread>,
    error: Option<String>,
}

impl DiffIdHasher {
    fn new(decompress: Compression) -> DiffIdHasher {
        let mut d = DiffIdHasher {
            decoder: None,
            error: None,
        };
        if matches!(decompress, Compression::Gzip | Compression::Zstd) {
            match DecodeThread::spawn(decompress) {
                Ok(t) => d.decoder = Some(t),
                Err(e) => d.error = Some(format!("cannot decompress: {e}")),
            }
        }
        d
    }

    fn feed(&mut self, chunk: &Bytes) {
        if let Some(d) = self.decoder.as_mut() {
            d.feed(chunk.clone());
        }
    }

    /// The diff_id once every chunk was fed; `stored` (the digest of the
    /// bytes as stored) is the diff_id of an uncompressed member.
    fn finish(self, stored: Digest) -> Result<Digest, String> {
        match (self.error, self.decoder) {
            (Some(e), _) => Err(e),
            (None, Some(d)) => d.finish(),
            (None, None) => Ok(stored),
        }
    }
}

/// [`Hashes`] of bytes fed in chunks: sha256 on the caller's thread, plus
/// decompression and sha256 of the decompressed bytes on two helper
/// threads when `decompress` is gzip or zstd.
pub struct Digester {
    raw: Sha256,
    diff_id: DiffIdHasher,
}

impl Digester {
    /// Starts hashing; decompresses too for [`Compression::Gzip`] and
    /// [`Compression::Zstd`] (anything else counts as uncompressed).
    pub fn new(decompress: Compression) -> Digester {
        Digester {
            raw: Sha256::new(),
            diff_id: DiffIdHasher::new(decompress),
        }
    }

    /// Hashes (and decompresses) the next chunk.
    pub fn update(&mut self, chunk: &Bytes) {
        self.raw.update(chunk);
        self.diff_id.feed(chunk);
    }

    /// Both digests, once every chunk was fed.
    pub fn finish(self) -> Hashes {
        let digest = Digest::from_sha256(&self.raw.finalize());
        let uncompressed = self.diff_id.finish(digest.clone());
        Hashes {
            digest,
            uncompressed,
        }
    }
}

/// Reads up to [`CHUNK`] bytes (fewer only at the end), into a buffer that
/// is not zeroed first (`read_to_end` reads files into spare capacity).
pub fn read_chunk(r: &mut dyn Read) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(CHUNK);
    r.take(CHUNK as u64).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// Where the bytes read for a check go besides the hashes: an upload body,
/// from byte `from` on (a resumed upload already holds the bytes before it).
pub struct Feed {
    /// First byte to send.
    pub from: u64,
    /// The upload body's queue.
    pub tx: mpsc::Sender<Bytes>,
    /// The registry reports the sha256 of the session (berth's
    /// `Berth-Upload-Digest`): the blob digest is then checked against that
    /// report ([`check_reported_digest`]) instead of hashed here too
    /// (issue 9: one sha256 pass over every pushed byte less).
    pub registry_hashes: bool,
    /// The registry checks each layer's diff_id against the image config
    /// at manifest PUT (`Berth-Verifies: diff-id`, issue 17): with
    /// `registry_hashes`, nothing is hashed or inflated here; the bytes
    /// are only read and sent.
    pub registry_verifies: bool,
}

/// How a check ended without finding anything wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Every byte was read and matched what the archive claims.
    Passed,
    /// Abandoned: the upload stopped taking bytes (its request failed; its
    /// own error says why), or the push is failing for another reason.
    Abandoned,
}

/// Whether an error is the archive's fault (a refused archive: every
/// session of the push is cancelled) rather than the registry's or the
/// transport's (sessions are kept for a later resume).
pub fn is_archive_fault(e: &ArchiveError) -> bool {
    !matches!(
        e,
        ArchiveError::Client(_) | ArchiveError::SessionMismatch { .. }
    )
}

/// Reads a blob's bytes once (blocking: run it off the async runtime),
/// checks them against what the archive claims and passes them to `feed`
/// as they are read. A generated blob (made by this program) needs no
/// check; its bytes are only fed. Gives up between two chunks once `stop`
/// is set.
pub fn check_blob(
    members: &Members,
    blob: &Blob,
    feed: Option<Feed>,
    stop: &AtomicBool,
) -> Result<Checked, ArchiveError> {
    let path = match &blob.data {
        BlobData::Generated(bytes) => {
            if let Some(f) = feed {
                let from = (f.from as usize).min(bytes.len());
                for piece in bytes[from..].chunks(CHUNK) {
                    if f.tx.blocking_send(Bytes::copy_from_slice(piece)).is_err() {
                        return Ok(Checked::Abandoned);
                    }
                }
            }
            return Ok(Checked::Passed);
        }
        BlobData::Member(path) => path,
    };
    let m = members.get(path, "a blob to push")?;
    let what = || format!("reading {path} from {}", members.input());
    let mut r = members.open(m)?;
    let registry_verifies = feed
        .as_ref()
        .is_some_and(|f| f.registry_hashes && f.registry_verifies);
    let decompress = if blob.checks.diff_ids.is_empty() || registry_verifies {
        Compression::None
    } else {
        blob.checks.compression
    };
    if registry_verifies {
        tracing::debug!(member = %path, "sent unchecked: the registry verifies its digest and diff_id");
    } else if decompress != Compression::None {
        tracing::debug!(member = %path, "inflating locally to check the diff_id");
    }
    let mut raw = match &feed {
        Some(f) if f.registry_hashes => None,
        _ => Some(Sha256::new()),
    };
    let mut diff_id = DiffIdHasher::new(decompress);
    let mut pos = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(Checked::Abandoned);
        }
        let chunk = read_chunk(&mut r).map_err(|e| ArchiveError::io(what(), e))?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len() as u64;
        if let Some(h) = raw.as_mut() {
            h.update(&chunk);
        }
        diff_id.feed(&chunk);
        if let Some(f) = &feed {
            if pos + n > f.from {
                let skip = f.from.saturating_sub(pos) as usize;
                if f.tx.blocking_send(chunk.slice(skip..)).is_err() {
                    return Ok(Checked::Abandoned);
                }
            }
        }
        pos += n;
    }
    if pos != m.size {
        return Err(ArchiveError::io(
            what(),
            io::Error::other(format!(
                "read {pos} of its {} bytes (the input changed while it was pushed?)",
                m.size
            )),
        ));
    }
    let digest = raw.map(|h| Digest::from_sha256(&h.finalize()));
    if let Some(d) = &digest {
        check_digest(blob, path, d)?;
    }
    // Not hashed here, the stored bytes count as what the archive claims:
    // the registry's report of them is checked against that claim.
    if registry_verifies {
        // The registry's PATCH report is checked against the digest, its
        // manifest PUT checks the diff_ids (issue 17).
        return Ok(Checked::Passed);
    }
    let uncompressed = diff_id.finish(digest.unwrap_or_else(|| blob.digest.clone()));
    check_diff_ids(blob, path, &uncompressed)?;
    Ok(Checked::Passed)
}

/// Decides whose fault a failed [`check_reported_digest`] is (blocking:
/// reads the blob again, only on this failure path). The archive's bytes
/// hashing right mean the registry's session holds something else:
/// [`ArchiveError::SessionMismatch`]; otherwise the archive's own error.
pub fn blame_reported_mismatch(
    members: &Members,
    blob: &Blob,
    reported: &Digest,
    mismatch: ArchiveError,
) -> ArchiveError {
    let BlobData::Member(path) = &blob.data else {
        return mismatch;
    };
    match check_blob(members, blob, None, &AtomicBool::new(false)) {
        Ok(Checked::Passed) => ArchiveError::SessionMismatch {
            member: path.clone(),
            digest: blob.digest.to_string(),
            reported: reported.to_string(),
        },
        Ok(Checked::Abandoned) => mismatch,
        Err(archive_fault) => archive_fault,
    }
}

/// Checks the digest a registry reported for the session a blob was sent
/// into (`Feed::registry_hashes`) against what the archive claims.
pub fn check_reported_digest(blob: &Blob, reported: &Digest) -> Result<(), ArchiveError> {
    let member = match &blob.data {
        BlobData::Member(path) => path.as_str(),
        BlobData::Generated(_) => "a generated blob",
    };
    check_digest(blob, member, reported)
}

/// Checks the diff_id a registry reported for the session a layer was
/// sent into (`Feed::registry_verifies`) against the image configs.
pub fn check_reported_diff_id(blob: &Blob, reported: &Digest) -> Result<(), ArchiveError> {
    let member = match &blob.data {
        BlobData::Member(path) => path.as_str(),
        BlobData::Generated(_) => "a generated blob",
    };
    check_diff_ids(blob, member, &Ok(reported.clone()))
}

/// Compares the digest of a member blob's stored bytes with what the
/// archive claims.
fn check_digest(blob: &Blob, member: &str, actual: &Digest) -> Result<(), ArchiveError> {
    if *actual == blob.digest {
        return Ok(());
    }
    let (expected, actual) = (blob.digest.to_string(), actual.to_string());
    Err(if blob.checks.digest_is_diff_id {
        ArchiveError::DiffIdMismatch {
            member: member.to_string(),
            expected,
            actual,
        }
    } else {
        ArchiveError::DigestMismatch {
            member: member.to_string(),
            expected,
            actual,
        }
    })
}

/// Compares a member blob's decompressed digest with the diff_ids of the
/// configs that list it.
fn check_diff_ids(
    blob: &Blob,
    member: &str,
    uncompressed: &Result<Digest, String>,
) -> Result<(), ArchiveError> {
    for id in &blob.checks.diff_ids {
        match uncompressed {
            Ok(d) if d.as_str() == id => {}
            Ok(d) => {
                return Err(ArchiveError::DiffIdMismatch {
                    member: member.to_string(),
                    expected: id.clone(),
                    actual: d.to_string(),
                })
            }
            Err(e) => {
                return Err(ArchiveError::DiffIdMismatch {
                    member: member.to_string(),
                    expected: id.clone(),
                    actual: e.clone(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn digest_of(compression: Compression, data: &[u8]) -> Hashes {
        let mut d = Digester::new(compression);
        for piece in data.chunks(1000) {
            d.update(&Bytes::copy_from_slice(piece));
        }
        d.finish()
    }

    #[test]
    fn decompressed_bytes_are_hashed_and_broken_streams_reported() {
        let plain: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(&plain[..], 1).unwrap();
        for (c, packed) in [(Compression::Gzip, &gz), (Compression::Zstd, &zst)] {
            let h = digest_of(c, packed);
            assert_eq!(h.digest, Digest::of_bytes(packed));
            assert_eq!(h.uncompressed, Ok(Digest::of_bytes(&plain)), "{c:?}");
            let cut = digest_of(c, &packed[..packed.len() / 2]);
            let err = cut.uncompressed.unwrap_err();
            assert!(err.starts_with("cannot decompress"), "{c:?}: {err}");
        }
        let h = digest_of(Compression::None, &plain);
        assert_eq!(h.uncompressed, Ok(h.digest.clone()));
    }
}
