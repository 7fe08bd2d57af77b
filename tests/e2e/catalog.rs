//! The browsable catalog (issue 19) in a real browser: headless Chromium
//! driven over WebDriver opens the pages `berth shim` serves, after docker
//! and skopeo pushed through the same shim. Rights come from the
//! `Tenants` access file: alice owns `private/` and writes `public/`, carol
//! reads `private/`, bob reads neither's private namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_tests::*;

/// A `docker import`ed image from one file of `size` random bytes, with
/// `changes` (Dockerfile instructions), tagged `reference`.
fn import_image(dir: &Path, reference: &str, seed: u64, size: usize, changes: &[&str]) {
    let root = dir.join(format!("rootfs-{seed}"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("payload.bin"), random_bytes(size, seed)).unwrap();
    let tar = dir.join(format!("rootfs-{seed}.tar"));
    run_ok(
        Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    let mut cmd = Command::new("docker");
    cmd.arg("import");
    for c in changes {
        cmd.args(["--change", c]);
    }
    cmd.arg(&tar).arg(reference);
    run_ok(&mut cmd);
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().unwrap()
}

/// Size of a pushed image as the registry describes it: config + layers.
fn manifest_size(m: &serde_json::Value) -> u64 {
    std::iter::once(&m["config"])
        .chain(m["layers"].as_array().unwrap())
        .map(|d| d["size"].as_u64().unwrap())
        .sum()
}

/// Where the test writes the pages' screenshots (copied to `docs/`).
fn screenshot_dir() -> PathBuf {
    target_dir().join("catalog-screenshots")
}

#[test]
fn catalog_in_headless_chromium() {
    let Some(w) = Tenants::new() else { return };
    if !require_docker()
        || !require_tool("skopeo", "skopeo")
        || !require_tool("tar", "tar")
        || !require_chromium()
    {
        return;
    }
    let server = w.start();
    let port = server.port();
    let known = w.known_hosts(&server);
    let (_alice_shim, addr) = start_shim("alice", Some(&w.alice.private), port, &known);
    let dir = w.dir.path();

    // docker pushes two tags of private/app; the first carries a label
    // that is markup, an environment secret and an entrypoint.
    let app1 = format!("{addr}/private/app:1");
    let app2 = format!("{addr}/private/app:2");
    import_image(
        dir,
        &app1,
        191,
        2 << 20,
        &[
            "LABEL org.example.note=\"<script>window.pwned=1</script>\"",
            "ENV SECRET_TOKEN=hunter2",
            "ENTRYPOINT [\"/payload.bin\", \"--serve\"]",
        ],
    );
    import_image(dir, &app2, 192, 100_000, &[]);
    for r in [&app1, &app2] {
        let out = docker(&["push", r]);
        assert!(
            out.status.success(),
            "docker push {r}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // skopeo pushes a docker-save archive of the first image to public/web.
    let archive = dir.join("app1.tar");
    run_ok(
        Command::new("docker")
            .args(["save", "-o"])
            .arg(&archive)
            .arg(&app1),
    );
    run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("docker-archive:{}", archive.display()),
        &format!("docker://{addr}/public/web:1"),
    ]));
    // An index of two platforms, pushed with the V2 API through OpenSSH.
    let mut conn = subsystem_conn(Some(&w.alice), port);
    let amd = v2_push(
        &mut conn.http,
        "public/multi",
        "amd64",
        &[random_bytes(30_000, 193)],
    );
    let arm = v2_push(
        &mut conn.http,
        "public/multi",
        "arm64",
        &[random_bytes(40_000, 194)],
    );
    let get_manifest = |conn: &mut CommandConn, repo: &str, reference: &str| {
        conn.http.request(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")],
            berth_tests::ReqBody::None,
        )
    };
    let child = |conn: &mut CommandConn, d: &str, arch: &str, variant: Option<&str>| {
        let len = get_manifest(conn, "public/multi", d).body.len();
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = serde_json::json!(v);
        }
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d, "size": len, "platform": platform})
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [child(&mut conn, &amd, "amd64", None), child(&mut conn, &arm, "arm64", Some("v8"))],
    }))
    .unwrap();
    let r = conn.http.request(
        "PUT",
        "/v2/public/multi/manifests/1",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        berth_tests::ReqBody::Sized(&index),
    );
    assert_eq!(r.status, 201, "index PUT: {}", r.text());
    let web = get_manifest(&mut conn, "public/web", "1");
    let web_digest = web.header("docker-content-digest").unwrap().to_string();
    let web_size = manifest_size(&web.json());
    let app1_manifest = get_manifest(&mut conn, "private/app", "1");
    let app1_digest = app1_manifest
        .header("docker-content-digest")
        .unwrap()
        .to_string();
    drop(conn);

    let browser = Browser::start(1200, 1000);
    let shots = screenshot_dir();

    // The repositories page: every repository alice may read, with sizes.
    browser.open(&format!("http://{addr}/"));
    let rows = browser.texts("#repositories tbody tr");
    for name in ["private/app", "public/multi", "public/web"] {
        assert!(
            rows.iter().any(|r| r.starts_with(name)),
            "{name} missing: {rows:?}"
        );
    }
    let web_row = rows.iter().find(|r| r.starts_with("public/web")).unwrap();
    assert!(web_row.contains("public/web 1 "), "{web_row}");
    let size_shown = browser
        .attribute("#repositories tbody tr:nth-child(3) data", "value")
        .unwrap();
    assert_eq!(size_shown, web_size.to_string(), "public/web size");
    assert!(browser.text("main").contains("Recent activity"));
    browser.screenshot(&shots.join("catalog-repositories.png"));

    // The filter box narrows the list; usable without JavaScript (a GET form).
    browser.open(&format!("http://{addr}/?q=multi"));
    assert_eq!(browser.texts("#repositories tbody tr").len(), 1);

    // A repository: tags with digest, size, platforms, origin, pull commands.
    browser.open(&format!("http://{addr}/-/repository/public/web"));
    let row = browser.text("#tags tbody tr");
    assert!(row.contains("linux/amd64") && row.contains("V2"), "{row}");
    assert_eq!(
        browser
            .attribute("#tags tbody tr td a code", "title")
            .as_deref(),
        Some(web_digest.as_str())
    );
    assert_eq!(
        browser.attribute("#tags tbody tr td.num data", "value"),
        Some(web_size.to_string())
    );
    let pull = browser.text("#pull");
    for want in [
        format!("docker pull {addr}/public/web:1"),
        format!("berth pull ssh://alice@127.0.0.1:{port} public/web:1"),
        format!("skopeo copy --src-tls-verify=false docker://{addr}/public/web:1"),
    ] {
        assert!(pull.contains(&want), "{want} not in {pull}");
    }
    // alice may write public/ but not delete there: no delete links.
    assert!(browser.find_all("a.delete").is_empty());

    // An index shows each child platform.
    browser.open(&format!("http://{addr}/-/repository/public/multi"));
    let index_row = browser
        .texts("#tags tbody tr")
        .into_iter()
        .find(|r| r.starts_with('1'))
        .unwrap();
    assert!(
        index_row.contains("linux/amd64") && index_row.contains("linux/arm64/v8"),
        "{index_row}"
    );
    browser.screenshot(&shots.join("catalog-repository.png"));

    // The image page: config, env names only, labels as text, layers,
    // history, referrers (none yet).
    browser.open(&format!("http://{addr}/-/image/private/app@{app1_digest}"));
    let config = browser.text("#config");
    assert!(config.contains("/payload.bin --serve"), "{config}");
    assert!(config.contains("SECRET_TOKEN"), "{config}");
    assert!(
        !browser.text("main").contains("hunter2"),
        "an env value is shown"
    );
    assert_eq!(
        browser.text("#labels tbody tr td:nth-child(2)"),
        "<script>window.pwned=1</script>"
    );
    assert_eq!(browser.execute("return typeof window.pwned"), "undefined");
    assert_eq!(browser.execute("return document.scripts.length"), 0);
    let uncompressed: u64 = browser
        .attribute("#layers tbody tr td:nth-child(4) data", "value")
        .unwrap()
        .parse()
        .unwrap();
    assert!(uncompressed > 2 << 20, "uncompressed {uncompressed}");
    assert_eq!(browser.text("#referrers"), "none");
    browser.screenshot(&shots.join("catalog-image.png"));

    // Who pushed what: alice's manifest pushes, on the repository page.
    browser.open(&format!("http://{addr}/-/repository/private/app"));
    let audit = browser.texts("table.audit tbody tr");
    assert!(
        audit
            .iter()
            .any(|r| r.contains("alice") && r.contains("manifest.put") && r.contains(" 2 ")),
        "{audit:?}"
    );

    // Delete tag 2 through the page: a link, a confirmation, then gone.
    browser.click("a.delete[href$='tag=2']");
    assert!(browser.text("h1").contains("Delete 2?"));
    browser.click("#confirm");
    eventually("the delete to redirect", Duration::from_secs(60), || {
        browser.url().contains("/-/repository/private/app")
    });
    assert!(browser.text(".flash").contains("Deleted tag 2"));
    let tags: Vec<String> = browser.texts("#tags tbody th.tag");
    assert!(tags.iter().all(|t| !t.starts_with('2')), "{tags:?}");
    let _ = docker(&["rmi", "-f", &app2]);
    let pulled = docker(&["pull", &app2]);
    assert!(!pulled.status.success(), "a deleted tag still pulls");
    let pulled = docker(&["pull", &app1]);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );

    // A cross-site POST is refused before the catalog sees it; a
    // same-origin one without this shim's token is refused by the catalog.
    let form = b"repository=private%2Fapp&tag=1&token=0000";
    let mut c = tcp_conn(addr);
    let r = c.request(
        "POST",
        "/-/delete",
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        berth_tests::ReqBody::Sized(form),
    );
    assert_eq!(r.status, 403);
    let origin = format!("http://{addr}");
    let mut c = tcp_conn(addr);
    let r = c.request(
        "POST",
        "/-/delete",
        &[
            ("Origin", &origin),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        berth_tests::ReqBody::Sized(form),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("token"));
    // A DNS-rebinding page's Host is refused (421) before any page is made.
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(
        &mut raw,
        b"GET /-/repository/private/app HTTP/1.1\r\nHost: rebind.example\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut raw, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");

    // bob reads neither private/ nor its pages; carol reads, cannot delete.
    let (_bob_shim, bob) = start_shim("bob", Some(&w.bob.private), port, &known);
    browser.open(&format!("http://{bob}/"));
    let rows = browser.texts("#repositories tbody tr");
    assert!(rows.iter().all(|r| !r.starts_with("private/")), "{rows:?}");
    assert!(rows.iter().any(|r| r.starts_with("public/web")), "{rows:?}");
    assert!(
        !browser.text("main").contains("private/app"),
        "the audit shows private/"
    );
    browser.open(&format!("http://{bob}/-/repository/private/app"));
    assert_eq!(browser.text("h1"), "Not Found");
    let (_carol_shim, carol) = start_shim("carol", Some(&w.carol.private), port, &known);
    browser.open(&format!("http://{carol}/-/repository/private/app"));
    assert!(browser.text("#tags").contains('1'));
    assert!(browser.find_all("a.delete").is_empty());

    // alice deletes the whole repository, again through a confirmation.
    browser.open(&format!("http://{addr}/-/repository/private/app"));
    browser.click("a.delete[href$='repository=private%2Fapp']");
    assert!(browser.text("h1").contains("Delete private/app?"));
    browser.click("#confirm");
    eventually(
        "the repository delete to redirect",
        Duration::from_secs(60),
        || browser.url().contains("?deleted="),
    );
    assert!(browser
        .text(".flash")
        .contains("Deleted repository private/app"));
    let rows = browser.texts("#repositories tbody tr");
    assert!(rows.iter().all(|r| !r.starts_with("private/")), "{rows:?}");
    let _ = docker(&["rmi", "-f", &app1]);
    assert!(
        !docker(&["pull", &app1]).status.success(),
        "a deleted repository still pulls"
    );

    // Readable at phone width: no horizontal overflow of the page itself.
    browser.resize(390, 844);
    browser.open(&format!("http://{addr}/-/repository/public/multi"));
    let overflow = browser.execute(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
    );
    assert_eq!(overflow, true, "the page overflows a phone-width window");
}

