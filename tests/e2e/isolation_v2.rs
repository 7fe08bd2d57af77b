//! Repository isolation in V2 (issue 14, items 1, 2 and 5), each test the
//! attack itself, over `ssh -s docker-registry` against
//! `berth-server serve --access FILE`: mallory may write `evil/`, alice owns
//! `private/` (and writes `public/`), `public/` is readable by `@anonymous`.
//!
//! * A manifest PUT naming blobs of another repository is refused exactly
//!   like one naming blobs that exist nowhere, and links nothing.
//! * A manifest is readable by digest only in repositories it was pushed
//!   (or mounted, derived, mirrored) into.
//! * An upload session answers only its opener, through the repository it
//!   was opened in — also through a second server process on the store.
//! * A pull-through mirror links a blob into a repository only when the
//!   upstream gave it for that repository.
//! * On a store written before (links without records), `fsck` names the
//!   links the old manifest PUT leaked and `--repair` removes them, keeping
//!   the links real pushes made.

use std::path::{Path, PathBuf};

use berth_tests::*;
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

type Conn = PipeConn;

/// The config and layer digests of a pushed image manifest.
fn parts_of(c: &mut Conn, repo: &str, digest: &str) -> (Value, Vec<Value>) {
    let r = c.request(
        "GET",
        &format!("/v2/{repo}/manifests/{digest}"),
        &[("Accept", OCI_MANIFEST)],
        ReqBody::None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    (m["config"].clone(), m["layers"].as_array().unwrap().clone())
}

fn manifest_naming(config: &Value, layers: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": config, "layers": layers,
    }))
    .unwrap()
}

fn put_manifest(c: &mut Conn, repo: &str, reference: &str, mt: &str, body: &[u8]) -> HttpResponse {
    c.request(
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", mt)],
        ReqBody::Sized(body),
    )
}

/// `desc` with its digest replaced by one of bytes that exist nowhere.
fn unknown_twin(desc: &Value, seed: u64) -> Value {
    let mut d = desc.clone();
    d["digest"] = json!(digest(&random_bytes(64, seed)));
    d
}

/// An error body with every digest in it replaced, so the answers for two
/// different digests can be compared.
fn without_digests(body: &str, digests: &[&str]) -> String {
    digests
        .iter()
        .fold(body.to_string(), |b, d| b.replace(d, "<digest>"))
}

