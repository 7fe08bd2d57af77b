//! `berth push` and verification where the bytes land (issue 17): against
//! a berth registry (it announces `Berth-Verifies: diff-id`) the client
//! neither inflates nor hashes the layers it sends and does not read the
//! ones the registry has, and a bad archive still publishes nothing;
//! against distribution it checks everything locally, as before. The
//! signal is the client's own debug log line for each layer (`sent
//! unchecked` / `inflating locally`), not a timing.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_tests::{bin, require_tool, run_ok, snapshot, tcp_conn, Http, HttpServer, ReqBody};

use crate::archive::OCI_PAIR;
use crate::roles::distribution;

/// `berth push REGISTRY REF --input ARCHIVE` with the client's debug log.
fn push(registry: &str, reference: &str, archive: &Path) -> Output {
    Command::new(bin("berth"))
        .args(["push", registry, reference, "--input"])
        .arg(archive)
        .arg("-q")
        .env("BERTH_LOG", "berth=debug")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// good.tar (layers A, B), bad.tar (C whose diff_id the config gets
/// wrong, B) and liar.tar (A, B with their diff_ids swapped) in `dir`.
fn archives(dir: &Path) -> bool {
    if !require_tool("python3", "python3") {
        return false;
    }
    run_ok(Command::new("python3").args(["-c", OCI_PAIR]).arg(dir));
    true
}

/// Audit records of one kind of write in a berth store.
fn audited(root: &Path, op: &str) -> usize {
    let log = std::fs::read_to_string(root.join("_berth/audit.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(&format!(r#""op":"{op}""#)))
        .count()
}

/// Status of `GET /v2/<repo>/manifests/<tag>`.
fn manifest_status(addr: std::net::SocketAddr, repo: &str, tag: &str) -> u16 {
    tcp_conn(addr)
        .request(
            "GET",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            ReqBody::None,
        )
        .status
}

#[test]
fn against_a_berth_registry_push_sends_layers_unchecked_and_a_bad_archive_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    if !archives(dir.path()) {
        return;
    }
    let root = dir.path().join("reg");
    let server = HttpServer::start_with(&root, &[], Stdio::null());
    let registry = server.url();

    let out = push(&registry, "team/good:1", &dir.path().join("good.tar"));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        log.matches("sent unchecked").count(),
        3,
        "the config and two layers: {log}"
    );
    assert!(!log.contains("inflating locally"), "{log}");
    assert_eq!(audited(&root, "blob.upload"), 3);

    // Re-push: nothing read, nothing sent; the only write is the manifest.
    let out = push(&registry, "team/good:2", &dir.path().join("good.tar"));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        !log.contains("sent unchecked") && !log.contains("inflating"),
        "{log}"
    );
    assert_eq!(audited(&root, "blob.upload"), 3, "no blob sent again");
    assert_eq!(audited(&root, "manifest.put"), 2);

    // A layer whose config diff_id is wrong, new to the registry: the
    // registry's measurement (the last PATCH's Berth-Diff-Id) refuses it
    // before anything is committed.
    let before = snapshot(&root);
    let out = push(&registry, "team/bad:1", &dir.path().join("bad.tar"));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("does not match the image's diff_id"), "{log}");
    assert!(!log.contains("inflating locally"), "{log}");
    let after: Vec<_> = snapshot(&root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("_berth/audit.log"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(p, _)| !p.starts_with("_berth/audit.log"))
        .collect();
    assert_eq!(after, before, "nothing published");
    assert_eq!(manifest_status(server.addr, "team/bad", "1"), 404);

    // Layers the registry has, with a config lying about them: the client
    // does not read them; the registry's manifest PUT refuses the image.
    let out = push(&registry, "team/liar:1", &dir.path().join("liar.tar"));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("rootfs.diff_ids[0]"), "{log}");
    // Only the new config is sent; the layers are neither read nor sent.
    assert!(!log.contains("inflating locally"), "{log}");
    assert_eq!(log.matches("sent unchecked").count(), 1, "{log}");
    assert_eq!(manifest_status(server.addr, "team/liar", "1"), 404);
    assert_eq!(audited(&root, "manifest.put"), 2, "no manifest stored");
}

#[test]
fn against_distribution_push_still_checks_every_layer_locally() {
    if !require_tool("docker-registry", "docker-registry") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if !archives(dir.path()) {
        return;
    }
    let (_distribution, addr) = distribution(dir.path(), None);
    let registry = format!("http://{addr}");

    let out = push(&registry, "team/good:1", &dir.path().join("good.tar"));
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("inflating locally").count(), 2, "{log}");
    assert!(!log.contains("sent unchecked"), "{log}");

    let out = push(&registry, "team/bad:1", &dir.path().join("bad.tar"));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("does not match the image's diff_id"), "{log}");
    assert_eq!(manifest_status(addr, "team/bad", "1"), 404);

    // Present layers are read and checked too: the lie is found here.
    let out = push(&registry, "team/liar:1", &dir.path().join("liar.tar"));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("inflating locally"), "{log}");
    assert_eq!(manifest_status(addr, "team/liar", "1"), 404);
}
