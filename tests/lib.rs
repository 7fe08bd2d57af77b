//! Helpers shared by the end-to-end tests, each once: locating the built
//! binaries, requiring external tools (fail under `CI=true`, loud skip
//! otherwise), starting servers (berth-server http/serve, stock sshd) on
//! ephemeral loopback ports, the keyed fixture ([`Keyring`], [`Tenants`],
//! [`KeyedServer`]), the suite's one HTTP client ([`Http`] over a keep-alive
//! [`HttpConn`] or a [`Fresh`] connection per request), the V1 and V2 image
//! fixtures and their pushes ([`V1Image`], [`V2Image`]), OCI layouts and the
//! offline store tools. Every spawned process is killed on drop; waits poll
//! for an event under a deadline that only bounds a hang.

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

/// What a test needs, `found` or not: missing under CI, a panic naming
/// `what`; missing locally, a loud skip message and `false`.
fn needed(found: bool, what: &str) -> bool {
    if !found {
        if in_ci() {
            panic!("required: {what}");
        }
        eprintln!("\n!!!!! SKIPPING: missing {what} !!!!!\n");
    }
    found
}

/// Checks that `tool` is on PATH. Missing under CI: panic. Missing locally:
/// print a loud message naming the package and return false (test skips).
pub fn require_tool(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    needed(
        found,
        &format!("`{tool}` (install the `{package}` package)"),
    )
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
        .is_ok_and(|o| o.status.success());
    needed(
        found,
        &format!("python module {module} (pip install {pip_package})"),
    )
}

