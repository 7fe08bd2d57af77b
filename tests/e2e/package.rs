//! The Debian packages (issue 20): built once per run by
//! `packaging/build-debs --profile dev` from the binaries under test, then
//! checked as a reviewer would — contents, `systemd-analyze verify`,
//! `lintian` — and the packaged server started from a temp root with the
//! packaged config file and the unit's command line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use berth_tests::*;

const SERVER_DEB: &str = "berth-server_0.1.0-1_amd64.deb";
const CLIENT_DEB: &str = "berth_0.1.0-1_amd64.deb";
const UNIT: &str = "usr/lib/systemd/system/berth-server.service";
const CONFIG: &str = "etc/berth/berth-server.toml";

/// The directory holding both packages, built on first use (about 20 s).
/// `None`: cargo-deb is missing (a loud skip outside CI).
fn debs() -> Option<&'static Path> {
    static DEBS: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEBS.get_or_init(|| {
        if !require_tool("cargo-deb", "cargo-deb (cargo install --locked cargo-deb)")
            || !require_tool("dpkg-deb", "dpkg")
        {
            return None;
        }
        let out = target_dir().join("e2e-debs");
        let _ = std::fs::remove_dir_all(&out);
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let started = std::time::Instant::now();
        run_ok(
            Command::new(workspace.join("packaging/build-debs"))
                .args(["--profile", "dev", "--out"])
                .arg(&out),
        );
        eprintln!(
            "packaging/build-debs --profile dev: {:?}",
            started.elapsed()
        );
        Some(out)
    })
    .as_deref()
}

/// `dpkg-deb -x` of a package into a fresh directory.
fn extract(deb: &Path, into: &Path) {
    run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into));
}

fn listing(deb: &Path) -> String {
    String::from_utf8(run_ok(Command::new("dpkg-deb").arg("-c").arg(deb)).stdout).unwrap()
}

#[test]
fn debs_hold_binaries_unit_config_man_pages_and_completions() {
    let Some(debs) = debs() else { return };
    let server = listing(&debs.join(SERVER_DEB));
    for path in [
        "./usr/bin/berth-server",
        "./usr/lib/systemd/system/berth-server.service",
        "./etc/berth/berth-server.toml",
        "./usr/share/man/man1/berth-server.1.gz",
        "./usr/share/man/man1/berth-server-serve.1.gz",
        "./usr/share/man/man1/berth-server-check-config.1.gz",
        "./usr/share/bash-completion/completions/berth-server",
        "./usr/share/zsh/vendor-completions/_berth-server",
        "./usr/share/fish/vendor_completions.d/berth-server.fish",
        "./usr/share/doc/berth-server/operations.md",
    ] {
        assert!(
            server.lines().any(|l| l.ends_with(path)),
            "berth-server lacks {path}:\n{server}"
        );
    }
    let client = listing(&debs.join(CLIENT_DEB));
    for path in [
        "./usr/bin/berth",
        "./usr/bin/registryget",
        "./usr/bin/registryput",
        "./usr/libexec/docker/cli-plugins/docker-berth",
        "./usr/share/man/man1/berth.1.gz",
        "./usr/share/man/man1/berth-push.1.gz",
        "./usr/share/man/man1/registryget.1.gz",
        "./usr/share/man/man1/docker-berth.1.gz",
        "./usr/share/bash-completion/completions/berth",
        "./usr/share/zsh/vendor-completions/_berth",
        "./usr/share/fish/vendor_completions.d/berth.fish",
    ] {
        assert!(
            client.lines().any(|l| l.ends_with(path)),
            "berth lacks {path}:\n{client}"
        );
    }
    // The config is a conffile (kept across upgrades), and the install
    // makes the berth system user, the 0750 store and the key directory.
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(debs.join(SERVER_DEB))
            .arg(dir.path()),
    );
    let conffiles = std::fs::read_to_string(dir.path().join("conffiles")).unwrap();
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/berth/berth-server.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(dir.path().join("postinst")).unwrap();
    for needle in [
        "adduser --system --group --home /var/lib/berth",
        "install -d -o berth -g berth -m 0750 /var/lib/berth",
        "install -d -o berth -g berth -m 0700 /etc/berth/ssh",
    ] {
        assert!(
            postinst.contains(needle),
            "postinst lacks {needle:?}:\n{postinst}"
        );
    }
}

