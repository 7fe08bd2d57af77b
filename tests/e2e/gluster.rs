//! Issue 15 on a real shared filesystem: a GlusterFS replica-2 volume (two
//! brick directories on this machine) FUSE-mounted once per front end, as
//! separate hosts would mount it, one `berth-server serve` per mount. The
//! scenarios are the ones `sharedfs.rs` runs on a local directory, plus a
//! brick stopped during pushes and healed. Each test creates its own volume
//! (unique name) and tears it down — unmount, stop, delete, bricks removed —
//! even when it fails.
//!
//! Needs `glusterd` (package glusterfs-server; started here when not
//! running), `mount.glusterfs` (glusterfs-client), `/dev/fuse` and root.
//! Gluster traffic stays on this host: bricks are named by this host's
//! name, which must resolve to a loopback address (`127.0.0.1 <hostname>`
//! in /etc/hosts, as on the CI machine); otherwise the tests skip loudly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::*;

use crate::sharedfs::{self, Fleet, Homes, IMAGES};

/// Runs `gluster --mode=script ARGS`.
fn gluster(args: &[&str]) -> Output {
    Command::new("gluster")
        .arg("--mode=script")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running gluster")
}

fn gluster_ok(args: &[&str]) -> String {
    let o = gluster(args);
    assert!(
        o.status.success(),
        "gluster {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether glusterd answers; starts it (it daemonizes) when it does not.
/// Tests run on threads of one process, so the start is serialized here;
/// a glusterd started meanwhile by another process (a second test binary,
/// `bench/soak-sharedfs`) makes ours exit 1 (`glusterd & glusterd` shows
/// it), so what counts is whether glusterd answers afterwards, not how our
/// start exited.
fn ensure_glusterd() {
    static ONE_START_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _starting = ONE_START_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let answers = || gluster(&["peer", "status"]).status.success();
    if answers() {
        return;
    }
    let started = Command::new("glusterd")
        .status()
        .expect("starting glusterd");
    eventually(
        &format!("glusterd to answer (our start exited with {started})"),
        Duration::from_secs(120),
        answers,
    );
}

/// This host's name when it resolves to loopback (brick addresses).
fn loopback_hostname() -> Option<String> {
    let name = String::from_utf8(Command::new("hostname").output().ok()?.stdout).ok()?;
    let name = name.trim().to_string();
    let resolved = std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0)).ok()?;
    let all: Vec<_> = resolved.collect();
    (!all.is_empty() && all.iter().all(|a| a.ip().is_loopback())).then_some(name)
}

/// The tools these tests need; `None` (loud skip, or a failure under CI)
/// when one is missing.
fn gluster_host() -> Option<String> {
    if !require_tool("gluster", "glusterfs-server")
        || !require_tool("mount.glusterfs", "glusterfs-client")
        || !require_tool("python3", "python3")
        || !require_tool("ssh-keygen", "openssh-client")
    {
        return None;
    }
    if !Path::new("/dev/fuse").exists() {
        assert!(
            !in_ci(),
            "/dev/fuse is missing: GlusterFS cannot be mounted"
        );
        eprintln!("SKIPPED: /dev/fuse is missing, GlusterFS cannot be mounted");
        return None;
    }
    let Some(host) = loopback_hostname() else {
        assert!(!in_ci(), "this host's name does not resolve to loopback");
        eprintln!("SKIPPED: this host's name does not resolve to a loopback address");
        return None;
    };
    ensure_glusterd();
    Some(host)
}

/// A replica-2 volume on two local bricks, mounted `mounts` times; torn
/// down on drop.
pub struct Volume {
    /// The volume's name (unique per test run).
    pub name: String,
    dir: PathBuf,
    bricks: Vec<PathBuf>,
    /// The FUSE mount points.
    pub mounts: Vec<PathBuf>,
}

