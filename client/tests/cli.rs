//! The client command line of the design's contract. (Being an integration
//! test of this package also makes `cargo test --workspace` build `berth`,
//! `registryget` and `registryput`, which the end-to-end suite runs.)

use std::process::Command;

fn help(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn berth_has_the_contract_subcommands() {
    let top = help(env!("CARGO_BIN_EXE_berth"), &["--help"]);
    for sub in ["get", "put", "shim", "ls", "tags", "rm", "search"] {
        assert!(top.contains(sub), "berth --help lacks {sub}:\n{top}");
    }
}

#[test]
fn registryget_and_registryput_take_registry_and_path() {
    let get = help(env!("CARGO_BIN_EXE_registryget"), &["--help"]);
    assert!(get.contains("REGISTRY") && get.contains("PATH"), "{get}");
    let put = help(env!("CARGO_BIN_EXE_registryput"), &["--help"]);
    assert!(put.contains("REGISTRY") && put.contains("PATH"), "{put}");
}
