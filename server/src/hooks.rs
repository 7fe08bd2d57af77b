//! What happens after a push or a delete: post-push/post-delete hooks and
//! webhooks, fed by the same events the audit log records.
//!
//! * **Hooks**, like git's: the executables `post-push` and `post-delete` in
//!   the operator's `--hooks-dir DIR` (none by default) run once per pushed
//!   tag (V1: after the tag PUT; V2: after a manifest PUT to a tag) and per
//!   deleted tag or repository. The event is one JSON line on stdin, and in
//!   `BERTH_*` environment variables. They run in a spawned task, so the
//!   response never waits for them; one running longer than [`HOOK_TIMEOUT`]
//!   is killed; a failure is logged and never undoes the push.
//!
//!   The store is data, never code: whoever can write the store must not
//!   gain the server's account, so `_berth/hooks/` in the store is never
//!   executed, and a hook runs only when it and its directory pass
//!   [`crate::strict::check_trusted`] (owned by the server's user or root,
//!   not group- or world-writable), checked before every run.
//! * **Webhooks** (`--webhook URL`): the same event, wrapped in distribution's
//!   notification envelope (`{"events":[...]}`, content type
//!   [`ENVELOPE_MEDIA_TYPE`]), POSTed by one worker per URL with retries and
//!   exponential backoff. Each URL has a bounded queue: when it is full the
//!   oldest event is dropped (and logged), so a receiver that is down delays
//!   and grows nothing. `http://` and `https://` (berth-transport's client).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use berth_transport::http::{full, HttpConnection};
use berth_transport::transport::{tls::TlsTransport, Transport};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::audit::AuditEvent;
use crate::identity::Identity;
use crate::metrics::{counters, Delivery};

/// How long a hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Content type of a webhook POST (distribution's notification envelope).
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// `target.mediaType` of a V1 tag event (V2 events carry the manifest digest).
const V1_IMAGE_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";

/// Events waiting per webhook URL; beyond this the oldest is dropped.
pub const WEBHOOK_QUEUE: usize = 1000;

/// Attempts per webhook event (the first try plus retries).
const WEBHOOK_ATTEMPTS: u32 = 5;

/// Delay before the first retry; doubled for each further one.
const WEBHOOK_BACKOFF: Duration = Duration::from_millis(500);

/// Connect + request + response time allowed per webhook attempt.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether an event is a push or a delete, and so which hook it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A tag was set (V1 tag PUT, V2 manifest PUT to a tag).
    Push,
    /// A tag or a whole repository was deleted.
    Delete,
}

impl Action {
    /// The action of an audited operation, if it is one hooks see.
    pub fn of(event: &AuditEvent) -> Option<Action> {
        match event.op {
            "tag.put" => Some(Action::Push),
            "manifest.put" if event.tag.is_some() => Some(Action::Push),
            "tag.delete" | "repository.delete" => Some(Action::Delete),
            _ => None,
        }
    }

    /// `push` / `delete`, as in distribution's events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// The hook file name.
    pub fn hook_name(self) -> &'static str {
        match self {
            Action::Push => "post-push",
            Action::Delete => "post-delete",
        }
    }
}

/// A webhook target: `http(s)://host[:port][/path]`, with the transport
/// (TCP, or TLS checked against the system trust store) that reaches it.
#[derive(Clone)]
pub struct WebhookUrl {
    url: String,
    authority: String,
    path: String,
    transport: Arc<Transport>,
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WebhookUrl").field(&self.url).finish()
    }
}

