//! Issue 15: integrity of one store shared by several `berth-server serve`
//! front ends, driven by real `berth push` / `berth pull` processes.
//!
//! The scenario runner here takes the store *per front end* (one root path
//! per server), so the same rounds run on a local directory (every server on
//! the same path, the tests below) and on a GlusterFS volume mounted several
//! times (`gluster.rs`, one mount per server, as separate hosts would).
//! Every round ends with `berth-server fsck` clean and every successful push
//! pulled back through every server, each layer byte-identical to the
//! archive's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::*;

/// Images per set: pushes cycle through them.
pub const IMAGES: usize = 4;

/// One generated `docker save` archive and the sha256 of each layer tar, in
/// manifest order.
pub struct Archive {
    /// The archive file.
    pub path: PathBuf,
    /// sha256 hex of each layer member.
    pub layers: Vec<String>,
}

/// Writes `count` archives sharing layers: every image has the same base
/// layer (`mib` MiB), pairs share a middle layer, each has a layer of its
/// own (sizes in MiB so uploads overlap in time). `seed` varies every byte.
pub fn make_archives(dir: &Path, seed: u64, mib: usize, count: usize) -> Vec<Archive> {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"
import hashlib, io, json, random, sys, tarfile
out_dir, seed, mib, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def layer(tag, size):
    rnd = random.Random(f"{seed}-{tag}")
    data = rnd.randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo(f"{tag}.bin"); info.size = len(data); info.mtime = 0
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()
base = layer("base", mib << 20)
for i in range(n):
    layers = [base, layer(f"mid{i // 2}", (mib << 20) // 2), layer(f"own{i}", (mib << 20) // 3 + i)]
    diffs = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diffs},
                         "history": [{"created_by": f"sharedfs {seed} {i}"}]}).encode()
    ch = hashlib.sha256(config).hexdigest()
    names = [f"l{j}/layer.tar" for j in range(len(layers))]
    manifest = json.dumps([{"Config": ch + ".json", "RepoTags": [f"team/app{i}:src"], "Layers": names}]).encode()
    path = f"{out_dir}/image{i}.tar"
    with tarfile.open(path, mode="w") as t:
        for name, body in [(ch + ".json", config)] + list(zip(names, layers)) + [("manifest.json", manifest)]:
            info = tarfile.TarInfo(name); info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    print(path, " ".join(d[7:] for d in diffs))
"#;
    let o = run_ok(
        Command::new("python3")
            .args(["-c", script])
            .arg(dir)
            .arg(seed.to_string())
            .arg(mib.to_string())
            .arg(count.to_string()),
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            Archive {
                path: PathBuf::from(w.next().unwrap()),
                layers: w.map(str::to_string).collect(),
            }
        })
        .collect()
}

