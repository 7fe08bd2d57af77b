//! Pull-through mirror (issue 8): `berth-server serve --mirror-of REGISTRY`
//! in front of an upstream berth over SSH, pulled by skopeo and docker
//! through `berth shim`; a cached pull asks the upstream nothing; a dead
//! upstream leaves cached images pullable; TTL revalidation, one fetch for
//! concurrent misses, verification of what the upstream sends, and a
//! third-party upstream (distribution over HTTP).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_tests::*;

/// Requests the upstream server answered, as `METHOD PATH` lines read from
/// its debug log (`request{method=GET path=/v2/...}: answered`).
fn upstream_requests(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("answered") && l.contains("path=/v2/"))
        .filter_map(|l| {
            let method = l.split("method=").nth(1)?.split_whitespace().next()?;
            let path = l.split("path=").nth(1)?.split([' ', '}']).next()?;
            Some(format!("{method} {path}"))
        })
        .collect()
}

/// The mirror's `/_berth/info` `mirror` object, read through a shim.
fn mirror_info(shim: SocketAddr) -> serde_json::Value {
    let mut c = tcp_conn(shim);
    let r = c.request("GET", "/_berth/info", &[], ReqBody::None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["mirror"].clone()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// `berth shim REGISTRY` on a loopback port, with the given flags.
fn shim(registry: &str, flags: &[String]) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(bin("berth"));
    cmd.args(["shim", "--listen", "127.0.0.1:0"])
        .args(flags)
        .arg(registry)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("BERTH_SSH_COMMAND")
        .env("HOME", std::env::temp_dir().join("berth-test-no-home"));
    let (proc, line) = spawn_until_line(cmd, "berth shim: serving", "berth shim");
    (proc, addr_in(&line.replace("http://", "")))
}

/// A tar of a small random file tree, for `docker import`.
fn rootfs_tar(dir: &Path, seed: u64) -> PathBuf {
    let src = dir.join(format!("rootfs-{seed}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), random_bytes(3 << 20, seed)).unwrap();
    let tar = dir.join(format!("rootfs-{seed}.tar"));
    run_ok(
        Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
            .arg(&src)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    tar
}

fn docker(args: &[&str]) -> String {
    String::from_utf8_lossy(&run_ok(Command::new("docker").args(args)).stdout)
        .trim()
        .to_string()
}

fn rmi(images: &[&str]) {
    let _ = Command::new("docker")
        .arg("rmi")
        .arg("-f")
        .args(images)
        .output();
}

fn skopeo_digest(image: &str) -> String {
    let out = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{image}"),
    ]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn skopeo_pull(image: &str, dest: &Path) {
    let _ = std::fs::remove_dir_all(dest);
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:pulled", dest.display()),
    ]));
}

/// The whole story over SSH: upstream `berth-server serve`, a mirror
/// `berth-server serve --mirror-of ssh://...`, clients through `berth shim`.
#[test]
fn mirror_over_ssh_for_skopeo_and_docker_survives_the_upstream() {
    if !require_tool("ssh-keygen", "openssh-client")
        || !require_tool("skopeo", "skopeo")
        || !require_tool("tar", "tar")
        || !require_docker()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (up_root, mirror_root) = (d.join("upstream"), d.join("mirror"));
    let (up_state, mirror_state) = (d.join("up-state"), d.join("mirror-state"));
    std::fs::create_dir_all(&up_state).unwrap();
    std::fs::create_dir_all(&mirror_state).unwrap();
    // One key for everything: the user's to the mirror, the mirror's to the upstream.
    let key = ClientKey::generate(d, "alice");
    let authorized = d.join("authorized_keys");
    ClientKey::authorized_keys(&authorized, &[&key]);
    let known_hosts = d.join("known_hosts");
    let log = d.join("upstream.log");

    // Publish an image upstream with docker, through a shim on the upstream's
    // directory (so none of it passes the upstream server's log).
    let (up_shim_proc, up_shim) = shim(&up_root.display().to_string(), &[]);
    let original = format!("{up_shim}/team/app:1");
    rmi(&[&original]);
    docker(&[
        "import",
        &rootfs_tar(d, 81).display().to_string(),
        &original,
    ]);
    let layers = docker(&["inspect", "--format", "{{json .RootFS.Layers}}", &original]);
    docker(&["push", &original]);
    let pushed = skopeo_digest(&original);
    rmi(&[&original]);
    drop(up_shim_proc);

    let mut upstream = SshServer::start_logged(&up_root, &authorized, &up_state, &[], &log);
    std::fs::write(&known_hosts, format!("{}\n", upstream.known_hosts_line())).unwrap();
    let mirror_of = format!("ssh://alice@127.0.0.1:{}", upstream.port());
    let mirror_flags = [
        "--mirror-of",
        &mirror_of,
        "--mirror-identity",
        key.private.to_str().unwrap(),
        "--mirror-known-hosts",
        known_hosts.to_str().unwrap(),
    ];
    let mirror = SshServer::start(&mirror_root, &authorized, &mirror_state, &mirror_flags);
    let mut kh = std::fs::read_to_string(&known_hosts).unwrap();
    kh.push_str(&format!("{}\n", mirror.known_hosts_line()));
    std::fs::write(&known_hosts, kh).unwrap();
    let flags = vec![
        "--identity".to_string(),
        key.private.display().to_string(),
        "--known-hosts".to_string(),
        known_hosts.display().to_string(),
    ];
    let mirror_registry = format!("ssh://alice@127.0.0.1:{}", mirror.port());
    let (_shim_proc, at) = shim(&mirror_registry, &flags);
    let image = format!("{at}/team/app:1");

    // First pulls: fetched from the upstream, verified, stored.
    let before = upstream_requests(&log).len();
    assert_eq!(skopeo_digest(&image), pushed);
    skopeo_pull(&image, &d.join("oci-1"));
    rmi(&[&image]);
    docker(&["pull", &image]);
    assert_eq!(
        docker(&["inspect", "--format", "{{json .RootFS.Layers}}", &image]),
        layers,
        "docker pulled other layers through the mirror"
    );
    let first = upstream_requests(&log);
    assert!(
        first.len() > before
            && first.iter().any(|r| r.contains("/blobs/"))
            && first.iter().any(|r| r.contains("/manifests/1")),
        "the mirror did not fetch from the upstream: {first:?}"
    );
    let info = mirror_info(at);
    assert!(info["upstream_bytes"].as_u64().unwrap() > 3 << 20, "{info}");

    // Second pulls: all from the mirror's store; the upstream hears nothing.
    rmi(&[&image]);
    docker(&["pull", &image]);
    skopeo_pull(&image, &d.join("oci-2"));
    assert_eq!(skopeo_digest(&image), pushed);
    let second = upstream_requests(&log);
    assert_eq!(
        second.len(),
        first.len(),
        "a cached pull reached the upstream: {:?}",
        &second[first.len()..]
    );
    assert_eq!(mirror_info(at)["upstream_bytes"], info["upstream_bytes"]);

    // Eight clients miss the same blob at once: one upstream fetch.
    let blob = {
        let server = HttpServer::start(&up_root);
        let mut c = tcp_conn(server.addr);
        let layer = random_bytes(8 << 20, 82);
        v2_push(&mut c, "team/rand", "1", std::slice::from_ref(&layer));
        (digest(&layer), layer)
    };
    let path = format!("/v2/team/rand/blobs/{}", blob.0);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let r = tcp_conn(at).request("GET", &path, &[], ReqBody::None);
                (r.status, sha256_hex(&r.body))
            })
        })
        .collect();
    for t in threads {
        let (status, hash) = t.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(format!("sha256:{hash}"), blob.0);
    }
    let fetched: Vec<_> = upstream_requests(&log)
        .into_iter()
        .filter(|r| r.ends_with(&path))
        .collect();
    assert_eq!(fetched, vec![format!("GET {path}")], "concurrent misses");

    // Pushing to a mirror is refused, and changes nothing.
    let out = run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:pulled", d.join("oci-2").display()),
        &format!("docker://{at}/team/pushed:1"),
    ]));
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("read-only mirror"), "{said}");

    // The upstream dies, and the mirror restarts (so every tag is due for
    // revalidation): cached images still pull; a miss says why it failed.
    upstream.proc.kill();
    let listen = mirror.addr.to_string();
    drop(mirror);
    let _mirror = SshServer::start_on(
        &mirror_root,
        &authorized,
        &mirror_state,
        &listen,
        &mirror_flags,
    );
    rmi(&[&image]);
    docker(&["pull", &image]);
    assert_eq!(
        docker(&["inspect", "--format", "{{json .RootFS.Layers}}", &image]),
        layers
    );
    skopeo_pull(&image, &d.join("oci-3"));
    assert!(mirror_info(at)["stale_served"].as_u64().unwrap() >= 1);
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{at}/team/never:1"),
    ]));
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("cannot be reached"), "{said}");
    rmi(&[&image]);
}

