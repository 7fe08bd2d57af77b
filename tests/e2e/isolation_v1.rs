//! V1 images and namespace isolation (issue 14, items 3 and 4), written as
//! the attacks. V1 image ids are global, so a user who may write *somewhere*
//! can upload any id, and V1 ids of V2 pushes are predictable. Each test
//! performs one attack over `ssh -s docker-registry` against
//! `berth-server serve --access FILE` and checks that it is refused:
//!
//! * plant-then-push: mallory plants the id alice's V2 base layer will get;
//!   alice's V1 view of her image must still serve her own bytes;
//! * a V1 push of an id mallory planted with other content answers 409 and
//!   never ties the planted image into alice's repository;
//! * announcing an id in one's own index (or naming it as a parent) grants
//!   no read and no tag;
//! * proof of possession: a user who uploads identical json and layer bytes
//!   may tag the image; one who only knows the json or has other bytes may not;
//! * an upload in progress cannot be finished by another user.

use berth_tests::*;

/// The tenants (`tests/lib.rs`: alice owns `private/`, mallory `evil/`,
/// bob `bob/`) and their server.
struct World {
    tenants: Tenants,
    server: SshServer,
}

impl std::ops::Deref for World {
    type Target = Tenants;
    fn deref(&self) -> &Tenants {
        &self.tenants
    }
}

fn world() -> Option<World> {
    let tenants = Tenants::new()?;
    let server = tenants.start();
    Some(World { tenants, server })
}

fn conn_as(key: &ClientKey, w: &World) -> CommandConn {
    subsystem_conn(Some(key), w.server.port())
}

type Conn = PipeConn;

/// Uploads one V1 image (json, layer, checksum) and asserts each step's 200:
/// how mallory plants an id.
fn plant(c: &mut Conn, id: &str, json: &[u8], layer: &[u8]) {
    v1_put_image(c, id, json, layer).unwrap_or_else(|e| panic!("plant {e}"));
}

