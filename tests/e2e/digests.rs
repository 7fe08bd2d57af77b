//! OCI Distribution 1.1 digests and chunk order (issue 16) over plain HTTP:
//! sha512 blobs (monolithic, chunked, mounted, read whole and by range) and
//! manifests pushed by a sha512 reference, their V1 view, fsck and gc over
//! them; malformed digests and other algorithms answered 400
//! `DIGEST_INVALID` without a change; out-of-order chunks (PATCH or the
//! closing PUT) answered 416 with the session's `Range`, the session and the
//! keep-alive connection still usable afterwards. Requests are hand-built
//! (no client pushes sha512: skopeo 1.9 re-digests with sha256), plus curl
//! for a monolithic sha512 upload and download.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use berth_tests::*;
use serde_json::json;

type Conn = TcpConn;

fn sha512_of(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// Opens a session; returns its location.
fn start_session(c: &mut Conn, repo: &str, query: &str) -> String {
    let r = c.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/{query}"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 202, "POST: {}", r.text());
    r.header("location").unwrap().to_string()
}

/// Pushes a blob in chunks of `chunk` bytes with `Content-Range`, the last
/// chunk in the closing PUT; returns the 201's `Docker-Content-Digest`.
fn push_chunked(c: &mut Conn, repo: &str, data: &[u8], digest: &str, chunk: usize) -> String {
    let algorithm = digest.split(':').next().unwrap();
    let mut loc = start_session(c, repo, &format!("?digest-algorithm={algorithm}"));
    let mut start = 0;
    while data.len() - start > chunk {
        let end = start + chunk;
        let range = format!("{start}-{}", end - 1);
        let r = c.request(
            "PATCH",
            &loc,
            &[("Content-Range", range.as_str())],
            ReqBody::Sized(&data[start..end]),
        );
        assert_eq!(r.status, 202, "PATCH {range}: {}", r.text());
        assert_eq!(r.header("range"), Some(format!("0-{}", end - 1).as_str()));
        loc = r.header("location").unwrap().to_string();
        start = end;
    }
    let range = format!("{start}-{}", data.len() - 1);
    let r = c.request(
        "PUT",
        &format!("{loc}?digest={digest}"),
        &[("Content-Range", range.as_str())],
        ReqBody::Sized(&data[start..]),
    );
    assert_eq!(r.status, 201, "closing PUT: {}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/{repo}/blobs/{digest}").as_str())
    );
    r.header("docker-content-digest").unwrap().to_string()
}

fn fsck_clean(root: &Path) {
    let (code, text) = fsck(root, &[]);
    assert_eq!(code, 0, "fsck found problems:\n{text}");
}

