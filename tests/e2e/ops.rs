//! Running berth like server software (issue 20): `--version` naming the
//! commit, the config file, the metrics and health listener.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_tests::*;

/// The commit `git` says this checkout is at, if the suite runs in one.
fn head_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_the_package_version_and_the_commit() {
    for name in ["berth", "berth-server", "registryget", "registryput"] {
        let out = run_ok(Command::new(bin(name)).arg("--version"));
        let line = String::from_utf8(out.stdout).unwrap();
        let line = line.trim();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            line.starts_with(&format!("{name} {version} (commit ")),
            "{name} --version: {line}"
        );
        let commit = line
            .rsplit_once("(commit ")
            .and_then(|(_, c)| c.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no commit in {line}"));
        match head_commit() {
            Some(head) => assert_eq!(commit, head, "{name} was built from another commit"),
            None => assert_ne!(commit, "", "{name}: empty commit"),
        }
    }
}

/// A config file naming the store, keys, host key and listen address.
fn write_config(path: &Path, root: &Path, state: &Path, extra: &str) {
    let text = format!(
        "root = {root:?}\nlisten = \"127.0.0.1:0\"\nhost-key = {key:?}\nauthorized-keys = {auth:?}\nmax-channels = 3\n{extra}",
        root = root.display().to_string(),
        key = state.join("host_key").display().to_string(),
        auth = state.join("authorized_keys").display().to_string(),
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn serve_reads_its_settings_from_the_config_file_and_flags_win() {
    if !require_tool("ssh", "openssh-client") || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let alice = ClientKey::generate(&state, "alice");
    ClientKey::authorized_keys(&state.join("authorized_keys"), &[&alice]);
    let config = dir.path().join("berth-server.toml");
    let from_file = dir.path().join("store-from-file");
    let from_flag = dir.path().join("store-from-flag");
    write_config(&config, &from_file, &state, "");

    // check-config: the file's values, the flag over the file, the defaults.
    let out = run_ok(
        Command::new(bin("berth-server"))
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&from_flag),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let shown = config.display().to_string();
    assert!(
        text.contains(&format!(
            "root = {:?}  # command line",
            from_flag.display().to_string()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("max-channels = 3  # config {shown}")),
        "{text}"
    );
    assert!(text.contains("max-startups = 64  # default"), "{text}");
    assert!(text.contains("# ok: settings usable"), "{text}");

    // serve with the same command line runs on the flag's store with the
    // file's keys and host key.
    let mut cmd = Command::new(bin("berth-server"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(&from_flag);
    let (_server, line) = spawn_until_line(cmd, "listening on", "berth-server serve --config");
    assert!(line.contains(&from_flag.display().to_string()), "{line}");
    assert!(
        state.join("host_key").exists(),
        "host key not where the file says"
    );
    let port = addr_in(&line).port();
    let out = run_ok(ssh_command(&alice.private, port).arg("registryget /_berth/info"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"user\":\"root\""));
    assert!(
        !from_file.exists(),
        "the file's root was used despite --root"
    );
}

#[test]
fn a_config_file_with_an_unknown_key_or_bad_value_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let config = dir.path().join("berth-server.toml");
    for (extra, needle) in [
        ("max_connections = 5\n", "unknown key `max_connections`"),
        ("max-connections = \"many\"\n", "many"),
        (
            "mirror-allow-push = \"yes\"\n",
            "`mirror-allow-push` takes true or false",
        ),
        ("audit = [\"a.log\"]\n", "`audit` takes one value"),
    ] {
        write_config(&config, &root, dir.path(), extra);
        for sub in ["serve", "check-config"] {
            let out = Command::new(bin("berth-server"))
                .arg(sub)
                .arg("--config")
                .arg(&config)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} with {extra:?}: {err}");
            assert!(err.contains(needle), "{sub} with {extra:?}: {err}");
            assert!(
                err.contains(&config.display().to_string()),
                "{sub} with {extra:?}: the file is not named: {err}"
            );
            assert!(
                !root.exists(),
                "{sub} created the store despite a bad config"
            );
        }
    }
}

/// `systemctl reload` sends SIGHUP: the keys file is re-read even when its
/// modification time did not change.
#[test]
fn sighup_rereads_the_keys_file_whatever_its_modification_time() {
    if !require_tool("ssh", "openssh-client") || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = KeyedServer::start(&dir.path().join("store"), &dir.path().join("state"), &[]);
    let bob = ClientKey::generate(&dir.path().join("state"), "bob");
    let authorized = dir.path().join("state/authorized_keys");
    let before = std::fs::metadata(&authorized).unwrap().modified().unwrap();
    // The new file, with the old one's modification time, renamed into
    // place: the server's poll never sees a change.
    let next = dir.path().join("state/authorized_keys.next");
    ClientKey::authorized_keys(&next, &[&server.key, &bob]);
    std::fs::File::options()
        .write(true)
        .open(&next)
        .unwrap()
        .set_modified(before)
        .unwrap();
    std::fs::rename(&next, &authorized).unwrap();
    let bob_in = || {
        ssh_command(&bob.private, server.server.port())
            .arg("registryget /_berth/info")
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!bob_in(), "bob got in before the reload");
    run_ok(Command::new("kill").args(["-HUP", &server.server.proc.child.id().to_string()]));
    eventually("bob's login after SIGHUP", Duration::from_secs(60), bob_in);
}

/// One sample of a scrape, as the Python Prometheus parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, serde_json::Value>,
    value: f64,
}

/// GETs `http://addr/metrics` and parses it with `prometheus_client`'s
/// text parser (PyPI `prometheus-client`): the format must be real
/// Prometheus text, not just look like it.
fn scrape(addr: std::net::SocketAddr) -> (Vec<Sample>, String) {
    let script = format!(
        r#"
import json, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen("http://{addr}/metrics").read().decode()
out = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        out.append({{"name": s.name, "labels": s.labels, "value": s.value}})
print(json.dumps({{"samples": out, "text": text}}))
"#
    );
    let out = run_ok(Command::new("python3").args(["-c", &script]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"].as_object().unwrap().clone(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect();
    (samples, v["text"].as_str().unwrap().to_string())
}

/// The value of the sample `name` whose labels include `labels` (0 when
/// there is none: counters start at nothing).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).and_then(|x| x.as_str()) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn get(addr: std::net::SocketAddr, path: &str) -> HttpResponse {
    tcp_conn(addr).request("GET", path, &[], ReqBody::None)
}

#[test]
fn metrics_count_a_push_and_health_answers() {
    if !require_tool("ssh", "openssh-client")
        || !require_python_module("prometheus_client", "prometheus-client")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics = metrics_addr();
    let listen = metrics.to_string();
    let server = KeyedServer::start(
        &dir.path().join("store"),
        &dir.path().join("state"),
        &["--metrics-listen", &listen],
    );
    wait_for_port(metrics, Duration::from_secs(60));
    assert_eq!(get(metrics, "/healthz").status, 200);
    assert_eq!(
        get(metrics, "/readyz").status,
        200,
        "{}",
        get(metrics, "/readyz").text()
    );

    let (before, _) = scrape(metrics);
    for name in [
        "berth_build_info",
        "berth_received_bytes_total",
        "berth_sent_bytes_total",
        "berth_ssh_connections_open",
        "berth_ssh_channels_open",
        "berth_upload_sessions_open",
        "berth_mirror_hits_total",
        "berth_mirror_misses_total",
        "berth_mirror_upstream_errors_total",
        "berth_hook_deliveries_total",
        "berth_hook_failures_total",
        "berth_gc_runs_total",
        "berth_gc_reclaimed_bytes_total",
        "berth_store_free_bytes",
        "berth_auth_failures_total",
    ] {
        assert!(
            before.iter().any(|s| s.name == name),
            "no {name} before any request"
        );
    }
    assert!(value(&before, "berth_store_free_bytes", &[]) > 0.0);

    // A stranger's key is refused: one unknown_key failure at least.
    let stranger = ClientKey::generate(&dir.path().join("state"), "stranger");
    let refused = ssh_command(&stranger.private, server.server.port())
        .arg("registryget /_berth/info")
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // A V2 push of a 1 MiB layer over the subsystem.
    let layer = random_bytes(1 << 20, 7);
    {
        let mut conn = subsystem_conn(Some(&server.key), server.server.port());
        v2_push(
            &mut conn.http,
            "secretteam/app",
            "v1",
            std::slice::from_ref(&layer),
        );
        // While the channel is open, it and its connection are counted.
        let (during, _) = scrape(metrics);
        assert!(value(&during, "berth_ssh_channels_open", &[]) >= 1.0);
        assert!(value(&during, "berth_ssh_connections_open", &[]) >= 1.0);
    }
    let (after, text) = scrape(metrics);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(
        delta(
            "berth_requests_total",
            &[
                ("route", "v2_manifest_tag"),
                ("method", "PUT"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "berth_requests_total",
            &[
                ("route", "v2_upload_start"),
                ("method", "POST"),
                ("status", "202")
            ]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "berth_requests_total",
            &[
                ("route", "v2_upload"),
                ("method", "PATCH"),
                ("status", "202")
            ]
        ),
        2.0
    );
    assert!(delta("berth_received_bytes_total", &[]) >= layer.len() as f64);
    assert!(delta("berth_sent_bytes_total", &[]) > 0.0);
    assert!(delta("berth_auth_failures_total", &[("reason", "unknown_key")]) >= 1.0);
    assert_eq!(value(&after, "berth_upload_sessions_open", &[]), 0.0);
    // Route names, never paths: the repository is nowhere in the output.
    assert!(
        !text.contains("secretteam"),
        "a repository name leaked into the metrics:\n{text}"
    );
    for s in after.iter().filter(|s| s.name == "berth_requests_total") {
        let route = s.labels["route"].as_str().unwrap();
        assert!(!route.contains('/'), "a path as a route label: {route}");
    }
    // Channels and connections are given back when they close.
    eventually(
        "the channel gauge back at 0",
        Duration::from_secs(60),
        || value(&scrape(metrics).0, "berth_ssh_channels_open", &[]) == 0.0,
    );

    // gc runs are counted from the store (gc is its own process).
    store_tool_ok(&dir.path().join("store"), &["gc", "--grace", "0s"]);
    assert_eq!(value(&scrape(metrics).0, "berth_gc_runs_total", &[]), 1.0);

    // Only GET, and the loopback Origin rule holds (no page elsewhere reads it).
    let r = tcp_conn(metrics).request(
        "GET",
        "/metrics",
        &[("Origin", "http://evil.example")],
        ReqBody::None,
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        tcp_conn(metrics)
            .request("POST", "/metrics", &[], ReqBody::None)
            .status,
        405
    );
}

#[test]
fn readyz_fails_while_the_access_file_on_disk_is_broken() {
    if !require_tool("ssh", "openssh-client") {
        return;
    }
    let Some(t) = Tenants::new() else { return };
    let metrics = metrics_addr();
    let good = std::fs::read_to_string(&t.access).unwrap();
    let _server = SshServer::start_with_access(
        &t.root,
        &t.access,
        &t.state,
        &["--metrics-listen", &metrics.to_string()],
    );
    wait_for_port(metrics, Duration::from_secs(60));
    assert_eq!(get(metrics, "/readyz").status, 200);
    std::fs::write(&t.access, "[users]\nalice = 42\n").unwrap();
    eventually(
        "readyz 503 for the broken access file",
        Duration::from_secs(60),
        || {
            let r = get(metrics, "/readyz");
            r.status == 503 && r.text().contains("access file not loaded")
        },
    );
    assert_eq!(
        get(metrics, "/healthz").status,
        200,
        "the process is still up"
    );
    std::fs::write(&t.access, good).unwrap();
    eventually(
        "readyz 200 once the file is good again",
        Duration::from_secs(60),
        || get(metrics, "/readyz").status == 200,
    );
}

#[test]
fn a_non_loopback_metrics_address_needs_metrics_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("berth-server"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "0.0.0.0:0",
            "--root",
        ])
        .arg(dir.path().join("store"))
        .arg("--authorized-keys")
        .arg(dir.path().join("none"))
        .arg("--host-key")
        .arg(dir.path().join("key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-allow-remote"));
}

/// A metrics address on a free loopback port, for `--metrics-listen`.
fn metrics_addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[test]
fn metrics_count_mirror_hits_misses_and_upstream_errors_and_hook_runs() {
    if !require_tool("ssh", "openssh-client")
        || !require_python_module("prometheus_client", "prometheus-client")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The upstream: a V2 registry over loopback HTTP holding team/app:v1.
    let mut upstream = HttpServer::start(&dir.path().join("upstream"));
    v2_push(
        &mut tcp_conn(upstream.addr),
        "team/app",
        "v1",
        &[random_bytes(4096, 3)],
    );

    // A hook that succeeds after each push (the mirror allows pushes here).
    let hooks = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::set_permissions(&hooks, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(hooks.join("post-push"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        hooks.join("post-push"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let metrics = metrics_addr();
    let upstream_url = format!("http://{}", upstream.addr);
    let mirror = KeyedServer::start(
        &dir.path().join("mirror"),
        &dir.path().join("state"),
        &[
            "--mirror-of",
            &upstream_url,
            "--mirror-allow-push",
            "--hooks-dir",
            hooks.to_str().unwrap(),
            "--metrics-listen",
            &metrics.to_string(),
        ],
    );
    wait_for_port(metrics, Duration::from_secs(60));
    let mut conn = subsystem_conn(Some(&mirror.key), mirror.server.port());
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let before = scrape(metrics).0;
    let r = conn
        .http
        .request("GET", "/v2/team/app/manifests/v1", &accept, ReqBody::None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = conn
        .http
        .request("GET", "/v2/team/app/manifests/v1", &accept, ReqBody::None);
    assert_eq!(r.status, 200, "{}", r.text());
    let after = scrape(metrics).0;
    let delta = |name: &str| value(&after, name, &[]) - value(&before, name, &[]);
    assert!(
        delta("berth_mirror_misses_total") >= 1.0,
        "the first read asked the upstream"
    );
    assert!(
        delta("berth_mirror_hits_total") >= 1.0,
        "the second read was the store's"
    );
    assert_eq!(delta("berth_mirror_upstream_errors_total"), 0.0);

    // The upstream goes away: a tag the mirror never saw cannot be fetched.
    upstream.proc.kill();
    let r = conn
        .http
        .request("GET", "/v2/team/app/manifests/v2", &accept, ReqBody::None);
    assert!(r.status >= 400, "{}", r.status);
    assert!(
        value(
            &scrape(metrics).0,
            "berth_mirror_upstream_errors_total",
            &[]
        ) >= 1.0
    );

    // A push runs the post-push hook: one delivery, no failure.
    v2_push(&mut conn.http, "local/app", "v1", &[random_bytes(1024, 4)]);
    eventually("the hook's run counted", Duration::from_secs(60), || {
        value(
            &scrape(metrics).0,
            "berth_hook_deliveries_total",
            &[("kind", "hook")],
        ) >= 1.0
    });
    assert_eq!(
        value(
            &scrape(metrics).0,
            "berth_hook_failures_total",
            &[("kind", "hook")]
        ),
        0.0
    );
}
