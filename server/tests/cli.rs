//! The `berth-server` command line: the public interface of the design's
//! command-line contract. (Being an integration test of this package also
//! makes `cargo test --workspace` build the binary the end-to-end suite runs.)

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-server"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn subcommands_of_the_contract_exist() {
    let top = help(&["--help"]);
    for sub in ["serve", "stdio", "http", "audit"] {
        assert!(top.contains(sub), "missing subcommand {sub}:\n{top}");
    }
}

#[test]
fn serve_documents_its_defaults_and_limits() {
    let serve = help(&["serve", "--help"]);
    for flag in [
        "--root",
        "./berth-data",
        "--listen",
        "127.0.0.1:2222",
        "--host-key",
        "--access",
        "--authorized-keys",
        "--anonymous-read",
        "--max-connections",
        "--max-channels",
        "--idle-timeout",
        "--header-timeout",
        "--max-header-bytes",
        "--max-json-body",
        "--audit",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}:\n{serve}");
    }
    let stdio = help(&["stdio", "--help"]);
    for flag in ["--root", "--user", "--access"] {
        assert!(stdio.contains(flag), "stdio --help lacks {flag}");
    }
}

#[test]
fn http_refuses_non_loopback_without_allow_remote() {
    let dir = std::env::temp_dir().join(format!("berth-cli-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_berth-server"))
        .args(["http", "--listen", "0.0.0.0:0", "--root"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
    let _ = std::fs::remove_dir_all(dir);
}
