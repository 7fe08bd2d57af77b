//! `berth push --compress zstd|gzip` (issue 17) over SSH to `berth-server
//! serve`: a classic `docker save` archive (plain `layer.tar`s, one layer
//! already gzip) is pushed compressed; the manifest names the compressed
//! blobs with the right media types while the config is the archive's;
//! the blobs really are zstd/gzip of the layers (the server's diff_id
//! check at manifest PUT passed, and the test inflates them again); the
//! image pulls back with berth (and skopeo through the shim); a re-push
//! compresses nothing and sends no layer byte.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use berth_tests::*;
use serde_json::Value;

/// A classic `docker save` archive: `manifest.json`, `<id>.json` and
/// `<n>/layer.tar` members; layers 0 and 1 plain tars (compressible),
/// layer 2 a gzip'd tar. Prints the config digest and the diff_ids. With
/// a second argument, the config lies about layer 0's diff_id.
const DOCKER_SAVE: &str = r#"
import gzip, hashlib, io, json, random, sys, tarfile
out = sys.argv[1]
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
def layer(seed, size):
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghij") for _ in range(8)) for _ in range(500)]
    data = b" ".join(rnd.choice(words) for _ in range(size // 9))
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
        i = tarfile.TarInfo("data/%d.txt" % seed); i.size = len(data); i.mtime = 0
        t.addfile(i, io.BytesIO(data))
    return b.getvalue()
plain = [layer(1, 6 << 20), layer(2, 1 << 20), layer(3, 512 << 10)]
stored = [plain[0], plain[1], gzip.compress(plain[2], 6, mtime=0)]
claimed = [sha(p) for p in plain]
if len(sys.argv) > 2:  # "lie": the config claims another first layer
    claimed[0] = sha(layer(9, 1 << 20))
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": claimed},
    "history": [{"created_by": "e2e"} for _ in plain]}).encode()
members = [("%s.json" % sha(config)[7:], config)]
for n, s in enumerate(stored):
    members.append(("%d/layer.tar" % n, s))
manifest = json.dumps([{"Config": members[0][0], "RepoTags": ["team/z:1"],
    "Layers": ["%d/layer.tar" % n for n in range(len(stored))]}]).encode()
members.append(("manifest.json", manifest))
with tarfile.open(out, mode="w") as t:
    for name, body in members:
        i = tarfile.TarInfo(name); i.size = len(body); i.mtime = 0
        t.addfile(i, io.BytesIO(body))
print(json.dumps({"config": sha(config), "diff_ids": [sha(p) for p in plain],
    "gzip_layer": sha(stored[2]), "plain_sizes": [len(p) for p in plain]}))
"#;

/// The `--json` events of a run.
fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind(out: &Output, kind: &str) -> Vec<Value> {
    events(out)
        .into_iter()
        .filter(|e| e["event"] == kind)
        .collect()
}

/// `berth get ROOT PATH` on the mount point: the bytes the registry serves.
fn get(root: &Path, path: &str, accept: &str) -> Vec<u8> {
    let out = run_ok(
        Command::new(bin("berth"))
            .args(["get", "-H", &format!("Accept: {accept}")])
            .arg(root)
            .arg(path),
    );
    out.stdout
}

