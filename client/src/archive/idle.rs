//! Connections a push keeps between its steps. Over a long link every new
//! connection costs an SSH channel open and a subsystem request, two round
//! trips, before its first request; a blob's HEAD, its upload, its commit
//! and the manifest PUTs can each go out on a connection an earlier step
//! of the same push finished with (HTTP/1.1 keep-alive on one channel).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::ClientError;
use crate::registry::V2Connection;
use crate::transport::Transport;
use crate::warm;

/// Most connections kept idle: a push runs at most this many steps at once
/// in practice (`--jobs`), and each holds one SSH channel on the server.
const MAX_IDLE: usize = warm::MAX_WARM;

/// The connections of one push that no step is using.
pub struct IdleConnections {
    transport: Arc<Transport>,
    idle: Mutex<Vec<(V2Connection, Instant)>>,
}

impl IdleConnections {
    /// An empty set over `transport`.
    pub fn new(transport: Arc<Transport>) -> IdleConnections {
        IdleConnections {
            transport,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The most recently used idle connection that is still open and
    /// younger than [`warm::MAX_AGE`] (so the registry has not given up on
    /// it), or a new one.
    pub async fn take(&self) -> Result<V2Connection, ClientError> {
        while let Some((conn, since)) = self.pop() {
            if since.elapsed() < warm::MAX_AGE && !conn.is_closed() {
                return Ok(conn);
            }
        }
        V2Connection::open(&self.transport).await
    }

    /// Keeps `conn` for a later step. Only a connection whose last request
    /// completed (its answer read whole) may come back; a step that failed
    /// drops its connection instead. So does a bulk connection
    /// ([`V2Connection::open_bulk`]): dropping it frees its SSH connection
    /// for the next big blob.
    pub fn give_back(&self, conn: V2Connection) {
        if conn.is_closed() || conn.is_bulk() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push((conn, Instant::now()));
            }
        }
    }

    fn pop(&self) -> Option<(V2Connection, Instant)> {
        self.idle.lock().ok()?.pop()
    }
}