#[test]
fn stealing_blobs_through_a_manifest_put_is_refused_like_an_unknown_digest() {
    let Some(w) = Tenants::new() else { return };
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let port = server.port();
    let mut alice = subsystem_conn(Some(&w.alice), port);
    let secret = random_bytes(5000, 1401);
    let alice_manifest = v2_push(
        &mut alice.http,
        "private/app",
        "1",
        std::slice::from_ref(&secret),
    );
    let (config, layers) = parts_of(&mut alice.http, "private/app", &alice_manifest);
    let layer = layers[0]["digest"].as_str().unwrap().to_string();

    let mut mallory = subsystem_conn(Some(&w.mallory), port);
    // The attack: a manifest in evil/ naming alice's config and layer.
    let steal = manifest_naming(&config, &layers);
    let r = put_manifest(&mut mallory.http, "evil/x", "steal", OCI_MANIFEST, &steal);
    let stolen = r.text();
    assert_eq!(r.status, 400, "manifest PUT naming alice's blobs: {stolen}");
    assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    // The same manifest naming digests that exist nowhere: the same answer,
    // so the PUT is no oracle for what the store holds.
    let (fake_config, fake_layer) = (unknown_twin(&config, 1), unknown_twin(&layers[0], 2));
    let fake = manifest_naming(&fake_config, std::slice::from_ref(&fake_layer));
    let r = put_manifest(&mut mallory.http, "evil/x", "steal", OCI_MANIFEST, &fake);
    assert_eq!(r.status, 400);
    assert_eq!(
        without_digests(&stolen, &[config["digest"].as_str().unwrap(), &layer]),
        without_digests(
            &r.text(),
            &[
                fake_config["digest"].as_str().unwrap(),
                fake_layer["digest"].as_str().unwrap()
            ]
        ),
        "answers for foreign and for unknown digests differ"
    );
    // Nothing was linked: the layer stays unknown in evil/x, and a HEAD
    // there tells no more about alice's layer than about a made-up one.
    let r = mallory.http.request(
        "GET",
        &format!("/v2/evil/x/blobs/{layer}"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 404, "alice's layer read through evil/x");
    assert_ne!(r.body, secret);
    let head = |c: &mut Conn, d: &str| {
        let r = c.request("HEAD", &format!("/v2/evil/x/blobs/{d}"), &[], ReqBody::None);
        let mut h: Vec<(String, String)> =
            r.headers.into_iter().filter(|(k, _)| k != "date").collect();
        h.sort();
        (r.status, h)
    };
    let foreign = head(&mut mallory.http, &layer);
    let unknown = head(&mut mallory.http, fake_layer["digest"].as_str().unwrap());
    assert_eq!(foreign, unknown, "blob HEAD is an existence oracle");
    // An index naming alice's manifest is refused the same way.
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": alice_manifest, "size": 100,
                       "platform": {"os": "linux", "architecture": "amd64"}}]}))
    .unwrap();
    let r = put_manifest(&mut mallory.http, "evil/x", "idx", OCI_INDEX, &index);
    assert_eq!(r.status, 400, "index naming alice's manifest: {}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    let r = mallory.http.request(
        "GET",
        &format!("/v2/evil/x/manifests/{alice_manifest}"),
        &[("Accept", OCI_MANIFEST)],
        ReqBody::None,
    );
    assert_eq!(r.status, 404);

    // What stays legitimate: alice mounts her blobs into another of her
    // repositories, then pushes the same manifest there.
    for d in [config["digest"].as_str().unwrap(), &layer] {
        let r = alice.http.request(
            "POST",
            &format!("/v2/private/copy/blobs/uploads/?mount={d}&from=private/app"),
            &[],
            ReqBody::None,
        );
        assert_eq!(r.status, 201, "mount: {}", r.text());
    }
    let r = put_manifest(&mut alice.http, "private/copy", "1", OCI_MANIFEST, &steal);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = alice.http.request(
        "GET",
        &format!("/v2/private/copy/blobs/{layer}"),
        &[],
        ReqBody::None,
    );
    assert_eq!((r.status, r.body == secret), (200, true));
}

#[test]
fn manifests_by_digest_answer_only_where_they_were_pushed() {
    let Some(w) = Tenants::new() else { return };
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let port = server.port();
    let mut alice = subsystem_conn(Some(&w.alice), port);
    let private = v2_push(
        &mut alice.http,
        "private/app",
        "1",
        &[random_bytes(3000, 1402)],
    );
    let get = |c: &mut Conn, method: &str, repo: &str, reference: &str| {
        c.request(
            method,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", OCI_MANIFEST)],
            ReqBody::None,
        )
    };
    // The owner, in the repository it was pushed to.
    assert_eq!(
        get(&mut alice.http, "GET", "private/app", &private).status,
        200
    );
    // The attacks: by digest through a repository of one's own, and
    // anonymously through the public namespace.
    let mut mallory = subsystem_conn(Some(&w.mallory), port);
    for method in ["GET", "HEAD"] {
        let r = get(&mut mallory.http, method, "evil/anything", &private);
        assert_eq!(r.status, 404, "{method} alice's manifest through evil/");
    }
    let r = get(&mut mallory.http, "GET", "evil/anything", &private);
    assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let mut anonymous = subsystem_conn(None, port);
    for method in ["GET", "HEAD"] {
        let r = get(&mut anonymous.http, method, "public/anything", &private);
        assert_eq!(r.status, 404, "anonymous {method} through public/");
    }
    // Not even alice sees it by digest in a repository it was never pushed to.
    assert_eq!(
        get(&mut alice.http, "GET", "private/other", &private).status,
        404
    );

    // A V1 push stays readable through V2 in its own repository (tag,
    // digest, blobs), and only there.
    let img = V1Image::chain(1403, 2, 2000);
    v1_push(&mut alice.http, "public/v1app", "latest", &img);
    let r = get(&mut anonymous.http, "GET", "public/v1app", "latest");
    assert_eq!(r.status, 200, "{}", r.text());
    let derived = r.header("docker-content-digest").unwrap().to_string();
    let layer = r.json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(&mut anonymous.http, "GET", "public/v1app", &derived).status,
        200
    );
    let r = anonymous.http.request(
        "GET",
        &format!("/v2/public/v1app/blobs/{layer}"),
        &[],
        ReqBody::None,
    );
    assert_eq!((r.status, r.body == img.layers[0]), (200, true));
    assert_eq!(
        get(&mut anonymous.http, "GET", "public/elsewhere", &derived).status,
        404
    );
}

