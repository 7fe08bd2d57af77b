//! `berth-server`: command-line entry point. Parses flags, sets up logging
//! (always to stderr: in stdio mode stdout is the protocol), and hands off to
//! the library. Nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use berth_server::config::{self, Merged};

use berth_server::registry::Registry;
use berth_server::store::Store;

/// berth: a Docker image registry you reach over SSH.
#[derive(Parser, Debug)]
#[command(name = "berth-server", version = berth_server::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the SSH server (subsystem `docker-registry`, exec `registryget`/`registryput`).
    Serve(berth_server::ssh::ServeArgs),
    /// Print the settings `serve` would run with (its flags merged over the
    /// `--config` file), each with where it came from, and check that the
    /// access file, hooks directory and mirror they name are usable.
    /// Exit status: 0 usable, 2 not.
    CheckConfig(berth_server::ssh::ServeArgs),
    /// Serve one HTTP/1.1 connection on stdin/stdout (for sshd `Subsystem` or a forced command).
    Stdio(berth_server::stdio::StdioArgs),
    /// Serve plain HTTP on a loopback address, without authentication (local tools and tests);
    /// a non-loopback Host (421) or a foreign Origin (403) is refused.
    Http(HttpArgs),
    /// Create a store directory: private (0750/0640), or shared with the
    /// root's group (`--group-shared`: 2770/0660).
    Init(InitArgs),
    /// Query the audit log: who pushed or deleted what, when.
    Audit(AuditArgs),
    /// Check a store: blob digests, V1 checksums and ancestry, tags and manifest references.
    /// Exit status: 0 clean, 1 problems found, 2 could not run.
    Fsck(FsckArgs),
    /// Delete images, blobs and manifests no tag references (safe while pushes continue).
    Gc(GcArgs),
    /// Write berth-server's man pages and shell completions under DIR (packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory (`man/`, `completions/`).
        dir: PathBuf,
    },
}

