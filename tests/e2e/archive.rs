//! `berth push` / `berth pull` of `docker save` archives (issue #5) against
//! real peers: the Docker engine on this machine (`docker build`, `docker
//! save`, `docker load`), skopeo's `docker-archive:` and `oci-archive:`
//! transports, a mount-point registry and `berth-server serve` over SSH.
//!
//! What is shown: loaded image id and `RootFS.Layers` equal the original's;
//! skopeo reads pulled archives with the same layer digests; a re-push
//! sends no layer bytes (the client's `done` event and the store's blob
//! files untouched); truncated, corrupt and path-escaping archives are
//! refused and the store is unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use berth_tests::*;
use serde_json::Value;

/// A multi-layer image built `FROM scratch` with random content, removed
/// (with every tag the test gave it) on drop.
struct Image {
    tag: String,
    extra_tags: Vec<String>,
    id: String,
    layers: Vec<String>,
}

impl Image {
    fn build(dir: &Path, name: &str, seed: u64) -> Image {
        let ctx = dir.join(format!("ctx-{seed}"));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("a.bin"), random_bytes(300_000, seed)).unwrap();
        std::fs::write(ctx.join("b.bin"), random_bytes(120_000, seed + 1)).unwrap();
        std::fs::write(ctx.join("c.txt"), format!("seed {seed}\n")).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY a.bin /a.bin\nCOPY b.bin /data/b.bin\nCOPY c.txt /c.txt\nCMD [\"/a.bin\"]\n",
        )
        .unwrap();
        let tag = format!("berth-e2e/{name}-{}:1", std::process::id());
        run_ok(
            Command::new("docker")
                .args(["build", "-q", "-t", &tag])
                .arg(&ctx),
        );
        let (id, layers) = inspect(&tag);
        assert_eq!(layers.len(), 3, "three layers: {layers:?}");
        Image {
            tag,
            extra_tags: Vec::new(),
            id,
            layers,
        }
    }

    fn save(&self, to: &Path) {
        run_ok(
            Command::new("docker")
                .args(["save", "-o"])
                .arg(to)
                .arg(&self.tag),
        );
    }

    /// Removes the image from the engine so that a load must recreate it.
    fn remove(&self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.id])
            .output();
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        for t in self.extra_tags.iter().chain(std::iter::once(&self.tag)) {
            let _ = Command::new("docker").args(["rmi", "-f", t]).output();
        }
        self.remove();
    }
}

