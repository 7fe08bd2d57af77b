//! V1 routing: path → [`V1Route`], parsed once; the parse errors are
//! answered in one place, [`super::handle`] (as `v2::handle` does for V2).
//!
//! Repository names contain slashes, so V1 repository paths are split at the
//! keyword nearest the end (`.../tags/<t>/json`, `.../tags/<t>`, `.../tags`,
//! `.../images`, `.../json`, `.../auth`, `.../properties`); a path ending in
//! `/` names the repository itself (Docker's `PUT /v1/repositories/<r>/`).
//! Every name, tag and id is validated here, so handlers only see valid values.

use crate::names::{ImageId, NameError, RepoName, Tag};

/// A V1 route with its validated parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V1Route {
    /// `GET /` (reference answers a JSON string).
    Root,
    /// `GET /_ping`, `GET /v1/_ping`.
    Ping,
    /// `/v1/images/<id>/json`
    ImageJson(ImageId),
    /// `/v1/images/<id>/layer`
    ImageLayer(ImageId),
    /// `/v1/images/<id>/ancestry`
    ImageAncestry(ImageId),
    /// `/v1/images/<id>/checksum`
    ImageChecksum(ImageId),
    /// `/v1/repositories/<r>/tags`
    Tags(RepoName),
    /// `/v1/repositories/<r>/tags/<t>`
    Tag(RepoName, Tag),
    /// `/v1/repositories/<r>/tags/<t>/json`
    TagJson(RepoName, Tag),
    /// `/v1/repositories/<r>/json`
    RepoJson(RepoName),
    /// `/v1/repositories/<r>/` (index PUT, repository DELETE)
    Repository(RepoName),
    /// `/v1/repositories/<r>/images`
    RepoImages(RepoName),
    /// `/v1/repositories/<r>/auth`
    RepoAuth(RepoName),
    /// `/v1/repositories/<r>/properties`
    RepoProperties(RepoName),
    /// `/v1/users/` (login)
    Users,
    /// `/v1/users/<name>/`
    User(String),
    /// `/v1/search`
    Search,
}

/// Why a path could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route has this shape.
    #[error("not found: {0}")]
    NotFound(String),
    /// An image id in the path is invalid (V1 answers 404 "Invalid image ID").
    #[error("Invalid image ID")]
    InvalidImageId,
    /// A repository name or tag in the path is invalid.
    #[error("{0}")]
    InvalidName(#[from] NameError),
}

/// Parses a V1 (or ping/root) path. `None` means the path is not V1 at all.
pub fn parse_v1(path: &str) -> Option<Result<V1Route, RouteError>> {
    if path == "/" {
        return Some(Ok(V1Route::Root));
    }
    if path == "/_ping" || path == "/_ping/" {
        return Some(Ok(V1Route::Ping));
    }
    let rest = path.strip_prefix("/v1/")?;
    Some(parse_v1_rest(rest, path))
}

fn parse_v1_rest(rest: &str, full: &str) -> Result<V1Route, RouteError> {
    let not_found = || RouteError::NotFound(full.to_string());
    if rest == "_ping" || rest == "_ping/" {
        return Ok(V1Route::Ping);
    }
    if rest == "search" || rest == "search/" {
        return Ok(V1Route::Search);
    }
    if rest == "users" || rest == "users/" {
        return Ok(V1Route::Users);
    }
    if let Some(user) = rest.strip_prefix("users/") {
        let user = user.strip_suffix('/').unwrap_or(user);
        if user.is_empty() || user.contains('/') || user.len() > 64 {
            return Err(not_found());
        }
        return Ok(V1Route::User(user.to_string()));
    }
    if let Some(img) = rest.strip_prefix("images/") {
        let (id, what) = img.split_once('/').ok_or_else(not_found)?;
        let what = what.strip_suffix('/').unwrap_or(what);
        let make: fn(ImageId) -> V1Route = match what {
            "json" => V1Route::ImageJson,
            "layer" => V1Route::ImageLayer,
            "ancestry" => V1Route::ImageAncestry,
            "checksum" => V1Route::ImageChecksum,
            _ => return Err(not_found()),
        };
        let id = ImageId::parse(id).map_err(|_| RouteError::InvalidImageId)?;
        return Ok(make(id));
    }
    if let Some(repo_path) = rest.strip_prefix("repositories/") {
        return parse_repository(repo_path).ok_or_else(not_found)?;
    }
    Err(not_found())
}