/// The Python `docker-registry-client` (a real V1 peer) against the
/// registry at `url`: lists namespaces and repositories, reads the tags of
/// `team/web`, tags `base` as `stable`, reads that tag, untags it. Returns
/// what it saw (`namespaces`, `repositories`, `tags`, `after_tag`, `stable`,
/// `after_untag`), or `None` (a loud skip outside CI) without the module.
pub fn python_v1_client(url: &str, base: &str) -> Option<serde_json::Value> {
    if !require_python_module("docker_registry_client", "docker-registry-client") {
        return None;
    }
    let script = format!(
        r#"
import json
from docker_registry_client import DockerRegistryClient
c = DockerRegistryClient("{url}", api_version=1)
out = {{}}
out["namespaces"] = sorted(c.namespaces())
out["repositories"] = sorted(c.repositories().keys())
repo = c.repository("web", namespace="team")
repo.refresh()
out["tags"] = sorted(repo.tags())
repo.tag("stable", "{base}")
repo.refresh()
out["after_tag"] = sorted(repo.tags())
out["stable"] = repo._client.get_image_id("team", "web", "stable")
repo.untag("stable")
repo.refresh()
out["after_untag"] = sorted(repo.tags())
print(json.dumps(out))
"#
    );
    let out = run_ok(Command::new("python3").args(["-c", &script]));
    Some(serde_json::from_slice(&out.stdout).unwrap())
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
        .is_ok_and(|s| s.success());
    needed(ok, "a running Docker engine (docker info failed)")
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

/// Waits (the event gc's grace waits for) until every file is older than
/// `grace` by the newer of its mtime and ctime, as gc counts age.
pub fn wait_until_older_than(files: &[PathBuf], grace: Duration) {
    eventually(
        "the files to be older than the grace",
        Duration::from_secs(120),
        || {
            files.iter().all(|f| {
                let m = std::fs::metadata(f).unwrap();
                let newest = m.modified().unwrap().max(
                    std::time::UNIX_EPOCH
                        + Duration::from_secs(std::os::unix::fs::MetadataExt::ctime(&m) as u64),
                );
                newest.elapsed().unwrap_or_default() > grace + Duration::from_secs(1)
            })
        },
    );
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
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
        Self::spawn(Command::new(bin("berth-server")), root, extra, stderr)
    }

    /// `berth-server http` on `root` run by `wrapper`, a program that takes
    /// the server's command line after its own arguments (`strace -f -o
    /// FILE`); `proc` is then the wrapper.
    pub fn start_under(root: &Path, mut wrapper: Command) -> HttpServer {
        wrapper.arg(bin("berth-server"));
        Self::spawn(wrapper, root, &[], Stdio::inherit())
    }

    fn spawn(mut cmd: Command, root: &Path, extra: &[&str], stderr: Stdio) -> HttpServer {
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
                if name.starts_with("_berth/renewed/") {
                    // gc's renewal markers: empty, only their time counts.
                    // A manifest PUT renews what it found present even when
                    // it is refused, so that the client's next attempt finds
                    // it still there (`Store::renew_for_gc`).
                    continue;
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

/// [`snapshot`] minus upload-session scratch space: what a refused request
/// must leave unchanged.
pub fn durable_snapshot(root: &Path) -> Vec<(String, String)> {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("_berth/uploads"))
        .collect()
}

/// Runs an offline store tool, `berth-server ARGS --root ROOT` (fsck, gc,
/// audit); returns (exit code, stdout then stderr).
pub fn store_tool(root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin("berth-server"))
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .expect("running berth-server");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// [`store_tool`] that must succeed; returns its stdout.
pub fn store_tool_ok(root: &Path, args: &[&str]) -> String {
    let out = run_ok(
        Command::new(bin("berth-server"))
            .args(args)
            .arg("--root")
            .arg(root),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `berth-server fsck` with `extra` flags; (exit code, output).
pub fn fsck(root: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["fsck"];
    args.extend_from_slice(extra);
    store_tool(root, &args)
}

/// `fsck --grace 0s` finds no problem and no leftover.
pub fn assert_fsck_clean(root: &Path) {
    let (code, text) = fsck(root, &["--grace", "0s"]);
    assert_eq!(code, 0, "fsck found problems:\n{text}");
    assert!(!text.contains("PROBLEM"), "{text}");
}

// ---- SSH fixtures ------------------------------------------------------------

/// A client key pair made with `ssh-keygen` (ed25519, no passphrase).
#[derive(Clone)]
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
    /// The known_hosts file trusting the server.
    pub known: PathBuf,
    /// `ssh://root@127.0.0.1:PORT`.
    pub registry: String,
    /// `-i KEY --known-hosts FILE`, for berth commands.
    pub flags: Vec<String>,
}

impl KeyedServer {
    /// Starts it (`state` is created).
    pub fn start(root: &Path, state: &Path, extra: &[&str]) -> KeyedServer {
        Self::launch(root, state, extra, None)
    }

    /// [`KeyedServer::start`] with every request logged to `log` (see
    /// [`SshServer::start_logged`]).
    pub fn start_logged(root: &Path, state: &Path, extra: &[&str], log: &Path) -> KeyedServer {
        Self::launch(root, state, extra, Some(log))
    }

    fn launch(root: &Path, state: &Path, extra: &[&str], log: Option<&Path>) -> KeyedServer {
        std::fs::create_dir_all(state).unwrap();
        let key = ClientKey::generate(state, "alice");
        let authorized = state.join("authorized_keys");
        ClientKey::authorized_keys(&authorized, &[&key]);
        let server = match log {
            Some(log) => SshServer::start_logged(root, &authorized, state, extra, log),
            None => SshServer::start(root, &authorized, state, extra),
        };
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
            known,
            registry,
            flags,
        }
    }
}

/// A native (russh) SSH client handler that trusts any host key: for tests
/// that drive the SSH protocol itself against a server they just started.
pub struct TrustingClient;

impl russh::client::Handler for TrustingClient {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
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

// ---- the one HTTP/1.1 client of the suite --------------------------------------

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

    /// The codes of a V2 error body, in order.
    pub fn error_codes(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {}", self.text()))
            .iter()
            .map(|e| e["code"].as_str().unwrap().to_string())
            .collect()
    }

    /// `Ok(self)` when the status is `status`, else a [`Refused`] naming `step`:
    /// how the fallible pushes below stop at the first unexpected answer.
    pub fn expect(self, status: u16, step: &str) -> Result<HttpResponse, Refused> {
        if self.status == status {
            Ok(self)
        } else {
            Err(Refused {
                step: step.to_string(),
                status: self.status,
                body: self.text(),
            })
        }
    }
}

/// A step of a push answered otherwise than a successful push is (or the
/// connection failed: status 0), with what the server said.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Which request (`"json PUT"`, `"tag PUT"`...).
    pub step: String,
    /// Its status (0: no answer).
    pub status: u16,
    /// The answer's body, or the transport error.
    pub body: String,
}

impl Refused {
    /// Whether the body is V1's `{"error": "Image already exists"}`.
    pub fn already_exists(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .is_ok_and(|v| v["error"] == "Image already exists")
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} {}", self.step, self.status, self.body)
    }
}

