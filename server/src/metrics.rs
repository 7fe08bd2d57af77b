//! The server's counters and their Prometheus text rendering (exposition
//! format 0.0.4), read by the admin listener ([`crate::admin`]).
//!
//! Counters are process-wide ([`counters`]) and bumped at a few boundaries
//! only: each answered request ([`crate::registry::Registry::handle`]), each
//! HTTP connection's bytes ([`CountingIo`]), SSH connections, channels and
//! refused logins ([`crate::ssh`]), hook and webhook runs
//! ([`crate::hooks`]). What the store knows (open upload sessions, `gc`
//! totals, free space) and the mirror's own counters are read when scraped.
//!
//! Every label value comes from a fixed set (route *names*, never paths;
//! known methods or `other`; numeric statuses; fixed reasons), so no
//! client can grow the series count or put a repository name in a label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::mirror::MirrorStats;
use crate::store::Store;

/// A counter split by a fixed set of labels.
#[derive(Debug)]
struct Labeled<K: Ord> {
    values: Mutex<BTreeMap<K, u64>>,
}

impl<K: Ord> Default for Labeled<K> {
    fn default() -> Self {
        Labeled {
            values: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<K: Ord + Clone> Labeled<K> {
    fn add(&self, key: K, n: u64) {
        *self
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += n;
    }

    fn snapshot(&self) -> Vec<(K, u64)> {
        let map = self.values.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A value that goes up and down (things open now).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Counts one more open thing until the returned guard is dropped.
    pub fn open(&'static self) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }

    fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Holds one unit of a [`Gauge`]; gives it back when dropped.
#[derive(Debug)]
pub struct GaugeGuard(&'static Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an SSH authentication attempt was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuthFailure {
    /// A login name berth never accepts (`access::valid_login`).
    LoginName,
    /// A key neither authorized_keys nor the access file knows.
    UnknownKey,
    /// A certificate not valid now, from an unknown CA, with no mapped
    /// principal, or failing its critical options.
    Certificate,
    /// A keyless login where anonymous access is off.
    Anonymous,
    /// `--max-connections` logged-in connections already.
    ConnectionLimit,
    /// The key files changed during the login and no longer let it in.
    KeysChanged,
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            AuthFailure::LoginName => "login_name",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::Certificate => "certificate",
            AuthFailure::Anonymous => "anonymous_refused",
            AuthFailure::ConnectionLimit => "connection_limit",
            AuthFailure::KeysChanged => "keys_changed",
        }
    }
}

/// What ran after a push or delete (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delivery {
    /// An executable of `--hooks-dir`.
    Hook,
    /// A `--webhook` POST.
    Webhook,
}

impl Delivery {
    fn label(self) -> &'static str {
        match self {
            Delivery::Hook => "hook",
            Delivery::Webhook => "webhook",
        }
    }
}

/// The process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    requests: Labeled<(&'static str, &'static str, u16)>,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    /// SSH connections open (logging in or logged in).
    pub ssh_connections: Gauge,
    /// SSH channels being served (subsystem or exec).
    pub ssh_channels: Gauge,
    /// HTTP connections being served by the registry (one per subsystem
    /// channel, stdio process, loopback TCP connection or in-process stream).
    pub http_connections: Gauge,
    auth_failures: Labeled<AuthFailure>,
    deliveries: Labeled<(Delivery, bool)>,
}

/// The process-wide counters.
pub fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(Counters::default)
}

/// The `method` label: the registry's methods, anything else `other`.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Counters {
    /// Counts one answered request under its route name.
    pub fn request(&self, method: &http::Method, route: &'static str, status: u16) {
        self.requests.add((method_label(method), route, status), 1);
    }

    /// Counts one refused authentication attempt.
    pub fn auth_failure(&self, why: AuthFailure) {
        self.auth_failures.add(why, 1);
    }

    /// Counts one hook run or webhook delivery and whether it succeeded.
    pub fn delivery(&self, kind: Delivery, ok: bool) {
        self.deliveries.add((kind, ok), 1);
    }
}

/// A byte stream whose traffic is added to the `bytes` counters.
#[derive(Debug)]
pub struct CountingIo<IO>(pub IO);

impl<IO: AsyncRead + Unpin> AsyncRead for CountingIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.0).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        counters()
            .bytes_received
            .fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CountingIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.0).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            counters()
                .bytes_sent
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Prometheus text for one metric family.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Free and total bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path with a NUL byte"))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = s.f_frsize as u64;
    Ok((s.f_bavail as u64 * unit, s.f_blocks as u64 * unit))
}

/// Upload sessions in the store now (every server sharing it included).
fn upload_sessions(store: &Store) -> u64 {
    std::fs::read_dir(store.paths().uploads_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .count() as u64
        })
        .unwrap_or(0)
}

