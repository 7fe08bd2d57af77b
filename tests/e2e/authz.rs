//! The authorization matrix, written as a table: V1 and V2 routes × caller ×
//! transport → expected status. Where `access.rs` checks each namespace from
//! inside, this table aims every route at *someone else's* objects from the
//! caller's own namespace too — the ways a key could read what its rules do
//! not grant (issue 14): a foreign blob or manifest by digest, a manifest
//! naming foreign blobs, a foreign upload session, a V1 id announced in one's
//! own index, a V1 id overwritten with other content.
//!
//! The world is `Tenants` (`tests/lib.rs`): `alice` owns `private/` (read,
//! write, delete) and may write `public/`; `carol` may read `private/`;
//! `mallory` owns `evil/`; `public/` is readable by `@anonymous` and `@all`;
//! `stranger` has a key the server does not know. Alice pushes a V2 image to `private/app:1`, a V1 image to
//! `private/v1app:latest` and opens an upload session in `private/app`. Then
//! every caller runs every row in order, over `ssh -s docker-registry` and
//! through `berth shim`.

use berth_tests::*;

/// The callers, in the order of each row's expected statuses.
const CALLERS: [&str; 4] = ["alice", "carol", "mallory", "anonymous"];

/// What a row sends as its body.
#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    /// An OCI manifest naming alice's config and layer.
    StealManifest,
    /// The same manifest shape naming digests that exist nowhere.
    UnknownManifest,
    /// Bytes for an upload PATCH.
    Bytes,
    /// A V1 index list announcing alice's top V1 image.
    AnnounceTop,
    /// A V1 tag pointing at alice's top V1 image.
    TagTop,
    /// Image json for alice's base V1 id with other content.
    OtherJson,
}

