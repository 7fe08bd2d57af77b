//! Unit tests of the archive reader against small archives of every shape,
//! built here with the `tar` crate, the refusals (path escapes, truncation,
//! corrupt blobs, diff_id mismatches), and push/pull round trips through
//! the in-process registry service on a temporary directory.

use std::io::{Read, Write};
use std::sync::Arc;

use berth_server::names::Digest;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::compress;
use super::error::ArchiveError;
use super::formats::{self, Format};
use super::members::{Input, Members};
use super::progress::{Mode, Progress};
use super::pull::{self, Output};
use super::push;
use super::reference::ImageRef;
use super::resume::ResumeState;
use super::types::{Blob, BlobData, Image};
use super::verify;
use crate::remote::Remote;
use crate::transport::ssh::SshOptions;
use crate::transport::{NewTransport, Transport};

/// A raw tar header; the path and link are written as given (no checks),
/// so hostile archives can be built.
fn header(path: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            g.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

#[derive(Default)]
struct Tar {
    b: Option<tar::Builder<Vec<u8>>>,
}

impl Tar {
    fn new() -> Tar {
        Tar {
            b: Some(tar::Builder::new(Vec::new())),
        }
    }
    fn b(&mut self) -> &mut tar::Builder<Vec<u8>> {
        self.b.as_mut().unwrap()
    }
    fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        let h = header(path, tar::EntryType::Regular, data.len() as u64, None);
        self.b().append(&h, data).unwrap();
        self
    }
    fn dir(&mut self, path: &str) -> &mut Self {
        let h = header(path, tar::EntryType::Directory, 0, None);
        self.b().append(&h, &[][..]).unwrap();
        self
    }
    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = header(path, tar::EntryType::Symlink, 0, Some(target));
        self.b().append(&h, &[][..]).unwrap();
        self
    }
    fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = header(path, tar::EntryType::Link, 0, Some(target));
        self.b().append(&h, &[][..]).unwrap();
        self
    }
    fn finish(&mut self) -> Vec<u8> {
        self.b.take().unwrap().into_inner().unwrap()
    }
}

fn sha(data: &[u8]) -> Digest {
    Digest::of_bytes(data)
}

fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A layer: an uncompressed tar holding one file.
fn layer(seed: u8, len: usize) -> Vec<u8> {
    let mut t = Tar::new();
    t.file(&format!("file{seed}"), &pseudo_random(len, seed));
    t.finish()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

fn config_for(layers: &[&[u8]]) -> Vec<u8> {
    let ids: Vec<String> = layers.iter().map(|l| sha(l).to_string()).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/file0"]},
        "rootfs": {"type": "layers", "diff_ids": ids},
        "history": [{"created_by": "a"}, {"created_by": "b"}],
    }))
    .unwrap()
}

/// Docker 1.10–24: per-layer dirs, a symlinked duplicate layer, a config
/// named by its digest, manifest.json and repositories.
fn docker_1_10_archive(l0: &[u8], l1: &[u8]) -> (Vec<u8>, Digest) {
    let layers: &[&[u8]] = &[l0, l1, l0];
    let config = config_for(layers);
    let cd = sha(&config);
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let mut t = Tar::new();
    t.dir(&format!("{a}/"))
        .file(&format!("{a}/VERSION"), b"1.0")
        .file(&format!("{a}/json"), b"{}")
        .file(&format!("{a}/layer.tar"), l0)
        .dir(&format!("{b}/"))
        .file(&format!("{b}/layer.tar"), l1)
        .dir(&format!("{c}/"))
        .symlink(&format!("{c}/layer.tar"), &format!("../{a}/layer.tar"))
        .file(&format!("{}.json", cd.hex()), &config);
    let manifest = json!([{
        "Config": format!("{}.json", cd.hex()),
        "RepoTags": ["team/app:1", "team/app:latest"],
        "Layers": [format!("{a}/layer.tar"), format!("{b}/layer.tar"), format!("{c}/layer.tar")],
    }]);
    t.file("manifest.json", &serde_json::to_vec(&manifest).unwrap())
        .file(
            "repositories",
            format!(r#"{{"team/app":{{"1":"{c}"}}}}"#).as_bytes(),
        );
    (t.finish(), cd)
}

/// Docker 25+: OCI layout (uncompressed layers under their diff_id) +
/// manifest.json + repositories; index.json names the tag only.
fn docker_25_archive(
    l0: &[u8],
    l1: &[u8],
    layer_bytes: (&[u8], &[u8]),
) -> (Vec<u8>, Digest, Digest) {
    let config = config_for(&[l0, l1]);
    let cd = sha(&config);
    let oci = layer_bytes.0 != l0;
    let lt = |b: &[u8]| {
        if b.starts_with(&[0x1f, 0x8b]) {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        }
    };
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.as_str(), "size": config.len()},
        "layers": [
            {"mediaType": lt(layer_bytes.0), "digest": sha(layer_bytes.0).as_str(), "size": layer_bytes.0.len()},
            {"mediaType": lt(layer_bytes.1), "digest": sha(layer_bytes.1).as_str(), "size": layer_bytes.1.len()},
        ],
    }))
    .unwrap();
    let md = sha(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.as_str(), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "2"},
        }],
    });
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let mut t = Tar::new();
    t.dir("blobs/").dir("blobs/sha256/");
    for b in [layer_bytes.0, layer_bytes.1, &config[..], &manifest[..]] {
        t.file(&blob(&sha(b)), b);
    }
    t.file("index.json", &serde_json::to_vec(&index).unwrap())
        .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    if !oci {
        let mj = json!([{
            "Config": blob(&cd), "RepoTags": ["team/app:2"],
            "Layers": [blob(&sha(l0)), blob(&sha(l1))],
        }]);
        t.file("manifest.json", &serde_json::to_vec(&mj).unwrap());
    }
    (t.finish(), md, cd)
}

