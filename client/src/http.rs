//! The shared HTTP/1.1 client ([`berth_transport::http`]) answering with
//! [`ClientError`], so every command handles one error type: each
//! [`HttpError`] becomes its `ClientError` counterpart (see
//! `From<HttpError> for ClientError`). Everything else is re-exported as is.

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;

pub use berth_transport::http::{
    describe, detail, empty, explain, full, Body, BoxError, HttpError, HOST, HOST_HEADER,
};

use crate::error::ClientError;
use crate::transport::{Diagnostics, Transport};

/// One HTTP/1.1 connection to the registry
/// ([`berth_transport::http::HttpConnection`]) with the client's errors.
pub struct HttpConnection(berth_transport::http::HttpConnection);

impl HttpConnection {
    /// Opens a stream on `transport` and starts HTTP/1.1 on it.
    pub async fn open(transport: &Transport) -> Result<HttpConnection, ClientError> {
        Ok(HttpConnection(
            berth_transport::http::HttpConnection::open(transport).await?,
        ))
    }

    /// [`Self::open`] for one long upload: through SSH jump hosts, on an
    /// inner connection of its own when it can ([`Transport::open_bulk`]).
    pub async fn open_bulk(transport: &Transport) -> Result<HttpConnection, ClientError> {
        Ok(HttpConnection(
            berth_transport::http::HttpConnection::open_bulk(transport).await?,
        ))
    }

    /// Sends a request and returns the response head; the body streams from
    /// the returned response. The `Host` header defaults to [`HOST`].
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        Ok(self.0.send(req).await?)
    }

    /// The side channel, for errors found later (while reading a body).
    pub fn diagnostics(&self) -> Diagnostics {
        self.0.diagnostics()
    }

    /// Whether the connection has ended and cannot carry another request.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// The shared connection underneath, for berth-transport's V2 read
    /// client ([`berth_transport::v2`]), whose errors the caller converts.
    pub fn shared(&mut self) -> &mut berth_transport::http::HttpConnection {
        &mut self.0
    }
}

/// Reads a whole (small) response body: JSON answers and error messages
/// ([`berth_transport::http::read_small_body`]).
pub async fn read_small_body(
    what: &str,
    body: Incoming,
    diagnostics: &Diagnostics,
) -> Result<Bytes, ClientError> {
    Ok(berth_transport::http::read_small_body(what, body, diagnostics).await?)
}