/// sha256 hex of each layer of a `docker load` archive, in manifest order.
pub fn archive_layers(archive: &Path) -> Vec<String> {
    let script = r#"
import hashlib, json, sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    m = json.load(t.extractfile("manifest.json"))[0]
    for name in m["Layers"]:
        print(hashlib.sha256(t.extractfile(name).read()).hexdigest())
"#;
    let o = run_ok(Command::new("python3").args(["-c", script]).arg(archive));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Front ends of one store: `serve` processes, one per root path given
/// (the same path for a local directory, one mount point per "host" on a
/// shared filesystem), one host key for all of them (as behind one DNS
/// name), and client keys for `users` users.
pub struct Fleet {
    /// The servers (`None` once killed).
    pub servers: Vec<Option<SshServer>>,
    /// Each server's root.
    pub roots: Vec<PathBuf>,
    /// One key per user.
    pub keys: Vec<ClientKey>,
    /// known_hosts trusting every server.
    pub known: PathBuf,
    authorized: PathBuf,
    state: PathBuf,
}

impl Fleet {
    /// Starts one server per root; keys and host key live under `state`.
    pub fn start(roots: &[PathBuf], state: &Path, users: usize) -> Fleet {
        std::fs::create_dir_all(state).unwrap();
        let keys: Vec<ClientKey> = (0..users.max(1))
            .map(|u| ClientKey::generate(state, &format!("user{u}")))
            .collect();
        let authorized = state.join("authorized_keys");
        ClientKey::authorized_keys(&authorized, &keys.iter().collect::<Vec<_>>());
        let mut fleet = Fleet {
            servers: Vec::new(),
            roots: roots.to_vec(),
            keys,
            known: state.join("known_hosts"),
            authorized,
            state: state.to_path_buf(),
        };
        for i in 0..roots.len() {
            let s = fleet.launch(i);
            fleet.servers.push(Some(s));
        }
        fleet.write_known_hosts();
        fleet
    }

    fn launch(&self, i: usize) -> SshServer {
        SshServer::start(&self.roots[i], &self.authorized, &self.state, &[])
    }

    fn write_known_hosts(&self) {
        let lines: String = self
            .servers
            .iter()
            .flatten()
            .map(|s| format!("{}\n", s.known_hosts_line()))
            .collect();
        std::fs::write(&self.known, lines).unwrap();
    }

    /// SIGKILLs server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.servers[i].take() {
            s.proc.kill();
        }
    }

    /// Starts server `i` again (after [`Fleet::kill`]).
    pub fn restart(&mut self, i: usize) {
        let s = self.launch(i);
        self.servers[i] = Some(s);
        self.write_known_hosts();
    }

    /// `ssh://` address of server `i`.
    pub fn registry(&self, i: usize) -> String {
        let s = self.servers[i].as_ref().expect("server is running");
        format!("ssh://root@127.0.0.1:{}", s.port())
    }

    /// Indexes of the running servers.
    pub fn running(&self) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|i| self.servers[*i].is_some())
            .collect()
    }

    /// `berth SUB` as user `user` (their key) with client state in `home`.
    pub fn berth(&self, sub: &str, user: usize, home: &Path) -> Command {
        let mut cmd = Command::new(bin("berth"));
        cmd.env("HOME", home)
            .env_remove("BERTH_STATE_DIR")
            .env_remove("XDG_STATE_HOME")
            .env_remove("SSH_AUTH_SOCK")
            .args([sub, "--identity"])
            .arg(&self.keys[user % self.keys.len()].private)
            .arg("--known-hosts")
            .arg(&self.known);
        cmd
    }

    /// Starts `berth push` of `archive` to `dest` through server `server`.
    pub fn spawn_push(
        &self,
        server: usize,
        user: usize,
        home: &Path,
        archive: &Path,
        dest: &str,
    ) -> Child {
        self.berth("push", user, home)
            .args(["-q", "--input"])
            .arg(archive)
            .arg(self.registry(server))
            .arg(dest)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning berth push")
    }

    /// `berth shim` as user 0 to server `server`: the process and the
    /// loopback address docker, podman and skopeo talk to.
    pub fn shim(&self, server: usize, home: &Path) -> (Proc, std::net::SocketAddr) {
        let mut cmd = self.berth("shim", 0, home);
        cmd.args(["--listen", "127.0.0.1:0"])
            .arg(self.registry(server));
        let (proc, line) = spawn_until_line(cmd, "berth shim: serving", "berth shim");
        let addr = line
            .split("http://")
            .nth(1)
            .expect("shim address")
            .trim()
            .parse()
            .expect("shim address");
        (proc, addr)
    }

    /// `berth pull` of `dest` through server `server` into `out`.
    pub fn pull(&self, server: usize, home: &Path, dest: &str, out: &Path) -> Output {
        self.berth("pull", 0, home)
            .args(["-q", "--output"])
            .arg(out)
            .arg(self.registry(server))
            .arg(dest)
            .output()
            .expect("running berth pull")
    }
}

/// How pushers share client state: one HOME for all (one user account) or
/// one HOME and key per user.
#[derive(Clone, Copy, Debug)]
pub enum Homes {
    /// Every push runs with the same HOME and key.
    One,
    /// Push `k` runs as user `k % n` with that user's HOME.
    PerUser(usize),
}

