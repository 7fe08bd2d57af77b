//! `REGISTRY` strings, parsed once into a [`Remote`]:
//! `ssh://[user@]host[:port]`, `http://host[:port]`, `https://host[:port]`,
//! `file:///abs/dir`, or a plain directory path.
//!
//! Parsing only; nothing here connects or touches the file system. Jump hosts
//! (`-J [user@]host[:port]`) share the same `[user@]host[:port]` syntax, so
//! [`SshTarget`] parses both.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The default SSH port, left out of `known_hosts` entries (`[host]:port` otherwise).
pub const DEFAULT_SSH_PORT: u16 = 22;

/// Where a registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A mount point served in-process (`file:///abs/dir` or a path).
    Local(PathBuf),
    /// A host reached over SSH (`ssh://[user@]host[:port]`).
    Ssh(SshTarget),
    /// A plain-HTTP V2 registry (`http://host:port`), e.g. distribution on
    /// a trusted network, for `berth sync`.
    Http {
        /// Host name or address.
        host: String,
        /// TCP port (default 80).
        port: u16,
    },
    /// An HTTPS V2 registry (`https://host:port`): [`Remote::Http`] over
    /// TLS, the certificate checked against the system trust store.
    Https {
        /// Host name or address; the certificate must name it.
        host: String,
        /// TCP port (default 443).
        port: u16,
    },
}

/// Why a `REGISTRY` or jump-host string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The string is empty.
    #[error("empty registry address")]
    Empty,
    /// A URL scheme other than `ssh://`, `http://`, `https://` or `file://`.
    #[error("unsupported scheme in {0:?}: use ssh://[user@]host[:port], file:///abs/dir, a directory path, http://host:port or https://host:port")]
    Scheme(String),
    /// `file://` with a relative or missing path.
    #[error("{0:?}: file:// needs an absolute path (file:///abs/dir)")]
    FilePath(String),
    /// A host part that is empty or malformed.
    #[error("{0:?}: bad host (expected [user@]host[:port])")]
    Host(String),
    /// A port that is not a number in 1..=65535.
    #[error("{0:?}: bad port")]
    Port(String),
    /// `ssh://host/path`: the subsystem has no path component.
    #[error("{0:?}: ssh:// registries take no path (the server decides its root)")]
    SshPath(String),
    /// A host or login name starting with `-`, which `ssh` (under
    /// `BERTH_SSH_COMMAND`) would read as an option (`-oProxyCommand=...`).
    #[error("{0:?}: a host or user name may not start with '-' (ssh would read it as an option)")]
    Dash(String),
}

/// One SSH endpoint: the registry host or a jump host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Login name; `None` means the local user name.
    pub user: Option<String>,
    /// Host name or address as the user wrote it (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl SshTarget {
    /// Parses `[user@]host[:port]` (IPv6 as `[::1]:2222`).
    pub fn parse(s: &str) -> Result<SshTarget, RemoteError> {
        let (user, hostport) = match s.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(RemoteError::Host(s.to_string())),
            None => (None, s),
        };
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| RemoteError::Host(s.to_string()))?;
            match after {
                "" => (h, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(RemoteError::Host(s.to_string())),
                },
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.starts_with('-') || user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err(RemoteError::Dash(s.to_string()));
        }
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(RemoteError::Host(s.to_string()));
        }
        let port = match port {
            None => DEFAULT_SSH_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(RemoteError::Port(s.to_string())),
            },
        };
        Ok(SshTarget {
            user,
            host: host.to_string(),
            port,
        })
    }

    /// The login name: the explicit one or `default_user`.
    pub fn user_or<'a>(&'a self, default_user: &'a str) -> &'a str {
        self.user.as_deref().unwrap_or(default_user)
    }

    /// `host` or `[host]:port`, the form OpenSSH writes to `known_hosts`.
    pub fn known_hosts_name(&self) -> String {
        if self.port == DEFAULT_SSH_PORT {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if self.port != DEFAULT_SSH_PORT {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl FromStr for Remote {
    type Err = RemoteError;

    fn from_str(s: &str) -> Result<Remote, RemoteError> {
        if s.is_empty() {
            return Err(RemoteError::Empty);
        }
        if let Some(rest) = s.strip_prefix("ssh://") {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.contains('/') {
                return Err(RemoteError::SshPath(s.to_string()));
            }
            return SshTarget::parse(rest).map(Remote::Ssh);
        }
        if let Some(rest) = s.strip_prefix("http://") {
            let (host, port) = http_host(s, rest, 80)?;
            return Ok(Remote::Http { host, port });
        }
        if let Some(rest) = s.strip_prefix("https://") {
            let (host, port) = http_host(s, rest, 443)?;
            return Ok(Remote::Https { host, port });
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(RemoteError::FilePath(s.to_string()));
            }
            return Ok(Remote::Local(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !scheme.contains('/') {
                return Err(RemoteError::Scheme(s.to_string()));
            }
        }
        Ok(Remote::Local(PathBuf::from(s)))
    }
}

/// The `host[:port][/]` after `http://` or `https://` of `s`.
fn http_host(s: &str, rest: &str, default_port: u16) -> Result<(String, u16), RemoteError> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '@', ' ']) {
        return Err(RemoteError::Host(s.to_string()));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => match p.parse::<u16>() {
            Ok(p) if p != 0 => (h, p),
            _ => return Err(RemoteError::Port(s.to_string())),
        },
        Some(_) => return Err(RemoteError::Host(s.to_string())),
        None => (rest, default_port),
    };
    Ok((host.to_string(), port))
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Local(p) => write!(f, "{}", p.display()),
            Remote::Ssh(t) => write!(f, "ssh://{t}"),
            Remote::Http { host, port } => write!(f, "http://{host}:{port}"),
            Remote::Https { host, port } => write!(f, "https://{host}:{port}"),
        }
    }
}