/// Flags of `berth-server fsck`.
#[derive(clap::Args, Debug)]
struct FsckArgs {
    /// The store directory.
    #[arg(long, default_value = "./berth-data")]
    root: PathBuf,
    /// Remove provably garbage leftovers (stale temp files, expired upload
    /// sessions, image directories without json, links to missing blobs),
    /// remove per-repository links the repository never earned
    /// (docs/storage.md, "Upgrading a store"), and move objects whose
    /// content does not match their name (pool blobs, V1 images failing
    /// their checksum) to `_berth/quarantine/`, so the next push uploads
    /// them again.
    #[arg(long)]
    repair: bool,
    /// Leftovers younger than this may belong to a running request and are kept (`30m`, `2h`, `0s`).
    #[arg(long, default_value = "1h", value_parser = berth_server::store::gc::parse_duration)]
    grace: std::time::Duration,
    /// Also re-read every layer blob that has a layer facts record and
    /// check the recorded diff_id and size (slow: inflates every layer).
    #[arg(long)]
    deep: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `berth-server gc`.
#[derive(clap::Args, Debug)]
struct GcArgs {
    /// The store directory.
    #[arg(long, default_value = "./berth-data")]
    root: PathBuf,
    /// Nothing younger than this is collected (`30m`, `2h`, `1d`, `0s`).
    #[arg(long, default_value = "1h", value_parser = berth_server::store::gc::parse_duration)]
    grace: std::time::Duration,
    /// Report what would be freed without deleting anything.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `berth-server init`.
#[derive(clap::Args, Debug)]
struct InitArgs {
    /// The store directory (created if missing).
    #[arg(long, default_value = "./berth-data")]
    root: PathBuf,
    /// Share the store with the group of its root directory (team mounts):
    /// the root becomes 2770 (setgid), so directories below are created 2770
    /// and files 0660. Set the group first (`chgrp team DIR`) or after.
    #[arg(long)]
    group_shared: bool,
}

/// Flags of `berth-server audit`.
#[derive(clap::Args, Debug)]
struct AuditArgs {
    /// The store directory (its `_berth/audit.log` is read).
    #[arg(long, default_value = "./berth-data")]
    root: PathBuf,
    /// Read this audit file instead of `<root>/_berth/audit.log`.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Only events of this repository (`foo` means `library/foo`).
    #[arg(long)]
    repo: Option<String>,
    /// Only events by this user.
    #[arg(long)]
    user: Option<String>,
    /// Print the raw JSON lines.
    #[arg(long)]
    json: bool,
}

/// Flags of `berth-server http`.
#[derive(clap::Args, Debug)]
struct HttpArgs {
    /// The store directory (the mount point).
    #[arg(long, default_value = "./berth-data")]
    root: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// User name every request is attributed to.
    #[arg(long, default_value = "http")]
    user: String,
    /// Allow a non-loopback listen address (there is no authentication!).
    /// The loopback Host/Origin check is then off.
    #[arg(long)]
    allow_remote: bool,
    /// HTTP limits.
    #[command(flatten)]
    limits: berth_server::cli::HttpLimits,
    /// Webhooks and chained endpoints.
    #[command(flatten)]
    roles: berth_server::cli::RoleArgs,
}

/// Opens a store that must already exist (fsck and gc never create one).
fn open_existing(root: &std::path::Path) -> Result<Store> {
    if !berth_server::store::Paths::new(root).images_dir().is_dir() {
        bail!(
            "{} is not a berth store (no images/ directory)",
            root.display()
        );
    }
    Store::open(root).with_context(|| format!("opening store {}", root.display()))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// The command line with `--config` merged in (flags win over the file),
/// parsed; exits with clap's usage error or a config error.
fn parse_command_line() -> (Cli, clap::ArgMatches, Merged) {
    let command = Cli::command();
    let merged = match config::merge(&command, std::env::args_os().collect()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("berth-server: {e}");
            std::process::exit(2);
        }
    };
    let matches = command.get_matches_from(merged.argv.clone());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (cli, matches, merged)
}

/// `check-config`: prints the effective settings, then checks what they
/// name the way `serve` would before listening.
fn check_config(
    args: &berth_server::ssh::ServeArgs,
    matches: &clap::ArgMatches,
    merged: &Merged,
) -> Result<ExitCode> {
    let command = Cli::command();
    let sub = command
        .find_subcommand("check-config")
        .context("check-config subcommand")?;
    let sub_matches = matches
        .subcommand_matches("check-config")
        .context("check-config matches")?;
    print!("{}", config::effective_settings(sub, sub_matches, merged));
    berth_server::ssh::check_settings(args)?;
    println!("# ok: settings usable");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let (cli, matches, merged) = parse_command_line();
    if let Command::CheckConfig(args) = &cli.command {
        return match check_config(args, &matches, &merged) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("berth-server: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-server: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-server: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Completes at the first ctrl-c (SIGINT) or SIGTERM: `serve`'s shutdown.
/// The handlers are installed before the server starts, so no signal is
/// missed between the two.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let listener = berth_server::ssh::bind(&args).await?;
            berth_server::ssh::run(args, listener, stop_signal()?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig(_) => unreachable!("check-config runs before the runtime starts"),
        Command::GenerateAssets { dir } => {
            berth_server::assets::generate(Cli::command(), &dir).with_context(|| {
                format!("writing man pages and completions to {}", dir.display())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stdio(args) => berth_server::stdio::run(args).await,
        Command::Init(args) => {
            let result = if args.group_shared {
                Store::create_group_shared(&args.root)
            } else {
                Store::open(&args.root)
            };
            result.with_context(|| format!("creating store {}", args.root.display()))?;
            println!(
                "berth-server: store {} ready ({})",
                args.root.display(),
                if args.group_shared {
                    "group-shared: directories 2770, files 0660"
                } else {
                    "private: directories 0750, files 0640"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => {
            let path = args
                .audit
                .clone()
                .unwrap_or_else(|| berth_server::store::Paths::new(&args.root).audit_log());
            let events =
                berth_server::audit::query(&path, args.repo.as_deref(), args.user.as_deref())
                    .with_context(|| format!("reading {}", path.display()))?;
            for e in events {
                if args.json {
                    println!("{e}");
                } else {
                    // Every field may come from a client (the login name
                    // above all): escaped, so it cannot forge a line or
                    // drive the terminal.
                    let s = |k: &str| {
                        berth_server::logsafe::escape(
                            e.get(k).and_then(|v| v.as_str()).unwrap_or("-"),
                        )
                    };
                    let what = [s("repository"), s("tag"), s("digest"), s("image")]
                        .into_iter()
                        .filter(|v| v != "-")
                        .collect::<Vec<_>>()
                        .join(" ");
                    println!(
                        "{}  {:<12} {:<20} {}  (key {}, from {})",
                        s("time"),
                        s("user"),
                        s("op"),
                        what,
                        s("key"),
                        s("client")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck(args) => {
            let store = open_existing(&args.root)?;
            let opts = berth_server::store::fsck::FsckOptions {
                repair: args.repair,
                deep: args.deep,
                grace: args.grace,
            };
            let report =
                tokio::task::spawn_blocking(move || berth_server::store::fsck::fsck(&store, &opts))
                    .await?
                    .with_context(|| format!("checking {}", args.root.display()))?;
            use berth_server::store::fsck::Severity;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for f in &report.findings {
                    let label = match f.severity {
                        Severity::Problem => "PROBLEM",
                        Severity::Leftover => "leftover",
                        Severity::Repaired => "repaired",
                        Severity::Note => "note",
                    };
                    println!("{label}: {}: {}", f.path.display(), f.message);
                }
                println!(
                    "fsck: {} blobs, {} images, {} V1 tags, {} V2 tags checked; {} problems, {} leftovers, {} repaired",
                    report.blobs,
                    report.images,
                    report.v1_tags,
                    report.v2_tags,
                    report.problems(),
                    report.count(Severity::Leftover),
                    report.count(Severity::Repaired)
                );
            }
            Ok(if report.problems() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Gc(args) => {
            let store = open_existing(&args.root)?;
            let opts = berth_server::store::gc::GcOptions {
                grace: args.grace,
                dry_run: args.dry_run,
            };
            let r = tokio::task::spawn_blocking(move || berth_server::store::gc::gc(&store, &opts))
                .await?
                .with_context(|| format!("collecting garbage in {}", args.root.display()))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let verb = if args.dry_run { "would free" } else { "freed" };
                println!(
                    "gc: {verb} {} bytes: {} images, {} blobs, {} records, {} links, {} temp files, {} upload sessions ({} spared: referenced or young meanwhile)",
                    r.bytes, r.images, r.blobs, r.records, r.links, r.temps, r.sessions, r.rescued
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Http(args) => {
            if !berth_server::http::is_loopback(&args.listen) && !args.allow_remote {
                bail!(
                    "refusing to serve unauthenticated HTTP on non-loopback {}; pass --allow-remote if you mean it",
                    args.listen
                );
            }
            let store = Store::open(&args.root)
                .with_context(|| format!("opening store {}", args.root.display()))?;
            let config = args
                .roles
                .apply(args.limits.config())
                .map_err(anyhow::Error::msg)?;
            let registry = Registry::new(store, config);
            berth_server::mirror::announce(registry.config().mirror.as_ref());
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            let addr = listener.local_addr()?;
            println!(
                "berth-server: http on {addr} (root {}, user {})",
                args.root.display(),
                args.user
            );
            if berth_server::http::is_loopback(&addr) {
                println!("catalog: http://{addr}/");
            }
            berth_server::http::serve_http(listener, registry, args.user).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
