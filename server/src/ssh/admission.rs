//! Who gets a connection slot, before and after login (issue 14 item 8),
//! modelled on sshd's `MaxStartups`/`PerSourceMaxStartups`/`LoginGraceTime`.
//!
//! Connections that have not logged in yet ("startups") and logged-in ones
//! are counted apart, so clients that never log in cannot starve users:
//!
//! * at most `--max-startups-per-source` startups per source (an IPv4
//!   address or an IPv6 /64, since one IPv6 host usually owns a whole /64;
//!   sshd's `PerSourceNetBlockSize`): when a source is at its cap, its
//!   newcomer takes the slot of that source's oldest startup;
//! * at most `--max-startups` startups in all: when full, the newcomer takes
//!   the slot of the oldest startup of the source holding the most slots;
//! * every startup is cut at `--login-grace-time` (the connection task
//!   enforces it with the [`Cutter`]);
//! * at most `--max-connections` logged-in connections ([`Gate::log_in`]).
//!
//! Displacing rather than refusing (what sshd does) means connections that
//! sit there without logging in, the flood of the issue, never keep a real
//! client out, whatever address they come from: a newcomer always gets a
//! slot, and the biggest flood loses its oldest first. Only a flood that
//! keeps reconnecting faster than a login takes can still get in the way.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Closes a connection's socket from outside its session task: a shutdown
/// of both directions wakes the session's pending read with end-of-file, so
/// russh ends the session whatever state it is in (banner, key exchange,
/// authentication, channels in flight). Holds a duplicate of the socket, so
/// it can never hit an unrelated socket that reused the descriptor number.
#[derive(Debug, Clone)]
pub struct Cutter(Arc<std::net::TcpStream>);

impl Cutter {
    /// Splits a duplicate handle off `stream`; returns the stream to serve
    /// and the cutter.
    pub fn new(stream: tokio::net::TcpStream) -> std::io::Result<(tokio::net::TcpStream, Cutter)> {
        let std = stream.into_std()?;
        let dup = std.try_clone()?;
        Ok((tokio::net::TcpStream::from_std(std)?, Cutter(Arc::new(dup))))
    }

    /// Cuts the connection (both directions). Idempotent.
    pub fn cut(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// The connection limits of one server.
#[derive(Debug)]
pub struct Gate {
    max_startups: usize,
    per_source: usize,
    startups: Mutex<Startups>,
    logged_in: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct Startups {
    next: u64,
    /// By admission order (the key), so the first entry of an address is its oldest.
    waiting: BTreeMap<u64, (IpAddr, Cutter)>,
    per_addr: HashMap<IpAddr, usize>,
}

impl Startups {
    fn remove(&mut self, id: u64) -> Option<Cutter> {
        let (addr, cutter) = self.waiting.remove(&id)?;
        if let Some(n) = self.per_addr.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&addr);
            }
        }
        Some(cutter)
    }

    /// The oldest startup of `source`.
    fn oldest_of(&self, source: IpAddr) -> Option<u64> {
        self.waiting
            .iter()
            .find(|(_, (s, _))| *s == source)
            .map(|(id, _)| *id)
    }

    /// The oldest startup of the source holding the most slots.
    fn oldest_of_busiest(&self) -> Option<u64> {
        let (busiest, _) = self.per_addr.iter().max_by_key(|(_, n)| **n)?;
        self.oldest_of(*busiest)
    }
}

