//! Build script shared by `berth` and `berth-server`: records the commit
//! the binaries were built from, so `--version` says exactly what runs.
//!
//! The commit comes from `BERTH_COMMIT` when set (builds from a source
//! tarball, distribution packages), else from `git rev-parse` in the source
//! tree, else it is `unknown`: a version line never guesses.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=BERTH_COMMIT");
    let commit = match std::env::var("BERTH_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself (a branch switch) and the
            // branch it points at (a commit), wherever this worktree keeps them.
            // Only files that exist: cargo reruns a script watching a
            // missing file on every build (a packed branch has no file;
            // packed-refs covers it).
            let branch = git(&["symbolic-ref", "-q", "HEAD"]);
            for file in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
                if let Some(p) = git(&["rev-parse", "--git-path", file]) {
                    if std::path::Path::new(&p).exists() {
                        println!("cargo:rerun-if-changed={p}");
                    }
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=BERTH_COMMIT={commit}");
}