fn read(bytes: Vec<u8>) -> Result<Members, ArchiveError> {
    Members::read_from(Box::new(std::io::Cursor::new(bytes)), "test", None)
}

fn read_file(bytes: &[u8]) -> (tempfile::TempDir, Result<Members, ArchiveError>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.tar");
    std::fs::write(&p, bytes).unwrap();
    let m = Members::read(&Input::File(p));
    (dir, m)
}

fn images(bytes: Vec<u8>) -> Result<(Format, Vec<Image>), ArchiveError> {
    let m = read(bytes)?;
    formats::images(&m)
}

fn member_bytes(m: &Members, path: &str) -> Vec<u8> {
    let mem = m.get(path, "test").unwrap();
    let mut out = Vec::new();
    m.open(mem).unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn docker_1_10_archives_become_schema2_images() {
    let (l0, l1) = (layer(0, 3000), layer(1, 5000));
    let (tar, cd) = docker_1_10_archive(&l0, &l1);
    let (format, imgs) = images(tar.clone()).unwrap();
    assert_eq!(format, Format::DockerManifest);
    let [img] = &imgs[..] else { panic!("{imgs:?}") };
    assert_eq!(img.id, cd);
    let names: Vec<String> = img.refs.iter().map(|r| r.to_string()).collect();
    assert_eq!(names, ["team/app:1", "team/app:latest"]);
    let m: Value = serde_json::from_slice(&img.manifest.bytes).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(m["config"]["digest"], cd.as_str());
    // Uncompressed layers are pushed as they are: digest == diff_id.
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        [sha(&l0).as_str(), sha(&l1).as_str(), sha(&l0).as_str()]
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    // Same result from a file (members read in place) as from a pipe.
    let (_dir, from_file) = read_file(&tar);
    let from_file = from_file.unwrap();
    let (_, imgs2) = formats::images(&from_file).unwrap();
    assert_eq!(imgs2[0].manifest.digest, img.manifest.digest);
    let c = "c".repeat(64);
    assert_eq!(member_bytes(&from_file, &format!("{c}/layer.tar")), l0);
}

#[test]
fn docker_25_archives_keep_manifest_bytes_and_take_names_from_manifest_json() {
    let (l0, l1) = (layer(0, 3000), layer(1, 5000));
    let (tar, md, cd) = docker_25_archive(&l0, &l1, (&l0, &l1));
    let (format, imgs) = images(tar).unwrap();
    assert_eq!(format, Format::OciLayout);
    let [img] = &imgs[..] else { panic!("{imgs:?}") };
    assert_eq!(img.manifest.digest, md);
    assert_eq!(img.id, cd);
    assert_eq!(img.refs, [ImageRef::parse("team/app:2").unwrap()]);
    assert_eq!(img.blobs.len(), 3);
}

#[test]
fn oci_archives_with_compressed_layers_keep_their_digests() {
    let (l0, l1) = (layer(0, 3000), layer(1, 5000));
    let (g0, z1) = (gzip(&l0), zstd(&l1));
    let (tar, md, _) = docker_25_archive(&l0, &l1, (&g0, &z1));
    let (format, imgs) = images(tar).unwrap();
    assert_eq!(format, Format::OciLayout);
    assert_eq!(imgs[0].manifest.digest, md);
    let digests: Vec<&Digest> = imgs[0].blobs.iter().map(|b| &b.digest).collect();
    assert!(digests.contains(&&sha(&g0)) && digests.contains(&&sha(&z1)));
    // Untagged in the archive: a name must be given on the command line.
    assert!(push::select(&imgs, None).is_err());
    let d = push::select(&imgs, ImageRef::parse("x/y:3").as_ref()).unwrap();
    assert_eq!(d[0].to.to_string(), "x/y:3");
}

#[test]
fn nested_indexes_push_whole_or_the_amd64_child() {
    let (l0, l1) = (layer(0, 1000), layer(1, 1000));
    let (inner, md, _) = docker_25_archive(&l0, &l1, (&l0, &l1));
    // Re-pack: the inner layout's blobs, plus an index with an amd64 child
    // (present) and an arm64 child (absent).
    let inner_members = read(inner).unwrap();
    let mut t = Tar::new();
    for p in inner_members
        .paths()
        .filter(|p| p.starts_with("blobs/sha256/"))
        .map(str::to_string)
        .collect::<Vec<_>>()
    {
        t.file(&p, &member_bytes(&inner_members, &p));
    }
    let man_size = inner_members
        .get(&format!("blobs/sha256/{}", md.hex()), "t")
        .unwrap()
        .size;
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.as_str(), "size": man_size,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "e".repeat(64)), "size": 10,
             "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))
    .unwrap();
    let nd = sha(&nested);
    t.file(&format!("blobs/sha256/{}", nd.hex()), &nested);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd.as_str(), "size": nested.len(),
        "annotations": {"io.containerd.image.name": "docker.io/library/multi:1", "org.opencontainers.image.ref.name": "1"},
    }]});
    t.file("index.json", &serde_json::to_vec(&index).unwrap())
        .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let (_, imgs) = images(t.finish()).unwrap();
    assert_eq!(
        imgs[0].manifest.digest, md,
        "the amd64 child is pushed on its own"
    );
    assert_eq!(imgs[0].refs, [ImageRef::parse("multi:1").unwrap()]);
}

