//! `/_berth/repositories`, `/_berth/tags`, `/_berth/layers`,
//! `/_berth/audit`: what the catalog pages (`crate::catalog`) need and V2
//! cannot answer cheaply — a page of repository summaries, every tag of a
//! repository with its digest, size, created time and platforms, layers'
//! uncompressed sizes, and the audit entries of readable repositories — in
//! one round trip each, so a page over SSH never costs a request per row.
//!
//! Every answer is filtered with the same rules as the V2 routes: a
//! repository whose namespace the caller may not read is absent from lists
//! and answers 404 like one that does not exist; an audit entry is shown
//! only when its repository is readable. Reads only.

use std::collections::{BTreeMap, HashSet};
use std::time::UNIX_EPOCH;

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::response::{self, RespBody};
use super::v2::routes::query_param;
use super::{blocking, Identity, Registry};
use crate::access::{Action, Policy};
use crate::names::{Digest, RepoName, Tag};
use crate::store::media::{self, ManifestKind};
use crate::store::{Store, StoreError};

/// Largest page of repository summaries one request may ask for.
pub const MAX_PAGE: usize = 200;

/// Most audit entries one request may ask for.
pub const MAX_AUDIT: usize = 500;

/// Answers a browse request, or `None` when `path` is not one.
pub async fn handle(
    reg: &Registry,
    path: &str,
    method: &Method,
    query: Option<&str>,
    who: &Identity,
) -> Option<Response<RespBody>> {
    let which = match path.trim_end_matches('/') {
        "/_berth/repositories" => Which::Repositories,
        "/_berth/tags" => Which::Tags,
        "/_berth/layers" => Which::Layers,
        "/_berth/audit" => Which::Audit,
        _ => return None,
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(response::v1_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only endpoint",
        ));
    }
    let query = query.map(str::to_string);
    let store = reg.store().clone();
    let policy = reg.access().policy();
    let subject = who.subject().map(str::to_string);
    let audit = reg.audit_path().to_path_buf();
    let answer = blocking(move || {
        let q = |k: &str| query_param(query.as_deref(), k);
        let caller = Caller { policy, subject };
        match which {
            Which::Repositories => repositories(&store, &caller, &q),
            Which::Tags => tags(&store, &caller, &q),
            Which::Layers => layers(&store, &caller, &q),
            Which::Audit => audit_entries(&audit, &caller, &q),
        }
    })
    .await;
    Some(match answer {
        Ok(v) => response::no_cache(response::json(StatusCode::OK, &v)),
        Err(Refusal(status, message)) => response::v1_error(status, &message),
    })
}

enum Which {
    Repositories,
    Tags,
    Layers,
    Audit,
}