impl WebhookUrl {
    /// Parses and checks a `--webhook` value; for `https://` the trust store
    /// is loaded now, so a broken one shows at start.
    pub fn parse(url: &str) -> Result<WebhookUrl, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("webhook URL {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "webhook URL {url:?}: must start with http:// or https://"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("webhook URL {url:?}: no host"))?;
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let transport = if tls {
            Transport::Tls(
                TlsTransport::new(authority.host(), port)
                    .map_err(|e| format!("webhook URL {url:?}: {e}"))?,
            )
        } else {
            Transport::Tcp {
                address: format!("{}:{port}", authority.host()),
            }
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Ok(WebhookUrl {
            url: url.to_string(),
            authority: authority.to_string(),
            path,
            transport: Arc::new(transport),
        })
    }
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Checks a `--hooks-dir` value at start: an existing directory that passes
/// [`crate::strict::check_trusted`].
pub fn check_hooks_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("--hooks-dir {}: not a directory", dir.display()));
    }
    crate::strict::check_trusted(dir).map_err(|e| format!("--hooks-dir: {e}"))
}

/// The hook to run for `name` in `dir`: `Ok(None)` when there is none (or it
/// is not executable), `Err` with the reason when it exists but is not
/// trusted (the resolved file, its directory and `dir` itself are checked).
fn trusted_hook(dir: &Path, name: &str) -> Result<Option<PathBuf>, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let Ok(real) = std::fs::canonicalize(&path) else {
        return Ok(None);
    };
    let Ok(meta) = std::fs::metadata(&real) else {
        return Ok(None);
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Ok(None);
    }
    crate::strict::check_trusted(dir)?;
    if let Some(parent) = real.parent() {
        crate::strict::check_trusted(parent)?;
    }
    crate::strict::check_trusted(&real)?;
    Ok(Some(path))
}

/// Runs hooks and queues webhook deliveries for a registry's events.
#[derive(Debug)]
pub struct Notifier {
    /// `--hooks-dir`; `None` runs no hook.
    hooks_dir: Option<PathBuf>,
    webhooks: Vec<Arc<Webhook>>,
    /// Identifies this server process in events (`source.instanceID`).
    instance: String,
}

impl Notifier {
    /// Hooks from `hooks_dir` (none when `None`); events also POSTed to
    /// each webhook.
    pub fn new(hooks_dir: Option<PathBuf>, webhooks: &[WebhookUrl]) -> Notifier {
        Notifier {
            hooks_dir,
            webhooks: webhooks
                .iter()
                .map(|url| {
                    Arc::new(Webhook {
                        url: url.clone(),
                        queue: Mutex::new(VecDeque::new()),
                        ready: Notify::new(),
                        worker: OnceLock::new(),
                    })
                })
                .collect(),
            instance: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Hands an audited event to the hooks and webhooks, without waiting for
    /// either. Operations hooks do not see are ignored.
    pub fn notify(&self, who: &Identity, event: &AuditEvent) {
        let Some(action) = Action::of(event) else {
            return;
        };
        let body = self.event_json(action, who, event);
        if let Some(dir) = &self.hooks_dir {
            match trusted_hook(dir, action.hook_name()) {
                Ok(Some(hook)) => {
                    let env = hook_env(who, event);
                    tokio::spawn(run_hook(hook, body.clone(), env));
                }
                Ok(None) => {}
                Err(reason) => {
                    let hook = dir.join(action.hook_name());
                    tracing::warn!(hook = %hook.display(), %reason, "hook refused (not run)");
                }
            }
        }
        for webhook in &self.webhooks {
            webhook.enqueue(body.clone());
        }
    }

    /// One event in distribution's shape, with berth's own fields under `berth`.
    fn event_json(&self, action: Action, who: &Identity, event: &AuditEvent) -> Value {
        let now = SystemTime::now();
        let mut target = serde_json::Map::new();
        if event.op == "tag.put" {
            target.insert("mediaType".into(), json!(V1_IMAGE_MEDIA_TYPE));
        }
        if let Some(d) = &event.digest {
            target.insert("digest".into(), json!(d));
        }
        if let Some(r) = &event.repository {
            target.insert("repository".into(), json!(r));
        }
        if let Some(t) = &event.tag {
            target.insert("tag".into(), json!(t));
        }
        json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "timestamp": rfc3339(now),
            "action": action.as_str(),
            "target": target,
            "request": {
                "addr": who.client,
                "method": if action == Action::Push { "PUT" } else { "DELETE" },
            },
            "actor": { "name": who.user },
            "source": { "instanceID": self.instance },
            "berth": {
                "op": event.op,
                "user": who.user,
                "key": who.key_fingerprint,
                "image": event.image,
            },
        })
    }
}

