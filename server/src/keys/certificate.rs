//! The critical options of an OpenSSH user certificate, treated as sshd
//! treats them: a certificate is only as good as its most restrictive
//! option, so an option the server does not enforce refuses the login.
//!
//! berth enforces `source-address` (the peer must be inside one of the
//! listed CIDR blocks). `force-command` cannot be honoured (berth runs no
//! commands; accepting it would drop the CA's restriction) and is refused,
//! like `verify-required` and any option berth does not know. Extensions
//! (`permit-pty`, ...) only grant extras and are ignored.

use std::net::IpAddr;

use russh::keys::ssh_key::Certificate;

/// The one critical option berth enforces.
const SOURCE_ADDRESS: &str = "source-address";

/// Checks a certificate's critical options for a client at `peer`;
/// `Err` says why the login is refused (for the server log).
pub fn check_critical_options(cert: &Certificate, peer: IpAddr) -> Result<(), String> {
    for (name, value) in cert.critical_options().iter() {
        if name != SOURCE_ADDRESS {
            return Err(format!(
                "certificate critical option {name:?} is not supported by berth"
            ));
        }
        let blocks = parse_source_address(value)?;
        if !blocks.iter().any(|b| b.contains(peer)) {
            return Err(format!(
                "certificate source-address {value:?} does not include the client address {peer}"
            ));
        }
    }
    Ok(())
}

/// One CIDR block of a `source-address` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    net: IpAddr,
    prefix: u8,
}

impl Block {
    fn contains(&self, addr: IpAddr) -> bool {
        match (self.net, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                masked(u32::from(net).into(), 32, self.prefix)
                    == masked(u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                masked(u128::from(net), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn masked(addr: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u32::from(width - prefix.min(width));
    (addr >> keep) << keep
}

/// Parses `addr[/bits],addr[/bits],...` (sshd's `source-address` syntax).
fn parse_source_address(list: &str) -> Result<Vec<Block>, String> {
    let bad = || format!("certificate source-address {list:?} is not a CIDR list");
    let blocks = list
        .split(',')
        .map(|item| {
            let (addr, bits) = match item.trim().split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item.trim(), None),
            };
            let net: IpAddr = addr.parse().map_err(|_| bad())?;
            let width = if net.is_ipv4() { 32 } else { 128 };
            let prefix = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= width)
                    .ok_or_else(bad)?,
                None => width,
            };
            Ok(Block { net, prefix })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if blocks.is_empty() {
        return Err(bad());
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_match_like_sshd() {
        let list = parse_source_address("10.9.9.9/32,192.168.0.0/16,::1,2001:db8::/32").unwrap();
        let any = |a: &str| list.iter().any(|b| b.contains(ip(a)));
        assert!(any("10.9.9.9"));
        assert!(!any("10.9.9.8"));
        assert!(any("192.168.77.1"));
        assert!(!any("192.169.0.1"));
        assert!(any("::1"));
        assert!(any("2001:db8:1::5"));
        assert!(!any("127.0.0.1"));
        // An IPv4 peer seen through an IPv6 socket.
        assert!(any("::ffff:10.9.9.9"));
        let all = parse_source_address("0.0.0.0/0").unwrap();
        assert!(all[0].contains(ip("127.0.0.1")));
        assert!(!all[0].contains(ip("::1")));
    }

    #[test]
    fn malformed_lists_are_errors() {
        for bad in [
            "",
            "10.0.0.0/33",
            "nonsense",
            "10.0.0.0/",
            "::/129",
            "10.0.0.1,",
        ] {
            assert!(parse_source_address(bad).is_err(), "{bad:?}");
        }
    }
}
