//! Running berth like server software (issue 20): `--version` naming the
//! commit, the config file, the metrics and health listener.

use std::process::Command;

use berth_tests::{bin, run_ok};

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