/// Everything, as Prometheus text, with the gauges of `store` and, on a
/// pull-through mirror, its upstream counters (`mirror`). Reads the store
/// (blocking: call it off the async threads).
pub fn render(store: &Store, mirror: Option<&MirrorStats>) -> String {
    let c = counters();
    let mut out = String::new();
    let mut f = Family { out: &mut out };

    f.head(
        "berth_build_info",
        "gauge",
        "Version and commit of this server.",
    );
    let commit = crate::VERSION
        .rsplit_once("(commit ")
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap_or("unknown");
    f.sample(
        "berth_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("commit", commit)],
        1,
    );

    f.head(
        "berth_requests_total",
        "counter",
        "Registry requests answered, by method, route name and status.",
    );
    for ((method, route, status), n) in c.requests.snapshot() {
        let status = status.to_string();
        f.sample(
            "berth_requests_total",
            &[("method", method), ("route", route), ("status", &status)],
            n,
        );
    }
    f.single(
        "berth_received_bytes_total",
        "counter",
        "Bytes received on registry HTTP connections (heads and bodies).",
        c.bytes_received.load(Ordering::Relaxed),
    );
    f.single(
        "berth_sent_bytes_total",
        "counter",
        "Bytes sent on registry HTTP connections (heads and bodies).",
        c.bytes_sent.load(Ordering::Relaxed),
    );
    f.single(
        "berth_ssh_connections_open",
        "gauge",
        "SSH connections open (logging in or logged in).",
        c.ssh_connections.get(),
    );
    f.single(
        "berth_ssh_channels_open",
        "gauge",
        "SSH channels being served (subsystem or exec).",
        c.ssh_channels.get(),
    );
    f.single(
        "berth_http_connections_open",
        "gauge",
        "HTTP connections the registry is serving.",
        c.http_connections.get(),
    );

    f.head(
        "berth_auth_failures_total",
        "counter",
        "Refused SSH authentication attempts, by reason.",
    );
    let failures = c.auth_failures.snapshot();
    for why in [
        AuthFailure::LoginName,
        AuthFailure::UnknownKey,
        AuthFailure::Certificate,
        AuthFailure::Anonymous,
        AuthFailure::ConnectionLimit,
        AuthFailure::KeysChanged,
    ] {
        let n = failures
            .iter()
            .find(|(k, _)| *k == why)
            .map_or(0, |(_, n)| *n);
        f.sample("berth_auth_failures_total", &[("reason", why.label())], n);
    }

    f.single(
        "berth_upload_sessions_open",
        "gauge",
        "V2 upload sessions in the store (all servers sharing it).",
        upload_sessions(store),
    );

    let (hits, misses, errors) = mirror.map_or((0, 0, 0), |s| {
        (
            s.hits.load(Ordering::Relaxed),
            s.misses.load(Ordering::Relaxed),
            s.upstream_errors.load(Ordering::Relaxed),
        )
    });
    f.single(
        "berth_mirror_hits_total",
        "counter",
        "Mirror reads answered from the store alone.",
        hits,
    );
    f.single(
        "berth_mirror_misses_total",
        "counter",
        "Mirror reads that asked the upstream.",
        misses,
    );
    f.single(
        "berth_mirror_upstream_errors_total",
        "counter",
        "Mirror upstream requests that failed.",
        errors,
    );

    let deliveries = c.deliveries.snapshot();
    let count = |kind: Delivery, ok: bool| {
        deliveries
            .iter()
            .find(|(k, _)| *k == (kind, ok))
            .map_or(0, |(_, n)| *n)
    };
    f.head(
        "berth_hook_deliveries_total",
        "counter",
        "Hooks that ran successfully and webhook events delivered, by kind.",
    );
    for kind in [Delivery::Hook, Delivery::Webhook] {
        f.sample(
            "berth_hook_deliveries_total",
            &[("kind", kind.label())],
            count(kind, true),
        );
    }
    f.head(
        "berth_hook_failures_total",
        "counter",
        "Hooks that failed and webhook events dropped after every retry, by kind.",
    );
    for kind in [Delivery::Hook, Delivery::Webhook] {
        f.sample(
            "berth_hook_failures_total",
            &[("kind", kind.label())],
            count(kind, false),
        );
    }

    let gc = crate::store::gc::totals(store).unwrap_or_default();
    f.single(
        "berth_gc_runs_total",
        "counter",
        "Completed `berth-server gc` runs on this store.",
        gc.runs,
    );
    f.single(
        "berth_gc_reclaimed_bytes_total",
        "counter",
        "Bytes freed by those runs.",
        gc.bytes,
    );

    if let Ok((free, size)) = disk_space(store.paths().root()) {
        f.single(
            "berth_store_free_bytes",
            "gauge",
            "Bytes available to the server on the store's file system.",
            free,
        );
        f.single(
            "berth_store_size_bytes",
            "gauge",
            "Size of the store's file system.",
            size,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&m), "other");
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
    }
}