impl From<Refused> for String {
    fn from(r: Refused) -> String {
        r.to_string()
    }
}

/// Request body framing for [`Http::send`].
#[derive(Clone, Copy)]
pub enum ReqBody<'a> {
    /// No body.
    None,
    /// A body with `Content-Length`.
    Sized(&'a [u8]),
    /// A body sent with `Transfer-Encoding: chunked` in pieces of this size.
    Chunked(&'a [u8], usize),
}

impl ReqBody<'_> {
    /// The framing header line and the framed bytes of this body.
    fn frame(&self, method: &str) -> (String, Vec<u8>) {
        match *self {
            ReqBody::None if matches!(method, "PUT" | "POST" | "PATCH") => {
                ("Content-Length: 0\r\n".into(), Vec::new())
            }
            ReqBody::None => (String::new(), Vec::new()),
            ReqBody::Sized(b) => (format!("Content-Length: {}\r\n", b.len()), b.to_vec()),
            ReqBody::Chunked(b, size) => {
                let mut out = Vec::with_capacity(b.len() + 64);
                for piece in b.chunks(size.max(1)) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                ("Transfer-Encoding: chunked\r\n".into(), out)
            }
        }
    }
}

/// The request head every client of the suite sends (a Docker 1.9 user
/// agent, which the V1 routes expect); `framing` holds the body's header
/// lines (`Content-Length: N\r\n`...). For tests that stream a body themselves.
pub fn request_head(method: &str, path: &str, headers: &[(&str, &str)], framing: &str) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: docker/1.9.1 go/go1.4.3 kernel/4.0 os/linux arch/amd64\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(framing);
    head.push_str("\r\n");
    head
}

fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed while reading a response".into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one response. A body with neither length nor chunking runs to the
/// end of the stream when `to_close` (a `Connection: close` exchange), else
/// it is empty.
pub fn read_response(
    r: &mut impl BufRead,
    head_only: bool,
    to_close: bool,
) -> Result<HttpResponse, String> {
    let status_line = read_line(r)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 {
        return Ok(resp);
    }
    let io = |e: std::io::Error| e.to_string();
    if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            let line = read_line(r)?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|e| format!("chunk size {line:?}: {e}"))?;
            if size == 0 {
                let _ = read_line(r);
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk).map_err(io)?;
            resp.body.extend_from_slice(&chunk);
            read_line(r)?;
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body).map_err(io)?;
    } else if to_close {
        r.read_to_end(&mut resp.body).map_err(io)?;
    }
    Ok(resp)
}

/// Request headers, (name, value) pairs in order.
pub type Headers<'a> = &'a [(&'a str, &'a str)];

/// A whole response, or how the transport failed.
pub type Answer = Result<HttpResponse, String>;

/// Something that answers HTTP requests: a keep-alive [`HttpConn`] or a
/// [`Fresh`] connection per request. The pushes below work over either.
pub trait Http {
    /// Sends one request and reads its whole answer; `Err` when the
    /// transport fails (the peer closed, was killed, timed out).
    fn send(&mut self, method: &str, path: &str, headers: Headers, body: ReqBody) -> Answer;

