//! Helpers shared by the end-to-end tests: locating the built binaries,
//! requiring external tools (fail under `CI=true`, loud skip otherwise),
//! temp stores, and starting servers (berth-server http/serve, stock sshd)
//! on ephemeral loopback ports. Every spawned process is killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The cargo target directory the test binary was built into.
pub fn target_dir() -> PathBuf {
    // .../target/debug/deps/e2e-xxxx -> .../target/debug
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Path of a binary of this workspace (`berth-server`, `berth`, `registryget`...).
/// `cargo test --workspace` builds them before any test runs.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run the suite with `cargo test --workspace`",
        p.display()
    );
    p
}

/// Whether we run under CI, where every external tool must be present.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Checks that `tool` is on PATH. Missing under CI: panic. Missing locally:
/// print a loud message naming the package and return false (test skips).
pub fn require_tool(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if found {
        return true;
    }
    if in_ci() {
        panic!("required tool `{tool}` is missing (install the `{package}` package)");
    }
    eprintln!("\n!!!!! SKIPPING: `{tool}` not found; install the `{package}` package to run this test !!!!!\n");
    false
}

/// Checks that python3 can import `module` (installed by `pip install
/// {pip_package}`). Missing under CI: panic; locally: loud skip, false.
pub fn require_python_module(module: &str, pip_package: &str) -> bool {
    if !require_tool("python3", "python3") {
        return false;
    }
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return true;
    }
    if in_ci() {
        panic!("python module {module} missing (pip install {pip_package})");
    }
    eprintln!("\n!!!!! SKIPPING: python module {module} missing; pip install {pip_package} to run this test !!!!!\n");
    false
}

/// Whether a Docker engine answers (`docker info`). Under CI it must.
pub fn require_docker() -> bool {
    if !require_tool("docker", "docker.io") {
        return false;
    }
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if in_ci() {
            panic!("the Docker engine is not running (docker info failed)");
        }
        eprintln!("\n!!!!! SKIPPING: the Docker engine is not running !!!!!\n");
    }
    ok
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on {addr} after {timeout:?}");
}

/// Waits until `f` holds, polling; panics naming `what` after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    /// The running child.
    pub child: Child,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    /// Kills the process now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns a command and waits for a stdout line containing `marker`; returns
/// the process and that line. stderr is inherited (shown by the test harness).
pub fn spawn_until_line(cmd: Command, marker: &str, name: &str) -> (Proc, String) {
    spawn_logging_until_line(cmd, marker, name, Stdio::inherit())
}

/// [`spawn_until_line`] with stderr sent to `stderr` (a log file a test reads).
pub fn spawn_logging_until_line(
    mut cmd: Command,
    marker: &str,
    name: &str,
    stderr: Stdio,
) -> (Proc, String) {
    cmd.stdout(Stdio::piped())
        .stderr(stderr)
        .stdin(Stdio::null());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let marker = marker.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains(&marker) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{name} did not print its ready line"));
    (
        Proc {
            child,
            name: name.to_string(),
        },
        line,
    )
}

/// Extracts the first `host:port` socket address from a line.
pub fn addr_in(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| {
            w.trim_matches(|c: char| c == ',' || c == ')' || c == '(')
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// `berth-server http` on an ephemeral loopback port over `root`.
pub struct HttpServer {
    /// The server process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl HttpServer {
    /// Starts `berth-server http --root ROOT --listen 127.0.0.1:0`.
    pub fn start(root: &Path) -> HttpServer {
        Self::start_with(root, &[], Stdio::inherit())
    }

    /// `berth-server http` on `root` with `extra` flags, its stderr (the
    /// server log) sent to `stderr`.
    pub fn start_with(root: &Path, extra: &[&str], stderr: Stdio) -> HttpServer {
        let mut cmd = Command::new(bin("berth-server"));
        cmd.args([
            "http",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "tester",
            "--root",
        ])
        .arg(root)
        .args(extra);
        let (proc, line) = spawn_logging_until_line(cmd, "http on", "berth-server http", stderr);
        let addr = addr_in(&line);
        HttpServer { proc, addr }
    }

    /// `host:port` for clients (`127.0.0.1:PORT`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Runs a command to completion, panicking with its output on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "command failed: {cmd:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a command with `input` on stdin, returning its output (any status).
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

/// sha256 hex of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (incompressible test layers).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every regular file under `root` with its sha256, sorted: a store snapshot
/// to prove that a refused request changed nothing.
pub fn snapshot(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let name = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if name.ends_with(".lock") {
                    continue; // lock files carry no data
                }
                let mut data = Vec::new();
                std::fs::File::open(&p)
                    .unwrap()
                    .read_to_end(&mut data)
                    .unwrap();
                out.push((name, sha256_hex(&data)));
            }
        }
    }
    out.sort();
    out
}