/// Parses what follows `/v1/repositories/`.
fn parse_repository(p: &str) -> Option<Result<V1Route, RouteError>> {
    if let Some(name) = p.strip_suffix('/') {
        // `<r>/tags/` is the reference's alias of the repository DELETE.
        if let Some(name) = name.strip_suffix("/tags") {
            return Some(repo(name).map(V1Route::Repository));
        }
        return Some(repo(name).map(V1Route::Repository));
    }
    let segs: Vec<&str> = p.split('/').collect();
    let n = segs.len();
    if n >= 4 && segs[n - 3] == "tags" && segs[n - 1] == "json" {
        let name = segs[..n - 3].join("/");
        return Some(repo_tag(&name, segs[n - 2]).map(|(r, t)| V1Route::TagJson(r, t)));
    }
    if n >= 3 && segs[n - 2] == "tags" {
        let name = segs[..n - 2].join("/");
        return Some(repo_tag(&name, segs[n - 1]).map(|(r, t)| V1Route::Tag(r, t)));
    }
    if n >= 2 {
        let name = segs[..n - 1].join("/");
        let make: Option<fn(RepoName) -> V1Route> = match segs[n - 1] {
            "tags" => Some(V1Route::Tags),
            "images" => Some(V1Route::RepoImages),
            "json" => Some(V1Route::RepoJson),
            "auth" => Some(V1Route::RepoAuth),
            "properties" => Some(V1Route::RepoProperties),
            _ => None,
        };
        if let Some(make) = make {
            return Some(repo(&name).map(make));
        }
    }
    // No keyword: the repository itself without the trailing slash
    // (docker-registry-client's DELETE /v1/repositories/<ns>/<repo>).
    Some(repo(p).map(V1Route::Repository))
}

fn repo(name: &str) -> Result<RepoName, RouteError> {
    Ok(RepoName::parse(name)?)
}

fn repo_tag(name: &str, tag: &str) -> Result<(RepoName, Tag), RouteError> {
    Ok((RepoName::parse(name)?, Tag::parse(tag)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str) -> Result<V1Route, RouteError> {
        parse_v1(p).expect("a v1 path")
    }

    #[test]
    fn routes() {
        let id = "a".repeat(64);
        let foo = RepoName::parse("foo").unwrap();
        let team = RepoName::parse("team/app").unwrap();
        let latest = Tag::parse("latest").unwrap();
        assert_eq!(r("/v1/_ping"), Ok(V1Route::Ping));
        assert_eq!(r("/_ping"), Ok(V1Route::Ping));
        assert_eq!(
            r(&format!("/v1/images/{id}/json")),
            Ok(V1Route::ImageJson(ImageId::parse(&id).unwrap()))
        );
        assert_eq!(
            r(&format!("/v1/images/{id}/layer")),
            Ok(V1Route::ImageLayer(ImageId::parse(&id).unwrap()))
        );
        assert_eq!(r("/v1/images/..%2f/json"), Err(RouteError::InvalidImageId));
        assert_eq!(
            r("/v1/repositories/foo/"),
            Ok(V1Route::Repository(foo.clone()))
        );
        assert_eq!(
            r("/v1/repositories/library/foo/tags"),
            Ok(V1Route::Tags(foo.clone()))
        );
        assert_eq!(
            r("/v1/repositories/team/app/tags/latest"),
            Ok(V1Route::Tag(team.clone(), latest.clone()))
        );
        assert_eq!(
            r("/v1/repositories/team/app/tags/latest/json"),
            Ok(V1Route::TagJson(team.clone(), latest))
        );
        assert_eq!(
            r("/v1/repositories/team/app/images"),
            Ok(V1Route::RepoImages(team.clone()))
        );
        assert_eq!(
            r("/v1/repositories/team/app"),
            Ok(V1Route::Repository(team.clone()))
        );
        assert_eq!(
            r("/v1/repositories/team/app/tags/"),
            Ok(V1Route::Repository(team))
        );
        assert_eq!(
            r("/v1/repositories/a/b/c/tags"),
            Ok(V1Route::Tags(RepoName::parse("a/b/c").unwrap()))
        );
        assert_eq!(r("/v1/search"), Ok(V1Route::Search));
        assert_eq!(r("/v1/users/"), Ok(V1Route::Users));
        assert!(parse_v1("/v2/").is_none());
        for bad in [
            "/v1/repositories/../etc/tags",
            "/v1/repositories/%2e%2e/x/tags",
            "/v1/repositories/foo/tags/..",
            "/v1/repositories/foo/tags/a%00",
            "/v1/repositories//tags",
            "/v1/images/xyz/json",
            "/v1/images/",
            "/v1/nothing",
        ] {
            assert!(r(bad).is_err(), "{bad}");
        }
    }
}
