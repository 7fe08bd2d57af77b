//! A plain HTTP/1.1 listener on a loopback address, in front of the same
//! registry service. For local tooling and tests: there is no authentication,
//! every request runs as one configured user, so it refuses non-loopback
//! addresses. Remote users go through SSH (or `berth shim`).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::registry::{Identity, Registry};

/// Accepts connections on `listener` forever, one task per connection.
pub async fn serve_http(
    listener: TcpListener,
    registry: Arc<Registry>,
    user: String,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let registry = registry.clone();
        let who = Identity {
            user: user.clone(),
            key_fingerprint: None,
            client: Some(peer.to_string()),
        };
        tokio::spawn(async move {
            if let Err(e) = registry.serve_connection(stream, who).await {
                tracing::debug!(%peer, error = %e, "http connection ended");
            }
        });
    }
}

/// Whether an address is loopback (the only kind `http` listens on by default).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}
