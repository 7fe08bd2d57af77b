//! `--config FILE`: the `serve` flags as one TOML file, for a server run as a
//! service (the Debian package's `/etc/berth/berth-server.toml`).
//!
//! Every key is the long name of a `serve` flag (`root`, `listen`,
//! `max-connections`, `webhook`...), so the flag reference is the config
//! reference and nothing can drift. A flag given on the command line wins
//! over the file; a key that is no flag is an error naming the key and the
//! file. The file is turned into flags and parsed by the same clap
//! definitions, so every value is checked exactly as on the command line.
//! [`effective_settings`] renders the merged result (`check-config`).

use std::any::TypeId;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The flag naming the config file; never itself a key.
pub const CONFIG_FLAG: &str = "config";

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The file is not TOML, or a key or value is wrong.
    #[error("config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// A command line with its config file merged in.
#[derive(Debug)]
pub struct Merged {
    /// The whole command line: the original arguments, then the file's
    /// settings as flags.
    pub argv: Vec<OsString>,
    /// The file the settings came from, if any.
    pub file: Option<PathBuf>,
    /// Argument ids whose values came from the file.
    pub from_file: Vec<String>,
}

/// The arguments `argv` (a whole command line, program name first) stands
/// for once the `--config` file of its subcommand, if any, is merged in:
/// the file's settings become flags after the command line's, except those
/// the command line already gives. `cli` is the full clap command.
pub fn merge(cli: &Command, argv: Vec<OsString>) -> Result<Merged, ConfigError> {
    let unchanged = |argv| Merged {
        argv,
        file: None,
        from_file: Vec::new(),
    };
    let Ok(matches) = cli.clone().try_get_matches_from(&argv) else {
        // Let the caller's own parse report the command-line error.
        return Ok(unchanged(argv));
    };
    let Some((sub_name, sub_matches)) = matches.subcommand() else {
        return Ok(unchanged(argv));
    };
    let Some(sub) = cli.find_subcommand(sub_name) else {
        return Ok(unchanged(argv));
    };
    let Ok(Some(path)) = sub_matches.try_get_one::<PathBuf>(CONFIG_FLAG) else {
        return Ok(unchanged(argv));
    };
    let table = read(path)?;
    let from_file = flags_of(sub, &table, path)?;
    // The file's values alone, so a bad one is reported as the file's.
    let alone = from_file.iter().flat_map(|(_, f)| f.iter().cloned());
    if let Err(e) = sub.clone().no_binary_name(true).try_get_matches_from(alone) {
        return Err(invalid(path, clap_message(&e)));
    }
    let mut merged = Merged {
        argv,
        file: Some(path.clone()),
        from_file: Vec::new(),
    };
    for (id, flags) in from_file {
        if sub_matches.value_source(&id) != Some(ValueSource::CommandLine) {
            merged.argv.extend(flags);
            merged.from_file.push(id);
        }
    }
    Ok(merged)
}

/// The settings a subcommand's `matches` (parsed from `merged.argv`) ended
/// up with, as TOML a config file could hold, each line saying where its
/// value came from.
pub fn effective_settings(sub: &Command, matches: &ArgMatches, merged: &Merged) -> String {
    let mut out = String::new();
    let file = merged
        .file
        .as_ref()
        .map(|p| format!("config {}", p.display()))
        .unwrap_or_default();
    for arg in settable(sub) {
        let id = arg.get_id().as_str();
        let key = arg.get_long().unwrap_or(id);
        let source = match matches.value_source(id) {
            Some(_) if merged.from_file.iter().any(|f| f == id) => file.as_str(),
            Some(ValueSource::CommandLine) => "command line",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            Some(_) => "set",
            None => {
                out.push_str(&format!("# {key} = (not set)\n"));
                continue;
            }
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = if is_flag(arg) {
            raw.first().cloned().unwrap_or_else(|| "false".to_string())
        } else if is_list(arg) {
            let items: Vec<String> = raw.iter().map(|v| toml_string(v)).collect();
            format!("[{}]", items.join(", "))
        } else {
            let v = raw.first().cloned().unwrap_or_default();
            if is_integer(arg) && v.parse::<i64>().is_ok() {
                v
            } else {
                toml_string(&v)
            }
        };
        out.push_str(&format!("{key} = {value}  # {source}\n"));
    }
    out
}

fn read(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| invalid(path, e.to_string().trim_end().to_string()))
}

/// The arguments of `sub` a config file may set.
fn settable(sub: &Command) -> impl Iterator<Item = &clap::Arg> {
    sub.get_arguments().filter(|a| {
        a.get_long().is_some()
            && a.get_id() != CONFIG_FLAG
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
    })
}