/// The table. Placeholders: `{L}` alice's layer digest, `{C}` her config
/// digest, `{M}` her manifest digest, `{U}` her open upload session, `{I0}`
/// and `{I1}` her V1 base and top image ids, `{W}` the caller's name, `{N}`
/// a digest that exists nowhere.
/// Statuses: alice, carol, mallory, anonymous.
#[rustfmt::skip]
const MATRIX: &[(&str, Body, [u16; 4])] = &[
    // ---- V2, alice's own repository
    ("GET /v2/",                                          Body::None, [200, 200, 200, 200]),
    ("GET /v2/private/app/manifests/1",                   Body::None, [200, 200, 403, 401]),
    ("HEAD /v2/private/app/manifests/{M}",                Body::None, [200, 200, 403, 401]),
    ("GET /v2/private/app/blobs/{L}",                     Body::None, [200, 200, 403, 401]),
    ("HEAD /v2/private/app/blobs/{C}",                    Body::None, [200, 200, 403, 401]),
    ("GET /v2/private/app/tags/list",                     Body::None, [200, 200, 403, 401]),
    ("POST /v2/private/app/blobs/uploads/",               Body::None, [202, 403, 403, 401]),
    ("GET /v2/private/app/blobs/uploads/{U}",             Body::None, [204, 403, 403, 401]),
    // ---- V2, alice's objects by digest through other repositories
    ("GET /v2/evil/x/manifests/{M}",                      Body::None, [403, 403, 404, 401]),
    ("HEAD /v2/evil/x/manifests/{M}",                     Body::None, [403, 403, 404, 401]),
    ("GET /v2/evil/x/blobs/{L}",                          Body::None, [403, 403, 404, 401]),
    ("HEAD /v2/evil/x/blobs/{C}",                         Body::None, [403, 403, 404, 401]),
    ("GET /v2/public/x/manifests/{M}",                    Body::None, [404, 404, 404, 404]),
    ("GET /v2/public/x/blobs/{L}",                        Body::None, [404, 404, 404, 404]),
    ("PUT /v2/public/{W}/manifests/steal",                Body::StealManifest, [400, 403, 403, 401]),
    // ---- V2, linking alice's blobs into another repository
    ("PUT /v2/evil/x/manifests/steal",                    Body::StealManifest, [403, 403, 400, 401]),
    ("PUT /v2/evil/x/manifests/unknown",                  Body::UnknownManifest, [403, 403, 400, 401]),
    ("GET /v2/evil/x/blobs/{L}",                          Body::None, [403, 403, 404, 401]),
    ("GET /v2/evil/x/manifests/steal",                    Body::None, [403, 403, 404, 401]),
    ("POST /v2/evil/x/blobs/uploads/?mount={L}&from=private/app", Body::None, [403, 403, 403, 401]),
    // ---- V2, alice's upload session through other repositories
    ("PATCH /v2/evil/x/blobs/uploads/{U}",                Body::Bytes, [403, 403, 404, 401]),
    ("GET /v2/evil/x/blobs/uploads/{U}",                  Body::None, [403, 403, 404, 401]),
    ("PUT /v2/evil/x/blobs/uploads/{U}?digest={L}",       Body::None, [403, 403, 404, 401]),
    ("DELETE /v2/evil/x/blobs/uploads/{U}",               Body::None, [403, 403, 404, 401]),
    ("PATCH /v2/public/{W}/blobs/uploads/{U}",            Body::Bytes, [404, 403, 403, 401]),
    ("GET /v2/private/app/blobs/uploads/{U}",             Body::None, [204, 403, 403, 401]),
    // ---- V1, alice's repository and images
    ("GET /v1/repositories/private/v1app/tags",           Body::None, [200, 200, 403, 401]),
    ("GET /v1/repositories/private/v1app/images",         Body::None, [200, 200, 403, 401]),
    ("GET /v1/repositories/private/app/tags",             Body::None, [200, 200, 403, 401]),
    ("GET /v1/images/{I1}/json",                          Body::None, [200, 200, 404, 404]),
    ("GET /v1/images/{I1}/layer",                         Body::None, [200, 200, 404, 404]),
    ("GET /v1/images/{I1}/ancestry",                      Body::None, [200, 200, 404, 404]),
    // ---- V1, announcing alice's image in one's own index grants nothing
    ("PUT /v1/repositories/evil/grab/images",             Body::AnnounceTop, [403, 403, 204, 401]),
    ("GET /v1/images/{I1}/json",                          Body::None, [200, 200, 404, 404]),
    ("GET /v1/images/{I1}/layer",                         Body::None, [200, 200, 404, 404]),
    ("PUT /v1/repositories/evil/grab/tags/t",             Body::TagTop, [403, 403, 404, 401]),
    ("GET /v1/repositories/evil/grab/tags",               Body::None, [403, 403, 404, 401]),
    // ---- V1, an existing id is never replaced by other content
    ("PUT /v1/images/{I0}/json",                          Body::OtherJson, [409, 403, 409, 401]),
    ("GET /v1/images/{I0}/json",                          Body::None, [200, 200, 404, 404]),
    ("PUT /v1/images/{I0}/layer",                         Body::Bytes, [409, 403, 409, 401]),
    // ---- the remaining routes, each by every caller
    ("GET /v2/_catalog",                                  Body::None, [200, 200, 200, 200]),
    ("GET /v1/search?q=app",                              Body::None, [200, 200, 200, 200]),
    ("GET /_berth/info",                                  Body::None, [200, 200, 200, 200]),
    // ---- the catalog's summaries (issue 19): read rule, unreadable = absent
    ("GET /_berth/repositories",                          Body::None, [200, 200, 200, 200]),
    ("GET /_berth/tags?repository=private/app",           Body::None, [200, 200, 404, 404]),
    ("GET /_berth/layers?repository=private/app&digests={L}", Body::None, [200, 200, 404, 404]),
    ("GET /_berth/audit?repository=private/app",          Body::None, [200, 200, 200, 200]),
    ("DELETE /_berth/tags?repository=private/app",        Body::None, [405, 405, 405, 405]),
    ("GET /v1/repositories/private/v1app/tags/latest",    Body::None, [200, 200, 403, 401]),
    ("GET /v1/repositories/private/v1app/tags/latest/json", Body::None, [200, 200, 403, 401]),
    ("GET /v1/repositories/private/v1app/json",           Body::None, [200, 200, 403, 401]),
    ("POST /v2/evil/x/blobs/uploads/?digest={L}",         Body::Bytes, [403, 403, 400, 401]),
    ("DELETE /v2/private/app/manifests/gone",             Body::None, [404, 403, 403, 401]),
    ("DELETE /v2/private/app/manifests/{N}",              Body::None, [404, 403, 403, 401]),
    ("DELETE /v2/private/app/blobs/{N}",                  Body::None, [404, 403, 403, 401]),
    ("DELETE /v2/evil/x/manifests/{M}",                   Body::None, [403, 403, 404, 401]),
    ("DELETE /v2/evil/x/blobs/{L}",                       Body::None, [403, 403, 404, 401]),
    ("GET /v2/private/app/referrers/{M}",                 Body::None, [200, 200, 403, 401]),
    ("GET /v2/evil/x/referrers/{M}",                      Body::None, [403, 403, 200, 401]),
    ("GET /v2/private/app/manifests/-not-a-tag",          Body::None, [404, 404, 404, 404]),
    ("DELETE /v1/repositories/private/v1app/tags/gone",   Body::None, [404, 403, 403, 401]),
    ("DELETE /v1/repositories/private/nothing-here/",     Body::None, [404, 403, 403, 401]),
];