/// The ancestry (top first) of `repo:tag` as `c` sees it over V1.
fn v1_ancestry(c: &mut Conn, repo: &str, tag: &str) -> Vec<String> {
    let r = c.request(
        "GET",
        &format!("/v1/repositories/{repo}/tags/{tag}"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 200, "{repo}:{tag}: {}", r.text());
    let top = r.json().as_str().unwrap().to_string();
    let r = c.request(
        "GET",
        &format!("/v1/images/{top}/ancestry"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 200, "ancestry of {top}: {}", r.text());
    serde_json::from_value(r.json()).unwrap()
}

fn layer_of(c: &mut Conn, id: &str) -> (u16, Vec<u8>) {
    let r = c.request("GET", &format!("/v1/images/{id}/layer"), &[], ReqBody::None);
    (r.status, r.body)
}

/// Checks alice's V1 view of `repo:tag` after mallory planted `predicted`
/// with `evil`: the ancestry avoids the planted id, alice reads exactly her
/// `layers` (root first), each json carries its own id, mallory reads none
/// of it and her planted image is unchanged. Returns the ancestry.
fn assert_alices_v1_view(
    w: &World,
    repo: &str,
    tag: &str,
    layers: &[&[u8]],
    predicted: &str,
    evil: &[u8],
) -> Vec<String> {
    let mut a = conn_as(&w.alice, w);
    let ancestry = v1_ancestry(&mut a.http, repo, tag);
    assert_eq!(ancestry.len(), layers.len(), "{ancestry:?}");
    assert!(
        !ancestry.iter().any(|id| id == predicted),
        "alice's V1 image is built on mallory's planted id {predicted}: {ancestry:?}"
    );
    for (id, want) in ancestry.iter().rev().zip(layers) {
        let (status, body) = layer_of(&mut a.http, id);
        assert_eq!(status, 200, "alice reads her layer {id}");
        assert!(body == *want, "alice's layer {id} is not her bytes");
        assert!(body != evil, "mallory's bytes served as {id}");
        let r = a
            .http
            .request("GET", &format!("/v1/images/{id}/json"), &[], ReqBody::None);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["id"], serde_json::json!(id));
    }
    let mut m = conn_as(&w.mallory, w);
    let (status, body) = layer_of(&mut m.http, predicted);
    assert_eq!(status, 200);
    assert!(body == evil, "the planted image changed");
    for id in &ancestry {
        assert_eq!(layer_of(&mut m.http, id).0, 404, "mallory reads {id}");
    }
    ancestry
}

/// Mallory uploads `evil` under `predicted` (a root image with her json).
fn plant_predicted(w: &World, predicted: &str, evil: &[u8]) {
    let json = format!(r#"{{"id":"{predicted}","created":"2014-01-01T00:00:00Z"}}"#);
    let mut m = conn_as(&w.mallory, w);
    plant(&mut m.http, predicted, json.as_bytes(), evil);
}

/// Mallory plants the V1 id that alice's V2 base layer will be given
/// (`sha256(hex(blob) + " ")`, schema1-builder), then alice pushes over V2
/// (raw HTTP over `ssh -s`, as curl would). Alice's V1 view of her own
/// image must serve her bytes and nowhere mallory's; mallory's planted
/// image stays as she uploaded it.
#[test]
fn plant_then_push_over_v2_keeps_alices_layers() {
    let Some(w) = world() else { return };
    let base = random_bytes(40_000, 1401);
    let app = random_bytes(20_000, 1402);
    let evil = random_bytes(40_000, 1403);
    let predicted = sha256_hex(format!("{} ", sha256_hex(&base)).as_bytes());
    plant_predicted(&w, &predicted, &evil);
    let mut a = conn_as(&w.alice, &w);
    v2_push(
        &mut a.http,
        "private/app",
        "latest",
        &[base.clone(), app.clone()],
    );
    let ancestry = assert_alices_v1_view(
        &w,
        "private/app",
        "latest",
        &[&base, &app],
        &predicted,
        &evil,
    );
    // After a restart (a new process on the store), a second push of the
    // same image lands on the same V1 ids.
    let mut w = w;
    w.server.proc.kill();
    w.server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let mut a = conn_as(&w.alice, &w);
    v2_push(&mut a.http, "private/app", "again", &[base, app]);
    assert_eq!(v1_ancestry(&mut a.http, "private/app", "again"), ancestry);
}

/// Writes an OCI layout at `dir` holding one image tagged `tag` with two
/// gzip layers (a tar of one file each); returns the two layer blobs.
fn oci_layout(dir: &std::path::Path, tag: &str, files: [&[u8]; 2]) -> [Vec<u8>; 2] {
    let tars = [
        make_tar(dir, "src0", &[("file0", files[0])]),
        make_tar(dir, "src1", &[("file1", files[1])]),
    ];
    let (_, gzs) = write_oci_layout(dir, tag, &tars, false);
    <[Vec<u8>; 2]>::try_from(gzs).unwrap()
}

/// The same attack with a real V2 client: skopeo pushes alice's image
/// through a `berth shim` logged in with her key.
#[test]
fn plant_then_skopeo_push_keeps_alices_layers() {
    let Some(w) = world() else { return };
    for (tool, package) in [("skopeo", "skopeo"), ("tar", "tar"), ("gzip", "gzip")] {
        if !require_tool(tool, package) {
            return;
        }
    }
    let layout = w.state.join("layout");
    let [base, app] = oci_layout(
        &layout,
        "1",
        [&random_bytes(30_000, 1412), &random_bytes(10_000, 1413)],
    );
    let evil = random_bytes(30_000, 1414);
    let predicted = sha256_hex(format!("{} ", sha256_hex(&base)).as_bytes());
    plant_predicted(&w, &predicted, &evil);
    let known = w.state.join("known_hosts");
    std::fs::write(&known, format!("{}\n", w.server.known_hosts_line())).unwrap();
    let mut cmd = std::process::Command::new(bin("berth"));
    cmd.args(["shim", "--listen", "127.0.0.1:0", "--known-hosts"])
        .arg(&known)
        .arg("--identity")
        .arg(&w.alice.private)
        .env_remove("SSH_AUTH_SOCK")
        .arg(format!("ssh://root@127.0.0.1:{}", w.server.port()));
    let (_shim, line) = spawn_until_line(cmd, "berth shim: serving", "berth shim");
    let addr = line.split("http://").nth(1).unwrap().trim().to_string();
    run_ok(std::process::Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{addr}/private/app:sk"),
    ]));
    assert_alices_v1_view(&w, "private/app", "sk", &[&base, &app], &predicted, &evil);
}