#[test]
fn upload_sessions_answer_only_their_opener_in_their_repository() {
    let Some(w) = Tenants::new() else { return };
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let port = server.port();
    let data = random_bytes(20_000, 1404);
    let digest = digest(&data);
    let mut alice = subsystem_conn(Some(&w.alice), port);
    let r = alice
        .http
        .request("POST", "/v2/private/app/blobs/uploads/", &[], ReqBody::None);
    assert_eq!(r.status, 202, "{}", r.text());
    let uuid = r.header("docker-upload-uuid").unwrap().to_string();
    let loc = r.header("location").unwrap().to_string();
    let r = alice.http.request(
        "PATCH",
        &loc,
        &[("Content-Range", "0-9999")],
        ReqBody::Sized(&data[..10_000]),
    );
    assert_eq!(r.status, 202, "{}", r.text());

    // The attacks: mallory with the UUID through her own repository, and
    // alice's own session through another of her repositories.
    let mut mallory = subsystem_conn(Some(&w.mallory), port);
    let foreign = [
        (
            &mut mallory.http,
            format!("/v2/evil/x/blobs/uploads/{uuid}"),
        ),
        (
            &mut alice.http,
            format!("/v2/private/other/blobs/uploads/{uuid}"),
        ),
    ];
    for (c, path) in foreign {
        let r = c.request(
            "PATCH",
            &path,
            &[("Content-Range", "10000-10004")],
            ReqBody::Sized(b"EVIL!"),
        );
        assert_eq!(r.status, 404, "PATCH {path}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
        assert!(r.header("berth-upload-digest").is_none());
        assert_eq!(c.request("GET", &path, &[], ReqBody::None).status, 404);
        let r = c.request(
            "PUT",
            &format!("{path}?digest={digest}"),
            &[],
            ReqBody::Sized(&data[10_000..]),
        );
        assert_eq!(r.status, 404, "PUT {path}: {}", r.text());
        assert_eq!(c.request("DELETE", &path, &[], ReqBody::None).status, 404);
    }
    let r = mallory.http.request(
        "GET",
        &format!("/v2/evil/x/blobs/{digest}"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 404);

    // The session is untouched, and its owner resumes it through a second
    // server process on the same store.
    let state2 = w.state.join("second");
    std::fs::create_dir_all(&state2).unwrap();
    let second = SshServer::start_with_access(&w.root, &w.access, &state2, &[]);
    let mut again = subsystem_conn(Some(&w.alice), second.port());
    let r = again.http.request("GET", &loc, &[], ReqBody::None);
    assert_eq!((r.status, r.header("range")), (204, Some("0-9999")));
    let r = again.http.request(
        "PATCH",
        &loc,
        &[("Content-Range", "10000-14999")],
        ReqBody::Sized(&data[10_000..15_000]),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let r = again.http.request(
        "PUT",
        &format!("{loc}?digest={digest}"),
        &[],
        ReqBody::Sized(&data[15_000..]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = again.http.request(
        "GET",
        &format!("/v2/private/app/blobs/{digest}"),
        &[],
        ReqBody::None,
    );
    assert_eq!((r.status, r.body == data), (200, true));
    // A finished session is unknown to everyone, its owner included.
    let r = again.http.request("DELETE", &loc, &[], ReqBody::None);
    assert_eq!(r.status, 404);
}

/// `berth-server serve --mirror-of UPSTREAM --access FILE` on `root`.
fn ssh_mirror(w: &Tenants, root: &Path, upstream: &Path) -> SshServer {
    let state = w.state.join("mirror");
    std::fs::create_dir_all(&state).unwrap();
    SshServer::start_with_access(
        root,
        &w.access,
        &state,
        &["--mirror-of", upstream.to_str().unwrap()],
    )
}

#[test]
fn the_mirror_links_only_what_the_upstream_gave_for_the_repository() {
    let Some(w) = Tenants::new() else { return };
    // The upstream: team/one holds layer A; team/two holds layers B and A,
    // but then loses A (its link is removed, as `fsck --repair` would).
    let upstream = w.state.join("upstream");
    let (a, b) = (random_bytes(4000, 1405), random_bytes(4000, 1406));
    let one;
    {
        let up = HttpServer::start(&upstream);
        let mut c = tcp_conn(up.addr);
        one = v2_push(&mut c, "team/one", "1", std::slice::from_ref(&a));
        v2_push(&mut c, "team/two", "1", &[b.clone(), a.clone()]);
    }
    let a_hex = sha256_hex(&a);
    std::fs::remove_file(upstream.join("_berth/v2/team/two/_blobs").join(&a_hex)).unwrap();

    let mirror_root = w.state.join("mirror-store");
    let mirror = ssh_mirror(&w, &mirror_root, &upstream);
    let mut m = subsystem_conn(Some(&w.mallory), mirror.port());
    let blob = |c: &mut Conn, repo: &str, hex: &str| {
        c.request(
            "GET",
            &format!("/v2/{repo}/blobs/sha256:{hex}"),
            &[],
            ReqBody::None,
        )
    };
    let manifest = |c: &mut Conn, repo: &str, reference: &str| {
        c.request(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", OCI_MANIFEST)],
            ReqBody::None,
        )
        .status
    };
    // team/one pulled whole: A is now in the mirror's pool.
    assert_eq!(manifest(&mut m.http, "team/one", "1"), 200);
    let r = blob(&mut m.http, "team/one", &a_hex);
    assert_eq!((r.status, r.body == a), (200, true));
    // team/two's manifest names A, but the upstream does not give A for
    // team/two: the mirror must not hand out its pooled copy there.
    assert_eq!(manifest(&mut m.http, "team/two", "1"), 200);
    let r = blob(&mut m.http, "team/two", &a_hex);
    assert_eq!(r.status, 404, "A served through team/two");
    let r = blob(&mut m.http, "team/two", &sha256_hex(&b));
    assert_eq!((r.status, r.body == b), (200, true));
    // Nor does a manifest stored for team/one answer by digest in team/two.
    assert_eq!(manifest(&mut m.http, "team/two", &one), 404);
    assert_eq!(manifest(&mut m.http, "team/one", &one), 200);
}

/// Knowing a manifest's bytes is not holding what it names, on a mirror
/// either. Mallory, who may write `evil/` upstream, uploads alice's
/// private manifest's bytes there as a plain blob, and GETs that blob
/// through the mirror, whose pool already holds the bytes (alice pulled
/// her image). The blob route linked it with the kind a mirrored manifest
/// has, so the mirror then answered alice's manifest by digest in
/// `evil/x` (and would have taken an index over it, had pushes been
/// allowed) (found by a review, seen succeeding on the old code). A blob
/// the mirror links is a blob there.
#[test]
fn a_manifest_mirrored_as_a_blob_is_no_manifest_of_the_repository() {
    let Some(w) = Tenants::new() else { return };
    let upstream = w.state.join("upstream");
    let layer = random_bytes(4000, 1407);
    let (alice_manifest, manifest_bytes) = {
        let up = HttpServer::start(&upstream);
        let mut c = tcp_conn(up.addr);
        let d = v2_push(&mut c, "private/app", "1", std::slice::from_ref(&layer));
        let r = c.request(
            "GET",
            &format!("/v2/private/app/manifests/{d}"),
            &[("Accept", OCI_MANIFEST)],
            ReqBody::None,
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            try_v2_push_blob(&mut c, "evil/x", &r.body).unwrap(),
            d,
            "the manifest's bytes uploaded upstream as a blob of evil/x"
        );
        (d, r.body)
    };
    let mirror = ssh_mirror(&w, &w.state.join("mirror-store"), &upstream);
    let mut a = subsystem_conn(Some(&w.alice), mirror.port());
    let r = a.http.request(
        "GET",
        "/v2/private/app/manifests/1",
        &[("Accept", OCI_MANIFEST)],
        ReqBody::None,
    );
    assert_eq!((r.status, r.body == manifest_bytes), (200, true));

    let mut m = subsystem_conn(Some(&w.mallory), mirror.port());
    let r = m.http.request(
        "GET",
        &format!("/v2/evil/x/blobs/{alice_manifest}"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 200, "the upstream gives it as a blob of evil/x");
    let r = m.http.request(
        "GET",
        &format!("/v2/evil/x/manifests/{alice_manifest}"),
        &[("Accept", OCI_MANIFEST)],
        ReqBody::None,
    );
    assert_eq!(
        r.status,
        404,
        "a blob the mirror linked answered as a manifest of evil/x: {}",
        r.text()
    );
}

/// On a mirror, what a tag's facts (`/_berth/tags`) showed of its image
/// depended on what the pool held, not on the repository: the created time
/// and platform come from the config, which the facts read from the pool
/// whether or not it was linked in the repository. So a reader of
/// `team/a` learnt from them whether anyone had pulled the same config
/// through `team/b` (found by a review, seen on the old code). The facts
/// follow only what the repository links.
#[test]
fn a_tags_facts_on_a_mirror_do_not_tell_what_other_repositories_pulled() {
    let Some(w) = Tenants::new() else { return };
    let upstream = w.state.join("upstream");
    let layer = random_bytes(4000, 1408);
    let config = {
        let up = HttpServer::start(&upstream);
        let mut c = tcp_conn(up.addr);
        let a = v2_push(&mut c, "team/a", "1", std::slice::from_ref(&layer));
        v2_push(&mut c, "team/b", "1", std::slice::from_ref(&layer));
        let r = c.request(
            "GET",
            &format!("/v2/team/a/manifests/{a}"),
            &[("Accept", OCI_MANIFEST)],
            ReqBody::None,
        );
        let m: Value = serde_json::from_slice(&r.body).unwrap();
        m["config"]["digest"].as_str().unwrap().to_string()
    };
    let mirror = ssh_mirror(&w, &w.state.join("mirror-store"), &upstream);
    let mut m = subsystem_conn(Some(&w.mallory), mirror.port());
    let facts = |c: &mut CommandConn| {
        let r = c
            .http
            .request("GET", "/_berth/tags?repository=team/a", &[], ReqBody::None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let manifest = m.http.request(
        "GET",
        "/v2/team/a/manifests/1",
        &[("Accept", OCI_MANIFEST)],
        ReqBody::None,
    );
    assert_eq!(manifest.status, 200);
    let before = facts(&mut m);

    // bob pulls the same config through team/b.
    let mut b = subsystem_conn(Some(&w.bob), mirror.port());
    let r = b.http.request(
        "GET",
        &format!("/v2/team/b/blobs/{config}"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 200);
    let after = facts(&mut m);
    assert_eq!(
        before, after,
        "team/a's tag facts changed when bob pulled through team/b"
    );
}

/// A repository's link directory.
fn links_dir(root: &Path, repo: &str) -> PathBuf {
    root.join("_berth/v2").join(repo).join("_blobs")
}

/// Empties a repository's link files, keeping their times: what berth wrote
/// for the same pushes before links said why.
fn strip_records(root: &Path, repo: &str) {
    for entry in std::fs::read_dir(links_dir(root, repo)).unwrap() {
        let path = entry.unwrap().path();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let f = std::fs::File::create(&path).unwrap();
        f.set_modified(modified).unwrap();
    }
}

/// Writes empty link files in this order, as the old manifest PUT did:
/// the manifest's own link, then those of everything it named.
fn leak_links(root: &Path, repo: &str, digests: &[&str]) {
    let dir = links_dir(root, repo);
    std::fs::create_dir_all(&dir).unwrap();
    for d in digests {
        std::fs::write(dir.join(d.strip_prefix("sha256:").unwrap()), b"").unwrap();
    }
}

#[test]
fn fsck_repair_removes_what_the_old_manifest_put_leaked() {
    let Some(w) = Tenants::new() else { return };
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let mut alice = subsystem_conn(Some(&w.alice), server.port());
    let secret = random_bytes(5000, 1407);
    let manifest = v2_push(
        &mut alice.http,
        "private/app",
        "1",
        std::slice::from_ref(&secret),
    );
    let (config, layers) = parts_of(&mut alice.http, "private/app", &manifest);
    let (config, layer) = (
        config["digest"].as_str().unwrap().to_string(),
        layers[0]["digest"].as_str().unwrap().to_string(),
    );
    // The store as the old code left it: alice's links of this push without
    // records, and mallory's steal of the same manifest in evil/x (the
    // manifest linked, then everything it named).
    strip_records(&w.root, "private/app");
    leak_links(&w.root, "evil/x", &[&manifest, &config, &layer]);
    let tags = w.root.join("_berth/v2/evil/x/_tags");
    std::fs::create_dir_all(&tags).unwrap();
    std::fs::write(
        tags.join("steal"),
        json!({"digest": manifest, "v1": null}).to_string(),
    )
    .unwrap();
    let mut mallory = subsystem_conn(Some(&w.mallory), server.port());
    let steal = |c: &mut Conn| {
        c.request(
            "GET",
            &format!("/v2/evil/x/blobs/{layer}"),
            &[],
            ReqBody::None,
        )
        .status
    };
    assert_eq!(
        steal(&mut mallory.http),
        200,
        "the leaked link before repair"
    );

    let (code, report) = fsck(&w.root, &[]);
    assert_eq!(code, 1, "{report}");
    let leaks: Vec<&str> = report.lines().filter(|l| l.contains("issue 14")).collect();
    assert_eq!(leaks.len(), 2, "config and layer of evil/x: {report}");
    assert!(leaks.iter().all(|l| l.contains("evil/x")), "{report}");
    let (_, report) = fsck(&w.root, &["--repair", "--grace", "0s"]);
    assert_eq!(
        report.lines().filter(|l| l.starts_with("repaired")).count(),
        2,
        "{report}"
    );
    assert!(report.contains("is not visible in evil/x"), "{report}");
    assert_eq!(
        steal(&mut mallory.http),
        404,
        "the leaked link after repair"
    );
    // alice's own legacy links were earned and kept.
    let r = alice.http.request(
        "GET",
        &format!("/v2/private/app/blobs/{layer}"),
        &[],
        ReqBody::None,
    );
    assert_eq!((r.status, r.body == secret), (200, true));
}
