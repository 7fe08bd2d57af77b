//! Registry roles (issue 8): post-push/post-delete hooks (`--hooks-dir`), webhooks, chained
//! endpoints and `berth sync`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_tests::*;
use serde_json::Value;

/// How long an expected event (a hook run, a webhook delivery) may take
/// to show up: a bound on a hang, not a guess of the time it takes.
const EVENT_WAIT: Duration = Duration::from_secs(120);

/// `berth-server http` on `root` with extra flags.
fn http_server(root: &Path, extra: &[&str]) -> HttpServer {
    HttpServer::start_with(root, extra, std::process::Stdio::inherit())
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A webhook receiver on loopback: answers 200 to every POST and sends
/// (content type, body) down the channel.
fn webhook_receiver() -> (SocketAddr, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut w = stream;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    let mut ctype = String::new();
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap(),
                            "content-type" => ctype = v.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                    if tx.send((ctype, body)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Reads a JSON-lines file (missing: empty).
fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (repository, tag) of an event, for comparisons.
fn target(e: &Value) -> (String, String) {
    (
        e["target"]["repository"].as_str().unwrap().to_string(),
        e["target"]["tag"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn hooks_and_webhooks_see_one_event_per_tag() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let hooks = dir.path().join("hooks");
    let pushes = dir.path().join("pushes.jsonl");
    let deletes = dir.path().join("deletes.jsonl");
    let env_log = dir.path().join("env.log");
    script(
        &hooks.join("post-push"),
        &format!(
            "cat >> '{}'\necho \"$BERTH_OP|$BERTH_USER|$BERTH_REPOSITORY|$BERTH_TAG|$BERTH_DIGEST|$BERTH_IMAGE\" >> '{}'",
            pushes.display(),
            env_log.display()
        ),
    );
    script(
        &hooks.join("post-delete"),
        &format!("cat >> '{}'", deletes.display()),
    );
    let (hook_addr, received) = webhook_receiver();
    let url = format!("http://{hook_addr}/events");
    let server = http_server(
        &root,
        &[
            "--hooks-dir",
            hooks.to_str().unwrap(),
            "--webhook",
            &url,
            "--endpoint",
            "reg1.example:5000",
            "--endpoint",
            "reg2.example:5000",
        ],
    );
    let mut c = tcp_conn(server.addr);

    // Chained endpoints are what V1 clients are sent to.
    let r = c.request(
        "PUT",
        "/v1/repositories/team/chained/",
        &[("X-Docker-Token", "true")],
        ReqBody::Sized(b"[]"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-docker-endpoints"),
        Some("reg1.example:5000, reg2.example:5000")
    );

    let layers = vec![random_bytes(20_000, 81)];
    let d1 = v2_push(&mut c, "team/app", "1", &layers);
    let d2 = v2_push(&mut c, "team/app", "2", &layers);
    assert_eq!(d1, d2);
    let img = V1Image::chain(82, 2, 10_000);
    v1_push(&mut c, "team/old", "latest", &img);
    let r = c.request("DELETE", "/v2/team/app/manifests/2", &[], ReqBody::None);
    assert_eq!(r.status, 202, "{}", r.text());

    let mut hooked = Vec::new();
    eventually("the webhook events", EVENT_WAIT, || {
        while let Ok(e) = received.try_recv() {
            hooked.push(e);
        }
        hooked.len() >= 4
    });
    eventually("the hook runs", EVENT_WAIT, || {
        json_lines(&pushes).len() >= 3 && !json_lines(&deletes).is_empty()
    });
    // Nothing more arrives: exactly one event per tag. The proof is one
    // last push, a marker: the webhook worker delivers in order, so once
    // the marker's event is in, every earlier one is; its hook run was
    // started after every earlier one.
    v2_push(&mut c, "team/marker", "end", &layers);
    let is_marker = |body: &[u8]| String::from_utf8_lossy(body).contains("team/marker");
    eventually("the marker's webhook event", EVENT_WAIT, || {
        while let Ok(e) = received.try_recv() {
            hooked.push(e);
        }
        hooked.iter().any(|(_, b)| is_marker(b))
    });
    eventually("the marker's hook run", EVENT_WAIT, || {
        std::fs::read(&env_log).is_ok_and(|b| is_marker(&b))
    });
    hooked.retain(|(_, b)| !is_marker(b));

    let pushed: Vec<Value> = json_lines(&pushes)
        .into_iter()
        .filter(|e| e["target"]["repository"] != "team/marker")
        .collect();
    let mut got: Vec<_> = pushed.iter().map(target).collect();
    got.sort();
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(r, t)| (r.to_string(), t.to_string()))
            .collect()
    };
    assert_eq!(
        got,
        want(&[("team/app", "1"), ("team/app", "2"), ("team/old", "latest")])
    );
    for e in &pushed {
        assert_eq!(e["action"], "push");
        assert_eq!(e["actor"]["name"], "tester");
        if e["target"]["repository"] == "team/app" {
            assert_eq!(e["target"]["digest"], d1.as_str());
        } else {
            assert_eq!(e["berth"]["image"], img.ids[1].as_str());
        }
    }
    let deleted = json_lines(&deletes);
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["action"], "delete");
    assert_eq!(target(&deleted[0]), ("team/app".into(), "2".into()));

    let mut env_lines: Vec<String> = std::fs::read_to_string(&env_log)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("|team/marker|"))
        .map(str::to_string)
        .collect();
    env_lines.sort();
    // V2 events also name the V1 image the manifest was projected to.
    assert_eq!(env_lines.len(), 3, "{env_lines:?}");
    assert!(env_lines[0].starts_with(&format!("manifest.put|tester|team/app|1|{d1}|")));
    assert!(env_lines[1].starts_with(&format!("manifest.put|tester|team/app|2|{d1}|")));
    assert_eq!(
        env_lines[2],
        format!("tag.put|tester|team/old|latest||{}", img.ids[1])
    );

    assert_eq!(hooked.len(), 4, "one webhook event per push or delete");
    let mut actions = Vec::new();
    for (ctype, body) in &hooked {
        assert_eq!(ctype, "application/vnd.docker.distribution.events.v1+json");
        let envelope: Value = serde_json::from_slice(body).unwrap();
        let events = envelope["events"].as_array().unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(e["timestamp"].as_str().is_some_and(|s| s.ends_with('Z')));
        assert_eq!(e["actor"]["name"], "tester");
        let (repo, tag) = target(e);
        actions.push(format!("{} {repo}:{tag}", e["action"].as_str().unwrap()));
    }
    actions.sort();
    assert_eq!(
        actions,
        vec![
            "delete team/app:2",
            "push team/app:1",
            "push team/app:2",
            "push team/old:latest"
        ]
    );
}

#[test]
fn a_down_receiver_and_a_slow_hook_delay_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ran = dir.path().join("ran");
    // A hook that runs until the test releases it (or its timeout kills it).
    let release = dir.path().join("release");
    let hooks = dir.path().join("hooks");
    script(
        &hooks.join("post-push"),
        &format!(
            "echo $$ >> '{}'\nwhile [ ! -e '{}' ]; do sleep 0.1; done",
            ran.display(),
            release.display()
        ),
    );
    // One receiver accepts connections but never answers; another port refuses.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = free_port();
    let silent_url = format!("http://{}/", silent.local_addr().unwrap());
    let refused_url = format!("http://127.0.0.1:{refused}/");
    let server = http_server(
        &root,
        &[
            "--hooks-dir",
            hooks.to_str().unwrap(),
            "--webhook",
            &silent_url,
            "--webhook",
            &refused_url,
        ],
    );
    let mut c = tcp_conn(server.addr);
    let layers = vec![random_bytes(10_000, 83)];
    let start = Instant::now();
    for tag in ["a", "b", "c", "d"] {
        v2_push(&mut c, "team/slow", tag, &layers);
    }
    // A push waiting for a webhook delivery to the silent receiver would
    // wait out the server's 10 s webhook timeout.
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "pushes took {elapsed:?} with a down webhook receiver and a slow hook"
    );
    eventually("the hooks to start", EVENT_WAIT, || {
        std::fs::read_to_string(&ran)
            .unwrap_or_default()
            .lines()
            .count()
            == 4
    });
    // Every hook is still running, so no push waited for one to end.
    for pid in std::fs::read_to_string(&ran).unwrap().lines() {
        let alive = std::process::Command::new("kill")
            .args(["-0", pid])
            .status()
            .unwrap()
            .success();
        assert!(alive, "the hook {pid} ended before the test released it");
    }
    std::fs::write(&release, b"").unwrap();
    // Released, the hooks end. Waited for: a hook still polling when the
    // test's directory goes would never see `release` and loop on, an
    // orphan forking `sleep` ten times a second for the rest of the suite.
    let pids: Vec<String> = std::fs::read_to_string(&ran)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    eventually("the released hooks to end", EVENT_WAIT, || {
        pids.iter()
            .all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    });
    // The tags are there whatever the hooks and webhooks do.
    let r = c.request("GET", "/v2/team/slow/tags/list", &[], ReqBody::None);
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b", "c", "d"]));
}