/// Tag TTL, and refusal of what fails verification, with a directory
/// upstream (served in-process) and a plain-HTTP berth upstream.
#[test]
fn mirror_revalidates_tags_after_the_ttl_and_stores_nothing_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up_root = d.join("upstream");
    let upstream = HttpServer::start(&up_root);
    let mut up = tcp_conn(upstream.addr);
    let first = v2_push(&mut up, "team/t", "1", &[random_bytes(20_000, 83)]);

    let mirror_root = d.join("mirror");
    let mirror = http_mirror(
        &mirror_root,
        &up_root.display().to_string(),
        &["--mirror-ttl", "5s"],
    );
    let mut m = tcp_conn(mirror.addr);
    let digest_of = |m: &mut HttpConn<_, _>| {
        let r = m.request(
            "GET",
            "/v2/team/t/manifests/1",
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            ReqBody::None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.header("docker-content-digest").unwrap().to_string()
    };
    assert_eq!(digest_of(&mut m), first);
    let second = v2_push(&mut up, "team/t", "1", &[random_bytes(20_000, 84)]);
    assert_ne!(first, second);
    assert_eq!(
        digest_of(&mut m),
        first,
        "revalidated before the TTL ran out"
    );
    // Revalidated once the TTL has run out (a hang is cut at 60 s).
    eventually(
        "the tag revalidated after the TTL",
        Duration::from_secs(60),
        || digest_of(&mut m) == second,
    );
    // Its store names blobs it never fetched; fsck knows a mirror's store.
    let (code, said) = fsck(&mirror_root, &[]);
    assert_eq!(code, 0, "fsck of a mirror's store: {said}");
    assert!(said.contains("not fetched from the upstream yet"), "{said}");
    // The tag list shows what the upstream has, cached or not.
    v2_push(&mut up, "team/t", "2", &[random_bytes(1_000, 85)]);
    let r = m.request("GET", "/v2/team/t/tags/list", &[], ReqBody::None);
    assert_eq!(r.json()["tags"], serde_json::json!(["1", "2"]));

    // An upstream whose blob bytes do not match their digest: refused, nothing kept.
    let layer = random_bytes(50_000, 86);
    v2_push(&mut up, "team/bad", "1", std::slice::from_ref(&layer));
    let hex = sha256_hex(&layer);
    let stored = blob_file(&up_root, &hex);
    let mut bad = std::fs::read(&stored).unwrap();
    bad[100] ^= 0xff;
    std::fs::write(&stored, bad).unwrap();
    let http_mirror_root = d.join("mirror-http");
    let via_http = http_mirror(&http_mirror_root, &format!("http://{}", upstream.addr), &[]);
    let mut h = tcp_conn(via_http.addr);
    let path = format!("/v2/team/bad/blobs/sha256:{hex}");
    let r = h.request("GET", &path, &[], ReqBody::None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], "BLOB_UNKNOWN");
    assert!(r.text().contains("sent a bad blob"), "{}", r.text());
    assert!(
        !blob_file(&http_mirror_root, &hex).exists(),
        "a bad blob was stored"
    );
    let leftovers = std::fs::read_dir(http_mirror_root.join("_berth/uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "the refused download left files behind");
    // What verifies passes through the HTTP upstream too.
    let r = h.request(
        "GET",
        "/v2/team/t/manifests/1",
        &[("Accept", "*/*")],
        ReqBody::None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(second.as_str()));
    // Writes to a mirror are refused in both protocols unless allowed.
    let r = h.request("POST", "/v2/team/t/blobs/uploads/", &[], ReqBody::None);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = h.request(
        "PUT",
        "/v1/repositories/team/t/tags/x",
        &[],
        ReqBody::Sized(b"\"a\""),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    drop(h);
    let open = http_mirror(
        &d.join("mirror-open"),
        &format!("http://{}", upstream.addr),
        &["--mirror-allow-push"],
    );
    let mut o = tcp_conn(open.addr);
    v2_push(&mut o, "team/local", "1", &[random_bytes(1_000, 87)]);
}

/// Distribution (Debian's `docker-registry`) as the upstream, over plain
/// HTTP and over HTTPS (its certificate trusted through `SSL_CERT_FILE`).
#[test]
fn mirror_of_a_distribution_registry_over_http_and_https() {
    if !require_tool("docker-registry", "docker-registry") || !require_tool("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (plain_dir, tls_dir) = (d.join("plain"), d.join("tls"));
    std::fs::create_dir_all(&plain_dir).unwrap();
    std::fs::create_dir_all(&tls_dir).unwrap();
    let (cert, key) = crate::roles::loopback_certificate(d, "registry");
    for (tls, upstream_dir) in [(false, &plain_dir), (true, &tls_dir)] {
        let (mut distribution, addr) = crate::roles::distribution(
            upstream_dir,
            tls.then_some((cert.as_path(), key.as_path())),
        );
        let layer = random_bytes(300_000, 88);
        let pushed = {
            let server = HttpServer::start(&upstream_dir.join("seed"));
            let digest = v2_push(
                &mut tcp_conn(server.addr),
                "team/dist",
                "1",
                std::slice::from_ref(&layer),
            );
            let scheme = if tls { "https" } else { "http" };
            let out = run(Command::new(bin("berth"))
                .args(["sync", &server.url(), &format!("{scheme}://{addr}")])
                .env("SSL_CERT_FILE", &cert));
            assert!(
                out.status.success(),
                "seeding distribution: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            digest
        };
        let upstream = format!("{}://{addr}", if tls { "https" } else { "http" });
        let mirror = http_mirror_env(
            &d.join(format!("mirror-{tls}")),
            &upstream,
            &[],
            &[("SSL_CERT_FILE", &cert)],
        );
        let mut m = tcp_conn(mirror.addr);
        let r = m.request(
            "GET",
            "/v2/team/dist/manifests/1",
            &[("Accept", "*/*")],
            ReqBody::None,
        );
        assert_eq!(r.status, 200, "{upstream}: {}", r.text());
        assert_eq!(r.header("docker-content-digest"), Some(pushed.as_str()));
        let blob = format!("/v2/team/dist/blobs/sha256:{}", sha256_hex(&layer));
        assert!(
            m.request("GET", &blob, &[], ReqBody::None).body == layer,
            "{upstream}"
        );
        distribution.kill();
        let r = m.request("GET", &blob, &[], ReqBody::None);
        assert!(
            r.status == 200 && r.body == layer,
            "{upstream}: cached blob lost: {}",
            r.status
        );
    }
}

/// `berth-server http --mirror-of UPSTREAM` on `root`.
fn http_mirror(root: &Path, upstream: &str, extra: &[&str]) -> HttpServer {
    http_mirror_env(root, upstream, extra, &[])
}

/// [`http_mirror`] with extra environment variables.
fn http_mirror_env(
    root: &Path,
    upstream: &str,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> HttpServer {
    let mut cmd = Command::new(bin("berth-server"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["http", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .args(["--mirror-of", upstream])
        .args(extra);
    let (proc, line) = spawn_until_line(cmd, "http on", "berth-server http (mirror)");
    HttpServer {
        proc,
        addr: addr_in(&line),
    }
}

/// Where a store keeps the blob with this hex digest (`docs/storage.md`).
fn blob_file(root: &Path, hex: &str) -> PathBuf {
    root.join("_berth/blobs/sha256").join(hex)
}
