//! V2 routing: path → [`V2Route`], parsed once, every name, tag, digest and
//! upload id validated before any handler (or path) sees it
//! (`v2-compat.md` §1.1). Names contain slashes, so the path is split at the
//! route keyword nearest the end (`/tags/list`, `/manifests/<ref>`,
//! `/blobs/uploads/[<uuid>]`, `/blobs/<digest>`), never by a fixed depth.

use crate::names::UploadId;
use crate::names::{Digest, RepoName, Tag};

use super::errors::{ErrorCode, V2Error};

/// A repository as the client spelled it (for `Location` and `tags/list`)
/// and as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// Validated store name (`foo` → `library/foo`).
    pub repo: RepoName,
    /// The name exactly as in the URL (already validated).
    pub raw: String,
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `manifests/<tag>`
    Tag(Tag),
    /// `manifests/<digest>`
    Digest(Digest),
}

/// A V2 route with validated parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(Name),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(Name, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(Name, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(Name),
    /// `/v2/<name>/blobs/uploads/<uuid>`
    Upload(Name, UploadId),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(Name, Digest),
}

/// Parses a request path. `None` when the path is not under `/v2`.
pub fn parse_v2(path: &str) -> Option<Result<V2Route, V2Error>> {
    let rest = match path {
        "/v2" | "/v2/" => return Some(Ok(V2Route::Base)),
        p => p.strip_prefix("/v2/")?,
    };
    Some(parse_rest(rest))
}

fn name(raw: &str) -> Result<Name, V2Error> {
    let repo = RepoName::parse(raw).map_err(|e| {
        V2Error::new(ErrorCode::NameInvalid, e.to_string())
            .detail(serde_json::json!({ "name": raw }))
    })?;
    if raw.ends_with('/') {
        return Err(V2Error::new(
            ErrorCode::NameInvalid,
            "invalid repository name",
        ));
    }
    Ok(Name {
        repo,
        raw: raw.to_string(),
    })
}

fn digest(s: &str) -> Result<Digest, V2Error> {
    Digest::parse(s).map_err(|e| V2Error::new(ErrorCode::DigestInvalid, e.to_string()))
}

fn parse_rest(rest: &str) -> Result<V2Route, V2Error> {
    if rest == "_catalog" {
        return Ok(V2Route::Catalog);
    }
    let unknown = || V2Error::new(ErrorCode::RouteUnknown, "no such V2 endpoint");
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let head = |k: usize| segs[..n - k].join("/");
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Ok(V2Route::Tags(name(&head(2))?));
    }
    if n >= 3 && segs[n - 2] == "manifests" {
        let name = name(&head(2))?;
        let r = segs[n - 1];
        let reference = if r.contains(':') {
            Reference::Digest(digest(r)?)
        } else {
            Reference::Tag(
                Tag::parse(r).map_err(|e| V2Error::new(ErrorCode::TagInvalid, e.to_string()))?,
            )
        };
        return Ok(V2Route::Manifest(name, reference));
    }
    if n >= 3 && segs[n - 2] == "referrers" {
        return Ok(V2Route::Referrers(name(&head(2))?, digest(segs[n - 1])?));
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let name = name(&head(3))?;
        if segs[n - 1].is_empty() {
            return Ok(V2Route::UploadStart(name));
        }
        let id = UploadId::parse(segs[n - 1])
            .ok_or_else(|| V2Error::new(ErrorCode::BlobUploadUnknown, "upload session unknown"))?;
        return Ok(V2Route::Upload(name, id));
    }
    if n >= 3 && segs[n - 2] == "blobs" {
        if segs[n - 1] == "uploads" {
            return Ok(V2Route::UploadStart(name(&head(2))?));
        }
        return Ok(V2Route::Blob(name(&head(2))?, digest(segs[n - 1])?));
    }
    Err(unknown())
}