/// Splits `-J` values: each may be a comma list, as with OpenSSH `-J a,b`.
pub fn parse_jumps(values: &[String]) -> Result<Vec<SshTarget>, RemoteError> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| SshTarget::parse(s.strip_prefix("ssh://").unwrap_or(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(user: Option<&str>, host: &str, port: u16) -> Remote {
        Remote::Ssh(SshTarget {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        })
    }

    #[test]
    fn parses_registries() {
        let cases: &[(&str, Remote)] = &[
            ("ssh://host", ssh(None, "host", 22)),
            ("ssh://host/", ssh(None, "host", 22)),
            ("ssh://bob@host:2222", ssh(Some("bob"), "host", 2222)),
            ("ssh://[::1]:2222", ssh(None, "::1", 2222)),
            ("ssh://a@b@host", ssh(Some("a@b"), "host", 22)),
            ("file:///srv/reg", Remote::Local("/srv/reg".into())),
            ("./reg", Remote::Local("./reg".into())),
            ("/abs/reg", Remote::Local("/abs/reg".into())),
            (
                "http://127.0.0.1:5000",
                Remote::Http {
                    host: "127.0.0.1".into(),
                    port: 5000,
                },
            ),
            (
                "http://reg.lan/",
                Remote::Http {
                    host: "reg.lan".into(),
                    port: 80,
                },
            ),
            (
                "https://reg.lan",
                Remote::Https {
                    host: "reg.lan".into(),
                    port: 443,
                },
            ),
            (
                "https://127.0.0.1:5443/",
                Remote::Https {
                    host: "127.0.0.1".into(),
                    port: 5443,
                },
            ),
        ];
        for (s, want) in cases {
            assert_eq!(&s.parse::<Remote>().unwrap(), want, "{s}");
        }
        for bad in [
            "",
            "ftp://host",
            "https://host/v2",
            "https://host:0",
            "http://host/v2",
            "http://host:0",
            "http://u@host",
            "file://rel",
            "ssh://",
            "ssh://host:0",
            "ssh://host:x",
            "ssh://host/path",
            "ssh://@host",
        ] {
            assert!(bad.parse::<Remote>().is_err(), "{bad}");
        }
    }

    #[test]
    fn known_hosts_names_and_display() {
        let t = SshTarget::parse("u@h:2200").unwrap();
        assert_eq!(t.known_hosts_name(), "[h]:2200");
        assert_eq!(t.to_string(), "u@h:2200");
        assert_eq!(SshTarget::parse("h").unwrap().known_hosts_name(), "h");
    }

    #[test]
    fn jump_lists() {
        let j = parse_jumps(&["a,b@c:2".into(), "d".into()]).unwrap();
        let names: Vec<String> = j.iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["a", "b@c:2", "d"]);
        assert!(parse_jumps(&["a,:x".into()]).is_err());
        assert_eq!(
            parse_jumps(&["ok,-oProxyCommand=x".into()]),
            Err(RemoteError::Dash("-oProxyCommand=x".into()))
        );
    }

    /// Issue 14 item 13: a host or user that `ssh` would take for an option
    /// is refused when the string is parsed, before anything is spawned.
    #[test]
    fn dash_hosts_and_users_are_refused() {
        for bad in [
            "ssh://-oProxyCommand=touch${IFS}x",
            "ssh://-oProxyCommand=x@host",
            "ssh://u@-host:2222",
            "ssh://[-x]:22",
        ] {
            assert!(
                matches!(bad.parse::<Remote>(), Err(RemoteError::Dash(_))),
                "{bad}"
            );
        }
        assert!("ssh://a-b@host-1".parse::<Remote>().is_ok());
    }
}
