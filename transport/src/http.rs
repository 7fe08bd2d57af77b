//! HTTP/1.1 over one transport stream (hyper's connection-level client),
//! with streamed request and response bodies: layers are GiB, so nothing
//! here buffers a body.
//!
//! One [`HttpConnection`] is one stream (one SSH channel, one ssh process,
//! one in-memory duplex, one TCP connection); requests on it run one after
//! another (keep-alive). Failures are [`HttpError`]s, whose messages name the
//! request and add what the transport's side channel said.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::time::Duration;

use crate::transport::{Diagnostics, Transport, TransportError};

/// Error type of request bodies (file or stdin read errors).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body: empty, in memory, or streamed from a reader.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The `Host` header sent on requests made by the client itself (the shim
/// passes the caller's own). Any value works for the registry; V1 index
/// answers echo it in `X-Docker-Endpoints`.
pub const HOST: &str = "localhost";

/// The `Host` header name.
pub const HOST_HEADER: http::header::HeaderName = http::header::HOST;

/// How long to wait for the ssh command's last words after a failure.
const SETTLE: Duration = Duration::from_secs(2);

/// Why an HTTP exchange with the registry failed. Only an error *status*
/// is not here: that is an answer, for the caller to read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No stream to the registry could be opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The HTTP exchange broke (connection lost, protocol error). `detail`
    /// carries what the ssh command printed, if anything.
    #[error("{what}: {source}{detail}")]
    Exchange {
        /// What was being done (`GET /v1/...`).
        what: String,
        /// hyper's error.
        source: hyper::Error,
        /// `; ssh said: ...` or empty.
        detail: String,
    },
    /// The registry answered something that cannot be read (a small body
    /// over its limit).
    #[error("{what}: unexpected answer: {message}")]
    Protocol {
        /// The request.
        what: String,
        /// What was wrong with it.
        message: String,
    },
}

/// An empty request body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An in-memory request body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// One HTTP/1.1 connection to the registry service.
pub struct HttpConnection {
    sender: SendRequest<Body>,
    diagnostics: Diagnostics,
}

impl HttpConnection {
    /// Opens a stream on `transport` and starts HTTP/1.1 on it.
    pub async fn open(transport: &Transport) -> Result<HttpConnection, HttpError> {
        Self::over(transport.open().await?).await
    }

    /// [`Self::open`] for one long upload ([`Transport::open_bulk`]).
    pub async fn open_bulk(transport: &Transport) -> Result<HttpConnection, HttpError> {
        Self::over(transport.open_bulk().await?).await
    }

    /// Starts HTTP/1.1 on `stream`.
    async fn over(stream: crate::transport::Stream) -> Result<HttpConnection, HttpError> {
        let diagnostics = stream.diagnostics();
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(1 << 20)
            // Queue body chunks instead of flattening them into one write
            // buffer: streams carry no vectored writes, so hyper would
            // otherwise copy every byte of an upload once more (13% of
            // `berth push`'s CPU in bench/flamegraph).
            .writev(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| HttpError::Exchange {
                what: "starting HTTP on the stream".to_string(),
                source,
                detail: String::new(),
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
        Ok(HttpConnection {
            sender,
            diagnostics,
        })
    }

    /// Sends a request and returns the response head; the body streams from
    /// the returned response. The `Host` header defaults to [`HOST`].
    pub async fn send(&mut self, mut req: Request<Body>) -> Result<Response<Incoming>, HttpError> {
        let what = describe(req.method(), req.uri().path());
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut()
                .insert(http::header::HOST, HeaderValue::from_static(HOST));
        }
        let sent = async {
            self.sender.ready().await?;
            self.sender.send_request(req).await
        }
        .await;
        match sent {
            Ok(resp) => Ok(resp),
            Err(source) => Err(HttpError::Exchange {
                what,
                detail: explain(&source, &self.diagnostics).await,
                source,
            }),
        }
    }

    /// What the transport's side channel said, formatted for an error message.
    pub async fn detail(&self) -> String {
        detail(&self.diagnostics).await
    }

    /// The side channel, for errors found later (while reading a body).
    pub fn diagnostics(&self) -> Diagnostics {
        self.diagnostics.clone()
    }

    /// Whether the connection has ended (closed by either side, or broken):
    /// one that has cannot carry another request.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// What to add to a hyper error: why the stream ended when the transport
/// knows; otherwise a plain-words reading of a lost connection, then what
/// ssh said about it.
pub async fn explain(source: &hyper::Error, diagnostics: &Diagnostics) -> String {
    if let Some(why) = diagnostics.verdict() {
        return format!(" ({why})");
    }
    let lost = if connection_lost(source) {
        " (the connection to the registry was lost: server stopped, SSH connection dropped or network down)"
    } else {
        ""
    };
    format!("{lost}{}", detail(diagnostics).await)
}

/// Whether a hyper error means the stream ended under us (as opposed to a
/// malformed answer): an early close, or an I/O error of the kinds a dead
/// peer produces anywhere in the error's chain.
fn connection_lost(source: &hyper::Error) -> bool {
    if source.is_incomplete_message() || source.is_closed() || source.is_canceled() {
        return true;
    }
    let mut cause = std::error::Error::source(source);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            ) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// `; ssh said: ...` once the side channel has settled, or empty.
pub async fn detail(diagnostics: &Diagnostics) -> String {
    diagnostics.settle(SETTLE).await;
    let text = diagnostics.text();
    if text.is_empty() {
        String::new()
    } else {
        format!(
            "; ssh said: {}",
            text.lines().collect::<Vec<_>>().join(" / ")
        )
    }
}

/// `GET /v1/...`: how requests are named in error messages.
pub fn describe(method: &Method, path: &str) -> String {
    format!("{method} {path}")
}

/// Reads a whole (small) response body: JSON answers and error messages.
/// Bounded, since a misbehaving peer must not make us buffer a layer.
pub async fn read_small_body(
    what: &str,
    body: Incoming,
    diagnostics: &Diagnostics,
) -> Result<Bytes, HttpError> {
    const LIMIT: usize = 16 << 20;
    let limited = http_body_util::Limited::new(body, LIMIT);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(source) => Err(HttpError::Exchange {
                what: format!("{what}: reading the response"),
                detail: explain(&source, diagnostics).await,
                source: *source,
            }),
            Err(other) => Err(HttpError::Protocol {
                what: what.to_string(),
                message: other.to_string(),
            }),
        },
    }
}
