//! Verification where the bytes land (issue 17): layer facts recorded on
//! ingest or on demand, their headers, and manifest PUT refusing a config
//! whose `rootfs.diff_ids` lie about a layer — pushed over plain HTTP with
//! the suite's HTTP client, as any client could.

use std::path::Path;
use std::process::Command;

use berth_tests::*;
use serde_json::json;

type Conn = TcpConn;

/// A tar of a few files of `seed`-derived content, made with `tar`.
fn seeded_tar(dir: &Path, name: &str, seed: u64) -> Vec<u8> {
    make_tar(
        dir,
        name,
        &[("a", &random_bytes(200_000, seed)), ("b", &[b'x'; 50_000])],
    )
}

/// `data` through a compressor command (`gzip -n -c`, `zstd -q -c`).
fn compress(dir: &Path, tool: &[&str], data: &[u8]) -> Vec<u8> {
    let p = dir.join("compress-input");
    std::fs::write(&p, data).unwrap();
    run_ok(Command::new(tool[0]).args(&tool[1..]).arg(&p)).stdout
}

/// POST + one PATCH per piece + closing PUT; returns the closing answer.
fn push_session(c: &mut Conn, repo: &str, pieces: &[&[u8]]) -> HttpResponse {
    let all: Vec<u8> = pieces.concat();
    let r = c.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let mut loc = r.header("location").unwrap().to_string();
    for p in pieces {
        let r = c.request("PATCH", &loc, &[], ReqBody::Sized(p));
        assert_eq!(r.status, 202, "{}", r.text());
        loc = r.header("location").unwrap().to_string();
    }
    let r = c.request(
        "PUT",
        &format!("{loc}?digest={}", digest(&all)),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r
}

/// Monolithic POST `?digest=`; returns the answer.
fn push_monolithic(c: &mut Conn, repo: &str, data: &[u8]) -> HttpResponse {
    let r = c.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={}", digest(data)),
        &[("Content-Type", "application/octet-stream")],
        ReqBody::Sized(data),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r
}

fn head_blob(c: &mut Conn, repo: &str, digest: &str) -> HttpResponse {
    let r = c.request(
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 200);
    r
}

/// `r` announces `uncompressed` as the blob's layer content.
fn assert_facts(r: &HttpResponse, uncompressed: &[u8], what: &str) {
    let diff_id = digest(uncompressed);
    assert_eq!(r.header("berth-diff-id"), Some(diff_id.as_str()), "{what}");
    let size = uncompressed.len().to_string();
    assert_eq!(
        r.header("berth-uncompressed-size"),
        Some(size.as_str()),
        "{what}"
    );
}

/// An image config listing `diff_ids`.
fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().map(|_| json!({"created_by": "test"})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// An OCI manifest of `config` and `(media type, bytes)` layers.
fn manifest(config: &[u8], layers: &[(&str, &[u8])]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": config.len()},
        "layers": layers.iter().map(|(mt, l)| json!({
            "mediaType": mt, "digest": digest(l), "size": l.len()})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn put_manifest(c: &mut Conn, repo: &str, tag: &str, m: &[u8]) -> HttpResponse {
    c.request(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        ReqBody::Sized(m),
    )
}

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

#[test]
fn a_config_lying_about_a_layer_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let server = HttpServer::start(&root);
    let mut c = tcp_conn(server.addr);
    let (tar0, tar1, other) = (
        seeded_tar(dir.path(), "l0", 1),
        seeded_tar(dir.path(), "l1", 2),
        seeded_tar(dir.path(), "other", 3),
    );
    let (gz0, gz1) = (
        compress(dir.path(), &["gzip", "-n", "-c"], &tar0),
        compress(dir.path(), &["gzip", "-n", "-c"], &tar1),
    );
    push_session(&mut c, "acme/app", &[&gz0]);
    push_session(&mut c, "acme/app", &[&gz1]);
    // The lie: layer 1 is said to be `other`.
    let lying = config(&[digest(&tar0), digest(&other)]);
    push_session(&mut c, "acme/app", &[&lying]);
    let m = manifest(&lying, &[(GZIP_LAYER, &gz0), (GZIP_LAYER, &gz1)]);
    let before = durable_snapshot(&root);
    let r = put_manifest(&mut c, "acme/app", "v1", &m);
    assert_eq!(
        r.status,
        400,
        "a config lying about layer 1 was accepted: {}",
        r.text()
    );
    let body = r.json();
    let e = &body["errors"][0];
    assert_eq!(e["code"], "MANIFEST_INVALID", "{body}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("layer 1")
            && message.contains(&digest(&gz1))
            && message.contains(&digest(&other))
            && message.contains(&digest(&tar1)),
        "{message}"
    );
    assert_eq!(e["detail"]["layer"], 1);
    assert_eq!(e["detail"]["digest"], digest(&gz1).as_str());
    assert_eq!(
        durable_snapshot(&root),
        before,
        "a refused manifest changed the store"
    );
    let r = c.request("GET", "/v2/acme/app/manifests/v1", &[], ReqBody::None);
    assert_eq!(r.status, 404);

    // Too few diff_ids: refused too.
    let short = config(&[digest(&tar0)]);
    push_session(&mut c, "acme/app", &[&short]);
    let r = put_manifest(
        &mut c,
        "acme/app",
        "v1",
        &manifest(&short, &[(GZIP_LAYER, &gz0), (GZIP_LAYER, &gz1)]),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("1 diff_ids for 2 layers"), "{}", r.text());

    // The honest config is accepted.
    let honest = config(&[digest(&tar0), digest(&tar1)]);
    push_session(&mut c, "acme/app", &[&honest]);
    let r = put_manifest(
        &mut c,
        "acme/app",
        "v1",
        &manifest(&honest, &[(GZIP_LAYER, &gz0), (GZIP_LAYER, &gz1)]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn layer_facts_are_recorded_on_ingest_or_on_demand_and_answered_in_headers() {
    if !require_tool("zstd", "zstd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let server = HttpServer::start(&root);
    let mut c = tcp_conn(server.addr);
    let r = c.request("GET", "/v2/", &[], ReqBody::None);
    assert_eq!(r.header("berth-verifies"), Some("diff-id"));

    let (tar0, tar1, tar2) = (
        seeded_tar(dir.path(), "l0", 10),
        seeded_tar(dir.path(), "l1", 11),
        seeded_tar(dir.path(), "l2", 12),
    );
    let gz = compress(dir.path(), &["gzip", "-n", "-c"], &tar0);
    let zst = compress(dir.path(), &["zstd", "-q", "-c"], &tar1);
    // gzip in a session of three PATCHes: measured while it streamed.
    let third = gz.len() / 3;
    let r = push_session(
        &mut c,
        "acme/facts",
        &[&gz[..third], &gz[third..2 * third], &gz[2 * third..]],
    );
    assert_facts(&r, &tar0, "closing PUT of a gzip layer");
    assert_facts(
        &head_blob(&mut c, "acme/facts", &digest(&gz)),
        &tar0,
        "HEAD gzip",
    );
    // zstd, monolithic.
    let r = push_monolithic(&mut c, "acme/facts", &zst);
    assert_facts(&r, &tar1, "monolithic POST of a zstd layer");
    let r = c.request(
        "GET",
        &format!("/v2/acme/facts/blobs/{}", digest(&zst)),
        &[],
        ReqBody::None,
    );
    assert_eq!(r.body, zst);
    assert_facts(&r, &tar1, "GET zstd");
    // A plain tar.
    let r = push_session(&mut c, "acme/facts", &[&tar2]);
    assert_facts(&r, &tar2, "closing PUT of a plain tar");
    // JSON is no layer: no record, no headers.
    let cfg = config(&[digest(&tar0), digest(&tar1), digest(&tar2)]);
    let r = push_session(&mut c, "acme/facts", &[&cfg]);
    assert_eq!(r.header("berth-diff-id"), None);
    assert_eq!(
        head_blob(&mut c, "acme/facts", &digest(&cfg)).header("berth-diff-id"),
        None
    );
    let records = root.join("_berth/layerfacts");
    assert!(!records.join(sha256_hex(&cfg)).exists());

    // A blob from before the records (record removed): HEAD does not
    // compute it; the manifest PUT does, and keeps it.
    let record = records.join(sha256_hex(&zst));
    let kept = std::fs::read(&record).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    assert_eq!(parsed["diff_id"], digest(&tar1).as_str());
    assert_eq!(parsed["compression"], "zstd");
    std::fs::remove_file(&record).unwrap();
    assert_eq!(
        head_blob(&mut c, "acme/facts", &digest(&zst)).header("berth-diff-id"),
        None
    );
    let m = manifest(
        &cfg,
        &[(GZIP_LAYER, &gz), (ZSTD_LAYER, &zst), (TAR_LAYER, &tar2)],
    );
    let r = put_manifest(&mut c, "acme/facts", "v1", &m);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(std::fs::read(&record).unwrap(), kept);
    assert_facts(
        &head_blob(&mut c, "acme/facts", &digest(&zst)),
        &tar1,
        "HEAD after the PUT",
    );

    // A corrupt gzip layer (right digest, broken stream): stored as a blob,
    // no record, and a manifest naming it as a layer is refused.
    let mut bad = compress(
        dir.path(),
        &["gzip", "-n", "-c"],
        &seeded_tar(dir.path(), "l3", 13),
    );
    let n = bad.len();
    bad.truncate(n - 30);
    let r = push_monolithic(&mut c, "acme/facts", &bad);
    assert_eq!(r.header("berth-diff-id"), None);
    assert!(!records.join(sha256_hex(&bad)).exists());
    let cfg = config(&[digest(&tar0), digest(b"whatever")]);
    push_session(&mut c, "acme/facts", &[&cfg]);
    let r = put_manifest(
        &mut c,
        "acme/facts",
        "bad",
        &manifest(&cfg, &[(GZIP_LAYER, &gz), (GZIP_LAYER, &bad)]),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("not a readable gzip stream"),
        "{}",
        r.text()
    );

    // gc removes a record with its blob; fsck is clean meanwhile.
    let out = run_ok(
        Command::new(berth_tests::bin("berth-server"))
            .args(["fsck", "--root"])
            .arg(&root),
    );
    assert!(out.status.success());
}
