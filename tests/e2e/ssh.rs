//! The SSH surface against OpenSSH: `berth-server serve` with the stock `ssh`
//! client, and stock `sshd` hosting `berth-server stdio` (as a subsystem and
//! as a forced command). Also what must be refused: strangers' keys, shells,
//! ptys and port forwarding.

use std::process::Command;

use berth_tests::*;

/// alice (authorized) and mallory (a stranger) with a store.
struct Fixture {
    keys: Keyring,
    key: ClientKey,
    stranger: ClientKey,
    authorized: std::path::PathBuf,
}

impl std::ops::Deref for Fixture {
    type Target = Keyring;
    fn deref(&self) -> &Keyring {
        &self.keys
    }
}

fn fixture() -> Option<Fixture> {
    let keys = Keyring::new(&["alice", "mallory"])?;
    Some(Fixture {
        authorized: keys.authorized_keys(&["alice"]),
        key: keys.key("alice").clone(),
        stranger: keys.key("mallory").clone(),
        keys,
    })
}

fn subsystem(f: &Fixture, port: u16) -> CommandConn {
    subsystem_conn(Some(&f.key), port)
}

/// How long an expected event may take on a loaded machine (a bound on a
/// hang, never a guess at timing).
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The temp files (`.tmp-*`) in a directory of the store.
fn temp_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The bytes held by the temp files of `dir`.
fn temp_bytes(dir: &std::path::Path) -> u64 {
    temp_files(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn openssh_client_runs_v1_push_and_pull_over_the_subsystem() {
    let Some(f) = fixture() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    let img = V1Image::chain(1, 3, 300_000);
    {
        let mut conn = subsystem(&f, server.port());
        v1_push(&mut conn.http, "team/app", "v1", &img);
        v1_pull_and_verify(&mut conn.http, "team/app", "v1", &img);
    }
    // A second channel on a fresh connection sees the same store; the
    // library/foo == foo rule holds across requests.
    let mut conn = subsystem(&f, server.port());
    v1_push(&mut conn.http, "foo", "latest", &img);
    let r = conn.http.request(
        "GET",
        "/v1/repositories/library/foo/tags",
        &[],
        ReqBody::None,
    );
    assert_eq!(r.json()["latest"], serde_json::json!(img.ids[2]));

    // exec registryget: the layer bytes on stdout.
    let out = run_ok(
        ssh_command(&f.key.private, server.port())
            .arg(format!("registryget /v1/images/{}/layer", img.ids[1])),
    );
    assert!(
        out.stdout == img.layers[1],
        "registryget layer bytes differ"
    );
    // exec registryget of something missing: non-zero, message on stderr.
    let out = ssh_command(&f.key.private, server.port())
        .arg(format!("registryget /v1/images/{}/json", "f".repeat(64)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Image not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // exec registryput: a tag set from stdin.
    let out = run_with_input(
        ssh_command(&f.key.private, server.port())
            .arg("registryput /v1/repositories/team/app/tags/v2"),
        format!("\"{}\"", img.ids[0]).as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_ok(
        ssh_command(&f.key.private, server.port())
            .arg("registryget /v1/repositories/team/app/tags/v2"),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("\"{}\"", img.ids[0])
    );
    // a checksum PUT through exec, with -H
    let out = ssh_command(&f.key.private, server.port())
        .arg(format!(
            "registryput -H 'X-Docker-Checksum-Payload: sha256:00' /v1/images/{}/checksum",
            img.ids[0]
        ))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Cannot set this image checksum"));
}

#[test]
fn stock_sshd_hosts_berth_stdio_as_subsystem_and_forced_command() {
    let Some(f) = fixture() else { return };
    if !require_tool("/usr/sbin/sshd", "openssh-server") {
        return;
    }
    let server_bin = bin("berth-server");
    let sub = format!(
        "{} stdio --root {} --user tester",
        server_bin.display(),
        f.root.display()
    );
    let sshd = Sshd::start(&f.state, &f.authorized, Some(&sub));
    let img = V1Image::chain(2, 2, 200_000);
    {
        let mut conn = subsystem(&f, sshd.port);
        v1_push(&mut conn.http, "stdio/app", "latest", &img);
        v1_pull_and_verify(&mut conn.http, "stdio/app", "latest", &img);
    }
    drop(sshd);

    // Forced command: every request of this key runs berth-server stdio, and
    // SSH_ORIGINAL_COMMAND selects registryget/registryput or the subsystem.
    let forced = f.state.join("authorized_forced");
    std::fs::write(
        &forced,
        format!(
            "command=\"{} stdio --root {} --user deploy\",restrict {}\n",
            server_bin.display(),
            f.root.display(),
            f.key.public_line
        ),
    )
    .unwrap();
    let sshd = Sshd::start(&f.state, &forced, Some(&sub));
    let out = run_ok(
        ssh_command(&f.key.private, sshd.port)
            .arg(format!("registryget /v1/images/{}/layer", img.ids[0])),
    );
    assert!(out.stdout == img.layers[0]);
    let mut conn = subsystem(&f, sshd.port);
    v1_pull_and_verify(&mut conn.http, "stdio/app", "latest", &img);
    // anything else is refused
    let out = ssh_command(&f.key.private, sshd.port)
        .arg("cat /etc/passwd")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn strangers_shells_ptys_and_forwarding_are_refused() {
    let Some(f) = fixture() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    // A key that is not authorized gets no session at all.
    let out = ssh_command(&f.stranger.private, server.port())
        .arg("registryget /v1/_ping")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A shell is refused.
    let out = ssh_command(&f.key.private, server.port())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    // An arbitrary command is refused.
    let out = ssh_command(&f.key.private, server.port())
        .arg("id")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    // A pty is refused (ssh reports it and the command still runs without one).
    let out = ssh_command(&f.key.private, server.port())
        .args(["-tt", "registryget /v1/_ping"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PTY allocation request failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Local (direct-tcpip) forwarding is refused.
    let out = ssh_command(&f.key.private, server.port())
        .args(["-W", &format!("127.0.0.1:{}", server.port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    // Remote forwarding is refused.
    let out = ssh_command(&f.key.private, server.port())
        .args([
            "-o",
            "ExitOnForwardFailure=yes",
            "-N",
            "-R",
            "0:127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // An unknown subsystem is refused.
    let out = ssh_command(&f.key.private, server.port())
        .args(["-s", "sftp"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn interrupted_layer_upload_stays_invisible_and_a_retry_succeeds() {
    let Some(f) = fixture() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    let img = V1Image::chain(3, 1, 4_000_000);
    let id = &img.ids[0];
    {
        let mut conn = subsystem(&f, server.port());
        let r = conn.http.request(
            "PUT",
            &format!("/v1/images/{id}/json"),
            &[],
            ReqBody::Sized(&img.jsons[0]),
        );
        assert_eq!(r.status, 200);
        // Start a chunked layer upload, send about half, then kill the client.
        use std::io::Write;
        let stdin = &mut conn.http.w;
        write!(
            stdin,
            "PUT /v1/images/{id}/layer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        for piece in img.layers[0][..2_000_000].chunks(64 * 1024) {
            write!(stdin, "{:x}\r\n", piece.len()).unwrap();
            stdin.write_all(piece).unwrap();
            stdin.write_all(b"\r\n").unwrap();
        }
        stdin.flush().unwrap();
        // The event: the server is writing the layer (a temp file holds bytes).
        eventually("the layer upload to reach the store", DEADLINE, || {
            temp_bytes(&f.root.join("images").join(id)) > 0
        });
        conn.proc.kill();
    }
    // The server notices the channel is gone and removes its temp file.
    let image_dir = f.root.join("images").join(id);
    eventually("the temp files to be removed", DEADLINE, || {
        temp_files(&image_dir).is_empty()
    });
    assert!(
        !image_dir.join("layer").exists(),
        "a partial layer became visible"
    );
    let mut conn = subsystem(&f, server.port());
    let r = conn
        .http
        .request("GET", &format!("/v1/images/{id}/json"), &[], ReqBody::None);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "Image is being uploaded, retry later");
    let r = conn
        .http
        .request("GET", &format!("/v1/images/{id}/layer"), &[], ReqBody::None);
    assert_eq!(r.status, 400);
    // A retry of the whole push succeeds and the image reads back intact.
    v1_push(&mut conn.http, "retry/app", "latest", &img);
    v1_pull_and_verify(&mut conn.http, "retry/app", "latest", &img);
}

#[test]
fn host_key_is_generated_once_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let Some(f) = fixture() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    let mode = std::fs::metadata(&server.host_key)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read(&server.host_key).unwrap();
    drop(server);
    let _server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    assert_eq!(
        std::fs::read(f.state.join("berth_host_key")).unwrap(),
        first
    );
    // ssh-keygen reads it.
    run_ok(
        Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(f.state.join("berth_host_key")),
    );
}

#[test]
fn v2_push_and_pull_over_the_subsystem_of_serve_and_of_stock_sshd() {
    let Some(f) = fixture() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    let layers = vec![random_bytes(700_000, 31), random_bytes(5_000, 32)];
    let digest = {
        let mut conn = subsystem(&f, server.port());
        v2_push(&mut conn.http, "team/v2", "1.0", &layers)
    };
    let check = |conn: &mut CommandConn| {
        let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
        let r = conn
            .http
            .request("HEAD", "/v2/team/v2/manifests/1.0", &accept, ReqBody::None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        let r = conn.http.request(
            "GET",
            &format!("/v2/team/v2/manifests/{digest}"),
            &accept,
            ReqBody::None,
        );
        assert_eq!(berth_tests::digest(&r.body), digest);
        for layer in &layers {
            let r = conn.http.request(
                "GET",
                &format!("/v2/team/v2/blobs/sha256:{}", sha256_hex(layer)),
                &[],
                ReqBody::None,
            );
            assert!(r.body == *layer, "blob bytes differ");
        }
        let r = conn
            .http
            .request("GET", "/v2/team/v2/tags/list", &[], ReqBody::None);
        assert_eq!(r.json()["tags"], serde_json::json!(["1.0"]));
        // The V1 view of the same image over the same channel.
        let r = conn
            .http
            .request("GET", "/v1/repositories/team/v2/tags", &[], ReqBody::None);
        assert_eq!(r.status, 200, "{}", r.text());
    };
    check(&mut subsystem(&f, server.port()));
    drop(server);
    if !require_tool("/usr/sbin/sshd", "openssh-server") {
        return;
    }
    let sub = format!(
        "{} stdio --root {} --user tester",
        bin("berth-server").display(),
        f.root.display()
    );
    let sshd = Sshd::start(&f.state, &f.authorized, Some(&sub));
    check(&mut subsystem(&f, sshd.port));
}