/// A webhook receiver behind HTTPS (Python's `http.server` wrapped in TLS,
/// its certificate trusted through `SSL_CERT_FILE`) gets each push event.
#[test]
fn webhooks_over_https() {
    if !require_tool("python3", "python3") || !require_tool("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = loopback_certificate(d, "receiver");
    let received = d.join("received");
    let receiver = concat!(
        "import http.server, ssl, sys\n",
        "class H(http.server.BaseHTTPRequestHandler):\n",
        "    def do_POST(self):\n",
        "        body = self.rfile.read(int(self.headers['Content-Length']))\n",
        "        with open(sys.argv[3], 'ab') as f: f.write(body + b'\\n')\n",
        "        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()\n",
        "    def log_message(self, *a): pass\n",
        "srv = http.server.HTTPServer(('127.0.0.1', 0), H)\n",
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n",
        "srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n",
        "print('receiving on 127.0.0.1:%d' % srv.server_address[1], flush=True)\n",
        "srv.serve_forever()\n",
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", receiver])
        .arg(&cert)
        .arg(&key)
        .arg(&received);
    let (_receiver, line) = spawn_until_line(cmd, "receiving on", "https webhook receiver");
    let url = format!("https://{}/events", addr_in(&line));
    let mut cmd = Command::new(bin("berth-server"));
    cmd.args(["http", "--listen", "127.0.0.1:0", "--root"])
        .arg(d.join("store"))
        .args(["--webhook", &url])
        .env("SSL_CERT_FILE", &cert);
    let (_server, line) = spawn_until_line(cmd, "http on", "berth-server http");
    let mut c = tcp_conn(addr_in(&line));
    v2_push(&mut c, "team/tls", "1", &[random_bytes(5_000, 98)]);
    eventually("the https webhook", EVENT_WAIT, || {
        json_lines(&received).len() == 1
    });
    let event = &json_lines(&received)[0]["events"][0];
    assert_eq!(target(event), ("team/tls".to_string(), "1".to_string()));
    assert_eq!(event["action"], "push");
}

// ---- berth sync ------------------------------------------------------------------

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Every (repository, tag, manifest digest, manifest bytes) a store serves.
fn manifests_of(root: &Path) -> Vec<(String, String, String, Vec<u8>)> {
    let server = HttpServer::start(root);
    let mut c = tcp_conn(server.addr);
    let repos = c.request("GET", "/v2/_catalog", &[], ReqBody::None).json();
    let mut out = Vec::new();
    for repo in repos["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags = c
            .request("GET", &format!("/v2/{repo}/tags/list"), &[], ReqBody::None)
            .json();
        for tag in tags["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            let r = c.request(
                "GET",
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("Accept", ACCEPT)],
                ReqBody::None,
            );
            assert_eq!(r.status, 200, "{repo}:{tag}: {}", r.text());
            let digest = r.header("docker-content-digest").unwrap().to_string();
            assert_eq!(digest, berth_tests::digest(&r.body));
            out.push((repo.to_string(), tag.to_string(), digest, r.body));
        }
    }
    out.sort();
    out
}