#[test]
fn pre_1_10_archives_are_converted_like_docker_load() {
    let (l0, l1) = (layer(0, 2000), layer(1, 2000));
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let ja = json!({"id": a, "created": "2015-01-01T00:00:00Z", "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) ADD x"]}, "os": "linux", "architecture": "amd64", "Size": 1});
    let jb = json!({"id": b, "parent": a, "created": "2015-01-02T00:00:00Z", "container_config": {"Cmd": ["/bin/sh"]}, "config": {"Cmd": ["/bin/sh"]}, "os": "linux", "architecture": "amd64"});
    let mut t = Tar::new();
    t.file(&format!("{a}/VERSION"), b"1.0")
        .file(&format!("{a}/json"), &serde_json::to_vec(&ja).unwrap())
        .file(&format!("{a}/layer.tar"), &gzip(&l0))
        .file(&format!("{b}/VERSION"), b"1.0")
        .file(&format!("{b}/json"), &serde_json::to_vec(&jb).unwrap())
        .file(&format!("{b}/layer.tar"), &l1)
        .file(
            "repositories",
            format!(r#"{{"old":{{"v1":"{b}"}}}}"#).as_bytes(),
        );
    let (format, imgs) = images(t.finish()).unwrap();
    assert_eq!(format, Format::Legacy);
    let img = &imgs[0];
    assert_eq!(img.refs, [ImageRef::parse("old:v1").unwrap()]);
    let config = match &img.blobs[0].data {
        BlobData::Generated(b) => b.clone(),
        other => panic!("{other:?}"),
    };
    let cv: Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(
        cv["rootfs"]["diff_ids"],
        json!([sha(&l0).as_str(), sha(&l1).as_str()])
    );
    assert_eq!(cv["history"][0]["created_by"], "/bin/sh -c #(nop) ADD x");
    assert!(cv.get("id").is_none() && cv.get("parent").is_none());
    assert_eq!(img.id, sha(&config));
    let m: Value = serde_json::from_slice(&img.manifest.bytes).unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
}

#[test]
fn compressed_outer_tars_read_like_plain_ones() {
    let (l0, l1) = (layer(0, 3000), layer(1, 5000));
    let (tar, cd) = docker_1_10_archive(&l0, &l1);
    for packed in [gzip(&tar), zstd(&tar)] {
        let (_, imgs) = images(packed.clone()).unwrap();
        assert_eq!(imgs[0].id, cd);
        let (_dir, m) = read_file(&packed);
        assert_eq!(formats::images(&m.unwrap()).unwrap().1[0].id, cd);
    }
}

fn refused(bytes: Vec<u8>) -> String {
    let err = images(bytes).expect_err("archive must be refused");
    err.to_string()
}

#[test]
fn path_escapes_are_refused() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Tar::new().file("../evil", b"x").finish(), "'..'"),
        (Tar::new().file("/etc/evil", b"x").finish(), "absolute"),
        (Tar::new().file("a/../../evil", b"x").finish(), "'..'"),
        (
            Tar::new()
                .symlink("a/layer.tar", "../../etc/passwd")
                .finish(),
            "outside the archive",
        ),
        (
            Tar::new().symlink("layer.tar", "/etc/passwd").finish(),
            "absolute",
        ),
        (
            Tar::new().hardlink("layer.tar", "../etc/passwd").finish(),
            "'..'",
        ),
    ];
    for (bytes, want) in cases {
        let msg = refused(bytes);
        assert!(
            msg.contains("refusing member") && msg.contains(want),
            "{msg}"
        );
    }
    // Also from a file read in place.
    let (_dir, m) = read_file(&Tar::new().file("../evil", b"x").finish());
    assert!(matches!(m, Err(ArchiveError::UnsafePath { .. })));
}

#[test]
fn truncated_archives_are_refused() {
    let (l0, l1) = (layer(0, 30000), layer(1, 50000));
    let (tar, _) = docker_1_10_archive(&l0, &l1);
    for cut in [tar.len() / 2, 700, tar.len() - 1500] {
        let msg = refused(tar[..cut].to_vec());
        assert!(
            msg.contains("truncated") || msg.contains("no member"),
            "cut {cut}: {msg}"
        );
    }
    let gz = gzip(&tar);
    let msg = refused(gz[..gz.len() / 2].to_vec());
    assert!(
        msg.contains("truncated") || msg.contains("not a readable"),
        "{msg}"
    );
    assert!(refused(Vec::new()).contains("empty"));
}

