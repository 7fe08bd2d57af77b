//! Access control by SSH key: an access file with admin, writer, reader and a
//! stranger, plus anonymous clients, over three namespaces (private, team,
//! public). Every V1 read, write and delete route is allowed or denied exactly
//! as the rules say; writes are audited.

use std::path::PathBuf;
use std::process::Command;

use berth_tests::*;

/// The keys (`stranger` is in no file) and the access file.
struct World {
    keys: Keyring,
    access: PathBuf,
}

impl std::ops::Deref for World {
    type Target = Keyring;
    fn deref(&self) -> &Keyring {
        &self.keys
    }
}

const RULES: &str = r#"
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
"#;

fn world() -> Option<World> {
    let keys = Keyring::new(&["admin", "writer", "reader", "stranger"])?;
    let access = keys.access_file(&["admin", "writer", "reader"], RULES);
    Some(World { keys, access })
}

const NAMESPACES: [&str; 3] = ["private", "team", "public"];

/// What `who` may do in `ns` by the rules above: (read, write, delete).
fn rights(who: &str, ns: &str) -> (bool, bool, bool) {
    match (who, ns) {
        ("writer", "team") => (true, true, false),
        ("writer", "public")
        | ("reader", "team")
        | ("reader", "public")
        | ("anonymous", "public") => (true, false, false),
        _ => (false, false, false),
    }
}

/// The right a route needs, and what a caller without it gets.
#[derive(Clone, Copy, PartialEq)]
enum Needs {
    /// Read; refused with the caller's denial (401 anonymous, 403 others).
    Read,
    /// Read of an image by id; refused as 404 (ids are global, no oracle).
    ReadById,
    /// Write; refused with the caller's denial.
    Write,
    /// Delete; refused with the caller's denial.
    Delete,
}

/// Routes × rights, run by every caller against every namespace in order.
/// Placeholders: `{R}` the namespace's repository, `{I0}` `{I1}` its image
/// ids (V1) or `{M}` its manifest digest and `{L}` its layer digest (V2),
/// `{T}` the top image's id as a JSON string body, `{W}` the caller's name.
/// The status is the one answered when the caller has the right.
#[rustfmt::skip]
const V1_ROUTES: &[(&str, &str, Needs, u16)] = &[
    ("GET /v1/repositories/{R}/tags",          "", Needs::Read,     200),
    ("GET /v1/repositories/{R}/tags/latest",   "", Needs::Read,     200),
    ("GET /v1/repositories/{R}/images",        "", Needs::Read,     200),
    ("GET /v1/images/{I0}/json",               "", Needs::ReadById, 200),
    ("GET /v1/images/{I0}/layer",              "", Needs::ReadById, 200),
    ("GET /v1/images/{I0}/ancestry",           "", Needs::ReadById, 200),
    ("GET /v1/images/{I1}/json",               "", Needs::ReadById, 200),
    ("GET /v1/images/{I1}/layer",              "", Needs::ReadById, 200),
    ("GET /v1/images/{I1}/ancestry",           "", Needs::ReadById, 200),
    ("PUT /v1/repositories/{R}/tags/{W}",      "{T}", Needs::Write, 200),
    ("PUT /v1/repositories/{R}/",              "[]", Needs::Write,  200),
    ("DELETE /v1/repositories/{R}/tags/latest", "", Needs::Delete,  200),
    ("DELETE /v1/repositories/{R}/",           "", Needs::Delete,   200),
];

#[rustfmt::skip]
const V2_ROUTES: &[(&str, &str, Needs, u16)] = &[
    ("GET /v2/{R}/manifests/1",                "", Needs::Read,   200),
    ("HEAD /v2/{R}/manifests/{M}",             "", Needs::Read,   200),
    ("GET /v2/{R}/blobs/{L}",                  "", Needs::Read,   200),
    ("GET /v2/{R}/tags/list",                  "", Needs::Read,   200),
    ("POST /v2/{R}/blobs/uploads/",            "", Needs::Write,  202),
    ("DELETE /v2/{R}/manifests/1",             "", Needs::Delete, 202),
];

