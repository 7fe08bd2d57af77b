//! The Registry V2 / OCI Distribution API (issue 3) against real clients:
//! skopeo and the Docker engine push and pull through `berth-server http`,
//! images cross between the V1 and V2 APIs, and bad input gets its V2 error
//! code without changing the store. Raw HTTP requests drive the V1 push
//! sequence and the error battery, each on a fresh connection.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use berth_tests::*;
use serde_json::{json, Value};

/// One request on a fresh connection; every `/v2` answer names the API version.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let r =
        fetch(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    if path.starts_with("/v2") {
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0"),
            "{method} {path}"
        );
    }
    r
}

fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "GET", path, &[], b"")
}

/// Pushes a blob with POST + one PATCH + closing PUT; returns its digest.
fn push_blob(addr: SocketAddr, repo: &str, data: &[u8]) -> String {
    try_v2_push_blob(&mut Fresh(addr), repo, data).unwrap_or_else(|e| panic!("{e}"))
}

// ---- test images ------------------------------------------------------------

fn skopeo(args: &[&str]) -> String {
    let out = run_ok(Command::new("skopeo").args(args));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn raw_digest(image: &str) -> String {
    let out =
        run_ok(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", image]));
    digest(&out.stdout)
}

// ---- V1 side ----------------------------------------------------------------

/// Reads a V1 image (json, layer) and checks its payload checksum against the
/// stored one; returns the layer bytes.
fn v1_image_checked(addr: SocketAddr, root: &Path, id: &str) -> Vec<u8> {
    let json = get(addr, &format!("/v1/images/{id}/json"));
    assert_eq!(json.status, 200, "{id}");
    let layer = get(addr, &format!("/v1/images/{id}/layer"));
    assert_eq!(layer.status, 200);
    let mut payload = json.body.clone();
    payload.push(b'\n');
    payload.extend_from_slice(&layer.body);
    let want = digest(&payload);
    // A projected image's checksum is computed at its first V1 read (the
    // json GET above) and recorded for the next ones.
    assert_eq!(
        json.header("x-docker-checksum-payload"),
        Some(want.as_str())
    );
    let stored: Vec<String> = serde_json::from_slice(
        &std::fs::read(root.join(format!("images/{id}/_checksum"))).unwrap(),
    )
    .unwrap();
    assert_eq!(stored, vec![want]);
    assert!(!root.join(format!("images/{id}/_inprogress")).exists());
    layer.body
}

/// Pushes a V1 image (json, layer, checksum) with plain requests.
fn v1_push_image(addr: SocketAddr, id: &str, parent: Option<&str>, layer: &[u8]) {
    let json = match parent {
        Some(p) => format!(
            r#"{{"id":"{id}","parent":"{p}","created":"2014-06-01T00:00:00Z","container_config":{{"Cmd":["/bin/sh","-c","echo {id}"]}},"os":"linux"}}"#
        ),
        None => format!(
            r##"{{"id":"{id}","created":"2014-06-01T00:00:00Z","container_config":{{"Cmd":["/bin/sh","-c","#(nop) ADD file"]}}}}"##
        ),
    };
    v1_put_image(&mut Fresh(addr), id, json.as_bytes(), layer).unwrap_or_else(|e| panic!("{e}"));
}

// ---- tests ------------------------------------------------------------------

#[test]
fn skopeo_push_pull_and_v1_view() {
    if !require_tool("skopeo", "skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let src = tmp.path().join("src");
    let l0 = make_tar(tmp.path(), "l0", &[("a.txt", b"hello\n".as_slice())]);
    let l1 = make_tar(tmp.path(), "l1", &[("b.bin", &random_bytes(300_000, 1))]);
    let (pushed, _) = write_oci_layout(&src, "v1", &[l0.clone(), l1], true);
    let server = HttpServer::start(&root);
    let addr = server.addr;
    let dest = format!("docker://{}/team/app:v1", server.host());
    let oci_src = format!("oci:{}:v1", src.display());

    skopeo(&["copy", "--dest-tls-verify=false", &oci_src, &dest]);
    assert_eq!(
        raw_digest(&dest),
        pushed,
        "inspect --raw returns the pushed bytes"
    );
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &oci_src,
        &format!("docker://{}/team/app:v2", server.host()),
    ]);
    let tags: Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/team/app", server.host()),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], json!(["v1", "v2"]));

    // Pull back, by tag and by digest.
    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:x", back.display()),
    ]);
    let by_digest = format!("docker://{}/team/app@{pushed}", server.host());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &by_digest,
        &format!("oci:{}:y", back.display()),
    ]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    for m in index["manifests"].as_array().unwrap() {
        assert_eq!(m["digest"], pushed.as_str());
    }

    // A re-push uploads no blob: every blob is reported present, no POST is sent.
    let out = run_ok(Command::new("skopeo").args([
        "--debug",
        "copy",
        "--dest-tls-verify=false",
        &oci_src,
        &dest,
    ]));
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("/v2/team/app/blobs/sha256:"),
        "the debug log shows requests:\n{log}"
    );
    assert!(
        !log.contains("blobs/uploads"),
        "re-push started an upload:\n{log}"
    );
    assert_eq!(raw_digest(&dest), pushed);

    // The V1 view: tag → top id, ancestry, json, layers with valid checksums.
    let tags = get(addr, "/v1/repositories/team/app/tags").json();
    let top = tags["v1"].as_str().unwrap().to_string();
    let ancestry: Vec<String> = get(addr, &format!("/v1/images/{top}/ancestry"))
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ancestry.len(), 3, "two layers + the empty CMD step");
    assert_eq!(ancestry[0], top);
    let root_layer = v1_image_checked(addr, &root, &ancestry[2]);
    assert_eq!(
        root_layer,
        gzip(tmp.path(), &l0),
        "the V1 layer is the pushed blob"
    );
    for id in &ancestry {
        v1_image_checked(addr, &root, id);
    }
    let top_json = get(addr, &format!("/v1/images/{top}/json")).json();
    assert_eq!(top_json["parent"], ancestry[1].as_str());
    assert_eq!(top_json["config"]["Cmd"], json!(["/bin/true"]));

    // Catalog with paging.
    let r = get(addr, "/v2/_catalog?n=10");
    assert_eq!(r.json()["repositories"], json!(["team/app"]));
}

