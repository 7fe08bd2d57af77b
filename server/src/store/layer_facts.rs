//! Layer facts: the diff_id (sha256 of the uncompressed bytes) and the
//! uncompressed size of a pool blob that is a layer, recorded next to the
//! blob in `_berth/layerfacts/<key>` (issue 17).
//!
//! They let the registry verify an image where its bytes land: a manifest
//! PUT checks the config's `rootfs.diff_ids` against them
//! (`registry::v2::manifests`), so a client need not inflate and hash its
//! layers itself, and blob answers carry them (`Berth-Diff-Id`,
//! `Berth-Uncompressed-Size`).
//!
//! Facts are computed once per blob: while an upload streams in
//! ([`FactsThread`], fed chunk by chunk from the ingest thread, inflating
//! on its own thread), or on demand by streaming the pool file once
//! ([`Store::ensure_layer_facts`]). A blob is a layer candidate when its
//! magic says gzip or zstd, or its first block is a tar header (or the
//! zero block of an empty tar); anything else (configs, manifests: JSON)
//! gets no record. The content is addressed by its digest, so a record
//! never changes; gc removes it with its blob, fsck checks it parses and
//! names an existing blob (`fsck --deep` recomputes it).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;

use super::atomic::{create_dirs, write_atomic};
use super::media::{self, Compression};
use super::{read_optional, Store};
use crate::names::{Algorithm, Digest};

/// The bytes looked at to tell a layer from anything else: one tar block.
const HEAD: usize = 512;
/// Read size when streaming a pool file.
const READ_SIZE: usize = 256 << 10;
/// Chunks queued between the ingest thread and the inflating thread.
const QUEUE_DEPTH: usize = 16;
/// Buffers of inflated bytes going round between the inflating and the
/// hashing thread (4 MiB in all).
const HASH_BUFFERS: usize = 16;

/// What is known about a layer blob's uncompressed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFacts {
    /// sha256 of the uncompressed bytes: what an image config's
    /// `rootfs.diff_ids` must name.
    pub diff_id: Digest,
    /// Length of the uncompressed bytes.
    pub uncompressed_size: u64,
    /// How the blob's bytes are compressed (sniffed from its magic).
    pub compression: Compression,
}

/// The record's on-disk form.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    diff_id: String,
    uncompressed_size: u64,
    compression: String,
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => "none",
    }
}

impl LayerFacts {
    /// The record's bytes (JSON).
    pub fn to_record(&self) -> Vec<u8> {
        let r = Record {
            diff_id: self.diff_id.to_string(),
            uncompressed_size: self.uncompressed_size,
            compression: compression_name(self.compression).to_string(),
        };
        serde_json::to_vec(&r).expect("a record always serializes")
    }

    /// Parses a record; `Err` says why it is not one (fsck reports it).
    pub fn from_record(bytes: &[u8]) -> Result<LayerFacts, String> {
        let r: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let diff_id = Digest::parse(&r.diff_id).map_err(|e| e.to_string())?;
        if diff_id.algorithm() != Algorithm::Sha256 {
            return Err(format!("diff_id {diff_id} is not sha256"));
        }
        let compression = match r.compression.as_str() {
            "gzip" => Compression::Gzip,
            "zstd" => Compression::Zstd,
            "none" => Compression::None,
            other => return Err(format!("unknown compression {other:?}")),
        };
        Ok(LayerFacts {
            diff_id,
            uncompressed_size: r.uncompressed_size,
            compression,
        })
    }
}

/// Why a blob's facts could not be found.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// The bytes say gzip or zstd but do not decode: not a usable layer.
    #[error("{0}")]
    Corrupt(String),
    /// Reading the blob failed.
    #[error("reading the blob: {0}")]
    Io(#[from] io::Error),
}

/// The result of measuring a stream: its facts, and whether it is a layer
/// candidate (only those are recorded; a plain stream that is not a tar is
/// still measured, as the uncompressed layer a manifest may call it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// diff_id, uncompressed size, compression.
    pub facts: LayerFacts,
    /// gzip, zstd, or a plain stream starting with a tar block.
    pub is_layer: bool,
}

/// Whether a plain stream's first bytes are a tar header (ustar or GNU
/// magic) or the zero block that ends (and is the whole of) an empty tar.
fn looks_like_tar(head: &[u8]) -> bool {
    head.len() >= HEAD && (&head[257..262] == b"ustar" || head[..HEAD].iter().all(|b| *b == 0))
}

