//! `berth shim`: a loopback HTTP listener for Docker, podman and skopeo.
//! Each accepted TCP connection is piped byte for byte to its own stream of
//! the remote (a channel of the shared SSH connection, a spawned ssh, or the
//! in-process service), so the registry sees exactly what the tool sent —
//! including its `Host` header, which V1 index answers echo back in
//! `X-Docker-Endpoints` so that follow-up calls come to the shim again.
//! Streams come from a [`WarmPool`]: over the built-in SSH client a few
//! channels are opened ahead of demand (`--warm`), so a connection does not
//! wait the two round trips of a channel open (issue 17); a warm stream
//! that fails before it took the whole first request head is replaced by a
//! fresh one.
//!
//! It does not parse HTTP, except to answer `502 Bad Gateway` (a V1 error
//! body) when no stream to the registry can be opened, and, on a loopback
//! address, to check the first request head of each connection with
//! berth-server's loopback rule (`berth_server::http::loopback_refusal`): a
//! `Host` that is not a loopback name (DNS rebinding) answers 421, an
//! `Origin` other than the shim itself 403. Later requests on the same
//! connection are piped unread, so a browser's request goes on with
//! `Connection: close` (`closing`): each of its requests is the first of
//! a connection, and checked.
//!
//! On a loopback address the shim also serves the browsable catalog
//! (`berth_server::catalog`): a connection whose first request is for `/`
//! or `/-/...` is answered by the catalog itself — one request, then
//! `Connection: close`, so every catalog request passes the Host/Origin
//! check — and the pages read the registry over the same transport, with
//! the shim owner's key.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_server::catalog::Catalog;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::transport::Stream;
use crate::warm::{Origin, WarmPool};

/// Copy buffer per direction of a shim connection.
const SHIM_BUF: usize = 256 * 1024;

/// Largest first request head read for the loopback check.
const MAX_HEAD: usize = 64 * 1024;

/// How long a new connection may take to send its first request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the shim may listen on `addr` without `--allow-remote`: anyone
/// who can connect uses the registry with the shim owner's SSH identity.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Accepts connections forever, each served in its own task. On a loopback
/// address each connection's first request head is checked first, and
/// `catalog` (when given) answers the connections that ask for its pages.
pub async fn serve(
    listener: TcpListener,
    streams: Arc<WarmPool>,
    catalog: Option<Arc<Catalog>>,
) -> std::io::Result<()> {
    let listen = listener.local_addr()?;
    let check = is_loopback(&listen).then_some(listen);
    let catalog = catalog.filter(|_| check.is_some());
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let streams = streams.clone();
        let catalog = catalog.clone();
        tokio::spawn(async move {
            tracing::debug!(%peer, "shim connection");
            pipe(tcp, &streams, check, catalog).await;
        });
    }
}

/// The path of a request head's request line (`GET /x?y HTTP/1.1` → `/x`).
fn request_path(head: &[u8]) -> Option<String> {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next()?;
    let target = std::str::from_utf8(line).ok()?.split(' ').nth(1)?;
    Some(target.split('?').next().unwrap_or(target).to_string())
}