/// What a round of pushes produced.
#[derive(Default, Debug)]
pub struct Round {
    /// `(destination, archive index)` of each push that succeeded.
    pub ok: Vec<(String, usize)>,
    /// `(destination, berth's message)` of each push that failed.
    pub failed: Vec<(String, String)>,
    /// Wall time of the round.
    pub elapsed: Duration,
}

/// The HOME of push `k` under `homes`.
pub fn home_of(base: &Path, homes: Homes, k: usize) -> (usize, PathBuf) {
    match homes {
        Homes::One => (0, base.join("home0")),
        Homes::PerUser(n) => (k % n, base.join(format!("home{}", k % n))),
    }
}

/// Starts `pushes` concurrent `berth push` runs (archive `k % IMAGES`,
/// round-robin over the running servers) and waits for them all.
pub fn push_round(
    fleet: &Fleet,
    archives: &[Archive],
    homes_dir: &Path,
    homes: Homes,
    round: usize,
    pushes: usize,
) -> Round {
    let started = Instant::now();
    let running = fleet.running();
    let children: Vec<(String, usize, Child)> = (0..pushes)
        .map(|k| {
            let (user, home) = home_of(homes_dir, homes, k);
            std::fs::create_dir_all(&home).unwrap();
            let image = k % archives.len();
            let dest = format!("team/app{image}:r{round}k{k}");
            let server = running[k % running.len()];
            let child = fleet.spawn_push(server, user, &home, &archives[image].path, &dest);
            (dest, image, child)
        })
        .collect();
    let mut round_out = Round::default();
    for (dest, image, child) in children {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            round_out.ok.push((dest, image));
        } else {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            round_out.failed.push((dest, msg));
        }
    }
    round_out.elapsed = started.elapsed();
    round_out
}

/// Every successful push pulled through every running server, each layer
/// byte-identical to its archive's.
pub fn verify_round(fleet: &Fleet, archives: &[Archive], work: &Path, round: &Round) {
    let home = work.join("pull-home");
    std::fs::create_dir_all(&home).unwrap();
    for (dest, image) in &round.ok {
        for server in fleet.running() {
            let out = work.join(format!("pulled-{server}.tar"));
            let o = fleet.pull(server, &home, dest, &out);
            assert!(
                o.status.success(),
                "pull of {dest} through server {server}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(
                archive_layers(&out),
                archives[*image].layers,
                "{dest} through server {server}: layers differ from the archive"
            );
        }
    }
}

/// Runs rounds of `pushes` concurrent pushes; after each, fsck must be clean
/// and every successful push must pull back intact. Returns the rounds.
pub fn run_rounds(
    fleet: &Fleet,
    archives: &[Archive],
    work: &Path,
    homes: Homes,
    rounds: usize,
    pushes: usize,
) -> Vec<Round> {
    let mut all = Vec::new();
    for r in 0..rounds {
        let round = push_round(fleet, archives, work, homes, r, pushes);
        eprintln!(
            "sharedfs round {r} ({homes:?}): {} ok, {} failed, {:?}",
            round.ok.len(),
            round.failed.len(),
            round.elapsed
        );
        for (dest, msg) in &round.failed {
            eprintln!("  {dest}: {msg}");
        }
        let (code, text) = fsck(&fleet.roots[0], &[]);
        assert_eq!(code, 0, "fsck after round {r}:\n{text}");
        verify_round(fleet, archives, work, &round);
        all.push(round);
    }
    all
}

/// Sums failures over rounds and asserts there were none.
pub fn assert_no_failures(rounds: &[Round]) {
    let failed: Vec<&(String, String)> = rounds.iter().flat_map(|r| &r.failed).collect();
    assert!(
        failed.is_empty(),
        "{} pushes failed: {failed:#?}",
        failed.len()
    );
}

