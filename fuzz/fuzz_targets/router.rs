//! Fuzzes the request router and name validation: any path must either be
//! refused or route to names whose store paths stay under the root, and a
//! Range header must never panic or resolve outside the file.
#![no_main]

use std::path::{Component, Path};

use berth_server::registry::response::{parse_range, RangeRequest};
use berth_server::registry::v1::routes::{parse_v1, V1Route};
use berth_server::registry::v2::routes::{parse_v2, V2Route};
use berth_server::store::Paths;
use libfuzzer_sys::fuzz_target;

fn stays_inside(p: &Path) {
    assert!(p.starts_with("/root-of-store"), "{p:?} escaped the root");
    assert!(
        p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
        "{p:?} has a non-normal component"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let paths = Paths::new("/root-of-store");
    if let Some(Ok(route)) = parse_v1(text) {
        match route {
            V1Route::ImageJson(id) | V1Route::ImageLayer(id) | V1Route::ImageAncestry(id) | V1Route::ImageChecksum(id) => {
                stays_inside(&paths.image_json(&id))
            }
            V1Route::Tag(r, t) | V1Route::TagJson(r, t) => {
                stays_inside(&paths.tag(&r, &t));
                stays_inside(&paths.tag_json(&r, &t));
            }
            V1Route::Tags(r) | V1Route::RepoJson(r) | V1Route::Repository(r) | V1Route::RepoImages(r) | V1Route::RepoAuth(r) | V1Route::RepoProperties(r) => {
                stays_inside(&paths.repo_dir(&r));
                stays_inside(&paths.v2_repo_dir(&r));
            }
            _ => {}
        }
    }
    if let Some(Ok(route)) = parse_v2(text) {
        match route {
            V2Route::Tags(n) | V2Route::UploadStart(n) | V2Route::Manifest(n, _) => stays_inside(&paths.repo_dir(&n.repo)),
            V2Route::Blob(n, d) => {
                stays_inside(&paths.repo_dir(&n.repo));
                stays_inside(&paths.blob(&d));
            }
            _ => {}
        }
    }
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        let size = (data.len() as u64) * 7;
        match parse_range(Some(&v), size) {
            RangeRequest::Partial { start, end } => assert!(start <= end && end < size),
            RangeRequest::Full | RangeRequest::Unsatisfiable => {}
        }
    }
});