#[test]
fn sha512_blobs_and_manifests_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let server = HttpServer::start(&root);
    let mut c = tcp_conn(server.addr);

    // Chunked upload (three PATCHes and a final chunk in the PUT).
    let layer = random_bytes(50_000, 512);
    let ld = sha512_of(&layer);
    assert_eq!(push_chunked(&mut c, "team/app", &layer, &ld, 12_000), ld);
    let on_disk = root.join(format!("_berth/blobs/sha512/{}", &ld[7..]));
    assert_eq!(std::fs::read(&on_disk).unwrap(), layer);

    // HEAD, GET, a range.
    let path = format!("/v2/team/app/blobs/{ld}");
    let r = c.request("HEAD", &path, &[], ReqBody::None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("50000"));
    assert_eq!(r.header("docker-content-digest"), Some(ld.as_str()));
    let r = c.request("GET", &path, &[], ReqBody::None);
    assert_eq!((r.status, &r.body), (200, &layer));
    let r = c.request("GET", &path, &[("Range", "bytes=100-199")], ReqBody::None);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, layer[100..200]);
    // The same bytes under their sha256 name are not this blob.
    let r = c.request(
        "HEAD",
        &format!("/v2/team/app/blobs/{}", digest(&layer)),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 404);

    // A wrong sha512 digest at close: 400, the session dropped, nothing stored.
    let loc = start_session(&mut c, "team/app", "");
    let other = sha512_of(b"something else");
    let r = c.request(
        "PUT",
        &format!("{loc}?digest={other}"),
        &[],
        ReqBody::Sized(b"not something else"),
    );
    assert_eq!(
        (r.status, r.error_codes()),
        (400, vec!["DIGEST_INVALID".into()])
    );
    assert_eq!(c.request("GET", &loc, &[], ReqBody::None).status, 404);
    let r = c.request(
        "HEAD",
        &format!("/v2/team/app/blobs/{other}"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 404);

    // Monolithic config upload; a mount of the layer into another repository.
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": [ld]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "ADD layer"}],
    }))
    .unwrap();
    let cd = sha512_of(&config);
    let r = c.request(
        "POST",
        &format!("/v2/team/app/blobs/uploads/?digest={cd}"),
        &[],
        ReqBody::Sized(&config),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(cd.as_str()));
    let r = c.request(
        "HEAD",
        &format!("/v2/team/copy/blobs/{ld}"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 404);
    let r = c.request(
        "POST",
        &format!("/v2/team/copy/blobs/uploads/?mount={ld}&from=team/app"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(ld.as_str()));
    let r = c.request(
        "GET",
        &format!("/v2/team/copy/blobs/{ld}"),
        &[],
        ReqBody::None,
    );
    assert_eq!((r.status, &r.body), (200, &layer));

    // A manifest by its sha512 reference.
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    }))
    .unwrap();
    let md = sha512_of(&manifest);
    let oci = ("Content-Type", "application/vnd.oci.image.manifest.v1+json");
    let wrong = sha512_of(b"another manifest");
    let r = c.request(
        "PUT",
        &format!("/v2/team/app/manifests/{wrong}"),
        &[oci],
        ReqBody::Sized(&manifest),
    );
    assert_eq!(
        (r.status, r.error_codes()),
        (400, vec!["DIGEST_INVALID".into()])
    );
    let r = c.request(
        "PUT",
        &format!("/v2/team/app/manifests/{md}"),
        &[oci],
        ReqBody::Sized(&manifest),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/team/app/manifests/{md}").as_str())
    );
    for method in ["GET", "HEAD"] {
        let r = c.request(
            method,
            &format!("/v2/team/app/manifests/{md}"),
            &[],
            ReqBody::None,
        );
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
        assert_eq!(r.header("content-type"), Some(oci.1));
        if method == "GET" {
            assert_eq!(r.body, manifest);
        }
    }
    // Stored under sha512 only, and readable only where it was pushed.
    let by_sha256 = format!("/v2/team/app/manifests/{}", digest(&manifest));
    assert_eq!(c.request("GET", &by_sha256, &[], ReqBody::None).status, 404);
    let elsewhere = format!("/v2/team/copy/manifests/{md}");
    assert_eq!(c.request("GET", &elsewhere, &[], ReqBody::None).status, 404);

    // The same manifest by tag is named by sha256 (what clients expect),
    // and is projected to V1: the V1 layer is the sha512 blob, its payload
    // checksum sha256.
    let r = c.request(
        "PUT",
        "/v2/team/app/manifests/v1",
        &[oci],
        ReqBody::Sized(&manifest),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest(&manifest).as_str())
    );
    let tags = c.request("GET", "/v1/repositories/team/app/tags", &[], ReqBody::None);
    assert_eq!(tags.status, 200, "{}", tags.text());
    let top = tags.json()["v1"].as_str().unwrap().to_string();
    let json = c.request("GET", &format!("/v1/images/{top}/json"), &[], ReqBody::None);
    assert_eq!(json.status, 200);
    let v1_layer = c.request(
        "GET",
        &format!("/v1/images/{top}/layer"),
        &[],
        ReqBody::None,
    );
    assert_eq!((v1_layer.status, &v1_layer.body), (200, &layer));
    let mut payload = json.body.clone();
    payload.push(b'\n');
    payload.extend_from_slice(&layer);
    assert_eq!(
        json.header("x-docker-checksum-payload"),
        Some(digest(&payload).as_str())
    );

    // fsck verifies the sha512 pool; gc keeps everything a tag reaches.
    drop(c);
    fsck_clean(&root);
    let gc_text = store_tool_ok(&root, &["gc", "--grace", "0s"]);
    assert!(
        on_disk.exists(),
        "gc collected a tagged sha512 layer: {gc_text}"
    );
    fsck_clean(&root);
    let mut c = tcp_conn(server.addr);
    let r = c.request(
        "GET",
        &format!("/v2/team/app/blobs/{cd}"),
        &[],
        ReqBody::None,
    );
    assert_eq!((r.status, &r.body), (200, &config));
}

