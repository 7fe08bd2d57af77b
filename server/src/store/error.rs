//! Errors of the store layer; the registry maps each to a protocol status.

use std::io;

/// Why a store operation did not happen. Variants carry the human message the
/// client will see; raw I/O errors stay in [`StoreError::Io`] and are logged,
/// not sent.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist ("Image not found", "Tag not found", ...).
    #[error("{0}")]
    NotFound(String),
    /// A V1 image exists but its upload has not been published yet.
    #[error("Image is being uploaded, retry later")]
    InProgress,
    /// A V1 image (json or layer) is already published.
    #[error("Image already exists")]
    Exists,
    /// The request is malformed or inconsistent (bad JSON, missing parent, mismatch).
    #[error("{0}")]
    Invalid(String),
    /// The request is valid but the object is in the wrong state for it.
    #[error("{0}")]
    Conflict(String),
    /// Writing the upload failed because the client's stream broke.
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    /// The filesystem failed (disk full, permissions, ...).
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

impl From<super::ingest::IngestError> for StoreError {
    fn from(e: super::ingest::IngestError) -> Self {
        match e {
            super::ingest::IngestError::Body(m) => StoreError::Interrupted(m),
            super::ingest::IngestError::Io(e) => StoreError::Io(e),
        }
    }
}

/// Result alias of the store layer.
pub type StoreResult<T> = Result<T, StoreError>;