    /// [`Http::send`] that panics on a transport failure.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody<'_>,
    ) -> HttpResponse {
        self.send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// [`Http::send`] whose transport failure is a [`Refused`] of `step`.
    fn step(
        &mut self,
        step: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody<'_>,
    ) -> Result<HttpResponse, Refused> {
        self.send(method, path, headers, body).map_err(|e| Refused {
            step: step.to_string(),
            status: 0,
            body: e,
        })
    }
}

/// A keep-alive HTTP/1.1 connection over a reader and a writer (a TCP
/// socket, or the stdin/stdout of `ssh -s host docker-registry`).
pub struct HttpConn<R: BufRead, W: Write> {
    /// The response side.
    pub r: R,
    /// The request side.
    pub w: W,
}

/// An [`HttpConn`] over TCP ([`tcp_conn`]).
pub type TcpConn = HttpConn<BufReader<std::net::TcpStream>, std::net::TcpStream>;

/// An [`HttpConn`] over a child's pipes ([`CommandConn`], `ssh -s`).
pub type PipeConn = HttpConn<BufReader<std::process::ChildStdout>, std::process::ChildStdin>;

impl<R: BufRead, W: Write> HttpConn<R, W> {
    /// Wraps a reader/writer pair.
    pub fn new(r: R, w: W) -> Self {
        HttpConn { r, w }
    }
}

impl<R: BufRead, W: Write> Http for HttpConn<R, W> {
    fn send(&mut self, method: &str, path: &str, headers: Headers, body: ReqBody) -> Answer {
        let (framing, bytes) = body.frame(method);
        let head = request_head(method, path, headers, &framing);
        let io = |e: std::io::Error| e.to_string();
        self.w.write_all(head.as_bytes()).map_err(io)?;
        self.w.write_all(&bytes).map_err(io)?;
        self.w.flush().map_err(io)?;
        read_response(&mut self.r, method == "HEAD", false)
    }
}

/// An HTTP connection over TCP.
pub fn tcp_conn(addr: SocketAddr) -> TcpConn {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    HttpConn::new(BufReader::new(s.try_clone().unwrap()), s)
}

/// A new `Connection: close` TCP connection for every request to `addr`.
/// The body is written on a second thread while the answer is read: a
/// server may answer (413, an error) and close before reading all of it.
/// For tests where a refused request or a killed server is an outcome.
#[derive(Clone, Copy)]
pub struct Fresh(pub SocketAddr);

impl Http for Fresh {
    fn send(&mut self, method: &str, path: &str, headers: Headers, body: ReqBody) -> Answer {
        let io = |e: std::io::Error| e.to_string();
        let s =
            std::net::TcpStream::connect_timeout(&self.0, Duration::from_secs(60)).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io)?;
        s.set_nodelay(true).map_err(io)?;
        let (framing, bytes) = body.frame(method);
        let head = request_head(
            method,
            path,
            headers,
            &format!("Connection: close\r\n{framing}"),
        );
        let mut w = s.try_clone().map_err(io)?;
        let writer = std::thread::spawn(move || {
            let _ = w
                .write_all(head.as_bytes())
                .and_then(|_| w.write_all(&bytes));
        });
        let mut r = BufReader::new(s.try_clone().map_err(io)?);
        let resp = read_response(&mut r, method == "HEAD", true);
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = writer.join();
        resp
    }
}

/// One request on a [`Fresh`] connection to `addr`; `Err` when the transport fails.
pub fn fetch(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    Fresh(addr).send(method, path, headers, ReqBody::Sized(body))
}

/// An HTTP connection over a spawned command's stdin/stdout (e.g. `ssh -s`).
pub struct CommandConn {
    /// The HTTP connection.
    pub http: PipeConn,
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

/// A chain of V1 images (root first) with their json and layer bytes: the
/// one V1 image fixture of the suite.
#[derive(Clone)]
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
        payload_checksum(&self.jsons[i], &self.layers[i])
    }
}