/// Answers one catalog request on `tcp` (whose first bytes, `first`, were
/// already read) and closes the connection.
async fn serve_catalog(tcp: TcpStream, first: Vec<u8>, catalog: Arc<Catalog>) {
    let io = Replay {
        first,
        offset: 0,
        tcp,
    };
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let catalog = catalog.clone();
        async move {
            let req = req.map(|b| {
                b.map_err(berth_server::registry::BoxError::from)
                    .boxed_unsync()
            });
            Ok::<_, std::convert::Infallible>(catalog.answer(req).await)
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await
    {
        tracing::debug!("catalog connection ended: {e}");
    }
}

/// A TCP stream whose first bytes were read already: they are read again
/// first.
struct Replay {
    first: Vec<u8>,
    offset: usize,
    tcp: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.offset < self.first.len() {
            let n = buf.remaining().min(self.first.len() - self.offset);
            let from = self.offset;
            buf.put_slice(&self.first[from..from + n]);
            self.offset += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Answers `status` with a V1 error body and closes the connection.
async fn answer(tcp: &mut TcpStream, status: http::StatusCode, message: &str) {
    let body = serde_json::json!({ "error": message }).to_string();
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(answer.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// Whether `buf` holds all of a first request head there is to wait for:
/// its blank line, or bytes that are no HTTP request at all. A TLS
/// ClientHello (first byte 0x16) is what skopeo, podman and docker send
/// first to a registry given without a scheme; waiting for a blank line
/// that never comes cost each of their HTTPS probes the client's 10 s TLS
/// handshake timeout (issue 17's WAN bench: a 1 MB pull through the shim
/// took 10–20 s). Answered at once, the probe fails on the spot and the tool
/// falls back to plain HTTP, as it does against berth-server or distribution.
fn head_complete(buf: &[u8]) -> bool {
    // Request methods are tokens of letters (`GET`, `PUT`, `M-SEARCH` aside).
    let not_http = buf.first().is_some_and(|b| !b.is_ascii_alphabetic());
    not_http || buf.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Reads until the end of the first request head (or [`MAX_HEAD`] bytes, or
/// the end of the stream, or bytes that are no HTTP: [`head_complete`]);
/// returns every byte read, to be forwarded.
async fn read_first_head(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    while buf.len() < MAX_HEAD {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if head_complete(&buf) {
            break;
        }
    }
    Ok(buf)
}

/// A registry stream that has taken `first` (the bytes read for the
/// loopback check, possibly none); `None` when the connection is to be
/// dropped without an answer. When a warm stream fails before it took all
/// of the request head, a fresh one is opened and sent `first` instead,
/// once: the registry acts on no request whose head it did not receive
/// whole. Nothing is retried once the head is through (the registry may
/// then have run a POST or begun a PATCH; the tool decides whether to
/// repeat it).
async fn stream_for(
    streams: &WarmPool,
    first: &[u8],
) -> Result<Option<Stream>, crate::transport::TransportError> {
    let (mut stream, origin) = streams.take().await?;
    let (sent, result) = send(&mut stream, first).await;
    match result {
        Ok(()) => return Ok(Some(stream)),
        Err(e) if origin == Origin::Warm && sent < head_len(first) => {
            tracing::debug!(
                "warm stream failed before the request head went through ({e}); opening another"
            )
        }
        Err(e) => {
            tracing::debug!("shim connection ended: {e}");
            return Ok(None);
        }
    }
    let mut stream = streams.open_fresh().await?;
    match send(&mut stream, first).await {
        (_, Ok(())) => Ok(Some(stream)),
        (_, Err(e)) => {
            tracing::debug!("shim connection ended: {e}");
            Ok(None)
        }
    }
}

/// Writes `data` to `stream`; returns how many bytes it took, and the
/// first error.
async fn send(stream: &mut Stream, data: &[u8]) -> (usize, std::io::Result<()>) {
    let mut sent = 0;
    while sent < data.len() {
        match stream.write(&data[sent..]).await {
            Ok(0) => return (sent, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) => return (sent, Err(e)),
        }
    }
    (sent, Ok(()))
}

/// Whether a request head was sent by a web browser: browsers send an
/// `Origin` or `Sec-Fetch-*` header or a `Mozilla/` User-Agent (a page can
/// neither drop the first two nor, without a preflight the Origin check
/// refuses, change the third); Docker, podman, skopeo and curl send none.
fn from_browser(head: &[u8]) -> bool {
    let head = &head[..head_len(head)];
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .any(|(name, value)| {
            let name = name.trim().to_ascii_lowercase();
            name == "origin"
                || name.starts_with("sec-fetch-")
                || (name == "user-agent" && value.trim_start().starts_with("Mozilla/"))
        })
}

/// `first` with its request head's `Connection` headers replaced by
/// `Connection: close`, so the registry answers that one request and ends
/// the connection. Only the first head of a connection is checked (the rest
/// is piped unread), so a browser must not get a second request onto a
/// connection whose first one passed: a page's request without `Origin`
/// (a no-cors GET) followed by a POST with a foreign one. Bytes after the
/// head (a body) are kept; an incomplete head is returned unchanged.
fn closing(first: &[u8]) -> Vec<u8> {
    let Some(end) = first.windows(4).position(|w| w == b"\r\n\r\n") else {
        return first.to_vec();
    };
    let mut out = Vec::with_capacity(first.len() + 19);
    // Each line with its "\r\n": the request line, then the headers.
    for line in first[..end + 2].split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if line.contains(&b':') && name.trim_ascii().eq_ignore_ascii_case(b"connection") {
            continue;
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&first[end + 4..]);
    out
}

/// Length of the request head at the start of `first` (through its blank
/// line); all of `first` when it holds no complete head (a partial head, or
/// bytes that are no HTTP, on which the registry acts neither).
fn head_len(first: &[u8]) -> usize {
    first
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(first.len(), |at| at + 4)
}

/// Pipes one TCP connection to one registry stream until either side
/// closes; with `check` (the loopback listen address) the first request head
/// must pass the loopback Host/Origin rule, and a catalog request goes to
/// `catalog` instead.
async fn pipe(
    mut tcp: TcpStream,
    streams: &WarmPool,
    check: Option<SocketAddr>,
    catalog: Option<Arc<Catalog>>,
) {
    let mut first = Vec::new();
    if let Some(listen) = check {
        first = match tokio::time::timeout(HEAD_TIMEOUT, read_first_head(&mut tcp)).await {
            Ok(Ok(head)) => head,
            Ok(Err(e)) => {
                tracing::debug!("shim connection ended before a request: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("no request head within {HEAD_TIMEOUT:?}; closing");
                return;
            }
        };
        if let Some((status, message)) =
            berth_server::http::loopback_refusal_of_head(&first, listen)
        {
            tracing::warn!("refused: {message}");
            answer(&mut tcp, status, &message).await;
            return;
        }
        if let Some(catalog) = catalog {
            if request_path(&first).is_some_and(|p| Catalog::is_catalog_path(&p)) {
                serve_catalog(tcp, first, catalog).await;
                return;
            }
        }
        if from_browser(&first) {
            first = closing(&first);
        }
    }
    let mut stream = match stream_for(streams, &first).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("cannot reach the registry: {e}");
            let message = format!("berth shim: cannot reach the registry: {e}");
            answer(&mut tcp, http::StatusCode::BAD_GATEWAY, &message).await;
            return;
        }
    };
    let diagnostics = stream.diagnostics();
    // 256 KiB copy buffers (issue 9): with the default 8 KiB every upload
    // chunk became its own 8 KiB SSH packet and every download packet took
    // eight writes; layers move in large slices instead.
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut stream, SHIM_BUF, SHIM_BUF).await
    {
        let said = crate::http::detail(&diagnostics).await;
        tracing::debug!("shim connection ended: {e}{said}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_told_from_tools_by_their_headers() {
        let head =
            |h: &str| format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{h}\r\n").into_bytes();
        assert!(from_browser(&head("Origin: http://evil.example\r\n")));
        assert!(from_browser(&head("sec-fetch-site: cross-site\r\n")));
        assert!(from_browser(&head("User-Agent: Mozilla/5.0 (X11)\r\n")));
        assert!(!from_browser(&head(
            "User-Agent: docker/28.2.2 go/go1.24\r\n"
        )));
        assert!(!from_browser(&head("User-Agent: skopeo/1.9.3\r\n")));
        assert!(!from_browser(&head("")));
        // Only the head counts, not a body that mentions the header.
        let mut with_body = head("Content-Length: 9\r\n");
        with_body.extend_from_slice(b"Origin: x");
        assert!(!from_browser(&with_body));
    }

    #[test]
    fn a_browser_request_is_sent_on_as_the_last_of_its_connection() {
        let first = b"POST /v2/a/b/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nconnection: keep-alive\r\nContent-Length: 4\r\n\r\nbody";
        assert_eq!(
            closing(first),
            b"POST /v2/a/b/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"
        );
        let partial = b"GET /v2/ HTTP/1.1\r\nHost: 127.0";
        assert_eq!(closing(partial), partial);
    }

    #[test]
    fn a_tls_client_hello_is_not_waited_on() {
        // The first bytes of a TLS 1.2/1.3 ClientHello record.
        assert!(head_complete(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!head_complete(b"GET /v2/ HTTP/1.1\r\nHost: localhost"));
        assert!(head_complete(
            b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n"
        ));
        assert!(!head_complete(b""));
    }

    #[test]
    fn the_head_ends_at_its_blank_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), 27);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x"), 23);
        assert_eq!(head_len(&[0x16, 0x03, 0x01]), 3);
        assert_eq!(head_len(b""), 0);
    }

    #[test]
    fn catalog_requests_are_told_by_their_first_line() {
        let path = |h: &str| request_path(h.as_bytes());
        assert_eq!(
            path("GET / HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(),
            Some("/")
        );
        assert_eq!(
            path("GET /?q=app&last=x HTTP/1.1\r\n\r\n").as_deref(),
            Some("/")
        );
        assert_eq!(
            path("POST /-/delete HTTP/1.1\r\n\r\n").as_deref(),
            Some("/-/delete")
        );
        assert_eq!(
            path("GET /v2/_catalog HTTP/1.1\r\n\r\n").as_deref(),
            Some("/v2/_catalog")
        );
        assert_eq!(path("garbage"), None);
        for (head, catalog) in [
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET /-/repository/a/b HTTP/1.1\r\n\r\n", true),
            ("GET /v2/ HTTP/1.1\r\n\r\n", false),
            ("GET /v1/_ping HTTP/1.1\r\n\r\n", false),
            ("GET /_berth/info HTTP/1.1\r\n\r\n", false),
        ] {
            let p = request_path(head.as_bytes()).unwrap();
            assert_eq!(Catalog::is_catalog_path(&p), catalog, "{head}");
        }
    }
}
