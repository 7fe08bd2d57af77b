//! Local mode: the mount point *is* the registry. The registry service from
//! `berth-server` runs in-process, and each stream is one half of an
//! in-memory duplex whose other half the service answers, so the client
//! speaks the same HTTP/1.1 as over SSH.
//!
//! No server process and no SSH: access is whatever the file system allows.
//! Requests are attributed to the local user name.

use std::path::Path;
use std::sync::Arc;

use berth_server::registry::{Identity, Registry, RegistryConfig};
use berth_server::store::Store;

use super::{Diagnostics, Stream, TransportError};

/// Buffer of each in-memory stream: large enough that layer bytes move in
/// big slices, small enough to keep memory bounded per connection.
const DUPLEX_BUFFER: usize = 1 << 20;

/// The in-process registry service over one mount point.
pub struct LocalTransport {
    registry: Arc<Registry>,
    identity: Identity,
}

impl LocalTransport {
    /// Opens (creating if needed) the store at `path`.
    pub fn new(path: &Path) -> Result<LocalTransport, TransportError> {
        let store = Store::open(path).map_err(|e| TransportError::Store {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let user = super::local_user().unwrap_or_else(|| "local".to_string());
        Ok(LocalTransport {
            registry: Registry::new(store, RegistryConfig::default()),
            identity: Identity::local(&user),
        })
    }

    /// A new stream answered by a task running the service on the other end.
    /// Must be called inside a Tokio runtime.
    pub fn open(&self) -> Stream {
        let (ours, theirs) = tokio::io::duplex(DUPLEX_BUFFER);
        let registry = self.registry.clone();
        let identity = self.identity.clone();
        tokio::spawn(async move {
            if let Err(e) = registry.serve_connection(theirs, identity).await {
                tracing::debug!("local connection ended: {e}");
            }
        });
        Stream::new(ours, Diagnostics::default())
    }
}
