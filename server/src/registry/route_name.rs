//! The name of the route a request path takes, for metrics labels: one of a
//! fixed set, never the path itself, so repository names, tags and digests
//! stay out of labels and the number of series stays bounded.

use super::v1::routes::{parse_v1, V1Route};
use super::v2::routes::{parse_v2, Reference, V2Route};

/// The route `path` takes (`v2_manifest_tag`, `v1_image_layer`...);
/// `v1_invalid`/`v2_invalid` for a malformed name or id under a known
/// prefix, `unknown` for anything else.
pub fn route_name(path: &str) -> &'static str {
    if path == "/_berth/info" || path == "/_berth/info/" {
        return "berth_info";
    }
    if let Some(route) = parse_v1(path) {
        return match route {
            Ok(route) => v1_name(&route),
            Err(_) => "v1_invalid",
        };
    }
    if let Some(route) = parse_v2(path) {
        return match route {
            Ok(route) => v2_name(&route),
            Err(_) => "v2_invalid",
        };
    }
    "unknown"
}

fn v1_name(route: &V1Route) -> &'static str {
    match route {
        V1Route::Root => "root",
        V1Route::Ping => "v1_ping",
        V1Route::ImageJson(_) => "v1_image_json",
        V1Route::ImageLayer(_) => "v1_image_layer",
        V1Route::ImageAncestry(_) => "v1_image_ancestry",
        V1Route::ImageChecksum(_) => "v1_image_checksum",
        V1Route::Tags(_) => "v1_tags",
        V1Route::Tag(..) => "v1_tag",
        V1Route::TagJson(..) => "v1_tag_json",
        V1Route::RepoJson(_) => "v1_repository_json",
        V1Route::Repository(_) => "v1_repository",
        V1Route::RepoImages(_) => "v1_repository_images",
        V1Route::RepoAuth(_) => "v1_repository_auth",
        V1Route::RepoProperties(_) => "v1_repository_properties",
        V1Route::Users => "v1_users",
        V1Route::User(_) => "v1_user",
        V1Route::Search => "v1_search",
    }
}

fn v2_name(route: &V2Route) -> &'static str {
    match route {
        V2Route::Base => "v2_base",
        V2Route::Catalog => "v2_catalog",
        V2Route::Tags(_) => "v2_tags",
        V2Route::Manifest(_, Reference::Tag(_)) => "v2_manifest_tag",
        V2Route::Manifest(_, Reference::Digest(_)) => "v2_manifest_digest",
        V2Route::Blob(..) => "v2_blob",
        V2Route::UploadStart(_) => "v2_upload_start",
        V2Route::Upload(..) => "v2_upload",
        V2Route::Referrers(..) => "v2_referrers",
    }
}

#[cfg(test)]
mod tests {
    use super::route_name;

    #[test]
    fn names_never_carry_the_path() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (path, name) in [
            ("/v2/", "v2_base"),
            ("/v2/secret/team/app/manifests/v1", "v2_manifest_tag"),
            (&format!("/v2/secret/app/blobs/{digest}"), "v2_blob"),
            ("/v2/secret/app/blobs/uploads/", "v2_upload_start"),
            (
                &format!("/v2/secret/app/referrers/{digest}"),
                "v2_referrers",
            ),
            ("/v1/repositories/secret/app/tags", "v1_tags"),
            ("/v1/_ping", "v1_ping"),
            ("/v2/UPPER/manifests/x", "v2_invalid"),
            ("/secret/anything", "unknown"),
            ("/_berth/info", "berth_info"),
        ] {
            assert_eq!(route_name(path), name, "{path}");
        }
    }
}