/// Runs the Docker 1.x push sequence (`v1-protocol.md` §7.1) for `img` into
/// `repo` with `tag` on the top image, asserting every answer.
pub fn v1_push(c: &mut impl Http, repo: &str, tag: &str, img: &V1Image) {
    try_v1_push(c, repo, tag, img).unwrap_or_else(|e| panic!("V1 push of {repo}:{tag}: {e}"));
}

/// The Docker 1.x push sequence (`v1-protocol.md` §7.1), deciding as the
/// client does: a json probe answering 200 or a json PUT answering 409
/// `"Image already exists"` means "already there, skip". The first other
/// unexpected answer ends the push as a [`Refused`].
pub fn try_v1_push(c: &mut impl Http, repo: &str, tag: &str, img: &V1Image) -> Result<(), Refused> {
    use ReqBody::*;
    let r = c
        .step("ping", "GET", "/v1/_ping", &[], None)?
        .expect(200, "ping")?;
    if r.json() != serde_json::json!({}) {
        return Err(Refused {
            step: "ping".into(),
            status: 200,
            body: r.text(),
        });
    }
    let list: Vec<serde_json::Value> = img
        .ids
        .iter()
        .map(|id| serde_json::json!({"id": id}))
        .collect();
    let body = serde_json::to_vec(&list).unwrap();
    let r = c
        .step(
            "index PUT",
            "PUT",
            &format!("/v1/repositories/{repo}/"),
            &[
                ("Content-Type", "application/json"),
                ("X-Docker-Token", "true"),
            ],
            Sized(&body),
        )?
        .expect(200, "index PUT")?;
    for header in ["x-docker-endpoints", "x-docker-token"] {
        if r.header(header).is_none() {
            return Err(Refused {
                step: "index PUT".into(),
                status: 200,
                body: format!("{header} missing"),
            });
        }
    }
    for i in 0..img.ids.len() {
        let id = &img.ids[i];
        let probe = c.step(
            "json probe",
            "GET",
            &format!("/v1/images/{id}/json"),
            &[],
            None,
        )?;
        if probe.status == 200 {
            continue; // already there
        }
        match v1_put_image(c, id, &img.jsons[i], &img.layers[i]) {
            Err(e) if e.status == 409 && e.step == "json PUT" && e.already_exists() => continue,
            r => r?,
        }
    }
    let top = img.ids.last().unwrap();
    c.step(
        "tag PUT",
        "PUT",
        &format!("/v1/repositories/{repo}/tags/{tag}"),
        &[("Content-Type", "application/json")],
        Sized(format!("\"{top}\"").as_bytes()),
    )?
    .expect(200, "tag PUT")?;
    c.step(
        "images PUT",
        "PUT",
        &format!("/v1/repositories/{repo}/images"),
        &[("X-Docker-Token", "true")],
        Sized(&body),
    )?
    .expect(204, "images PUT")?;
    Ok(())
}

/// Uploads one V1 image: json, layer (chunked), payload checksum; the first
/// answer other than 200 ends it.
pub fn v1_put_image(c: &mut impl Http, id: &str, json: &[u8], layer: &[u8]) -> Result<(), Refused> {
    c.step(
        "json PUT",
        "PUT",
        &format!("/v1/images/{id}/json"),
        &[("Content-Type", "application/json")],
        ReqBody::Sized(json),
    )?
    .expect(200, "json PUT")?;
    c.step(
        "layer PUT",
        "PUT",
        &format!("/v1/images/{id}/layer"),
        &[("Content-Type", "application/octet-stream")],
        ReqBody::Chunked(layer, 32 * 1024),
    )?
    .expect(200, "layer PUT")?;
    let sum = payload_checksum(json, layer);
    c.step(
        "checksum PUT",
        "PUT",
        &format!("/v1/images/{id}/checksum"),
        &[
            ("X-Docker-Checksum-Payload", &sum),
            ("X-Docker-Checksum", "tarsum+sha256:0"),
        ],
        ReqBody::None,
    )?
    .expect(200, "checksum PUT")?;
    Ok(())
}

