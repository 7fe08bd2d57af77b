//! `berth push` continues an interrupted large layer where it stopped: the
//! upload session lives in the store, the client remembers its location, and
//! the next run — here through *another* server process on the same store —
//! sends only the bytes the registry does not have.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::*;

/// Writes a `docker save` (1.10–24 shape) archive with one layer holding
/// `data`, returning the layer tar's size.
fn write_archive(dir: &Path, data_file: &Path, out: &Path) -> u64 {
    let script = r#"
import hashlib, io, json, sys, tarfile
data_file, out = sys.argv[1], sys.argv[2]
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w") as t:
    t.add(data_file, arcname="big.bin")
layer = layer.getvalue()
diff = "sha256:" + hashlib.sha256(layer).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": [diff]},
                     "history": [{"created_by": "resume test"}]}).encode()
ch = hashlib.sha256(config).hexdigest()
manifest = json.dumps([{"Config": ch + ".json", "RepoTags": ["team/big:1"], "Layers": ["l/layer.tar"]}]).encode()
with tarfile.open(out, mode="w") as t:
    for name, body in [(ch + ".json", config), ("l/layer.tar", layer), ("manifest.json", manifest)]:
        info = tarfile.TarInfo(name)
        info.size = len(body)
        t.addfile(info, io.BytesIO(body))
print(len(layer))
"#;
    let o = run_ok(
        Command::new("python3")
            .current_dir(dir)
            .args(["-c", script])
            .arg(data_file)
            .arg(out),
    );
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// Takes and releases the `fcntl` lock of every open upload session: returns
/// once no server holds one (a hang is cut at 120 s).
fn wait_for_session_locks(root: &Path) {
    for e in std::fs::read_dir(root.join("_berth/uploads"))
        .unwrap()
        .flatten()
    {
        let lock = e.path().join(".lock");
        if !lock.exists() {
            continue;
        }
        let out = Command::new("timeout")
            .args(["120", "python3", "-c"])
            .arg("import fcntl, sys; f = open(sys.argv[1], 'r+'); fcntl.lockf(f, fcntl.LOCK_EX)")
            .arg(&lock)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the session lock {} was not released: {}",
            lock.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn berth_push_resumes_an_interrupted_layer_through_another_server() {
    resumes_through_another_server(&[]);
}

/// The same with `--compress zstd`: the second run compresses the layer
/// again into the same blob (compression is deterministic), so it finds
/// the session the first run left and sends only the rest.
#[test]
fn berth_push_compress_resumes_an_interrupted_layer_through_another_server() {
    resumes_through_another_server(&["--compress", "zstd"]);
}

/// Session entries in the client's state directory (not `--compress`'s
/// `compressed/`, which outlives the push on purpose).
fn sessions(client_state: &Path) -> usize {
    std::fs::read_dir(client_state)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "compressed")
        .count()
}

/// Pushes a 96 MiB layer through server A with `extra` flags, kills the
/// push once 40% is stored, then pushes again through server B (same
/// store): only the rest is sent.
fn resumes_through_another_server(extra: &[&str]) {
    if !require_tool("python3", "python3") || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&state_a).unwrap();
    std::fs::create_dir_all(&state_b).unwrap();
    let key = ClientKey::generate(&state_a, "pusher");
    let authorized = state_a.join("authorized_keys");
    ClientKey::authorized_keys(&authorized, &[&key]);
    let server_a = SshServer::start(&root, &authorized, &state_a, &[]);
    let server_b = SshServer::start(&root, &authorized, &state_b, &[]);
    let known = dir.path().join("known_hosts");
    std::fs::write(
        &known,
        format!(
            "{}\n{}\n",
            server_a.known_hosts_line(),
            server_b.known_hosts_line()
        ),
    )
    .unwrap();

    let data = dir.path().join("big.bin");
    std::fs::write(&data, random_bytes(96 << 20, 77)).unwrap();
    let archive = dir.path().join("big.tar");
    let layer_size = write_archive(dir.path(), &data, &archive);
    std::fs::remove_file(&data).unwrap();
    let client_state = dir.path().join("client-state");
    let push = |port: u16| {
        let mut cmd = Command::new(bin("berth"));
        cmd.env("BERTH_STATE_DIR", &client_state)
            .env_remove("SSH_AUTH_SOCK")
            .args(["push", "--json", "--jobs", "1"])
            .args(extra)
            .arg("--identity")
            .arg(&key.private)
            .arg("--known-hosts")
            .arg(&known)
            .arg("--input")
            .arg(&archive)
            .arg(format!("ssh://root@127.0.0.1:{port}"))
            .arg("team/big:1");
        cmd
    };

    // First run, through server A: killed once ~40% of the layer is stored.
    let mut first = push(server_a.port())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while crate::sharedfs::largest_session(&root) < layer_size * 2 / 5 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first push ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "the first push made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // The event: server A has written what it received and released the
    // session (its `fcntl` lock, taken here through Python's `lockf`).
    wait_for_session_locks(&root);
    let stored = crate::sharedfs::largest_session(&root);
    assert!(
        stored > 0 && stored < layer_size,
        "stored {stored} of {layer_size}"
    );
    assert!(
        sessions(&client_state) > 0,
        "the client remembered no session"
    );

    // Second run, through server B on the same store: only the rest is sent.
    let out = run_ok(&mut push(server_b.port()));
    let done: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "done")
        .expect("a done event");
    let sent = done["bytes"].as_u64().unwrap();
    eprintln!("resume: layer {layer_size} bytes, {stored} stored before the kill, the resumed push sent {sent}");
    let config_slack = 64 * 1024;
    assert!(
        sent <= layer_size - stored + config_slack,
        "resumed push sent {sent} bytes; {} were missing",
        layer_size - stored
    );
    assert_eq!(
        sessions(&client_state),
        0,
        "finished sessions are forgotten"
    );

    // The image is complete and the store is consistent.
    let mut c = CommandConn::spawn({
        let mut cmd = ssh_command(&key.private, server_a.port());
        cmd.args(["-s", "docker-registry"]);
        cmd
    });
    let r = c
        .http
        .request("GET", "/v2/team/big/tags/list", &[], ReqBody::None);
    assert_eq!(r.json()["tags"], serde_json::json!(["1"]));
    let (code, text) = fsck(&root, &[]);
    assert_eq!(code, 0, "fsck: {text}");
}
