//! Access control by SSH key: an access file with admin, writer, reader and a
//! stranger, plus anonymous clients, over three namespaces (private, team,
//! public). Every V1 read, write and delete route is allowed or denied exactly
//! as the rules say; writes are audited.

use std::process::Command;

use berth_tests::*;

struct World {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    state: std::path::PathBuf,
    admin: ClientKey,
    writer: ClientKey,
    reader: ClientKey,
    stranger: ClientKey,
    access: std::path::PathBuf,
}

fn world() -> Option<World> {
    if !require_tool("ssh", "openssh-client") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let admin = ClientKey::generate(&state, "admin");
    let writer = ClientKey::generate(&state, "writer");
    let reader = ClientKey::generate(&state, "reader");
    let stranger = ClientKey::generate(&state, "stranger");
    let access = state.join("access.toml");
    std::fs::write(
        &access,
        format!(
            r#"
[users]
admin = ["{}"]
writer = ["{}"]
reader = ["{}"]

[groups]
staff = ["admin", "writer", "reader"]

[[rule]]
namespace = "private"
read = ["admin"]
write = ["admin"]
delete = ["admin"]

[[rule]]
namespace = "team"
read = ["@staff"]
write = ["writer", "admin"]
delete = ["admin"]

[[rule]]
namespace = "public"
read = ["@anonymous", "@all"]
write = ["admin"]
delete = ["admin"]
"#,
            admin.public_line, writer.public_line, reader.public_line
        ),
    )
    .unwrap();
    Some(World {
        root,
        state,
        admin,
        writer,
        reader,
        stranger,
        access,
        _dir: dir,
    })
}

fn session(via: &str, who: &str, w: &World, port: u16, known: &std::path::Path) -> RegistrySession {
    let key = match who {
        "admin" => Some(w.admin.private.as_path()),
        "writer" => Some(w.writer.private.as_path()),
        "reader" => Some(w.reader.private.as_path()),
        _ => None,
    };
    RegistrySession::open(via, key, port, known)
}

fn known_hosts_for(w: &World, server: &SshServer) -> std::path::PathBuf {
    let known = w.state.join(format!("known_hosts-{}", server.port()));
    std::fs::write(&known, format!("{}\n", server.known_hosts_line())).unwrap();
    known
}

