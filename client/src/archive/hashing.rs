//! Hashing archive bytes: sha256 of a member's bytes as stored (its blob
//! digest) and of its decompressed bytes (a layer's diff_id), computed
//! from the chunks a reader hands over, with decompression and the second
//! hash on helper threads (issue 9: they run on other cores than the read).
//!
//! [`Digester`] is used for the few members whose digests must be known
//! before the push (`members.rs`); `verify.rs` drives the same pieces
//! while a blob is read for its upload.

use std::io::{self, BufRead, Read};

use berth_server::names::Digest;
use bytes::{Buf, Bytes};
use sha2::{Digest as _, Sha256};

use super::types::Compression;

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
pub(super) struct DiffIdHasher {
    decoder: Option<DecodeThread>,
    error: Option<String>,
}

impl DiffIdHasher {
    /// Starts; decompresses for gzip and zstd, anything else counts as
    /// uncompressed.
    pub(super) fn new(decompress: Compression) -> DiffIdHasher {
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

    /// Hands over the next chunk of stored bytes.
    pub(super) fn feed(&mut self, chunk: &Bytes) {
        if let Some(d) = self.decoder.as_mut() {
            d.feed(chunk.clone());
        }
    }

    /// The diff_id once every chunk was fed; `stored` (the digest of the
    /// bytes as stored) is the diff_id of an uncompressed member.
    pub(super) fn finish(self, stored: Digest) -> Result<Digest, String> {
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