/// Decodes `%XX` escapes and `+` in a query component (invalid escapes
/// are kept as written); the catalog's forms use it too.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of a query parameter, percent-decoded.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Every value of a repeated query parameter (`?tag=a&tag=b`), decoded.
pub fn query_params(query: Option<&str>, key: &str) -> Vec<String> {
    let Some(query) = query else {
        return vec![];
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> V2Route {
        parse_v2(p).unwrap().unwrap()
    }

    fn err(p: &str) -> ErrorCode {
        parse_v2(p).unwrap().unwrap_err().code
    }

    #[test]
    fn route_table() {
        let d = Digest::of_bytes(b"x");
        let id = UploadId::new();
        assert_eq!(ok("/v2/"), V2Route::Base);
        assert_eq!(ok("/v2"), V2Route::Base);
        assert_eq!(ok("/v2/_catalog"), V2Route::Catalog);
        assert!(parse_v2("/v1/_ping").is_none());
        let n = |raw: &str| Name {
            repo: RepoName::parse(raw).unwrap(),
            raw: raw.to_string(),
        };
        assert_eq!(ok("/v2/foo/tags/list"), V2Route::Tags(n("foo")));
        assert_eq!(
            ok("/v2/a/b/c/manifests/v1.0"),
            V2Route::Manifest(n("a/b/c"), Reference::Tag(Tag::parse("v1.0").unwrap()))
        );
        assert_eq!(
            ok(&format!("/v2/team/app/manifests/{d}")),
            V2Route::Manifest(n("team/app"), Reference::Digest(d.clone()))
        );
        // A repository may itself be called "manifests" or "blobs".
        assert_eq!(
            ok("/v2/x/manifests/manifests/latest"),
            V2Route::Manifest(
                n("x/manifests"),
                Reference::Tag(Tag::parse("latest").unwrap())
            )
        );
        assert_eq!(
            ok(&format!("/v2/blobs/blobs/{d}")),
            V2Route::Blob(n("blobs"), d.clone())
        );
        assert_eq!(ok("/v2/foo/blobs/uploads/"), V2Route::UploadStart(n("foo")));
        assert_eq!(ok("/v2/foo/blobs/uploads"), V2Route::UploadStart(n("foo")));
        assert_eq!(
            ok(&format!("/v2/ns/foo/blobs/uploads/{}", id.as_str())),
            V2Route::Upload(n("ns/foo"), id.clone())
        );
        assert_eq!(
            ok(&format!("/v2/ns/foo/referrers/{d}")),
            V2Route::Referrers(n("ns/foo"), d.clone())
        );
        // A repository called "referrers" still has manifests.
        assert_eq!(
            ok("/v2/ns/referrers/manifests/1"),
            V2Route::Manifest(n("ns/referrers"), Reference::Tag(Tag::parse("1").unwrap()))
        );
        assert_eq!(
            query_params(Some("tag=a&n=1&tag=b%2Ec&tag"), "tag"),
            vec!["a", "b.c", ""]
        );
        assert!(query_params(None, "tag").is_empty());
    }

    #[test]
    fn invalid_input_is_refused_with_its_code() {
        assert_eq!(err("/v2/Foo/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("/v2/../x/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("/v2/a//b/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("/v2/foo/manifests/-bad"), ErrorCode::TagInvalid);
        assert_eq!(
            err("/v2/foo/manifests/sha256:abc"),
            ErrorCode::DigestInvalid
        );
        assert_eq!(
            err("/v2/foo/manifests/sha512:abc"),
            ErrorCode::DigestInvalid
        );
        assert_eq!(err("/v2/foo/blobs/sha256:ZZ"), ErrorCode::DigestInvalid);
        assert_eq!(err("/v2/foo/referrers/latest"), ErrorCode::DigestInvalid);
        assert_eq!(
            err("/v2/foo/blobs/uploads/../../etc"),
            ErrorCode::RouteUnknown
        );
        assert_eq!(err("/v2/../blobs/uploads/"), ErrorCode::NameInvalid);
        assert_eq!(
            err("/v2/foo/blobs/uploads/not-a-uuid"),
            ErrorCode::BlobUploadUnknown
        );
        assert_eq!(err("/v2/foo"), ErrorCode::RouteUnknown);
        assert_eq!(err("/v2/foo/referrers/x"), ErrorCode::DigestInvalid);
    }

    #[test]
    fn queries() {
        let q = Some("mount=sha256%3Aab&from=library%2Ffoo&n=");
        assert_eq!(query_param(q, "mount").as_deref(), Some("sha256:ab"));
        assert_eq!(query_param(q, "from").as_deref(), Some("library/foo"));
        assert_eq!(query_param(q, "n").as_deref(), Some(""));
        assert_eq!(query_param(q, "digest"), None);
        assert_eq!(query_param(None, "digest"), None);
        assert_eq!(query_param(Some("d=%zz%4"), "d").as_deref(), Some("%zz%4"));
    }
}
