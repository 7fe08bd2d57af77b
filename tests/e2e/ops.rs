//! Running berth like server software (issue 20): `--version` naming the
//! commit, the config file, the metrics and health listener.

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
