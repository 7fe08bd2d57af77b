//! Streams a request body into a temporary file while hashing it.
//!
//! Layers can be many GiB, so bodies are never buffered: frames go through a
//! bounded channel to one blocking thread that hashes and writes them (hashing
//! stays off the async I/O path). Memory per upload is bounded by the channel
//! depth times the frame size plus one write buffer. A blob that may be a
//! layer is also measured on the way (its diff_id, `store::layer_facts`)
//! by a third thread the writer hands each chunk to.

use std::io::{self, BufWriter, Write};

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::atomic::TempFile;
use super::layer_facts::{FactsError, FactsThread, Measured};
use super::writeback::Writeback;
use crate::names::{Algorithm, Digest};

/// Frames queued between the network and the writer thread.
pub(crate) const QUEUE_DEPTH: usize = 16;
/// Write buffer of the writer thread.
pub(crate) const WRITE_BUFFER: usize = 1 << 20;

/// What a finished ingest produced: the synced temp file and its hashes.
#[derive(Debug)]
pub struct Ingested {
    /// The temporary file, fsynced, ready to be committed.
    pub temp: TempFile,
    /// Bytes received in this call.
    pub size: u64,
    /// Digest of the bytes received in this call, in the algorithm asked for.
    pub digest: Digest,
    /// sha256 of `prefix ‖ bytes` when a prefix was given (the V1 payload checksum).
    pub prefixed: Option<Digest>,
    /// What the layer-facts thread measured, when asked to.
    pub measured: Option<Result<Measured, FactsError>>,
}

/// Why an ingest failed: the client's stream or our disk.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request body failed (client went away, bad chunked encoding).
    #[error("request body: {0}")]
    Body(String),
    /// Writing the temp file failed (disk full, I/O error).
    #[error("writing upload: {0}")]
    Io(#[from] io::Error),
}

/// Feeds a request body's data frames to a writer thread's queue until the
/// body ends, the body fails (its error is returned), or the writer stops
/// listening (its own error is reported by the writer). Closes the queue.
pub(crate) async fn forward_body<B>(mut body: B, tx: mpsc::Sender<Bytes>) -> Option<String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        return None;
                    }
                }
            }
            Err(e) => return Some(e.to_string()),
        }
    }
    None
}

/// Streams `body` into `temp`, returning its digest in `algorithm` (the
/// one the client named, so a single pass verifies it). With `prefix`,
/// also hashes `prefix ‖ body` with sha256 (V1: `json + "\n" + layer`).
/// With `measure_layer`, also measures the bytes as a layer on a helper
/// thread ([`FactsThread`]).
pub async fn ingest<B>(
    body: B,
    temp: TempFile,
    prefix: Option<Vec<u8>>,
    algorithm: Algorithm,
    measure_layer: bool,
) -> Result<Ingested, IngestError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_DEPTH);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<Ingested> {
        let mut temp = temp;
        let mut digest = algorithm.hasher();
        let mut prefixed = prefix.map(|p| {
            let mut h = Algorithm::Sha256.hasher();
            h.update(&p);
            h
        });
        let mut size = 0u64;
        let facts = measure_layer.then(FactsThread::spawn).transpose()?;
        {
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, temp.file());
            let mut writeback = Writeback::from(0);
            while let Some(chunk) = rx.blocking_recv() {
                if let Some(f) = &facts {
                    f.feed(chunk.clone());
                }
                digest.update(&chunk);
                if let Some(h) = prefixed.as_mut() {
                    h.update(&chunk);
                }
                out.write_all(&chunk)?;
                size += chunk.len() as u64;
                writeback.advance(out.get_ref(), size - out.buffer().len() as u64);
            }
            out.flush()?;
        }
        temp.sync()?;
        Ok(Ingested {
            temp,
            size,
            digest: digest.finish(),
            prefixed: prefixed.map(|h| h.finish()),
            measured: facts.map(FactsThread::finish),
        })
    });

    let body_error = forward_body(body, tx).await;
    let result = writer
        .await
        .map_err(|e| IngestError::Io(io::Error::other(e.to_string())))?;
    match (body_error, result) {
        // The temp file inside `result` is dropped here, which deletes it.
        (Some(e), _) => Err(IngestError::Body(e)),
        (None, r) => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::media::Compression;
    use http_body_util::Full;

    #[tokio::test]
    async fn a_layer_is_measured_while_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        tar.extend(std::iter::repeat_n(3u8, 100_000));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let temp = TempFile::new_in(dir.path(), "x").unwrap();
        let body = Full::new(Bytes::from(gz.clone()));
        let done = ingest(body, temp, None, Algorithm::Sha256, true)
            .await
            .unwrap();
        assert_eq!(done.digest, Digest::of_bytes(&gz));
        let m = done.measured.unwrap().unwrap();
        assert!(m.is_layer);
        assert_eq!(m.facts.diff_id, Digest::of_bytes(&tar));
        assert_eq!(m.facts.uncompressed_size, tar.len() as u64);
        assert_eq!(m.facts.compression, Compression::Gzip);
        // Not asked: not measured.
        let temp = TempFile::new_in(dir.path(), "y").unwrap();
        let done = ingest(
            Full::new(Bytes::from(gz)),
            temp,
            None,
            Algorithm::Sha256,
            false,
        )
        .await
        .unwrap();
        assert!(done.measured.is_none());
    }
}