/// Rounds of the concurrency scenarios: 2 in the suite, more for a soak
/// (`BERTH_SHAREDFS_ROUNDS`, set by `bench/soak-sharedfs`).
pub fn rounds() -> usize {
    std::env::var("BERTH_SHAREDFS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn tools_present() -> bool {
    require_tool("python3", "python3") && require_tool("ssh-keygen", "openssh-client")
}

/// The issue's reproduction on a local directory: 16 concurrent `berth
/// push` runs by one user account (one HOME) through two servers on one
/// store, 4 images sharing layers, 2 rounds.
#[test]
fn one_home_pushing_through_two_servers_on_a_local_dir() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let archives = make_archives(dir.path(), 15, 4, IMAGES);
    let fleet = Fleet::start(&[root.clone(), root.clone()], &dir.path().join("keys"), 1);
    let rounds = run_rounds(&fleet, &archives, dir.path(), Homes::One, rounds(), 16);
    assert_no_failures(&rounds);
}

/// The same with four users, each with their own HOME and key.
#[test]
fn several_users_pushing_through_two_servers_on_a_local_dir() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let archives = make_archives(dir.path(), 16, 4, IMAGES);
    let fleet = Fleet::start(&[root.clone(), root.clone()], &dir.path().join("keys"), 4);
    let rounds = run_rounds(
        &fleet,
        &archives,
        dir.path(),
        Homes::PerUser(4),
        rounds(),
        16,
    );
    assert_no_failures(&rounds);
}

/// docker and skopeo push at the same time through `berth shim`s of two
/// different servers on one store (the two images share their base layer),
/// then each image is pulled back with skopeo through the *other* server's
/// shim, every layer byte-identical to its archive's; fsck clean.
pub fn docker_and_skopeo_through_two_shims(roots: &[PathBuf], work: &Path) {
    let fleet = Fleet::start(roots, &work.join("keys"), 1);
    let archives = make_archives(&work.join("images"), 161, 4, 2);
    let home = work.join("shim-home");
    std::fs::create_dir_all(&home).unwrap();
    let shims: Vec<_> = (0..2).map(|i| fleet.shim(i % roots.len(), &home)).collect();
    let docker = |args: &[&str]| -> String {
        String::from_utf8_lossy(&run_ok(Command::new("docker").args(args)).stdout).into_owned()
    };
    let tag = format!("berth-sharedfs-{}:src", std::process::id());
    let loaded = docker(&["load", "-i", &archives[0].path.display().to_string()]);
    assert!(loaded.contains("team/app0:src"), "{loaded}");
    docker(&["tag", "team/app0:src", &tag]);
    let docker_ref = format!("{}/team/docked:1", shims[0].1);
    docker(&["tag", &tag, &docker_ref]);
    let skopeo_ref = format!("docker://{}/team/skopeoed:1", shims[1].1);
    std::thread::scope(|s| {
        let pushing = s.spawn(|| run_ok(Command::new("docker").args(["push", &docker_ref])));
        run_ok(Command::new("skopeo").args([
            "copy",
            "--dest-tls-verify=false",
            &format!("docker-archive:{}", archives[1].path.display()),
            &skopeo_ref,
        ]));
        pushing.join().unwrap();
    });
    for r in ["team/app0:src", tag.as_str(), docker_ref.as_str()] {
        let _ = Command::new("docker").args(["rmi", "-f", r]).output();
    }
    // Each image back through the other server's shim.
    for (name, via, image) in [("docked", 1, 0), ("skopeoed", 0, 1)] {
        let out = work.join(format!("{name}-back.tar"));
        let _ = std::fs::remove_file(&out);
        run_ok(Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/team/{name}:1", shims[via].1),
            &format!("docker-archive:{}", out.display()),
        ]));
        assert_eq!(
            archive_layers(&out),
            archives[image].layers,
            "{name} pulled through the other server: layers differ from the archive"
        );
    }
    let (code, text) = fsck(&roots[0], &[]);
    assert_eq!(code, 0, "fsck after the shim pushes:\n{text}");
}