#[test]
fn access_matrix_over_ssh_and_the_shim() {
    let Some(w) = world() else { return };
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let port = server.port();
    let images: Vec<V1Image> = (0..3).map(|i| V1Image::chain(40 + i, 2, 2000)).collect();
    let namespaces = ["private", "team", "public"];
    {
        let mut admin = subsystem_conn(Some(&w.admin), port);
        for (ns, img) in namespaces.iter().zip(&images) {
            v1_push(&mut admin.http, &format!("{ns}/app"), "latest", img);
        }
    }

    // Who may do what, per namespace: (read, write, delete).
    let expect = |who: &str, ns: &str| -> (bool, bool, bool) {
        match (who, ns) {
            ("writer", "private") => (false, false, false),
            ("writer", "team") => (true, true, false),
            ("writer", "public") => (true, false, false),
            ("reader", "private") => (false, false, false),
            ("reader", "team") => (true, false, false),
            ("reader", "public") => (true, false, false),
            ("anonymous", "public") => (true, false, false),
            ("anonymous", _) => (false, false, false),
            _ => unreachable!(),
        }
    };
    let known = known_hosts_for(&w, &server);
    for (via, who) in ["ssh", "shim"]
        .iter()
        .flat_map(|v| ["writer", "reader", "anonymous"].map(move |u| (*v, u)))
    {
        let mut c = session(via, who, &w, port, &known);
        let deny = if who == "anonymous" { 401 } else { 403 };
        for (ns, img) in namespaces.iter().zip(&images) {
            let (read, write, delete) = expect(who, ns);
            let repo = format!("{ns}/app");
            let top = img.ids.last().unwrap();
            let ctx = format!("{who} on {ns} via {via}");
            // reads
            let r = c.http.request(
                "GET",
                &format!("/v1/repositories/{repo}/tags"),
                &[],
                ReqBody::None,
            );
            assert_eq!(
                r.status,
                if read { 200 } else { deny },
                "{ctx}: tags {}",
                r.text()
            );
            let r = c.http.request(
                "GET",
                &format!("/v1/repositories/{repo}/tags/latest"),
                &[],
                ReqBody::None,
            );
            assert_eq!(r.status, if read { 200 } else { deny }, "{ctx}: tag");
            let r = c.http.request(
                "GET",
                &format!("/v1/repositories/{repo}/images"),
                &[],
                ReqBody::None,
            );
            assert_eq!(r.status, if read { 200 } else { deny }, "{ctx}: images");
            for id in &img.ids {
                let r = c
                    .http
                    .request("GET", &format!("/v1/images/{id}/json"), &[], ReqBody::None);
                assert_eq!(r.status, if read { 200 } else { 404 }, "{ctx}: image json");
                let r =
                    c.http
                        .request("GET", &format!("/v1/images/{id}/layer"), &[], ReqBody::None);
                assert_eq!(r.status, if read { 200 } else { 404 }, "{ctx}: image layer");
                let r = c.http.request(
                    "GET",
                    &format!("/v1/images/{id}/ancestry"),
                    &[],
                    ReqBody::None,
                );
                assert_eq!(r.status, if read { 200 } else { 404 }, "{ctx}: ancestry");
            }
            // writes: a tag PUT and an index PUT
            let body = format!("\"{top}\"");
            let r = c.http.request(
                "PUT",
                &format!("/v1/repositories/{repo}/tags/{who}"),
                &[],
                ReqBody::Sized(body.as_bytes()),
            );
            assert_eq!(
                r.status,
                if write { 200 } else { deny },
                "{ctx}: tag PUT {}",
                r.text()
            );
            let r = c.http.request(
                "PUT",
                &format!("/v1/repositories/{repo}/"),
                &[],
                ReqBody::Sized(b"[]"),
            );
            assert_eq!(
                r.status,
                if write { 200 } else { deny },
                "{ctx}: repository PUT"
            );
            // deletes
            let r = c.http.request(
                "DELETE",
                &format!("/v1/repositories/{repo}/tags/latest"),
                &[],
                ReqBody::None,
            );
            assert_eq!(
                r.status,
                if delete { 200 } else { deny },
                "{ctx}: tag DELETE"
            );
            let r = c.http.request(
                "DELETE",
                &format!("/v1/repositories/{repo}/"),
                &[],
                ReqBody::None,
            );
            assert_eq!(
                r.status,
                if delete { 200 } else { deny },
                "{ctx}: repository DELETE"
            );
        }
        // image uploads need write access somewhere
        let fresh = V1Image::chain(90, 1, 10);
        let r = c.http.request(
            "PUT",
            &format!("/v1/images/{}/json", fresh.ids[0]),
            &[],
            ReqBody::Sized(&fresh.jsons[0]),
        );
        assert_eq!(
            r.status,
            if who == "writer" { 200 } else { deny },
            "{who}: image json PUT {}",
            r.text()
        );
        // search shows only readable repositories
        let r = c
            .http
            .request("GET", "/v1/search?q=app", &[], ReqBody::None);
        let names: Vec<String> = r.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect();
        let mut visible: Vec<String> = namespaces
            .iter()
            .filter(|ns| expect(who, ns).0)
            .map(|ns| format!("{ns}/app"))
            .collect();
        visible.sort();
        assert_eq!(names, visible, "{who}: search");
        // info
        let r = c.http.request("GET", "/_berth/info", &[], ReqBody::None);
        let info = r.json();
        assert_eq!(info["anonymous"], serde_json::json!(who == "anonymous"));
        if who != "anonymous" {
            assert_eq!(info["user"], who);
        }
        let listed: Vec<&str> = info["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["namespace"].as_str().unwrap())
            .collect();
        let mut want: Vec<&str> = namespaces
            .iter()
            .copied()
            .filter(|ns| expect(who, ns).0)
            .collect();
        want.sort();
        assert_eq!(listed, want, "{who}: info {info}");
    }

    // The admin may delete; the stranger gets no session at all.
    let mut admin = subsystem_conn(Some(&w.admin), port);
    let r = admin.http.request(
        "DELETE",
        "/v1/repositories/private/app/tags/latest",
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 200);
    let out = ssh_command(&w.stranger.private, port)
        .arg("registryget /v1/_ping")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "a stranger got a session");

    // Writes and deletes are in the audit log, with user and key.
    let out = run_ok(
        Command::new(bin("berth-server"))
            .args(["audit", "--json", "--repo", "team/app", "--root"])
            .arg(&w.root),
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "admin" && l["op"] == "tag.put" && l["tag"] == "latest"),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l["user"] == "writer" && l["op"] == "tag.put" && l["tag"] == "writer"));
    assert!(lines
        .iter()
        .all(|l| l["key"].as_str().is_some_and(|k| k.starts_with("SHA256:"))));
    let out = run_ok(
        Command::new(bin("berth-server"))
            .args(["audit", "--user", "admin", "--root"])
            .arg(&w.root),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("private/app"));
}

