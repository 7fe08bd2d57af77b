//! A battery of hostile input: every request is answered with an error (never
//! a server fault, never a hang) and the store is byte-for-byte unchanged —
//! path traversal in every path parameter and in JSON fields, NUL and control
//! characters, over-long names, deep and huge JSON, malformed ranges and
//! chunked encoding, oversized heads, slowloris clients, garbage on the SSH
//! port, and thousands of channels on one SSH connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::*;

/// Sends raw bytes and returns the status code of the first response (0 if
/// the server closed the connection without one).
fn raw(addr: SocketAddr, bytes: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn req(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

#[test]
fn hostile_http_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path());
    let img = V1Image::chain(61, 2, 3000);
    let mut c = tcp_conn(server.addr);
    v1_push(&mut c, "team/app", "latest", &img);
    let (a, b) = (img.ids[0].clone(), img.ids[1].clone());
    // A V2 upload session, so its path can be attacked too.
    let r = c.request("POST", "/v2/team/app/blobs/uploads/", &[], ReqBody::None);
    assert_eq!(r.status, 202);
    let upload = r.header("location").unwrap().to_string();
    let before = snapshot(dir.path());

    let long = "a".repeat(300);
    let deep = "[".repeat(200_000);
    let huge = format!("{{\"id\":\"{a}\",\"pad\":\"{}\"}}", "x".repeat(5 << 20));
    let d0 = format!("sha256:{}", "0".repeat(64));
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| cases.push((name.to_string(), bytes));
    // path traversal in every V1 path parameter
    for what in ["json", "layer", "ancestry", "checksum"] {
        add(
            &format!("v1 id .. {what}"),
            req("PUT", &format!("/v1/images/../{what}"), b"{}"),
        );
        add(
            &format!("v1 id %2e%2e {what}"),
            req("PUT", &format!("/v1/images/%2e%2e/{what}"), b"{}"),
        );
        add(
            &format!("v1 id abs {what}"),
            req("GET", &format!("/v1/images//etc/passwd/{what}"), b""),
        );
    }
    for path in [
        "/v1/repositories/../../etc/tags".to_string(),
        "/v1/repositories/team/../../etc/tags/x".to_string(),
        "/v1/repositories/%2e%2e/app/tags".to_string(),
        "/v1/repositories/team/app/tags/..".to_string(),
        "/v1/repositories/team/app/tags/%2e%2e".to_string(),
        "/v1/repositories/team/app/tags/a%2fb".to_string(),
        format!("/v1/repositories/team/{long}/tags"),
        format!("/v1/repositories/team/app/tags/{long}"),
        "/v1/repositories/TEAM/app/tags".to_string(),
        "/v1/repositories/team/app%00/tags".to_string(),
        "/v1/repositories/team/a\x01pp/tags".to_string(),
    ] {
        add(
            &format!("v1 repo {path}"),
            req(
                "PUT",
                &format!("{path}/latest"),
                format!("\"{a}\"").as_bytes(),
            ),
        );
        add(&format!("v1 repo GET {path}"), req("GET", &path, b""));
    }
    // JSON fields
    let fresh = sha256_hex(b"hostile fresh");
    for body in [
        r#"{"id":"../../../etc"}"#.to_string(),
        format!(r#"{{"id":"{fresh}","parent":"../{a}"}}"#),
        format!(r#"{{"id":"{fresh}","parent":"{fresh}"}}"#),
        format!(r#"{{"id":"{fresh}","parent":"{}"}}"#, "f".repeat(64)),
        format!(r#"{{"id":"{fresh}","parent":123}}"#),
        format!(r#"{{"id":["{fresh}"]}}"#),
        "\u{0}".to_string(),
        "{\"id\":\"\u{0}\"}".to_string(),
        deep.clone(),
    ] {
        add(
            "v1 json body",
            req("PUT", &format!("/v1/images/{fresh}/json"), body.as_bytes()),
        );
    }
    add(
        "v1 huge json",
        req("PUT", &format!("/v1/images/{fresh}/json"), huge.as_bytes()),
    );
    add(
        "v1 tag body traversal",
        req(
            "PUT",
            "/v1/repositories/team/app/tags/x",
            b"\"../../../etc/passwd\"",
        ),
    );
    add(
        "v1 index body traversal",
        req(
            "PUT",
            "/v1/repositories/team/app/images",
            br#"[{"id":"../../x"}]"#,
        ),
    );
    add(
        "v1 index deep",
        req("PUT", "/v1/repositories/team/app/", deep.as_bytes()),
    );
    // V2 path parameters
    for path in [
        "/v2/../team/app/manifests/latest".to_string(),
        "/v2/team/../app/manifests/latest".to_string(),
        "/v2/team/app/manifests/..".to_string(),
        "/v2/team/app/manifests/%2e%2e".to_string(),
        format!("/v2/team/app/manifests/{long}"),
        "/v2/team/app/blobs/sha256:../../etc/passwd".to_string(),
        "/v2/team/app/blobs/sha256:ABCDEF".to_string(),
        "/v2/team/app/blobs/md5:00".to_string(),
        "/v2/Team/App/tags/list".to_string(),
        format!("/v2/{long}/{long}/tags/list"),
        "/v2/team/app/blobs/uploads/../../../etc".to_string(),
        "/v2/team/app/blobs/uploads/not-a-uuid".to_string(),
        "/v2/team/app%00/tags/list".to_string(),
    ] {
        add(&format!("v2 GET {path}"), req("GET", &path, b""));
        add(&format!("v2 PUT {path}"), req("PUT", &path, b"{}"));
    }
    add(
        "v2 bad digest close",
        req("PUT", &format!("{upload}?digest=sha256:..%2f..%2fx"), b""),
    );
    add(
        "v2 mount traversal",
        req(
            "POST",
            &format!("/v2/team/app/blobs/uploads/?mount={d0}&from=../../etc"),
            b"",
        ),
    );
    add("v2 manifest deep", {
        let mut v = format!("PUT /v2/team/app/manifests/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", deep.len()).into_bytes();
        v.extend_from_slice(deep.as_bytes());
        v
    });
    // raw protocol abuse
    add(
        "NUL in request line",
        b"GET /v1/_ping\0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
    );
    add(
        "control chars in path",
        b"GET /v1/\x07\x08 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
    );
    add(
        "garbage request",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
    );
    add("unknown method", req("BREW", "/v1/_ping", b""));
    add("bad chunk size", format!("PUT /v1/images/{fresh}/json HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n").into_bytes());
    add("overflowing chunk size", b"PUT /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n".to_vec());
    add("chunked + content-length", format!("PUT /v1/images/{fresh}/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").into_bytes());
    add("truncated chunked layer", format!("PUT /v1/images/{a}/layer HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc").into_bytes());
    add(
        "huge head",
        format!(
            "GET /v1/_ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: {}\r\n\r\n",
            "a".repeat(200 * 1024)
        )
        .into_bytes(),
    );
    add("too many headers", {
        let mut h = String::from("GET /v1/_ping HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for i in 0..5000 {
            h.push_str(&format!("X-{i}: y\r\n"));
        }
        h.push_str("\r\n");
        h.into_bytes()
    });
    add("absurd content-length", format!("PUT /v1/images/{fresh}/json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999999999999999\r\n\r\n").into_bytes());

    assert!(cases.len() >= 60, "only {} hostile cases", cases.len());
    for (name, bytes) in &cases {
        let status = raw(server.addr, bytes);
        assert!(
            status == 0 || (400..500).contains(&status),
            "{name}: answered {status} (want a 4xx or a closed connection)"
        );
    }
    // Malformed ranges are ignored (full 200) or refused (416), never a fault.
    for range in [
        "bytes=abc",
        "bytes=--1",
        "bytes=99999999999999999999-",
        "bytes=5-1",
        "bytes=0-0,1-1,2-2",
        "bytes=-0",
        "bytes= - ",
    ] {
        let r = c.request(
            "GET",
            &format!("/v1/images/{b}/layer"),
            &[("Range", range)],
            ReqBody::None,
        );
        assert!(
            [200, 206, 416].contains(&r.status),
            "range {range:?}: {}",
            r.status
        );
    }
    // (A closing PUT with a bad digest may drop its upload session, as the
    // spec says; sessions are not published content.)
    let published = |snap: Vec<(String, String)>| -> Vec<(String, String)> {
        snap.into_iter()
            .filter(|(n, _)| !n.starts_with("_berth/uploads/"))
            .collect()
    };
    assert_eq!(
        published(snapshot(dir.path())),
        published(before),
        "hostile requests changed the store"
    );
    assert!(
        !snapshot(dir.path())
            .iter()
            .any(|(n, _)| n.starts_with("_berth/uploads/")
                && !n.contains(upload.rsplit('/').next().unwrap())),
        "a hostile request opened an upload session"
    );
    // And the server still answers.
    let mut c = tcp_conn(server.addr);
    assert_eq!(
        c.request("GET", "/v1/_ping", &[], ReqBody::None).status,
        200
    );
}

#[test]
fn slowloris_clients_are_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(bin("berth-server"));
    cmd.args([
        "http",
        "--listen",
        "127.0.0.1:0",
        "--header-timeout",
        "2",
        "--root",
    ])
    .arg(dir.path());
    let (_proc, line) = spawn_until_line(cmd, "http on", "berth-server http");
    let addr = addr_in(&line);
    let mut slow: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut slow {
        s.write_all(b"GET /v1/_ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    // A normal client is served meanwhile.
    let mut c = tcp_conn(addr);
    assert_eq!(
        c.request("GET", "/v1/_ping", &[], ReqBody::None).status,
        200
    );
    // Trickle one byte a second; the header timeout closes the connections.
    let start = Instant::now();
    let mut closed = 0;
    for s in &mut slow {
        let mut closed_this = false;
        // Until the server cuts it off (bounded: a hang fails the test).
        while start.elapsed() < Duration::from_secs(60) {
            if s.write_all(b"X").is_err() {
                closed_this = true;
                break;
            }
            let mut buf = [0u8; 512];
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            match s.read(&mut buf) {
                Ok(0) => {
                    closed_this = true;
                    break;
                }
                Ok(_) => {
                    closed_this = true; // an error answer (408) then close
                    break;
                }
                Err(_) => {}
            }
        }
        if closed_this {
            closed += 1;
        }
    }
    assert_eq!(closed, slow.len(), "slow clients kept their connections");
    // Cut at the 2 s header timeout, not kept for long (a generous bound).
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn garbage_and_channel_floods_on_the_ssh_port_are_survived() {
    if !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let KeyedServer { server, key, .. } =
        KeyedServer::start(&root, &dir.path().join("state"), &["--max-channels", "16"]);
    let before = snapshot(&root);

    // Garbage instead of an SSH banner: the connection is dropped.
    for garbage in [
        &b"\x00\x01\x02garbage\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        &random_bytes(100_000, 5),
    ] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(garbage);
        let mut buf = vec![0u8; 4096];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            if total > 1 << 20 {
                panic!("server kept talking to garbage");
            }
        }
    }

    // Thousands of channel opens on one connection: refused past the limit,
    // and the connection and the server keep working.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = Arc::new(russh::client::Config::default());
        let mut h = russh::client::connect(config, server.addr, TrustingClient)
            .await
            .unwrap();
        let k = russh::keys::load_secret_key(&key.private, None).unwrap();
        let auth = h
            .authenticate_publickey(
                "root",
                russh::keys::PrivateKeyWithHashAlg::new(Arc::new(k), None),
            )
            .await
            .unwrap();
        assert!(auth.success());
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..2000 {
            match h.channel_open_session().await {
                Ok(ch) => held.push(ch),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(held.len(), 16, "channels accepted past --max-channels");
        assert_eq!(refused, 2000 - 16);
        // Closing some frees slots; a subsystem on a fresh channel works.
        for ch in held.drain(..) {
            let _ = ch.close().await;
        }
        // The server frees a slot once it has handled a close: open again
        // until one is granted (a hang is cut at 60 s).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let ch = loop {
            match h.channel_open_session().await {
                Ok(ch) => break ch,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "no channel after closing 16: {e}"
                ),
            }
        };
        ch.request_subsystem(true, "docker-registry").await.unwrap();
        let mut stream = ch.into_stream();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /v1/_ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
        assert!(
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    });
    // Another client still gets in.
    let out = run_ok(ssh_command(&key.private, server.port()).arg("registryget /v1/_ping"));
    assert_eq!(out.stdout, b"{}");
    assert_eq!(snapshot(&root), before);
}