impl Gate {
    /// Limits: startups in all, startups per client address, logged-in connections.
    pub fn new(max_startups: usize, per_source: usize, max_connections: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max_startups,
            per_source,
            startups: Mutex::new(Startups::default()),
            logged_in: Arc::new(Semaphore::new(max_connections)),
        })
    }

    /// Admits a new, not yet logged-in connection from `addr`, displacing
    /// (cutting) the startup the module doc names when a cap is reached;
    /// `None` only when a cap is 0. The slot is held until the [`Startup`]
    /// is dropped (at login or when the connection ends).
    pub fn admit(self: &Arc<Self>, addr: IpAddr, cutter: Cutter) -> Option<Startup> {
        if self.max_startups == 0 || self.per_source == 0 {
            return None;
        }
        let addr = source(addr);
        let mut t = self.startups.lock().unwrap_or_else(|e| e.into_inner());
        let victim = if t.per_addr.get(&addr).copied().unwrap_or(0) >= self.per_source {
            t.oldest_of(addr)
        } else if t.waiting.len() >= self.max_startups {
            t.oldest_of_busiest()
        } else {
            None
        };
        if let Some(cutter) = victim.and_then(|id| t.remove(id)) {
            // Debug only: a flood must not flood the log too.
            tracing::debug!(source = %addr, "startup caps reached; cutting a waiting connection");
            cutter.cut();
        }
        let id = t.next;
        t.next += 1;
        t.waiting.insert(id, (addr, cutter));
        *t.per_addr.entry(addr).or_insert(0) += 1;
        Some(Startup {
            gate: self.clone(),
            id,
        })
    }

    /// A slot among logged-in connections, if one is free; held for the
    /// rest of the connection.
    pub fn log_in(&self) -> Option<OwnedSemaphorePermit> {
        self.logged_in.clone().try_acquire_owned().ok()
    }
}

/// The source a client address counts against: the IPv4 address (also when
/// seen as an IPv4-mapped IPv6 address), or the IPv6 /64 it is in.
fn source(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// A connection's slot among those still logging in; freed on drop.
#[derive(Debug)]
pub struct Startup {
    gate: Arc<Gate>,
    id: u64,
}

impl Drop for Startup {
    fn drop(&mut self) {
        let mut t = self.gate.startups.lock().unwrap_or_else(|e| e.into_inner());
        t.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected loopback socket pair; returns our cutter and the peer end.
    async fn conn(listener: &tokio::net::TcpListener) -> (Cutter, tokio::net::TcpStream) {
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_stream, cutter) = Cutter::new(server).unwrap();
        (cutter, client)
    }

    /// Whether the peer already closed (no waiting: for "not cut" checks,
    /// after a later cut of another connection proved the gate acted).
    fn is_cut_now(client: &mut tokio::net::TcpStream) -> bool {
        let mut b = [0u8; 1];
        !matches!(client.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn is_cut(client: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(120), client.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn a_full_source_or_table_displaces_its_oldest_waiting_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate::new(4, 3, 10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "::ffff:10.0.0.3".parse().unwrap();
        let mut held = Vec::new();
        let mut a_clients = Vec::new();
        for _ in 0..4 {
            let (cut, client) = conn(&listener).await;
            held.push(gate.admit(a, cut).unwrap());
            a_clients.push(client);
        }
        // a's fourth displaced a's first (per-source cap 3).
        assert!(is_cut(&mut a_clients[0]).await, "a's oldest was not cut");
        let (cut, mut b_client) = conn(&listener).await;
        held.push(gate.admit(b, cut).unwrap());
        // Full (4): c displaces a's oldest remaining, never b's only one.
        let (cut, _c_client) = conn(&listener).await;
        held.push(gate.admit(c, cut).unwrap());
        assert!(
            is_cut(&mut a_clients[1]).await,
            "the busiest source's oldest was not cut"
        );
        {
            let t = gate.startups.lock().unwrap();
            assert_eq!(t.waiting.len(), 4);
            assert_eq!(t.per_addr[&a], 2);
            assert_eq!(t.per_addr[&b], 1);
            assert_eq!(t.per_addr[&"10.0.0.3".parse::<IpAddr>().unwrap()], 1);
        }
        assert!(!is_cut_now(&mut b_client), "b's only connection was cut");
        // Dropping a displaced startup's guard later changes nothing.
        drop(held.remove(0));
        assert_eq!(gate.startups.lock().unwrap().waiting.len(), 4);
        held.clear();
        {
            let t = gate.startups.lock().unwrap();
            assert!(t.waiting.is_empty() && t.per_addr.is_empty());
        }
        let (cut, _) = conn(&listener).await;
        assert!(Gate::new(0, 3, 1).admit(a, cut).is_none());
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(source(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(source(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(source(ip("2001:db8:1:2:ffff::9")), ip("2001:db8:1:2::"));
        assert_ne!(source(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn logged_in_connections_have_their_own_cap() {
        let gate = Gate::new(0, 0, 2);
        let one = gate.log_in().unwrap();
        let _two = gate.log_in().unwrap();
        assert!(gate.log_in().is_none());
        drop(one);
        assert!(gate.log_in().is_some());
    }
}
