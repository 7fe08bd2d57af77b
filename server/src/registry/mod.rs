//! The registry service: one value that answers the V1 (and V2) HTTP API on
//! the store, whatever carries the bytes — an SSH channel, stdin/stdout under
//! sshd, an in-memory duplex ([`in_process`], the client's local mode), or a
//! TCP socket.
//!
//! Transports call [`Registry::serve_connection`] with a byte stream and the
//! [`Identity`] SSH established; nothing else in the crate parses HTTP.

pub mod browse;
pub mod in_process;
pub mod info;
pub mod response;
pub mod route_name;
pub mod v1;
pub mod v2;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::access::AccessControl;
use crate::audit::{AuditEvent, AuditLog};
use crate::hooks::{Notifier, WebhookUrl};
pub use crate::identity::Identity;
use crate::mirror::Mirror;
pub(crate) use crate::store::blocking;
use crate::store::Store;
pub use response::{BoxError, ReqBody, RespBody};

/// A check of each request's headers before it is dispatched: `Some`
/// answers the request with that response instead.
pub type RequestGuard = dyn Fn(&http::HeaderMap) -> Option<Response<RespBody>> + Send + Sync;

/// Pages served beside the registry API on the same connections (the
/// catalog, `crate::catalog`, on loopback listeners): the registry hands
/// them the paths they claim and knows nothing else of them, so it does not
/// depend on the catalog (which is a client of the registry).
pub trait PageService: Send + Sync {
    /// Whether a request path is this service's rather than the registry's.
    fn claims(&self, path: &str) -> bool;
    /// Answers one request for a path it claims.
    fn answer(
        self: Arc<Self>,
        req: Request<ReqBody>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<RespBody>> + Send>>;
}

/// Tunables of the registry service.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Largest JSON request body accepted (image json, tag, index lists).
    pub max_json_body: usize,
    /// Largest request head (request line + headers) accepted.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// `X-Docker-Endpoints` values; empty means "the request's Host".
    pub endpoints: Vec<String>,
    /// URLs every push and delete event is POSTed to (see [`crate::hooks`]).
    pub webhooks: Vec<WebhookUrl>,
    /// Directory of post-push/post-delete hooks (`--hooks-dir`); `None`
    /// (the default, and always in the client's local mode) runs none.
    pub hooks_dir: Option<PathBuf>,
    /// The upstream this registry mirrors, if it is a pull-through mirror.
    pub mirror: Option<Arc<Mirror>>,
    /// Manifest PUT skips the check of an image config's `rootfs.diff_ids`
    /// against its layers (`--no-diff-id-check`, `v2::diff_ids`), and V2
    /// answers no longer announce `Berth-Verifies`.
    pub skip_diff_id_check: bool,
}

/// Largest JSON request body accepted from anonymous (keyless) clients,
/// whatever `--max-json-body` says: anyone can open channels, so the
/// memory one of them can make the server hold stays small.
pub const ANONYMOUS_JSON_BODY: usize = 64 << 10;

impl RegistryConfig {
    /// The largest JSON request body `who` may send: `max_json_body`, or
    /// at most [`ANONYMOUS_JSON_BODY`] for anonymous clients.
    pub fn json_body_limit(&self, who: &Identity) -> usize {
        if who.is_anonymous() {
            self.max_json_body.min(ANONYMOUS_JSON_BODY)
        } else {
            self.max_json_body
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_json_body: 4 << 20,
            max_header_bytes: 64 << 10,
            header_timeout: Duration::from_secs(30),
            endpoints: Vec::new(),
            webhooks: Vec::new(),
            hooks_dir: None,
            mirror: None,
            skip_diff_id_check: false,
        }
    }
}

/// The registry service over one store.
#[derive(Debug)]
pub struct Registry {
    store: Store,
    config: RegistryConfig,
    access: AccessControl,
    audit: Arc<AuditLog>,
    notifier: Notifier,
}

