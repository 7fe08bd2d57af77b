//! Listings (`v2-compat.md` §1.7): `GET /v2/<name>/tags/list` (V1 and V2 tags
//! together; 404 `NAME_UNKNOWN` for an unknown repository) and
//! `GET /v2/_catalog` (V1 repositories plus V2-only ones), both sorted, with
//! `n`/`last` paging and a `Link: <...>; rel="next"` header when more remain.
//! On a pull-through mirror the tag list includes the upstream's tags.

use http::request::Parts;
use http::StatusCode;
use serde_json::json;

use super::errors::{ErrorCode, OrV2, V2Error};
use super::routes::{query_param, Name};
use super::V2Result;
use crate::registry::{blocking, response, Identity, Registry};
use crate::store::StoreError;

/// Applies `n`/`last` to a sorted list; returns the page and the `Link` (if more remain).
pub fn page(
    items: Vec<String>,
    req: &Parts,
    base: &str,
) -> Result<(Vec<String>, Option<String>), Vec<V2Error>> {
    let q = req.uri.query();
    let n = match query_param(q, "n").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            vec![
                V2Error::new(ErrorCode::Unsupported, format!("invalid n={s}"))
                    .detail(json!({ "n": s })),
            ]
        })?),
    };
    let last = query_param(q, "last").filter(|s| !s.is_empty());
    let mut rest: Vec<String> = match &last {
        Some(l) => items.into_iter().filter(|i| i > l).collect(),
        None => items,
    };
    let Some(n) = n else {
        return Ok((rest, None));
    };
    if rest.len() <= n {
        return Ok((rest, None));
    }
    rest.truncate(n);
    let link = rest
        .last()
        .map(|l| format!("<{base}?last={l}&n={n}>; rel=\"next\""));
    Ok((rest, link))
}

/// `GET /v2/<name>/tags/list`
pub async fn tags(reg: &Registry, name: &Name, req: &Parts) -> V2Result {
    let store = reg.store().clone();
    let repo = name.repo.clone();
    let upstream = match reg.mirror() {
        Some(m) => m.upstream_tags(&name.repo, &name.raw).await,
        None => Vec::new(),
    };
    let all = blocking(move || -> Result<Vec<String>, Vec<V2Error>> {
        let mut tags: Vec<String> = match store.list_tags(&repo) {
            Ok(t) => t.into_keys().collect(),
            Err(StoreError::NotFound(_)) => vec![],
            Err(e) => return Err(vec![e.into()]),
        };
        tags.extend(
            store
                .list_v2_tags(&repo)
                .v2()?
                .into_iter()
                .map(|t| t.to_string()),
        );
        tags.extend(upstream.iter().map(|t| t.to_string()));
        tags.sort();
        tags.dedup();
        Ok(tags)
    })
    .await?;
    if all.is_empty() {
        return Err(vec![V2Error::new(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .detail(json!({ "name": name.raw }))]);
    }
    let (tags, link) = page(all, req, &format!("/v2/{}/tags/list", name.raw))?;
    let mut r = response::json(StatusCode::OK, &json!({ "name": name.raw, "tags": tags }));
    if let Some(link) = link {
        response::set_header(r.headers_mut(), "link", &link);
    }
    Ok(r)
}

/// `GET /v2/_catalog`
pub async fn catalog(reg: &Registry, req: &Parts, who: &Identity) -> V2Result {
    let store = reg.store().clone();
    let policy = reg.access().policy();
    let subject = who.subject().map(str::to_string);
    let all = blocking(move || -> std::io::Result<Vec<String>> {
        let mut names: Vec<String> = store
            .list_repositories()?
            .into_iter()
            .chain(store.list_v2_repositories()?)
            .filter(|r| {
                policy.allows(
                    subject.as_deref(),
                    r.namespace(),
                    crate::access::Action::Read,
                )
            })
            .map(|r| r.full())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    })
    .await
    .v2()?;
    let (repos, link) = page(all, req, "/v2/_catalog")?;
    let mut r = response::json(StatusCode::OK, &json!({ "repositories": repos }));
    if let Some(link) = link {
        response::set_header(r.headers_mut(), "link", &link);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        http::Request::get(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn paging() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let (p, link) = page(items.clone(), &parts("/x"), "/x").unwrap();
        assert_eq!((p.len(), link), (4, None));
        let (p, link) = page(items.clone(), &parts("/x?n=2"), "/x").unwrap();
        assert_eq!(p, vec!["a", "b"]);
        assert_eq!(link.unwrap(), "</x?last=b&n=2>; rel=\"next\"");
        let (p, link) = page(items.clone(), &parts("/x?n=2&last=b"), "/x").unwrap();
        assert_eq!((p, link), (vec!["c".to_string(), "d".to_string()], None));
        let (p, _) = page(items.clone(), &parts("/x?n=0"), "/x").unwrap();
        assert!(p.is_empty());
        assert!(page(items, &parts("/x?n=x"), "/x").is_err());
    }
}