fn is_flag(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

fn is_list(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

fn is_integer(arg: &clap::Arg) -> bool {
    let t = arg.get_value_parser().type_id();
    [
        TypeId::of::<u64>(),
        TypeId::of::<u32>(),
        TypeId::of::<u16>(),
        TypeId::of::<usize>(),
        TypeId::of::<i64>(),
    ]
    .into_iter()
    .any(|id| t == id)
}

/// Each key of `table` as the flags it stands for, by argument id.
fn flags_of(
    sub: &Command,
    table: &toml::Table,
    path: &Path,
) -> Result<Vec<(String, Vec<OsString>)>, ConfigError> {
    let mut out = Vec::new();
    for (key, value) in table {
        let Some(arg) = settable(sub).find(|a| a.get_long() == Some(key.as_str())) else {
            let known: Vec<&str> = settable(sub).filter_map(|a| a.get_long()).collect();
            return Err(invalid(
                path,
                format!(
                    "unknown key `{key}` (keys are the long flags of `berth-server serve`: {})",
                    known.join(", ")
                ),
            ));
        };
        let flag = OsString::from(format!("--{key}"));
        let mut flags = Vec::new();
        if is_flag(arg) {
            match value {
                toml::Value::Boolean(true) => flags.push(flag),
                toml::Value::Boolean(false) => {}
                _ => return Err(invalid(path, format!("`{key}` takes true or false"))),
            }
        } else {
            let values: Vec<&toml::Value> = match value {
                toml::Value::Array(items) if is_list(arg) => items.iter().collect(),
                toml::Value::Array(_) => {
                    return Err(invalid(
                        path,
                        format!("`{key}` takes one value, not a list"),
                    ))
                }
                one => vec![one],
            };
            for v in values {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    _ => {
                        return Err(invalid(
                            path,
                            format!("`{key}` takes a string or an integer, not {}", v.type_str()),
                        ))
                    }
                };
                flags.push(flag.clone());
                flags.push(OsString::from(text));
            }
        }
        out.push((arg.get_id().as_str().to_string(), flags));
    }
    Ok(out)
}

fn invalid(path: &Path, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

/// clap's message without its `error:` prefix and usage footer.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> Command {
        Command::new("prog").subcommand(
            Command::new("serve")
                .arg(
                    Arg::new(CONFIG_FLAG)
                        .long("config")
                        .value_parser(clap::value_parser!(PathBuf)),
                )
                .arg(Arg::new("root").long("root").default_value("./data"))
                .arg(
                    Arg::new("max")
                        .long("max-connections")
                        .default_value("8")
                        .value_parser(clap::value_parser!(u64)),
                )
                .arg(Arg::new("hook").long("webhook").action(ArgAction::Append))
                .arg(
                    Arg::new("push")
                        .long("allow-push")
                        .action(ArgAction::SetTrue),
                ),
        )
    }

    fn merged(file: &str, flags: &[&str]) -> Result<Merged, ConfigError> {
        thread_local!(static DIR: tempfile::TempDir = tempfile::tempdir().unwrap());
        let path = DIR.with(|d| d.path().join("c.toml"));
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = ["prog", "serve", "--config"].map(OsString::from).to_vec();
        argv.push(path.into_os_string());
        argv.extend(flags.iter().map(OsString::from));
        merge(&cli(), argv)
    }

    fn added(m: &Merged) -> Vec<String> {
        m.argv[4..]
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn file_values_become_flags_and_command_line_flags_win() {
        let out = merged(
            "root = \"/srv\"\nmax-connections = 5\nwebhook = [\"a\", \"b\"]\nallow-push = true\n",
            &["--max-connections", "9"],
        )
        .unwrap();
        assert_eq!(
            added(&out),
            [
                "--max-connections",
                "9",
                "--allow-push",
                "--root",
                "/srv",
                "--webhook",
                "a",
                "--webhook",
                "b"
            ]
        );
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = merged("root = \"/srv\"\nlisten_addr = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key `listen_addr`") && e.contains("c.toml"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_the_files_errors() {
        let e = merged("max-connections = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("many"), "{e}");
        let e = merged("allow-push = 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("true or false"), "{e}");
        let e = merged("root = [\"a\"]\n", &[]).unwrap_err().to_string();
        assert!(e.contains("one value"), "{e}");
        let e = merged("root = \"a\"\nroot = \"b\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml"), "{e}");
    }

    #[test]
    fn effective_settings_say_where_each_value_came_from() {
        let merged = merged("root = \"/srv\"\n", &["--allow-push"]).unwrap();
        let m = cli().get_matches_from(merged.argv.clone());
        let (_, sub) = m.subcommand().unwrap();
        let text = effective_settings(cli().find_subcommand("serve").unwrap(), sub, &merged);
        let file = merged.file.as_ref().unwrap().display().to_string();
        assert!(
            text.contains(&format!("root = \"/srv\"  # config {file}")),
            "{text}"
        );
        assert!(text.contains("max-connections = 8  # default"), "{text}");
        assert!(text.contains("allow-push = true  # command line"), "{text}");
        assert!(text.contains("# webhook = (not set)"), "{text}");
        // What it prints is itself a valid config.
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["max-connections"].as_integer(), Some(8));
    }
}
