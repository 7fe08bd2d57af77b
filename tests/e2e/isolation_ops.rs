//! Issue 14, items 9–13, each as the attack it was reported as: the store is
//! data (hooks planted in it never run, the host key never comes from it),
//! store files are not world-readable, client-controlled text reaches logs
//! and `berth-server audit` escaped, the loopback HTTP listeners refuse a
//! foreign `Host` or `Origin` (DNS rebinding), and a `BERTH_SSH_COMMAND`
//! host that ssh would read as an option is refused before anything runs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::*;

/// Generous deadline for events the tests wait for.
const WAIT: Duration = Duration::from_secs(120);

/// Writes a shell script with `mode`.
fn script(path: &Path, body: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory with exactly `mode` (umask does not apply).
fn dir_with_mode(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

/// Runs `cmd` until it exits (it is killed after [`WAIT`]); `None` if it was
/// still running then, e.g. a server that started when it should not have.
fn run_until_exit(mut cmd: Command) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

/// A server log file as text (missing: empty).
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `berth-server http` on `root` with `extra` flags, logging to `log`.
fn logged_http(root: &Path, extra: &[&str], log: &Path) -> HttpServer {
    let file = std::fs::File::create(log).unwrap();
    HttpServer::start_with(root, extra, Stdio::from(file))
}

/// Pushes one small V2 image `repo:tag` to `server`.
fn push_one(server: &HttpServer, repo: &str, tag: &str, seed: u64) {
    let mut c = tcp_conn(server.addr);
    v2_push(&mut c, repo, tag, &[random_bytes(5_000, seed)]);
}

// ---- item 9: hooks -------------------------------------------------------------

/// A `post-push` hook planted in the store (`_berth/hooks/`) by whoever can
/// write the store must not run; a hook in an operator's `--hooks-dir` does.
#[test]
fn a_hook_planted_in_the_store_never_runs_on_a_v2_push() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let planted = dir.path().join("planted-ran");
    let ran = dir.path().join("hooks-dir-ran");
    script(
        &root.join("_berth/hooks/post-push"),
        &format!("touch '{}'", planted.display()),
        0o755,
    );
    let hooks = dir_with_mode(&dir.path().join("hooks"), 0o755);
    script(
        &hooks.join("post-push"),
        &format!("echo \"$BERTH_TAG\" >> '{}'", ran.display()),
        0o755,
    );
    let log = dir.path().join("server.log");
    let server = logged_http(&root, &["--hooks-dir", hooks.to_str().unwrap()], &log);
    push_one(&server, "team/app", "1", 1);
    // The operator's hook ran for this push: any planted hook would have
    // been started for the same event, before it.
    eventually("the --hooks-dir hook", WAIT, || read(&ran) == "1\n");
    push_one(&server, "team/app", "2", 2);
    eventually("the second hook run", WAIT, || read(&ran) == "1\n2\n");
    assert!(
        !planted.exists(),
        "the hook planted in the store ran\n{}",
        read(&log)
    );
}

/// StrictModes for `--hooks-dir`: a hook (or directory) that is group- or
/// world-writable, or owned by another user, is refused with a log line; a
/// directory that is loose already at start stops the server.
#[test]
fn loose_or_foreign_hooks_in_the_hooks_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let running_as_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);

    // At start: a world-writable directory.
    let loose = dir_with_mode(&dir.path().join("loose"), 0o777);
    let mut cmd = Command::new(bin("berth-server"));
    cmd.args(["http", "--listen", "127.0.0.1:0", "--root"])
        .arg(dir.path().join("store-loose"))
        .arg("--hooks-dir")
        .arg(&loose);
    let out = run_until_exit(cmd).expect("the server started with a world-writable --hooks-dir");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("0777") && err.contains("chmod go-w"), "{err}");

    // At run time: (what, directory mode after start, hook mode, hook owner).
    let cases: [(&str, u32, u32, Option<u32>); 3] = [
        ("group-writable hook", 0o755, 0o775, None),
        ("directory made world-writable", 0o777, 0o755, None),
        ("hook owned by another user", 0o755, 0o755, Some(65534)),
    ];
    for (i, (what, dir_mode, hook_mode, owner)) in cases.into_iter().enumerate() {
        if owner.is_some() && !running_as_root {
            eprintln!("!!!!! SKIPPING {what}: needs root to chown !!!!!");
            continue;
        }
        let root = dir.path().join(format!("store-{i}"));
        let hooks = dir_with_mode(&dir.path().join(format!("hooks-{i}")), 0o755);
        let marker = dir.path().join(format!("ran-{i}"));
        let hook = hooks.join("post-push");
        script(&hook, &format!("touch '{}'", marker.display()), hook_mode);
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&hook, Some(uid), None).unwrap();
        }
        let log = dir.path().join(format!("server-{i}.log"));
        let server = logged_http(&root, &["--hooks-dir", hooks.to_str().unwrap()], &log);
        dir_with_mode(&hooks, dir_mode);
        push_one(&server, "team/app", "1", 10 + i as u64);
        eventually(&format!("the refusal of the {what}"), WAIT, || {
            read(&log).contains("hook refused")
        });
        assert!(!marker.exists(), "{what}: the hook ran");
        let text = read(&log);
        assert!(text.contains(hook.to_str().unwrap()), "{what}: {text}");
    }
}