#[test]
fn v2_access_matrix_over_ssh_and_the_shim() {
    let Some(w) = world() else { return };
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let port = server.port();
    let namespaces = ["private", "team", "public"];
    let mut digests = Vec::new();
    let mut layer_digests = Vec::new();
    {
        let mut admin = subsystem_conn(Some(&w.admin), port);
        for (i, ns) in namespaces.iter().enumerate() {
            let layer = random_bytes(3000, 700 + i as u64);
            layer_digests.push(format!("sha256:{}", sha256_hex(&layer)));
            digests.push(v2_push(
                &mut admin.http,
                &format!("{ns}/v2app"),
                "1",
                &[layer],
            ));
        }
        let r = admin
            .http
            .request("GET", "/v2/_catalog", &[], ReqBody::None);
        assert_eq!(
            r.json()["repositories"].as_array().unwrap().len(),
            3,
            "{}",
            r.text()
        );
    }
    let expect = |who: &str, ns: &str| -> (bool, bool, bool) {
        match (who, ns) {
            ("writer", "team") => (true, true, false),
            ("writer", "public")
            | ("reader", "team")
            | ("reader", "public")
            | ("anonymous", "public") => (true, false, false),
            _ => (false, false, false),
        }
    };
    let known = known_hosts_for(&w, &server);
    for (via, who) in ["ssh", "shim"]
        .iter()
        .flat_map(|v| ["writer", "reader", "anonymous"].map(move |u| (*v, u)))
    {
        let mut c = session(via, who, &w, port, &known);
        let deny = if who == "anonymous" { 401 } else { 403 };
        for (i, ns) in namespaces.iter().enumerate() {
            let (read, write, delete) = expect(who, ns);
            let ctx = format!("{who} on {ns} via {via}");
            let repo = format!("{ns}/v2app");
            let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
            let r = c.http.request(
                "GET",
                &format!("/v2/{repo}/manifests/1"),
                &accept,
                ReqBody::None,
            );
            assert_eq!(
                r.status,
                if read { 200 } else { deny },
                "{ctx}: manifest GET {}",
                r.text()
            );
            if !read {
                assert_eq!(
                    r.json()["errors"][0]["code"],
                    if who == "anonymous" {
                        "UNAUTHORIZED"
                    } else {
                        "DENIED"
                    }
                );
            }
            let r = c.http.request(
                "HEAD",
                &format!("/v2/{repo}/manifests/{}", digests[i]),
                &accept,
                ReqBody::None,
            );
            assert_eq!(
                r.status,
                if read { 200 } else { deny },
                "{ctx}: manifest HEAD by digest"
            );
            let r = c.http.request(
                "GET",
                &format!("/v2/{repo}/blobs/{}", layer_digests[i]),
                &[],
                ReqBody::None,
            );
            assert_eq!(r.status, if read { 200 } else { deny }, "{ctx}: blob GET");
            let r = c
                .http
                .request("GET", &format!("/v2/{repo}/tags/list"), &[], ReqBody::None);
            assert_eq!(r.status, if read { 200 } else { deny }, "{ctx}: tags/list");
            let r = c.http.request(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                ReqBody::None,
            );
            assert_eq!(
                r.status,
                if write { 202 } else { deny },
                "{ctx}: upload POST"
            );
            let r = c.http.request(
                "DELETE",
                &format!("/v2/{repo}/manifests/1"),
                &[],
                ReqBody::None,
            );
            if delete {
                assert_eq!(r.status, 202, "{ctx}: manifest DELETE");
            } else {
                assert_eq!(r.status, deny, "{ctx}: manifest DELETE");
            }
            // A mount from a namespace the caller cannot read is refused,
            // even into one it may write.
            if who == "writer" && ns == &"private" {
                let r = c.http.request(
                    "POST",
                    &format!(
                        "/v2/team/v2app/blobs/uploads/?mount={}&from={repo}",
                        layer_digests[i]
                    ),
                    &[],
                    ReqBody::None,
                );
                assert_eq!(r.status, 403, "mount from private: {}", r.text());
            }
        }
        let r = c.http.request("GET", "/v2/_catalog", &[], ReqBody::None);
        let names: Vec<String> = r.json()["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        let mut want: Vec<String> = namespaces
            .iter()
            .filter(|ns| expect(who, ns).0)
            .map(|ns| format!("{ns}/v2app"))
            .collect();
        want.sort();
        assert_eq!(names, want, "{who}: catalog");
    }
    // The writer may push to team through V2; it is audited.
    let mut c = subsystem_conn(Some(&w.writer), port);
    let d = v2_push(&mut c.http, "team/v2app", "writer", &[random_bytes(100, 9)]);
    let out = run_ok(
        Command::new(bin("berth-server"))
            .args(["audit", "--json", "--user", "writer", "--root"])
            .arg(&w.root),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("manifest.put") && text.contains(&d), "{text}");
}

#[test]
fn anonymous_read_without_an_access_file() {
    let Some(w) = world() else { return };
    let authorized = w.state.join("authorized_keys");
    ClientKey::authorized_keys(&authorized, &[&w.admin]);
    let server = SshServer::start(
        &w.root,
        &authorized,
        &w.state,
        &["--anonymous-read", "pub*"],
    );
    let img = V1Image::chain(50, 1, 100);
    {
        let mut admin = subsystem_conn(Some(&w.admin), server.port());
        v1_push(&mut admin.http, "pubstuff/app", "latest", &img);
        v1_push(&mut admin.http, "secret/app", "latest", &img);
    }
    let mut anon = subsystem_conn(None, server.port());
    let r = anon.http.request(
        "GET",
        "/v1/repositories/pubstuff/app/tags",
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 200);
    let r = anon.http.request(
        "GET",
        &format!("/v1/images/{}/layer", img.ids[0]),
        &[],
        ReqBody::None,
    );
    assert!(r.body == img.layers[0]);
    let r = anon.http.request(
        "GET",
        "/v1/repositories/secret/app/tags",
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Token"));
    let r = anon.http.request(
        "PUT",
        "/v1/repositories/pubstuff/app/tags/x",
        &[],
        ReqBody::Sized(format!("\"{}\"", img.ids[0]).as_bytes()),
    );
    assert_eq!(r.status, 401);
    // A key holder logging in under another name is not downgraded to anonymous.
    let mut admin = subsystem_conn(Some(&w.admin), server.port());
    let r = admin
        .http
        .request("GET", "/_berth/info", &[], ReqBody::None);
    assert_eq!(r.json()["anonymous"], false);
}

#[test]
fn a_broken_access_file_refuses_to_start_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.toml");
    std::fs::write(&access, "[users]\nalice = [\"ssh-ed25519 AAAAnotakey\"]\n").unwrap();
    let out = Command::new(bin("berth-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(dir.path().join("store"))
        .arg("--access")
        .arg(&access)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("access.toml:2:"), "{err}");
}

/// `berth shim` carries the caller's identity: keyless (`anonymous@`) and
/// keyed shims get exactly their rights, for skopeo as for curl; `berth info`
/// reports them.
#[test]
fn shims_enforce_the_rules_for_skopeo_and_berth_info() {
    let Some(w) = world() else { return };
    if !require_tool("skopeo", "skopeo") || !require_tool("curl", "curl") {
        return;
    }
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let port = server.port();
    {
        let mut admin = subsystem_conn(Some(&w.admin), port);
        v2_push(
            &mut admin.http,
            "public/app",
            "1",
            &[random_bytes(20_000, 81)],
        );
        v2_push(
            &mut admin.http,
            "private/app",
            "1",
            &[random_bytes(20_000, 82)],
        );
    }
    let known = w.state.join("known_hosts");
    std::fs::write(&known, format!("{}\n", server.known_hosts_line())).unwrap();
    let skopeo = |args: &[&str]| Command::new("skopeo").args(args).output().unwrap();

    // Anonymous: public is readable, private and writes are not.
    let (_anon, a) = start_shim("anonymous", None, port, &known);
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{a}/public/app:1"),
    ]);
    assert!(
        out.status.success(),
        "anonymous inspect public: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = w.state.join("public-copy");
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{a}/public/app:1"),
        &format!("oci:{}:1", copy.display()),
    ]);
    assert!(
        out.status.success(),
        "anonymous pull public: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{a}/private/app:1"),
    ]);
    assert!(!out.status.success(), "anonymous read private");
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", copy.display()),
        &format!("docker://{a}/public/app:2"),
    ]);
    assert!(!out.status.success(), "anonymous push");
    let out = run_ok(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{a}/v2/private/app/tags/list"),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");

    // The writer: pushes to team, cannot read private.
    let (_wr, b) = start_shim("writer", Some(&w.writer.private), port, &known);
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", copy.display()),
        &format!("docker://{b}/team/app:1"),
    ]);
    assert!(
        out.status.success(),
        "writer push team: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{b}/private/app:1"),
    ]);
    assert!(!out.status.success(), "writer read private");
    let out = run_ok(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{b}/v2/private/app/tags/list"),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");

    // berth info: who am I, what may I do.
    let info = |user: &str, key: Option<&ClientKey>, json: bool| -> String {
        let mut cmd = Command::new(bin("berth"));
        cmd.arg("info")
            .arg("--known-hosts")
            .arg(&known)
            .env_remove("SSH_AUTH_SOCK");
        if json {
            cmd.arg("--json");
        }
        if let Some(k) = key {
            cmd.arg("--identity").arg(&k.private);
        }
        cmd.arg(format!("ssh://{user}@127.0.0.1:{port}"));
        String::from_utf8_lossy(&run_ok(&mut cmd).stdout).into_owned()
    };
    let text = info("writer", Some(&w.writer), false);
    assert!(text.contains("you are writer"), "{text}");
    assert!(text.contains("RW-  team"), "{text}");
    assert!(text.contains("R--  public"), "{text}");
    assert!(!text.contains("private"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&info("anonymous", None, true)).unwrap();
    assert_eq!(v["anonymous"], true);
    assert_eq!(
        v["namespaces"],
        serde_json::json!([{"namespace": "public", "read": true, "write": false, "delete": false}])
    );
}