/// Registry requests the server answered, read from its debug log; each
/// is logged before its answer is sent, so once a catalog page has arrived
/// every request made for it is counted.
fn answered(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("answered"))
        .count()
}

/// Fills `root` with `count` one-layer repositories `team/rNNNN` through
/// `berth-server http`, starting at `from`; returns the last manifest digest.
fn fill(root: &Path, from: usize, count: usize) -> String {
    let http = HttpServer::start(root);
    let mut c = tcp_conn(http.addr);
    let mut digest = String::new();
    for i in from..from + count {
        digest = v2_push(
            &mut c,
            &format!("team/r{i:04}"),
            "1",
            &[random_bytes(1024, 7)],
        );
    }
    digest
}

/// The registry lists; the page does not fetch everything: every catalog
/// page costs the shim the same few registry requests (one round trip per
/// section) whether the store holds 60 repositories or 130, and
/// `berth-server http` serves the same pages. Times are a benchmark, not
/// an assertion: `bench/catalog` prints them for 1,000 repositories.
#[test]
fn catalog_pages_cost_a_fixed_number_of_registry_requests() {
    if !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let digest = fill(&root, 0, 60);

    let http = HttpServer::start(&root);
    let mut c = tcp_conn(http.addr);
    let r = c.request("GET", "/", &[], berth_tests::ReqBody::None);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("60 repositories"), "{}", r.text());
    drop(http);

    let log = dir.path().join("server.log");
    let KeyedServer {
        server, key, known, ..
    } = KeyedServer::start_logged(&root, &state, &[], &log);
    let (_shim, addr) = start_shim("root", Some(&key.private), server.port(), &known);
    let pages = [
        "/".to_string(),
        "/?last=team/r0030".to_string(),
        "/?q=r00".to_string(),
        "/-/repository/team/r0059".to_string(),
        format!("/-/image/team/r0059@{digest}"),
    ];
    let costs = |label: &str| -> Vec<usize> {
        pages
            .iter()
            .map(|page| {
                let before = answered(&log);
                let mut c = tcp_conn(addr);
                let r = c.request("GET", page, &[], berth_tests::ReqBody::None);
                assert_eq!(r.status, 200, "{label} {page}: {}", r.text());
                answered(&log) - before
            })
            .collect()
    };
    let small = costs("60 repositories");
    fill(&root, 60, 70);
    let large = costs("130 repositories");
    eprintln!("registry requests per page (60 / 130 repositories): {small:?} / {large:?}");
    assert_eq!(
        small, large,
        "a page's cost grows with the store: {pages:?}"
    );
    for (page, n) in pages.iter().zip(&small) {
        assert!((1..=6).contains(n), "{page} made {n} registry requests");
    }
}