/// `berth push` to a directory (local mode) runs no hook, neither from the
/// store nor anywhere else.
#[test]
fn berth_push_to_a_directory_runs_no_hook() {
    if !require_tool("tar", "tar") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let planted = dir.path().join("planted-ran");
    script(
        &root.join("_berth/hooks/post-push"),
        &format!("touch '{}'", planted.display()),
        0o755,
    );
    let archive = legacy_archive(dir.path(), "team/app:1");
    let out = run_ok(
        Command::new(bin("berth"))
            .args(["push", root.to_str().unwrap(), "-q", "--input"])
            .arg(&archive),
    );
    assert!(out.status.success());
    // The push is complete (its tag is readable); a hook would have been
    // started before the tag PUT was answered.
    let tags =
        run_ok(Command::new(bin("berth")).args(["tags", root.to_str().unwrap(), "team/app"]));
    assert!(String::from_utf8_lossy(&tags.stdout).contains('1'));
    assert!(!planted.exists(), "berth push ran the store's hook");
}

/// A one-image `docker save` archive of the pre-1.10 shape, made with tar(1).
fn legacy_archive(dir: &Path, reference: &str) -> PathBuf {
    let (name, tag) = reference.split_once(':').unwrap();
    let id = sha256_hex(reference.as_bytes());
    let work = dir.join("archive");
    let layer_dir = work.join("layer");
    std::fs::create_dir_all(&layer_dir).unwrap();
    std::fs::write(layer_dir.join("hello.bin"), random_bytes(20_000, 7)).unwrap();
    let image = work.join(&id);
    std::fs::create_dir_all(&image).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(image.join("layer.tar"))
            .arg("-C")
            .arg(&layer_dir)
            .arg("hello.bin"),
    );
    std::fs::write(image.join("VERSION"), "1.0").unwrap();
    let json = serde_json::json!({
        "id": id, "created": "2015-11-03T00:00:00Z", "docker_version": "1.9.1",
        "config": {"Cmd": ["/hello.bin"]}, "architecture": "amd64", "os": "linux",
    });
    std::fs::write(image.join("json"), json.to_string()).unwrap();
    std::fs::write(
        work.join("repositories"),
        format!(r#"{{"{name}":{{"{tag}":"{id}"}}}}"#),
    )
    .unwrap();
    let archive = dir.join("image.tar");
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&work)
            .args([
                format!("{id}/VERSION"),
                format!("{id}/json"),
                format!("{id}/layer.tar"),
                "repositories".to_string(),
            ]),
    );
    archive
}

// ---- item 9: the host key ----------------------------------------------------