// ---- SSH fixtures ------------------------------------------------------------

/// A client key pair made with `ssh-keygen` (ed25519, no passphrase).
pub struct ClientKey {
    /// Private key file (mode 0600).
    pub private: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA... comment`).
    pub public_line: String,
}

impl ClientKey {
    /// Generates `dir/<name>` and `dir/<name>.pub`.
    pub fn generate(dir: &Path, name: &str) -> ClientKey {
        let private = dir.join(name);
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("{name}@berth-test"))
                .arg("-f")
                .arg(&private),
        );
        let public_line = std::fs::read_to_string(private.with_extension("pub"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pub", private.display())))
            .unwrap()
            .trim()
            .to_string();
        ClientKey {
            private,
            public_line,
        }
    }

    /// Writes an authorized_keys file holding these keys' public lines.
    pub fn authorized_keys(path: &Path, keys: &[&ClientKey]) {
        let text: String = keys
            .iter()
            .map(|k| format!("{}\n", k.public_line))
            .collect();
        std::fs::write(path, text).unwrap();
    }
}

/// `berth-server serve` on an ephemeral loopback port.
pub struct SshServer {
    /// The server process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The host key file (its `.pub` is beside it).
    pub host_key: PathBuf,
}

impl SshServer {
    /// Starts a server on `root` with keys from `authorized_keys`; the host key
    /// lives in `state_dir` (generated on first start). `extra` adds flags.
    pub fn start(
        root: &Path,
        authorized_keys: &Path,
        state_dir: &Path,
        extra: &[&str],
    ) -> SshServer {
        Self::start_on(root, authorized_keys, state_dir, "127.0.0.1:0", extra)
    }

    /// Starts a server whose users and rules come from an access file.
    pub fn start_with_access(
        root: &Path,
        access: &Path,
        state_dir: &Path,
        extra: &[&str],
    ) -> SshServer {
        let mut args = vec!["--access", access.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::launch(root, None, state_dir, "127.0.0.1:0", &args)
    }

    /// Same as [`SshServer::start`] on a given listen address (for restarts).
    pub fn start_on(
        root: &Path,
        authorized_keys: &Path,
        state_dir: &Path,
        listen: &str,
        extra: &[&str],
    ) -> SshServer {
        Self::launch(root, Some(authorized_keys), state_dir, listen, extra)
    }

    /// [`SshServer::start`] with every request logged (debug level) to
    /// `log`, so a test can count what reached this server.
    pub fn start_logged(
        root: &Path,
        authorized_keys: &Path,
        state_dir: &Path,
        extra: &[&str],
        log: &Path,
    ) -> SshServer {
        let file = std::fs::File::create(log).unwrap();
        Self::launch_with(
            root,
            Some(authorized_keys),
            state_dir,
            "127.0.0.1:0",
            extra,
            Some(file),
        )
    }

    fn launch(
        root: &Path,
        authorized_keys: Option<&Path>,
        state_dir: &Path,
        listen: &str,
        extra: &[&str],
    ) -> SshServer {
        Self::launch_with(root, authorized_keys, state_dir, listen, extra, None)
    }

    fn launch_with(
        root: &Path,
        authorized_keys: Option<&Path>,
        state_dir: &Path,
        listen: &str,
        extra: &[&str],
        log: Option<std::fs::File>,
    ) -> SshServer {
        let host_key = state_dir.join("berth_host_key");
        let mut cmd = Command::new(bin("berth-server"));
        cmd.args(["serve", "--listen", listen, "--root"]).arg(root);
        if let Some(keys) = authorized_keys {
            cmd.arg("--authorized-keys").arg(keys);
        }
        cmd.arg("--host-key").arg(&host_key);
        cmd.args(extra);
        let stderr = match log {
            Some(file) => {
                cmd.env("BERTH_LOG", "berth_server=debug");
                Stdio::from(file)
            }
            None => Stdio::inherit(),
        };
        let (proc, line) =
            spawn_logging_until_line(cmd, "listening on", "berth-server serve", stderr);
        let addr = addr_in(&line);
        SshServer {
            proc,
            addr,
            host_key,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A known_hosts line for this server (`[127.0.0.1]:PORT key`).
    pub fn known_hosts_line(&self) -> String {
        known_hosts_line(self.port(), &self.host_key)
    }
}

/// `berth-server serve` on `root` with one fresh client key (`alice`) it
/// accepts and a known_hosts file that trusts it, all under `state`: what
/// most SSH tests start from.
pub struct KeyedServer {
    /// The server.
    pub server: SshServer,
    /// The client key.
    pub key: ClientKey,
    /// `ssh://root@127.0.0.1:PORT`.
    pub registry: String,
    /// `-i KEY --known-hosts FILE`, for berth commands.
    pub flags: Vec<String>,
}