/// Environment of a hook run.
fn hook_env(who: &Identity, event: &AuditEvent) -> Vec<(&'static str, String)> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        ("BERTH_OP", event.op.to_string()),
        ("BERTH_USER", who.user.clone()),
        ("BERTH_KEY", opt(&who.key_fingerprint)),
        ("BERTH_REPOSITORY", opt(&event.repository)),
        ("BERTH_TAG", opt(&event.tag)),
        ("BERTH_DIGEST", opt(&event.digest)),
        ("BERTH_IMAGE", opt(&event.image)),
    ]
}

/// Runs one hook to completion (or [`HOOK_TIMEOUT`]), logging any failure.
async fn run_hook(hook: PathBuf, event: Value, env: Vec<(&'static str, String)>) {
    let mut line = serde_json::to_vec(&event).unwrap_or_default();
    line.push(b'\n');
    let mut cmd = tokio::process::Command::new(&hook);
    cmd.envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = hook.parent() {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(hook = %hook.display(), error = %e, "cannot start hook");
            counters().delivery(Delivery::Hook, false);
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores its stdin closes the pipe early: not an error.
        let _ = stdin.write_all(&line).await;
    }
    let outcome = tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output()).await;
    counters().delivery(
        Delivery::Hook,
        matches!(&outcome, Ok(Ok(out)) if out.status.success()),
    );
    match outcome {
        Ok(Ok(out)) if out.status.success() => {
            tracing::debug!(hook = %hook.display(), "hook ran");
        }
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            tracing::warn!(hook = %hook.display(), status = %out.status, stderr = %stderr.trim(), "hook failed (the operation stands)");
        }
        Ok(Err(e)) => {
            tracing::error!(hook = %hook.display(), error = %e, "waiting for hook");
        }
        Err(_) => {
            // Dropping the wait future killed the child (kill_on_drop).
            tracing::warn!(hook = %hook.display(), timeout_s = HOOK_TIMEOUT.as_secs(), "hook timed out and was killed");
        }
    }
}

/// One webhook URL: its bounded queue and its delivery worker.
#[derive(Debug)]
struct Webhook {
    url: WebhookUrl,
    queue: Mutex<VecDeque<Value>>,
    ready: Notify,
    /// Set when the worker task is started (on the first event).
    worker: OnceLock<()>,
}

