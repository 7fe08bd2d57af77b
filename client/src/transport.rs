//! The shared transports ([`berth_transport::transport`], re-exported
//! whole), and how the client opens one for a `REGISTRY`: a directory is
//! served in-process by berth-server's registry
//! ([`berth_server::registry::in_process`]).

pub use berth_transport::transport::*;

use berth_server::registry::in_process;

use crate::remote::Remote;

/// `Transport::new(remote, options)`: [`Transport::for_remote`] with
/// berth-server's in-process registry for a directory. A trait because
/// `Transport` belongs to berth-transport, which cannot know berth-server;
/// bring it into scope (`use crate::transport::NewTransport`) to call it.
pub trait NewTransport: Sized {
    /// The transport to `remote`; nothing connects yet.
    fn new(remote: &Remote, options: ssh::SshOptions) -> Result<Self, TransportError>;
}

impl NewTransport for Transport {
    fn new(remote: &Remote, options: ssh::SshOptions) -> Result<Transport, TransportError> {
        Transport::for_remote(remote, options, in_process::open_local)
    }
}
