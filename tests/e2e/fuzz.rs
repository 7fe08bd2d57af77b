//! Runs the `cargo fuzz` targets (`fuzz/`) for a bounded time: the request
//! router / path parser and the `docker save` archive reader. Needs the
//! nightly toolchain and `cargo install cargo-fuzz` (CI installs it).
//! A crash fails the test and leaves the input under the printed path; keep
//! such inputs in `fuzz/seeds/<target>/` as regression cases once fixed.

use std::path::Path;
use std::process::Command;

use berth_tests::*;

fn fuzz_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("fuzz")
}

fn run_target(target: &str, seconds: u32) {
    let work = tempfile::tempdir().unwrap();
    let corpus = work.path().join("corpus");
    let artifacts = work.path().join("artifacts");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::create_dir_all(&artifacts).unwrap();
    let seeds = fuzz_dir().join("seeds").join(target);
    let out = Command::new("cargo")
        .current_dir(fuzz_dir())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .unwrap();
    let found: Vec<_> = std::fs::read_dir(&artifacts)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    if !out.status.success() || !found.is_empty() {
        let keep = std::env::temp_dir().join(format!("berth-fuzz-{target}-artifacts"));
        let _ = std::fs::remove_dir_all(&keep);
        let _ = std::fs::rename(&artifacts, &keep);
        panic!(
            "fuzz target {target} failed (inputs kept in {}):\n{}",
            keep.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let tail = String::from_utf8_lossy(&out.stderr);
    let done = tail
        .lines()
        .rev()
        .find(|l| l.starts_with("Done "))
        .unwrap_or("no summary");
    eprintln!("fuzz {target}: {done}");
}

fn fuzz_available() -> bool {
    if !require_tool("cargo-fuzz", "cargo-fuzz (cargo install cargo-fuzz)") {
        return false;
    }
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !nightly {
        if in_ci() {
            panic!("the nightly toolchain is needed for cargo fuzz");
        }
        eprintln!("\n!!!!! SKIPPING: no nightly toolchain for cargo fuzz !!!!!\n");
    }
    nightly
}

#[test]
fn fuzz_router_and_path_parser() {
    if fuzz_available() {
        run_target("router", 20);
    }
}

#[test]
fn fuzz_archive_reader() {
    if fuzz_available() {
        run_target("archive", 20);
    }
}
