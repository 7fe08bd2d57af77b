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
            // Traffic counters tell what others pulled (a fetch that moves
            // no upstream byte was cached): under an access file, or for
            // anonymous callers, they are the operators' (`/metrics` on the
            // admin listener), and callers see the role only.
            "mirror": mirror.as_ref().map(|m| {
                let traffic = !reg.access().has_file() && !who.is_anonymous();
                mirror_info(m, traffic)
            }),
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

/// The mirror's role, and its traffic counters when `traffic`.
fn mirror_info(m: &MirrorCounters, traffic: bool) -> serde_json::Value {
    let mut v = json!({
        "upstream": m.upstream,
        "ttl_seconds": m.ttl.as_secs(),
        "read_only": m.read_only,
    });
    if traffic {
        v["upstream_requests"] = m.upstream_requests.into();
        v["upstream_bytes"] = m.upstream_bytes.into();
        v["hits"] = m.hits.into();
        v["stale_served"] = m.stale_served.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AccessControl;
    use crate::registry::RegistryConfig;
    use crate::store::Store;
    use http_body_util::BodyExt;

    fn counters() -> MirrorCounters {
        MirrorCounters {
            upstream: "ssh://upstream.example".into(),
            ttl: std::time::Duration::from_secs(300),
            read_only: true,
            upstream_requests: 7,
            upstream_bytes: 12_345,
            hits: 3,
            stale_served: 1,
        }
    }

    async fn info(reg: &Registry, who: &Identity) -> serde_json::Value {
        let r = handle(reg, who, Some(counters()));
        let body = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    /// A mirror's traffic counters tell whoever reads them what others
    /// pulled: a blob fetch that leaves `upstream_bytes` unchanged was
    /// cached, i.e. someone pulled it before. Under an access file they
    /// are for operators (`/metrics` on the admin listener); callers see
    /// the role only. Before, every caller, anonymous included, saw them.
    #[tokio::test]
    async fn under_an_access_file_the_mirror_traffic_is_not_shown_to_callers() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("access.toml");
        std::fs::write(
            &rules,
            "[[rule]]\nnamespace = \"evil\"\nread = [\"@all\"]\n",
        )
        .unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let reg = Registry::with_access(
            store.clone(),
            RegistryConfig::default(),
            AccessControl::from_file(&rules).unwrap(),
            None,
        );
        for who in [Identity::local("mallory"), Identity::anonymous(None)] {
            let v = info(&reg, &who).await;
            assert_eq!(v["mirror"]["upstream"], "ssh://upstream.example", "{v}");
            for counter in [
                "upstream_requests",
                "upstream_bytes",
                "hits",
                "stale_served",
            ] {
                assert!(v["mirror"].get(counter).is_none(), "{counter} shown: {v}");
            }
        }
        // Without an access file every key may do everything: they see them.
        let open = Registry::with_access(
            store,
            RegistryConfig::default(),
            AccessControl::open(&[]),
            None,
        );
        let v = info(&open, &Identity::local("root")).await;
        assert_eq!(v["mirror"]["upstream_bytes"], 12_345, "{v}");
    }
}