/// Runs `berth sync --json` and returns its report.
fn berth_sync(ssh_flags: &[String], src: &str, dst: &str, refs: &[&str]) -> Value {
    let out = run_ok(
        Command::new(bin("berth"))
            .arg("sync")
            .args(ssh_flags)
            .arg("--json")
            .args([src, dst])
            .args(refs),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sync_between_ssh_and_directories_preserves_digests_and_sends_only_whats_missing() {
    if !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    let d = dir.path().join("d");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();

    // Source content: two tags sharing a layer, a V1 image, and an index.
    {
        let server = HttpServer::start(&a);
        let mut conn = tcp_conn(server.addr);
        let shared = random_bytes(30_000, 91);
        v2_push(&mut conn, "team/app", "1", std::slice::from_ref(&shared));
        v2_push(
            &mut conn,
            "team/app",
            "2",
            &[shared, random_bytes(20_000, 92)],
        );
        let child = v2_push(&mut conn, "team/multi", "amd64", &[random_bytes(5_000, 93)]);
        let child_size = conn
            .request(
                "GET",
                &format!("/v2/team/multi/manifests/{child}"),
                &[("Accept", ACCEPT)],
                ReqBody::None,
            )
            .body
            .len();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": child, "size": child_size,
                "platform": {"architecture": "amd64", "os": "linux"}}],
        }))
        .unwrap();
        let r = conn.request(
            "PUT",
            "/v2/team/multi/manifests/latest",
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            ReqBody::Sized(&index),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        v1_push(&mut conn, "team/old", "v1", &V1Image::chain(94, 2, 8_000));
    }
    let source = manifests_of(&a);
    assert_eq!(
        source.len(),
        5,
        "{:?}",
        source.iter().map(|m| (&m.0, &m.1)).collect::<Vec<_>>()
    );

    let KeyedServer {
        server,
        key,
        known: known_hosts,
        ..
    } = KeyedServer::start(&b, &state, &[]);
    let flags = vec![
        "--identity".to_string(),
        key.private.display().to_string(),
        "--known-hosts".to_string(),
        known_hosts.display().to_string(),
    ];
    let ssh = format!("ssh://127.0.0.1:{}", server.port());
    let (a_s, c_s, d_s) = (
        a.display().to_string(),
        c.display().to_string(),
        d.display().to_string(),
    );

    // dir -> ssh
    let first = berth_sync(&flags, &a_s, &ssh, &[]);
    assert_eq!(first["tags"], 5);
    assert_eq!(first["tags_unchanged"], 0);
    assert!(first["blobs_sent"].as_u64().unwrap() >= 6, "{first}");
    let before = snapshot(&b);
    let again = berth_sync(&flags, &a_s, &ssh, &[]);
    assert_eq!(again["tags_unchanged"], 5, "{again}");
    assert_eq!(again["manifests_sent"], 0);
    assert_eq!(again["blobs_sent"], 0);
    assert_eq!(again["bytes_sent"], 0);
    assert_eq!(
        snapshot(&b),
        before,
        "a second sync changed the destination"
    );

    // ssh -> dir
    let back = berth_sync(&flags, &ssh, &c_s, &[]);
    assert_eq!(back["tags"], 5);
    assert_eq!(berth_sync(&flags, &ssh, &c_s, &[])["blobs_sent"], 0);
    drop(server);
    assert_eq!(manifests_of(&b), source, "dir -> ssh changed a manifest");
    assert_eq!(manifests_of(&c), source, "ssh -> dir changed a manifest");

    // Named references: one tag, and one whole repository.
    let some = berth_sync(&flags, &c_s, &d_s, &["team/app:2", "team/multi"]);
    assert_eq!(some["tags"], 3, "{some}");
    let got: Vec<_> = manifests_of(&d)
        .into_iter()
        .map(|(r, t, dg, _)| (r, t, dg))
        .collect();
    let want: Vec<_> = source
        .iter()
        .filter(|(r, t, _, _)| r == "team/multi" || (r == "team/app" && t == "2"))
        .map(|(r, t, dg, _)| (r.clone(), t.clone(), dg.clone()))
        .collect();
    assert_eq!(got, want);
}

