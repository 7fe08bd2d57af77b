//! The house rules that code review alone lets slip (issue 18): no module
//! of any crate imports, through others, a module that imports it. Checked
//! by `tools/import-cycles`, which reads the `use` trees and inline
//! `crate::`/`super::` paths of each crate's non-test code.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::require_tool;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the checker on `src` at module depth 3; (exit code, output).
fn import_cycles(src: &Path) -> (Option<i32>, String) {
    let out = Command::new("python3")
        .arg(workspace().join("tools/import-cycles"))
        .arg(src)
        .arg("3")
        .output()
        .expect("run tools/import-cycles");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn no_crate_has_an_import_cycle() {
    if !require_tool("python3", "python3") {
        return;
    }
    for krate in ["server", "client", "transport"] {
        let (code, text) = import_cycles(&workspace().join(krate).join("src"));
        assert_eq!(code, Some(0), "{krate}: {text}");
        assert!(text.contains(" 0 cycles"), "{krate}: {text}");
    }
}

#[test]
fn the_checker_finds_a_cycle_through_a_use_tree() {
    if !require_tool("python3", "python3") {
        return;
    }
    // The shapes the old code had: a brace-group import one way, an
    // inline path the other, and test code that must not count.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("store")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod registry;\npub mod store;\n").unwrap();
    std::fs::write(
        src.join("registry.rs"),
        "use crate::{names, store::{blobs::Blob, Store}};\npub struct Registry;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("store/mod.rs"),
        "pub mod blobs;\npub struct Store;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("store/blobs.rs"),
        "pub struct Blob;\nfn f() -> crate::registry::Registry { todo!() }\n",
    )
    .unwrap();
    let (code, text) = import_cycles(src);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cycle: registry <-> store::blobs"), "{text}");

    // Test code is not the house: the same back edge under #[cfg(test)]
    // is no cycle.
    std::fs::write(
        src.join("store/blobs.rs"),
        "pub struct Blob;\n#[cfg(test)]\nmod tests { use crate::registry::Registry; }\n",
    )
    .unwrap();
    let (code, text) = import_cycles(src);
    assert_eq!(code, Some(0), "{text}");
}