impl Webhook {
    fn enqueue(self: &Arc<Self>, event: Value) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= WEBHOOK_QUEUE {
                if let Some(old) = q.pop_front() {
                    tracing::warn!(webhook = %self.url, dropped = %old["id"], "webhook queue full; dropped the oldest event");
                }
            }
            q.push_back(event);
        }
        self.worker.get_or_init(|| {
            let me = self.clone();
            tokio::spawn(async move { me.deliver_forever().await });
        });
        self.ready.notify_one();
    }

    async fn deliver_forever(self: Arc<Self>) {
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            let Some(event) = next else {
                self.ready.notified().await;
                continue;
            };
            let body =
                Bytes::from(serde_json::to_vec(&json!({ "events": [event] })).unwrap_or_default());
            let mut delay = WEBHOOK_BACKOFF;
            for attempt in 1..=WEBHOOK_ATTEMPTS {
                let result = tokio::time::timeout(WEBHOOK_TIMEOUT, self.post(body.clone())).await;
                let error = match result {
                    Ok(Ok(status)) if status.is_success() => {
                        counters().delivery(Delivery::Webhook, true);
                        break;
                    }
                    Ok(Ok(status)) => format!("answered {status}"),
                    Ok(Err(e)) => e,
                    Err(_) => format!("no answer within {WEBHOOK_TIMEOUT:?}"),
                };
                if attempt == WEBHOOK_ATTEMPTS {
                    counters().delivery(Delivery::Webhook, false);
                    tracing::error!(webhook = %self.url, id = %event["id"], error = %error, "webhook delivery failed; event dropped");
                    break;
                }
                tracing::warn!(webhook = %self.url, attempt, error = %error, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }

    /// One POST on a fresh connection.
    async fn post(&self, body: Bytes) -> Result<hyper::StatusCode, String> {
        let mut conn = HttpConnection::open(&self.url.transport)
            .await
            .map_err(|e| e.to_string())?;
        let req = Request::post(self.url.path.as_str())
            .header(hyper::header::HOST, self.url.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, ENVELOPE_MEDIA_TYPE)
            .header(
                hyper::header::USER_AGENT,
                concat!("berth/", env!("CARGO_PKG_VERSION")),
            )
            .body(full(body))
            .map_err(|e| e.to_string())?;
        let resp = conn.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read (and discard) the answer so the receiver sees a clean exchange.
        let _ = resp.into_body().collect().await;
        Ok(status)
    }
}

/// `2006-01-02T15:04:05Z` for a time (UTC, whole seconds).
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        let at = |s: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn actions_of_ops() {
        let ev = |op: &'static str, tag: Option<&str>| AuditEvent {
            op,
            tag: tag.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(Action::of(&ev("tag.put", Some("1"))), Some(Action::Push));
        assert_eq!(
            Action::of(&ev("manifest.put", Some("1"))),
            Some(Action::Push)
        );
        assert_eq!(Action::of(&ev("manifest.put", None)), None);
        assert_eq!(Action::of(&ev("blob.upload", None)), None);
        assert_eq!(
            Action::of(&ev("tag.delete", Some("1"))),
            Some(Action::Delete)
        );
        assert_eq!(
            Action::of(&ev("repository.delete", None)),
            Some(Action::Delete)
        );
    }

    #[test]
    fn only_trusted_hooks_are_found() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        mode(&hooks, 0o755);
        assert_eq!(trusted_hook(&hooks, "post-push"), Ok(None));
        let hook = hooks.join("post-push");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        mode(&hook, 0o644);
        assert_eq!(
            trusted_hook(&hooks, "post-push"),
            Ok(None),
            "not executable"
        );
        mode(&hook, 0o755);
        assert_eq!(trusted_hook(&hooks, "post-push"), Ok(Some(hook.clone())));
        mode(&hook, 0o775);
        assert!(trusted_hook(&hooks, "post-push").is_err());
        mode(&hook, 0o755);
        mode(&hooks, 0o777);
        assert!(trusted_hook(&hooks, "post-push").is_err());
        assert!(check_hooks_dir(&hooks).is_err());
        mode(&hooks, 0o700);
        assert!(check_hooks_dir(&hooks).is_ok());
        assert!(check_hooks_dir(&hook).is_err());
    }

    #[test]
    fn webhook_urls() {
        let u = WebhookUrl::parse("http://127.0.0.1:9000/hook?x=1").unwrap();
        assert_eq!(u.authority, "127.0.0.1:9000");
        assert_eq!(u.path, "/hook?x=1");
        let plain = WebhookUrl::parse("http://example.org").unwrap();
        assert!(
            matches!(&*plain.transport, Transport::Tcp { address } if address == "example.org:80")
        );
        assert_eq!(plain.path, "/");
        let tls = WebhookUrl::parse("https://example.org/").unwrap();
        assert!(matches!(&*tls.transport, Transport::Tls(_)));
        assert!(WebhookUrl::parse("ftp://example.org/").is_err());
    }
}