/// curl, a real HTTP peer: a monolithic sha512 upload and the download,
/// checked against `sha512sum`.
#[test]
fn curl_pushes_and_pulls_a_sha512_blob() {
    if !require_tool("curl", "curl") || !require_tool("sha512sum", "coreutils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = HttpServer::start(&tmp.path().join("store"));
    let data = random_bytes(300_000, 5120);
    let file = tmp.path().join("blob");
    std::fs::write(&file, &data).unwrap();
    let sum = run_ok(Command::new("sha512sum").arg(&file));
    let hex = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let digest = format!("sha512:{hex}");
    assert_eq!(digest, sha512_of(&data));
    let url = server.url();
    let out = run_ok(Command::new("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %header{docker-content-digest}",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{url}/v2/curl/blob/blobs/uploads/?digest={digest}"),
    ]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("201 {digest}")
    );
    let back = tmp.path().join("back");
    run_ok(Command::new("curl").args([
        "-sSf",
        "-o",
        back.to_str().unwrap(),
        &format!("{url}/v2/curl/blob/blobs/{digest}"),
    ]));
    let sum = run_ok(Command::new("sha512sum").arg(&back));
    assert!(String::from_utf8_lossy(&sum.stdout).starts_with(&hex));
}

/// Malformed digests and well-formed ones of other algorithms: 400
/// `DIGEST_INVALID` wherever a digest is taken (distribution spec, "Pushing
/// blobs": "if the client provided digest is invalid or uses an unsupported
/// algorithm, the registry SHOULD respond with 400"), nothing changes.
#[test]
fn bad_and_unsupported_digests_are_digest_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let server = HttpServer::start(&root);
    let mut c = tcp_conn(server.addr);
    let kept = b"kept".to_vec();
    let kept_digest = sha512_of(&kept);
    let r = c.request(
        "POST",
        &format!("/v2/bad/repo/blobs/uploads/?digest={kept_digest}"),
        &[],
        ReqBody::Sized(&kept),
    );
    assert_eq!(r.status, 201);
    let before = durable_snapshot(&root);

    let unsupported = [
        format!("sha384:{}", "a".repeat(96)),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
    ];
    let malformed = [
        format!("sha256:{}", "A".repeat(64)),
        format!("sha512:{}", "A".repeat(128)),
        format!("sha512:{}", "a".repeat(64)),
        format!("sha256:{}", "a".repeat(128)),
        format!("SHA512:{}", "a".repeat(128)),
        "sha512:".to_string(),
    ];
    for (bad, is_unsupported) in unsupported
        .iter()
        .map(|d| (d, true))
        .chain(malformed.iter().map(|d| (d, false)))
    {
        let expect_400 = |r: &HttpResponse, what: &str| {
            assert_eq!(r.status, 400, "{what} {bad}: {}", r.text());
            assert_eq!(
                r.error_codes(),
                vec!["DIGEST_INVALID".to_string()],
                "{what} {bad}"
            );
            let message = r.json()["errors"][0]["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(
                message.contains("unsupported digest algorithm"),
                is_unsupported,
                "{what} {bad}: {message}"
            );
        };
        let r = c.request(
            "GET",
            &format!("/v2/bad/repo/blobs/{bad}"),
            &[],
            ReqBody::None,
        );
        expect_400(&r, "blob GET");
        let r = c.request(
            "HEAD",
            &format!("/v2/bad/repo/blobs/{bad}"),
            &[],
            ReqBody::None,
        );
        assert_eq!(r.status, 400, "blob HEAD {bad}");
        let r = c.request(
            "GET",
            &format!("/v2/bad/repo/manifests/{bad}"),
            &[],
            ReqBody::None,
        );
        expect_400(&r, "manifest GET");
        let r = c.request(
            "PUT",
            &format!("/v2/bad/repo/manifests/{bad}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            ReqBody::Sized(b"{\"schemaVersion\":2}"),
        );
        expect_400(&r, "manifest PUT");
        let r = c.request(
            "POST",
            &format!("/v2/bad/repo/blobs/uploads/?digest={bad}"),
            &[],
            ReqBody::Sized(&kept),
        );
        expect_400(&r, "monolithic POST");
        let loc = start_session(&mut c, "bad/repo", "");
        let r = c.request(
            "PUT",
            &format!("{loc}?digest={bad}"),
            &[],
            ReqBody::Sized(&kept),
        );
        expect_400(&r, "closing PUT");
    }
    for algorithm in ["sha384", "md5"] {
        let r = c.request(
            "POST",
            &format!("/v2/bad/repo/blobs/uploads/?digest-algorithm={algorithm}"),
            &[],
            ReqBody::None,
        );
        assert_eq!(
            (r.status, r.error_codes()),
            (400, vec!["DIGEST_INVALID".into()])
        );
    }
    // A mount naming an invalid source repository, with a body.
    let r = c.request(
        "POST",
        &format!(
            "/v2/bad/repo/blobs/uploads/?mount={kept_digest}&from=Not..Valid&digest={kept_digest}"
        ),
        &[],
        ReqBody::Sized(&kept),
    );
    assert_eq!(
        (r.status, r.error_codes()),
        (400, vec!["NAME_INVALID".into()])
    );
    assert_eq!(
        durable_snapshot(&root),
        before,
        "a refused request changed the store"
    );
    // The connection survived every refusal.
    let r = c.request(
        "GET",
        &format!("/v2/bad/repo/blobs/{kept_digest}"),
        &[],
        ReqBody::None,
    );
    assert_eq!((r.status, r.body), (200, kept));
}

/// Chunk order (distribution spec: "If a chunk is uploaded out of order, the
/// registry MUST respond with a 416", for the PATCH and the final chunk of
/// the closing PUT): 416 with the session's `Range`, `Location` and
/// `Docker-Upload-UUID`; nothing changes; the same keep-alive connection
/// then continues the session correctly.
#[test]
fn out_of_order_chunks_are_416_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let server = HttpServer::start(&root);
    let addr: SocketAddr = server.addr;
    let mut c = tcp_conn(addr);
    let data = random_bytes(3_000, 416);
    let digest = sha512_of(&data);
    let loc = start_session(&mut c, "order/repo", "");
    let uuid = loc.rsplit('/').next().unwrap().to_string();
    let r = c.request(
        "PATCH",
        &loc,
        &[("Content-Range", "0-999")],
        ReqBody::Sized(&data[..1000]),
    );
    assert_eq!((r.status, r.header("range")), (202, Some("0-999")));
    let before = durable_snapshot(&root);
    let session_data = root.join(format!("_berth/uploads/{uuid}/data"));

    let refused = |r: &HttpResponse, what: &str| {
        assert_eq!(r.status, 416, "{what}: {}", r.text());
        assert_eq!(r.header("range"), Some("0-999"), "{what}");
        assert_eq!(r.header("location"), Some(loc.as_str()), "{what}");
        assert_eq!(
            r.header("docker-upload-uuid"),
            Some(uuid.as_str()),
            "{what}"
        );
        assert_eq!(r.error_codes(), vec!["RANGE_INVALID".to_string()], "{what}");
    };
    // Ahead of the offset, behind it, and the closing PUT's chunk ahead of it
    // (the conformance suite's "out-of-order and put chunk").
    for (method, range, body) in [
        ("PATCH", "2000-2999", &data[2000..]),
        ("PATCH", "0-999", &data[..1000]),
        ("PATCH", "999-1999", &data[999..2000]),
        ("PUT", "2000-2999", &data[2000..]),
        ("PUT", "0-999", &data[..1000]),
    ] {
        let target = if method == "PUT" {
            format!("{loc}?digest={digest}")
        } else {
            loc.clone()
        };
        let r = c
            .send(
                method,
                &target,
                &[("Content-Range", range)],
                ReqBody::Sized(body),
            )
            .unwrap_or_else(|e| panic!("{method} {range}: {e}"));
        refused(&r, &format!("{method} {range}"));
        assert_eq!(std::fs::read(&session_data).unwrap(), data[..1000]);
        // Same connection: the session still stands where it was.
        let r = c.request("GET", &loc, &[], ReqBody::None);
        assert_eq!((r.status, r.header("range")), (204, Some("0-999")));
    }
    assert_eq!(
        durable_snapshot(&root),
        before,
        "a refused chunk changed the store"
    );

    // The right chunks go on from there.
    let r = c.request(
        "PATCH",
        &loc,
        &[("Content-Range", "1000-1999")],
        ReqBody::Sized(&data[1000..2000]),
    );
    assert_eq!((r.status, r.header("range")), (202, Some("0-1999")));
    let r = c.request(
        "PUT",
        &format!("{loc}?digest={digest}"),
        &[("Content-Range", "2000-2999")],
        ReqBody::Sized(&data[2000..]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let r = c.request(
        "GET",
        &format!("/v2/order/repo/blobs/{digest}"),
        &[],
        ReqBody::None,
    );
    assert_eq!((r.status, r.body), (200, data));
}

/// What [`push_sha512_image`] pushed.
struct Sha512Image {
    layer: Vec<u8>,
    layer_digest: String,
    manifest: Vec<u8>,
    manifest_digest: String,
    index: Vec<u8>,
}

/// Pushes into `repo` a config and a layer by sha512, an image manifest by
/// its sha512 reference and tag `img`, and an index naming that manifest by
/// its sha512 digest as tag `multi`.
fn push_sha512_image(c: &mut Conn, repo: &str) -> Sha512Image {
    let layer = random_bytes(40_000, 5122);
    let layer_digest = sha512_of(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "ADD layer"}],
    }))
    .unwrap();
    for blob in [&config, &layer] {
        let r = c.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={}", sha512_of(blob)),
            &[],
            ReqBody::Sized(blob),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha512_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = sha512_of(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    for (reference, bytes, media_type) in [
        (
            manifest_digest.as_str(),
            &manifest,
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (
            "img",
            &manifest,
            "application/vnd.oci.image.manifest.v1+json",
        ),
        ("multi", &index, "application/vnd.oci.image.index.v1+json"),
    ] {
        let r = c.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            ReqBody::Sized(bytes),
        );
        assert_eq!(r.status, 201, "{reference}: {}", r.text());
    }
    Sha512Image {
        layer,
        layer_digest,
        manifest,
        manifest_digest,
        index,
    }
}

/// `berth sync` copies an image whose blobs and child manifest are named by
/// sha512 digests (each verified in its algorithm: the destination checks
/// the blobs, the client the child manifest fetched by its digest), and a
/// pull-through mirror fetches and verifies sha512 manifests and blobs.
#[test]
fn sync_and_mirror_carry_sha512_images() {
    let tmp = tempfile::tempdir().unwrap();
    let source = HttpServer::start(&tmp.path().join("a"));
    let pushed = push_sha512_image(&mut tcp_conn(source.addr), "team/app");

    let copy = tmp.path().join("b");
    let sync = || -> serde_json::Value {
        let out = run_ok(Command::new(bin("berth")).args([
            "sync",
            "--json",
            &source.url(),
            copy.to_str().unwrap(),
            "team/app",
        ]));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = sync();
    assert_eq!(first["tags"], 2, "{first}");
    assert_eq!(first["blobs_sent"], 2, "{first}");
    let again = sync();
    assert_eq!(
        (&again["blobs_sent"], &again["manifests_sent"]),
        (&json!(0), &json!(0)),
        "{again}"
    );
    let copied = HttpServer::start(&copy);
    let mirror_root = tmp.path().join("m");
    let mirror = {
        let mut cmd = Command::new(bin("berth-server"));
        cmd.args(["http", "--listen", "127.0.0.1:0", "--root"])
            .arg(&mirror_root)
            .args(["--mirror-of", &source.url()]);
        let (proc, line) =
            berth_tests::spawn_until_line(cmd, "http on", "berth-server http (mirror)");
        HttpServer {
            proc,
            addr: berth_tests::addr_in(&line),
        }
    };
    for (what, server) in [("sync copy", &copied), ("mirror", &mirror)] {
        let mut c = tcp_conn(server.addr);
        let r = c.request(
            "GET",
            &format!("/v2/team/app/manifests/{}", pushed.manifest_digest),
            &[],
            ReqBody::None,
        );
        assert_eq!((r.status, &r.body), (200, &pushed.manifest), "{what}");
        assert_eq!(
            r.header("docker-content-digest"),
            Some(pushed.manifest_digest.as_str()),
            "{what}"
        );
        let r = c.request("GET", "/v2/team/app/manifests/multi", &[], ReqBody::None);
        assert_eq!((r.status, &r.body), (200, &pushed.index), "{what}");
        let r = c.request(
            "GET",
            &format!("/v2/team/app/blobs/{}", pushed.layer_digest),
            &[],
            ReqBody::None,
        );
        assert_eq!((r.status, &r.body), (200, &pushed.layer), "{what}");
    }
    for root in [&copy, &mirror_root] {
        let blob = root.join(format!("_berth/blobs/sha512/{}", &pushed.layer_digest[7..]));
        assert!(blob.exists(), "{} has no sha512 pool entry", root.display());
    }

    // `berth pull` writes Docker archives, which name blobs by sha256: it
    // refuses such an image clearly, leaving no archive behind.
    let archive = tmp.path().join("img.tar");
    let out = Command::new(bin("berth"))
        .args(["pull", "-q", "-o", archive.to_str().unwrap()])
        .arg(&copy)
        .arg("team/app:img")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is a sha512 digest: a Docker archive names blobs by sha256 only"),
        "{stderr}"
    );
    assert!(!archive.exists());
}
