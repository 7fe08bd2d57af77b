//! Who gets a connection slot, before and after login (issue 14 item 8),
//! modelled on sshd's `MaxStartups`/`PerSourceMaxStartups`/`LoginGraceTime`.
//!
//! Connections that have not logged in yet ("startups") and logged-in ones
//! are counted apart, so clients that never log in cannot starve users:
//!
//! * at most `--max-startups-per-source` startups per source: more are
//!   closed at once (a source is an IPv4 address or an IPv6 /64, since one
//!   IPv6 host usually owns a whole /64; sshd's `PerSourceNetBlockSize`);
//! * at most `--max-startups` startups in all: when full, the newcomer takes
//!   the slot of the oldest startup of the address holding the most slots
//!   (so a flood, even from many addresses, cannot keep a real client out:
//!   it only ever displaces itself first);
//! * every startup is cut at `--login-grace-time` (the connection task
//!   enforces it with the [`Cutter`]);
//! * at most `--max-connections` logged-in connections ([`Gate::log_in`]).

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

    /// The startup to displace when the table is full: the oldest of the
    /// address holding the most slots.
    fn victim(&self) -> Option<u64> {
        let most = self.per_addr.values().max()?;
        self.waiting
            .iter()
            .find(|(_, (addr, _))| self.per_addr.get(addr) == Some(most))
            .map(|(id, _)| *id)
    }
}

/// Why a new connection was closed without being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already has `--max-startups-per-source` connections
    /// waiting to log in.
    TooManyFromAddress,
    /// `--max-startups` is 0.
    NoStartups,
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
    /// (cutting) another startup if the table is full. The slot is held
    /// until the [`Startup`] is dropped (at login or when the connection ends).
    pub fn admit(self: &Arc<Self>, addr: IpAddr, cutter: Cutter) -> Result<Startup, Refusal> {
        let addr = source(addr);
        let mut t = self.startups.lock().unwrap_or_else(|e| e.into_inner());
        if self.max_startups == 0 {
            return Err(Refusal::NoStartups);
        }
        if t.per_addr.get(&addr).copied().unwrap_or(0) >= self.per_source {
            return Err(Refusal::TooManyFromAddress);
        }
        if t.waiting.len() >= self.max_startups {
            if let Some(victim) = t.victim() {
                if let Some(cutter) = t.remove(victim) {
                    tracing::debug!(%addr, "startups full; cutting the oldest waiting connection of the busiest address");
                    cutter.cut();
                }
            }
        }
        let id = t.next;
        t.next += 1;
        t.waiting.insert(id, (addr, cutter));
        *t.per_addr.entry(addr).or_insert(0) += 1;
        Ok(Startup {
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

    async fn is_cut(client: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(10), client.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn per_source_cap_refuses_and_a_full_table_displaces_the_busiest_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate::new(4, 3, 10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "::ffff:10.0.0.3".parse().unwrap();
        let mut held = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..3 {
            let (cut, client) = conn(&listener).await;
            held.push(gate.admit(a, cut).unwrap());
            clients.push(client);
        }
        let (cut, _client) = conn(&listener).await;
        assert_eq!(gate.admit(a, cut).unwrap_err(), Refusal::TooManyFromAddress);
        let (cut, _b_client) = conn(&listener).await;
        held.push(gate.admit(b, cut).unwrap());
        // Full (4): c displaces a's oldest, never b's only one.
        let (cut, _c_client) = conn(&listener).await;
        held.push(gate.admit(c, cut).unwrap());
        assert!(is_cut(&mut clients[0]).await, "a's oldest was not cut");
        {
            let t = gate.startups.lock().unwrap();
            assert_eq!(t.waiting.len(), 4);
            assert_eq!(t.per_addr[&a], 2);
            assert_eq!(t.per_addr[&"10.0.0.3".parse::<IpAddr>().unwrap()], 1);
        }
        // Dropping the displaced startup's guard later changes nothing.
        drop(held.remove(0));
        assert_eq!(gate.startups.lock().unwrap().waiting.len(), 4);
        held.clear();
        let t = gate.startups.lock().unwrap();
        assert!(t.waiting.is_empty() && t.per_addr.is_empty());
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
