//! [`ArchiveError`]: why an archive was refused, or why a push or pull
//! failed. Every variant names the failing input (member path, digest,
//! reference) so the one-line message tells the user what to look at.
//!
//! Registry and transport failures keep their own type ([`ClientError`])
//! and are wrapped, not flattened, so their exit status survives.

use std::io;

use crate::error::ClientError;

/// Why an archive could not be read, pushed or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the input (file or stdin) or a spooled member failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path or member.
        what: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The input ended inside a member or a header.
    #[error("{input}: archive is truncated: {detail}")]
    Truncated {
        /// The input's name (file path or `stdin`).
        input: String,
        /// Where it ended.
        detail: String,
    },
    /// The input is not a tar archive we can read (bad header, unsupported
    /// outer compression, empty input).
    #[error("{input}: not a readable archive: {detail}")]
    NotAnArchive {
        /// The input's name.
        input: String,
        /// What was wrong.
        detail: String,
    },
    /// A member path is absolute or climbs out with `..`.
    #[error("{input}: refusing member {member:?}: {reason}")]
    UnsafePath {
        /// The input's name.
        input: String,
        /// The member path as stored.
        member: String,
        /// Why it is unsafe.
        reason: String,
    },
    /// A member of a type a `docker save` archive never holds (device,
    /// fifo, sparse file).
    #[error("{input}: refusing member {member:?}: unsupported member type {kind}")]
    UnsupportedMember {
        /// The input's name.
        input: String,
        /// The member path.
        member: String,
        /// The tar entry type.
        kind: String,
    },
    /// A file the format needs is not in the archive (or a link chain ends
    /// nowhere).
    #[error("archive has no member {member:?} ({needed_by})")]
    Missing {
        /// The member path looked for.
        member: String,
        /// Which part of the format needed it.
        needed_by: String,
    },
    /// None of the known shapes matched.
    #[error("unrecognized archive: no index.json/oci-layout, manifest.json or repositories file")]
    UnknownFormat,
    /// A metadata file (manifest.json, index.json, a config) is not what
    /// the format says it is.
    #[error("{member}: {detail}")]
    BadMetadata {
        /// The member path.
        member: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A blob's bytes do not hash to the digest the archive names it by.
    #[error("{member}: content does not match its digest: expected {expected}, found {actual}")]
    DigestMismatch {
        /// The member path.
        member: String,
        /// The digest the archive claims.
        expected: String,
        /// sha256 of the bytes.
        actual: String,
    },
    /// A layer's uncompressed content does not hash to the image config's
    /// `rootfs.diff_ids` entry.
    #[error("{member}: layer content does not match the image's diff_id: expected {expected}, found {actual}")]
    DiffIdMismatch {
        /// The layer member.
        member: String,
        /// The config's diff_id.
        expected: String,
        /// sha256 of the decompressed layer (or why it could not be decompressed).
        actual: String,
    },
    /// The registry's upload session does not hold the blob's bytes
    /// although the archive's do hash right (checked again locally): the
    /// session was changed on the registry's side (another writer, its
    /// storage), not by this archive (issue 15).
    #[error("{member}: the registry's upload session for {digest} holds content with sha256 {reported}; the archive's bytes are fine (checked again here): the session was changed on the registry's side, not by this archive; push again")]
    SessionMismatch {
        /// The member path.
        member: String,
        /// The blob's digest (the archive's bytes hash to it).
        digest: String,
        /// What the registry reported for its session.
        reported: String,
    },
    /// The command line named images the archive does not hold, or too
    /// little to decide what to push.
    #[error("{0}")]
    Selection(String),
    /// The registry served something that fails verification.
    #[error("{what}: {detail}")]
    Verify {
        /// The blob or manifest.
        what: String,
        /// What did not match.
        detail: String,
    },
    /// The registry or the transport failed (boxed: it is large and rare).
    #[error(transparent)]
    Client(Box<ClientError>),
}

impl From<ClientError> for ArchiveError {
    fn from(e: ClientError) -> ArchiveError {
        ArchiveError::Client(Box::new(e))
    }
}

impl ArchiveError {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: io::Error) -> ArchiveError {
        ArchiveError::Io {
            what: what.into(),
            source,
        }
    }

    /// A metadata error for `member`.
    pub fn metadata(member: impl Into<String>, detail: impl Into<String>) -> ArchiveError {
        ArchiveError::BadMetadata {
            member: member.into(),
            detail: detail.into(),
        }
    }

    /// A closed stdout while streaming an archive: not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            ArchiveError::Io { source, .. } => source.kind() == io::ErrorKind::BrokenPipe,
            ArchiveError::Client(e) => e.is_broken_pipe(),
            _ => false,
        }
    }
}
