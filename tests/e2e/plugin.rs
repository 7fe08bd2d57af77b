//! `docker berth` (the Docker CLI plugin) against the Docker engine on this
//! machine and `berth-server serve`: push streamed from the engine's export,
//! the export skipped when the registry already holds the image, pull
//! loaded into the engine with the image id unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::*;

/// Local images removed when the test ends, pass or fail.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

/// A `DOCKER_CONFIG` directory whose `cli-plugins/` holds `docker-berth`,
/// as `~/.docker` would after installing the plugin.
fn plugin_config(dir: &Path) -> PathBuf {
    let config = dir.join("docker-config");
    std::fs::create_dir_all(config.join("cli-plugins")).unwrap();
    std::os::unix::fs::symlink(bin("docker-berth"), config.join("cli-plugins/docker-berth"))
        .unwrap();
    config
}

/// `docker berth ARGS` with the plugin installed in `config`.
fn docker_berth(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_CONFIG", config).arg("berth").args(args);
    cmd
}

fn image_id(image: &str) -> String {
    let out =
        run_ok(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", image]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn plugin_answers_the_docker_cli_metadata_request() {
    let out = run_ok(Command::new(bin("docker-berth")).arg("docker-cli-plugin-metadata"));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["SchemaVersion"], "0.1.0");
    assert_eq!(m["Vendor"], "berth");
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = plugin_config(dir.path());
    let out = run_ok(
        Command::new("docker")
            .env("DOCKER_CONFIG", &config)
            .arg("--help"),
    );
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("berth*")),
        "docker does not list the plugin:\n{help}"
    );
}

#[test]
fn docker_berth_push_and_pull_round_trip_through_the_engine() {
    if !require_docker() || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = plugin_config(dir.path());
    let server = KeyedServer::start(&dir.path().join("store"), &dir.path().join("state"), &[]);
    let flags: Vec<&str> = server.flags.iter().map(String::as_str).collect();

    // An image made here: `docker import` of a tar holding 256 KiB of noise.
    let tag = format!("berth-plugin-e2e:{}", std::process::id());
    let pulled = format!("team/plugin-e2e:{}", std::process::id());
    let _cleanup = Images(vec![tag.clone(), pulled.clone()]);
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("noise"), random_bytes(256 << 10, 20)).unwrap();
    let tar = dir.path().join("content.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&content)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    run_ok(Command::new("docker").args(["import"]).arg(&tar).arg(&tag));
    let id = image_id(&tag);

    // Push: streamed from the engine (DOCKER_HOST spelled out: honoured).
    let mut push = docker_berth(&config, &["push"]);
    push.args(&flags)
        .args([&tag, &server.registry, &pulled])
        .env("DOCKER_HOST", "unix:///var/run/docker.sock");
    let out = run_ok(&mut push);
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        first.contains(&pulled) && first.contains("sha256:"),
        "{first}"
    );
    let manifest_digest = first
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .to_string();

    // The registry's manifest names the engine's image id as its config.
    let berth_get = |path: String| -> serde_json::Value {
        let out = run_ok(
            Command::new(bin("berth"))
                .args(["get"])
                .args(
                    server
                        .flags
                        .iter()
                        .map(|f| if f == "-i" { "--identity" } else { f }),
                )
                .arg(&server.registry)
                .arg(path),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let repo = pulled.split(':').next().unwrap();
    let manifest = berth_get(format!("/v2/{repo}/manifests/{manifest_digest}"));
    assert_eq!(manifest["config"]["digest"], serde_json::json!(id));

    // Again: the registry's tag already is this image, so only the id
    // lookup and the registry check run; nothing is exported.
    let mut again = docker_berth(&config, &["push"]);
    again.args(&flags).args([&tag, &server.registry, &pulled]);
    let out = run_ok(&mut again);
    let second = String::from_utf8_lossy(&out.stdout);
    assert!(second.contains("nothing exported"), "{second}");
    assert!(second.contains(&manifest_digest), "{second}");

    // A new tag of the image in the same repository: the manifest the
    // repository holds under the first tag is put again; nothing exported.
    let other = format!("{repo}:second");
    let mut retag = docker_berth(&config, &["push"]);
    retag.args(&flags).args([&tag, &server.registry, &other]);
    let out = run_ok(&mut retag);
    let third = String::from_utf8_lossy(&out.stdout);
    assert!(third.contains("already there under another tag"), "{third}");
    assert!(third.contains(&manifest_digest), "{third}");
    let listed = berth_get(format!("/v2/{repo}/tags/list"));
    assert!(
        listed["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "second"),
        "{listed}"
    );

    // A wrong DOCKER_HOST is honoured too: the push fails naming it.
    let mut wrong = docker_berth(&config, &["push"]);
    wrong
        .args(&flags)
        .args([&tag, &server.registry, &pulled])
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no-engine.sock", dir.path().display()),
        );
    let out = wrong.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-engine.sock"));

    // Pull into the engine after removing every local copy: same image id.
    run_ok(Command::new("docker").args(["rmi", "-f", &tag]));
    let mut pull = docker_berth(&config, &["pull"]);
    pull.args(&flags).args([&server.registry, &pulled]);
    let out = run_ok(&mut pull);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&manifest_digest), "{text}");
    assert_eq!(image_id(&pulled), id, "the pulled image has another id");
}