impl Volume {
    /// Creates, configures (`options`: `gluster volume set` pairs), starts
    /// and mounts a volume under `dir`.
    pub fn create(host: &str, dir: &Path, mounts: usize, options: &[(&str, &str)]) -> Volume {
        let name = format!(
            "berth-{}-{:08x}",
            std::process::id(),
            rand_u32(dir.to_string_lossy().as_bytes())
        );
        let bricks: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("brick{i}"))).collect();
        for b in &bricks {
            std::fs::create_dir_all(b).unwrap();
        }
        let mut vol = Volume {
            name: name.clone(),
            dir: dir.to_path_buf(),
            bricks: bricks.clone(),
            mounts: Vec::new(),
        };
        let spec: Vec<String> = bricks
            .iter()
            .map(|b| format!("{host}:{}", b.display()))
            .collect();
        let mut args = vec!["volume", "create", &name, "replica", "2"];
        args.extend(spec.iter().map(String::as_str));
        args.push("force"); // two bricks on one host (and on the root filesystem)
        gluster_ok(&args);
        for (k, v) in options {
            gluster_ok(&["volume", "set", &name, k, v]);
        }
        gluster_ok(&["volume", "start", &name]);
        for i in 0..mounts {
            let m = dir.join(format!("mount{i}"));
            std::fs::create_dir_all(&m).unwrap();
            let o = Command::new("mount")
                .args(["-t", "glusterfs"])
                .arg(format!("{host}:/{name}"))
                .arg(&m)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "mounting {name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            vol.mounts.push(m);
        }
        vol
    }

    /// The store root as each mount (each "host") sees it.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.mounts.iter().map(|m| m.join("store")).collect()
    }

    /// The pid of brick `i`'s server process (`gluster volume status --xml`).
    fn brick_pid(&self, i: usize) -> Option<u32> {
        let path = format!("<path>{}</path>", self.bricks[i].display());
        let status = gluster_ok(&["volume", "status", &self.name, "--xml"]);
        let node = status.split("<node>").find(|n| n.contains(&path))?;
        let pid = node.split("<pid>").nth(1)?.split("</pid>").next()?;
        pid.trim().parse().ok()
    }

    /// SIGKILLs brick `i` (a disk or server going away).
    pub fn stop_brick(&self, i: usize) {
        let pid = self
            .brick_pid(i)
            .expect("brick pid in `gluster volume status`");
        let ok = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Restarts stopped bricks and waits until self-heal has nothing left.
    pub fn heal(&self) {
        gluster_ok(&["volume", "start", &self.name, "force"]);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let _ = gluster(&["volume", "heal", &self.name]);
            let info = gluster(&["volume", "heal", &self.name, "info"]);
            let text = String::from_utf8_lossy(&info.stdout).into_owned();
            let pending: usize = text
                .lines()
                .filter_map(|l| l.strip_prefix("Number of entries:"))
                .filter_map(|n| n.trim().parse::<usize>().ok())
                .sum();
            let bricks_up = text.matches("Status: Connected").count() == 2;
            if info.status.success() && pending == 0 && bricks_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "self-heal did not finish:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let _ = gluster(&["volume", "stop", &self.name, "force"]);
        let _ = gluster(&["volume", "delete", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A small non-cryptographic hash, for unique volume names per directory.
fn rand_u32(seed: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in seed {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// A work directory for a volume, on the local disk, removed by `Volume`.
fn volume_dir(tag: &str) -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let vol = work.path().join(format!("gluster-{tag}"));
    (work, vol)
}

/// 16 concurrent pushes from one HOME, then from four users, through two
/// servers on two mounts of one volume: 2 rounds each, fsck clean, every
/// push pulled back intact through both.
#[test]
fn gluster_concurrent_pushes_through_two_mounts() {
    let Some(host) = gluster_host() else { return };
    let (work, vdir) = volume_dir("concurrent");
    // `BERTH_GLUSTER_OPTIONS=k=v,k=v` (the soak's cache measurements).
    let options = std::env::var("BERTH_GLUSTER_OPTIONS").unwrap_or_default();
    let options: Vec<(&str, &str)> = options
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    eprintln!("gluster volume options: {options:?}");
    let vol = Volume::create(&host, &vdir, 2, &options);
    let archives = sharedfs::make_archives(work.path(), 151, 4, IMAGES);
    let fleet = Fleet::start(&vol.roots(), &work.path().join("keys"), 4);
    let n = sharedfs::rounds();
    let rounds = sharedfs::run_rounds(&fleet, &archives, work.path(), Homes::One, n, 16);
    sharedfs::assert_no_failures(&rounds);
    let archives = sharedfs::make_archives(&work.path().join("users"), 152, 4, IMAGES);
    let rounds = sharedfs::run_rounds(&fleet, &archives, work.path(), Homes::PerUser(4), n, 16);
    sharedfs::assert_no_failures(&rounds);
}

/// A server SIGKILLed mid-push, the push resumed through the other mount.
#[test]
fn gluster_kill_mid_push_then_resume_through_the_other_mount() {
    let Some(host) = gluster_host() else { return };
    let (work, vdir) = volume_dir("kill");
    let vol = Volume::create(&host, &vdir, 2, &[]);
    sharedfs::kill_mid_push_then_resume_elsewhere(&vol.roots(), work.path());
}

/// docker and skopeo at once through shims of servers on two mounts.
#[test]
fn gluster_docker_and_skopeo_through_shims_on_two_mounts() {
    let Some(host) = gluster_host() else { return };
    if !require_docker() || !require_tool("skopeo", "skopeo") {
        return;
    }
    let (work, vdir) = volume_dir("shims");
    let vol = Volume::create(&host, &vdir, 2, &[]);
    sharedfs::docker_and_skopeo_through_two_shims(&vol.roots(), work.path());
}

/// gc on a third mount while pushes go on through two others.
#[test]
fn gluster_gc_on_another_mount_while_pushing() {
    let Some(host) = gluster_host() else { return };
    let (work, vdir) = volume_dir("gc");
    let vol = Volume::create(&host, &vdir, 3, &[]);
    // A server on each mount; gc runs through the last one.
    sharedfs::gc_while_pushing(&vol.roots(), work.path());
}

/// One brick stopped (SIGKILL) while 16 pushes run, restarted and healed:
/// no push fails with a silent 500 (a failure names the storage error), a
/// round after the heal succeeds wholly, fsck is clean and every successful
/// push pulls back intact through both mounts.
#[test]
fn gluster_brick_stopped_during_pushes_then_healed() {
    let Some(host) = gluster_host() else { return };
    let (work, vdir) = volume_dir("brick");
    let vol = Volume::create(&host, &vdir, 2, &[]);
    let archives = sharedfs::make_archives(work.path(), 153, 8, IMAGES);
    let fleet = Fleet::start(&vol.roots(), &work.path().join("keys"), 2);
    let root = vol.roots()[0].clone();
    let round = std::thread::scope(|s| {
        let pushing = s.spawn(|| {
            sharedfs::push_round(&fleet, &archives, work.path(), Homes::PerUser(2), 0, 16)
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        while sharedfs::largest_session(&root) < 1 << 20 && !pushing.is_finished() {
            assert!(Instant::now() < deadline, "the pushes made no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
        vol.stop_brick(1);
        pushing.join().unwrap()
    });
    eprintln!(
        "gluster brick stop: {} ok, {} failed",
        round.ok.len(),
        round.failed.len()
    );
    for (dest, msg) in &round.failed {
        eprintln!("  {dest}: {msg}");
        assert!(
            !msg.contains("internal storage error"),
            "a silent 500 while a brick was down: {dest}: {msg}"
        );
    }
    vol.heal();
    let (code, text) = berth_tests::fsck(&root, &[]);
    assert_eq!(code, 0, "fsck after the heal:\n{text}");
    sharedfs::verify_round(&fleet, &archives, work.path(), &round);
    let rounds = sharedfs::run_rounds(&fleet, &archives, work.path(), Homes::PerUser(2), 1, 16);
    sharedfs::assert_no_failures(&rounds);
}

/// The store's lock (`berth_server::store::atomic::FileLock`) across two
/// mounts, as across two hosts. A waiter on mount B is blocked on the lock
/// file a holder on mount A unlinks before it lets go (gc removing an
/// image's directory); a newcomer on A then creates a new lock file and
/// takes it. B's FUSE client still answers `stat` of the name with the old
/// inode for its entry-timeout, so checking the granted lock by `stat`
/// alone (the fix of the eighth session) granted B a lock on a deleted
/// file while the newcomer held the real one: two holders. The lock B gets
/// must be on the file A's directory lists, which it can only take once
/// the newcomer lets go.
#[test]
fn gluster_a_lock_file_unlinked_on_one_mount_is_not_held_on_the_other() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::MetadataExt;
    let Some(host) = gluster_host() else { return };
    let (_work, vdir) = volume_dir("lock");
    let vol = Volume::create(&host, &vdir, 2, &[]);
    let roots = vol.roots();
    let (on_a, on_b) = (roots[0].join("img/.lock"), roots[1].join("img/.lock"));
    std::fs::create_dir_all(on_a.parent().unwrap()).unwrap();
    std::fs::write(&on_a, b"").unwrap();
    std::fs::metadata(&on_b).expect("mount B sees the lock file");

    // Host A: the holder (locks, and on "go" unlinks and lets go), then the
    // newcomer (a new file under the name, locked until "release").
    let script = r#"
import fcntl, os, sys
path = sys.argv[1]
f = os.open(path, os.O_RDWR)
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
os.unlink(path)
os.close(f)
n = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(n, fcntl.LOCK_EX)
print("newcomer", os.fstat(n).st_ino, flush=True)
sys.stdin.readline()
os.close(n)
"#;
    let mut a = Command::new("python3")
        .args(["-c", script])
        .arg(&on_a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut a_in = a.stdin.take().unwrap();
    let mut a_out = BufReader::new(a.stdout.take().unwrap());
    let mut line = String::new();
    a_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");

    // Host B: the waiter, in a thread whose blocking lock request we can see.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let path_b = on_b.clone();
    let waiter = std::thread::spawn(move || {
        // `/proc/thread-self` links to `<pid>/task/<tid>`.
        let me = std::fs::read_link("/proc/thread-self").unwrap();
        tid_tx
            .send(me.file_name().unwrap().to_string_lossy().into_owned())
            .unwrap();
        let lock = berth_server::store::atomic::FileLock::exclusive(&path_b)?;
        let held = lock.metadata()?.ino();
        drop(lock);
        Ok::<u64, std::io::Error>(held)
    });
    let tid = tid_rx.recv().unwrap();
    // The event: B's lock request sent to its FUSE client and waiting for
    // the answer (`request_wait_answer`), i.e. queued behind A's lock.
    eventually(
        "the waiter on mount B to be blocked on the lock",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan"))
                .is_ok_and(|w| w.trim() == "request_wait_answer")
        },
    );
    writeln!(a_in, "go").unwrap();
    line.clear();
    a_out.read_line(&mut line).unwrap();
    let newcomer: u64 = line
        .trim()
        .strip_prefix("newcomer ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("holder said {line:?}"));
    writeln!(a_in, "release").unwrap();
    let held = waiter.join().unwrap().expect("lock on mount B");
    assert!(a.wait().unwrap().success());
    assert_eq!(
        held, newcomer,
        "B was granted a lock on the deleted lock file, not on the one the name lists"
    );
}

/// A push through mount A finds an old blob present (a writer's HEAD
/// answering 200), which renews it for gc, while gc runs through mount B
/// right after B's client read the renewal marker. A plain `stat` through
/// B answers a file's attributes from before a change through A for up to
/// 1 s on GlusterFS's defaults (md-cache; measured 1.01 s, 2–3 ms with
/// `features.cache-invalidation` and `performance.cache-invalidation` on),
/// so a gc that judged renewals by cached attributes would remove the blob
/// the push was told is present. gc lists the markers' directory on every
/// mark, and a FUSE listing (readdirplus) brings each entry's attributes
/// from the bricks: it sees the renewal. This passed before this test was
/// written; it guards the renewal protocol across two mounts.
#[test]
fn gluster_gc_through_one_mount_sees_a_renewal_through_the_other() {
    let Some(host) = gluster_host() else { return };
    let (_work, vdir) = volume_dir("renewal");
    let vol = Volume::create(&host, &vdir, 2, &[]);
    let roots = vol.roots();
    let a = HttpServer::start(&roots[0]);
    let (found, orphan) = (random_bytes(10_000, 7095), random_bytes(10_000, 7096));
    for b in [&found, &orphan] {
        try_v2_push_blob(&mut Fresh(a.addr), "gluster/renew", b).unwrap();
    }
    let head = || {
        let d = digest(&found);
        let path = format!("/v2/gluster/renew/blobs/{d}");
        let r = fetch(a.addr, "HEAD", &path, &[], b"").unwrap();
        assert_eq!(r.status, 200);
    };
    head(); // the first renewal makes the marker
    let grace = Duration::from_secs(10);
    wait_until_older_than(&files_under(&roots[0].join("_berth")), grace);

    // B's client caches the markers' attributes, as gc's mark passes do.
    let markers = files_under(&roots[1].join("_berth/renewed"));
    assert!(!markers.is_empty());
    for m in &markers {
        std::fs::metadata(m).unwrap();
    }
    head(); // the push's renewal, through A
    let report = store_tool_ok(&roots[1], &["gc", "--grace", "10s"]);
    // Asked through B, whose own removals its caches know of (A's may
    // still answer for a removed file for a second).
    let pool = |blob: &[u8]| {
        let hex = digest(blob).trim_start_matches("sha256:").to_string();
        roots[1].join("_berth/blobs/sha256").join(hex)
    };
    assert!(
        pool(&found).exists(),
        "gc through B removed the blob a push through A was just told is present:\n{report}"
    );
    assert!(!pool(&orphan).exists(), "gc kept the old orphan:\n{report}");
}