impl KeyedServer {
    /// Starts it (`state` is created).
    pub fn start(root: &Path, state: &Path, extra: &[&str]) -> KeyedServer {
        std::fs::create_dir_all(state).unwrap();
        let key = ClientKey::generate(state, "alice");
        let authorized = state.join("authorized_keys");
        ClientKey::authorized_keys(&authorized, &[&key]);
        let server = SshServer::start(root, &authorized, state, extra);
        let known = state.join("known_hosts");
        std::fs::write(&known, format!("{}\n", server.known_hosts_line())).unwrap();
        let flags = vec![
            "-i".to_string(),
            key.private.display().to_string(),
            "--known-hosts".to_string(),
            known.display().to_string(),
        ];
        let registry = format!("ssh://root@127.0.0.1:{}", server.port());
        KeyedServer {
            server,
            key,
            registry,
            flags,
        }
    }
}

/// `[127.0.0.1]:PORT <public key>` for a host key file.
pub fn known_hosts_line(port: u16, host_key: &Path) -> String {
    let public = std::fs::read_to_string(format!("{}.pub", host_key.display())).unwrap();
    let mut parts = public.split_whitespace();
    let (t, k) = (parts.next().unwrap(), parts.next().unwrap());
    format!("[127.0.0.1]:{port} {t} {k}")
}

/// A stock OpenSSH sshd started from a temp config on a loopback port.
pub struct Sshd {
    /// The sshd process.
    pub proc: Proc,
    /// Its port.
    pub port: u16,
    /// Its host key file.
    pub host_key: PathBuf,
}

impl Sshd {
    /// Starts `/usr/sbin/sshd -f cfg -D -e` in `dir`, accepting the keys in
    /// `authorized_keys`. `subsystem` is the `docker-registry` subsystem
    /// command line, if any. TCP forwarding is allowed (for jump-host tests).
    pub fn start(dir: &Path, authorized_keys: &Path, subsystem: Option<&str>) -> Sshd {
        std::fs::create_dir_all("/run/sshd").ok();
        let host_key = dir.join("sshd_host_ed25519_key");
        if !host_key.exists() {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(&host_key),
            );
        }
        let port = free_port();
        let mut cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             StrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nAllowTcpForwarding yes\n\
             PermitTTY no\nX11Forwarding no\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n",
            host_key.display(),
            authorized_keys.display(),
            dir.join(format!("sshd-{port}.pid")).display()
        );
        if let Some(sub) = subsystem {
            cfg.push_str(&format!("Subsystem docker-registry {sub}\n"));
        }
        let cfg_path = dir.join(format!("sshd_config-{port}"));
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-f")
            .arg(&cfg_path)
            .args(["-D", "-e"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting sshd");
        wait_for_port(
            format!("127.0.0.1:{port}").parse().unwrap(),
            Duration::from_secs(10),
        );
        Sshd {
            proc: Proc {
                child,
                name: "sshd".into(),
            },
            port,
            host_key,
        }
    }
}

/// An OpenSSH `ssh` command for `root@127.0.0.1 -p PORT` with one key, no
/// known_hosts checking, never prompting.
pub fn ssh_command(key: &Path, port: u16) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(ssh_options(key, port));
    cmd.arg("root@127.0.0.1");
    cmd
}