/// Starts distribution (Debian's `docker-registry`) on a free loopback port
/// with its storage under `dir`, serving HTTPS with `tls` = (certificate,
/// key) when given.
pub(crate) fn distribution(dir: &Path, tls: Option<(&Path, &Path)>) -> (Proc, SocketAddr) {
    let port = free_port();
    let config = dir.join("distribution.yml");
    let mut yaml = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("distribution").display()
    );
    if let Some((cert, key)) = tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ));
    }
    std::fs::write(&config, yaml).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc {
        child,
        name: "distribution".into(),
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(addr, Duration::from_secs(20));
    (proc, addr)
}

/// Three tags in two repositories on a new store at `root`; their manifests.
fn seed_for_distribution(root: &Path) -> Vec<(String, String, String, Vec<u8>)> {
    {
        let server = HttpServer::start(root);
        let mut conn = tcp_conn(server.addr);
        let shared = random_bytes(40_000, 95);
        v2_push(&mut conn, "team/app", "1", std::slice::from_ref(&shared));
        v2_push(
            &mut conn,
            "team/app",
            "2",
            &[shared, random_bytes(10_000, 96)],
        );
        v2_push(&mut conn, "tools", "latest", &[random_bytes(7_000, 97)]);
    }
    let source = manifests_of(root);
    assert_eq!(source.len(), 3);
    source
}

