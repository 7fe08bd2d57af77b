//! `GET /_berth/info`: who the server thinks the caller is and, for each
//! namespace rule, what the caller may do there (gitolite's `info`).
//! `berth info REGISTRY` prints it.

use http::{Response, StatusCode};
use serde_json::json;

use super::response::{self, RespBody};
use super::{Identity, Registry};

/// Answers the info request for `who`.
pub fn handle(reg: &Registry, who: &Identity) -> Response<RespBody> {
    let policy = reg.access().policy();
    let namespaces: Vec<serde_json::Value> = policy
        .summary(who.subject())
        .into_iter()
        .map(|(ns, read, write, delete)| json!({"namespace": ns, "read": read, "write": write, "delete": delete}))
        .collect();
    response::json(
        StatusCode::OK,
        &json!({
            "user": who.user,
            "anonymous": who.is_anonymous(),
            "key": who.key_fingerprint,
            "client": who.client,
            "access_file": reg.access().has_file(),
            "namespaces": namespaces,
            "mirror": reg.mirror().map(mirror_info),
        }),
    )
}

/// The mirror role and its upstream traffic counters, for operators (and
/// tests that must show a cached pull asks the upstream nothing).
fn mirror_info(m: &crate::mirror::Mirror) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let s = m.stats();
    json!({
        "upstream": m.upstream_name(),
        "ttl_seconds": m.ttl().as_secs(),
        "read_only": m.refusal().is_some(),
        "upstream_requests": s.requests.load(Relaxed),
        "upstream_bytes": s.bytes.load(Relaxed),
        "hits": s.hits.load(Relaxed),
        "stale_served": s.stale_served.load(Relaxed),
    })
}