/// OpenSSH user certificates: a key the access file does not list gets in
/// with a certificate signed by a configured CA, as the user its principal
/// maps to; expired certificates, host certificates and unknown CAs do not.
#[test]
fn user_certificates_map_principals_to_users() {
    let Some(w) = world() else { return };
    let ca = ClientKey::generate(&w.state, "users-ca");
    let mut text = std::fs::read_to_string(&w.access).unwrap();
    text = text.replacen(
        "[groups]",
        &format!("[[cert_authority]]\nkey = \"{}\"\nprincipals = {{ \"deploy\" = \"writer\", \"*\" = \"@same\" }}\n\n[groups]", ca.public_line),
        1,
    );
    std::fs::write(&w.access, text).unwrap();
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let sign = |key: &ClientKey, principal: &str, extra: &[&str]| {
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-s"])
            .arg(&ca.private)
            .args(["-I", "test-cert", "-n", principal])
            .args(extra);
        cmd.arg(format!("{}.pub", key.private.display()));
        run_ok(&mut cmd);
        format!("{}-cert.pub", key.private.display())
    };
    let info_with = |key: &ClientKey, cert: &str| {
        let mut cmd = ssh_command(&key.private, server.port());
        cmd.args([
            "-o",
            &format!("CertificateFile={cert}"),
            "registryget /_berth/info",
        ]);
        cmd.output().unwrap()
    };
    // The stranger's key is not in the file, but its certificate is.
    let cert = sign(&w.stranger, "deploy", &["-V", "-5m:+1h"]);
    let out = info_with(&w.stranger, &cert);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["user"], "writer");
    // "*" = "@same": a principal naming a user maps to that user.
    let cert = sign(&w.stranger, "reader", &["-V", "-5m:+1h"]);
    let v: serde_json::Value =
        serde_json::from_slice(&info_with(&w.stranger, &cert).stdout).unwrap();
    assert_eq!(v["user"], "reader");
    // A principal naming nobody, an expired certificate, a host certificate: refused.
    for (principal, extra) in [
        ("nobody", vec!["-V", "-5m:+1h"]),
        ("deploy", vec!["-V", "-2h:-1h"]),
        ("deploy", vec!["-h"]),
    ] {
        let cert = sign(&w.stranger, principal, &extra);
        let out = info_with(&w.stranger, &cert);
        assert_eq!(
            out.status.code(),
            Some(255),
            "{principal} {extra:?} got a session"
        );
    }
    // A certificate from a CA the file does not trust: refused.
    let other_ca = ClientKey::generate(&w.state, "other-ca");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&other_ca.private)
            .args(["-I", "x", "-n", "deploy"])
            .arg(format!("{}.pub", w.stranger.private.display())),
    );
    let out = info_with(
        &w.stranger,
        &format!("{}-cert.pub", w.stranger.private.display()),
    );
    assert_eq!(
        out.status.code(),
        Some(255),
        "an untrusted CA's certificate got a session"
    );
}