/// `berth sync` to and from a plain-HTTP V2 registry: distribution (Debian's
/// `docker-registry`) on loopback. Digests survive both ways; a second sync
/// sends nothing.
#[test]
fn sync_with_distribution_over_http_both_ways() {
    if !require_tool("docker-registry", "docker-registry") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, c) = (dir.path().join("a"), dir.path().join("c"));
    let source = seed_for_distribution(&a);

    let (_distribution, addr) = distribution(dir.path(), None);
    let url = format!("http://{addr}");
    let (a_s, c_s) = (a.display().to_string(), c.display().to_string());

    let first = berth_sync(&[], &a_s, &url, &[]);
    assert_eq!(first["tags"], 3, "{first}");
    assert!(first["blobs_sent"].as_u64().unwrap() >= 5, "{first}");
    // distribution serves the very same manifests.
    let mut d = tcp_conn(addr);
    for (repo, tag, digest, body) in &source {
        let r = d.request(
            "GET",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Accept", ACCEPT)],
            ReqBody::None,
        );
        assert_eq!(r.status, 200, "{repo}:{tag}: {}", r.text());
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert!(r.body == *body, "{repo}:{tag}: manifest bytes differ");
    }
    let again = berth_sync(&[], &a_s, &url, &[]);
    assert_eq!(again["blobs_sent"], 0, "{again}");
    assert_eq!(again["manifests_sent"], 0, "{again}");

    let back = berth_sync(&[], &url, &c_s, &[]);
    assert_eq!(back["tags"], 3, "{back}");
    assert_eq!(
        manifests_of(&c),
        source,
        "distribution -> dir changed a manifest"
    );
    assert_eq!(berth_sync(&[], &url, &c_s, &[])["blobs_sent"], 0);
}

/// A certificate for `127.0.0.1` (self-signed, not a CA, so it can be its
/// own trust anchor) and its key, written as `<name>.pem` / `<name>.key`.
pub(crate) fn loopback_certificate(
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    (cert, key)
}

/// `berth sync` to and from distribution serving HTTPS: the certificate is
/// checked against `SSL_CERT_FILE` (the system trust store's override), and
/// digests survive both ways. A certificate that is not trusted fails the
/// command with exit status 2 and says what to do.
#[test]
fn sync_with_distribution_over_https_both_ways() {
    if !require_tool("docker-registry", "docker-registry") || !require_tool("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, c) = (dir.path().join("a"), dir.path().join("c"));
    let source = seed_for_distribution(&a);
    let (cert, key) = loopback_certificate(dir.path(), "registry");
    let (other, _) = loopback_certificate(dir.path(), "other");
    let (_distribution, addr) = distribution(dir.path(), Some((&cert, &key)));
    let url = format!("https://{addr}");
    let (a_s, c_s) = (a.display().to_string(), c.display().to_string());
    let sync = |trust: &Path, src: &str, dst: &str| -> Value {
        let out = run_ok(
            Command::new(bin("berth"))
                .env("SSL_CERT_FILE", trust)
                .args(["sync", "--json", src, dst]),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let first = sync(&cert, &a_s, &url);
    assert_eq!(first["tags"], 3, "{first}");
    assert!(first["blobs_sent"].as_u64().unwrap() >= 5, "{first}");
    let again = sync(&cert, &a_s, &url);
    assert_eq!(again["blobs_sent"], 0, "{again}");
    assert_eq!(again["manifests_sent"], 0, "{again}");

    let back = sync(&cert, &url, &c_s);
    assert_eq!(back["tags"], 3, "{back}");
    assert_eq!(
        manifests_of(&c),
        source,
        "dir -> https -> dir changed a manifest"
    );

    // The same registry, its certificate not in the trust store.
    let out = Command::new(bin("berth"))
        .env("SSL_CERT_FILE", &other)
        .args(["sync", &url, &c_s])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("TLS handshake with {addr}"))
            && stderr.contains("not trusted here")
            && stderr.contains("SSL_CERT_FILE"),
        "{stderr}"
    );
}