fn inflate(bytes: &[u8], codec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match codec {
        "zstd" => {
            assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
            zstd::stream::read::Decoder::new(bytes)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
        }
        _ => {
            assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
            flate2::read::MultiGzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
    }
    out
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

#[test]
fn compressed_pushes_carry_zstd_or_gzip_layers_and_a_re_push_compresses_nothing() {
    if !require_tool("python3", "python3") || !require_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let keyed = KeyedServer::start(&root, &dir.path().join("server"), &[]);
    let (registry, flags) = (keyed.registry.clone(), keyed.flags.clone());
    let archive = dir.path().join("saved.tar");
    let out = run_ok(
        Command::new("python3")
            .args(["-c", DOCKER_SAVE])
            .arg(&archive),
    );
    let facts: Value = serde_json::from_slice(&out.stdout).unwrap();
    let diff_ids: Vec<String> = facts["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    let plain_total: u64 = facts["plain_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    let state = dir.path().join("client-state");
    let push = |codec: &str, repo: &str| -> (Output, f64) {
        let started = Instant::now();
        let mut cmd = Command::new(bin("berth"));
        cmd.arg("push")
            .args(&flags)
            .args(["--compress", codec, "--json", "--input"])
            .arg(&archive)
            .arg(&registry)
            .arg(format!("{repo}:1"))
            .env("BERTH_STATE_DIR", &state);
        let out = run_ok(&mut cmd);
        (out, started.elapsed().as_secs_f64())
    };

    for (codec, layer_type, manifest_type) in [
        (
            "zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (
            "gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
    ] {
        let repo = format!("team/{codec}");
        let (first, _) = push(codec, &repo);
        // The two plain layers were compressed; the gzip one was not.
        let compressed = of_kind(&first, "compress");
        assert_eq!(compressed.len(), 2, "{compressed:?}");
        for e in &compressed {
            assert_eq!(e["action"], "compressed", "{e}");
            assert_eq!(e["algorithm"], codec);
            assert!(diff_ids[..2].contains(&e["layer"].as_str().unwrap().to_string()));
            assert!(
                e["to"].as_u64().unwrap() * 2 < e["from"].as_u64().unwrap(),
                "compressed well: {e}"
            );
        }
        let sent = of_kind(&first, "done")[0]["bytes"].as_u64().unwrap();
        assert!(
            sent < plain_total / 2,
            "{codec}: {sent} bytes sent for {plain_total} of plain layers"
        );

        // The manifest: compressed blobs with the right types, the
        // archive's config untouched.
        let manifest: Value =
            serde_json::from_slice(&get(&root, &format!("/v2/{repo}/manifests/1"), ACCEPT))
                .unwrap();
        assert_eq!(manifest["mediaType"], manifest_type, "{manifest}");
        assert_eq!(manifest["config"]["digest"], facts["config"]);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for (n, l) in layers.iter().enumerate() {
            let digest = l["digest"].as_str().unwrap();
            let blob = get(&root, &format!("/v2/{repo}/blobs/{digest}"), "*/*");
            assert_eq!(blob.len() as u64, l["size"].as_u64().unwrap());
            assert_eq!(digest, format!("sha256:{}", sha256_hex(&blob)));
            if n == 2 {
                // Already gzip in the archive: pushed byte for byte.
                assert_eq!(l["digest"], facts["gzip_layer"], "{l}");
                let t = l["mediaType"].as_str().unwrap();
                assert!(t.ends_with("gzip"), "{t}");
                assert_eq!(sha256_hex(&inflate(&blob, "gzip")), diff_ids[n][7..]);
            } else {
                assert_eq!(l["mediaType"], layer_type, "{l}");
                assert_eq!(sha256_hex(&inflate(&blob, codec)), diff_ids[n][7..]);
            }
        }

        // Pulls back into an archive whose layers match the config.
        let pulled = dir.path().join(format!("pulled-{codec}.tar"));
        let mut pull = Command::new(bin("berth"));
        pull.arg("pull")
            .args(&flags)
            .arg(&registry)
            .arg(format!("{repo}:1"))
            .args(["-q", "-o"])
            .arg(&pulled);
        run_ok(&mut pull);
        assert!(std::fs::metadata(&pulled).unwrap().len() > 0);

        // A re-push: nothing compressed, no layer byte sent.
        let (again, seconds) = push(codec, &repo);
        let held = of_kind(&again, "compress");
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held.iter().all(|e| e["action"] == "held"), "{held:?}");
        assert_eq!(of_kind(&again, "done")[0]["bytes"], 0, "no bytes sent");
        assert_eq!(
            of_kind(&again, "manifest")[0]["digest"],
            of_kind(&first, "manifest")[0]["digest"],
            "the same manifest"
        );
        eprintln!("{codec}: re-push took {seconds:.2} s");
        assert!(seconds < 20.0, "{codec} re-push took {seconds} s");
    }

    // Anyone reads the zstd image too: skopeo through the shim.
    if require_tool("skopeo", "skopeo") {
        let (_shim, addr) = start_shim(
            "root",
            Some(&keyed.key.private),
            keyed.server.port(),
            &keyed.known,
        );
        let out_dir = dir.path().join("skopeo-oci");
        run_ok(Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{addr}/team/zstd:1"),
            &format!("oci:{}:1", out_dir.display()),
        ]));
        let index: Value =
            serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
    }
}

#[test]
fn a_layer_failing_its_diff_id_while_compressed_publishes_nothing() {
    if !require_tool("python3", "python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let archive = dir.path().join("liar.tar");
    run_ok(
        Command::new("python3")
            .args(["-c", DOCKER_SAVE])
            .arg(&archive)
            .arg("lie"),
    );
    for codec in ["zstd", "gzip"] {
        let out = Command::new(bin("berth"))
            .args(["push", "--compress", codec, "--json", "--input"])
            .arg(&archive)
            .arg(&root)
            .arg("team/liar:1")
            .env("BERTH_STATE_DIR", dir.path().join("state"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{codec}: {err}");
        assert!(
            err.contains("0/layer.tar") && err.contains("diff_id"),
            "{codec}: {err}"
        );
        // Refused while compressing: no blob committed, no manifest, and the
        // session the layer was streaming into is gone from the store.
        assert!(of_kind(&out, "manifest").is_empty());
        assert!(of_kind(&out, "blob").is_empty());
        let sessions: Vec<_> = std::fs::read_dir(root.join("_berth/uploads"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(sessions.is_empty(), "{codec}: sessions left: {sessions:?}");
    }
    let out = Command::new(bin("berth"))
        .arg("tags")
        .arg(&root)
        .arg("team/liar")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains('1'),
        "no tag team/liar:1"
    );
}