/// Runs `routes` as every caller (writer, reader, anonymous) over `ssh -s`
/// and the shim against each namespace, `fill` giving each namespace's
/// placeholders; then `after` with the caller's session. Every wrong cell is
/// collected and reported at once. A V2 refusal with a body names its code
/// (`UNAUTHORIZED` for anonymous, `DENIED` for the others).
fn run_matrix(
    w: &World,
    server: &SshServer,
    routes: &[(&str, &str, Needs, u16)],
    fill: impl Fn(&str, &str) -> String,
    mut after: impl FnMut(&str, &str, &mut RegistrySession),
) {
    let known = w.known_hosts(server);
    let mut failures = Vec::new();
    for via in ["ssh", "shim"] {
        for who in ["writer", "reader", "anonymous"] {
            let mut c = RegistrySession::open(via, w.identity(who), server.port(), &known);
            let deny = if who == "anonymous" { 401 } else { 403 };
            for ns in NAMESPACES {
                let (read, write, delete) = rights(who, ns);
                for (route, body, needs, ok) in routes {
                    let (method, template) = route.split_once(' ').unwrap();
                    let path = fill(ns, template).replace("{W}", who);
                    let body = fill(ns, body);
                    let (allowed, refused) = match needs {
                        Needs::Read => (read, deny),
                        Needs::ReadById => (read, 404),
                        Needs::Write => (write, deny),
                        Needs::Delete => (delete, deny),
                    };
                    let r = c.http.request(
                        method,
                        &path,
                        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
                        if body.is_empty() {
                            ReqBody::None
                        } else {
                            ReqBody::Sized(body.as_bytes())
                        },
                    );
                    let expect = if allowed { *ok } else { refused };
                    let code = if deny == 401 {
                        "UNAUTHORIZED"
                    } else {
                        "DENIED"
                    };
                    if r.status != expect {
                        failures.push(format!(
                            "{who} on {ns} via {via}: {method} {path} expected {expect} got {} {}",
                            r.status,
                            r.text()
                        ));
                    } else if !allowed
                        && template.starts_with("/v2")
                        && !r.body.is_empty()
                        && r.json()["errors"][0]["code"] != code
                    {
                        failures.push(format!(
                            "{who} on {ns} via {via}: {method} {path} refused without {code}: {}",
                            r.text()
                        ));
                    }
                }
            }
            after(via, who, &mut c);
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells of the access matrix are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The repositories `names` lists, sorted as `want` must be: those of the
/// namespaces `who` may read.
fn assert_lists_readable(who: &str, what: &str, listed: Vec<String>, repo: &str) {
    let mut want: Vec<String> = NAMESPACES
        .iter()
        .filter(|ns| rights(who, ns).0)
        .map(|ns| repo.replace("{ns}", ns))
        .collect();
    want.sort();
    assert_eq!(listed, want, "{who}: {what}");
}

fn strings(v: &serde_json::Value, key: &str) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let x = if key.is_empty() { x } else { &x[key] };
            x.as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn access_matrix_over_ssh_and_the_shim() {
    let Some(w) = world() else { return };
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let port = server.port();
    let images: Vec<V1Image> = (0..3).map(|i| V1Image::chain(40 + i, 2, 2000)).collect();
    {
        let mut admin = subsystem_conn(Some(w.key("admin")), port);
        for (ns, img) in NAMESPACES.iter().zip(&images) {
            v1_push(&mut admin.http, &format!("{ns}/app"), "latest", img);
        }
    }
    let image_of = |ns: &str| &images[NAMESPACES.iter().position(|n| *n == ns).unwrap()];
    let fill = |ns: &str, t: &str| {
        let img = image_of(ns);
        t.replace("{R}", &format!("{ns}/app"))
            .replace("{I0}", &img.ids[0])
            .replace("{I1}", &img.ids[1])
            .replace("{T}", &format!("\"{}\"", img.ids[1]))
    };
    run_matrix(&w, &server, V1_ROUTES, fill, |_, who, c| {
        let deny = if who == "anonymous" { 401 } else { 403 };
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
        assert_lists_readable(
            who,
            "search",
            strings(&r.json()["results"], "name"),
            "{ns}/app",
        );
        // info
        let r = c.http.request("GET", "/_berth/info", &[], ReqBody::None);
        let info = r.json();
        assert_eq!(info["anonymous"], serde_json::json!(who == "anonymous"));
        if who != "anonymous" {
            assert_eq!(info["user"], who);
        }
        assert_lists_readable(
            who,
            "info",
            strings(&info["namespaces"], "namespace"),
            "{ns}",
        );
    });

    // The admin may delete; the stranger gets no session at all.
    let mut admin = subsystem_conn(Some(w.key("admin")), port);
    let r = admin.http.request(
        "DELETE",
        "/v1/repositories/private/app/tags/latest",
        &[],
        ReqBody::None,
    );
    assert_eq!(r.status, 200);
    let out = ssh_command(&w.key("stranger").private, port)
        .arg("registryget /v1/_ping")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "a stranger got a session");

    // Writes and deletes are in the audit log, with user and key.
    let lines: Vec<serde_json::Value> =
        store_tool_ok(&w.root, &["audit", "--json", "--repo", "team/app"])
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
    assert!(store_tool_ok(&w.root, &["audit", "--user", "admin"]).contains("private/app"));
}

#[test]
fn v2_access_matrix_over_ssh_and_the_shim() {
    let Some(w) = world() else { return };
    let server = SshServer::start_with_access(&w.root, &w.access, &w.state, &[]);
    let port = server.port();
    let mut digests = Vec::new();
    let mut layer_digests = Vec::new();
    {
        let mut admin = subsystem_conn(Some(w.key("admin")), port);
        for (i, ns) in NAMESPACES.iter().enumerate() {
            let layer = random_bytes(3000, 700 + i as u64);
            layer_digests.push(digest(&layer));
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
    let index = |ns: &str| NAMESPACES.iter().position(|n| *n == ns).unwrap();
    let fill = |ns: &str, t: &str| {
        t.replace("{R}", &format!("{ns}/v2app"))
            .replace("{M}", &digests[index(ns)])
            .replace("{L}", &layer_digests[index(ns)])
    };
    run_matrix(&w, &server, V2_ROUTES, fill, |_, who, c| {
        // A mount from a namespace the caller cannot read is refused, even
        // into one it may write.
        if who == "writer" {
            let r = c.http.request(
                "POST",
                &format!(
                    "/v2/team/v2app/blobs/uploads/?mount={}&from=private/v2app",
                    layer_digests[index("private")]
                ),
                &[],
                ReqBody::None,
            );
            assert_eq!(r.status, 403, "mount from private: {}", r.text());
        }
        let r = c.http.request("GET", "/v2/_catalog", &[], ReqBody::None);
        assert_lists_readable(
            who,
            "catalog",
            strings(&r.json()["repositories"], ""),
            "{ns}/v2app",
        );
    });
    // The writer may push to team through V2; it is audited.
    let mut c = subsystem_conn(Some(w.key("writer")), port);
    let d = v2_push(&mut c.http, "team/v2app", "writer", &[random_bytes(100, 9)]);
    let text = store_tool_ok(&w.root, &["audit", "--json", "--user", "writer"]);
    assert!(text.contains("manifest.put") && text.contains(&d), "{text}");
}

#[test]
fn anonymous_read_without_an_access_file() {
    let Some(w) = world() else { return };
    let authorized = w.state.join("authorized_keys");
    ClientKey::authorized_keys(&authorized, &[w.key("admin")]);
    let server = SshServer::start(
        &w.root,
        &authorized,
        &w.state,
        &["--anonymous-read", "pub*"],
    );
    let img = V1Image::chain(50, 1, 100);
    {
        let mut admin = subsystem_conn(Some(w.key("admin")), server.port());
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
    let mut admin = subsystem_conn(Some(w.key("admin")), server.port());
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
        let mut admin = subsystem_conn(Some(w.key("admin")), port);
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
    // Anonymous: public is readable, private and writes are not. The
    // writer: pushes to team, cannot read private.
    let (_anon, a) = start_shim("anonymous", None, port, &known);
    let (_wr, b) = start_shim("writer", Some(&w.key("writer").private), port, &known);
    let copy = format!("oci:{}:1", w.state.join("public-copy").display());
    let (pull, push) = ("--src-tls-verify=false", "--dest-tls-verify=false");
    let inspect = |image: String| -> Vec<String> {
        vec!["inspect".into(), "--tls-verify=false".into(), image]
    };
    let cp = |tls: &str, from: &str, to: &str| -> Vec<String> {
        vec!["copy".into(), tls.into(), from.into(), to.into()]
    };
    for (what, args, ok) in [
        (
            "anonymous inspect public",
            inspect(format!("docker://{a}/public/app:1")),
            true,
        ),
        (
            "anonymous pull public",
            cp(pull, &format!("docker://{a}/public/app:1"), &copy),
            true,
        ),
        (
            "anonymous read private",
            inspect(format!("docker://{a}/private/app:1")),
            false,
        ),
        (
            "anonymous push",
            cp(push, &copy, &format!("docker://{a}/public/app:2")),
            false,
        ),
        (
            "writer push team",
            cp(push, &copy, &format!("docker://{b}/team/app:1")),
            true,
        ),
        (
            "writer read private",
            inspect(format!("docker://{b}/private/app:1")),
            false,
        ),
    ] {
        let out = Command::new("skopeo").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{what}: {err}");
    }
    for (shim, status) in [(a, "401"), (b, "403")] {
        let out = run_ok(Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{shim}/v2/private/app/tags/list"),
        ]));
        assert_eq!(String::from_utf8_lossy(&out.stdout), status);
    }

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
    let text = info("writer", Some(w.key("writer")), false);
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
    let cert = sign(w.key("stranger"), "deploy", &["-V", "-5m:+1h"]);
    let out = info_with(w.key("stranger"), &cert);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["user"], "writer");
    // "*" = "@same": a principal naming a user maps to that user.
    let cert = sign(w.key("stranger"), "reader", &["-V", "-5m:+1h"]);
    let v: serde_json::Value =
        serde_json::from_slice(&info_with(w.key("stranger"), &cert).stdout).unwrap();
    assert_eq!(v["user"], "reader");
    // A principal naming nobody, an expired certificate, a host certificate: refused.
    for (principal, extra) in [
        ("nobody", vec!["-V", "-5m:+1h"]),
        ("deploy", vec!["-V", "-2h:-1h"]),
        ("deploy", vec!["-h"]),
    ] {
        let cert = sign(w.key("stranger"), principal, &extra);
        let out = info_with(w.key("stranger"), &cert);
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
            .arg(format!("{}.pub", w.key("stranger").private.display())),
    );
    let out = info_with(
        w.key("stranger"),
        &format!("{}-cert.pub", w.key("stranger").private.display()),
    );
    assert_eq!(
        out.status.code(),
        Some(255),
        "an untrusted CA's certificate got a session"
    );
}
