//! The V1 API over plain loopback HTTP: the Python `docker-registry-client`
//! as a real V1 peer, and bad input that must be refused without changing
//! the store.

use berth_tests::*;

#[test]
fn python_docker_registry_client_lists_tags_and_untags() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path());
    let img = V1Image::chain(7, 2, 10_000);
    let mut c = tcp_conn(server.addr);
    v1_push(&mut c, "team/web", "latest", &img);
    v1_push(&mut c, "tools", "1.0", &img);
    let Some(v) = python_v1_client(&server.url(), &img.ids[0]) else {
        return;
    };
    assert_eq!(v["namespaces"], serde_json::json!(["library", "team"]));
    assert_eq!(
        v["repositories"],
        serde_json::json!(["library/tools", "team/web"])
    );
    assert_eq!(v["tags"], serde_json::json!(["latest"]));
    assert_eq!(v["after_tag"], serde_json::json!(["latest", "stable"]));
    assert_eq!(v["stable"], serde_json::json!(img.ids[0]));
    assert_eq!(v["after_untag"], serde_json::json!(["latest"]));
}

/// One bad request and the status it must get.
struct Case {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
}

fn case(method: &'static str, path: impl Into<String>, body: &[u8], status: u16) -> Case {
    Case {
        method,
        path: path.into(),
        headers: vec![],
        body: body.to_vec(),
        status,
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path());
    let mut c = tcp_conn(server.addr);
    let img = V1Image::chain(9, 2, 5_000);
    v1_push(&mut c, "team/app", "latest", &img);
    // An image whose json is in, but no layer yet (for ordering errors).
    let pending = V1Image::chain(10, 1, 100);
    let pid = pending.ids[0].clone();
    let r = c.request(
        "PUT",
        &format!("/v1/images/{pid}/json"),
        &[],
        ReqBody::Sized(&pending.jsons[0]),
    );
    assert_eq!(r.status, 200);
    let before = snapshot(dir.path());

    let (a, b) = (&img.ids[0], &img.ids[1]);
    let fresh = sha256_hex(b"fresh image id");
    let long = "a".repeat(300);
    let mut cases = vec![
        // path traversal and malformed names in every path parameter
        case("PUT", "/v1/images/../json", b"{}", 404),
        case("PUT", "/v1/images/%2e%2e/json", b"{}", 404),
        case(
            "PUT",
            format!("/v1/images/{}/json", "A".repeat(64)),
            b"{}",
            404,
        ),
        case("PUT", "/v1/images/..%2f..%2fetc/layer", b"x", 404),
        case("PUT", format!("/v1/images/{a}%00/json"), b"{}", 404),
        case(
            "PUT",
            "/v1/repositories/../etc/tags/latest",
            format!("\"{a}\"").as_bytes(),
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/%2e%2e/x/tags/latest",
            format!("\"{a}\"").as_bytes(),
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/tags/..",
            format!("\"{a}\"").as_bytes(),
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/tags/a%00b",
            format!("\"{a}\"").as_bytes(),
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/tags/.hidden",
            format!("\"{a}\"").as_bytes(),
            400,
        ),
        case(
            "PUT",
            format!("/v1/repositories/team/app/tags/{long}"),
            format!("\"{a}\"").as_bytes(),
            400,
        ),
        case(
            "PUT",
            format!("/v1/repositories/team/{long}/tags/x"),
            format!("\"{a}\"").as_bytes(),
            400,
        ),
        case("PUT", "/v1/repositories/Team/App/", b"[]", 400),
        case("PUT", "/v1/repositories//app/", b"[]", 400),
        case("GET", "/v1/repositories/team/../../etc/tags", b"", 400),
        // image json problems
        case("PUT", format!("/v1/images/{fresh}/json"), b"not json", 400),
        case("PUT", format!("/v1/images/{fresh}/json"), b"[1,2]", 400),
        case(
            "PUT",
            format!("/v1/images/{fresh}/json"),
            br#"{"no":"id"}"#,
            400,
        ),
        case(
            "PUT",
            format!("/v1/images/{fresh}/json"),
            format!(r#"{{"id":"{a}"}}"#).as_bytes(),
            400,
        ),
        case(
            "PUT",
            format!("/v1/images/{fresh}/json"),
            format!(r#"{{"id":"{fresh}","parent":"{}"}}"#, "e".repeat(64)).as_bytes(),
            400,
        ),
        case(
            "PUT",
            format!("/v1/images/{fresh}/json"),
            format!(r#"{{"id":"{fresh}","parent":"../../x"}}"#).as_bytes(),
            400,
        ),
        case(
            "PUT",
            format!("/v1/images/{fresh}/json"),
            format!(r#"{{"id":"{fresh}","parent":"{fresh}"}}"#).as_bytes(),
            400,
        ),
        case(
            "PUT",
            format!("/v1/images/{fresh}/json"),
            format!(r#"{{"id":"{fresh}","parent":"{pid}"}}"#).as_bytes(),
            400,
        ),
        case(
            "PUT",
            format!("/v1/images/{fresh}/json"),
            &[b'['; 100_000],
            400,
        ),
        // already published
        case("PUT", format!("/v1/images/{a}/json"), &img.jsons[0], 409),
        case("PUT", format!("/v1/images/{a}/layer"), b"new bytes", 409),
        // ordering: layer before json, checksum before layer / json
        case("PUT", format!("/v1/images/{fresh}/layer"), b"bytes", 404),
        Case {
            headers: vec![("X-Docker-Checksum-Payload", img.payload_checksum(0))],
            ..case("PUT", format!("/v1/images/{fresh}/checksum"), b"", 404)
        },
        Case {
            headers: vec![("X-Docker-Checksum-Payload", img.payload_checksum(0))],
            ..case("PUT", format!("/v1/images/{a}/checksum"), b"", 409)
        },
        // tags pointing at nothing, bad tag bodies
        case(
            "PUT",
            "/v1/repositories/team/app/tags/new",
            format!("\"{fresh}\"").as_bytes(),
            404,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/tags/new",
            format!("\"{pid}\"").as_bytes(),
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/tags/new",
            b"not json",
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/tags/new",
            format!(r#"{{"id":"{a}"}}"#).as_bytes(),
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/tags/new",
            b"\"../../etc\"",
            404,
        ),
        case("DELETE", "/v1/repositories/team/app/tags/missing", b"", 404),
        case("DELETE", "/v1/repositories/team/nothing/", b"", 404),
        case("GET", "/v1/repositories/team/nothing/json", b"", 404),
        // index bodies
        case(
            "PUT",
            "/v1/repositories/team/app/",
            b"{\"not\":\"a list\"}",
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/images",
            br#"[{"id":"../x"}]"#,
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/images",
            br#"[{"checksum":"x"}]"#,
            400,
        ),
        case(
            "PUT",
            "/v1/repositories/team/app/properties",
            br#"{"access":"secret"}"#,
            400,
        ),
        // unknown routes and methods
        case("GET", "/v1/nothing", b"", 404),
        case("POST", format!("/v1/images/{a}/json"), b"{}", 405),
        case("DELETE", format!("/v1/images/{b}/layer"), b"", 405),
    ];
    // checksum problems on the pending image
    let mut missing = case("PUT", format!("/v1/images/{pid}/checksum"), b"", 412);
    missing.headers = vec![];
    cases.push(missing);
    let mut empty = case("PUT", format!("/v1/images/{pid}/checksum"), b"", 400);
    empty.headers = vec![("X-Docker-Checksum-Payload", String::new())];
    cases.push(empty);
    let mut early = case("PUT", format!("/v1/images/{pid}/checksum"), b"", 400);
    early.headers = vec![("X-Docker-Checksum-Payload", pending.payload_checksum(0))];
    cases.push(early);

    for (i, k) in cases.iter().enumerate() {
        let headers: Vec<(&str, &str)> = k.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = if k.body.is_empty() {
            ReqBody::None
        } else {
            ReqBody::Sized(&k.body)
        };
        let mut c = tcp_conn(server.addr);
        let r = c.request(k.method, &k.path, &headers, body);
        assert_eq!(
            r.status,
            k.status,
            "case {i}: {} {} answered {}: {}",
            k.method,
            k.path,
            r.status,
            r.text()
        );
        if r.status != 405 && r.status != 404
            || r.header("content-type") == Some("application/json")
        {
            assert!(
                r.json().get("error").is_some(),
                "case {i}: no error message: {}",
                r.text()
            );
        }
    }

    // A layer upload whose checksum then mismatches: the image stays unpublished.
    let r = c.request(
        "PUT",
        &format!("/v1/images/{pid}/layer"),
        &[],
        ReqBody::Chunked(b"some layer", 3),
    );
    assert_eq!(r.status, 200);
    let mid = snapshot(dir.path());
    let r = c.request(
        "PUT",
        &format!("/v1/images/{pid}/checksum"),
        &[("X-Docker-Checksum-Payload", "sha256:0000")],
        ReqBody::None,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "Checksum mismatch");
    assert_eq!(
        snapshot(dir.path()),
        mid,
        "a checksum mismatch changed the store"
    );
    let r = c.request("GET", &format!("/v1/images/{pid}/json"), &[], ReqBody::None);
    assert_eq!(r.status, 400);

    // Oversized request headers: 431, connection refused politely.
    let mut big = tcp_conn(server.addr);
    let huge = "x".repeat(100 * 1024);
    let r = big.request("GET", "/v1/_ping", &[("X-Huge", &huge)], ReqBody::None);
    assert_eq!(r.status, 431);

    // Nothing but the layer+_checksum of the pending image changed.
    let after: Vec<_> = snapshot(dir.path());
    let changed: Vec<_> = after.iter().filter(|e| !before.contains(e)).collect();
    for (name, _) in &changed {
        assert!(
            name.starts_with(&format!("images/{pid}/"))
                || name.starts_with("_berth/blobs/")
                || name == "_berth/audit.log",
            "unexpected change: {name}"
        );
    }
    let removed: Vec<_> = before
        .iter()
        .filter(|e| !after.contains(e) && e.0 != "_berth/audit.log")
        .collect();
    assert!(
        removed.is_empty(),
        "files removed by bad requests: {removed:?}"
    );
}

#[test]
fn search_users_and_repository_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path());
    let mut c = tcp_conn(server.addr);
    let img = V1Image::chain(11, 1, 1000);
    v1_push(&mut c, "team/api", "latest", &img);
    v1_push(&mut c, "other/tool", "1", &img);
    let r = c.request("GET", "/v1/search?q=api", &[], ReqBody::None);
    let v = r.json();
    assert_eq!(v["query"], "api");
    assert_eq!(v["num_results"], 1);
    assert_eq!(v["results"][0]["name"], "team/api");
    let r = c.request("GET", "/v1/search?q=&n=1&page=2", &[], ReqBody::None);
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["num_results"], 2);
    // login: the SSH identity is already authenticated
    assert_eq!(
        c.request(
            "GET",
            "/v1/users/",
            &[("Authorization", "Basic Og==")],
            ReqBody::None
        )
        .status,
        200
    );
    let r = c.request(
        "POST",
        "/v1/users/",
        &[],
        ReqBody::Sized(br#"{"username":"x","password":"y","email":"z"}"#),
    );
    assert_eq!(
        r.json(),
        serde_json::json!("Username or email already exists")
    );
    // tag json and repository json
    let r = c.request(
        "GET",
        "/v1/repositories/team/api/tags/latest/json",
        &[],
        ReqBody::None,
    );
    assert_eq!(r.json()["docker_version"], "1.9.1");
    assert_eq!(r.json()["arch"], "amd64");
    assert_eq!(
        c.request("GET", "/v1/repositories/team/api/json", &[], ReqBody::None)
            .status,
        200
    );
    // properties
    let r = c.request(
        "PUT",
        "/v1/repositories/team/api/properties",
        &[],
        ReqBody::Sized(br#"{"access":"private"}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        c.request(
            "GET",
            "/v1/repositories/team/api/properties",
            &[],
            ReqBody::None
        )
        .json()["access"],
        "private"
    );
    // garbage auth headers are ignored (pitfall §8.6)
    let r = c.request(
        "GET",
        "/v1/repositories/team/api/tags",
        &[("Authorization", "Token Token signature=x")],
        ReqBody::None,
    );
    assert_eq!(r.status, 200);
    // delete the repository (docker-registry-client form, no trailing slash)
    assert_eq!(
        c.request("DELETE", "/v1/repositories/team/api", &[], ReqBody::None)
            .status,
        200
    );
    assert_eq!(
        c.request("GET", "/v1/repositories/team/api/tags", &[], ReqBody::None)
            .status,
        404
    );
    // the image itself is kept
    assert_eq!(
        c.request(
            "GET",
            &format!("/v1/images/{}/json", img.ids[0]),
            &[],
            ReqBody::None
        )
        .status,
        200
    );
    // 416 past the end, 206 for a suffix range
    let id = &img.ids[0];
    let r = c.request(
        "GET",
        &format!("/v1/images/{id}/layer"),
        &[("Range", "bytes=5000-")],
        ReqBody::None,
    );
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1000"));
    let r = c.request(
        "GET",
        &format!("/v1/images/{id}/layer"),
        &[("Range", "bytes=-10")],
        ReqBody::None,
    );
    assert_eq!(r.status, 206);
    assert!(r.body == img.layers[0][990..]);
}