/// Mallory plants the base id of alice's V1 chain with other bytes; alice's
/// Docker 1.x push gets a 409 that is not "Image already exists" (so the
/// client stops instead of skipping), and her repository never references
/// the planted image.
#[test]
fn v1_push_of_a_planted_id_is_refused() {
    let Some(w) = world() else { return };
    let img = V1Image::chain(1404, 2, 30_000);
    let evil = random_bytes(30_000, 1405);
    {
        let mut m = conn_as(&w.mallory, &w);
        plant(&mut m.http, &img.ids[0], &img.jsons[0], &evil);
    }
    let mut a = conn_as(&w.alice, &w);
    let err = try_v1_push(&mut a.http, "private/app", "latest", &img)
        .expect_err("alice's push went through on a planted base");
    assert_eq!(err.status, 409, "{err:?}");
    assert!(err.body.contains("different content"), "{err:?}");
    let r = a.http.request(
        "GET",
        "/v1/repositories/private/app/tags",
        &[],
        ReqBody::None,
    );
    if r.status == 200 {
        for top in r.json().as_object().unwrap().values() {
            let top = top.as_str().unwrap();
            let anc = a.http.request(
                "GET",
                &format!("/v1/images/{top}/ancestry"),
                &[],
                ReqBody::None,
            );
            assert!(
                !anc.text().contains(&img.ids[0]),
                "the planted image is in alice's repository"
            );
        }
    } else {
        assert_eq!(r.status, 404, "{}", r.text());
    }
    assert_eq!(layer_of(&mut a.http, &img.ids[0]).0, 404);
    // Planted json with the same bytes but another layer: the layer PUT
    // that would prove possession is refused too.
    let img2 = V1Image::chain(1406, 1, 10_000);
    {
        let mut m = conn_as(&w.mallory, &w);
        plant(&mut m.http, &img2.ids[0], &img2.jsons[0], &evil);
    }
    let mut a = conn_as(&w.alice, &w);
    let err = try_v1_push(&mut a.http, "private/two", "latest", &img2)
        .expect_err("alice's push went through on a planted layer");
    assert_eq!(err.status, 409, "{err:?}");
    assert_eq!(layer_of(&mut a.http, &img2.ids[0]).0, 404);
}