/// The options [`ssh_command`] uses, for building `BERTH_SSH_COMMAND`.
pub fn ssh_options(key: &Path, port: u16) -> Vec<String> {
    vec![
        "-i".into(),
        key.display().to_string(),
        "-p".into(),
        port.to_string(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-F".into(),
        "/dev/null".into(),
    ]
}

// ---- a minimal HTTP/1.1 client over any byte stream ----------------------------

/// One HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header (lowercased name, value) pairs in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Request body framing for [`HttpConn::request`].
pub enum ReqBody<'a> {
    /// No body.
    None,
    /// A body with `Content-Length`.
    Sized(&'a [u8]),
    /// A body sent with `Transfer-Encoding: chunked` in pieces of this size.
    Chunked(&'a [u8], usize),
}

/// A keep-alive HTTP/1.1 connection over a reader and a writer (a TCP
/// socket, or the stdin/stdout of `ssh -s host docker-registry`).
pub struct HttpConn<R: BufRead, W: Write> {
    /// The response side.
    pub r: R,
    /// The request side.
    pub w: W,
}

impl<R: BufRead, W: Write> HttpConn<R, W> {
    /// Wraps a reader/writer pair.
    pub fn new(r: R, w: W) -> Self {
        HttpConn { r, w }
    }

    /// Sends one request and reads the whole response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody<'_>,
    ) -> HttpResponse {
        self.try_request(method, path, headers, body)
            .expect("connection closed while sending a request or reading a response")
    }

    /// [`HttpConn::request`] that answers `None` when the peer closes the
    /// connection instead of answering (the caller reconnects).
    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody<'_>,
    ) -> Option<HttpResponse> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.send_and_read(method, path, headers, body)
        }))
        .ok()
    }

    fn send_and_read(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody<'_>,
    ) -> HttpResponse {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: docker/1.9.1 go/go1.4.3 kernel/4.0 os/linux arch/amd64\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match &body {
            ReqBody::None => {
                if method == "PUT" || method == "POST" || method == "PATCH" {
                    head.push_str("Content-Length: 0\r\n");
                }
            }
            ReqBody::Sized(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
            ReqBody::Chunked(..) => head.push_str("Transfer-Encoding: chunked\r\n"),
        }
        head.push_str("\r\n");
        self.w.write_all(head.as_bytes()).unwrap();
        match body {
            ReqBody::None => {}
            ReqBody::Sized(b) => self.w.write_all(b).unwrap(),
            ReqBody::Chunked(b, size) => {
                for piece in b.chunks(size.max(1)) {
                    write!(self.w, "{:x}\r\n", piece.len()).unwrap();
                    self.w.write_all(piece).unwrap();
                    self.w.write_all(b"\r\n").unwrap();
                }
                self.w.write_all(b"0\r\n\r\n").unwrap();
            }
        }
        self.w.flush().unwrap();
        self.read_response(method == "HEAD")
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).unwrap();
        assert!(n > 0, "connection closed while reading a response");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    fn read_response(&mut self, head_only: bool) -> HttpResponse {
        let status_line = self.read_line();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.read_line();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("header line");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut resp = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 {
            return resp;
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            loop {
                let size =
                    usize::from_str_radix(self.read_line().split(';').next().unwrap().trim(), 16)
                        .unwrap();
                if size == 0 {
                    let _ = self.read_line();
                    break;
                }
                let mut chunk = vec![0; size];
                self.r.read_exact(&mut chunk).unwrap();
                resp.body.extend_from_slice(&chunk);
                let _ = self.read_line();
            }
        } else {
            let len: usize = resp
                .header("content-length")
                .map(|l| l.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            self.r.read_exact(&mut body).unwrap();
            resp.body = body;
        }
        resp
    }
}

/// An HTTP connection over TCP.
pub fn tcp_conn(addr: SocketAddr) -> HttpConn<BufReader<std::net::TcpStream>, std::net::TcpStream> {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    HttpConn::new(BufReader::new(s.try_clone().unwrap()), s)
}

/// An HTTP connection over a spawned command's stdin/stdout (e.g. `ssh -s`).
pub struct CommandConn {
    /// The HTTP connection.
    pub http: HttpConn<BufReader<std::process::ChildStdout>, std::process::ChildStdin>,
    /// The process carrying it.
    pub proc: Proc,
}

impl CommandConn {
    /// Spawns `cmd` with piped stdin/stdout.
    pub fn spawn(mut cmd: Command) -> CommandConn {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let w = child.stdin.take().unwrap();
        let r = BufReader::new(child.stdout.take().unwrap());
        CommandConn {
            http: HttpConn::new(r, w),
            proc: Proc {
                child,
                name: "ssh".into(),
            },
        }
    }
}

// ---- the Docker 1.x V1 push/pull sequence ---------------------------------------

/// A two-image V1 chain (base + child) with gzip-looking layers and valid json.
pub struct V1Image {
    /// Image ids, root first.
    pub ids: Vec<String>,
    /// The json bytes of each image, root first.
    pub jsons: Vec<Vec<u8>>,
    /// The layer bytes of each image, root first.
    pub layers: Vec<Vec<u8>>,
}

impl V1Image {
    /// A deterministic chain of `n` images from `seed`, layers of `size` bytes.
    pub fn chain(seed: u64, n: usize, size: usize) -> V1Image {
        let mut ids: Vec<String> = Vec::new();
        let mut jsons = Vec::new();
        let mut layers = Vec::new();
        for i in 0..n {
            let id = sha256_hex(format!("berth-test-{seed}-{i}").as_bytes());
            let json = match ids.last() {
                Some(parent) => format!(
                    r#"{{"id":"{id}","parent":"{parent}","created":"2014-01-0{}T00:00:00Z","container_config":{{"Cmd":["/bin/sh","-c","step {i}"]}},"architecture":"amd64","os":"linux"}}"#,
                    i + 1
                ),
                None => format!(
                    r#"{{"id":"{id}","created":"2014-01-01T00:00:00Z","container_config":{{"Cmd":["/bin/sh","-c","base"]}},"architecture":"amd64","os":"linux"}}"#
                ),
            };
            ids.push(id);
            jsons.push(json.into_bytes());
            layers.push(random_bytes(size, seed * 100 + i as u64));
        }
        V1Image { ids, jsons, layers }
    }

    /// `sha256(json + "\n" + layer)` of image `i`, as `sha256:<hex>`.
    pub fn payload_checksum(&self, i: usize) -> String {
        let mut data = self.jsons[i].clone();
        data.push(b'\n');
        data.extend_from_slice(&self.layers[i]);
        format!("sha256:{}", sha256_hex(&data))
    }
}

/// Runs the Docker 1.x push sequence (`v1-protocol.md` §7.1) for `img` into
/// `repo` with `tag` on the top image, asserting every answer.
pub fn v1_push<R: BufRead, W: Write>(c: &mut HttpConn<R, W>, repo: &str, tag: &str, img: &V1Image) {
    use ReqBody::*;
    let r = c.request("GET", "/v1/_ping", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({}));
    let list: Vec<serde_json::Value> = img
        .ids
        .iter()
        .map(|id| serde_json::json!({"id": id}))
        .collect();
    let body = serde_json::to_vec(&list).unwrap();
    let r = c.request(
        "PUT",
        &format!("/v1/repositories/{repo}/"),
        &[
            ("Content-Type", "application/json"),
            ("X-Docker-Token", "true"),
        ],
        Sized(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("x-docker-endpoints").is_some(),
        "X-Docker-Endpoints missing"
    );
    assert!(
        r.header("x-docker-token").is_some(),
        "X-Docker-Token missing"
    );
    for i in 0..img.ids.len() {
        let id = &img.ids[i];
        let r = c.request("GET", &format!("/v1/images/{id}/json"), &[], None);
        if r.status == 200 {
            continue; // already there
        }
        let r = c.request(
            "PUT",
            &format!("/v1/images/{id}/json"),
            &[("Content-Type", "application/json")],
            Sized(&img.jsons[i]),
        );
        assert_eq!(r.status, 200, "json PUT: {}", r.text());
        let r = c.request(
            "PUT",
            &format!("/v1/images/{id}/layer"),
            &[("Content-Type", "application/octet-stream")],
            Chunked(&img.layers[i], 32 * 1024),
        );
        assert_eq!(r.status, 200, "layer PUT: {}", r.text());
        let sum = img.payload_checksum(i);
        let r = c.request(
            "PUT",
            &format!("/v1/images/{id}/checksum"),
            &[
                ("X-Docker-Checksum-Payload", &sum),
                ("X-Docker-Checksum", "tarsum+sha256:0"),
            ],
            None,
        );
        assert_eq!(r.status, 200, "checksum PUT: {}", r.text());
    }
    let top = img.ids.last().unwrap();
    let r = c.request(
        "PUT",
        &format!("/v1/repositories/{repo}/tags/{tag}"),
        &[("Content-Type", "application/json")],
        Sized(format!("\"{top}\"").as_bytes()),
    );
    assert_eq!(r.status, 200, "tag PUT: {}", r.text());
    let r = c.request(
        "PUT",
        &format!("/v1/repositories/{repo}/images"),
        &[("X-Docker-Token", "true")],
        Sized(&body),
    );
    assert_eq!(r.status, 204, "images PUT: {}", r.text());
}

/// Runs the Docker 1.x pull sequence (`v1-protocol.md` §7.2) and checks that
/// json and layers come back byte-identical, including a ranged layer GET.
pub fn v1_pull_and_verify<R: BufRead, W: Write>(
    c: &mut HttpConn<R, W>,
    repo: &str,
    tag: &str,
    img: &V1Image,
) {
    use ReqBody::*;
    let r = c.request(
        "GET",
        &format!("/v1/repositories/{repo}/images"),
        &[("X-Docker-Token", "true")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().is_array());
    let r = c.request("GET", &format!("/v1/repositories/{repo}/tags"), &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    let top = img.ids.last().unwrap();
    assert_eq!(r.json()[tag], serde_json::json!(top));
    let r = c.request(
        "GET",
        &format!("/v1/repositories/{repo}/tags/{tag}"),
        &[],
        None,
    );
    assert_eq!(r.json(), serde_json::json!(top));
    let r = c.request("GET", &format!("/v1/images/{top}/ancestry"), &[], None);
    let mut expect: Vec<String> = img.ids.clone();
    expect.reverse();
    assert_eq!(r.json(), serde_json::json!(expect));
    for i in 0..img.ids.len() {
        let id = &img.ids[i];
        let r = c.request("GET", &format!("/v1/images/{id}/json"), &[], None);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, img.jsons[i], "json bytes differ");
        assert_eq!(
            r.header("x-docker-size"),
            Some(img.layers[i].len().to_string().as_str())
        );
        assert_eq!(
            r.header("x-docker-checksum-payload"),
            Some(img.payload_checksum(i).as_str())
        );
        let r = c.request("GET", &format!("/v1/images/{id}/layer"), &[], None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert!(r.body == img.layers[i], "layer bytes differ");
        // Docker's resume asks for `bytes=<done>-<size>` (end one past the last byte).
        let size = img.layers[i].len();
        let r = c.request(
            "GET",
            &format!("/v1/images/{id}/layer"),
            &[("Range", &format!("bytes=10-{size}"))],
            None,
        );
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes 10-{}/{size}", size - 1).as_str())
        );
        assert!(r.body == img.layers[i][10..], "ranged layer bytes differ");
    }
}

// ---- a minimal V2 push ------------------------------------------------------------

/// Pushes an OCI image (uncompressed layers as given, a minimal config) with
/// the V2 API: each blob by POST + PATCH + PUT `?digest=`, then the manifest
/// to `tag`. Returns the manifest digest. Panics on any unexpected answer.
pub fn v2_push<R: BufRead, W: Write>(
    c: &mut HttpConn<R, W>,
    repo: &str,
    tag: &str,
    layers: &[Vec<u8>],
) -> String {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| serde_json::json!({"created": "2026-01-01T00:00:00Z", "created_by": "test"})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut blobs = vec![config.clone()];
    blobs.extend(layers.iter().cloned());
    for blob in &blobs {
        let digest = format!("sha256:{}", sha256_hex(blob));
        let r = c.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            ReqBody::None,
        );
        assert_eq!(r.status, 202, "upload POST: {}", r.text());
        let loc = r.header("location").unwrap().to_string();
        let r = c.request(
            "PATCH",
            &loc,
            &[("Content-Type", "application/octet-stream")],
            ReqBody::Chunked(blob, 64 * 1024),
        );
        assert_eq!(r.status, 202, "PATCH: {}", r.text());
        let loc = r.header("location").unwrap().to_string();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = c.request(
            "PUT",
            &format!("{loc}{sep}digest={digest}"),
            &[],
            ReqBody::None,
        );
        assert_eq!(r.status, 201, "closing PUT: {}", r.text());
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", sha256_hex(l)), "size": l.len()})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let r = c.request(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        ReqBody::Sized(&manifest),
    );
    assert_eq!(r.status, 201, "manifest PUT: {}", r.text());
    let digest = format!("sha256:{}", sha256_hex(&manifest));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    digest
}

/// A keep-alive HTTP connection to a registry over either path a client can
/// take: `"ssh"` runs OpenSSH `ssh -s docker-registry`, `"shim"` starts a
/// `berth shim` logged in with the same key and connects to it over TCP.
/// `key: None` logs in as `anonymous` (SSH `none` authentication).
pub struct RegistrySession {
    /// The HTTP connection.
    pub http: HttpConn<Box<dyn BufRead + Send>, Box<dyn Write + Send>>,
    _procs: Vec<Proc>,
}

impl RegistrySession {
    /// Opens a session to `berth-server serve` on `port`; `known` is a
    /// known_hosts file that trusts the server (used by the shim).
    pub fn open(via: &str, key: Option<&Path>, port: u16, known: &Path) -> RegistrySession {
        match via {
            "ssh" => {
                let mut cmd = match key {
                    Some(k) => ssh_command(k, port),
                    None => anonymous_ssh_command(port),
                };
                cmd.args(["-s", "docker-registry"]);
                cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
                let mut child = cmd.spawn().unwrap();
                let r: Box<dyn BufRead + Send> =
                    Box::new(BufReader::new(child.stdout.take().unwrap()));
                let w: Box<dyn Write + Send> = Box::new(child.stdin.take().unwrap());
                RegistrySession {
                    http: HttpConn::new(r, w),
                    _procs: vec![Proc {
                        child,
                        name: "ssh".into(),
                    }],
                }
            }
            "shim" => {
                let user = if key.is_some() { "root" } else { "anonymous" };
                let (proc, addr) = start_shim(user, key, port, known);
                let s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let r: Box<dyn BufRead + Send> = Box::new(BufReader::new(s.try_clone().unwrap()));
                let w: Box<dyn Write + Send> = Box::new(s);
                RegistrySession {
                    http: HttpConn::new(r, w),
                    _procs: vec![proc],
                }
            }
            other => panic!("unknown transport {other}"),
        }
    }
}

/// `berth shim` on an ephemeral loopback port, logged in to the server on
/// `port` as `user` with `key` (none: SSH `none` authentication), trusting
/// the host keys in `known`. Returns the process and its address.
pub fn start_shim(user: &str, key: Option<&Path>, port: u16, known: &Path) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(bin("berth"));
    cmd.args(["shim", "--listen", "127.0.0.1:0", "--known-hosts"])
        .arg(known)
        .env_remove("SSH_AUTH_SOCK");
    if let Some(k) = key {
        cmd.arg("--identity").arg(k);
    }
    cmd.arg(format!("ssh://{user}@127.0.0.1:{port}"));
    let (proc, line) = spawn_until_line(cmd, "berth shim: serving", "berth shim");
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (proc, addr)
}

/// OpenSSH `ssh` logging in as `anonymous` without a key, on `port`.
pub fn anonymous_ssh_command(port: u16) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-p", &port.to_string()]);
    for o in [
        "PubkeyAuthentication=no",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "LogLevel=ERROR",
    ] {
        c.args(["-o", o]);
    }
    c.args(["-F", "/dev/null", "anonymous@127.0.0.1"]);
    c
}