/// `sha256(json + "\n" + layer)` as `sha256:<hex>`: a V1 image's payload checksum.
pub fn payload_checksum(json: &[u8], layer: &[u8]) -> String {
    let mut data = json.to_vec();
    data.push(b'\n');
    data.extend_from_slice(layer);
    digest(&data)
}

/// `sha256:<hex>` of bytes: a blob's digest.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// Runs the Docker 1.x pull sequence (`v1-protocol.md` §7.2) and checks that
/// json and layers come back byte-identical, including a ranged layer GET.
pub fn v1_pull_and_verify(c: &mut impl Http, repo: &str, tag: &str, img: &V1Image) {
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

// ---- the V2 image fixture and push ------------------------------------------------

/// An OCI image: uncompressed layers, a config and the manifest naming them;
/// the one V2 image fixture of the suite.
#[derive(Clone)]
pub struct V2Image {
    /// The layer blobs, in order.
    pub layers: Vec<Vec<u8>>,
    /// The config blob.
    pub config: Vec<u8>,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub digest: String,
}

impl V2Image {
    /// `layers` with a minimal config (diff_ids, one history entry a layer).
    pub fn new(layers: Vec<Vec<u8>>) -> V2Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layers.iter().map(|_| serde_json::json!({"created": "2026-01-01T00:00:00Z", "created_by": "test"})).collect::<Vec<_>>(),
        });
        Self::with_config(layers, &config)
    }

    /// `layers` with the given config.
    pub fn with_config(layers: Vec<Vec<u8>>, config: &serde_json::Value) -> V2Image {
        let config = serde_json::to_vec(config).unwrap();
        let desc = |mt: &str, b: &[u8]| serde_json::json!({"mediaType": mt, "digest": digest(b), "size": b.len()});
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
        }))
        .unwrap();
        V2Image {
            digest: digest(&manifest),
            layers,
            config,
            manifest,
        }
    }

    /// Every blob: the config, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Vec<u8>> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// Pushes an OCI image of `layers` (uncompressed, a minimal config) with the
/// V2 API: each blob by POST + PATCH + PUT `?digest=`, then the manifest to
/// `tag`. Returns the manifest digest. Panics on any unexpected answer.
pub fn v2_push(c: &mut impl Http, repo: &str, tag: &str, layers: &[Vec<u8>]) -> String {
    let img = V2Image::new(layers.to_vec());
    try_v2_push(c, repo, tag, &img).unwrap_or_else(|e| panic!("V2 push of {repo}:{tag}: {e}"));
    img.digest
}

/// [`v2_push`] of a prepared image; the first unexpected answer is a [`Refused`].
pub fn try_v2_push(c: &mut impl Http, repo: &str, tag: &str, img: &V2Image) -> Result<(), Refused> {
    for blob in img.blobs() {
        try_v2_push_blob(c, repo, blob)?;
    }
    try_v2_put_manifest(c, repo, tag, img)
}

/// Uploads one blob in a session (POST, one chunked PATCH answering its
/// `Range`, closing PUT answering its digest); returns the digest.
pub fn try_v2_push_blob(c: &mut impl Http, repo: &str, blob: &[u8]) -> Result<String, Refused> {
    let d = digest(blob);
    let odd = |step: &str, what: String| Refused {
        step: step.to_string(),
        status: 0,
        body: what,
    };
    let r = c
        .step(
            "upload POST",
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            ReqBody::None,
        )?
        .expect(202, "upload POST")?;
    let r = v2_answer(r, "upload POST")?;
    let loc = r
        .header("location")
        .ok_or_else(|| odd("upload POST", "no Location".into()))?
        .to_string();
    let r = c
        .step(
            "upload PATCH",
            "PATCH",
            &loc,
            &[("Content-Type", "application/octet-stream")],
            ReqBody::Chunked(blob, 64 * 1024),
        )?
        .expect(202, "upload PATCH")?;
    let r = v2_answer(r, "upload PATCH")?;
    if !blob.is_empty() && r.header("range") != Some(format!("0-{}", blob.len() - 1).as_str()) {
        return Err(odd(
            "upload PATCH",
            format!("Range {:?}", r.header("range")),
        ));
    }
    let loc = r
        .header("location")
        .ok_or_else(|| odd("upload PATCH", "no Location".into()))?
        .to_string();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .step(
            "upload PUT",
            "PUT",
            &format!("{loc}{sep}digest={d}"),
            &[],
            ReqBody::None,
        )?
        .expect(201, "upload PUT")?;
    let r = v2_answer(r, "upload PUT")?;
    if r.header("docker-content-digest") != Some(d.as_str()) {
        return Err(odd(
            "upload PUT",
            format!(
                "Docker-Content-Digest {:?}",
                r.header("docker-content-digest")
            ),
        ));
    }
    Ok(d)
}

