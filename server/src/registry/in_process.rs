//! The registry service in-process: the mount point *is* the registry. Each
//! stream is one half of an in-memory duplex whose other half
//! [`Registry::serve_connection`] answers, so a caller speaks the same
//! HTTP/1.1 as over SSH.
//!
//! This is berth-transport's [`InProcess`] transport: the client uses it for
//! a directory `REGISTRY` (local mode), and `serve --mirror-of DIR` for a
//! directory upstream. No server process and no SSH: access is whatever the
//! file system allows. Requests are attributed to the local user name.

use std::path::Path;
use std::sync::Arc;

use berth_transport::transport::{local_user, Diagnostics, InProcess, Stream, TransportError};

use super::{Identity, Registry, RegistryConfig};
use crate::store::Store;

/// Buffer of each in-memory stream: large enough that layer bytes move in
/// big slices, small enough to keep memory bounded per connection.
const DUPLEX_BUFFER: usize = 1 << 20;

/// The registry service answering in-memory streams, all under one identity.
pub struct InProcessRegistry {
    registry: Arc<Registry>,
    identity: Identity,
}

impl InProcessRegistry {
    /// Serves `registry` to every stream as `identity`.
    pub fn new(registry: Arc<Registry>, identity: Identity) -> InProcessRegistry {
        InProcessRegistry { registry, identity }
    }

    /// Opens (creating if needed) the store at `path`, with the default
    /// service settings, for the local user.
    pub fn at(path: &Path) -> Result<InProcessRegistry, TransportError> {
        let store = Store::open(path).map_err(|e| TransportError::Store {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let user = local_user().unwrap_or_else(|| "local".to_string());
        Ok(InProcessRegistry::new(
            Registry::new(store, RegistryConfig::default()),
            Identity::local(&user),
        ))
    }
}

impl InProcess for InProcessRegistry {
    /// A new stream answered by a task running the service on the other end.
    fn open(&self) -> Stream {
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

/// [`InProcessRegistry::at`] in the shape
/// `berth_transport::transport::Transport::for_remote` takes for a directory
/// `REGISTRY`, so the client and the mirror open mount points the same way.
pub fn open_local(path: &Path) -> Result<Arc<dyn InProcess>, TransportError> {
    Ok(Arc::new(InProcessRegistry::at(path)?))
}
