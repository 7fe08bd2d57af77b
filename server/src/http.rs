//! A plain HTTP/1.1 listener on a loopback address, in front of the same
//! registry service. For local tooling and tests: there is no authentication,
//! every request runs as one configured user, so it refuses non-loopback
//! addresses. Remote users go through SSH (or `berth shim`).
//!
//! Loopback is not enough against a web browser on the same machine: a page
//! can make its host name resolve to 127.0.0.1 (DNS rebinding) and talk to
//! the listener, or send "simple" cross-origin requests to it. So a loopback
//! listener also refuses, per request ([`loopback_refusal`], the one rule
//! `berth shim` applies too), a `Host` that is not a loopback name or
//! address (421) and an `Origin` that is not the listener itself (403).

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use tokio::net::TcpListener;

pub use crate::loopback::{is_loopback, loopback_refusal, loopback_refusal_of_head};
use crate::registry::{Identity, Registry};

/// Accepts connections on `listener` forever, one task per connection.
/// On a loopback address every request passes [`loopback_refusal`] first,
/// and the catalog pages are served beside the registry API.
pub async fn serve_http(
    listener: TcpListener,
    registry: Arc<Registry>,
    user: String,
) -> std::io::Result<()> {
    let listen = listener.local_addr()?;
    let guard: Option<Arc<crate::registry::RequestGuard>> = is_loopback(&listen).then(|| {
        Arc::new(move |headers: &HeaderMap| {
            let field = |name| {
                headers
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
            };
            let hosts = headers.get_all(http::header::HOST).iter().count();
            let refusal = if hosts > 1 {
                Some((
                    StatusCode::MISDIRECTED_REQUEST,
                    "berth: more than one Host header".to_string(),
                ))
            } else {
                loopback_refusal(
                    field(http::header::HOST).as_deref(),
                    field(http::header::ORIGIN).as_deref(),
                    listen,
                )
            };
            refusal.map(|(status, msg)| {
                tracing::warn!(reason = %crate::logsafe::Escaped(&msg), "request refused");
                crate::registry::response::v1_error(status, &msg)
            })
        }) as Arc<crate::registry::RequestGuard>
    });
    let catalog = is_loopback(&listen).then(|| {
        let in_process = crate::registry::in_process::InProcessRegistry::new(
            registry.clone(),
            Identity::local(&user),
        );
        let transport = berth_transport::transport::Transport::InProcess(Arc::new(in_process));
        let root = registry.store().paths().root().display().to_string();
        crate::catalog::Catalog::new(Arc::new(transport), listen, &root)
    });
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let registry = registry.clone();
        let who = Identity {
            user: user.clone(),
            key_fingerprint: None,
            client: Some(peer.to_string()),
        };
        let guard = guard.clone();
        let catalog = catalog
            .clone()
            .map(|c| c as Arc<dyn crate::registry::PageService>);
        tokio::spawn(async move {
            if let Err(e) = registry
                .serve_connection_guarded(stream, who, guard, catalog)
                .await
            {
                tracing::debug!(%peer, error = %e, "http connection ended");
            }
        });
    }
}
