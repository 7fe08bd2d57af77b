//! `GET /v2/<name>/referrers/<digest>` (distribution-spec v1.1, "Listing
//! Referrers"): always 200 with an image index
//! (`application/vnd.oci.image.index.v1+json`) whose `manifests` are the
//! descriptors of the manifests pushed into this repository with that
//! `subject` (`store::referrers`), empty when there are none — the subject
//! itself need not exist, and an unknown repository answers the same empty
//! index (after the read check), so the answer tells nothing about other
//! namespaces. `?artifactType=` filters and is acknowledged with
//! `OCI-Filters-Applied: artifactType`. Long lists come in pages of
//! [`PAGE`] (or `?n=`, at most [`PAGE`]) and at most [`PAGE_BYTES`], with a
//! `Link: <...>; rel="next"` that continues after the last digest listed.

use berth_transport::wire::OCI_FILTERS_APPLIED_HEADER;
use http::request::Parts;
use http::StatusCode;
use serde_json::json;

use super::errors::{ErrorCode, OrV2, V2Error};
use super::routes::{query_param, Name};
use super::V2Result;
use crate::names::Digest;
use crate::registry::{blocking, response, Registry};
use crate::store::media;
use crate::store::referrers::ReferrersPage;

/// Largest page of descriptors in one answer.
pub const PAGE: usize = 1000;

/// The filter and page a request asks for.
struct Query {
    artifact_type: Option<String>,
    n: usize,
    last: Option<Digest>,
}

fn parse_query(req: &Parts) -> Result<Query, Vec<V2Error>> {
    let q = req.uri.query();
    let bad = |what: &str, v: &str| {
        vec![V2Error::new(
            ErrorCode::Unsupported,
            format!("invalid {what}={v}"),
        )]
    };
    let n = match query_param(q, "n").filter(|s| !s.is_empty()) {
        None => PAGE,
        Some(s) => s.parse::<usize>().map_err(|_| bad("n", &s))?.min(PAGE),
    };
    let last = match query_param(q, "last").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(Digest::parse(&s).map_err(|_| bad("last", &s))?),
    };
    Ok(Query {
        artifact_type: query_param(q, "artifactType").filter(|s| !s.is_empty()),
        n,
        last,
    })
}

/// Percent-encodes a query value for the `Link` header.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Most bytes of descriptors in one page past its first entry (annotations
/// are copied from manifests of up to 4 MiB each).
pub const PAGE_BYTES: usize = 4 << 20;

/// `GET|HEAD referrers/<digest>`
pub async fn list(reg: &Registry, name: &Name, subject: &Digest, req: &Parts) -> V2Result {
    let query = parse_query(req)?;
    let store = reg.store().clone();
    let repo = name.repo.clone();
    let s = subject.clone();
    let (artifact_type, last, n) = (query.artifact_type.clone(), query.last.clone(), query.n);
    let (page, more) = blocking(move || {
        store
            .referrers_page(
                &repo,
                &s,
                &ReferrersPage {
                    after: last.as_ref(),
                    artifact_type: artifact_type.as_deref(),
                    max_entries: n,
                    max_bytes: PAGE_BYTES,
                },
            )
            .v2()
    })
    .await?;
    let link = match page.last() {
        Some(l) if more => {
            let mut url = format!(
                "/v2/{}/referrers/{subject}?n={}&last={}",
                name.raw,
                query.n,
                encode(l.digest.as_str())
            );
            if let Some(t) = &query.artifact_type {
                url.push_str(&format!("&artifactType={}", encode(t)));
            }
            Some(format!("<{url}>; rel=\"next\""))
        }
        _ => None,
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": page,
    });
    let mut r = response::json(StatusCode::OK, &index);
    let h = r.headers_mut();
    response::set_header(h, http::header::CONTENT_TYPE.as_str(), media::OCI_INDEX);
    if query.artifact_type.is_some() {
        response::set_header(h, OCI_FILTERS_APPLIED_HEADER, "artifactType");
    }
    if let Some(link) = link {
        response::set_header(h, http::header::LINK.as_str(), &link);
    }
    Ok(r)
}