#[test]
fn v1_push_is_pullable_with_a_stable_digest() {
    if !require_tool("skopeo", "skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let mut server = HttpServer::start(&root);
    let addr = server.addr;
    let a = "a".repeat(64);
    let b = "b".repeat(64);
    let layer_a = gzip(
        tmp.path(),
        &make_tar(tmp.path(), "va", &[("x", b"old v1 layer\n".as_slice())]),
    );
    let layer_b = gzip(
        tmp.path(),
        &make_tar(tmp.path(), "vb", &[("y", &random_bytes(50_000, 7))]),
    );
    v1_push_image(addr, &a, None, &layer_a);
    v1_push_image(addr, &b, Some(&a), &layer_b);
    let r = request(
        addr,
        "PUT",
        "/v1/repositories/legacy/img/tags/latest",
        &[],
        format!("\"{b}\"").as_bytes(),
    );
    assert_eq!(r.status, 200);

    let image = format!("docker://{}/legacy/img:latest", server.host());
    let first = raw_digest(&image);
    let out = tmp.path().join("out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &image,
        &format!("oci:{}:l", out.display()),
    ]);
    assert_eq!(raw_digest(&image), first);
    let r = get(addr, &format!("/v2/legacy/img/manifests/{first}"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    let m = r.json();
    assert_eq!(m["layers"][0]["digest"], digest(&layer_a));
    assert_eq!(m["layers"][1]["size"], layer_b.len());

    // Same digest after a restart.
    server.proc.kill();
    let server = HttpServer::start(&root);
    let image = format!("docker://{}/legacy/img:latest", server.host());
    assert_eq!(raw_digest(&image), first);

    // A V1 tag write takes the tag over: V2 now serves the new top.
    let addr = server.addr;
    let r = request(
        addr,
        "PUT",
        "/v1/repositories/legacy/img/tags/latest",
        &[],
        format!("\"{a}\"").as_bytes(),
    );
    assert_eq!(r.status, 200);
    let moved = raw_digest(&image);
    assert_ne!(moved, first);
    assert_eq!(raw_digest(&image), moved);

    if require_docker() {
        let reference = format!("{}/legacy/img:latest", server.host());
        let _ = Command::new("docker")
            .args(["rmi", "-f", &reference])
            .output();
        let out = run_ok(Command::new("docker").args(["pull", &reference]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&moved), "{text}");
        run_ok(Command::new("docker").args(["rmi", &reference]));
    }
}

#[test]
fn docker_push_pull_mount_and_v1_view() {
    if !require_docker() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let server = HttpServer::start(&root);
    let host = server.host();
    let tar = make_tar(tmp.path(), "d", &[("hello.txt", &random_bytes(10_000, 42))]);
    let tar_path = tmp.path().join("rootfs.tar");
    std::fs::write(&tar_path, &tar).unwrap();
    let first = format!("{host}/x:1");
    let second = format!("{host}/other/y:1");
    run_ok(
        Command::new("docker")
            .arg("import")
            .arg(&tar_path)
            .arg(&first),
    );
    let cleanup = |refs: &[&str]| {
        for r in refs {
            let _ = Command::new("docker").args(["rmi", "-f", r]).output();
        }
    };

    let out = run_ok(Command::new("docker").args(["push", &first]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let digest = text
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in {text}"))
        .to_string();
    let again =
        String::from_utf8_lossy(&run_ok(Command::new("docker").args(["push", &first])).stdout)
            .into_owned();
    assert!(again.contains("Layer already exists"), "{again}");
    run_ok(Command::new("docker").args(["tag", &first, &second]));
    let mounted =
        String::from_utf8_lossy(&run_ok(Command::new("docker").args(["push", &second])).stdout)
            .into_owned();
    assert!(mounted.contains("Mounted from"), "{mounted}");

    cleanup(&[&first, &second]);
    run_ok(Command::new("docker").args(["pull", &first]));
    let inspect = run_ok(Command::new("docker").args([
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &first,
    ]));
    let digests: Vec<String> = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(digests, vec![format!("{host}/x@{digest}")]);
    cleanup(&[&first]);
    let by_digest = format!("{host}/other/y@{digest}");
    run_ok(Command::new("docker").args(["pull", &by_digest]));
    cleanup(&[&by_digest]);

    // The docker-pushed image through V1.
    let tags = get(server.addr, "/v1/repositories/x/tags").json();
    let top = tags["1"].as_str().unwrap();
    let layer = v1_image_checked(server.addr, &root, top);
    assert_eq!(layer[..2], [0x1f, 0x8b], "docker pushes gzip layers");
}

#[test]
fn uploads_ranges_mounts_and_listings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let server = HttpServer::start(&root);
    let addr = server.addr;
    assert_eq!(get(addr, "/v2/").status, 200);

    // Chunked upload with Content-Range, status, a final chunk in the PUT.
    let data = random_bytes(10_000, 3);
    let digest = digest(&data);
    let r = request(addr, "POST", "/v2/c/blobs/uploads/", &[], b"");
    assert_eq!((r.status, r.header("range")), (202, Some("0-0")));
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.header("docker-upload-uuid").is_some());
    let loc = r.header("location").unwrap().to_string();
    let r = request(
        addr,
        "PATCH",
        &loc,
        &[("Content-Range", "0-3999")],
        &data[..4000],
    );
    assert_eq!((r.status, r.header("range")), (202, Some("0-3999")));
    let r = request(
        addr,
        "PATCH",
        &loc,
        &[("Content-Range", "4000-7999")],
        &data[4000..8000],
    );
    assert_eq!(r.status, 202);
    let r = get(addr, &loc);
    assert_eq!((r.status, r.header("range")), (204, Some("0-7999")));
    let r = request(
        addr,
        "PUT",
        &format!("{loc}?digest={}", digest.replace(':', "%3A")),
        &[],
        &data[8000..],
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/c/blobs/{digest}").as_str())
    );

    // HEAD and ranged GET.
    let r = request(addr, "HEAD", &format!("/v2/c/blobs/{digest}"), &[], b"");
    assert_eq!((r.status, r.header("content-length")), (200, Some("10000")));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let r = request(
        addr,
        "GET",
        &format!("/v2/c/blobs/{digest}"),
        &[("Range", "bytes=9000-")],
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 9000-9999/10000"));
    assert_eq!(r.body, data[9000..]);

    // Monolithic POST, mount into another repository, cancel.
    let mono = b"monolithic blob".to_vec();
    let md = berth_tests::digest(&mono);
    let r = request(
        addr,
        "POST",
        &format!("/v2/c/blobs/uploads/?digest={md}"),
        &[],
        &mono,
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        request(addr, "HEAD", &format!("/v2/d/blobs/{digest}"), &[], b"").status,
        404
    );
    let r = request(
        addr,
        "POST",
        &format!("/v2/d/blobs/uploads/?mount={digest}&from=c"),
        &[],
        b"",
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        request(addr, "HEAD", &format!("/v2/d/blobs/{digest}"), &[], b"").status,
        200
    );
    let r = request(addr, "POST", "/v2/d/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    assert_eq!(request(addr, "DELETE", &loc, &[], b"").status, 204);
    assert_eq!(get(addr, &loc).status, 404);

    // An image, an index over it and an artifact, with their tags.
    // `data` is no gzip stream: its diff_id is its digest.
    let config = &serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest]}}))
    .unwrap();
    let cd = push_blob(addr, "c", config);
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": cd},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": data.len(), "digest": digest}]})).unwrap();
    let mdig = berth_tests::digest(&manifest);
    let mt = "application/vnd.docker.distribution.manifest.v2+json";
    let r = request(
        addr,
        "PUT",
        &format!("/v2/c/manifests/{mdig}"),
        &[("Content-Type", mt)],
        &manifest,
    );
    assert_eq!(r.status, 201);
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": mt, "size": manifest.len(), "digest": mdig, "platform": {"os": "linux", "architecture": "amd64"}}]})).unwrap();
    let idig = berth_tests::digest(&index);
    let oci_index = "application/vnd.oci.image.index.v1+json";
    let r = request(
        addr,
        "PUT",
        "/v2/c/manifests/multi",
        &[("Content-Type", oci_index)],
        &index,
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.header("docker-content-digest"), Some(idig.as_str()));
    let r = request(
        addr,
        "HEAD",
        "/v2/c/manifests/multi",
        &[("Accept", oci_index)],
        b"",
    );
    assert_eq!(r.header("content-type"), Some(oci_index));
    assert_eq!(
        r.header("content-length"),
        Some(index.len().to_string().as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(idig.as_str()));
    let r = request(
        addr,
        "GET",
        "/v2/c/manifests/multi",
        &[("Accept", "application/vnd.oci.image.manifest.v1+json, */*")],
        b"",
    );
    assert_eq!(r.body, index);
    // An OCI index is not offered to a client that accepts no OCI type.
    let r = request(addr, "GET", "/v2/c/manifests/multi", &[("Accept", mt)], b"");
    assert_eq!(
        (r.status, r.error_codes()),
        (404, vec!["MANIFEST_UNKNOWN".to_string()])
    );
    // The index's amd64 child became the V1 tag.
    let v1 = get(addr, "/v1/repositories/c/tags").json();
    assert!(v1["multi"].is_string(), "{v1}");

    let art_config = br#"{"kind":"helm"}"#;
    let acd = push_blob(addr, "c", art_config);
    let artifact = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "size": art_config.len(), "digest": acd},
        "layers": []})).unwrap();
    let r = request(
        addr,
        "PUT",
        "/v2/c/manifests/chart",
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        &artifact,
    );
    assert_eq!(r.status, 201);
    let v1 = get(addr, "/v1/repositories/c/tags").json();
    assert!(v1.get("chart").is_none(), "artifacts stay V2-only: {v1}");

    // Tag listing with paging.
    let r = get(addr, "/v2/c/tags/list?n=1");
    assert_eq!(r.json(), json!({"name": "c", "tags": ["chart"]}));
    assert_eq!(
        r.header("link"),
        Some("</v2/c/tags/list?last=chart&n=1>; rel=\"next\"")
    );
    let r = get(addr, "/v2/c/tags/list?n=1&last=chart");
    assert_eq!(r.json()["tags"], json!(["multi"]));
    assert!(r.header("link").is_none());
    let r = get(addr, "/v2/nope/tags/list");
    assert_eq!(
        (r.status, r.error_codes()),
        (404, vec!["NAME_UNKNOWN".to_string()])
    );
    // A manifest may name only blobs its repository holds (issue 14): d
    // has the layer (mounted above) but not the config until it is mounted.
    let put_d = || {
        request(
            addr,
            "PUT",
            "/v2/d/manifests/1",
            &[("Content-Type", mt)],
            &manifest,
        )
    };
    let r = put_d();
    assert_eq!(
        (r.status, r.error_codes()),
        (400, vec!["MANIFEST_BLOB_UNKNOWN".to_string()])
    );
    let r = request(
        addr,
        "POST",
        &format!("/v2/d/blobs/uploads/?mount={cd}&from=c"),
        &[],
        b"",
    );
    assert_eq!(r.status, 201);
    assert_eq!(put_d().status, 201);
    let r = get(addr, "/v2/_catalog?n=1");
    assert_eq!(r.json()["repositories"], json!(["library/c"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/_catalog?last=library/c&n=1>; rel=\"next\"")
    );
    let r = get(addr, "/v2/_catalog?n=1&last=library/c");
    assert_eq!(r.json()["repositories"], json!(["library/d"]));

    // Tag deletion through V2 removes both views.
    assert_eq!(
        request(addr, "DELETE", "/v2/c/manifests/multi", &[], b"").status,
        202
    );
    assert_eq!(get(addr, "/v2/c/manifests/multi").status, 404);
    assert!(get(addr, "/v1/repositories/c/tags")
        .json()
        .get("multi")
        .is_none());
    // A blob DELETE unlinks it from this repository only.
    let r = request(addr, "DELETE", &format!("/v2/c/blobs/{digest}"), &[], b"");
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(get(addr, &format!("/v2/c/blobs/{digest}")).status, 404);
    let r = request(addr, "DELETE", &format!("/v2/c/blobs/{digest}"), &[], b"");
    assert_eq!(
        (r.status, r.error_codes()),
        (404, vec!["BLOB_UNKNOWN".to_string()])
    );
}