/// `docker inspect`: image id and `RootFS.Layers`.
fn inspect(reference: &str) -> (String, Vec<String>) {
    let out = run_ok(Command::new("docker").args(["inspect", reference]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v[0]["Id"].as_str().unwrap().to_string();
    let layers = v[0]["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    (id, layers)
}

fn docker_load(archive: &Path) -> String {
    let out = run_ok(Command::new("docker").args(["load", "-i"]).arg(archive));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `berth SUB [FLAGS] REGISTRY ARGS...`.
fn berth(sub: &str, flags: &[String], registry: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin("berth"));
    c.arg(sub).args(flags).arg(registry).args(args);
    c
}

/// The `--json` events of a run.
fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn done(out: &Output) -> Value {
    events(out)
        .into_iter()
        .find(|e| e["event"] == "done")
        .unwrap_or_else(|| panic!("no done event: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Blob uploads the server committed, from its audit log (server side:
/// one `blob.upload` record per blob received).
fn uploads_received(root: &Path) -> usize {
    let log = std::fs::read_to_string(root.join("_berth/audit.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(r#""op":"blob.upload""#))
        .count()
}

/// The digests of the `manifest` events of a run.
fn manifest_digests(out: &Output) -> Vec<Value> {
    events(out)
        .into_iter()
        .filter(|e| e["event"] == "manifest")
        .map(|e| e["digest"].clone())
        .collect()
}

/// Modification times of the store's larger files (the layer blobs).
fn blob_mtimes(root: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.len() >= 100_000 {
                out.insert(e.path(), m.modified().unwrap());
            }
        }
    }
    out
}

/// The store's blob pool (the snapshot entries under a `blobs` directory);
/// tag records and the audit log legitimately change on a re-push.
fn blobs(root: &Path) -> Vec<(String, String)> {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| p.contains("blobs/"))
        .collect()
}

/// Push the saved archive (file, then stdin), check the re-push sent
/// nothing, pull it (file and stdout) and load it back.
fn round_trip(img: &Image, dir: &Path, registry: &str, flags: &[String], root: &Path, name: &str) {
    let saved = dir.join(format!("{name}-save.tar"));
    img.save(&saved);
    let target = format!("team/{name}:1");

    let out = run_ok(&mut berth(
        "push",
        flags,
        registry,
        &[&target, "--input", saved.to_str().unwrap(), "--json"],
    ));
    let first = done(&out);
    assert!(first["bytes"].as_u64().unwrap() >= 420_000, "{first}");
    let mtimes = blob_mtimes(root);
    assert!(mtimes.len() >= 2, "layer blobs in the store: {mtimes:?}");
    let before = blobs(root);
    let uploads_before = uploads_received(root);
    assert!(
        uploads_before >= 3,
        "the server recorded the first push's uploads"
    );

    // Re-push through a pipe: every blob is found by HEAD, none is sent.
    let bytes = std::fs::read(&saved).unwrap();
    let mut cmd = berth("push", flags, registry, &[&target, "--json"]);
    let out = run_with_input(&mut cmd, &bytes);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = done(&out);
    let repushed = manifest_digests(&out);
    assert_eq!(
        uploads_received(root),
        uploads_before,
        "the server received no blob upload on the re-push"
    );
    assert_eq!(again["bytes"], 0, "a re-push sends no layer bytes: {again}");
    assert_eq!(again["skipped"], again["blobs"], "{again}");
    let skipped: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "blob")
        .collect();
    assert!(
        skipped.iter().all(|e| e["action"] == "skipped"),
        "{skipped:?}"
    );
    assert_eq!(
        blob_mtimes(root),
        mtimes,
        "blob files untouched by the re-push"
    );
    assert_eq!(
        blobs(root),
        before,
        "no blob added or changed by the re-push"
    );

    // Pull to a file, load it into an engine that no longer has the image.
    let pulled = dir.join(format!("{name}-pulled.tar"));
    let out = run_ok(&mut berth(
        "pull",
        flags,
        registry,
        &[&target, "--output", pulled.to_str().unwrap(), "--json"],
    ));
    assert_eq!(done(&out)["event"], "done");
    // The pulled archive (Docker 25+ shape) pushes back as the very same
    // manifest: digests are preserved, and no blob is sent again.
    let copy = format!("team/{name}-copy:1");
    let out = run_ok(&mut berth(
        "push",
        flags,
        registry,
        &[&copy, "--input", pulled.to_str().unwrap(), "--json"],
    ));
    assert_eq!(manifest_digests(&out), repushed, "same manifest digest");
    assert_eq!(done(&out)["bytes"], 0);
    img.remove();
    let loaded = docker_load(&pulled);
    assert!(loaded.contains(&target), "{loaded}");
    let (id, layers) = inspect(&target);
    assert_eq!(id, img.id, "image id survives push and pull");
    assert_eq!(layers, img.layers, "diff_ids survive push and pull");
    let _ = Command::new("docker").args(["rmi", "-f", &target]).output();

    // Pull to stdout, piped into docker load.
    let out = run_ok(&mut berth("pull", flags, registry, &[&target, "--quiet"]));
    let mut load = Command::new("docker");
    load.arg("load");
    let loaded = run_with_input(&mut load, &out.stdout);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let (id, layers) = inspect(&target);
    assert_eq!((id, layers), (img.id.clone(), img.layers.clone()));
    let _ = Command::new("docker").args(["rmi", "-f", &target]).output();
}

#[test]
fn docker_save_round_trips_through_a_mount_point() {
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let img = Image::build(dir.path(), "local", 11);
    round_trip(
        &img,
        dir.path(),
        root.to_str().unwrap(),
        &[],
        &root,
        "local",
    );
}

#[test]
fn docker_save_round_trips_over_ssh() {
    if !require_docker() || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let KeyedServer {
        server,
        key,
        registry,
        flags,
        ..
    } = KeyedServer::start(&root, &dir.path().join("state"), &[]);
    let img = Image::build(dir.path(), "ssh", 21);
    round_trip(&img, dir.path(), &registry, &flags, &root, "ssh");

    // The same registry through OpenSSH (BERTH_SSH_COMMAND) reads it back.
    if require_tool("ssh", "openssh-client") {
        let mut opts = ssh_options(&key.private, server.port());
        if let Some(i) = opts.iter().position(|o| o == "-p") {
            opts.drain(i..i + 2);
        }
        let out = dir.path().join("openssh.tar");
        let mut cmd = berth(
            "pull",
            &[],
            &registry,
            &["team/ssh:1", "-o", out.to_str().unwrap(), "-q"],
        );
        cmd.env("BERTH_SSH_COMMAND", format!("ssh {}", opts.join(" ")));
        run_ok(&mut cmd);
        img.remove();
        docker_load(&out);
        assert_eq!(inspect("team/ssh:1"), (img.id.clone(), img.layers.clone()));
        let _ = Command::new("docker")
            .args(["rmi", "-f", "team/ssh:1"])
            .output();
    }
}

/// `skopeo inspect --raw` of an archive's manifest: its layer digests.
fn skopeo_layers(reference: &str) -> Vec<String> {
    let out = run_ok(Command::new("skopeo").args(["inspect", "--raw", reference]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("{reference}: {v}"))
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn skopeo_archives_push_and_pulled_archives_read_in_skopeo() {
    if !require_docker() || !require_tool("skopeo", "skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let reg = root.to_str().unwrap();
    let img = Image::build(dir.path(), "skopeo", 31);
    let saved = dir.path().join("save.tar");
    img.save(&saved);
    let src = format!("docker-archive:{}", saved.display());

    // skopeo-written docker-archive: (named) and oci-archive: (gzip layers).
    let dock = dir.path().join("sk-docker.tar");
    let oci = dir.path().join("sk-oci.tar");
    run_ok(Command::new("skopeo").args([
        "copy",
        "-q",
        &src,
        &format!("docker-archive:{}:sk/dock:2", dock.display()),
    ]));
    run_ok(Command::new("skopeo").args([
        "copy",
        "-q",
        &src,
        &format!("oci-archive:{}:sk/oci:3", oci.display()),
    ]));
    let oci_layers = skopeo_layers(&format!("oci-archive:{}", oci.display()));

    // No NAME: the names inside the archives are used.
    run_ok(&mut berth(
        "push",
        &[],
        reg,
        &["--input", dock.to_str().unwrap(), "-q"],
    ));
    run_ok(&mut berth(
        "push",
        &[],
        reg,
        &["--input", oci.to_str().unwrap(), "-q"],
    ));

    // skopeo's docker-archive: reader reports layers by diff_id (it
    // decompresses); its oci-archive: reader by the stored blob digests,
    // which berth kept byte for byte (gzip from skopeo's oci-archive:).
    for (name, stored) in [
        ("sk/dock:2", img.layers.clone()),
        ("sk/oci:3", oci_layers.clone()),
    ] {
        let pulled = dir
            .path()
            .join(format!("{}.tar", name.replace(['/', ':'], "-")));
        run_ok(&mut berth(
            "pull",
            &[],
            reg,
            &[name, "-o", pulled.to_str().unwrap(), "-q"],
        ));
        let as_docker = skopeo_layers(&format!("docker-archive:{}", pulled.display()));
        let as_oci = skopeo_layers(&format!("oci-archive:{}", pulled.display()));
        assert_eq!(as_docker, img.layers, "{name} via docker-archive:");
        assert_eq!(as_oci, stored, "{name} via oci-archive:");
        // And skopeo can copy the whole image out of both readings.
        let out = dir
            .path()
            .join(format!("{}-dir", name.replace(['/', ':'], "-")));
        run_ok(
            Command::new("skopeo")
                .args(["copy", "-q", &format!("oci-archive:{}", pulled.display())])
                .arg(format!("dir:{}", out.display())),
        );
    }
    // The docker-archive: image still loads as the original image.
    let pulled = dir.path().join("sk-dock-2.tar");
    img.remove();
    docker_load(&pulled);
    assert_eq!(inspect("sk/dock:2"), (img.id.clone(), img.layers.clone()));
    let _ = Command::new("docker")
        .args(["rmi", "-f", "sk/dock:2"])
        .output();
}

/// A ustar header (written by hand so hostile names can be made).
fn tar_header(name: &str, kind: u8, size: usize, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// `archive` (a tar) with one extra member put in front of it.
fn with_member_first(archive: &[u8], name: &str, kind: u8, data: &[u8], link: &str) -> Vec<u8> {
    let mut out = tar_header(name, kind, data.len(), link).to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(archive);
    out
}

#[test]
fn bad_archives_are_refused_and_publish_nothing() {
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let reg = root.to_str().unwrap();
    let img = Image::build(dir.path(), "bad", 41);
    let saved = dir.path().join("save.tar");
    img.save(&saved);
    let good = std::fs::read(&saved).unwrap();
    // A store with something in it, so "unchanged" means something.
    run_ok(&mut berth(
        "push",
        &[],
        reg,
        &["team/good:1", "--input", saved.to_str().unwrap(), "-q"],
    ));
    let before = snapshot(&root);

    // A byte flipped inside the largest layer (its random payload).
    let needle = &random_bytes(300_000, 41)[1000..1032];
    let pos = good
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut corrupt = good.clone();
    corrupt[pos + 7] ^= 0x55;

    // The corrupt layer, against an empty store: it has to be sent, and
    // the registry's report of what it received refuses it (issue 17: the
    // client no longer hashes or inflates what a berth registry verifies).
    let fresh = dir.path().join("fresh");
    let mut cmd = berth("push", &[], fresh.to_str().unwrap(), &["team/bad:1"]);
    let out = run_with_input(&mut cmd, &corrupt);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "corrupt layer: {err}");
    assert!(err.contains("diff_id"), "corrupt layer: {err}");
    let out = berth("tags", &[], fresh.to_str().unwrap(), &["team/bad"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains('1'),
        "no tag"
    );
    assert!(
        snapshot(&fresh)
            .iter()
            .all(|(p, _)| !p.contains("/_tags/") && !p.starts_with("_berth/manifests/")),
        "corrupt layer: nothing published"
    );

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        (
            "dot-dot member",
            with_member_first(&good, "../escape", b'0', b"x", ""),
            "'..'",
        ),
        (
            "absolute member",
            with_member_first(&good, "/tmp/escape", b'0', b"x", ""),
            "absolute",
        ),
        (
            "symlink out",
            with_member_first(&good, "evil", b'2', b"", "../../../etc/passwd"),
            "outside the archive",
        ),
        (
            "hard link out",
            with_member_first(&good, "evil", b'1', b"", "../etc/passwd"),
            "'..'",
        ),
        (
            "not a tar",
            b"hello, this is not an archive at all".repeat(20),
            "not a readable archive",
        ),
    ];
    for (what, bytes, want) in cases {
        let mut cmd = berth("push", &[], reg, &["team/bad:1"]);
        let out = run_with_input(&mut cmd, &bytes);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(want), "{what}: expected {want:?} in {err}");
        assert_eq!(snapshot(&root), before, "{what}: nothing published");
    }
    let out = berth("tags", &[], reg, &["team/bad"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains('1'),
        "no tag team/bad:1"
    );

    // Against the store that holds every blob already, the archive's copy
    // of the layer is not read: the registry's verified bytes are what the
    // manifest names, so the push publishes the good image itself.
    let pushed = |tag: &str, bytes: &[u8]| {
        let mut cmd = berth("push", &[], reg, &[tag, "--json"]);
        let out = run_with_input(&mut cmd, bytes);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        manifest_digests(&out)
    };
    assert_eq!(
        pushed("team/same:1", &corrupt),
        pushed("team/good:1", &good)
    );

    // A pull of a missing tag leaves no file behind.
    let target = dir.path().join("missing.tar");
    let out = berth(
        "pull",
        &[],
        reg,
        &["team/nope:1", "-o", target.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("missing") || n.starts_with(".berth-pull"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Runs `ssh ARGS...` (argv[2..]) and passes on at most argv[1] bytes of
/// its output, then kills it and exits: the stream breaks mid-answer.
const CUT: &str = "import os,sys,subprocess\nn=int(sys.argv[1])\np=subprocess.Popen([\"ssh\"]+sys.argv[2:],stdout=subprocess.PIPE)\nwhile n>0:\n    b=os.read(p.stdout.fileno(),min(65536,n))\n    if not b: break\n    os.write(1,b); n-=len(b)\np.kill()";

#[test]
fn an_interrupted_pull_resumes_with_range() {
    if !require_docker()
        || !require_tool("ssh", "openssh-client")
        || !require_tool("python3", "python3")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let KeyedServer { server, key, .. } = KeyedServer::start(&root, &dir.path().join("state"), &[]);
    let img = Image::build(dir.path(), "resume", 51);
    let saved = dir.path().join("save.tar");
    img.save(&saved);
    run_ok(&mut berth(
        "push",
        &[],
        root.to_str().unwrap(),
        &["team/resume:1", "--input", saved.to_str().unwrap(), "-q"],
    ));

    // The first ssh process dies after 200 kB of answers (inside the first
    // layer); later ones are whole. The pull must resume where it stopped.
    let mark = dir.path().join("cut-once");
    let script = dir.path().join("flaky-ssh.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif mkdir '{}' 2>/dev/null; then\n  exec python3 -c '{CUT}' 200000 \"$@\"\nelse\n  exec ssh \"$@\"\nfi\n",
            mark.display()
        ),
    )
    .unwrap();
    let mut opts = ssh_options(&key.private, server.port());
    if let Some(i) = opts.iter().position(|o| o == "-p") {
        opts.drain(i..i + 2);
    }
    let registry = format!("ssh://root@127.0.0.1:{}", server.port());
    let out_file = dir.path().join("resumed.tar");
    let mut cmd = berth(
        "pull",
        &[],
        &registry,
        &["team/resume:1", "-o", out_file.to_str().unwrap(), "--json"],
    );
    cmd.env(
        "BERTH_SSH_COMMAND",
        format!("sh {} {}", script.display(), opts.join(" ")),
    );
    let out = run_ok(&mut cmd);
    let resumed: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "resume")
        .collect();
    assert!(mark.exists(), "the flaky ssh ran");
    assert!(
        !resumed.is_empty(),
        "a resume event: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(resumed[0]["offset"].as_u64().unwrap() > 0, "{resumed:?}");
    // Every byte verified: the archive loads as the original image.
    img.remove();
    docker_load(&out_file);
    assert_eq!(
        inspect("team/resume:1"),
        (img.id.clone(), img.layers.clone())
    );
    let _ = Command::new("docker")
        .args(["rmi", "-f", "team/resume:1"])
        .output();
}

/// A tar of `(name, bytes)` regular files, written by hand.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        out.extend_from_slice(&tar_header(name, b'0', data.len(), ""));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn pre_1_10_archives_push_as_the_image_docker_load_makes() {
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let reg = root.to_str().unwrap();
    // Two V1 images (root and child) as Docker 1.9 saved them.
    let name = format!("berth-e2e/legacy-{}", std::process::id());
    let (a, b) = (sha256_hex(b"legacy root"), sha256_hex(b"legacy child"));
    let la = tar_of(&[("hello.bin", &random_bytes(50_000, 61))]);
    let lb = tar_of(&[("etc/child.txt", b"child layer\n")]);
    let ja = serde_json::json!({
        "id": a, "created": "2015-11-03T00:00:00Z", "docker_version": "1.9.1",
        "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) ADD file:x in /"]},
        "architecture": "amd64", "os": "linux", "Size": 50_000,
    });
    let jb = serde_json::json!({
        "id": b, "parent": a, "created": "2015-11-03T00:00:01Z", "docker_version": "1.9.1",
        "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"/hello.bin\"]"]},
        "config": {"Cmd": ["/hello.bin"]},
        "architecture": "amd64", "os": "linux", "Size": 0,
    });
    let (ja, jb) = (ja.to_string(), jb.to_string());
    let repos = format!(r#"{{"{name}":{{"v1":"{b}"}}}}"#);
    let archive = tar_of(&[
        (&format!("{a}/VERSION"), b"1.0"),
        (&format!("{a}/json"), ja.as_bytes()),
        (&format!("{a}/layer.tar"), &la),
        (&format!("{b}/VERSION"), b"1.0"),
        (&format!("{b}/json"), jb.as_bytes()),
        (&format!("{b}/layer.tar"), &lb),
        ("repositories", repos.as_bytes()),
    ]);
    let path = dir.path().join("legacy.tar");
    std::fs::write(&path, &archive).unwrap();
    let reference = format!("{name}:v1");

    // What Docker itself makes of it.
    docker_load(&path);
    let (id, layers) = inspect(&reference);
    let _ = Command::new("docker").args(["rmi", "-f", &id]).output();

    // berth converts it the same way: same image id after push and pull.
    run_ok(&mut berth(
        "push",
        &[],
        reg,
        &["--input", path.to_str().unwrap(), "-q"],
    ));
    let pulled = dir.path().join("pulled.tar");
    run_ok(&mut berth(
        "pull",
        &[],
        reg,
        &[&reference, "-o", pulled.to_str().unwrap(), "-q"],
    ));
    docker_load(&pulled);
    assert_eq!(inspect(&reference), (id.clone(), layers));
    let _ = Command::new("docker").args(["rmi", "-f", &id]).output();
}

#[test]
fn multi_image_and_compressed_archives_push_every_tag() {
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let reg = root.to_str().unwrap();
    let mut one = Image::build(dir.path(), "multi-a", 71);
    let two = Image::build(dir.path(), "multi-b", 72);
    let extra = one.tag.replace(":1", ":extra");
    run_ok(Command::new("docker").args(["tag", &one.tag, &extra]));
    one.extra_tags.push(extra.clone());
    let saved = dir.path().join("multi.tar");
    run_ok(
        Command::new("docker")
            .args(["save", "-o"])
            .arg(&saved)
            .args([&one.tag, &extra, &two.tag]),
    );
    // gzip'd outer tar, from a pipe, no NAME: every tag in the archive.
    let gz = run_ok(Command::new("gzip").arg("-c").arg(&saved)).stdout;
    let mut cmd = berth("push", &[], reg, &["--json"]);
    let out = run_with_input(&mut cmd, &gz);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: Vec<String> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "manifest")
        .map(|e| e["reference"].as_str().unwrap().to_string())
        .collect();
    let mut want = vec![one.tag.clone(), extra.clone(), two.tag.clone()];
    want.sort();
    let mut got = pushed.clone();
    got.sort();
    assert_eq!(got, want);
    // Naming one of them pushes just that one, under a new name.
    let out = run_ok(&mut berth(
        "push",
        &[],
        reg,
        &[&two.tag, "--input", saved.to_str().unwrap(), "--json"],
    ));
    assert_eq!(done(&out)["bytes"], 0);
    let out = berth(
        "push",
        &[],
        reg,
        &["other/name:1", "--input", saved.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("several images"));
    // Each pulls back as its own image.
    for (tag, img) in [(&extra, &one), (&two.tag, &two)] {
        let p = dir.path().join("p.tar");
        run_ok(&mut berth(
            "pull",
            &[],
            reg,
            &[tag, "-o", p.to_str().unwrap(), "-q"],
        ));
        img.remove();
        docker_load(&p);
        assert_eq!(inspect(tag), (img.id.clone(), img.layers.clone()));
    }
}

/// Writes two OCI archives with gzip layers: `good.tar` (layers A, B) and
/// `bad.tar` (layers C, B, whose config claims C inflates to something
/// else; C's blob digest is right, so only inflating it can tell).
pub(crate) const OCI_PAIR: &str = r#"
import gzip, hashlib, io, json, os, random, sys, tarfile
out = sys.argv[1]
def layer(seed, size):
    b = io.BytesIO()
    data = random.Random(seed).randbytes(size)
    with tarfile.open(fileobj=b, mode="w") as t:
        i = tarfile.TarInfo("data/%d.bin" % seed); i.size = len(data); i.mtime = 0
        t.addfile(i, io.BytesIO(data))
    return b.getvalue()
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
def archive(path, layers, diff_ids):
    blobs = {}
    def put(b):
        blobs[sha(b)] = b
        return {"digest": sha(b), "size": len(b)}
    descs = [dict(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", **put(l)) for l in layers]
    cfg = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "e2e"} for _ in layers]}).encode())
    man = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **cfg), "layers": descs}).encode())
    index = json.dumps({"schemaVersion": 2, "manifests": [dict(
        mediaType="application/vnd.oci.image.manifest.v1+json", **man)]}).encode()
    with tarfile.open(path, mode="w") as t:
        for name, body in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)] + \
                [("blobs/sha256/" + d[7:], b) for d, b in blobs.items()]:
            i = tarfile.TarInfo(name); i.size = len(body)
            t.addfile(i, io.BytesIO(body))
