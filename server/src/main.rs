//! `berth-server`: command-line entry point. Parses flags, sets up logging
//! (always to stderr: in stdio mode stdout is the protocol), and hands off to
//! the library. Nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use berth_server::registry::{Registry, RegistryConfig};
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
        Command::Http(args) => {
            if !berth_server::http::is_loopback(&args.listen) && !args.allow_remote {
                bail!(
                    "refusing to serve unauthenticated HTTP on non-loopback {}; pass --allow-remote if you mean it",
                    args.listen
                );
            }
            let store = Store::open(&args.root)
                .with_context(|| format!("opening store {}", args.root.display()))?;
            let registry = Registry::new(store, RegistryConfig::default());
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
