//! `berth-server stdio`: the registry service on stdin/stdout, so stock
//! OpenSSH can host it (`russh.md` §7):
//!
//! * `Subsystem docker-registry /path/berth-server stdio --root DIR --user NAME`
//!   in sshd_config: one HTTP/1.1 (keep-alive) connection on stdin/stdout;
//! * `command="berth-server stdio --root DIR --user deploy",restrict` in
//!   authorized_keys: then `SSH_ORIGINAL_COMMAND` says what the client asked
//!   for — `registryget PATH` / `registryput PATH` (exec forms) or, for a
//!   subsystem request, the configured subsystem command line.
//!
//! sshd discards a subsystem's stderr, so errors are answered in-protocol;
//! logs go to stderr only for the exec and interactive cases.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use berth_transport::wire::SUBSYSTEM;

use crate::registry::{Identity, Registry};
use crate::store::Store;

/// Flags of `berth-server stdio`.
#[derive(clap::Args, Debug)]
pub struct StdioArgs {
    /// The store directory (the mount point).
    #[arg(long)]
    pub root: PathBuf,
    /// User name requests are attributed to (default: $USER); with an
    /// access file, the user whose rules apply (`anonymous` for keyless access).
    #[arg(long)]
    pub user: Option<String>,
    /// Access file (TOML) with per-namespace rules; see docs/access.md.
    #[arg(long)]
    pub access: Option<std::path::PathBuf>,
    /// Audit log file. Default: <root>/_berth/audit.log.
    #[arg(long)]
    pub audit: Option<std::path::PathBuf>,
    /// HTTP limits.
    #[command(flatten)]
    pub limits: crate::cli::HttpLimits,
    /// Webhooks and chained endpoints.
    #[command(flatten)]
    pub roles: crate::cli::RoleArgs,
}

/// What the SSH client asked for, from `SSH_ORIGINAL_COMMAND`.
#[derive(Debug, PartialEq, Eq)]
enum Requested {
    /// HTTP on stdin/stdout (subsystem, or no forced command at all).
    Http,
    /// An exec command.
    Exec(crate::exec::ExecCommand),
    /// Something we do not serve (a shell, another program).
    Refused(String),
}

fn requested(original: Option<&str>) -> Requested {
    let Some(line) = original.map(str::trim).filter(|l| !l.is_empty()) else {
        return Requested::Http;
    };
    match crate::exec::parse(line) {
        Ok(Some(cmd)) => Requested::Exec(cmd),
        Err(e) => Requested::Refused(e),
        Ok(None) => {
            // Under a forced command a subsystem request shows up as the
            // configured subsystem command line; `docker-registry` is accepted
            // as the exec spelling of the subsystem.
            let first = shlex::split(line)
                .and_then(|w| w.into_iter().next())
                .unwrap_or_default();
            let program = first.rsplit('/').next().unwrap_or("").to_string();
            if program == SUBSYSTEM || program == "berth-server" {
                Requested::Http
            } else {
                Requested::Refused(format!(
                    "this key may only use the docker-registry subsystem or registryget/registryput, not {program:?}"
                ))
            }
        }
    }
}

/// Who is connected, from the environment sshd sets.
fn identity(user: String) -> Identity {
    let client = std::env::var("SSH_CONNECTION")
        .or_else(|_| std::env::var("SSH_CLIENT"))
        .ok()
        .and_then(|c| {
            let mut parts = c.split_whitespace();
            Some(format!("{}:{}", parts.next()?, parts.next()?))
        });
    Identity {
        user,
        key_fingerprint: None,
        client,
    }
}

/// Runs stdio mode; the exit code is what sshd passes to the client.
pub async fn run(args: StdioArgs) -> Result<ExitCode> {
    let store = Store::open(&args.root)
        .with_context(|| format!("opening store {}", args.root.display()))?;
    let access = match &args.access {
        Some(path) => crate::access::AccessControl::from_file(path)?,
        None => crate::access::AccessControl::open(&[]),
    };
    let registry = Registry::with_access(
        store,
        args.roles
            .apply(args.limits.config())
            .map_err(anyhow::Error::msg)?,
        access,
        args.audit.clone(),
    );
    let user = args
        .user
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "anonymous".to_string());
    let who = identity(user);
    let original = std::env::var("SSH_ORIGINAL_COMMAND").ok();
    match requested(original.as_deref()) {
        Requested::Http => {
            let io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            if let Err(e) = registry.serve_connection(io, who).await {
                tracing::debug!(error = %e, "stdio connection ended");
            }
            Ok(ExitCode::SUCCESS)
        }
        Requested::Exec(cmd) => {
            let code = crate::exec::run(
                registry,
                cmd,
                &who,
                crate::exec::body_from_reader(tokio::io::stdin()),
                tokio::io::stdout(),
                tokio::io::stderr(),
            )
            .await;
            Ok(ExitCode::from(code.min(255) as u8))
        }
        Requested::Refused(why) => {
            eprintln!("berth-server: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_command_forms() {
        assert_eq!(requested(None), Requested::Http);
        assert_eq!(
            requested(Some("/usr/local/bin/berth-server stdio --root /r")),
            Requested::Http
        );
        assert_eq!(requested(Some("docker-registry")), Requested::Http);
        assert!(matches!(
            requested(Some("registryget /v1/_ping")),
            Requested::Exec(_)
        ));
        assert!(matches!(requested(Some("bash")), Requested::Refused(_)));
        assert!(matches!(
            requested(Some("registryget")),
            Requested::Refused(_)
        ));
    }
}
