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
//! The hashing itself is `hashing.rs`'s ([`super::hashing::Digester`] is the
//! same hashing without a blob to judge).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_server::names::Digest;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::error::ArchiveError;
use super::hashing::{read_chunk, DiffIdHasher, CHUNK};
use super::members::Members;
use super::types::{Blob, BlobData, Compression};

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
        BlobData::Held => {
            // Found by `--compress` with a HEAD: the registry has it.
            if feed.is_some() {
                return Err(ArchiveError::io(
                    format!("sending {}", blob.digest),
                    io::Error::other(
                        "the registry no longer holds this compressed layer, found there at the \
                         start of the push; push again",
                    ),
                ));
            }
            return Ok(Checked::Passed);
        }
        BlobData::Member(_) | BlobData::Spilled { .. } => blob.data.name(),
    };
    let path = path.as_str();
    let (mut r, expected_size, what): (Box<dyn io::Read + Send>, u64, String) = match &blob.data {
        BlobData::Spilled { file, .. } => {
            let what = format!("reading {path} from {}", file.display());
            let f = std::fs::File::open(&**file).map_err(|e| ArchiveError::io(what.clone(), e))?;
            (Box::new(f), blob.size, what)
        }
        _ => {
            let m = members.get(path, "a blob to push")?;
            (
                members.open(m)?,
                m.size,
                format!("reading {path} from {}", members.input()),
            )
        }
    };
    let what = || what.clone();
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
    if pos != expected_size {
        return Err(ArchiveError::io(
            what(),
            io::Error::other(format!(
                "read {pos} of its {expected_size} bytes (the input changed while it was pushed?)",
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
    let path = match &blob.data {
        BlobData::Member(_) | BlobData::Spilled { .. } => blob.data.name(),
        _ => return mismatch,
    };
    match check_blob(members, blob, None, &AtomicBool::new(false)) {
        Ok(Checked::Passed) => ArchiveError::SessionMismatch {
            member: path,
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
    check_digest(blob, &blob.data.name(), reported)
}

/// Checks the diff_id a registry reported for the session a layer was
/// sent into (`Feed::registry_verifies`) against the image configs.
pub fn check_reported_diff_id(blob: &Blob, reported: &Digest) -> Result<(), ArchiveError> {
    check_diff_ids(blob, &blob.data.name(), &Ok(reported.clone()))
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