/// `berth-server serve` with `args` and `HOME`/`XDG_CONFIG_HOME` under `home`.
fn serve_cmd(root: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("berth-server"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .arg("--authorized-keys")
        .arg(home.join("authorized_keys"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"));
    cmd
}

/// A host key someone else put in place (replaced in the store, left
/// readable, or owned by another account) stops the server at start.
#[test]
fn a_replaced_or_loose_host_key_is_refused_at_start() {
    if !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let home = dir_with_mode(&dir.path().join("home"), 0o700);
    let attacker = dir.path().join("attacker_key");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&attacker),
    );

    // 1. The old default location, inside the store: whoever can write the
    //    store drops a key there. It is never used; the server says how to move it.
    let in_store = root.join("_berth/ssh_host_ed25519_key");
    std::fs::create_dir_all(in_store.parent().unwrap()).unwrap();
    std::fs::copy(&attacker, &in_store).unwrap();
    std::fs::set_permissions(&in_store, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_until_exit(serve_cmd(&root, &home, &[]))
        .expect("the server started with a host key found in the store");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(in_store.to_str().unwrap()) && err.contains("move"),
        "{err}"
    );
    std::fs::remove_file(&in_store).unwrap();

    // 2. The new default: generated 0600 in a 0700 directory outside the store.
    let (server, _) = spawn_until_line(serve_cmd(&root, &home, &[]), "listening on", "serve");
    drop(server);
    let key = home.join("config/berth/ssh_host_ed25519_key");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(key.parent().unwrap()), 0o700);
    assert!(!in_store.exists());

    // 3. A key readable by the group, or owned by another user, is refused.
    let explicit = dir.path().join("explicit_key");
    std::fs::copy(&attacker, &explicit).unwrap();
    std::fs::set_permissions(&explicit, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run_until_exit(serve_cmd(
        &root,
        &home,
        &["--host-key", explicit.to_str().unwrap()],
    ))
    .expect("the server started with a group-readable host key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("0640") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&explicit, std::fs::Permissions::from_mode(0o600)).unwrap();
    if Command::new("id").arg("-u").output().unwrap().stdout == b"0\n" {
        std::os::unix::fs::chown(&explicit, Some(65534), None).unwrap();
        let out = run_until_exit(serve_cmd(
            &root,
            &home,
            &["--host-key", explicit.to_str().unwrap()],
        ))
        .expect("the server started with a host key owned by another user");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
}

// ---- item 10: file modes -----------------------------------------------------

/// Every directory and file under `root` with its mode (`(path, is_dir, mode)`).
fn modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            let name = e.path().strip_prefix(root).unwrap().display().to_string();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((name, m.is_dir(), m.permissions().mode() & 0o7777));
        }
    }
    out
}

/// A fresh store (audit log included) is 0750/0640: other local accounts
/// read nothing; `berth-server init --group-shared` makes a team store
/// 2770/0660 and everything created in it follows.
#[test]
fn store_files_are_not_readable_by_other_accounts() {
    let dir = tempfile::tempdir().unwrap();
    for (shared, dir_mode, file_mode) in [(false, 0o750, 0o640), (true, 0o2770, 0o660)] {
        let root = dir.path().join(format!("store-{shared}"));
        if shared {
            run_ok(
                Command::new(bin("berth-server"))
                    .args(["init", "--group-shared", "--root"])
                    .arg(&root),
            );
        }
        let log = dir.path().join(format!("server-{shared}.log"));
        let server = logged_http(&root, &[], &log);
        push_one(&server, "team/app", "1", 20);
        let mut c = tcp_conn(server.addr);
        let img = V1Image::chain(21, 1, 3_000);
        v1_push(&mut c, "team/old", "1", &img);
        drop(server);
        let root_mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o7777;
        assert_eq!(root_mode, dir_mode, "root (shared: {shared})");
        let all = modes(&root);
        assert!(all.iter().any(|(n, _, _)| n == "_berth/audit.log"));
        assert!(all
            .iter()
            .any(|(n, _, _)| n.starts_with("_berth/blobs/sha256/")));
        for (name, is_dir, mode) in all {
            let want = if is_dir { dir_mode } else { file_mode };
            assert_eq!(
                mode, want,
                "{name}: {mode:o}, want {want:o} (shared: {shared})"
            );
        }
    }
}

// ---- item 11: log and audit hygiene ------------------------------------------