a, b, c = layer(1, 3 << 20), layer(2, 2 << 20), layer(3, 4 << 20)
ga, gb, gc = (gzip.compress(x, 1, mtime=0) for x in (a, b, c))
archive(os.path.join(out, "good.tar"), [ga, gb], [sha(a), sha(b)])
archive(os.path.join(out, "bad.tar"), [gc, gb], [sha(a), sha(b)])
archive(os.path.join(out, "liar.tar"), [ga, gb], [sha(b), sha(a)])
print(sha(gc))
"#;

#[test]
fn a_layer_failing_its_diff_id_during_an_ssh_upload_leaves_the_store_unchanged() {
    if !require_tool("python3", "python3") || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    // Bound whole: the server lives until the end of the test.
    let keyed = KeyedServer::start(&root, &dir.path().join("state"), &[]);
    let (registry, flags) = (keyed.registry.clone(), keyed.flags.clone());
    let out = run_ok(
        Command::new("python3")
            .args(["-c", OCI_PAIR])
            .arg(dir.path()),
    );
    let bad_layer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (good, bad) = (dir.path().join("good.tar"), dir.path().join("bad.tar"));
    run_ok(&mut berth(
        "push",
        &flags,
        &registry,
        &["team/good:1", "--input", good.to_str().unwrap(), "-q"],
    ));
    let before = snapshot(&root);

    // Layer C is new to the registry, so it is sent into an upload session
    // (with the unchanged config and layer B, which are present) before its
    // inflated bytes are known not to match.
    let out = berth(
        "push",
        &flags,
        &registry,
        &["team/bad:1", "--input", bad.to_str().unwrap(), "--json"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("blobs/sha256/{}", &bad_layer[7..]))
            && err.contains("does not match the image's diff_id"),
        "{err}"
    );
    assert!(
        events(&out).iter().all(|e| e["event"] != "manifest"),
        "no manifest pushed"
    );
    // The session was cancelled: no blob, link, tag or session data left.
    assert_eq!(snapshot(&root), before, "nothing published");
    let out = berth("tags", &flags, &registry, &["team/bad"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains('1'),
        "no tag team/bad:1"
    );
}
