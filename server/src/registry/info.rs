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
        }),
    )
}
