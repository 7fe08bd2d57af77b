//! OpenSSH instead of the built-in client: when `BERTH_SSH_COMMAND` is set
//! (the `GIT_SSH_COMMAND` convention), every stream is a spawned
//! `$BERTH_SSH_COMMAND -s [-p PORT] -- [user@]host docker-registry`, so
//! `~/.ssh/config`, ControlMaster, ProxyJump, certificates and agents all
//! work as they do for `ssh` itself.
//!
//! The command is run by `sh -c` like git does, so it may carry options and
//! quotes. The child's stderr is kept (see [`Diagnostics`]) and shown when
//! the connection fails, since that is where ssh explains why.

use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::ssh::SshOptions;
use super::{Diagnostics, Stream, TransportError};
use crate::remote::{SshTarget, DEFAULT_SSH_PORT};
use crate::wire::SUBSYSTEM;

/// Spawns one OpenSSH client per stream.
pub struct CommandTransport {
    command: String,
    target: SshTarget,
    options: SshOptions,
}

impl CommandTransport {
    /// `command` is the shell text from `$BERTH_SSH_COMMAND`.
    pub fn new(command: String, target: SshTarget, options: SshOptions) -> CommandTransport {
        CommandTransport {
            command,
            target,
            options,
        }
    }

    /// The arguments appended to the command: our SSH options translated to
    /// OpenSSH flags, then the destination and the subsystem name. Port and
    /// user are passed only when given, so `~/.ssh/config` can supply them.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args = vec!["-s".to_string()];
        if self.target.port != DEFAULT_SSH_PORT {
            args.extend(["-p".to_string(), self.target.port.to_string()]);
        }
        for id in &self.options.identities {
            args.extend(["-i".to_string(), id.display().to_string()]);
        }
        if !self.options.jumps.is_empty() {
            let list: Vec<String> = self.options.jumps.iter().map(|j| j.to_string()).collect();
            args.extend(["-J".to_string(), list.join(",")]);
        }
        if let Some(kh) = &self.options.known_hosts {
            args.extend([
                "-o".to_string(),
                format!("UserKnownHostsFile={}", kh.display()),
            ]);
        }
        if self.options.accept_new_host_key {
            args.extend([
                "-o".to_string(),
                "StrictHostKeyChecking=accept-new".to_string(),
            ]);
        }
        let host = if self.target.host.contains(':') {
            format!("[{}]", self.target.host)
        } else {
            self.target.host.clone()
        };
        // `--` ends ssh's options: whatever the destination looks like, it
        // is a destination (`remote` also refuses hosts starting with `-`).
        args.push("--".to_string());
        args.push(match &self.target.user {
            Some(u) => format!("{u}@{host}"),
            None => host,
        });
        args.push(SUBSYSTEM.to_string());
        args
    }

    /// Spawns the ssh process; its stdin/stdout are the stream.
    pub fn open(&self) -> Result<Stream, TransportError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{} \"$@\"", self.command))
            .arg("berth-ssh")
            .args(self.ssh_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| TransportError::Spawn {
            command: self.command.clone(),
            source,
        })?;
        let diagnostics = Diagnostics::open();
        if let Some(mut stderr) = child.stderr.take() {
            let d = diagnostics.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    d.push(&buf[..n]);
                }
                d.finish();
            });
        } else {
            diagnostics.finish();
        }
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(TransportError::Spawn {
                command: self.command.clone(),
                source: std::io::Error::other("no pipes to the child"),
            });
        };
        Ok(Stream::new(
            ChildIo {
                io: tokio::io::join(stdout, stdin),
                _child: child,
            },
            diagnostics,
        ))
    }
}

/// The child's pipes as one stream; dropping it kills the child.
struct ChildIo {
    io: tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>,
    _child: Child,
}

impl tokio::io::AsyncRead for ChildIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ChildIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str, options: SshOptions) -> Vec<String> {
        CommandTransport::new("ssh".into(), SshTarget::parse(target).unwrap(), options).ssh_args()
    }

    #[test]
    fn passes_only_what_was_given() {
        // No port, no user: left to ~/.ssh/config.
        assert_eq!(
            args("registry", SshOptions::default()),
            ["-s", "--", "registry", SUBSYSTEM]
        );
        assert_eq!(
            args("bob@[::1]:2222", SshOptions::default()),
            ["-s", "-p", "2222", "--", "bob@[::1]", SUBSYSTEM]
        );
    }

    #[test]
    fn translates_options_to_openssh_flags() {
        let options = SshOptions {
            identities: vec!["/k/id".into()],
            jumps: crate::remote::parse_jumps(&["a@j1:2200,j2".into()]).unwrap(),
            known_hosts: Some("/k/known".into()),
            accept_new_host_key: true,
        };
        assert_eq!(
            args("h", options),
            [
                "-s",
                "-i",
                "/k/id",
                "-J",
                "a@j1:2200,j2",
                "-o",
                "UserKnownHostsFile=/k/known",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "--",
                "h",
                SUBSYSTEM
            ]
        );
    }
}
