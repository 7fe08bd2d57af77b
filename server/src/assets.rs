//! Man pages and shell completions generated from the clap definitions, so
//! the installed documentation is always the command line that ships
//! (`berth-server generate-assets DIR`, `berth generate-assets DIR`; the
//! Debian packages run them, `packaging/build-debs`).
//!
//! Layout under the output directory: `man/<name>.1` (plus one page per
//! subcommand, `<name>-<sub>.1`), `completions/<name>.bash`,
//! `completions/_<name>` (zsh) and `completions/<name>.fish`.

use std::io;
use std::path::Path;

use clap_complete::Shell;

/// Writes the man pages and completions of the program `cmd` describes.
pub fn generate(cmd: clap::Command, dir: &Path) -> io::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    // `help` subcommands would only repeat every page.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let name = cmd.get_name().to_string();
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = std::fs::File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pages_and_completions_for_every_subcommand() {
        let cmd = clap::Command::new("prog")
            .version("1")
            .about("a program")
            .subcommand(clap::Command::new("serve").about("serves"))
            .subcommand(clap::Command::new("hidden").hide(true));
        let dir = tempfile::tempdir().unwrap();
        super::generate(cmd, dir.path()).unwrap();
        let page = std::fs::read_to_string(dir.path().join("man/prog.1")).unwrap();
        assert!(
            page.contains(".TH prog 1") || page.contains(".TH PROG 1"),
            "{page}"
        );
        assert!(dir.path().join("man/prog-serve.1").exists());
        assert!(!dir.path().join("man/prog-hidden.1").exists());
        let bash = std::fs::read_to_string(dir.path().join("completions/prog.bash")).unwrap();
        assert!(bash.contains("serve"));
        assert!(dir.path().join("completions/_prog").exists());
        assert!(dir.path().join("completions/prog.fish").exists());
    }
}
