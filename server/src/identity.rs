//! Who is making requests on a connection: the user name, key and address
//! the transport established. It sits below every module that reads it
//! (`access`, `audit`, `hooks`, the registry's handlers), importing none of
//! them, so a request's identity flows one way down the module tree.

/// The SSH login name that asks for anonymous (keyless) access. Any other
/// login name must authenticate with a key, so a client that tries `none`
/// first (OpenSSH always does) is never silently downgraded.
pub const ANONYMOUS_LOGIN: &str = "anonymous";

/// Who is making requests on a connection, as established by the transport.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user name requests are attributed to (logged with every write).
    pub user: String,
    /// SHA256 fingerprint of the SSH key that authenticated, if any.
    pub key_fingerprint: Option<String>,
    /// The client's address as the transport saw it.
    pub client: Option<String>,
}

impl Identity {
    /// An identity for a given user with no key or address (local mode, tests).
    pub fn local(user: &str) -> Identity {
        Identity {
            user: user.to_string(),
            key_fingerprint: None,
            client: None,
        }
    }

    /// A client that connected without a key (SSH `none` authentication).
    pub fn anonymous(client: Option<String>) -> Identity {
        Identity {
            user: ANONYMOUS_LOGIN.to_string(),
            key_fingerprint: None,
            client,
        }
    }

    /// The user name for log lines: login names come from clients, so
    /// control characters are escaped ([`crate::logsafe`]).
    pub fn log_user(&self) -> crate::logsafe::Escaped<'_> {
        crate::logsafe::Escaped(&self.user)
    }

    /// Whether this is a keyless client (see [`Identity::anonymous`]).
    pub fn is_anonymous(&self) -> bool {
        self.user == ANONYMOUS_LOGIN && self.key_fingerprint.is_none()
    }

    /// The user access rules are checked for; `None` for anonymous clients.
    pub fn subject(&self) -> Option<&str> {
        if self.is_anonymous() {
            None
        } else {
            Some(&self.user)
        }
    }
}
