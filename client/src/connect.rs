//! How a command reaches its `REGISTRY`, as plain values: the SSH options
//! every command takes (keys, jump hosts, known_hosts), turned into a
//! [`Transport`] only when the command is ready to touch the registry. The
//! library takes these; the command line (`cli.rs`) fills them from its
//! flags, so no library module depends on clap types.

use std::path::PathBuf;

use crate::error::ClientError;
use crate::remote::{parse_jumps, Remote};
use crate::transport::ssh::SshOptions;
use crate::transport::{NewTransport, Transport};

/// SSH options of a command, as given (checked when a transport is made).
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Private key files for SSH login, tried before ssh-agent and
    /// `~/.ssh/id_{ed25519,ecdsa,rsa}`.
    pub identity: Vec<PathBuf>,
    /// Jump hosts, like ssh -J (outermost first; each may be a comma list).
    pub jump: Vec<String>,
    /// known_hosts file to check host keys against [default: ~/.ssh/known_hosts].
    pub known_hosts: Option<PathBuf>,
    /// Record the host key of a host seen for the first time.
    pub accept_new_host_key: bool,
}

impl ConnectOptions {
    /// Validated options for the transports.
    pub fn options(&self) -> Result<SshOptions, ClientError> {
        Ok(SshOptions {
            identities: self.identity.clone(),
            jumps: parse_jumps(&self.jump)?,
            known_hosts: self.known_hosts.clone(),
            accept_new_host_key: self.accept_new_host_key,
        })
    }

    /// The transport to `registry` with these options (nothing connects yet).
    pub fn transport(&self, registry: &str) -> Result<Transport, ClientError> {
        let remote: Remote = registry.parse()?;
        Ok(Transport::new(&remote, self.options()?)?)
    }
}