/// The tenants of one registry, the world of the isolation tests (issue 14):
/// `alice` owns `private/` and may write `public/`; `carol` may read
/// `private/`; `bob` owns `bob/`; `mallory` owns `evil/`; `public/` is
/// readable by `@anonymous` and `@all`, `team/` by `@all`. Keys, the access
/// file and the host key live under `state`, the store at `root`.
pub struct Tenants {
    /// Owns every file below.
    pub dir: tempfile::TempDir,
    /// The store.
    pub root: PathBuf,
    /// Keys, the access file, known_hosts files.
    pub state: PathBuf,
    /// The access file.
    pub access: PathBuf,
    /// Owner of `private/`.
    pub alice: ClientKey,
    /// Owner of `bob/`.
    pub bob: ClientKey,
    /// Reader of `private/`.
    pub carol: ClientKey,
    /// Owner of `evil/`, the attacker.
    pub mallory: ClientKey,
}

impl Tenants {
    /// Keys and access file, or `None` (a loud skip outside CI) without
    /// OpenSSH.
    pub fn new() -> Option<Tenants> {
        if !require_tool("ssh", "openssh-client") || !require_tool("ssh-keygen", "openssh-client") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let [alice, bob, carol, mallory] =
            ["alice", "bob", "carol", "mallory"].map(|n| ClientKey::generate(&state, n));
        let access = state.join("access.toml");
        std::fs::write(
            &access,
            format!(
                r#"
[users]
alice = ["{}"]
bob = ["{}"]
carol = ["{}"]
mallory = ["{}"]

[[rule]]
namespace = "private"
read = ["alice", "carol"]
write = ["alice"]
delete = ["alice"]

[[rule]]
namespace = "bob"
read = ["bob"]
write = ["bob"]
delete = ["bob"]

[[rule]]
namespace = "evil"
read = ["mallory"]
write = ["mallory"]
delete = ["mallory"]

[[rule]]
namespace = "public"
read = ["@anonymous", "@all"]
write = ["alice"]

[[rule]]
namespace = "team"
read = ["@all"]
"#,
                alice.public_line, bob.public_line, carol.public_line, mallory.public_line
            ),
        )
        .unwrap();
        Some(Tenants {
            dir,
            root,
            state,
            access,
            alice,
            bob,
            carol,
            mallory,
        })
    }