/// Every V2 answer names the API version (`Docker-Distribution-API-Version:
/// registry/2.0`); `Ok` when this one does.
fn v2_answer(r: HttpResponse, step: &str) -> Result<HttpResponse, Refused> {
    if r.header("docker-distribution-api-version") == Some("registry/2.0") {
        Ok(r)
    } else {
        Err(Refused {
            step: step.to_string(),
            status: r.status,
            body: "no Docker-Distribution-API-Version: registry/2.0".into(),
        })
    }
}

/// PUTs the manifest of `img` to `repo:tag` and checks the digest answered.
pub fn try_v2_put_manifest(
    c: &mut impl Http,
    repo: &str,
    tag: &str,
    img: &V2Image,
) -> Result<(), Refused> {
    let r = c
        .step(
            "manifest PUT",
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            ReqBody::Sized(&img.manifest),
        )?
        .expect(201, "manifest PUT")?;
    let r = v2_answer(r, "manifest PUT")?;
    if r.header("docker-content-digest") != Some(img.digest.as_str()) {
        return Err(Refused {
            step: "manifest PUT".into(),
            status: 201,
            body: format!(
                "Docker-Content-Digest {:?}",
                r.header("docker-content-digest")
            ),
        });
    }
    Ok(())
}

// ---- OCI image layouts on disk (what skopeo and berth push from) -----------------

/// A deterministic tar (GNU `tar`, sorted, mtime 0, root-owned) of `files`,
/// staged under `dir/<name>-src`.
pub fn make_tar(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    for (f, data) in files {
        std::fs::write(src.join(f), data).unwrap();
    }
    run_ok(
        Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
            .arg(&src)
            .args(["-cf", "-", "."]),
    )
    .stdout
}

/// `gzip -n` of `data` (staged in `dir`): the bytes Docker tooling would push.
pub fn gzip(dir: &Path, data: &[u8]) -> Vec<u8> {
    let p = dir.join("gz-input");
    std::fs::write(&p, data).unwrap();
    run_ok(Command::new("gzip").args(["-n", "-c"]).arg(&p)).stdout
}

