//! The loopback rule shared by every loopback listener (`berth-server
//! http`, the catalog, the admin listener, `berth shim`): whether an
//! address is loopback, and the per-request `Host`/`Origin` check against
//! DNS rebinding and cross-origin pages. Pure functions, below the
//! listeners and the catalog that use them.

use std::net::{IpAddr, SocketAddr};

use http::StatusCode;

/// Whether an address is loopback (the only kind `http` listens on by default).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Whether a `Host` value names this machine's loopback: `localhost`,
/// `127.0.0.0/8` or `[::1]`, with any port (a DNS-rebinding page cannot
/// send these names, whatever the port; the port is checked on `Origin`).
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, tail)) if tail.is_empty() || is_port(tail) => {
                return ip
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, tail)) if is_port(&format!(":{tail}")) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_ipv4() && ip.is_loopback())
}

/// `:DIGITS`
fn is_port(tail: &str) -> bool {
    tail.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a request to the loopback listener on `listen` must be refused, as
/// (status, message); `None` to serve it. A missing `Host` or `Origin` is
/// fine (non-browser clients); a present one must be loopback (421
/// Misdirected Request otherwise), and an `Origin` must be this listener,
/// `http://` + a loopback name + its port (403 otherwise).
pub fn loopback_refusal(
    host: Option<&str>,
    origin: Option<&str>,
    listen: SocketAddr,
) -> Option<(StatusCode, String)> {
    if let Some(host) = host {
        if !is_loopback_host(host.trim()) {
            return Some((
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "berth: refusing Host \"{}\": this loopback listener answers only localhost, 127.0.0.0/8 and [::1] (a web page may be reaching it through DNS rebinding)",
                    crate::logsafe::Escaped(host)
                ),
            ));
        }
    }
    if let Some(origin) = origin {
        let origin = origin.trim();
        let same = origin
            .strip_prefix("http://")
            .filter(|hostport| is_loopback_host(hostport))
            .is_some_and(|hostport| {
                let port = hostport
                    .rsplit_once(':')
                    .filter(|(_, p)| is_port(&format!(":{p}")))
                    .map(|(_, p)| p)
                    .unwrap_or("80");
                port == listen.port().to_string()
            });
        if !same {
            return Some((
                StatusCode::FORBIDDEN,
                format!(
                    "berth: refusing a browser request from Origin \"{}\": only pages of this listener (http://{listen}) may call it",
                    crate::logsafe::Escaped(origin)
                ),
            ));
        }
    }
    None
}

/// [`loopback_refusal`] for a raw request head (`berth shim`, which pipes
/// bytes and parses only the first head of each connection). Several `Host`
/// or `Origin` lines are refused.
pub fn loopback_refusal_of_head(head: &[u8], listen: SocketAddr) -> Option<(StatusCode, String)> {
    let text = String::from_utf8_lossy(head);
    let mut host = Vec::new();
    let mut origin = Vec::new();
    for line in text.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("host") {
                host.push(value.trim().to_string());
            } else if name.eq_ignore_ascii_case("origin") {
                origin.push(value.trim().to_string());
            }
        }
    }
    if host.len() > 1 || origin.len() > 1 {
        return Some((
            StatusCode::MISDIRECTED_REQUEST,
            "berth: more than one Host or Origin header".to_string(),
        ));
    }
    loopback_refusal(
        host.first().map(String::as_str),
        origin.first().map(String::as_str),
        listen,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_origins() {
        let listen: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let ok = |h: Option<&str>, o: Option<&str>| loopback_refusal(h, o, listen).is_none();
        for h in [
            "localhost",
            "LOCALHOST:5000",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.8.9.10:1",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(ok(Some(h), None), "{h}");
        }
        for h in [
            "attacker.example",
            "attacker.example:5000",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "[::2]:5000",
            "[::1]x",
            "0.0.0.0:5000",
            "10.0.0.1",
            "localhost:50x",
            "",
        ] {
            let r = loopback_refusal(Some(h), None, listen).unwrap();
            assert_eq!(r.0, StatusCode::MISDIRECTED_REQUEST, "{h}");
        }
        assert!(ok(None, None));
        assert!(ok(Some("localhost:5000"), Some("http://localhost:5000")));
        assert!(ok(Some("localhost:5000"), Some("http://127.0.0.1:5000")));
        for o in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:8080",
            "http://localhost",
            "https://127.0.0.1:5000",
        ] {
            let r = loopback_refusal(Some("127.0.0.1:5000"), Some(o), listen).unwrap();
            assert_eq!(r.0, StatusCode::FORBIDDEN, "{o}");
        }
    }

    #[test]
    fn heads() {
        let listen: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let head = |s: &str| loopback_refusal_of_head(s.as_bytes(), listen).map(|r| r.0);
        assert_eq!(
            head("GET /v2/ HTTP/1.1\r\nhost: localhost:5000\r\n\r\n"),
            None
        );
        assert_eq!(head("GET /v2/ HTTP/1.1\r\nUser-Agent: x\r\n\r\n"), None);
        assert_eq!(
            head("GET /v2/ HTTP/1.1\r\nHOST: a.example\r\n\r\n"),
            Some(StatusCode::MISDIRECTED_REQUEST)
        );
        assert_eq!(
            head("GET /v2/ HTTP/1.1\r\nHost: localhost\r\nHost: a.example\r\n\r\n"),
            Some(StatusCode::MISDIRECTED_REQUEST)
        );
        assert_eq!(
            head("POST /v2/ HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n\r\n"),
            Some(StatusCode::FORBIDDEN)
        );
        // Only the head counts: a body line is not a header.
        assert_eq!(
            head("PUT /x HTTP/1.1\r\nHost: localhost\r\n\r\nHost: a.example\r\n"),
            None
        );
    }
}