/// [`docker_and_skopeo_through_two_shims`] on a local directory.
#[test]
fn docker_and_skopeo_through_shims_of_two_servers_on_a_local_dir() {
    if !tools_present() || !require_docker() || !require_tool("skopeo", "skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    docker_and_skopeo_through_two_shims(&[root.clone(), root], dir.path());
}

/// Bytes held by the store's open upload sessions (the largest one).
pub fn largest_session(root: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(root.join("_berth/uploads")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// Server 0 is SIGKILLed in the middle of a large push while pushes through
/// server 1 go on; fsck is clean right after the kill; the killed push,
/// rerun through server 1 with the same HOME, resumes the session (sends
/// less than the layer) and succeeds; server 0 restarted serves a round.
pub fn kill_mid_push_then_resume_elsewhere(roots: &[PathBuf], work: &Path) {
    let big = make_archives(&work.join("big"), 71, 48, 1).remove(0);
    let small = make_archives(&work.join("small"), 72, 2, IMAGES);
    let mut fleet = Fleet::start(roots, &work.join("keys"), 1);
    let victim_home = work.join("victim-home");
    std::fs::create_dir_all(&victim_home).unwrap();
    let mut victim = fleet
        .berth("push", 0, &victim_home)
        .args(["-q", "--input"])
        .arg(&big.path)
        .arg(fleet.registry(0))
        .arg("team/big:1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let others: Vec<(String, usize, Child)> = (0..6)
        .map(|k| {
            let home = work.join(format!("other-home{k}"));
            std::fs::create_dir_all(&home).unwrap();
            let dest = format!("team/app{}:other{k}", k % IMAGES);
            let child = fleet.spawn_push(1, 0, &home, &small[k % IMAGES].path, &dest);
            (dest, k % IMAGES, child)
        })
        .collect();
    let layer = 48u64 << 20;
    let deadline = Instant::now() + Duration::from_secs(300);
    while largest_session(&fleet.roots[0]) < layer / 4 {
        assert!(
            victim.try_wait().unwrap().is_none(),
            "the big push ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "the big push made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    fleet.kill(0);
    let _ = victim.wait();
    let mut round = Round::default();
    for (dest, image, child) in others {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            round.ok.push((dest, image));
        } else {
            round
                .failed
                .push((dest, String::from_utf8_lossy(&out.stderr).into_owned()));
        }
    }
    assert!(
        round.failed.is_empty(),
        "pushes through the other server failed: {:#?}",
        round.failed
    );
    let (code, text) = fsck(&fleet.roots[1], &[]);
    assert_eq!(code, 0, "fsck right after the kill:\n{text}");
    let stored = largest_session(&fleet.roots[1]);

    // The killed push again, same HOME, through the surviving server.
    let out = fleet
        .berth("push", 0, &victim_home)
        .args(["--json", "--input"])
        .arg(&big.path)
        .arg(fleet.registry(1))
        .arg("team/big:1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "resumed push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "done")
        .and_then(|e| e["bytes"].as_u64())
        .expect("a done event with bytes");
    eprintln!("sharedfs kill: {stored} bytes stored before the kill, the resumed push sent {sent}");
    // Every blob of the archive is sent at most once, the stored part of
    // the killed session not again (the archive's tar headers are slack).
    let archive_size = std::fs::metadata(&big.path).unwrap().len();
    assert!(
        stored > 0 && sent + stored <= archive_size,
        "the push did not resume: sent {sent} of {archive_size}, {stored} were stored"
    );
    round.ok.push(("team/big:1".to_string(), usize::MAX));

    fleet.restart(0);
    let rounds = run_rounds(&fleet, &small, work, Homes::One, 1, 8);
    assert_no_failures(&rounds);
    let mut all = vec![big];
    all.extend(small);
    let round = Round {
        ok: round
            .ok
            .into_iter()
            .map(|(d, i)| (d, if i == usize::MAX { 0 } else { i + 1 }))
            .collect(),
        ..Round::default()
    };
    verify_round(&fleet, &all, work, &round);
    let (code, text) = fsck(&fleet.roots[0], &[]);
    assert_eq!(code, 0, "final fsck:\n{text}");
}

/// `berth-server gc` (default grace) runs again and again on the store
/// through one root while a round of pushes goes on through the servers;
/// nothing a push needs is collected.
pub fn gc_while_pushing(roots: &[PathBuf], work: &Path) {
    let archives = make_archives(work, 73, 3, IMAGES);
    let fleet = Fleet::start(roots, &work.join("keys"), 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc_root = roots[roots.len() - 1].clone();
    let gc = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store_tool_ok(&gc_root, &["gc", "--grace", "10m"]);
                runs += 1;
            }
            runs
        })
    };
    let rounds = run_rounds(&fleet, &archives, work, Homes::PerUser(2), 2, 16);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = gc.join().unwrap();
    eprintln!("sharedfs gc: {runs} gc runs during the pushes");
    assert!(runs > 0);
    assert_no_failures(&rounds);
}

/// SIGKILL of a server mid-push on a local directory.
#[test]
fn kill_mid_push_then_resume_through_the_other_server_on_a_local_dir() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    kill_mid_push_then_resume_elsewhere(&[root.clone(), root], dir.path());
}

/// gc while pushing on a local directory.
#[test]
fn gc_while_pushing_on_a_local_dir() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    gc_while_pushing(&[root.clone(), root], dir.path());
}