    /// `berth-server serve --access` on the store.
    pub fn start(&self) -> SshServer {
        SshServer::start_with_access(&self.root, &self.access, &self.state, &[])
    }

    /// The key of a tenant by name; `None` for `"anonymous"`.
    pub fn key(&self, who: &str) -> Option<&ClientKey> {
        match who {
            "alice" => Some(&self.alice),
            "bob" => Some(&self.bob),
            "carol" => Some(&self.carol),
            "mallory" => Some(&self.mallory),
            "anonymous" => None,
            other => panic!("no tenant {other}"),
        }
    }

    /// A known_hosts file trusting `server`.
    pub fn known_hosts(&self, server: &SshServer) -> PathBuf {
        let known = self.state.join(format!("known_hosts-{}", server.port()));
        std::fs::write(&known, format!("{}\n", server.known_hosts_line())).unwrap();
        known
    }
}

/// An HTTP connection to the `docker-registry` subsystem of the server on
/// `port` through OpenSSH, as `key`'s holder or anonymously (`None`).
pub fn subsystem_conn(key: Option<&ClientKey>, port: u16) -> CommandConn {
    let mut cmd = match key {
        Some(k) => ssh_command(&k.private, port),
        None => anonymous_ssh_command(port),
    };
    cmd.args(["-s", "docker-registry"]);
    CommandConn::spawn(cmd)
}

