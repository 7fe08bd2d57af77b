//! V1 authorization: the caller's rights checked for a route before its
//! handler runs, and who may read a V1 image (ids are global, issue 14).

use http::{Method, Response, StatusCode};

use super::super::response::{v1_error, RespBody};
use super::super::{blocking, Identity, Registry};
use super::errors::denied;
use super::routes::V1Route;
use crate::access::{Action, Denied};
use crate::names::{ImageId, RepoName};

/// Checks the caller's rights for a route before anything else happens.
/// Images carry no repository in V1 URLs: reading one needs a readable
/// repository whose tags reference it, or proof of possession
/// ([`image_readable`]); writing one needs write access somewhere (the tag
/// PUT then ties it to a repository, checked there).
pub(crate) async fn authorize(
    reg: &Registry,
    route: &V1Route,
    m: &Method,
    who: &Identity,
) -> Result<(), Response<RespBody>> {
    use V1Route::*;
    let access = reg.access();
    let get = m == Method::GET || m == Method::HEAD;
    let check =
        |repo: &RepoName, action| access.check(who, repo.namespace(), action).map_err(denied);
    match route {
        Root | Ping | Users | User(_) | Search => Ok(()),
        ImageJson(id) | ImageLayer(id) | ImageAncestry(id) if get => {
            require_image_readable(reg, who, id).await
        }
        ImageJson(_) | ImageLayer(_) | ImageAncestry(_) | ImageChecksum(_) => {
            if access.policy().writes_somewhere(who.subject()) {
                Ok(())
            } else {
                Err(denied(Denied {
                    reason: format!("user {} may not push images anywhere", who.user),
                    anonymous: who.is_anonymous(),
                }))
            }
        }
        Tags(r) | Tag(r, _) | TagJson(r, _) | RepoJson(r) | RepoImages(r) | RepoProperties(r)
            if get =>
        {
            check(r, Action::Read)
        }
        Tags(r) | Tag(r, _) | Repository(r) if m == Method::DELETE => check(r, Action::Delete),
        Tags(r)
        | Tag(r, _)
        | TagJson(r, _)
        | RepoJson(r)
        | Repository(r)
        | RepoImages(r)
        | RepoAuth(r)
        | RepoProperties(r) => check(r, Action::Write),
    }
}

/// Fails unless `who` may read image `id` (see [`image_readable`]). The
/// answer is the one a missing image gets: nothing about what exists leaks.
pub(crate) async fn require_image_readable(
    reg: &Registry,
    who: &Identity,
    id: &ImageId,
) -> Result<(), Response<RespBody>> {
    if image_readable(reg, who, id).await {
        Ok(())
    } else {
        Err(v1_error(StatusCode::NOT_FOUND, "Image not found"))
    }
}

/// Whether `who` may read V1 image `id` (issue 14): V1 ids are global, so
/// an image is readable through a repository the caller may read whose
/// tags reference it (the tagged image or an ancestor, which includes the
/// V1 view of a V2 push), or when the caller proved possession by
/// uploading its exact json and layer bytes (`store::possession`).
/// Announcing an id in an index list grants nothing. Without an access
/// file every key reads everything.
pub(crate) async fn image_readable(reg: &Registry, who: &Identity, id: &ImageId) -> bool {
    let access = reg.access();
    if !access.has_file() && !who.is_anonymous() {
        return true;
    }
    let policy = access.policy();
    let subject = who.subject().map(str::to_string);
    let store = reg.store().clone();
    let id = id.clone();
    blocking(move || {
        if subject.as_deref().is_some_and(|u| store.has_proven(&id, u)) {
            return true;
        }
        let repos = store.list_repositories().unwrap_or_default();
        repos
            .iter()
            .filter(|r| policy.allows(subject.as_deref(), r.namespace(), Action::Read))
            .any(|r| store.repository_references(r, &id))
    })
    .await
}