#[test]
fn docker_berth_push_compress_sends_the_engines_plain_layers_compressed() {
    if !require_docker() || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = plugin_config(dir.path());
    let server = KeyedServer::start(&dir.path().join("store"), &dir.path().join("state"), &[]);
    let flags: Vec<&str> = server.flags.iter().map(String::as_str).collect();

    // An imported image: one layer of compressible text, which the
    // classic store exports as a plain layer.tar.
    let tag = format!("berth-plugin-compress:{}", std::process::id());
    let _cleanup = Images(vec![tag.clone()]);
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let text: String = (0..40_000).map(|i| format!("line {i} of text\n")).collect();
    std::fs::write(content.join("text"), text).unwrap();
    let tar = dir.path().join("content.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&content)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    run_ok(Command::new("docker").args(["import"]).arg(&tar).arg(&tag));
    let id = image_id(&tag);

    for (codec, layer_type) in [
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ] {
        let pushed = format!("team/compressed-{codec}:1");
        let mut push = docker_berth(&config, &["push", "--compress", codec]);
        push.args(&flags)
            .args([&tag, &server.registry, &pushed])
            .env("BERTH_STATE_DIR", dir.path().join("client-state"));
        let out = run_ok(&mut push);
        let first = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(first.contains(&pushed), "{first}");
        let mut get = Command::new(bin("berth"));
        get.args([
            "get",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        ])
        .arg(dir.path().join("store"))
        .arg(format!("/v2/team/compressed-{codec}/manifests/1"));
        let manifest: serde_json::Value = serde_json::from_slice(&run_ok(&mut get).stdout).unwrap();
        assert_eq!(manifest["config"]["digest"], serde_json::json!(id));
        assert_eq!(manifest["layers"][0]["mediaType"], layer_type, "{manifest}");
        assert!(
            manifest["layers"][0]["size"].as_u64().unwrap() < 200_000,
            "compressed: {manifest}"
        );
    }
    // The engine loads the gzip image back as the same image. (Not the zstd
    // one: Docker 20.10's `docker load` cannot read zstd layers, "archive/tar:
    // invalid tar header"; docs/archives.md says so.)
    let pushed = "team/compressed-gzip:1".to_string();
    let _pulled = Images(vec![pushed.clone()]);
    run_ok(Command::new("docker").args(["rmi", "-f", &tag]));
    let mut pull = docker_berth(&config, &["pull"]);
    pull.args(&flags).args([&server.registry, &pushed]);
    run_ok(&mut pull);
    assert_eq!(image_id(&pushed), id, "the pulled image has another id");
}