/// The upstream OCI distribution-spec conformance suite's runner
/// (`shared/conformance/run` beside the checkout, or `BERTH_OCI_CONFORMANCE`).
/// Missing under CI: panic; locally: a loud skip.
pub fn conformance_runner() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = std::env::var_os("BERTH_OCI_CONFORMANCE")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            workspace.join("../shared/conformance/run"),
            PathBuf::from("/work/shared/conformance/run"),
        ]);
    for c in candidates {
        if c.is_file() {
            return Some(c);
        }
    }
    if in_ci() {
        panic!("the OCI conformance runner is missing: set BERTH_OCI_CONFORMANCE or provide ../shared/conformance/run");
    }
    eprintln!("\n!!!!! SKIPPING: the OCI conformance runner (../shared/conformance/run) is not here; set BERTH_OCI_CONFORMANCE !!!!!\n");
    None
}

/// Runs the conformance suite against `host:port` with every workflow and
/// optional API on (upload cancel and `?tag=` parameters included; sparse
/// manifests stay off: berth refuses manifests naming blobs the repository
/// does not hold, issue 14). Writes its reports to `out` and returns the
/// exit status and the summary it printed.
pub fn run_conformance(runner: &Path, host: &str, out: &Path) -> (bool, String) {
    let result = Command::new(runner)
        .arg(host)
        .arg(out)
        .env("OCI_API_BLOBS_UPLOAD_CANCEL", "true")
        .env("OCI_API_MANIFESTS_TAG_PARAM", "true")
        .env("OCI_DATA_SPARSE", "false")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    (result.status.success(), text)
}