#[test]
fn the_unit_is_hardened_and_passes_systemd_analyze_verify() {
    if !require_tool("systemd-analyze", "systemd") {
        return;
    }
    let Some(debs) = debs() else { return };
    let root = tempfile::tempdir().unwrap();
    extract(&debs.join(SERVER_DEB), root.path());
    let unit = std::fs::read_to_string(root.path().join(UNIT)).unwrap();
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "User=berth",
        "Group=berth",
        "ExecStart=/usr/bin/berth-server serve --config /etc/berth/berth-server.toml",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/berth /etc/berth/ssh",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "StandardError=journal",
    ] {
        assert!(has(line), "the unit lacks {line:?}:\n{unit}");
    }
    // verify checks that ExecStart's binary exists: the packaged one is
    // pointed at where it was extracted, every other line verified as is.
    let binary = root.path().join("usr/bin/berth-server");
    let verified = root.path().join("berth-server.service");
    std::fs::write(
        &verified,
        unit.replace("/usr/bin/berth-server", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&verified)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("berth-server.service"),
        "systemd-analyze verify complains about the unit:\n{stderr}"
    );
}

#[test]
fn the_packages_pass_lintian_without_errors() {
    if !require_tool("lintian", "lintian") {
        return;
    }
    let Some(debs) = debs() else { return };
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(debs.join(SERVER_DEB))
        .arg(debs.join(CLIENT_DEB))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{report}");
}

/// `key = "/absolute/path"  # ...` lines of `check-config` output.
fn configured_path(settings: &str, key: &str) -> String {
    settings
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(&format!("{key} = \""))?;
            Some(rest.split('"').next()?.to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in:\n{settings}"))
}

#[test]
fn the_packaged_server_runs_from_a_temp_root_with_the_packaged_config() {
    if !require_tool("ssh", "openssh-client") || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let Some(debs) = debs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    extract(&debs.join(SERVER_DEB), &root);
    let under = |p: &str| root.join(p.trim_start_matches('/'));

    // The unit's command line, its paths under the temp root.
    let unit = std::fs::read_to_string(root.join(UNIT)).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let argv: Vec<String> = exec
        .split_whitespace()
        .map(|w| {
            if w.starts_with('/') {
                under(w).display().to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    assert_eq!(argv[1..3], ["serve", "--config"], "{exec}");
    let config = argv[3].clone();
    assert_eq!(Path::new(&config), root.join(CONFIG));

    // The packaged config as check-config reads it.
    let out = run_ok(Command::new(&argv[0]).args(["check-config", "--config", &config]));
    let settings = String::from_utf8(out.stdout).unwrap();
    let store = configured_path(&settings, "root");
    let host_key = configured_path(&settings, "host-key");
    let keys = configured_path(&settings, "authorized-keys");
    assert_eq!(store, "/var/lib/berth");
    assert!(host_key.starts_with("/etc/berth/"), "{host_key}");

    // What postinst makes, under the temp root.
    std::fs::create_dir_all(under("/etc/berth/ssh")).unwrap();
    std::fs::set_permissions(
        under("/etc/berth/ssh"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let alice = ClientKey::generate(dir.path(), "alice");
    ClientKey::authorized_keys(&under(&keys), &[&alice]);

    // The unit's command line; only the file locations (under the temp
    // root) and the listen address (an ephemeral loopback port) are flags.
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .arg("--root")
        .arg(under(&store))
        .arg("--host-key")
        .arg(under(&host_key))
        .arg("--authorized-keys")
        .arg(under(&keys))
        .args(["--listen", "127.0.0.1:0"]);
    let (_server, line) = spawn_until_line(cmd, "listening on", "packaged berth-server");
    let port = addr_in(&line).port();
    let out = run_ok(ssh_command(&alice.private, port).arg("registryget /_berth/info"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"user\":\"root\""));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&under(&host_key)), 0o600, "host key mode");
    assert_eq!(mode(&under(&store)), 0o750, "store mode");
}