impl Registry {
    /// A service answering for `store`, where every user may do everything
    /// (no access file), auditing to `<root>/_berth/audit.log`.
    pub fn new(store: Store, config: RegistryConfig) -> Arc<Registry> {
        Registry::with_access(store, config, AccessControl::open(&[]), None)
    }

    /// A service with explicit access rules and audit file (default
    /// `<root>/_berth/audit.log`).
    pub fn with_access(
        store: Store,
        config: RegistryConfig,
        access: AccessControl,
        audit_path: Option<std::path::PathBuf>,
    ) -> Arc<Registry> {
        let audit = Arc::new(AuditLog::new(
            audit_path.unwrap_or_else(|| store.paths().audit_log()),
        ));
        let notifier = Notifier::new(config.hooks_dir.clone(), &config.webhooks);
        if let Some(mirror) = &config.mirror {
            if let Err(e) = store.mark_mirror(mirror.upstream_name()) {
                tracing::error!(error = %e, "recording the mirror role in the store");
            }
        }
        Arc::new(Registry {
            store,
            config,
            access,
            audit,
            notifier,
        })
    }

    /// The access rules requests are checked against.
    pub fn access(&self) -> &AccessControl {
        &self.access
    }

    /// The audit file (read by `/_berth/audit`, [`browse`]).
    pub fn audit_path(&self) -> &std::path::Path {
        self.audit.path()
    }

    /// Appends an audit line for a completed write or delete, then hands a
    /// push or delete to the hooks and webhooks (which run on their own).
    pub async fn audit(&self, who: &Identity, event: AuditEvent) {
        tracing::info!(
            user = %who.log_user(),
            op = event.op,
            repository = event.repository.as_deref().unwrap_or("-"),
            tag = event.tag.as_deref().unwrap_or("-"),
            image = event.image.as_deref().unwrap_or("-"),
            digest = event.digest.as_deref().unwrap_or("-"),
            "write"
        );
        let log = self.audit.clone();
        let who = who.clone();
        let (who, event) = blocking(move || {
            log.record(&who, &event);
            (who, event)
        })
        .await;
        self.notifier.notify(&who, &event);
    }

    /// The store this service answers for.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The service's configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The mirror role, when this registry is a pull-through mirror.
    pub fn mirror(&self) -> Option<&Mirror> {
        self.config.mirror.as_deref()
    }