/// Writes an OCI image layout at `dir` with one image tagged `tag`: one gzip
/// layer per tar in `tars`, a config running `/bin/true` with one history
/// entry per layer and, with `cmd_step`, a trailing empty-layer `CMD` step.
/// Returns the manifest digest and the gzip layer blobs.
pub fn write_oci_layout(
    dir: &Path,
    tag: &str,
    tars: &[Vec<u8>],
    cmd_step: bool,
) -> (String, Vec<Vec<u8>>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        std::fs::write(blobs.join(sha256_hex(data)), data).unwrap();
        digest(data)
    };
    let gzs: Vec<Vec<u8>> = tars.iter().map(|t| gzip(dir, t)).collect();
    let mut history: Vec<serde_json::Value> = (0..tars.len())
        .map(|i| serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("ADD layer{i} /")}))
        .collect();
    if cmd_step {
        history.push(serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": "CMD [\"/bin/true\"]", "empty_layer": true}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": tars.iter().map(|t| digest(t)).collect::<Vec<_>>()},
        "history": history,
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len()},
        "layers": gzs.iter().map(|gz| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": gz.len()})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (manifest_digest, gzs)
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

/// Named users with fresh keys, a store and a state directory in one temp
/// dir: the one keyed fixture the SSH tests build their worlds from (an
/// `authorized_keys` file, an access file, known_hosts files).
pub struct Keyring {
    /// Owns every file below.
    pub dir: tempfile::TempDir,
    /// The store (not created).
    pub root: PathBuf,
    /// Keys, the access file, known_hosts files, the host key.
    pub state: PathBuf,
    keys: Vec<(String, ClientKey)>,
}

impl Keyring {
    /// A key per name, or `None` (a loud skip outside CI) without OpenSSH.
    pub fn new(names: &[&str]) -> Option<Keyring> {
        if !require_tool("ssh", "openssh-client") || !require_tool("ssh-keygen", "openssh-client") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let keys = names
            .iter()
            .map(|n| (n.to_string(), ClientKey::generate(&state, n)))
            .collect();
        Some(Keyring {
            dir,
            root,
            state,
            keys,
        })
    }

    /// The key of `name`; panics for a name it has none for.
    pub fn key(&self, name: &str) -> &ClientKey {
        self.keys
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k)
            .unwrap_or_else(|| panic!("no key for {name}"))
    }

    /// The private key file of `who`; `None` for `"anonymous"`.
    pub fn identity(&self, who: &str) -> Option<&Path> {
        (who != "anonymous").then(|| self.key(who).private.as_path())
    }

    /// `state/authorized_keys` holding the keys of `names`.
    pub fn authorized_keys(&self, names: &[&str]) -> PathBuf {
        let path = self.state.join("authorized_keys");
        let keys: Vec<&ClientKey> = names.iter().map(|n| self.key(n)).collect();
        ClientKey::authorized_keys(&path, &keys);
        path
    }

    /// `state/access.toml`: a `[users]` table of `names` and their keys,
    /// then `rules` (groups, `[[rule]]`s) as given.
    pub fn access_file(&self, names: &[&str], rules: &str) -> PathBuf {
        let path = self.state.join("access.toml");
        let mut text = String::from("[users]\n");
        for n in names {
            text.push_str(&format!("{n} = [\"{}\"]\n", self.key(n).public_line));
        }
        text.push_str(rules);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A known_hosts file trusting `server`.
    pub fn known_hosts(&self, server: &SshServer) -> PathBuf {
        let known = self.state.join(format!("known_hosts-{}", server.port()));
        std::fs::write(&known, format!("{}\n", server.known_hosts_line())).unwrap();
        known
    }
}

/// The tenants of one registry, the world of the isolation tests (issue 14):
/// `alice` owns `private/` and may write `public/`; `carol` may read
/// `private/`; `bob` owns `bob/`; `mallory` owns `evil/`; `public/` is
/// readable by `@anonymous` and `@all`, `team/` by `@all`. A [`Keyring`]
/// (through `Deref`) with its access file.
pub struct Tenants {
    /// Keys, store and state.
    pub keys: Keyring,
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

/// The access rules of [`Tenants`].
const TENANT_RULES: &str = r#"
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
"#;

impl std::ops::Deref for Tenants {
    type Target = Keyring;
    fn deref(&self) -> &Keyring {
        &self.keys
    }
}

impl Tenants {
    /// Keys and access file, or `None` (a loud skip outside CI) without
    /// OpenSSH.
    pub fn new() -> Option<Tenants> {
        let names = ["alice", "bob", "carol", "mallory"];
        let keys = Keyring::new(&names)?;
        let access = keys.access_file(&names, TENANT_RULES);
        let [alice, bob, carol, mallory] = names.map(|n| keys.key(n).clone());
        Some(Tenants {
            keys,
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
        (who != "anonymous").then(|| self.keys.key(who))
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
