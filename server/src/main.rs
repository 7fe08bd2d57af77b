//! `berth-server`: command-line entry point. Parses flags, sets up logging
//! (always to stderr: in stdio mode stdout is the protocol), and hands off to
//! the library. Nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use berth_server::registry::Registry;
use berth_server::store::Store;

/// berth: a Docker image registry you reach over SSH.
#[derive(Parser, Debug)]
#[command(name = "berth-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the SSH server (subsystem `docker-registry`, exec `registryget`/`registryput`).
    Serve(berth_server::ssh::ServeArgs),
    /// Serve one HTTP/1.1 connection on stdin/stdout (for sshd `Subsystem` or a forced command).
    Stdio(berth_server::stdio::StdioArgs),
    /// Serve plain HTTP on a loopback address, without authentication (local tools and tests).
    Http(HttpArgs),
    /// Query the audit log: who pushed or deleted what, when.
    Audit(AuditArgs),
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
    #[arg(long)]
    allow_remote: bool,
    /// HTTP limits.
    #[command(flatten)]
    limits: berth_server::registry::HttpLimits,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            berth_server::ssh::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stdio(args) => berth_server::stdio::run(args).await,
        Command::Audit(args) => {
            let path = args.audit.clone().unwrap_or_else(|| {
                berth_server::store::Paths::new(&args.root)
                    .berth_dir()
                    .join("audit.log")
            });
            let events =
                berth_server::audit::query(&path, args.repo.as_deref(), args.user.as_deref())
                    .with_context(|| format!("reading {}", path.display()))?;
            for e in events {
                if args.json {
                    println!("{e}");
                } else {
                    let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
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
        Command::Http(args) => {
            if !berth_server::http::is_loopback(&args.listen) && !args.allow_remote {
                bail!(
                    "refusing to serve unauthenticated HTTP on non-loopback {}; pass --allow-remote if you mean it",
                    args.listen
                );
            }
            let store = Store::open(&args.root)
                .with_context(|| format!("opening store {}", args.root.display()))?;
            let registry = Registry::new(store, args.limits.config());
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            let addr = listener.local_addr()?;
            println!(
                "berth-server: http on {addr} (root {}, user {})",
                args.root.display(),
                args.user
            );
            berth_server::http::serve_http(listener, registry, args.user).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