/// A login name and an exec command line carrying `\n` and ESC reach the
/// server log and `berth-server audit` escaped: no forged line, no raw ESC.
#[test]
fn control_characters_from_clients_are_escaped_in_logs_and_audit() {
    if !require_tool("ssh", "openssh-client") || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let state = dir.path().join("state");
    let log = dir.path().join("server.log");
    let KeyedServer {
        server, key, known, ..
    } = KeyedServer::start_logged(&root, &state, &[], &log);

    const FORGED: &str = "1999-01-01T00:00:00Z  INFO forged: authenticated user=root";
    // A login name with a newline and an ESC sequence is refused at
    // authentication (docs/access.md, "Login names"); its refusal is logged
    // escaped.
    let login = format!("evil\n{FORGED}\u{1b}[2J");
    let registry = format!("ssh://{login}@127.0.0.1:{}", server.port());
    let body = dir.path().join("body");
    std::fs::write(&body, "[]").unwrap();
    let out = Command::new(bin("registryput"))
        .arg("--identity")
        .arg(&key.private)
        .arg("--known-hosts")
        .arg(&known)
        .arg(&registry)
        .arg("/v1/repositories/team/app/")
        .arg(&body)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("BERTH_SSH_COMMAND")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a login name with a newline got in");
    // Names that reach the audit log from elsewhere (`stdio --user` is
    // whatever sshd's `%u` or the forced command says) are escaped when
    // the audit is printed: a write through stdio under such a name.
    let request = b"PUT /v1/repositories/team/app/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]";
    let out = run_with_input(
        Command::new(bin("berth-server"))
            .args(["stdio", "--root"])
            .arg(&root)
            .arg("--user")
            .arg(&login),
        request,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An exec command line with the same payload.
    let exec = format!("sh -c id\n{FORGED}\u{1b}[2J");
    let _ = ssh_command(&key.private, server.port())
        .arg(&exec)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eventually("the refused exec and login in the log", WAIT, || {
        let text = read(&log);
        text.contains("exec refused") && text.contains("evil\\n1999-01-01")
    });

    let text = read(&log);
    for line in text.lines() {
        assert!(
            !line.starts_with("1999-01-01T00:00:00Z"),
            "a forged line in the server log:\n{text}"
        );
    }
    assert!(
        !text.contains('\u{1b}'),
        "raw ESC in the server log:\n{text}"
    );
    assert!(text.contains("sh -c id\\n1999-01-01"), "{text}");

    let audit = store_tool_ok(&root, &["audit"]);
    assert_eq!(audit.lines().count(), 1, "one event, one line:\n{audit}");
    assert!(
        !audit.contains('\u{1b}'),
        "raw ESC in audit output:\n{audit}"
    );
    assert!(audit.contains("evil\\n1999-01-01"), "{audit}");
}

// ---- item 12: loopback HTTP Host and Origin ------------------------------------

/// `curl` status code for `url` with extra headers.
fn curl_status(url: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "30"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = run_ok(cmd.arg(url));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// What a DNS-rebinding page can send, refused; what local tools send, served.
fn check_loopback_listener(addr: std::net::SocketAddr) {
    let port = addr.port();
    let url = format!("http://127.0.0.1:{port}/v2/");
    let (code, body) = curl_status(&url, &["Host: attacker.example"]);
    assert_eq!(code, 421, "foreign Host: {body}");
    assert!(body.contains("attacker.example"), "{body}");
    let (code, _) = curl_status(&url, &[&format!("Host: attacker.example:{port}")]);
    assert_eq!(code, 421);
    let (code, body) = curl_status(&url, &["Origin: http://evil.example"]);
    assert_eq!(code, 403, "foreign Origin: {body}");
    assert!(body.contains("evil.example"), "{body}");
    // Local tools: 127.0.0.1 and localhost, with and without the port, and
    // a page served by the listener itself.
    assert_eq!(curl_status(&url, &[]).0, 200);
    assert_eq!(
        curl_status(&format!("http://localhost:{port}/v2/"), &[]).0,
        200
    );
    assert_eq!(curl_status(&url, &["Host: localhost"]).0, 200);
    assert_eq!(curl_status(&url, &["Host: [::1]:1"]).0, 200);
    assert_eq!(curl_status(&url, &["Host: 127.9.9.9"]).0, 200);
    assert_eq!(
        curl_status(&url, &[&format!("Origin: http://127.0.0.1:{port}")]).0,
        200
    );
}

#[test]
fn berth_server_http_refuses_foreign_host_and_origin() {
    if !require_tool("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(&dir.path().join("store"));
    check_loopback_listener(server.addr);
}

#[test]
fn berth_shim_refuses_foreign_host_and_origin() {
    if !require_tool("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut cmd = Command::new(bin("berth"));
    cmd.args(["shim", "--listen", "127.0.0.1:0"]).arg(&root);
    let (_shim, line) = spawn_until_line(cmd, "berth shim: serving", "berth shim");
    check_loopback_listener(addr_in(&line.replace("http://", "")));
}

/// The shim checks only the first request head of a connection, so a page
/// must not get a second request onto a connection whose first one passed:
/// a request without `Origin` (what a no-cors GET sends), then a POST with a
/// foreign `Origin` on the same connection. A browser's request is the last
/// of its connection; a tool's connection stays open for its next request.
#[test]
fn berth_shim_lets_no_browser_request_ride_behind_a_checked_one() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut cmd = Command::new(bin("berth"));
    cmd.args(["shim", "--listen", "127.0.0.1:0"]).arg(&root);
    let (_shim, line) = spawn_until_line(cmd, "berth shim: serving", "berth shim");
    let addr = addr_in(&line.replace("http://", ""));
    let port = addr.port();

    /// Sends `head` and reads one answer; its status, and whether the
    /// connection is still open for another request.
    fn exchange(tcp: &mut std::net::TcpStream, head: &str) -> Option<u16> {
        tcp.write_all(head.as_bytes()).ok()?;
        let mut reader = BufReader::new(tcp.try_clone().ok()?);
        let mut status = String::new();
        reader.read_line(&mut status).ok()?;
        let code = status.split_whitespace().nth(1)?.parse().ok()?;
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).ok()?;
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok()?;
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).ok()?;
        Some(code)
    }

    let browser = "User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n";
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let first = format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{browser}\r\n");
    assert_eq!(
        exchange(&mut tcp, &first),
        Some(200),
        "the page's first request"
    );
    let second = format!(
        "POST /v2/web/attack/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{browser}Origin: http://evil.example\r\nContent-Length: 0\r\n\r\n"
    );
    let answered = exchange(&mut tcp, &second);
    assert!(
        answered.is_none() || answered == Some(403),
        "a foreign page's POST behind a checked request was answered {answered:?}"
    );
    assert!(
        !root.join("_berth/uploads").exists()
            || std::fs::read_dir(root.join("_berth/uploads"))
                .unwrap()
                .count()
                == 0,
        "the foreign page opened an upload session"
    );

    // A tool (no browser headers) keeps its connection for many requests.
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let tool =
        format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: skopeo/1.9.3\r\n\r\n");
    for n in 0..3 {
        assert_eq!(exchange(&mut tcp, &tool), Some(200), "tool request {n}");
    }
}

// ---- item 13: BERTH_SSH_COMMAND ----------------------------------------------

/// `ssh://-oProxyCommand=...` would make ssh run the proxy command; it is
/// refused when parsed, before the configured command is even spawned.
#[test]
fn a_registry_host_starting_with_dash_is_refused_before_ssh_runs() {
    if !require_tool("ssh", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spawned = dir.path().join("spawned");
    let wrapper = dir.path().join("ssh-wrapper");
    script(
        &wrapper,
        &format!(
            "echo \"$@\" >> '{}'\nexec ssh -F /dev/null -o BatchMode=yes \"$@\"",
            spawned.display()
        ),
        0o755,
    );
    // ssh runs a ProxyCommand in the client's working directory: `pwned*`
    // appear there if ssh read the host (or user) as an option.
    for (registry, marker) in [
        ("ssh://-oProxyCommand=touch${IFS}pwned", "pwned"),
        ("ssh://-oProxyCommand=touch${IFS}pwned2@host", "pwned2@host"),
    ] {
        let out = Command::new(bin("registryget"))
            .arg(registry)
            .arg("/v1/_ping")
            .current_dir(dir.path())
            .env("BERTH_SSH_COMMAND", wrapper.to_str().unwrap())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{registry}: {err}");
        assert!(
            !dir.path().join(marker).exists(),
            "{registry}: ssh ran the ProxyCommand"
        );
        assert!(
            !spawned.exists(),
            "{registry}: BERTH_SSH_COMMAND was spawned"
        );
        assert!(err.contains("may not start with '-'"), "{registry}: {err}");
    }
}
