//! `berth shim`: a loopback HTTP listener for Docker, podman and skopeo.
//! Each accepted TCP connection is piped byte for byte to a new stream of
//! the remote (a channel of the shared SSH connection, a spawned ssh, or the
//! in-process service), so the registry sees exactly what the tool sent —
//! including its `Host` header, which V1 index answers echo back in
//! `X-Docker-Endpoints` so that follow-up calls come to the shim again.
//!
//! It does not parse HTTP, except to answer `502 Bad Gateway` (a V1 error
//! body) when no stream to the registry can be opened.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::transport::Transport;

/// Copy buffer per direction of a shim connection.
const SHIM_BUF: usize = 256 * 1024;

/// Whether the shim may listen on `addr` without `--allow-remote`: anyone
/// who can connect uses the registry with the shim owner's SSH identity.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Accepts connections forever, each served in its own task.
pub async fn serve(listener: TcpListener, transport: Arc<Transport>) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let transport = transport.clone();
        tokio::spawn(async move {
            tracing::debug!(%peer, "shim connection");
            pipe(tcp, &transport).await;
        });
    }
}

/// Pipes one TCP connection to one registry stream until either side closes.
async fn pipe(mut tcp: TcpStream, transport: &Transport) {
    let mut stream = match transport.open().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot reach the registry: {e}");
            let body = serde_json::json!({ "error": format!("berth shim: cannot reach the registry: {e}") })
                .to_string();
            let answer = format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
            let _ = tcp.shutdown().await;
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