/// Alice's objects the placeholders stand for.
struct Fixture {
    layer: String,
    config: String,
    manifest: String,
    upload: String,
    v1: V1Image,
}

impl Fixture {
    fn path(&self, template: &str, who: &str) -> String {
        template
            .replace("{L}", &self.layer)
            .replace("{C}", &self.config)
            .replace("{M}", &self.manifest)
            .replace("{U}", &self.upload)
            .replace("{I0}", &self.v1.ids[0])
            .replace("{I1}", self.v1.ids.last().unwrap())
            .replace("{W}", who)
            .replace(
                "{N}",
                &format!("sha256:{}", sha256_hex(&random_bytes(64, 9003))),
            )
    }

    fn body(&self, body: Body) -> Option<Vec<u8>> {
        let manifest = |config: &str, layer: &str| {
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config, "size": 10},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": layer, "size": 10}],
            }))
            .unwrap()
        };
        let nowhere = |seed: u64| format!("sha256:{}", sha256_hex(&random_bytes(64, seed)));
        match body {
            Body::None => None,
            Body::StealManifest => Some(manifest(&self.config, &self.layer)),
            Body::UnknownManifest => Some(manifest(&nowhere(9001), &nowhere(9002))),
            Body::Bytes => Some(b"mallory was here".to_vec()),
            Body::AnnounceTop => {
                Some(format!("[{{\"id\":\"{}\"}}]", self.v1.ids.last().unwrap()).into_bytes())
            }
            Body::TagTop => Some(format!("\"{}\"", self.v1.ids.last().unwrap()).into_bytes()),
            Body::OtherJson => Some(
                format!("{{\"id\":\"{}\",\"comment\":\"planted\"}}", self.v1.ids[0]).into_bytes(),
            ),
        }
    }
}

