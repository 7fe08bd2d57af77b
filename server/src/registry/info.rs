//! `GET /_berth/info`: who the server thinks the caller is and, for each
//! namespace rule, what the caller may do there (gitolite's `info`).
//! `berth info REGISTRY` prints it.

use http::{Response, StatusCode};
use serde_json::json;

use super::response::{self, RespBody};
use super::{Identity, Registry};

/// Answers the info request for `who`; `mirror` is the mirror role's
/// counters when the registry is a pull-through mirror.
pub fn handle(
    reg: &Registry,
    who: &Identity,
    mirror: Option<MirrorCounters>,
) -> Response<RespBody> {
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
            "mirror": mirror.as_ref().map(mirror_info),
        }),
    )
}

/// The mirror role and its upstream traffic counters, for operators (and
/// tests that must show a cached pull asks the upstream nothing). The
/// registry reads them from its mirror and passes them in.
#[derive(Debug, Clone)]
pub struct MirrorCounters {
    /// The upstream, as configured.
    pub upstream: String,
    /// How long a mirrored tag is served before it is revalidated.
    pub ttl: std::time::Duration,
    /// Whether writes are refused.
    pub read_only: bool,
    /// Requests sent to the upstream.
    pub upstream_requests: u64,
    /// Bytes received from the upstream.
    pub upstream_bytes: u64,
    /// Reads answered from the store without asking the upstream.
    pub hits: u64,
    /// Cached tags served because the upstream could not be reached.
    pub stale_served: u64,
}

fn mirror_info(m: &MirrorCounters) -> serde_json::Value {
    json!({
        "upstream": m.upstream,
        "ttl_seconds": m.ttl.as_secs(),
        "read_only": m.read_only,
        "upstream_requests": m.upstream_requests,
        "upstream_bytes": m.upstream_bytes,
        "hits": m.hits,
        "stale_served": m.stale_served,
    })
}