    /// Serves HTTP/1.1 (keep-alive) on one byte stream until the peer closes it.
    pub async fn serve_connection<IO>(
        self: Arc<Self>,
        io: IO,
        who: Identity,
    ) -> Result<(), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.serve_connection_guarded(io, who, None, None).await
    }

    /// [`Registry::serve_connection`] where `guard`, when given, sees each
    /// request's headers first and may answer it instead (the loopback
    /// listener's Host/Origin check, [`crate::http`]), and `pages`, when
    /// given, answers the paths it claims ([`PageService`]: the catalog).
    pub async fn serve_connection_guarded<IO>(
        self: Arc<Self>,
        io: IO,
        who: Identity,
        guard: Option<Arc<RequestGuard>>,
        pages: Option<Arc<dyn PageService>>,
    ) -> Result<(), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let who = Arc::new(who);
        let registry = self.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let registry = registry.clone();
            let who = who.clone();
            let refused = guard.as_ref().and_then(|g| g(req.headers()));
            let pages = pages.clone().filter(|p| p.claims(req.uri().path()));
            async move {
                if let Some(resp) = refused {
                    return Ok::<_, Infallible>(resp);
                }
                let req = req.map(|b| b.map_err(BoxError::from).boxed_unsync());
                if let Some(pages) = pages {
                    return Ok::<_, Infallible>(pages.answer(req).await);
                }
                Ok::<_, Infallible>(registry.handle(req, &who).await)
            }
        });
        let _open = crate::metrics::counters().http_connections.open();
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_timeout)
            .max_buf_size(self.config.max_header_bytes.max(8192))
            .half_close(true)
            .keep_alive(true)
            // Queue body chunks instead of copying them into one write
            // buffer (no transport here takes vectored writes).
            .writev(true)
            .serve_connection(TokioIo::new(crate::metrics::CountingIo(io)), svc)
            .await
    }

    /// Answers one request. Every transport ends here.
    pub async fn handle(&self, req: Request<ReqBody>, who: &Identity) -> Response<RespBody> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let span = tracing::info_span!(
            "request",
            %method,
            path = %crate::logsafe::Escaped(&path),
            user = %who.log_user()
        );
        async move {
            let mut resp = self.dispatch(req, who).await;
            if method == Method::HEAD {
                // Keep the headers (Content-Length included), drop any body.
                let (parts, _) = resp.into_parts();
                resp = Response::from_parts(parts, response::empty_body());
            }
            let status = resp.status();
            crate::metrics::counters().request(
                &method,
                route_name::route_name(&path),
                status.as_u16(),
            );
            let ms = start.elapsed().as_millis();
            if status.is_server_error() {
                tracing::error!(status = status.as_u16(), ms, "answered");
            } else {
                tracing::debug!(status = status.as_u16(), ms, "answered");
            }
            resp
        }
        .instrument(span)
        .await
    }

    async fn dispatch(&self, req: Request<ReqBody>, who: &Identity) -> Response<RespBody> {
        // hyper bounds only a *partial* head by its buffer size; a complete
        // head that arrived in one read is checked here.
        let head_bytes: usize = req.uri().to_string().len()
            + req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if head_bytes > self.config.max_header_bytes {
            return response::v1_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &format!(
                    "Request head larger than {} bytes",
                    self.config.max_header_bytes
                ),
            );
        }
        let path = req.uri().path().to_string();
        if path == "/_berth/info" || path == "/_berth/info/" {
            return info::handle(self, who, self.mirror_counters());
        }
        if path.starts_with("/_berth/") {
            let method = req.method().clone();
            let query = req.uri().query().map(str::to_string);
            if let Some(resp) = browse::handle(self, &path, &method, query.as_deref(), who).await {
                return resp;
            }
        }
        if let Some(route) = v1::routes::parse_v1(&path) {
            return v1::handle(self, route, req, who).await;
        }
        if let Some(route) = v2::routes::parse_v2(&path) {
            return v2::handle(self, route, req, who).await;
        }
        response::v1_error(StatusCode::NOT_FOUND, "Not found")
    }
}

impl Registry {
    /// The mirror role's counters for `/_berth/info`, when there is one.
    fn mirror_counters(&self) -> Option<info::MirrorCounters> {
        use std::sync::atomic::Ordering::Relaxed;
        let m = self.mirror()?;
        let s = m.stats();
        Some(info::MirrorCounters {
            upstream: m.upstream_name().to_string(),
            ttl: m.ttl(),
            read_only: m.refusal().is_some(),
            upstream_requests: s.requests.load(Relaxed),
            upstream_bytes: s.bytes.load(Relaxed),
            hits: s.hits.load(Relaxed),
            stale_served: s.stale_served.load(Relaxed),
        })
    }

    /// Why a request with `method` is refused outright (a read-only
    /// mirror), if it is.
    pub(crate) fn refused_write(&self, method: &Method) -> Option<String> {
        if method == Method::GET || method == Method::HEAD {
            return None;
        }
        self.mirror().and_then(Mirror::refusal)
    }
}

/// Reads and discards a refused request's body when it is small, so the
/// connection stays usable for the next request (hyper must close a
/// keep-alive connection whose request body was left unread).
pub(crate) async fn drain_small_body(mut body: ReqBody) {
    const LIMIT: usize = 1 << 20;
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > LIMIT {
                return;
            }
        }
    }
}