/// Mallory announces alice's image ids in her own index, names them as a
/// parent, and tries to tag them: nothing of alice's becomes readable.
#[test]
fn announcing_an_id_grants_nothing() {
    let Some(w) = world() else { return };
    let img = V1Image::chain(1407, 2, 8_000);
    {
        let mut a = conn_as(&w.alice, &w);
        v1_push(&mut a.http, "private/app", "latest", &img);
    }
    let mut m = conn_as(&w.mallory, &w);
    let list = serde_json::to_vec(&serde_json::json!([{ "id": img.ids[0] }, { "id": img.ids[1] }]))
        .unwrap();
    for path in [
        "/v1/repositories/evil/grab/images",
        "/v1/repositories/evil/grab/",
    ] {
        let r = m.http.request("PUT", path, &[], ReqBody::Sized(&list));
        assert!(r.status == 204 || r.status == 200, "{path}: {}", r.text());
    }
    for id in &img.ids {
        for what in ["json", "layer", "ancestry"] {
            let r = m.http.request(
                "GET",
                &format!("/v1/images/{id}/{what}"),
                &[],
                ReqBody::None,
            );
            assert_eq!(r.status, 404, "mallory reads {what} of {id}: {}", r.text());
        }
        let r = m.http.request(
            "PUT",
            "/v1/repositories/evil/grab/tags/stolen",
            &[],
            ReqBody::Sized(format!("\"{id}\"").as_bytes()),
        );
        assert_eq!(r.status, 404, "mallory tags {id}: {}", r.text());
    }
    // A child of alice's image would put it in the ancestry of a tag of
    // mallory's: a json PUT naming an unreadable parent is refused.
    let child = sha256_hex(b"mallory-child");
    let json = format!(r#"{{"id":"{child}","parent":"{}"}}"#, img.ids[1]);
    let r = m.http.request(
        "PUT",
        &format!("/v1/images/{child}/json"),
        &[],
        ReqBody::Sized(json.as_bytes()),
    );
    assert_eq!(r.status, 400, "child of an unreadable parent: {}", r.text());
    let r = m
        .http
        .request("GET", "/v1/repositories/evil/grab/tags", &[], ReqBody::None);
    assert_eq!(
        r.status,
        404,
        "mallory's repository got a tag: {}",
        r.text()
    );
    // Alice still reads and pulls her own image.
    let mut a = conn_as(&w.alice, &w);
    v1_pull_and_verify(&mut a.http, "private/app", "latest", &img);
}

/// Bob has the same image as alice (identical json and layer bytes): his
/// ordinary Docker 1.x push proves possession and he may tag and pull it.
/// Mallory, who re-sends only the json (or other layer bytes), may not.
#[test]
fn proof_of_possession_lets_a_second_user_tag() {
    let Some(w) = world() else { return };
    let img = V1Image::chain(1408, 2, 12_000);
    {
        let mut a = conn_as(&w.alice, &w);
        v1_push(&mut a.http, "private/app", "latest", &img);
    }
    // Mallory: identical json, then no layer, then a tag.
    let mut m = conn_as(&w.mallory, &w);
    let root = &img.ids[0];
    let r = m.http.request(
        "PUT",
        &format!("/v1/images/{root}/json"),
        &[],
        ReqBody::Sized(&img.jsons[0]),
    );
    assert_eq!(r.status, 200, "identical json starts a proof: {}", r.text());
    let r = m.http.request(
        "PUT",
        "/v1/repositories/evil/grab/tags/x",
        &[],
        ReqBody::Sized(format!("\"{root}\"").as_bytes()),
    );
    assert_eq!(r.status, 404, "json alone is no proof: {}", r.text());
    assert_eq!(layer_of(&mut m.http, root).0, 404);
    // ...other layer bytes: refused, and the image is unchanged.
    let r = m.http.request(
        "PUT",
        &format!("/v1/images/{root}/layer"),
        &[],
        ReqBody::Chunked(&random_bytes(12_000, 1409), 4096),
    );
    assert_eq!(r.status, 409, "other layer bytes: {}", r.text());
    let r = m.http.request(
        "PUT",
        &format!("/v1/images/{root}/checksum"),
        &[("X-Docker-Checksum-Payload", &img.payload_checksum(0))],
        ReqBody::None,
    );
    assert_eq!(
        r.status,
        409,
        "checksum without a proven layer: {}",
        r.text()
    );
    let r = m.http.request(
        "PUT",
        "/v1/repositories/evil/grab/tags/x",
        &[],
        ReqBody::Sized(format!("\"{root}\"").as_bytes()),
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // Bob: the whole ordinary push, then a pull.
    let mut b = conn_as(&w.bob, &w);
    v1_push(&mut b.http, "bob/app", "latest", &img);
    v1_pull_and_verify(&mut b.http, "bob/app", "latest", &img);
    // Alice's image was never rewritten: her pull still verifies.
    let mut a = conn_as(&w.alice, &w);
    v1_pull_and_verify(&mut a.http, "private/app", "latest", &img);
}

/// Mallory tries to finish alice's upload in progress with her own layer
/// (or her checksum): an upload belongs to whoever PUT its json last, so
/// every step she sends is refused and alice's image is published with
/// alice's bytes, readable by alice only.
#[test]
fn an_upload_in_progress_cannot_be_finished_by_another_user() {
    let Some(w) = world() else { return };
    let img = V1Image::chain(1410, 1, 9_000);
    let id = &img.ids[0];
    let evil = random_bytes(9_000, 1411);
    let mut a = conn_as(&w.alice, &w);
    let r = a.http.request(
        "PUT",
        &format!("/v1/images/{id}/json"),
        &[],
        ReqBody::Sized(&img.jsons[0]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut m = conn_as(&w.mallory, &w);
    let r = m.http.request(
        "PUT",
        &format!("/v1/images/{id}/layer"),
        &[],
        ReqBody::Chunked(&evil, 4096),
    );
    assert_eq!(r.status, 409, "mallory's layer: {}", r.text());
    assert!(r.text().contains("another client"), "{}", r.text());
    let r = a.http.request(
        "PUT",
        &format!("/v1/images/{id}/layer"),
        &[],
        ReqBody::Chunked(&img.layers[0], 4096),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = m.http.request(
        "PUT",
        &format!("/v1/images/{id}/checksum"),
        &[("X-Docker-Checksum-Payload", &img.payload_checksum(0))],
        ReqBody::None,
    );
    assert_eq!(
        r.status,
        409,
        "mallory publishes alice's upload: {}",
        r.text()
    );
    let r = a.http.request(
        "PUT",
        &format!("/v1/images/{id}/checksum"),
        &[("X-Docker-Checksum-Payload", &img.payload_checksum(0))],
        ReqBody::None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (status, body) = layer_of(&mut a.http, id);
    assert_eq!(status, 200);
    assert!(body == img.layers[0], "alice's image lost her layer");
    assert_eq!(layer_of(&mut m.http, id).0, 404, "mallory reads it");
    let r = a.http.request(
        "PUT",
        "/v1/repositories/private/app/tags/latest",
        &[],
        ReqBody::Sized(format!("\"{id}\"").as_bytes()),
    );
    assert_eq!(r.status, 200, "alice tags her upload: {}", r.text());
}