/// Requests refused before anything is stored: (request line, content
/// type, body, status, error codes). `{D}` is a digest of bytes stored
/// nowhere, `{MT}` the Docker manifest media type; bodies `huge` (over the
/// 4 MiB manifest limit), `schema1` and `ok` (a valid manifest) stand for
/// those documents, any other is sent as written.
#[rustfmt::skip]
const REFUSED: &[(&str, &str, &str, u16, &[&str])] = &[
    // Unknown session (well-formed and malformed ids).
    ("PATCH /v2/b/blobs/uploads/0f0e0d0c-0b0a-4908-8706-050403020100", "", "x", 404, &["BLOB_UPLOAD_UNKNOWN"]),
    ("PUT /v2/b/blobs/uploads/0f0e0d0c-0b0a-4908-8706-050403020100?digest={D}", "", "", 404, &["BLOB_UPLOAD_UNKNOWN"]),
    ("PATCH /v2/b/blobs/uploads/..%2F..%2Fx", "", "x", 404, &["BLOB_UPLOAD_UNKNOWN"]),
    // Manifests.
    ("PUT /v2/b/manifests/t", "{MT}", "huge", 413, &["SIZE_INVALID"]),
    ("PUT /v2/b/manifests/t", "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema1", 400, &["MANIFEST_INVALID"]),
    ("PUT /v2/b/manifests/t", "application/json", "schema1", 400, &["MANIFEST_INVALID"]),
    ("PUT /v2/b/manifests/t", "{MT}", "{not json", 400, &["MANIFEST_INVALID"]),
    ("PUT /v2/b/manifests/{D}", "{MT}", "ok", 400, &["DIGEST_INVALID"]),
    ("PUT /v2/b/manifests/t", "application/vnd.oci.image.index.v1+json", "ok", 400, &["MANIFEST_INVALID"]),
    // Invalid names, tags, digests: refused before any path exists.
    ("GET /v2/Bad/tags/list", "", "", 400, &["NAME_INVALID"]),
    ("GET /v2/a/../b/tags/list", "", "", 400, &["NAME_INVALID"]),
    ("POST /v2/UP/blobs/uploads/", "", "", 400, &["NAME_INVALID"]),
    ("PUT /v2/b/manifests/.bad", "{MT}", "ok", 400, &["TAG_INVALID"]),
    ("GET /v2/b/blobs/sha256:1234", "", "", 400, &["DIGEST_INVALID"]),
    ("GET /v2/b/manifests/md5:00", "", "", 400, &["DIGEST_INVALID"]),
    ("GET /v2/b/blobs/{D}", "", "", 404, &["BLOB_UNKNOWN"]),
    ("GET /v2/b/manifests/nope", "", "", 404, &["MANIFEST_UNKNOWN"]),
    ("GET /v2/zz/manifests/nope", "", "", 404, &["NAME_UNKNOWN"]),
];

