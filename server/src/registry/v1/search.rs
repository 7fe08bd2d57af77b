//! V1 search (`v1-protocol.md` §3.3): repository names the caller may
//! read, matched by substring.

#![allow(clippy::result_large_err)]

use http::request::Parts;
use http::StatusCode;
use serde_json::{json, Value};

use super::super::response::{self, no_cache};
use super::super::v2::routes::query_param;
use super::super::{blocking, Identity, Registry};
use super::errors::store_error;
use super::V1Result;
use crate::access::Action;
use crate::names::RepoName;

/// `GET /v1/search?q=<term>[&n=&page=]`: substring match over repository
/// names; without `n` every match is returned (docker-registry-client lists
/// namespaces this way).
pub(crate) async fn search(reg: &Registry, req: &Parts, who: &Identity) -> V1Result {
    let get = |k: &str| query_param(req.uri.query(), k);
    let q = get("q").unwrap_or_default();
    let n: Option<usize> = get("n")
        .and_then(|v| v.parse().ok())
        .map(|n: usize| n.clamp(1, 100));
    let page: usize = get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let store = reg.store().clone();
    let repos = blocking(move || store.list_repositories())
        .await
        .map_err(|e| store_error(e.into()))?;
    let needle = q.to_lowercase();
    let policy = reg.access().policy();
    let matches: Vec<String> = repos
        .iter()
        .filter(|r| policy.allows(who.subject(), r.namespace(), Action::Read))
        .map(RepoName::full)
        .filter(|name| name.contains(&needle))
        .collect();
    let total = matches.len();
    let page_size = n.unwrap_or(total.max(1));
    let results: Vec<Value> = matches
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .map(|name| {
            json!({"name": name, "description": "", "star_count": 0, "is_official": false,
                   "is_trusted": false, "is_automated": false})
        })
        .collect();
    let pages = total.div_ceil(page_size);
    Ok(no_cache(response::json(
        StatusCode::OK,
        &json!({"query": q, "num_results": total, "num_pages": pages,
                "page": page, "page_size": page_size, "results": results}),
    )))
}
