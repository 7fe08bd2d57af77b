//! The client's error type above the transports: what failed, with the
//! input that failed. Address, transport and HTTP failures are
//! berth-transport's errors, wrapped here; archive operations wrap this
//! type in theirs (`archive::ArchiveError`), never the reverse.
//! Exit statuses are the command line's business (`cli.rs`).

use std::io;

use berth_transport::http::HttpError;
use http::StatusCode;

use crate::remote::RemoteError;
use crate::transport::TransportError;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The REGISTRY or a jump host could not be parsed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// No stream to the registry could be opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The HTTP exchange broke (connection lost, protocol error). `detail`
    /// carries what the ssh command printed, if anything. The client's form
    /// of [`HttpError::Exchange`], kept as fields so callers can match it.
    #[error("{what}: {source}{detail}")]
    Http {
        /// What was being done (`GET /v1/...`).
        what: String,
        /// hyper's error.
        source: hyper::Error,
        /// `; ssh said: ...` or empty.
        detail: String,
    },
    /// The registry answered with an error status.
    #[error("{what}: {status}: {message}")]
    Status {
        /// The request (`GET /v1/...`).
        what: String,
        /// The status the registry answered.
        status: StatusCode,
        /// The registry's human message.
        message: String,
    },
    /// Local I/O failed (reading the input file, writing stdout).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The registry answered something this client cannot read.
    #[error("{what}: unexpected answer: {message}")]
    Protocol {
        /// The request.
        what: String,
        /// What was wrong with it.
        message: String,
    },
    /// Bad command-line input that clap could not catch.
    #[error("{0}")]
    Usage(String),
}

impl From<HttpError> for ClientError {
    /// Each HTTP failure becomes the variant with the same message.
    fn from(e: HttpError) -> ClientError {
        match e {
            HttpError::Transport(e) => ClientError::Transport(e),
            HttpError::Exchange {
                what,
                source,
                detail,
            } => ClientError::Http {
                what,
                source,
                detail,
            },
            HttpError::Protocol { what, message } => ClientError::Protocol { what, message },
        }
    }
}

impl ClientError {
    /// Whether this is a closed stdout (`registryget ... | head`): not worth
    /// a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ClientError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}