// ---- a headless Chromium driven over WebDriver ------------------------------------

/// Whether headless Chromium and its WebDriver are installed (Debian
/// `chromium` and `chromium-driver`); under CI they must be.
pub fn require_chromium() -> bool {
    require_tool("chromium", "chromium") && require_tool("chromedriver", "chromium-driver")
}

/// A headless Chromium session driven through `chromedriver`'s W3C
/// WebDriver endpoints (plain JSON over HTTP); both end on drop.
pub struct Browser {
    driver: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
    _proc: Proc,
}

impl Browser {
    /// Starts chromedriver on an ephemeral port and a headless Chromium
    /// session with a `width`×`height` window.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc {
            child: cmd.spawn().expect("spawning chromedriver"),
            name: "chromedriver".into(),
        };
        let driver: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for_port(driver, Duration::from_secs(60));
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
                         format!("--window-size={width},{height}"),
                         format!("--user-data-dir={}", profile.path().display())],
            }
        }}});
        let v = webdriver(driver, "POST", "/session", Some(&caps));
        let session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Browser {
            driver,
            session,
            _profile: profile,
            _proc: proc,
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> serde_json::Value {
        webdriver(
            self.driver,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    /// Loads `url` and waits for the page to finish loading.
    pub fn open(&self, url: &str) {
        self.call("POST", "/url", Some(&serde_json::json!({ "url": url })));
    }

    /// The current page's URL.
    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The ids of the elements matching a CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call(
            "POST",
            "/elements",
            Some(&serde_json::json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .unwrap_or_else(|| panic!("finding {css}: {v}"))
            .iter()
            .filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_string))
            .collect()
    }

    /// The id of the first element matching `css`; panics when none does.
    pub fn find(&self, css: &str) -> String {
        self.find_all(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element matches {css} on {}", self.url()))
    }

    /// The rendered text of an element.
    pub fn text_of(&self, element: &str) -> String {
        let v = self.call("GET", &format!("/element/{element}/text"), None);
        v.as_str().unwrap_or_default().to_string()
    }

    /// The rendered text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.text_of(&self.find(css))
    }

    /// The rendered texts of every element matching `css`.
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.find_all(css).iter().map(|e| self.text_of(e)).collect()
    }

    /// An attribute of the first element matching `css`.
    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css);
        let v = self.call("GET", &format!("/element/{e}/attribute/{name}"), None);
        v.as_str().map(str::to_string)
    }

    /// Clicks the first element matching `css` (a link or a submit button
    /// navigates; WebDriver waits for the new page).
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/click"),
            Some(&serde_json::json!({})),
        );
    }

    /// Runs `script` in the page and returns its value.
    pub fn execute(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&serde_json::json!({"script": script, "args": []})),
        )
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(&serde_json::json!({"width": width, "height": height})),
        );
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.call("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            webdriver(
                self.driver,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            )
        }));
    }
}

/// One WebDriver command; returns its `value`, panicking on an error answer.
fn webdriver(
    driver: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    let mut c = tcp_conn(driver);
    let mut headers = vec![("Connection", "close")];
    if bytes.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = c.request(
        method,
        path,
        &headers,
        match &bytes {
            Some(b) => ReqBody::Sized(b),
            None => ReqBody::None,
        },
    );
    let v: serde_json::Value = r.json();
    assert!(
        r.status == 200,
        "WebDriver {method} {path}: {} {}",
        r.status,
        v
    );
    v["value"].clone()
}

/// Standard base64 (WebDriver screenshots).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