/// Why a browse request is answered with an error.
struct Refusal(StatusCode, String);

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Refusal {
        tracing::error!(error = %e, "browse request failed");
        Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        match e {
            StoreError::Io(e) => e.into(),
            other => Refusal(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

/// The caller's rules.
struct Caller {
    policy: std::sync::Arc<Policy>,
    subject: Option<String>,
}

impl Caller {
    fn may(&self, repo: &RepoName, action: Action) -> bool {
        self.policy
            .allows(self.subject.as_deref(), repo.namespace(), action)
    }
}

fn not_found() -> Refusal {
    Refusal(StatusCode::NOT_FOUND, "repository not found".to_string())
}

/// A readable, existing repository named by the `repository` parameter.
fn readable_repo(
    store: &Store,
    caller: &Caller,
    q: &dyn Fn(&str) -> Option<String>,
) -> Result<RepoName, Refusal> {
    let raw = q("repository").unwrap_or_default();
    let repo =
        RepoName::parse(&raw).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
    if !caller.may(&repo, Action::Read)
        || !(store.repo_exists(&repo) || store.v2_repo_exists(&repo))
    {
        return Err(not_found());
    }
    Ok(repo)
}

/// The `n` parameter: 50 when absent, at most `cap`.
fn page_size(q: &dyn Fn(&str) -> Option<String>, cap: usize) -> Result<usize, Refusal> {
    match q("n").filter(|s| !s.is_empty()) {
        None => Ok(50),
        Some(s) => Ok(s
            .parse::<usize>()
            .map_err(|_| Refusal(StatusCode::BAD_REQUEST, format!("invalid n={s}")))?
            .min(cap)),
    }
}

/// `GET /_berth/repositories?n=&last=&q=`: readable repositories holding a
/// tag, sorted by name, those whose name contains `q`, after `last`, at
/// most `n` (default 50, at most [`MAX_PAGE`]), each with its tag count,
/// total size of distinct blobs and last push time; `next` is the `last`
/// of the following page. Only the page's repositories are examined.
fn repositories(
    store: &Store,
    caller: &Caller,
    q: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, Refusal> {
    let n = page_size(q, MAX_PAGE)?;
    let filter = q("q").unwrap_or_default().to_ascii_lowercase();
    let last = q("last").unwrap_or_default();
    let mut names: Vec<RepoName> = store
        .list_repositories()?
        .into_iter()
        .chain(store.list_v2_repositories()?)
        .filter(|r| caller.may(r, Action::Read))
        .filter(|r| filter.is_empty() || r.full().contains(&filter))
        .collect();
    names.sort_by_key(RepoName::full);
    names.dedup();
    let matching = names.len();
    let mut page = Vec::new();
    let mut next = None;
    for repo in names.into_iter().filter(|r| r.full() > last) {
        if page.len() == n {
            next = page
                .last()
                .and_then(|v: &Value| v["name"].as_str().map(str::to_string));
            break;
        }
        let tags = all_tags(store, &repo)?;
        if tags.is_empty() {
            continue; // every tag deleted: nothing to show
        }
        let mut blobs = BTreeMap::new();
        let mut last_push = None;
        for tag in &tags {
            if let Some(facts) = tag_facts(store, &repo, tag)? {
                blobs.extend(facts.blobs);
                last_push = last_push.max(facts.pushed);
            }
        }
        page.push(json!({
            "name": repo.full(),
            "tags": tags.len(),
            "size": blobs.values().sum::<u64>(),
            "last_push": last_push,
        }));
    }
    Ok(json!({ "repositories": page, "next": next, "matching": matching }))
}

/// V1 and V2 tags of a repository, sorted, once each.
fn all_tags(store: &Store, repo: &RepoName) -> Result<Vec<Tag>, Refusal> {
    let mut tags: Vec<Tag> = match store.list_tags(repo) {
        Ok(t) => t.into_keys().filter_map(|t| Tag::parse(&t).ok()).collect(),
        Err(StoreError::NotFound(_)) => vec![],
        Err(e) => return Err(e.into()),
    };
    tags.extend(store.list_v2_tags(repo)?);
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// What the pages show of one tag.
struct TagFacts {
    json: Value,
    /// Distinct blobs (manifests, configs, layers) and their sizes.
    blobs: BTreeMap<String, u64>,
    /// Unix time of the tag's last write.
    pushed: Option<u64>,
}

/// Modification time of a file in Unix seconds.
fn mtime(path: &std::path::Path) -> Option<u64> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    m.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Resolves a tag as a V2 read would (a V1-only tag gets its generated
/// manifest) and describes it; `None` for a tag that vanished meanwhile.
fn tag_facts(store: &Store, repo: &RepoName, tag: &Tag) -> Result<Option<TagFacts>, Refusal> {
    let v2 = store.v2_tag(repo, tag)?.is_some();
    let digest = match super::v2::manifests::resolve_tag(store, repo, tag) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(errors) => {
            let message = errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            return Ok(Some(TagFacts {
                json: json!({ "tag": tag.as_str(), "origin": "V1", "error": message }),
                blobs: BTreeMap::new(),
                pushed: mtime(&store.paths().tag(repo, tag)),
            }));
        }
    };
    let pushed = if v2 {
        mtime(&store.paths().v2_tag(repo, tag))
    } else {
        mtime(&store.paths().tag(repo, tag))
    };
    let mut blobs = BTreeMap::new();
    let described = describe_manifest(store, repo, &digest, &mut blobs, 0)?;
    let mut json = described.unwrap_or_else(|| json!({ "digest": digest.as_str() }));
    json["tag"] = json!(tag.as_str());
    json["origin"] = json!(if v2 { "V2" } else { "V1" });
    json["pushed"] = json!(pushed);
    Ok(Some(TagFacts {
        json,
        blobs,
        pushed,
    }))
}

/// Digest, media type, total size, created time and platforms of a
/// manifest (an index: of each child), adding its config and layer blobs
/// to `blobs` (the size of an image is what a pull downloads besides
/// manifests).
///
/// `digest` is what a tag of `repo` names. What the manifest names is
/// followed only as a manifest PUT to `repo` checked it: an index's
/// children (only those linked in `repo`), an image's config and layers.
/// Reading an image manifest's stray `manifests` list, or a child found
/// elsewhere in the store, would tell a writer of `repo` the size and age
/// of any manifest whose digest it guesses.
fn describe_manifest(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
    blobs: &mut BTreeMap<String, u64>,
    depth: usize,
) -> Result<Option<Value>, Refusal> {
    let found = if depth == 0 {
        store.manifest(digest)?
    } else {
        store.manifest_in_repo(repo, digest)?
    };
    let Some((media_type, bytes)) = found else {
        return Ok(None);
    };
    let Ok(manifest) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(Some(
            json!({ "digest": digest.as_str(), "media_type": media_type }),
        ));
    };
    let children = match media::manifest_kind(&media_type) {
        Some(ManifestKind::Index) => manifest["manifests"].as_array(),
        _ => None,
    };
    if let Some(children) = children {
        let mut platforms = Vec::new();
        let mut total = 0u64;
        for child in children.iter().take(64) {
            let Some(cd) = child["digest"].as_str().and_then(|d| Digest::parse(d).ok()) else {
                continue;
            };
            let mut own = BTreeMap::new();
            let described = if depth < 2 {
                describe_manifest(store, repo, &cd, &mut own, depth + 1)?
            } else {
                None
            };
            let size: u64 = own.values().sum();
            total += size;
            blobs.extend(own);
            let p = &child["platform"];
            platforms.push(json!({
                "os": p["os"], "architecture": p["architecture"], "variant": p["variant"],
                "digest": cd.as_str(), "size": size,
                "created": described.as_ref().map(|d| d["created"].clone()),
                "artifact_type": child["artifactType"],
            }));
        }
        return Ok(Some(json!({
            "digest": digest.as_str(), "media_type": media_type, "index": true,
            "size": total, "platforms": platforms,
        })));
    }
    let mut size = 0u64;
    let config = &manifest["config"];
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    for d in std::iter::once(config).chain(layers.iter()) {
        if let (Some(dg), Some(sz)) = (d["digest"].as_str(), d["size"].as_u64()) {
            size += sz;
            blobs.insert(dg.to_string(), sz);
        }
    }
    let mut created = Value::Null;
    let mut platform = Value::Null;
    if let Some(cd) = config["digest"]
        .as_str()
        .and_then(|d| Digest::parse(d).ok())
    {
        // Only a config linked in `repo`: on a mirror the pool holds what
        // anyone pulled through any repository, and reading it from there
        // would tell this repository's readers what others pulled.
        let small = config["size"].as_u64().is_some_and(|s| s <= 4 << 20);
        if small && store.blob_in_repo(repo, &cd)? {
            if let Ok(Some(raw)) = crate::store::read_optional(&store.paths().blob(&cd)) {
                if let Ok(c) = serde_json::from_slice::<Value>(&raw) {
                    created = c["created"].clone();
                    if c.get("architecture").is_some() {
                        platform = json!({
                            "os": c["os"], "architecture": c["architecture"], "variant": c["variant"],
                            "digest": digest.as_str(), "size": size, "created": created,
                        });
                    }
                }
            }
        }
    }
    Ok(Some(json!({
        "digest": digest.as_str(), "media_type": media_type, "index": false,
        "size": size, "created": created,
        "platforms": if platform.is_null() { vec![] } else { vec![platform] },
        "artifact_type": manifest["artifactType"].as_str().or(config["mediaType"].as_str()),
    })))
}

/// `GET /_berth/tags?repository=R`: every tag of a readable repository
/// with its facts, and whether the caller may delete there.
fn tags(
    store: &Store,
    caller: &Caller,
    q: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, Refusal> {
    let repo = readable_repo(store, caller, q)?;
    let mut out = Vec::new();
    let mut blobs = BTreeMap::new();
    for tag in all_tags(store, &repo)? {
        if let Some(facts) = tag_facts(store, &repo, &tag)? {
            blobs.extend(facts.blobs);
            out.push(facts.json);
        }
    }
    Ok(json!({
        "repository": repo.full(),
        "tags": out,
        "size": blobs.values().sum::<u64>(),
        "delete": caller.may(&repo, Action::Delete),
    }))
}

/// `GET /_berth/layers?repository=R&digests=D1,D2,...`: each blob's size
/// and uncompressed size, for blobs readable in the repository (others
/// answer `null`). At most 256 digests.
fn layers(
    store: &Store,
    caller: &Caller,
    q: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, Refusal> {
    let repo = readable_repo(store, caller, q)?;
    let list = q("digests").unwrap_or_default();
    let mut seen = HashSet::new();
    let mut out = serde_json::Map::new();
    for raw in list.split(',').filter(|s| !s.is_empty()).take(256) {
        let digest =
            Digest::parse(raw).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
        if !seen.insert(digest.to_string()) {
            continue;
        }
        let facts = if store.blob_in_repo(&repo, &digest)? {
            json!({
                "size": store.blob_size(&digest)?,
                "uncompressed": uncompressed_size(store, &digest)?,
            })
        } else {
            Value::Null
        };
        out.insert(digest.to_string(), facts);
    }
    Ok(json!({ "repository": repo.full(), "layers": out }))
}

/// `GET /_berth/audit?repository=R&n=N&ops=a,b`: the newest `n` (default
/// 50, at most [`MAX_AUDIT`]) audit entries, newest first, of repositories
/// the caller may read (of `R` only, when given; of operations `ops` only,
/// when given). Entries naming no
/// repository are never shown. Read from the end of the log backwards
/// (`audit::newest`): the cost follows the entries shown.
fn audit_entries(
    path: &std::path::Path,
    caller: &Caller,
    q: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, Refusal> {
    let n = page_size(q, MAX_AUDIT)?;
    let only = match q("repository").filter(|s| !s.is_empty()) {
        Some(r) => Some(
            RepoName::parse(&r)
                .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?
                .full(),
        ),
        None => None,
    };
    let ops = q("ops").unwrap_or_default();
    let ops: Vec<&str> = ops.split(',').filter(|o| !o.is_empty()).collect();
    let entries = crate::audit::newest(path, n, |entry| {
        let Some(repo) = entry["repository"].as_str() else {
            return false;
        };
        if !ops.is_empty() && !ops.iter().any(|o| entry["op"].as_str() == Some(o)) {
            return false;
        }
        if only.as_deref().is_some_and(|o| o != repo) {
            return false;
        }
        RepoName::parse(repo).is_ok_and(|r| caller.may(&r, Action::Read))
    })?;
    let shown: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({
                "time": e["time"], "unix": e["unix"], "user": e["user"], "op": e["op"],
                "repository": e["repository"], "tag": e["tag"], "digest": e["digest"],
                "image": e["image"],
            })
        })
        .collect();
    Ok(json!({ "entries": shown }))
}

/// A layer's uncompressed size from its recorded facts
/// (`store::layer_facts`, measured once), `None` for a blob that is no
/// layer or does not decode.
fn uncompressed_size(store: &Store, digest: &Digest) -> Result<Option<u64>, Refusal> {
    use crate::store::layer_facts::FactsError;
    match store.ensure_layer_facts(digest) {
        Ok(facts) => Ok(facts.map(|f| f.uncompressed_size)),
        Err(FactsError::Io(e)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(blob = %digest, error = %e, "layer size unknown");
            Ok(None)
        }
    }
}
