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
pub fn spawn_until_line(mut cmd: Command, marker: &str, name: &str) -> (Proc, String) {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
        let mut cmd = Command::new(bin("berth-server"));
        cmd.args([
            "http",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "tester",
            "--root",
        ])
        .arg(root);
        let (proc, line) = spawn_until_line(cmd, "http on", "berth-server http");
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