#[test]
fn bad_input_gets_v2_codes_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let server = HttpServer::start(&root);
    let addr = server.addr;
    let layer = push_blob(addr, "b", b"some layer");
    let before = durable_snapshot(&root);
    let check = |r: HttpResponse, status: u16, codes: &[&str]| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.error_codes(), codes);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            durable_snapshot(&root),
            before,
            "a refused request changed the store"
        );
    };

    // Digest mismatch: 400 and the session is gone.
    let r = request(addr, "POST", "/v2/b/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    request(addr, "PATCH", &loc, &[], b"abc");
    let wrong = digest(b"abd");
    check(
        request(addr, "PUT", &format!("{loc}?digest={wrong}"), &[], b""),
        400,
        &["DIGEST_INVALID"],
    );
    check(get(addr, &loc), 404, &["BLOB_UPLOAD_UNKNOWN"]);
    // Monolithic mismatch.
    check(
        request(
            addr,
            "POST",
            &format!("/v2/b/blobs/uploads/?digest={wrong}"),
            &[],
            b"abc",
        ),
        400,
        &["DIGEST_INVALID"],
    );
    // Missing digest on close.
    let r = request(addr, "POST", "/v2/b/blobs/uploads/", &[], b"");
    let loc = r.header("location").unwrap().to_string();
    check(
        request(addr, "PUT", &loc, &[], b""),
        400,
        &["DIGEST_INVALID"],
    );
    // Out-of-order chunk.
    request(addr, "PATCH", &loc, &[("Content-Range", "0-2")], b"abc");
    check(
        request(addr, "PATCH", &loc, &[("Content-Range", "5-7")], b"def"),
        416,
        &["RANGE_INVALID"],
    );
    check(
        request(addr, "PATCH", &loc, &[("Content-Range", "3-9")], b"def"),
        400,
        &["SIZE_INVALID"],
    );
    // Manifests.
    let mt = "application/vnd.docker.distribution.manifest.v2+json";
    let missing_cfg = digest(b"no config");
    let missing_layer = digest(b"no layer");
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 9, "digest": missing_cfg},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 10, "digest": layer},
                   {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 8, "digest": missing_layer}]})).unwrap();
    let r = request(
        addr,
        "PUT",
        "/v2/b/manifests/t",
        &[("Content-Type", mt)],
        &m,
    );
    let details: Vec<String> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"]["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(details, vec![missing_cfg.clone(), missing_layer.clone()]);
    check(r, 400, &["MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]);
    let mut huge = b"{\"schemaVersion\":2,\"pad\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 4 << 20));
    huge.extend_from_slice(b"\"}");
    let schema1 = br#"{"schemaVersion":1,"name":"b","tag":"t","fsLayers":[],"history":[]}"#;
    let ok = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 10, "digest": layer}, "layers": []})).unwrap();
    for (line, content_type, body, status, codes) in REFUSED {
        let (method, path) = line.split_once(' ').unwrap();
        let path = path.replace("{D}", &wrong);
        let body: &[u8] = match *body {
            "huge" => &huge,
            "schema1" => schema1,
            "ok" => &ok,
            other => other.as_bytes(),
        };
        let content_type = content_type.replace("{MT}", mt);
        let headers: &[(&str, &str)] = match content_type.as_str() {
            "" => &[],
            ct => &[("Content-Type", ct)],
        };
        check(request(addr, method, &path, headers, body), *status, codes);
    }
    assert_eq!(durable_snapshot(&root), before);
}