/// Every regular file a store holds (lock files aside), with its bytes:
/// what a refused push must leave as it was.
fn stored_files(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".lock") {
                let name = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Pushes an archive the checks during the upload must refuse, to a fresh
/// store; returns the message. Nothing may be left in the store.
async fn refused_by_push(bytes: Vec<u8>) -> String {
    let reg = tempfile::tempdir().unwrap();
    let progress = Arc::new(Progress::new(Mode::Quiet, "push", false));
    let err = push_reporting(reg.path(), bytes, Some("team/app:1"), progress)
        .await
        .expect_err("the push must fail");
    let left = stored_files(reg.path());
    assert!(
        left.is_empty(),
        "{err}: the store kept {:?}",
        left.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    err.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_blobs_and_diff_id_mismatches_are_refused() {
    let (l0, l1) = (layer(0, 3000), layer(1, 5000));
    // A layer whose content differs from the config's diff_id: found while
    // the layer is uploaded.
    let (tar, _) = docker_1_10_archive(&l0, &l1);
    let mut bad = tar.clone();
    let pos = bad
        .windows(16)
        .position(|w| w == &pseudo_random(5000, 1)[100..116])
        .unwrap();
    bad[pos] ^= 0xff;
    let msg = refused_by_push(bad).await;
    assert!(msg.contains("diff_id"), "{msg}");
    // A config whose bytes do not match its name: refused before any request.
    let (tar, cd) = docker_1_10_archive(&l0, &l1);
    let mut bad = tar.clone();
    let needle = br#""architecture":"amd64""#;
    let pos = bad.windows(needle.len()).position(|w| w == needle).unwrap();
    bad[pos + 17] = b'X';
    let msg = refused(bad);
    assert!(
        msg.contains(cd.hex()) && msg.contains("does not match"),
        "{msg}"
    );
    // An OCI blob that does not hash to its file name: found while uploaded.
    let (tar, _, _) = docker_25_archive(&l0, &l1, (&l0, &l1));
    let mut bad = tar.clone();
    let pos = bad
        .windows(16)
        .position(|w| w == &pseudo_random(3000, 0)[10..26])
        .unwrap();
    bad[pos] ^= 1;
    let msg = refused_by_push(bad).await;
    assert!(msg.contains("does not match its digest"), "{msg}");
}

fn local(dir: &std::path::Path) -> Arc<Transport> {
    Arc::new(Transport::new(&Remote::Local(dir.to_path_buf()), SshOptions::default()).unwrap())
}

async fn push_bytes(
    reg: &std::path::Path,
    bytes: Vec<u8>,
    target: Option<&str>,
) -> Result<Arc<Progress>, ArchiveError> {
    let progress = Arc::new(Progress::new(Mode::Quiet, "push", false));
    push_reporting(reg, bytes, target, progress.clone()).await?;
    Ok(progress)
}

async fn push_reporting(
    reg: &std::path::Path,
    bytes: Vec<u8>,
    target: Option<&str>,
    progress: Arc<Progress>,
) -> Result<(), ArchiveError> {
    let members = Arc::new(read(bytes)?);
    let (_, imgs) = formats::images(&members)?;
    let dest = push::select(&imgs, target.and_then(ImageRef::parse).as_ref())?;
    push::push(
        local(reg),
        members,
        &imgs,
        &dest,
        3,
        progress,
        Arc::new(ResumeState::disabled()),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn push_skips_present_blobs_and_pull_writes_a_loadable_layout() {
    let reg = tempfile::tempdir().unwrap();
    let (l0, l1) = (layer(0, 40000), layer(1, 70000));
    let (tar, cd) = docker_1_10_archive(&l0, &l1);
    let first = push_bytes(reg.path(), tar.clone(), None).await.unwrap();
    assert!(first.bytes_transferred() >= (l0.len() + l1.len()) as u64);
    let again = push_bytes(reg.path(), tar.clone(), None).await.unwrap();
    assert_eq!(
        again.bytes_transferred(),
        0,
        "a re-push sends no blob bytes"
    );

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("pulled.tar");
    let r = ImageRef::parse("team/app:1").unwrap();
    let progress = Progress::new(Mode::Quiet, "pull", false);
    pull::pull(
        local(reg.path()),
        &r,
        &Output::File(file.clone()),
        &progress,
    )
    .await
    .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let members = read(bytes.clone()).unwrap();
    // Both readers of the shape agree: OCI layout and manifest.json.
    let (format, imgs) = formats::images(&members).unwrap();
    assert_eq!(format, Format::OciLayout);
    assert_eq!(imgs[0].id, cd);
    assert_eq!(imgs[0].refs, [ImageRef::parse("team/app:1").unwrap()]);
    let index: Value = serde_json::from_slice(&member_bytes(&members, "index.json")).unwrap();
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["io.containerd.image.name"], "docker.io/team/app:1");
    assert_eq!(ann["org.opencontainers.image.ref.name"], "1");
    let repos: Value = serde_json::from_slice(&member_bytes(&members, "repositories")).unwrap();
    assert_eq!(repos["team/app"]["1"], sha(&l0).hex());
    let mj: Value = serde_json::from_slice(&member_bytes(&members, "manifest.json")).unwrap();
    assert_eq!(mj[0]["Config"], format!("blobs/sha256/{}", cd.hex()));
    assert_eq!(mj[0]["Layers"].as_array().unwrap().len(), 3);

    // The pulled archive pushes back as the same manifest (digests preserved).
    let reg2 = tempfile::tempdir().unwrap();
    push_bytes(reg2.path(), bytes, None).await.unwrap();

    // A missing tag leaves no file behind (and no temporary file).
    let missing = out.path().join("missing.tar");
    let r = ImageRef::parse("team/app:nope").unwrap();
    let err = pull::pull(
        local(reg.path()),
        &r,
        &Output::File(missing.clone()),
        &progress,
    )
    .await;
    assert!(err.is_err());
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("pulled.tar")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_archives_publish_nothing() {
    let reg = tempfile::tempdir().unwrap();
    let (l0, l1) = (layer(0, 3000), layer(1, 5000));
    let (tar, _) = docker_1_10_archive(&l0, &l1);
    let mut bad = tar.clone();
    let pos = bad
        .windows(16)
        .position(|w| w == &pseudo_random(5000, 1)[100..116])
        .unwrap();
    bad[pos] ^= 0xff;
    let progress = Arc::new(Progress::new(Mode::Quiet, "push", false));
    let err = push_reporting(reg.path(), bad, Some("team/app:1"), progress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("diff_id"), "{err}");
    assert_eq!(
        stored_files(reg.path()),
        [],
        "no blob, manifest, tag or upload session stored"
    );
    // Several images and an unknown name: refused before any request.
    let (tar2, _, _) = docker_25_archive(&l0, &l1, (&l0, &l1));
    let members = read(tar2).unwrap();
    let (_, mut imgs) = formats::images(&members).unwrap();
    let (_, more) = images(tar).unwrap();
    imgs.extend(more);
    let err = push::select(&imgs, ImageRef::parse("other:1").as_ref()).unwrap_err();
    assert!(err.to_string().contains("none is named other:1"), "{err}");
    let all = push::select(&imgs, None).unwrap();
    let names: Vec<String> = all.iter().map(|d| d.to.to_string()).collect();
    assert_eq!(names, ["team/app:2", "team/app:1", "team/app:latest"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_image_pushed_to_several_repositories_pulls_from_each() {
    let reg = tempfile::tempdir().unwrap();
    let (l0, l1) = (layer(0, 20000), layer(1, 30000));
    let (tar, cd) = docker_1_10_archive(&l0, &l1);
    let members = Arc::new(read(tar).unwrap());
    let (_, imgs) = formats::images(&members).unwrap();
    let dest: Vec<push::Destination> = ["team/app:1", "other/copy:2", "third:3"]
        .iter()
        .map(|r| push::Destination {
            image: 0,
            to: ImageRef::parse(r).unwrap(),
        })
        .collect();
    let progress = Arc::new(Progress::new(Mode::Quiet, "push", false));
    push::push(
        local(reg.path()),
        members,
        &imgs,
        &dest,
        2,
        progress.clone(),
        Arc::new(ResumeState::disabled()),
    )
    .await
    .unwrap();
    // Each blob was sent once; the other repositories got it by mount.
    assert_eq!(
        progress.bytes_transferred(),
        imgs[0].blobs.iter().map(|b| b.size).sum::<u64>() - l0.len() as u64
    );
    let out = tempfile::tempdir().unwrap();
    for d in &dest {
        let file = out.path().join("p.tar");
        let p = Progress::new(Mode::Quiet, "pull", false);
        pull::pull(local(reg.path()), &d.to, &Output::File(file.clone()), &p)
            .await
            .unwrap();
        let (_, got) = formats::images(&read(std::fs::read(&file).unwrap()).unwrap()).unwrap();
        assert_eq!(got[0].id, cd, "{}", d.to);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_upload_resumes_at_the_registry_offset() {
    use super::resume::ResumeState;
    use crate::registry::V2Connection;
    let reg = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (l0, l1) = (layer(4, 30000), layer(5, 400_000));
    let (tar, _) = docker_1_10_archive(&l0, &l1);
    let members = Arc::new(read(tar.clone()).unwrap());
    let (_, imgs) = formats::images(&members).unwrap();
    let big = imgs[0].blobs.iter().max_by_key(|b| b.size).unwrap().clone();
    // An earlier run: opened a session, sent 150 000 bytes, then died.
    let transport = local(reg.path());
    let mut conn = V2Connection::open(&transport).await.unwrap();
    let resume = ResumeState::in_dir(state.path());
    let bytes = member_bytes(
        &members,
        match &big.data {
            BlobData::Member(p) => p,
            _ => unreachable!("layers are archive members"),
        },
    );
    // Deterministic, no wall clock: the earlier run remembered its session
    // and had 150 000 bytes stored when it died before the closing PUT (a
    // kill in the middle of a body is `tests/e2e/resume.rs`'s job).
    let sent = 150_000usize;
    let loc = conn.start_upload("team/app").await.unwrap();
    resume.save("team/app", &big.digest, &loc);
    let first = {
        use http_body_util::{BodyExt, Full};
        Full::new(bytes::Bytes::copy_from_slice(&bytes[..sent]))
            .map_err(|e| match e {})
            .boxed_unsync()
    };
    let patched = conn
        .patch_upload(&loc, 0, sent as u64, first)
        .await
        .unwrap();
    resume.save("team/app", &big.digest, &patched.next);
    drop(conn);
    let loc = resume
        .saved("team/app", &big.digest)
        .expect("the session was remembered");
    let mut conn = V2Connection::open(&transport).await.unwrap();
    assert_eq!(conn.upload_offset(&loc).await.unwrap(), Some(sent as u64));
    // The next run sends only the rest.
    let dest = push::select(&imgs, ImageRef::parse("team/app:1").as_ref()).unwrap();
    let progress = Arc::new(Progress::new(Mode::Quiet, "push", false));
    push::push(
        transport,
        members,
        &imgs,
        &dest,
        2,
        progress.clone(),
        // A new run: this one's claim on the entry ends first.
        Arc::new({
            drop(resume);
            ResumeState::in_dir(state.path())
        }),
    )
    .await
    .unwrap();
    let resume = ResumeState::in_dir(state.path());
    let distinct: std::collections::BTreeMap<_, _> = imgs[0]
        .blobs
        .iter()
        .map(|b| (b.digest.clone(), b.size))
        .collect();
    let others: u64 = distinct
        .iter()
        .filter(|(d, _)| **d != big.digest)
        .map(|(_, s)| s)
        .sum();
    assert_eq!(
        progress.bytes_transferred(),
        others + big.size - sent as u64
    );
    assert_eq!(
        resume.saved("team/app", &big.digest),
        None,
        "the finished session is forgotten"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_failing_its_diff_id_during_the_upload_leaves_the_store_unchanged() {
    let reg = tempfile::tempdir().unwrap();
    let (l0, l1) = (layer(0, 20000), layer(1, 30000));
    let (good, _) = docker_1_10_archive(&l0, &l1);
    push_bytes(reg.path(), good, Some("team/good:1"))
        .await
        .unwrap();
    let before = stored_files(reg.path());
    // New gzip layers (several chunks each); the config claims layer 0
    // inflates to `l4`, but it inflates to `l2`. Its blob digest is right,
    // so only the inflate during the upload can tell.
    let (l2, l3, l4) = (layer(2, 900_000), layer(3, 700_000), layer(4, 1000));
    let (g2, g3) = (gzip(&l2), gzip(&l3));
    let (bad, _, _) = docker_25_archive(&l4, &l3, (&g2, &g3));
    let progress = Arc::new(Progress::new(Mode::Quiet, "push", false));
    let err = push_reporting(reg.path(), bad, Some("team/bad:1"), progress.clone())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("blobs/sha256/{}", sha(&g2).hex()))
            && msg.contains("does not match the image's diff_id")
            && msg.contains(sha(&l4).as_str())
            && msg.contains(sha(&l2).as_str()),
        "{msg}"
    );
    assert!(
        progress.bytes_transferred() > 0,
        "the other blobs were uploaded while the layer was checked"
    );
    // Their sessions were cancelled: no blob, link, manifest, tag or
    // session data is left.
    assert!(stored_files(reg.path()) == before, "the store changed");
    // The same image with a right config pushes afterwards.
    let (fixed, _, _) = docker_25_archive(&l2, &l3, (&g2, &g3));
    push_bytes(reg.path(), fixed, Some("team/bad:1"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pushing_under_a_new_name_mounts_instead_of_sending() {
    let reg = tempfile::tempdir().unwrap();
    let (l0, l1) = (layer(5, 40000), layer(6, 60000));
    let (tar, cd) = docker_1_10_archive(&l0, &l1);
    let first = push_bytes(reg.path(), tar.clone(), None).await.unwrap();
    assert!(first.bytes_transferred() >= (l0.len() + l1.len()) as u64);
    let again = push_bytes(reg.path(), tar, Some("elsewhere/copy:9"))
        .await
        .unwrap();
    assert_eq!(again.bytes_transferred(), 0, "every blob was mounted");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("p.tar");
    let r = ImageRef::parse("elsewhere/copy:9").unwrap();
    let p = Progress::new(Mode::Quiet, "pull", false);
    pull::pull(local(reg.path()), &r, &Output::File(file.clone()), &p)
        .await
        .unwrap();
    let (_, got) = formats::images(&read(std::fs::read(&file).unwrap()).unwrap()).unwrap();
    assert_eq!(got[0].id, cd);
}

/// A berth registry reports the sha256 of what a session holds on every
/// PATCH answer (`Berth-Upload-Digest`), from the first byte on, so
/// `berth push` can check the blob digest without hashing it again; a
/// blob whose reported digest is not the archive's is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_registry_reports_the_session_digest() {
    use crate::registry::V2Connection;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let reg = tempfile::tempdir().unwrap();
    let transport = local(reg.path());
    let mut conn = V2Connection::open(&transport).await.unwrap();
    assert!(!conn.reports_upload_digest(), "not known before a session");
    let loc = conn.start_upload("team/app").await.unwrap();
    assert!(conn.reports_upload_digest());
    let body = |b: &'static [u8]| {
        Full::new(Bytes::from_static(b))
            .map_err(|e| match e {})
            .boxed_unsync()
    };
    let first = conn
        .patch_upload(&loc, 0, 6, body(b"hello "))
        .await
        .unwrap();
    assert_eq!(first.digest, Some(Digest::of_bytes(b"hello ")));
    let second = conn
        .patch_upload(&first.next, 6, 11, body(b"world"))
        .await
        .unwrap();
    assert_eq!(second.digest, Some(Digest::of_bytes(b"hello world")));

    let (l0, l1) = (layer(0, 3000), layer(1, 5000));
    let (_, imgs) = formats::images(&read(docker_1_10_archive(&l0, &l1).0).unwrap()).unwrap();
    let blob = &imgs[0].blobs[0];
    super::verify::check_reported_digest(blob, &blob.digest).unwrap();
    let err = super::verify::check_reported_digest(blob, &Digest::of_bytes(b"other")).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

/// Issue 15: when the registry reports a session digest that does not match,
/// the message blames the registry's session if the archive's bytes are
/// fine (they were blamed before: "layer content does not match the
/// image's diff_id" for a good archive), and the archive if they are not.
#[test]
fn a_wrong_session_report_blames_the_session_only_when_the_archive_is_fine() {
    let (l0, l1) = (layer(6, 20000), layer(7, 30000));
    let (tar, _) = docker_1_10_archive(&l0, &l1);
    let members = read(tar).unwrap();
    let (_, imgs) = formats::images(&members).unwrap();
    let blob = imgs[0].blobs.iter().max_by_key(|b| b.size).unwrap().clone();
    let bogus = sha(b"what another writer left in the session");
    let mismatch = verify::check_reported_digest(&blob, &bogus).unwrap_err();
    let e = verify::blame_reported_mismatch(&members, &blob, &bogus, mismatch);
    assert!(
        matches!(e, ArchiveError::SessionMismatch { .. }),
        "a fine archive was blamed: {e}"
    );
    assert!(e.to_string().contains("registry's side"), "{e}");
    assert!(!verify::is_archive_fault(&e));

    // The same report for an archive whose layer is corrupt blames the archive.
    let mut corrupt = blob.clone();
    corrupt.digest = sha(b"a digest the member does not have");
    let mismatch = verify::check_reported_digest(&corrupt, &bogus).unwrap_err();
    let e = verify::blame_reported_mismatch(&members, &corrupt, &bogus, mismatch);
    assert!(verify::is_archive_fault(&e), "{e}");
}

/// The layer of a two-layer archive whose first layer is `l0`, for
/// `--compress` (`compress.rs`), and the archive it is read from.
fn layer_to_compress(l0: &[u8]) -> (tempfile::TempDir, Arc<Members>, Blob) {
    let (bytes, _) = docker_1_10_archive(l0, &layer(2, 1000));
    let (dir, m) = read_file(&bytes);
    let m = m.unwrap();
    let (_, imgs) = formats::images(&m).unwrap();
    let blob = imgs[0]
        .blobs
        .iter()
        .find(|b| b.digest == sha(l0))
        .unwrap()
        .clone();
    (dir, Arc::new(m), blob)
}

/// Everything a compressing thread sent, and whether it ended with the end mark.
fn drain(rx: &mut mpsc::Receiver<compress::Piece>) -> (Vec<u8>, bool) {
    let mut sent = Vec::new();
    while let Some(piece) = rx.blocking_recv() {
        match piece {
            compress::Piece::Data(b) => sent.extend_from_slice(&b),
            compress::Piece::End => return (sent, rx.blocking_recv().is_none()),
        }
    }
    (sent, false)
}

/// `--compress` sends a layer while it compresses it: the first compressed
/// piece reaches the upload while the compressing thread still has most of
/// the layer to go (it waits on the upload's bounded queue), and the end
/// mark comes last, once the layer passed its checks. What was sent is the
/// blob: the temporary file's bytes, inflating to the layer.
#[test]
fn a_compressed_layer_reaches_the_upload_before_it_is_compressed_whole() {
    // Random bytes barely compress: ~24 MiB of pieces through a queue of 4.
    let l0 = layer(1, 24 << 20);
    let (_dir, members, blob) = layer_to_compress(&l0);
    let opts = compress::CompressOptions::new(compress::Codec::Zstd, Some(1)).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let worker = std::thread::spawn(move || compress::spill(&members, &blob, opts, Some(tx)));
    let Some(compress::Piece::Data(first)) = rx.blocking_recv() else {
        panic!("the first thing sent is not compressed bytes");
    };
    assert!(
        !worker.is_finished(),
        "compression finished before its first piece was taken"
    );
    let (mut sent, ended) = drain(&mut rx);
    sent.splice(0..0, first.iter().copied());
    assert!(ended, "the end mark is missing, or something came after it");
    let out = worker.join().unwrap().unwrap();
    assert_eq!(out.digest, sha(&sent));
    assert_eq!(out.size, sent.len() as u64);
    let BlobData::Spilled {
        file, sent: None, ..
    } = &out.data
    else {
        panic!("not spilled: {:?}", out.data);
    };
    assert_eq!(std::fs::read(&**file).unwrap(), sent);
    assert_eq!(zstd::stream::decode_all(&sent[..]).unwrap(), l0);
}

/// A layer that does not match its diff_id never completes its upload:
/// the compressing thread stops without the end mark (the upload body then
/// fails instead of ending a short blob) and reports the mismatch.
#[test]
fn a_lying_layer_never_sends_the_end_of_its_upload() {
    let l0 = layer(3, 2 << 20);
    let (_dir, members, mut blob) = layer_to_compress(&l0);
    blob.checks.diff_ids = vec![sha(b"another layer").to_string()];
    let opts = compress::CompressOptions::new(compress::Codec::Gzip, None).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let worker = std::thread::spawn(move || compress::spill(&members, &blob, opts, Some(tx)));
    let (_, ended) = drain(&mut rx);
    assert!(!ended, "a layer failing its diff_id ended its upload");
    match worker.join().unwrap() {
        Err(ArchiveError::DiffIdMismatch { .. }) => {}
        other => panic!("expected a diff_id mismatch, got {other:?}"),
    }
}

/// An in-process registry that counts the connections opened to it.
struct CountingRegistry {
    inner: berth_server::registry::in_process::InProcessRegistry,
    opened: std::sync::atomic::AtomicUsize,
}

impl berth_transport::transport::InProcess for CountingRegistry {
    fn open(&self) -> berth_transport::transport::Stream {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.open()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_reuses_its_connections_between_steps() {
    // Over a long link each new connection costs an SSH channel open and a
    // subsystem request: a push one step at a time (`--jobs 1`) needs one
    // connection for every HEAD, upload, commit and manifest PUT, first
    // sending and then finding everything present.
    let reg = tempfile::tempdir().unwrap();
    let (counting, transport) = counting(reg.path());
    let (tar, _) = docker_1_10_archive(&layer(6, 20_000), &layer(7, 300_000));
    let members = Arc::new(read(tar).unwrap());
    let (_, imgs) = formats::images(&members).unwrap();
    assert!(imgs[0].blobs.len() >= 3, "config and two layers");
    let dest = push::select(&imgs, ImageRef::parse("team/reuse:1").as_ref()).unwrap();
    for run in ["first push", "re-push"] {
        let state = tempfile::tempdir().unwrap();
        counting
            .opened
            .store(0, std::sync::atomic::Ordering::SeqCst);
        push::push(
            transport.clone(),
            members.clone(),
            &imgs,
            &dest,
            1,
            Arc::new(Progress::new(Mode::Quiet, "push", false)),
            Arc::new(ResumeState::in_dir(state.path())),
        )
        .await
        .unwrap();
        assert_eq!(
            counting.opened.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{run}: connections opened"
        );
    }
}

/// A registry in `dir` whose connections are counted.
fn counting(dir: &std::path::Path) -> (Arc<CountingRegistry>, Arc<Transport>) {
    let counting = Arc::new(CountingRegistry {
        inner: berth_server::registry::in_process::InProcessRegistry::at(dir).unwrap(),
        opened: std::sync::atomic::AtomicUsize::new(0),
    });
    (counting.clone(), Arc::new(Transport::InProcess(counting)))
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_fetches_small_layers_after_a_large_one_ahead_and_checks_them() {
    let reg = tempfile::tempdir().unwrap();
    // A large layer first, then a small one: the small one comes on a
    // second connection while the large one streams.
    let (l0, l1) = (layer(8, 5 << 20), layer(9, 30_000));
    let (tar, config) = docker_1_10_archive(&l0, &l1);
    let members = read(tar.clone()).unwrap();
    let (_, pushed) = formats::images(&members).unwrap();
    push_bytes(reg.path(), tar, Some("team/ahead:1"))
        .await
        .unwrap();
    let (count, transport) = counting(reg.path());
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("p.tar");
    let r = ImageRef::parse("team/ahead:1").unwrap();
    let p = Progress::new(Mode::Quiet, "pull", false);
    pull::pull(transport.clone(), &r, &Output::File(file.clone()), &p)
        .await
        .unwrap();
    assert_eq!(
        count.opened.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the main connection and the one fetching ahead"
    );
    let (_, got) = formats::images(&read(std::fs::read(&file).unwrap()).unwrap()).unwrap();
    assert_eq!(got[0].id, config);
    let digests = |i: &Image| {
        i.blobs
            .iter()
            .map(|b| b.digest.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(digests(&got[0]), digests(&pushed[0]));

    // A small layer the registry serves wrong is refused all the same:
    // the fetcher's failure hands it back to the main connection, which
    // reports it.
    let small = pushed[0]
        .blobs
        .iter()
        .filter(|b| (10_000..1 << 20).contains(&b.size) && b.digest != config)
        .map(|b| b.digest.clone())
        .next()
        .expect("a small layer");
    let pool = berth_server::store::Store::open(reg.path())
        .unwrap()
        .paths()
        .blob(&small);
    let mut bytes = std::fs::read(&pool).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&pool, bytes).unwrap();
    let bad = out.path().join("bad.tar");
    let e = pull::pull(transport, &r, &Output::File(bad.clone()), &p)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(small.hex()), "{e}");
    assert!(!bad.exists(), "nothing is left where the archive would go");
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_of_small_layers_only_uses_one_connection() {
    let reg = tempfile::tempdir().unwrap();
    let (tar, _) = docker_1_10_archive(&layer(10, 20_000), &layer(11, 40_000));
    push_bytes(reg.path(), tar, Some("team/small:1"))
        .await
        .unwrap();
    let (count, transport) = counting(reg.path());
    let out = tempfile::tempdir().unwrap();
    let p = Progress::new(Mode::Quiet, "pull", false);
    pull::pull(
        transport,
        &ImageRef::parse("team/small:1").unwrap(),
        &Output::File(out.path().join("p.tar")),
        &p,
    )
    .await
    .unwrap();
    assert_eq!(count.opened.load(std::sync::atomic::Ordering::SeqCst), 1);
}
