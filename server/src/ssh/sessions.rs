//! The logged-in connections of one server, and what each logged in with,
//! so a reload of the access file (or of authorized_keys) can close the
//! ones it no longer lets in (issue 14 item 7).
//!
//! Why close rather than re-check each request: a check per request leaves
//! a channel's request already in flight (a long layer upload) running as
//! the removed user. Cutting the socket stops everything the connection
//! carries at once: channels in flight, new channels, exec requests. The
//! cut happens inside the reload itself ([`crate::access::AccessControl::on_reload`]),
//! before the new rules become visible, and the server re-reads the files
//! every second, so a removed key stops working within about a second.
//! Meanwhile a user the access file no longer lists is granted nothing
//! (`access::Policy`), not even `@all`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use russh::keys::ssh_key::{Certificate, PublicKey};

use super::admission::Cutter;

/// What a connection authenticated with.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A public key (access file `[users]` or authorized_keys).
    Key(PublicKey),
    /// An OpenSSH user certificate from a configured CA.
    Certificate(Box<Certificate>),
    /// No key: the `anonymous` login.
    Anonymous,
}

/// One logged-in connection as the reload sees it.
#[derive(Debug)]
pub struct Login {
    /// The SSH login name.
    pub login: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// How it authenticated.
    pub credential: Credential,
    /// The user it was given.
    pub user: String,
}

#[derive(Debug)]
struct Entry {
    login: Login,
    cutter: Cutter,
    revoked: Arc<AtomicBool>,
}

/// The table of logged-in connections.
#[derive(Debug, Default)]
pub struct Sessions {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Sessions {
    /// Records connection `conn`; it leaves the table when the returned
    /// guard is dropped (the connection ended).
    pub fn register(self: &Arc<Self>, conn: u64, login: Login, cutter: Cutter) -> Registered {
        let revoked = Arc::new(AtomicBool::new(false));
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                conn,
                Entry {
                    login,
                    cutter,
                    revoked: revoked.clone(),
                },
            );
        Registered {
            sessions: self.clone(),
            conn,
            revoked,
        }
    }

    /// Cuts every connection whose credential `resolve` no longer maps to
    /// the user it logged in as (removed key, key moved to another user,
    /// CA or principal gone, anonymous access withdrawn). Returns how many.
    pub fn revoke(&self, resolve: impl Fn(&Login) -> Option<String>) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut cut = 0;
        for (conn, e) in entries.iter() {
            if e.revoked.load(Ordering::Relaxed) {
                continue;
            }
            let now = resolve(&e.login);
            if now.as_deref() == Some(e.login.user.as_str()) {
                continue;
            }
            e.revoked.store(true, Ordering::Relaxed);
            e.cutter.cut();
            cut += 1;
            tracing::warn!(
                conn,
                user = %e.login.user,
                peer = %e.login.peer,
                now = now.as_deref().unwrap_or("nobody"),
                "access revoked by a key file reload; connection closed"
            );
        }
        cut
    }
}

/// A connection's place in [`Sessions`]; removes it on drop.
#[derive(Debug)]
pub struct Registered {
    sessions: Arc<Sessions>,
    conn: u64,
    revoked: Arc<AtomicBool>,
}

impl Registered {
    /// Whether a reload revoked this connection (it is being closed).
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revoke_cuts_only_connections_whose_user_changed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sessions = Arc::new(Sessions::default());
        let mut guards = Vec::new();
        let mut clients = Vec::new();
        for (conn, user) in [(1, "alice"), (2, "mallory"), (3, "eve")] {
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            let (_s, cutter) = Cutter::new(server).unwrap();
            let login = Login {
                login: "root".into(),
                peer,
                credential: Credential::Anonymous,
                user: user.into(),
            };
            guards.push(sessions.register(conn, login, cutter));
            clients.push(client);
        }
        // mallory's key is gone, eve's key now belongs to bob.
        let n = sessions.revoke(|l| match l.user.as_str() {
            "alice" => Some("alice".into()),
            "eve" => Some("bob".into()),
            _ => None,
        });
        assert_eq!(n, 2);
        assert!(!guards[0].is_revoked());
        assert!(guards[1].is_revoked() && guards[2].is_revoked());
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        assert_eq!(clients[1].read(&mut b).await.unwrap(), 0);
        assert_eq!(clients[2].read(&mut b).await.unwrap(), 0);
        // Already revoked connections are not counted again.
        assert_eq!(sessions.revoke(|_| None), 1);
        guards.clear();
        assert!(sessions.entries.lock().unwrap().is_empty());
    }
}