/// Alice's image `private/app:1` of one layer: its manifest's digest and
/// bytes, read back.
fn push_private_app(c: &mut impl Http, layer: &[u8]) -> (String, Vec<u8>) {
    let m = v2_push(c, "private/app", "1", &[layer.to_vec()]);
    let r = c.request(
        "GET",
        &format!("/v2/private/app/manifests/{m}"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        ReqBody::None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    (m, r.body.clone())
}

#[test]
fn authorization_matrix_over_ssh_and_the_shim() {
    let Some(t) = Tenants::new() else { return };
    let stranger = ClientKey::generate(&t.state, "stranger");
    let server = t.start();
    let port = server.port();
    let known = t.known_hosts(&server);
    let alice = &t.alice;

    // Alice's objects.
    let fixture = {
        let mut c = RegistrySession::open("ssh", Some(&alice.private), port, &known);
        let layer = random_bytes(4000, 1401);
        let (manifest, bytes) = push_private_app(&mut c.http, &layer);
        let config = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["config"]
            ["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let v1 = V1Image::chain(1402, 2, 3000);
        v1_push(&mut c.http, "private/v1app", "latest", &v1);
        let r = c
            .http
            .request("POST", "/v2/private/app/blobs/uploads/", &[], ReqBody::None);
        assert_eq!(r.status, 202, "{}", r.text());
        let upload = r.header("docker-upload-uuid").unwrap().to_string();
        Fixture {
            layer: digest(&layer),
            config,
            manifest,
            upload,
            v1,
        }
    };

    let mut failures = Vec::new();
    for via in ["ssh", "shim"] {
        for (col, who) in CALLERS.iter().enumerate() {
            let key = t.key(who).map(|k| k.private.as_path());
            let mut c = RegistrySession::open(via, key, port, &known);
            let mut answers: Vec<(String, HttpResponse)> = Vec::new();
            for (route, body, expect) in MATRIX {
                let (method, template) = route.split_once(' ').unwrap();
                let path = fixture.path(template, who);
                let bytes = fixture.body(*body);
                let headers: &[(&str, &str)] = match body {
                    Body::StealManifest | Body::UnknownManifest => {
                        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")]
                    }
                    Body::Bytes => &[("Content-Type", "application/octet-stream")],
                    _ => &[],
                };
                let send = |c: &mut RegistrySession| {
                    c.http
                        .send(
                            method,
                            &path,
                            headers,
                            match &bytes {
                                Some(b) => ReqBody::Sized(b),
                                None => ReqBody::None,
                            },
                        )
                        .ok()
                };
                // A server may close a connection after answering a request
                // whose body it did not read (HTTP/1.1 allows it); a real
                // client then reconnects, and so does this one, once.
                let r = send(&mut c)
                    .or_else(|| {
                        c = RegistrySession::open(via, key, port, &known);
                        send(&mut c)
                    })
                    .unwrap_or_else(|| HttpResponse {
                        status: 0,
                        headers: Vec::new(),
                        body: b"(connection closed without an answer)".to_vec(),
                    });
                if r.status != expect[col] {
                    failures.push(format!(
                        "{via:5} {who:9} {route:55} expected {} got {} {}",
                        expect[col],
                        r.status,
                        r.text().chars().take(120).collect::<String>()
                    ));
                }
                answers.push((route.to_string(), r));
            }
            // A manifest naming someone else's blobs is answered exactly like
            // one naming digests that exist nowhere: no existence oracle.
            let body_of = |route: &str| {
                answers
                    .iter()
                    .find(|(r, _)| r == route)
                    .map(|(_, a)| (a.status, a.text()))
                    .unwrap()
            };
            let steal = body_of("PUT /v2/evil/x/manifests/steal");
            let unknown = body_of("PUT /v2/evil/x/manifests/unknown");
            let scrub = |s: &str| {
                s.replace(&fixture.config, "C")
                    .replace(&fixture.layer, "L")
                    .replace(
                        &format!("sha256:{}", sha256_hex(&random_bytes(64, 9001))),
                        "C",
                    )
                    .replace(
                        &format!("sha256:{}", sha256_hex(&random_bytes(64, 9002))),
                        "L",
                    )
            };
            // The catalog's summaries list nothing of private/ to those
            // who may not read it.
            if *who == "mallory" || *who == "anonymous" {
                for route in [
                    "GET /_berth/repositories",
                    "GET /_berth/audit?repository=private/app",
                ] {
                    let (_, text) = body_of(route);
                    if text.contains("private/") {
                        failures.push(format!("{via:5} {who:9} {route} shows private/: {text}"));
                    }
                }
            }
            if steal.0 != unknown.0 || scrub(&steal.1) != scrub(&unknown.1) {
                failures.push(format!(
                    "{via:5} {who:9} steal and unknown manifests answer differently: {steal:?} vs {unknown:?}"
                ));
            }
        }
        // A key the server does not know gets no session at all.
        let stranger_ok = match via {
            "ssh" => {
                let out = ssh_command(&stranger.private, port)
                    .arg("registryget /v1/_ping")
                    .output()
                    .unwrap();
                out.status.code() == Some(255)
            }
            _ => {
                let mut cmd = std::process::Command::new(bin("berth"));
                cmd.args(["ls", "--known-hosts"])
                    .arg(&known)
                    .arg("--identity")
                    .arg(&stranger.private)
                    .env_remove("SSH_AUTH_SOCK")
                    .arg(format!("ssh://root@127.0.0.1:{port}"));
                !cmd.output().unwrap().status.success()
            }
        };
        if !stranger_ok {
            failures.push(format!("{via}: the stranger's key got a session"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells of the authorization matrix are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Alice's bytes appear in no repository but hers.
    let mut c = RegistrySession::open("ssh", Some(&alice.private), port, &known);
    let r = c.http.request("GET", "/v2/_catalog", &[], ReqBody::None);
    let repos: Vec<String> = r.json()["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    for repo in repos.iter().filter(|r| !r.starts_with("private/")) {
        for d in [&fixture.layer, &fixture.config, &fixture.manifest] {
            let r = c
                .http
                .request("HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], ReqBody::None);
            assert_ne!(r.status, 200, "{d} is readable in {repo}");
        }
    }
}

/// A writer cannot learn from the catalog's summaries whether a manifest
/// exists elsewhere in the store. Mallory pushes to her own repository two
/// image manifests that also carry a `manifests` list (which no image
/// manifest has): one naming alice's private manifest, one naming a digest
/// that exists nowhere. `/_berth/tags` must describe the two alike; read as
/// an index, the first showed the size and creation time of alice's image.
#[test]
fn a_manifest_list_smuggled_into_an_image_manifest_tells_the_catalog_nothing() {
    let Some(t) = Tenants::new() else { return };
    let server = t.start();
    let port = server.port();
    let known = t.known_hosts(&server);
    let alice_manifest = {
        let mut c = RegistrySession::open("ssh", Some(&t.alice.private), port, &known);
        v2_push(&mut c.http, "private/app", "1", &[random_bytes(5000, 1501)])
    };

    let mut c = RegistrySession::open("ssh", Some(&t.mallory.private), port, &known);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = try_v2_push_blob(&mut c.http, "evil/x", &config).unwrap();
    let nowhere = format!("sha256:{}", sha256_hex(b"exists nowhere"));
    for (tag, child) in [
        ("probe", alice_manifest.as_str()),
        ("control", nowhere.as_str()),
    ] {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config.len(),
            },
            "layers": [],
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": child, "size": 1000,
                "platform": {"os": "linux", "architecture": "amd64"},
            }],
        });
        let body = serde_json::to_vec(&body).unwrap();
        let r = c.http.request(
            "PUT",
            &format!("/v2/evil/x/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            ReqBody::Sized(&body),
        );
        assert_eq!(r.status, 201, "PUT {tag}: {}", r.text());
    }

    let r = c
        .http
        .request("GET", "/_berth/tags?repository=evil/x", &[], ReqBody::None);
    assert_eq!(r.status, 200, "{}", r.text());
    let listing = r.json();
    let described = |tag: &str| {
        let mut entry = listing["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["tag"] == tag)
            .unwrap_or_else(|| panic!("no {tag} in {listing}"))
            .clone();
        // What differs by construction: the names and the manifests' own digests.
        let text = entry.to_string();
        let own = entry["digest"].as_str().unwrap().to_string();
        entry = serde_json::from_str(
            &text
                .replace(&own, "OWN")
                .replace(&alice_manifest, "CHILD")
                .replace(&nowhere, "CHILD"),
        )
        .unwrap();
        entry["tag"] = serde_json::Value::Null;
        entry["pushed"] = serde_json::Value::Null;
        entry
    };
    assert_eq!(
        described("probe"),
        described("control"),
        "the catalog tells a manifest that exists elsewhere from one that exists nowhere"
    );
}

/// What knowing a private manifest's bytes must not give a writer of
/// `repo`: the manifest by digest there (404), an index over it (400
/// `MANIFEST_BLOB_UNKNOWN`), and the manifest's layer over V2 (404).
fn assert_no_manifest_there(
    c: &mut RegistrySession,
    repo: &str,
    manifest: &str,
    manifest_bytes: &[u8],
    layer: &[u8],
) {
    let r = c.http.request(
        "GET",
        &format!("/v2/{repo}/manifests/{manifest}"),
        &[("Accept", "*/*")],
        ReqBody::None,
    );
    assert_eq!(
        r.status,
        404,
        "a foreign manifest answered by digest in {repo}: {}",
        r.text()
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest, "size": manifest_bytes.len(),
            "platform": {"os": "linux", "architecture": "amd64"},
        }],
    });
    let r = c.http.request(
        "PUT",
        &format!("/v2/{repo}/manifests/over-foreign"),
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        ReqBody::Sized(&serde_json::to_vec(&index).unwrap()),
    );
    let refusal = r.text();
    assert_eq!(
        r.status, 400,
        "index over a foreign manifest taken in {repo}: {refusal}"
    );
    assert!(refusal.contains("MANIFEST_BLOB_UNKNOWN"), "{refusal}");
    let r = c.http.request(
        "GET",
        &format!("/v2/{repo}/blobs/{}", digest(layer)),
        &[],
        ReqBody::None,
    );
    assert_eq!(
        r.status, 404,
        "the private layer read over V2 through {repo}"
    );
}

/// The same attack through V1. Mallory pushes a V1 image whose layer is
/// alice's private manifest's bytes into her own repository and reads its
/// tag over V2, which derives a V2 form: its layer, that is the manifest's
/// digest, is linked there as part of a derived image. Every link of a
/// derived image counted as "entered as a manifest", so the index over
/// alice's manifest was taken and projected, and alice's config and layer
/// read through mallory's repository (found by a review, seen succeeding
/// on the old code). Only the derived manifest itself is a manifest there.
#[test]
fn a_foreign_manifest_pushed_as_a_v1_layer_is_no_manifest_of_the_repository() {
    let Some(t) = Tenants::new() else { return };
    let server = t.start();
    let port = server.port();
    let known = t.known_hosts(&server);
    let layer = random_bytes(5000, 1603);
    let (alice_manifest, manifest_bytes) = {
        let mut c = RegistrySession::open("ssh", Some(&t.alice.private), port, &known);
        push_private_app(&mut c.http, &layer)
    };

    let mut c = RegistrySession::open("ssh", Some(&t.mallory.private), port, &known);
    let mut img = V1Image::chain(1604, 1, 10);
    img.layers[0] = manifest_bytes.clone();
    v1_push(&mut c.http, "evil/v1", "t", &img);
    let r = c.http.request(
        "GET",
        "/v2/evil/v1/manifests/t",
        &[("Accept", "*/*")],
        ReqBody::None,
    );
    assert_eq!(r.status, 200, "the V1 tag read over V2: {}", r.text());
    assert_no_manifest_there(&mut c, "evil/v1", &alice_manifest, &manifest_bytes, &layer);
    let r = c
        .http
        .request("GET", "/v1/repositories/evil/v1/tags", &[], ReqBody::None);
    assert_eq!(r.status, 200);
    let tags = r.json();
    assert_eq!(
        tags.as_object()
            .map(|t| t.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["t".to_string()]),
        "a V1 tag projected from alice's manifest appeared in evil/v1: {tags}"
    );
}

/// Knowing a manifest's bytes is not holding what it names. Mallory
/// uploads alice's private image manifest (bytes seen in a CI log, say) to
/// her own repository as a plain blob, then pushes an index naming it. The
/// child must count only if it was pushed there *as a manifest* (its own
/// references linked there): before, the index was taken, projected to
/// V1 through the child's layers, and alice's layer read back through
/// mallory's repository.
#[test]
fn a_foreign_manifest_uploaded_as_a_blob_is_no_manifest_of_the_repository() {
    let Some(t) = Tenants::new() else { return };
    let server = t.start();
    let port = server.port();
    let known = t.known_hosts(&server);
    let layer = random_bytes(5000, 1601);
    let (alice_manifest, manifest_bytes) = {
        let mut c = RegistrySession::open("ssh", Some(&t.alice.private), port, &known);
        push_private_app(&mut c.http, &layer)
    };

    let mut c = RegistrySession::open("ssh", Some(&t.mallory.private), port, &known);
    assert_eq!(
        try_v2_push_blob(&mut c.http, "evil/x", &manifest_bytes).unwrap(),
        alice_manifest
    );
    assert_no_manifest_there(&mut c, "evil/x", &alice_manifest, &manifest_bytes, &layer);
    let r = c
        .http
        .request("GET", "/v1/repositories/evil/x/tags", &[], ReqBody::None);
    if r.status == 200 {
        assert_eq!(
            r.json(),
            serde_json::json!({}),
            "V1 tags appeared in evil/x"
        );
    }
}