/// Issue 15: storage that turns briefly unwritable in the middle of a push
/// (here a read-only bind mount, as a GlusterFS volume without quorum does:
/// `EROFS`) is answered 503 + `Retry-After` naming the storage error, not a
/// silent 500; `berth push` waits and succeeds once it is writable again,
/// and the store is clean. Needs root (bind mounts).
#[test]
fn push_rides_out_storage_that_is_briefly_read_only() {
    if !tools_present() || !require_tool("mount", "mount") {
        return;
    }
    if euid() != 0 {
        assert!(!in_ci(), "this test needs root (bind mounts)");
        eprintln!("SKIPPED: not root, cannot bind-mount the store read-only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("store");
    let front = dir.path().join("front");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&front).unwrap();
    let mount = |args: &[&str]| {
        let ok = Command::new("mount").args(args).status().unwrap();
        assert!(ok.success(), "mount {args:?}");
    };
    mount(&["--bind", real.to_str().unwrap(), front.to_str().unwrap()]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(front.clone());
    // The server writes its store once at start: let it, then freeze it.
    let archives = make_archives(&dir.path().join("img"), 91, 1, 1);
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = ClientKey::generate(&keys, "user0");
    let authorized = keys.join("authorized_keys");
    ClientKey::authorized_keys(&authorized, &[&key]);
    let log = dir.path().join("server.log");
    let server = SshServer::start_logged(&front, &authorized, &keys, &[], &log);
    let known = keys.join("known_hosts");
    std::fs::write(&known, format!("{}\n", server.known_hosts_line())).unwrap();
    mount(&["-o", "remount,bind,ro", front.to_str().unwrap()]);

    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut push = Command::new(bin("berth"))
        .env("HOME", &home)
        .env_remove("SSH_AUTH_SOCK")
        .args(["push", "-q", "--identity"])
        .arg(&key.private)
        .arg("--known-hosts")
        .arg(&known)
        .arg("--input")
        .arg(&archives[0].path)
        .arg(format!("ssh://root@127.0.0.1:{}", server.port()))
        .arg("team/ro:1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The event: the server answered a request 503 for the read-only store.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("transient storage error") {
            assert!(
                text.contains("Read-only file system"),
                "the 503 does not name the storage error"
            );
            break;
        }
        assert!(
            push.try_wait().unwrap().is_none(),
            "the push ended before the storage was writable again"
        );
        assert!(
            Instant::now() < deadline,
            "no request reached the read-only store"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    mount(&["-o", "remount,bind,rw", front.to_str().unwrap()]);
    let out = push.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, text) = fsck(&real, &[]);
    assert_eq!(code, 0, "{text}");
}

/// The effective user id (`id -u`).
fn euid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(u32::MAX)
}