/// Reads until `buf` is full or the stream ends; returns how many bytes.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Digest (in `algorithm`) and length of everything `r` yields.
fn hash_all(mut r: impl Read, algorithm: Algorithm) -> io::Result<(Digest, u64)> {
    let mut h = algorithm.hasher();
    let mut buf = vec![0u8; READ_SIZE];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok((h.finish(), total)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
}

/// [`hash_all`] of a decoder's output with the hashing on a thread of its
/// own: inflating and hashing the uncompressed bytes are the two largest
/// costs of verifying a layer where it lands, and running them side by
/// side makes the longer one (the inflate), not their sum, what an upload
/// of a large layer waits for. `HASH_BUFFERS` buffers of `READ_SIZE` go
/// back and forth, so memory stays flat.
fn hash_all_beside(mut r: impl Read, algorithm: Algorithm) -> io::Result<(Digest, u64)> {
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(HASH_BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(HASH_BUFFERS);
    for _ in 0..HASH_BUFFERS {
        empty_tx
            .send(vec![0u8; READ_SIZE])
            .expect("the receiver is alive");
    }
    std::thread::scope(|scope| {
        let hasher = std::thread::Builder::new()
            .name("berth-diff-id".into())
            .spawn_scoped(scope, move || {
                let mut h = algorithm.hasher();
                let mut total = 0u64;
                for (buf, n) in full_rx {
                    h.update(&buf[..n]);
                    total += n as u64;
                    // The reader may be gone (it failed): nothing to return.
                    let _ = empty_tx.send(buf);
                }
                (h.finish(), total)
            })?;
        let read = (|| -> io::Result<()> {
            // Every buffer is either here, queued, or being hashed: the
            // hasher hands each back, so this waits only on its progress.
            while let Ok(mut buf) = empty_rx.recv() {
                let n = read_up_to(&mut r, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
            Err(io::Error::other("the diff_id hashing thread stopped"))
        })();
        drop(full_tx);
        let measured = hasher
            .join()
            .map_err(|_| io::Error::other("the diff_id hashing thread panicked"))?;
        read.map(|()| measured)
    })
}

/// A reader whose own read errors are remembered, so a decoder's error
/// can be told apart from the source's (corrupt bytes vs a failing disk).
struct Source<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// Measures a stream once, memory flat: sniffs its compression from the
/// first bytes, inflates gzip (every member) or zstd (every frame), and
/// hashes the uncompressed bytes.
pub fn measure(r: impl Read) -> Result<Measured, FactsError> {
    measure_as(r, Algorithm::Sha256)
}

/// [`measure`] with the uncompressed bytes hashed in `algorithm` (a config
/// may name sha512 diff_ids; only sha256 facts are recorded).
pub fn measure_as(r: impl Read, algorithm: Algorithm) -> Result<Measured, FactsError> {
    let mut src = Source {
        inner: r,
        failed: false,
    };
    let mut head = vec![0u8; HEAD];
    let got = read_up_to(&mut src, &mut head)?;
    head.truncate(got);
    let compression = media::sniff(&head);
    let is_layer = compression != Compression::None || looks_like_tar(&head);
    let whole = io::Cursor::new(head).chain(&mut src);
    let result = match compression {
        Compression::Gzip => hash_all_beside(flate2::read::MultiGzDecoder::new(whole), algorithm),
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(whole).and_then(|d| hash_all_beside(d, algorithm))
        }
        Compression::None => hash_all(whole, algorithm),
    };
    match result {
        Ok((diff_id, uncompressed_size)) => Ok(Measured {
            facts: LayerFacts {
                diff_id,
                uncompressed_size,
                compression,
            },
            is_layer,
        }),
        Err(e) if src.failed => Err(FactsError::Io(e)),
        Err(e) => Err(FactsError::Corrupt(format!(
            "not a readable {} stream: {e}",
            compression_name(compression)
        ))),
    }
}

/// The inflating thread of an upload: fed the chunks the ingest thread
/// writes, it measures them on its own core ([`measure`]), so the network
/// path only pays for handing over a reference-counted chunk. If it stops
/// early (corrupt bytes), later chunks are dropped unread.
pub struct FactsThread {
    tx: Option<SyncSender<Bytes>>,
    worker: JoinHandle<Result<Measured, FactsError>>,
}

/// [`Read`] over the chunks of a channel, ending when the sender is gone.
struct ChunkReader {
    rx: Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl FactsThread {
    /// Starts the thread.
    pub fn spawn() -> io::Result<FactsThread> {
        let (tx, rx) = sync_channel::<Bytes>(QUEUE_DEPTH);
        let worker = std::thread::Builder::new()
            .name("berth-layer-facts".into())
            .spawn(move || {
                measure(ChunkReader {
                    rx,
                    current: Bytes::new(),
                })
            })?;
        Ok(FactsThread {
            tx: Some(tx),
            worker,
        })
    }

    /// Hands over the next chunk (blocking while the queue is full).
    pub fn feed(&self, chunk: Bytes) {
        if let Some(tx) = &self.tx {
            // An error means the thread has its verdict already.
            let _ = tx.send(chunk);
        }
    }

    /// Ends the stream and waits for the verdict.
    pub fn finish(mut self) -> Result<Measured, FactsError> {
        drop(self.tx.take());
        self.worker
            .join()
            .map_err(|_| FactsError::Io(io::Error::other("layer facts thread panicked")))?
    }
}

impl Store {
    /// The recorded facts of blob `digest`, if any. A record that does not
    /// parse reads as absent (it is recomputed; fsck reports it).
    /// A read racing another host's rename of the same record on a shared
    /// filesystem (ESTALE) is retried by `read_optional` (`store::transient`).
    pub fn layer_facts(&self, digest: &Digest) -> io::Result<Option<LayerFacts>> {
        let path = self.paths().layer_facts(digest);
        Ok(read_optional(&path)?.and_then(|raw| LayerFacts::from_record(&raw).ok()))
    }

    /// Records `facts` for blob `digest` (temp + fsync + rename).
    pub fn record_layer_facts(&self, digest: &Digest, facts: &LayerFacts) -> io::Result<()> {
        create_dirs(self.paths().layer_facts_dir())?;
        write_atomic(&self.paths().layer_facts(digest), &facts.to_record())
    }

    /// Records what an upload's [`FactsThread`] measured for the blob just
    /// published as `digest` (layer candidates only); returns the facts.
    /// A corrupt stream is logged and leaves no record.
    pub fn keep_measured(
        &self,
        digest: &Digest,
        measured: Result<Measured, FactsError>,
    ) -> Option<LayerFacts> {
        match measured {
            Ok(m) if m.is_layer => match self.record_layer_facts(digest, &m.facts) {
                Ok(()) => Some(m.facts),
                Err(e) => {
                    tracing::warn!(blob = %digest, error = %e, "layer facts not recorded");
                    None
                }
            },
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(blob = %digest, error = %e, "blob is not a readable layer");
                None
            }
        }
    }

    /// The facts of pool blob `digest` taken as a layer: the record, or
    /// computed by streaming the pool file once (blocking: call from the
    /// blocking pool) and recorded when the blob is a layer candidate.
    /// A plain blob that is no tar is measured but not recorded. `None`
    /// when the pool has no such blob.
    pub fn ensure_layer_facts(&self, digest: &Digest) -> Result<Option<LayerFacts>, FactsError> {
        if let Some(facts) = self.layer_facts(digest)? {
            return Ok(Some(facts));
        }
        let Some((file, _)) = self.open_blob(digest)? else {
            return Ok(None);
        };
        let measured = measure(BufReader::with_capacity(READ_SIZE, file))?;
        if measured.is_layer {
            // The facts hold whether or not they are kept: a record that
            // cannot be written now (another host renaming the same one on
            // a shared filesystem, a full disk) is computed again later.
            if let Err(e) = self.record_layer_facts(digest, &measured.facts) {
                tracing::warn!(blob = %digest, error = %e, "layer facts not recorded");
            }
        }
        Ok(Some(measured.facts))
    }

    /// The digest, in `algorithm`, of blob `digest`'s uncompressed bytes:
    /// the recorded diff_id for sha256 ([`Store::ensure_layer_facts`]),
    /// otherwise streamed from the pool file (not recorded). `None` when
    /// the pool has no such blob.
    pub fn uncompressed_digest(
        &self,
        digest: &Digest,
        algorithm: Algorithm,
    ) -> Result<Option<Digest>, FactsError> {
        if algorithm == Algorithm::Sha256 {
            return Ok(self.ensure_layer_facts(digest)?.map(|f| f.diff_id));
        }
        let Some((file, _)) = self.open_blob(digest)? else {
            return Ok(None);
        };
        let m = measure_as(BufReader::with_capacity(READ_SIZE, file), algorithm)?;
        Ok(Some(m.facts.diff_id))
    }

    /// Recomputes the facts of blob `digest` from its bytes (`fsck --deep`).
    pub fn measure_blob(&self, digest: &Digest) -> Result<Option<Measured>, FactsError> {
        match File::open(self.paths().blob(digest)) {
            Ok(f) => Ok(Some(measure(BufReader::with_capacity(READ_SIZE, f))?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A one-file tar of `len` bytes of `fill`.
    fn tar_of(len: usize, fill: u8) -> Vec<u8> {
        let mut header = vec![0u8; 512];
        header[..4].copy_from_slice(b"file");
        header[100..107].copy_from_slice(b"0000644");
        let size = format!("{len:011o}");
        header[124..135].copy_from_slice(size.as_bytes());
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| *b as u32).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut out = header;
        out.extend(std::iter::repeat_n(fill, len));
        out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn expected(data: &[u8], compression: Compression) -> LayerFacts {
        LayerFacts {
            diff_id: Digest::of_bytes(data),
            uncompressed_size: data.len() as u64,
            compression,
        }
    }

    #[test]
    fn gzip_zstd_and_plain_tar_are_measured() {
        let tar = tar_of(700_000, 7);
        let m = measure(&gzip(&tar)[..]).unwrap();
        assert!(m.is_layer);
        assert_eq!(m.facts, expected(&tar, Compression::Gzip));
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let m = measure(&zst[..]).unwrap();
        assert!(m.is_layer);
        assert_eq!(m.facts, expected(&tar, Compression::Zstd));
        let m = measure(&tar[..]).unwrap();
        assert!(m.is_layer);
        assert_eq!(m.facts, expected(&tar, Compression::None));
        // The empty tar (1024 zero bytes) is a layer too.
        assert!(measure(&[0u8; 1024][..]).unwrap().is_layer);
        // Concatenated gzip members are one layer (pigz, docker's writers).
        let mut two = gzip(&tar[..1000]);
        two.extend(gzip(&tar[1000..]));
        assert_eq!(
            measure(&two[..]).unwrap().facts.diff_id,
            Digest::of_bytes(&tar)
        );
    }

    #[test]
    fn json_is_measured_but_not_a_layer() {
        let json =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let m = measure(&json[..]).unwrap();
        assert!(!m.is_layer);
        assert_eq!(m.facts, expected(json, Compression::None));
    }

    #[test]
    fn corrupt_gzip_and_zstd_are_clear_errors() {
        let mut gz = gzip(&tar_of(100_000, 1));
        let mid = gz.len() / 2;
        gz[mid..mid + 64].fill(0xAA);
        let e = measure(&gz[..]).unwrap_err();
        assert!(
            matches!(e, FactsError::Corrupt(ref m) if m.contains("gzip")),
            "{e}"
        );
        let truncated = &gzip(&tar_of(100_000, 1))[..200];
        assert!(matches!(measure(truncated), Err(FactsError::Corrupt(_))));
        let mut zst = zstd::encode_all(&tar_of(100_000, 1)[..], 3).unwrap();
        zst.truncate(zst.len() - 10);
        let e = measure(&zst[..]).unwrap_err();
        assert!(
            matches!(e, FactsError::Corrupt(ref m) if m.contains("zstd")),
            "{e}"
        );
    }

    #[test]
    fn a_layer_larger_than_every_hash_buffer_is_measured_whole() {
        // Several rounds of the inflate/hash buffers, and a last one
        // partly filled: bytes that vary, so a buffer hashed twice, or
        // skipped, or out of order would change the diff_id.
        let len = HASH_BUFFERS * READ_SIZE * 3 + 12_345;
        let mut tar = tar_of(len, 0);
        for (i, b) in tar.iter_mut().enumerate().skip(512).take(len) {
            *b = (i % 251) as u8;
        }
        assert_eq!(
            measure(&gzip(&tar)[..]).unwrap().facts,
            expected(&tar, Compression::Gzip)
        );
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        assert_eq!(
            measure(&zst[..]).unwrap().facts,
            expected(&tar, Compression::Zstd)
        );
    }

    #[test]
    fn a_source_failing_mid_layer_is_an_io_error_not_a_hang() {
        /// Yields `bytes`, then fails.
        struct FailingAfter<'a>(&'a [u8]);
        impl Read for FailingAfter<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("the disk went away"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let tar = tar_of(HASH_BUFFERS * READ_SIZE * 2, 3);
        let gz = gzip(&tar);
        let e = measure(FailingAfter(&gz[..gz.len() / 2])).unwrap_err();
        assert!(matches!(e, FactsError::Io(_)), "{e}");
    }

    #[test]
    fn the_thread_measures_what_it_is_fed_in_any_chunking() {
        let tar = tar_of(300_000, 9);
        let gz = gzip(&tar);
        for size in [1usize, 7, 511, 4096, 1 << 20] {
            let t = FactsThread::spawn().unwrap();
            for c in gz.chunks(size) {
                t.feed(Bytes::copy_from_slice(c));
            }
            let m = t.finish().unwrap();
            assert_eq!(
                m.facts,
                expected(&tar, Compression::Gzip),
                "chunks of {size}"
            );
        }
        // A corrupt stream ends the thread early; feeding more is harmless.
        let t = FactsThread::spawn().unwrap();
        t.feed(Bytes::from_static(&[0x1f, 0x8b, 0, 0, 0, 0, 0, 0, 0, 0]));
        for _ in 0..100 {
            t.feed(Bytes::from(vec![0xFFu8; 4096]));
        }
        assert!(matches!(t.finish(), Err(FactsError::Corrupt(_))));
    }

    #[test]
    fn records_round_trip_and_are_computed_on_demand_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = tar_of(50_000, 3);
        let d = store.put_small_blob(&gzip(&tar)).unwrap();
        assert_eq!(store.layer_facts(&d).unwrap(), None);
        let facts = store.ensure_layer_facts(&d).unwrap().unwrap();
        assert_eq!(facts, expected(&tar, Compression::Gzip));
        let raw = std::fs::read(store.paths().layer_facts(&d)).unwrap();
        assert_eq!(LayerFacts::from_record(&raw).unwrap(), facts);
        assert_eq!(store.layer_facts(&d).unwrap(), Some(facts));
        // JSON is measured as a plain layer would be, and not recorded.
        let config = store.put_small_blob(b"{\"rootfs\":{}}").unwrap();
        let f = store.ensure_layer_facts(&config).unwrap().unwrap();
        assert_eq!(f.diff_id, config);
        assert!(!store.paths().layer_facts(&config).exists());
        // A corrupt gzip blob: a clear error and no record.
        let mut bad = gzip(&tar);
        let n = bad.len();
        bad.truncate(n - 20);
        let bad = store.put_small_blob(&bad).unwrap();
        assert!(matches!(
            store.ensure_layer_facts(&bad),
            Err(FactsError::Corrupt(_))
        ));
        assert!(!store.paths().layer_facts(&bad).exists());
        let absent = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        assert!(store.ensure_layer_facts(&absent).unwrap().is_none());
        assert!(LayerFacts::from_record(b"{\"diff_id\":\"x\"}").is_err());
    }

    #[test]
    fn gc_removes_a_record_with_its_blob_and_fsck_checks_records() {
        use crate::store::fsck::{fsck, FsckOptions, Severity};
        use crate::store::gc::{gc, GcOptions};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = tar_of(10_000, 5);
        let d = store.put_small_blob(&gzip(&tar)).unwrap();
        store.ensure_layer_facts(&d).unwrap();
        let fsck_with = |deep: bool| {
            let opts = FsckOptions {
                repair: false,
                deep,
                grace: std::time::Duration::ZERO,
            };
            let r = fsck(&store, &opts).unwrap();
            r.findings
                .iter()
                .filter(|f| f.severity == Severity::Problem)
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(fsck_with(true), Vec::<String>::new());
        // A wrong record: only --deep sees it.
        let wrong = LayerFacts {
            uncompressed_size: 1,
            ..store.layer_facts(&d).unwrap().unwrap()
        };
        store.record_layer_facts(&d, &wrong).unwrap();
        assert_eq!(fsck_with(false), Vec::<String>::new());
        assert!(
            fsck_with(true)[0].contains("uncompresses to"),
            "{:?}",
            fsck_with(true)
        );
        // A record that does not parse, and one without its blob.
        let other = Digest::parse(&format!("sha256:{}", "1".repeat(64))).unwrap();
        std::fs::write(store.paths().layer_facts(&other), b"{}").unwrap();
        let problems = fsck_with(false);
        assert!(
            problems.iter().any(|m| m.contains("does not parse")),
            "{problems:?}"
        );
        store.record_layer_facts(&other, &wrong).unwrap();
        let problems = fsck_with(false);
        assert!(
            problems.iter().any(|m| m.contains("without its blob")),
            "{problems:?}"
        );
        // gc: the unreferenced blob goes, and both records with it.
        let opts = GcOptions {
            grace: std::time::Duration::ZERO,
            dry_run: false,
        };
        let report = gc(&store, &opts).unwrap();
        assert!(report.blobs >= 1 && report.records >= 2, "{report:?}");
        assert!(!store.paths().blob(&d).exists());
        assert!(!store.paths().layer_facts(&d).exists());
        assert!(!store.paths().layer_facts(&other).exists());
    }
}
