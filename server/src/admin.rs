//! The admin listener (`serve --metrics-listen`): Prometheus metrics and
//! health checks for monitoring, on a plain HTTP port apart from SSH.
//!
//! * `GET /metrics` — [`crate::metrics::render`].
//! * `GET /healthz` — 200 while the process answers at all.
//! * `GET /readyz` — 200 when the store takes a write (a temp file is
//!   created, written, synced and removed) and the access file in force is
//!   the one on disk; 503 naming what is wrong otherwise.
//!
//! Loopback only unless `--metrics-allow-remote`; on loopback the
//! `Host`/`Origin` rule of [`crate::loopback`] holds (no DNS rebinding).
//! Nothing here reads a request body or changes anything.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::registry::Registry;
use crate::store::atomic::TempFile;

/// Flags of the admin listener.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AdminArgs {
    /// Serve Prometheus metrics (`/metrics`) and health checks (`/healthz`,
    /// `/readyz`) over plain HTTP on this address, e.g. 127.0.0.1:9102.
    /// Off by default. See docs/operations.md.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Allow a non-loopback --metrics-listen address (the endpoints have
    /// no authentication; firewall them).
    #[arg(long)]
    pub metrics_allow_remote: bool,
}

impl AdminArgs {
    /// Checks the address rule before anything starts.
    pub fn check(&self) -> Result<()> {
        if let Some(addr) = &self.metrics_listen {
            if !crate::loopback::is_loopback(addr) && !self.metrics_allow_remote {
                bail!(
                    "refusing --metrics-listen on non-loopback {addr}; pass --metrics-allow-remote if you mean it"
                );
            }
        }
        Ok(())
    }

    /// Binds the listener (if asked for) and serves it in the background;
    /// prints the address it listens on.
    pub async fn start(&self, registry: Arc<Registry>) -> Result<()> {
        self.check()?;
        let Some(addr) = self.metrics_listen else {
            return Ok(());
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (--metrics-listen)"))?;
        let bound = listener.local_addr()?;
        println!("berth-server: metrics on http://{bound}/metrics");
        tokio::spawn(serve(listener, bound, registry));
        Ok(())
    }
}

async fn serve(listener: TcpListener, listen: SocketAddr, registry: Arc<Registry>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(answer(&req, listen, registry).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn answer(
    req: &Request<Incoming>,
    listen: SocketAddr,
    registry: Arc<Registry>,
) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if crate::loopback::is_loopback(&listen) {
        let h = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        if let Some((status, msg)) =
            crate::loopback::loopback_refusal(h(header::HOST), h(header::ORIGIN), listen)
        {
            return text(status, PLAIN, format!("{msg}\n"));
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET\n".to_string(),
        );
    }
    let blocking = |f: fn(&Registry) -> Response<Full<Bytes>>| async move {
        tokio::task::spawn_blocking(move || f(&registry))
            .await
            .unwrap_or_else(|e| {
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PLAIN,
                    format!("internal error: {e}\n"),
                )
            })
    };
    match req.uri().path() {
        "/metrics" => {
            blocking(|r| {
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    crate::metrics::render(r.store(), r.mirror().map(crate::mirror::Mirror::stats)),
                )
            })
            .await
        }
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".to_string()),
        "/readyz" => {
            blocking(|r| match not_ready(r) {
                None => text(StatusCode::OK, PLAIN, "ready\n".to_string()),
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
            })
            .await
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: /metrics, /healthz, /readyz\n".to_string(),
        ),
    }
}

/// Why the server cannot serve requests properly now, if it cannot.
fn not_ready(registry: &Registry) -> Option<String> {
    let mut problems = Vec::new();
    let dir = registry.store().paths().berth_dir();
    let probe = TempFile::new_in(&dir, "readyz").and_then(|mut t| {
        t.file().write_all(b"ready")?;
        t.sync()
    });
    if let Err(e) = probe {
        problems.push(format!("store not writable: {}: {e}", dir.display()));
    }
    if let Some(e) = registry.access().reload_error() {
        problems.push(format!(
            "access file not loaded (the previous rules stay in force): {e}"
        ));
    }
    (!problems.is_empty()).then(|| problems.join("\n"))
}
