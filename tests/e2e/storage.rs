//! Shared-filesystem safety and recovery (#7, `docs/storage.md`): two
//! `berth-server http` processes on one store with many concurrent pushers,
//! SIGKILL at random moments, a 1 GiB upload resumed through the other
//! process, gc while pushes go on, and a full disk. Every check ends with
//! `berth-server fsck`.
//!
//! These tests speak raw HTTP on a [`Fresh`] connection per request, whose
//! failures are values: a killed server or a refused push is an expected
//! outcome here, and what matters is what the store shows afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::*;

type R<T> = Result<T, String>;

fn get(addr: SocketAddr, path: &str) -> R<HttpResponse> {
    fetch(addr, "GET", path, &[], b"")
}

/// A connection on which a test streams a request body itself: the head
/// (`Connection: close`, a body of `len` bytes) is already sent.
fn stream_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    len: u64,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let framing = format!("Connection: close\r\nContent-Length: {len}\r\n");
    s.write_all(request_head(method, path, headers, &framing).as_bytes())
        .unwrap();
    s
}

/// The answer to a request sent with [`stream_request`].
fn read_answer(s: &TcpStream) -> R<HttpResponse> {
    read_response(&mut BufReader::new(s), false, true)
}

// ---- images --------------------------------------------------------------------

const BASES: u64 = 3;

fn base_layer(base: u64) -> Vec<u8> {
    random_bytes(192 * 1024, 7_000 + base)
}

/// A V1 chain: a shared base image (per `base`) and a top image.
fn v1_img(base: u64, top: u64, size: usize) -> V1Image {
    let base_id = sha256_hex(format!("storage-base-{base}").as_bytes());
    let top_id = sha256_hex(format!("storage-top-{base}-{top}").as_bytes());
    let base_json =
        format!(r#"{{"id":"{base_id}","created":"2015-01-01T00:00:00Z","os":"linux"}}"#);
    let top_json = format!(
        r#"{{"id":"{top_id}","parent":"{base_id}","created":"2015-01-02T00:00:00Z","os":"linux","comment":"{top}"}}"#
    );
    V1Image {
        ids: vec![base_id, top_id],
        jsons: vec![base_json.into_bytes(), top_json.into_bytes()],
        layers: vec![base_layer(base), random_bytes(size, 90_000 + top)],
    }
}

/// The Docker 1.x push sequence; `Err` on the first refused step.
fn v1_push(addr: SocketAddr, repo: &str, tag: &str, img: &V1Image) -> R<()> {
    Ok(try_v1_push(&mut Fresh(addr), repo, tag, img)?)
}

/// Every image of a V1 chain reads back byte-identical.
fn v1_verify(addr: SocketAddr, img: &V1Image) -> R<()> {
    for i in 0..img.ids.len() {
        let id = &img.ids[i];
        let j = get(addr, &format!("/v1/images/{id}/json"))?.expect(200, "json GET")?;
        if j.body != img.jsons[i] {
            return Err(format!("json of {id} differs"));
        }
        let l = get(addr, &format!("/v1/images/{id}/layer"))?.expect(200, "layer GET")?;
        if l.body != img.layers[i] {
            return Err(format!("layer of {id} differs"));
        }
        let a = get(addr, &format!("/v1/images/{id}/ancestry"))?.expect(200, "ancestry GET")?;
        let want: Vec<&String> = img.ids[..=i].iter().rev().collect();
        if serde_json::from_slice::<Vec<String>>(&a.body).map_err(|e| e.to_string())?
            != want.into_iter().cloned().collect::<Vec<_>>()
        {
            return Err(format!("ancestry of {id} differs"));
        }
    }
    Ok(())
}

/// A V2 image: the shared base layer (same bytes as the V1 base), a layer of
/// its own, a config and an OCI manifest.
fn v2_img(base: u64, top: u64, size: usize) -> V2Image {
    let layers = vec![base_layer(base), random_bytes(size, 50_000 + top)];
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"top": top.to_string()}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "base"}, {"created_by": format!("top {top}")}],
    });
    V2Image::with_config(layers, &config)
}

/// Uploads one blob in a session (POST, PATCH, PUT) unless the repository has it.
fn v2_upload(addr: SocketAddr, repo: &str, blob: &[u8]) -> R<()> {
    let d = digest(blob);
    if fetch(addr, "HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], b"")?.status == 200 {
        return Ok(());
    }
    try_v2_push_blob(&mut Fresh(addr), repo, blob)?;
    Ok(())
}

fn v2_push(addr: SocketAddr, repo: &str, tag: &str, img: &V2Image) -> R<()> {
    for b in img.blobs() {
        v2_upload(addr, repo, b)?;
    }
    Ok(try_v2_put_manifest(&mut Fresh(addr), repo, tag, img)?)
}

/// The manifest (by digest) and every blob read back byte-identical.
fn v2_verify(addr: SocketAddr, repo: &str, img: &V2Image) -> R<()> {
    let m =
        get(addr, &format!("/v2/{repo}/manifests/{}", img.digest))?.expect(200, "manifest GET")?;
    if m.body != img.manifest {
        return Err(format!("manifest {} differs", img.digest));
    }
    for b in img.blobs() {
        let d = digest(b);
        let r = get(addr, &format!("/v2/{repo}/blobs/{d}"))?.expect(200, "blob GET")?;
        if r.body != *b {
            return Err(format!("blob {d} differs"));
        }
    }
    Ok(())
}

// ---- store tools ----------------------------------------------------------------

fn gc(root: &Path, grace: &str) -> String {
    let (code, text) = store_tool(root, &["gc", "--grace", grace]);
    assert_eq!(code, 0, "gc failed: {text}");
    text
}

/// What a set of pushers reported: per (repository, tag), the images whose push succeeded.
#[derive(Default)]
struct Ledger {
    v1: HashMap<(String, String), Vec<V1Image>>,
    v2: HashMap<(String, String), Vec<V2Image>>,
    failures: Vec<String>,
}

/// Every successful push reads back byte-identical, and every tag names one
/// of the images successfully pushed to it, complete.
fn verify_ledger(addr: SocketAddr, ledger: &Ledger) {
    for ((repo, tag), imgs) in &ledger.v1 {
        for img in imgs {
            v1_verify(addr, img).unwrap_or_else(|e| panic!("{repo}:{tag}: {e}"));
        }
        let r = get(addr, &format!("/v1/repositories/{repo}/tags/{tag}")).unwrap();
        assert_eq!(r.status, 200, "{repo}:{tag}: {}", r.text());
        let top: String = serde_json::from_slice(&r.body).unwrap();
        assert!(
            imgs.iter().any(|i| i.ids.last() == Some(&top)),
            "{repo}:{tag} names {top}, which no successful push sent"
        );
    }
    for ((repo, tag), imgs) in &ledger.v2 {
        for img in imgs {
            v2_verify(addr, repo, img).unwrap_or_else(|e| panic!("{repo}:{tag}: {e}"));
        }
        let r = get(addr, &format!("/v2/{repo}/manifests/{tag}")).unwrap();
        assert_eq!(r.status, 200, "{repo}:{tag}: {}", r.text());
        let d = digest(&r.body);
        assert!(
            imgs.iter().any(|i| i.digest == d),
            "{repo}:{tag} names {d}, which no successful push sent"
        );
    }
}

// ---- tests ----------------------------------------------------------------------

/// 16 pushers on two server processes, several rounds, overlapping images
/// (shared base layers across V1 and V2, same and different tags).
#[test]
fn concurrent_writers_on_two_servers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let a = HttpServer::start(&root);
    let b = HttpServer::start(&root);
    let addrs = [a.addr, b.addr];
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let rounds = 3u64;
    let threads: Vec<_> = (0..16u64)
        .map(|w| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                for round in 0..rounds {
                    let addr = addrs[((w + round) % 2) as usize];
                    let base = (w + round) % BASES;
                    // Pushers pair up on tags: same tag from two workers, and
                    // the same top image pushed by two workers in a round.
                    let top = (w / 4) * 10 + round;
                    let tag = format!("t{}", w % 4);
                    let size = 32 * 1024 + (w as usize * 4096);
                    if w % 2 == 0 {
                        let repo = format!("st/v1-{}", w % 3);
                        let img = v1_img(base, top, size);
                        let mut result = Err(String::new());
                        for attempt in 0..4 {
                            result = v1_push(addr, &repo, &tag, &img);
                            if result.is_ok() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(30 * (attempt + 1)));
                        }
                        let mut l = ledger.lock().unwrap();
                        match result {
                            Ok(()) => l.v1.entry((repo, tag)).or_default().push(img),
                            Err(e) => l.failures.push(format!("v1 {repo}:{tag}: {e}")),
                        }
                    } else {
                        let repo = format!("st/v2-{}", w % 3);
                        let img = v2_img(base, top, size);
                        let mut result = Err(String::new());
                        for _ in 0..4 {
                            result = v2_push(addr, &repo, &tag, &img);
                            if result.is_ok() {
                                break;
                            }
                        }
                        let mut l = ledger.lock().unwrap();
                        match result {
                            Ok(()) => l.v2.entry((repo, tag)).or_default().push(img),
                            Err(e) => l.failures.push(format!("v2 {repo}:{tag}: {e}")),
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ledger = ledger.lock().unwrap();
    let ok: usize = ledger.v1.values().map(Vec::len).sum::<usize>()
        + ledger.v2.values().map(Vec::len).sum::<usize>();
    eprintln!(
        "concurrent writers: {ok} pushes succeeded, {} failed, in {:?}",
        ledger.failures.len(),
        started.elapsed()
    );
    // Two V1 clients racing on the very same image can legitimately be
    // refused (409: published under them); a server fault never is.
    assert!(
        ledger.failures.iter().all(|f| !f.contains(": 500")),
        "server faults: {:#?}",
        ledger.failures
    );
    assert!(
        ok * 4 >= 16 * rounds as usize * 3,
        "too many refused pushes: {:#?}",
        ledger.failures
    );
    verify_ledger(a.addr, &ledger);
    verify_ledger(b.addr, &ledger);
    assert_fsck_clean(&root);
}

/// SIGKILL the server at 50+ random moments during pushes; the store stays
/// consistent, completed pushes stay intact, interrupted ones can be redone.
#[test]
fn sigkill_during_pushes_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let kills = 52u64;
    let done = Arc::new(Mutex::new(Ledger::default()));
    let mut interrupted_v1: Vec<(String, V1Image)> = Vec::new();
    let mut interrupted_v2: Vec<(String, V2Image)> = Vec::new();
    let started = Instant::now();
    for k in 0..kills {
        let mut server = HttpServer::start(&root);
        let addr = server.addr;
        let pushers: Vec<_> = (0..3u64)
            .map(|w| {
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut cut: Interrupted = (vec![], vec![]);
                    for n in 0..50u64 {
                        let top = k * 1000 + w * 100 + n;
                        let size = 256 * 1024 + (top as usize % 7) * 65536;
                        let repo = format!("crash/w{w}");
                        let tag = format!("k{k}n{n}");
                        if (w + n) % 2 == 0 {
                            let img = v1_img(top % BASES, top, size);
                            match v1_push(addr, &repo, &tag, &img) {
                                Ok(()) => done
                                    .lock()
                                    .unwrap()
                                    .v1
                                    .entry((repo, tag))
                                    .or_default()
                                    .push(img),
                                Err(_) => {
                                    cut.0.push((format!("{repo}:{tag}"), img));
                                    break;
                                }
                            }
                        } else {
                            let img = v2_img(top % BASES, top, size);
                            match v2_push(addr, &repo, &tag, &img) {
                                Ok(()) => done
                                    .lock()
                                    .unwrap()
                                    .v2
                                    .entry((repo, tag))
                                    .or_default()
                                    .push(img),
                                Err(_) => {
                                    cut.1.push((format!("{repo}:{tag}"), img));
                                    break;
                                }
                            }
                        }
                    }
                    cut
                })
            })
            .collect();
        // A pseudo-random moment 20..260 ms into the pushes.
        let wait = 20 + (random_bytes(8, 424_242 + k)[0] as u64 % 240);
        std::thread::sleep(Duration::from_millis(wait));
        server.proc.kill();
        for p in pushers {
            let (v1, v2) = p.join().unwrap();
            interrupted_v1.extend(v1);
            interrupted_v2.extend(v2);
        }
    }
    let ledger = done.lock().unwrap();
    let completed = ledger.v1.len() + ledger.v2.len();
    eprintln!(
        "crash test: {kills} kills, {completed} pushes completed, {} interrupted, in {:?}",
        interrupted_v1.len() + interrupted_v2.len(),
        started.elapsed()
    );
    assert!(completed > 0, "no push ever completed between kills");

    // Repair removes temp files and other garbage leftovers only; then clean.
    let t = Instant::now();
    let (code, text) = fsck(&root, &["--repair", "--grace", "0s"]);
    assert_eq!(code, 0, "fsck --repair found problems:\n{text}");
    assert_fsck_clean(&root);
    eprintln!("crash test: fsck --repair and fsck in {:?}", t.elapsed());

    let t = Instant::now();
    let server = HttpServer::start(&root);
    verify_ledger(server.addr, &ledger);
    for (what, img) in &interrupted_v1 {
        let (repo, tag) = what.split_once(':').unwrap();
        v1_push(server.addr, repo, tag, img).unwrap_or_else(|e| panic!("re-push {what}: {e}"));
        v1_verify(server.addr, img).unwrap();
    }
    for (what, img) in &interrupted_v2 {
        let (repo, tag) = what.split_once(':').unwrap();
        v2_push(server.addr, repo, tag, img).unwrap_or_else(|e| panic!("re-push {what}: {e}"));
        v2_verify(server.addr, repo, img).unwrap();
    }
    eprintln!("crash test: verified and re-pushed in {:?}", t.elapsed());
    assert_fsck_clean(&root);
}

/// Pushes cut short by a kill: ("repo:tag", image) per protocol.
type Interrupted = (Vec<(String, V1Image)>, Vec<(String, V2Image)>);

/// Fast deterministic 1 GiB generator: a 1 MiB random block, each MiB stamped
/// with its index so no two MiB are equal.
struct BigLayer {
    block: Vec<u8>,
    len: u64,
}

impl BigLayer {
    const MIB: u64 = 1 << 20;

    fn new(len: u64) -> BigLayer {
        BigLayer {
            block: random_bytes(Self::MIB as usize, 31_337),
            len,
        }
    }

    /// Writes bytes `[from, to)` to `w`, returning how many were written.
    fn write_range(&self, w: &mut impl Write, from: u64, to: u64) -> std::io::Result<u64> {
        let mut pos = from;
        let mut buf = vec![0u8; Self::MIB as usize];
        while pos < to {
            let mib = pos / Self::MIB;
            buf.copy_from_slice(&self.block);
            buf[..8].copy_from_slice(&mib.to_le_bytes());
            let start = (pos % Self::MIB) as usize;
            let end = ((to - mib * Self::MIB).min(Self::MIB)) as usize;
            w.write_all(&buf[start..end])?;
            pos += (end - start) as u64;
        }
        Ok(to - from)
    }

    /// sha256 through `sha256sum` (this test binary is unoptimised, and the
    /// hash of 1 GiB would dominate the test's runtime).
    fn digest(&self) -> String {
        use std::process::Stdio;
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sha256sum (coreutils)");
        let mut stdin = child.stdin.take().unwrap();
        self.write_range(&mut stdin, 0, self.len).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        format!("sha256:{}", text.split_whitespace().next().unwrap())
    }
}

/// Sends a PATCH of `[from, to)` with `Content-Range`; with `cut_at`, sends
/// only up to there and drops the connection. Returns body bytes sent and
/// the response (none when cut).
fn patch_range(
    addr: SocketAddr,
    loc: &str,
    layer: &BigLayer,
    from: u64,
    to: u64,
    cut_at: Option<u64>,
) -> (u64, Option<HttpResponse>) {
    let range = format!("{from}-{}", to - 1);
    let mut s = stream_request(
        addr,
        "PATCH",
        loc,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        to - from,
    );
    let stop = cut_at.unwrap_or(to);
    let sent = layer
        .write_range(
            &mut std::io::BufWriter::with_capacity(1 << 20, &mut s),
            from,
            stop,
        )
        .unwrap();
    if cut_at.is_some() {
        s.shutdown(Shutdown::Both).unwrap();
        return (sent, None);
    }
    (sent, Some(read_answer(&s).unwrap()))
}

/// The server's offset of a session (`GET <location>` → `Range: 0-<last>`).
fn session_offset(addr: SocketAddr, loc: &str) -> u64 {
    let r = get(addr, loc).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let range = r.header("range").expect("Range header");
    let last: u64 = range.trim_start_matches("0-").parse().unwrap();
    if last == 0 {
        0
    } else {
        last + 1
    }
}

/// A 1 GiB layer upload cut at 50% on server A, resumed and finished through
/// server B from the offset B reports: only the missing half is sent again.
#[test]
fn interrupted_1gib_upload_resumes_at_server_offset() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let a = HttpServer::start(&root);
    let b = HttpServer::start(&root);
    let size: u64 = 1 << 30;
    let layer = BigLayer::new(size);
    let started = Instant::now();
    let digest = layer.digest();
    eprintln!("resume: layer digest computed in {:?}", started.elapsed());
    let repo = "big/layer";
    let r = fetch(
        a.addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.header("location").unwrap().to_string();

    let half = size / 2;
    let (sent1, _) = patch_range(a.addr, &loc, &layer, 0, size, Some(half));
    eprintln!("resume: first half sent at {:?}", started.elapsed());
    let off1 = session_offset(b.addr, &loc); // asked through the *other* process
    assert_eq!(
        off1, half,
        "the server kept every byte that arrived before the cut"
    );

    // The client resumes through the other process, from the server's offset.
    let (sent2, resp) = patch_range(b.addr, &loc, &layer, off1, size, None);
    eprintln!(
        "resume: second half sent through B at {:?}",
        started.elapsed()
    );
    let resp = resp.unwrap();
    assert_eq!(resp.status, 202, "{}", resp.text());
    assert_eq!(
        resp.header("range"),
        Some(format!("0-{}", size - 1).as_str())
    );
    let r = fetch(b.addr, "PUT", &format!("{loc}?digest={digest}"), &[], b"").unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let r = fetch(
        a.addr,
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));

    let total = sent1 + sent2;
    let resent = total - size;
    eprintln!(
        "resume: sent {sent1} + {sent2} = {total} bytes for a {size}-byte layer \
         ({resent} resent) in {:?}",
        started.elapsed()
    );
    assert_eq!(
        sent2,
        size - half,
        "only the remaining half was sent after the cut"
    );
    assert_eq!(resent, 0);
    // The session is gone once closed; fsck of this store (hashing 1 GiB in
    // an unoptimised build) is left to the other tests.
    assert_eq!(get(a.addr, &loc).unwrap().status, 404);
    drop((a, b));
    std::fs::remove_dir_all(&root).unwrap(); // do not keep 1 GiB around
}

/// gc runs repeatedly while pushes and pulls go on; afterwards unreferenced
/// data is gone and fsck is clean.
#[test]
fn gc_during_concurrent_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let a = HttpServer::start(&root);
    let b = HttpServer::start(&root);
    // Kept: a tagged V1 and V2 image. Garbage: an untagged V1 image, a V2
    // manifest whose tag moved on, and an orphan blob.
    let keep1 = v1_img(0, 1, 50_000);
    v1_push(a.addr, "gc/keep", "v1", &keep1).unwrap();
    let keep2 = v2_img(1, 2, 50_000);
    v2_push(a.addr, "gc/keep", "v2", &keep2).unwrap();
    // Every V1 base image the live pushers build on stays tagged: gc's
    // remaining window (docs/storage.md) is a push re-using an *unreferenced*
    // object older than the grace, which this test is not about.
    for base in 1..BASES {
        v1_push(
            a.addr,
            "gc/keep",
            &format!("base{base}"),
            &v1_img(base, 10 + base, 1000),
        )
        .unwrap();
    }
    let gone1 = v1_img(0, 3, 60_000);
    v1_push(a.addr, "gc/gone", "x", &gone1).unwrap();
    fetch(
        a.addr,
        "DELETE",
        "/v1/repositories/gc/gone/tags/x",
        &[],
        b"",
    )
    .unwrap()
    .expect(200, "tag DELETE")
    .unwrap();
    let gone2 = v2_img(2, 4, 60_000);
    v2_push(a.addr, "gc/moved", "t", &gone2).unwrap();
    let now2 = v2_img(2, 5, 60_000);
    v2_push(a.addr, "gc/moved", "t", &now2).unwrap();
    let orphan = random_bytes(70_000, 6);
    v2_upload(a.addr, "gc/orphan", &orphan).unwrap();
    // The V2 push of `gone2` was projected to V1 images too; collect their ids.
    let grace = 4u64;
    std::thread::sleep(Duration::from_secs(grace + 1));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut workers = Vec::new();
    for w in 0..6u64 {
        let (ledger, stop) = (ledger.clone(), stop.clone());
        let addr = [a.addr, b.addr][w as usize % 2];
        let (keep1, keep2) = (keep1.clone(), keep2.clone());
        workers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 3 {
                let top = 500 + w * 100 + n;
                let repo = format!("gc/live{w}");
                let tag = format!("n{n}");
                let r = if w % 3 == 0 {
                    // Pulls of the kept images while gc runs.
                    v1_verify(addr, &keep1).and_then(|_| v2_verify(addr, "gc/keep", &keep2))
                } else if w % 3 == 1 {
                    let img = v1_img(top % BASES, top, 40_000);
                    let r = v1_push(addr, &repo, &tag, &img);
                    if r.is_ok() {
                        ledger
                            .lock()
                            .unwrap()
                            .v1
                            .entry((repo, tag))
                            .or_default()
                            .push(img);
                    }
                    r
                } else {
                    let img = v2_img(top % BASES, top, 40_000);
                    let r = v2_push(addr, &repo, &tag, &img);
                    if r.is_ok() {
                        ledger
                            .lock()
                            .unwrap()
                            .v2
                            .entry((repo, tag))
                            .or_default()
                            .push(img);
                    }
                    r
                };
                if let Err(e) = r {
                    ledger
                        .lock()
                        .unwrap()
                        .failures
                        .push(format!("worker {w}: {e}"));
                }
                n += 1;
            }
        }));
    }
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(gc(&root, &format!("{grace}s")));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    eprintln!("gc during pushes:\n{}", runs.join(""));
    let ledger = ledger.lock().unwrap();
    assert!(ledger.failures.is_empty(), "{:#?}", ledger.failures);
    verify_ledger(a.addr, &ledger);
    verify_ledger(b.addr, &ledger);

    // Garbage is gone (it was older than the grace), the kept images are whole.
    let pool = root.join("_berth/blobs/sha256");
    for g in [&gone1.layers[1], &orphan, &gone2.layers[1], &gone2.manifest] {
        let hex = sha256_hex(g);
        assert!(!pool.join(&hex).exists(), "garbage blob {hex} survived gc");
    }
    assert_eq!(
        get(a.addr, &format!("/v1/images/{}/json", gone1.ids[1]))
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        get(a.addr, &format!("/v2/gc/moved/manifests/{}", gone2.digest))
            .unwrap()
            .status,
        404
    );
    v1_verify(a.addr, &keep1).unwrap();
    v2_verify(a.addr, "gc/keep", &keep2).unwrap();
    v2_verify(a.addr, "gc/moved", &now2).unwrap();
    // The shared base of gone1 is still used by live images.
    assert!(pool.join(sha256_hex(&gone1.layers[0])).exists());
    assert_fsck_clean(&root);
}

/// Unmounts on drop (also when the test fails).
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a 32 MiB filesystem at `dir`: tmpfs, else a loop-mounted ext4 image.
fn small_filesystem(dir: &Path, scratch: &Path) -> Option<Mount> {
    let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
    if ok(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(dir))
    {
        return Some(Mount(dir.to_path_buf()));
    }
    let img = scratch.join("small.ext4");
    let made = ok(Command::new("truncate").args(["-s", "32M"]).arg(&img))
        && ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))
        && ok(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(dir));
    made.then(|| Mount(dir.to_path_buf()))
}

/// A full disk: pushes fail with a clear error (not a hang), nothing partial
/// becomes visible, reads keep working and fsck stays clean.
#[test]
fn full_disk_fails_pushes_cleanly_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let Some(_mount) = small_filesystem(&root, dir.path()) else {
        assert!(
            !berth_tests::in_ci(),
            "cannot mount a small filesystem (tmpfs or loop ext4) under CI"
        );
        eprintln!("\n!!!!! SKIPPING full-disk test: neither tmpfs nor a loop ext4 could be mounted (needs root) !!!!!\n");
        return;
    };
    let server = HttpServer::start(&root);
    let addr = server.addr;
    let small = v1_img(0, 1, 100_000);
    v1_push(addr, "disk/small", "ok", &small).unwrap();
    let small2 = v2_img(1, 2, 100_000);
    v2_push(addr, "disk/small", "v2", &small2).unwrap();

    // V1: a 48 MiB layer into a 32 MiB filesystem.
    let big = v1_img(2, 3, 48 << 20);
    let t = Instant::now();
    let err = v1_push(addr, "disk/big", "x", &big).unwrap_err();
    eprintln!("full disk, V1 push: {err} (after {:?})", t.elapsed());
    assert!(err.contains("layer PUT: 500"), "{err}");
    assert!(
        err.contains("Storage error"),
        "the message says what failed: {err}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "no hang");
    let r = get(addr, &format!("/v1/images/{}/json", big.ids[1])).unwrap();
    assert_ne!(r.status, 200, "a failed image must not be visible");
    assert_eq!(
        get(addr, "/v1/repositories/disk/big/tags/x")
            .unwrap()
            .status,
        404
    );

    // V2: a chunked upload and a monolithic one of 48 MiB.
    let blob = random_bytes(48 << 20, 9);
    let d = digest(&blob);
    let t = Instant::now();
    let err = v2_upload(addr, "disk/big", &blob).unwrap_err();
    eprintln!("full disk, V2 upload: {err} (after {:?})", t.elapsed());
    assert!(err.contains("upload PATCH: 500"), "{err}");
    assert!(err.contains("UNKNOWN"), "{err}");
    let r = fetch(
        addr,
        "POST",
        &format!("/v2/disk/big/blobs/uploads/?digest={d}"),
        &[],
        &blob,
    )
    .unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(
        fetch(addr, "HEAD", &format!("/v2/disk/big/blobs/{d}"), &[], b"")
            .unwrap()
            .status,
        404
    );
    assert!(t.elapsed() < Duration::from_secs(60), "no hang");

    // Reads keep working; nothing half-written is left but temp files and
    // (cut back) upload sessions, which fsck does not count as problems.
    v1_verify(addr, &small).unwrap();
    v2_verify(addr, "disk/small", &small2).unwrap();
    assert_fsck_clean(&root);
    let mut tags = BTreeMap::new();
    tags.insert("ok", small.ids[1].clone());
    let r = get(addr, "/v1/repositories/disk/small/tags").unwrap();
    assert_eq!(
        serde_json::from_slice::<BTreeMap<String, String>>(&r.body).unwrap()["ok"],
        tags["ok"]
    );
    // Once space is back (the failed writes left nothing behind), pushes work again.
    let after = v1_img(0, 7, 100_000);
    v1_push(addr, "disk/small", "after", &after).unwrap();
    v1_verify(addr, &after).unwrap();
    drop(server);
}

/// Issue 15 attack: while one request streams into an upload session
/// through server A, a second writer of the same session through server B
/// must be refused at once (416 with the session's `Range`), not queued
/// behind the first and then appended after it; the first completes and
/// the blob publishes intact.
#[test]
fn a_second_writer_of_one_session_is_refused_across_servers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let a = HttpServer::start(&root);
    let b = HttpServer::start(&root);
    let blob = random_bytes(2 << 20, 1515);
    let digest = digest(&blob);
    let r = fetch(a.addr, "POST", "/v2/one/writer/blobs/uploads/", &[], b"").unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.header("location").unwrap().to_string();
    let id = loc.rsplit('/').next().unwrap().to_string();

    // Writer 1 through A: header and 1.5 MiB of its 2 MiB, then it pauses.
    let mut first = stream_request(
        a.addr,
        "PATCH",
        &loc,
        &[("Content-Type", "application/octet-stream")],
        blob.len() as u64,
    );
    let split = 3 << 19;
    first.write_all(&blob[..split]).unwrap();
    // The event: A's writer has put bytes on disk (it holds the session).
    let data = root.join("_berth/uploads").join(&id).join("data");
    eventually("writer 1 to write", Duration::from_secs(120), || {
        std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0) > 0
    });

    // Writer 2 through B, same session, no Content-Range (as docker sends).
    let started = Instant::now();
    let second = fetch(
        b.addr,
        "PATCH",
        &loc,
        &[("Content-Type", "application/octet-stream")],
        &blob,
    )
    .unwrap();
    eprintln!(
        "second writer answered {} in {:?}",
        second.status,
        started.elapsed()
    );
    assert_eq!(second.status, 416, "{}", second.text());
    assert!(second.text().contains("busy"), "{}", second.text());
    assert!(second.header("range").is_some(), "416 without Range");

    // Writer 1 finishes; the session holds exactly its bytes.
    first.write_all(&blob[split..]).unwrap();
    let r = read_answer(&first).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        r.header("range"),
        Some(format!("0-{}", blob.len() - 1).as_str())
    );
    let r = fetch(b.addr, "PUT", &format!("{loc}?digest={digest}"), &[], b"").unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let r = get(a.addr, &format!("/v2/one/writer/blobs/{digest}")).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == blob, "the published blob differs");
    assert_fsck_clean(&root);
}

/// Syscalls of a traced server that give a file a name or make it durable,
/// as `strace -f -y` prints them.
#[derive(Debug, PartialEq)]
enum Traced {
    /// `fsync`/`fdatasync` of the file at this path.
    Synced(String),
    /// A successful `link*`/`rename*` from the first path to the second.
    Named(String, String),
    /// A successful `mkdir*` of this path.
    Made(String),
    /// Bytes written to a socket: an answer leaving the server.
    Answered,
}

/// Parses one line of `strace -f -y -e trace=…` output (`PID call(args) = 0`;
/// a write's result is its byte count); failed calls and anything else are
/// `None`.
fn traced(line: &str) -> Option<Traced> {
    let call = line
        .split_once(' ')
        .map_or(line, |(_, rest)| rest.trim_start());
    let result = call.rsplit_once(" = ")?.1.trim_end();
    if ["write(", "writev(", "sendto(", "sendmsg("]
        .iter()
        .any(|c| call.starts_with(c))
    {
        let fd = call.split_once('<')?.1;
        let to_socket = fd.starts_with("socket:") || fd.starts_with("TCP");
        let wrote = result.parse::<u64>().is_ok_and(|n| n > 0);
        return (to_socket && wrote).then_some(Traced::Answered);
    }
    if result != "0" {
        return None;
    }
    if call.starts_with("fsync(") || call.starts_with("fdatasync(") {
        let path = call.split_once('<')?.1.split_once('>')?.0;
        Some(Traced::Synced(path.to_string()))
    } else if call.starts_with("mkdir(") || call.starts_with("mkdirat(") {
        let path = call.split('"').nth(1)?;
        Some(Traced::Made(path.to_string()))
    } else if ["link(", "linkat(", "rename(", "renameat(", "renameat2("]
        .iter()
        .any(|c| call.starts_with(c))
    {
        let quoted: Vec<&str> = call.split('"').skip(1).step_by(2).collect();
        match quoted[..] {
            [from, to] => Some(Traced::Named(from.to_string(), to.to_string())),
            _ => None,
        }
    } else {
        None
    }
}

/// The calls of `strace -f` output whole, in the order they returned: a call
/// another thread interrupted is printed as `PID call(… <unfinished ...>` and
/// later `PID <... call resumed>…) = 0`; the two halves are joined at the
/// second.
fn stitched(text: &str) -> Vec<String> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let (pid, call) = line.split_once(' ').unwrap_or(("", line));
        let call = call.trim_start();
        if let Some(head) = call.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_string(), head.trim_end().to_string());
        } else if call.starts_with("<... ") {
            let tail = call.split_once("resumed>").map_or("", |(_, t)| t);
            let head = pending.remove(pid).unwrap_or_default();
            calls.push(format!("{pid} {head}{tail}"));
        } else {
            calls.push(line.to_string());
        }
    }
    calls
}

/// Whether `path` names content in the blob pool (`blobs/sha256/<hex>`).
fn in_pool(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    let (Some(name), Some(alg), Some("blobs")) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    matches!(alg, "sha256" | "sha512")
        && name.len() >= 64
        && name.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn traced_syscalls_are_parsed() {
    let sync = r#"4242  fsync(9</s/blobs/sha256/.tmp-blob-00ff>) = 0"#;
    assert_eq!(
        traced(sync),
        Some(Traced::Synced("/s/blobs/sha256/.tmp-blob-00ff".into()))
    );
    let link = r#"4243 linkat(AT_FDCWD, "/s/a", AT_FDCWD, "/s/b", 0) = 0"#;
    assert_eq!(
        traced(link),
        Some(Traced::Named("/s/a".into(), "/s/b".into()))
    );
    let made = r#"4244 mkdir("/s/_berth/v2/x", 0750) = 0"#;
    assert_eq!(traced(made), Some(Traced::Made("/s/_berth/v2/x".into())));
    let made_at = r#"4244 mkdirat(AT_FDCWD</w>, "/s/y", 0750) = 0"#;
    assert_eq!(traced(made_at), Some(Traced::Made("/s/y".into())));
    let answer = r#"4245 writev(12<socket:[98765]>, [{iov_base="HTTP/1.1 201 Created"..., iov_len=20}], 1) = 20"#;
    assert_eq!(traced(answer), Some(Traced::Answered));
    let to_file = r#"4245 write(7</s/_berth/uploads/u/data>, "abc", 3) = 3"#;
    assert_eq!(traced(to_file), None);
    let failed = r#"4243 linkat(AT_FDCWD, "/s/a", AT_FDCWD, "/s/b", 0) = -1 EEXIST (File exists)"#;
    assert_eq!(traced(failed), None);
    let rename = r#"7 renameat2(AT_FDCWD, "/s/t", AT_FDCWD, "/s/u", RENAME_NOREPLACE) = 0"#;
    let split = "5 fsync(3</s/x> <unfinished ...>\n6 rename(\"/a\", \"/b\") = 0\n5 <... fsync resumed>) = 0";
    assert_eq!(
        stitched(split),
        vec![
            r#"6 rename("/a", "/b") = 0"#.to_string(),
            "5 fsync(3</s/x>) = 0".to_string()
        ]
    );
    assert_eq!(
        traced(rename),
        Some(Traced::Named("/s/t".into(), "/s/u".into()))
    );
    assert!(in_pool(&format!("/s/blobs/sha256/{}", "a".repeat(64))));
    assert!(!in_pool("/s/blobs/sha256/.tmp-blob-00ff"));
    assert!(!in_pool(&format!(
        "/s/_berth/facts/sha256/{}",
        "a".repeat(64)
    )));
}

/// A power cut must never leave a short or empty file under a digest name:
/// the pool is trusted by name (a re-push of present content writes nothing).
/// So every file that gets a name in the pool was fsynced first, under that
/// name or one it was linked or renamed from. The server runs under `strace`
/// while V2 blobs (session and monolithic), configs and manifests are pushed
/// and a V1 push is read back over V2 (its derived config and manifest).
/// The same trace shows two more things a power cut must not undo: every
/// directory the server makes is durable (its parent fsynced) before a
/// name is given inside it (a new repository's `_tags/` and `_blobs/`, an
/// image's directory), and a closed upload session's removal is durable
/// before the answer leaves (its data is the pool blob's inode). Both
/// failed before (the tenth session).
#[test]
fn every_file_named_in_the_pool_was_fsynced_first() {
    if !require_tool("strace", "strace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let trace = dir.path().join("trace");
    let mut strace = Command::new("strace");
    strace.args(["-f", "-qq", "-y", "-o"]).arg(&trace).args([
        "-e",
        "trace=fsync,fdatasync,link,linkat,rename,renameat,renameat2,mkdir,mkdirat,\
         write,writev,sendto,sendmsg",
    ]);
    let HttpServer {
        proc: mut server,
        addr,
    } = HttpServer::start_under(&root, strace);

    let img = v2_img(1, 1, 300 << 10);
    v2_push(addr, "durable/v2", "1", &img).unwrap();
    let mono = random_bytes(200 << 10, 77);
    let d = digest(&mono);
    let r = fetch(
        addr,
        "POST",
        &format!("/v2/durable/v2/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        &mono,
    )
    .unwrap();
    assert_eq!(r.status, 201, "monolithic upload: {}", r.text());
    let v1 = v1_img(2, 2, 100 << 10);
    v1_push(addr, "durable/v1", "1", &v1).unwrap();
    get(addr, "/v2/durable/v1/manifests/1")
        .unwrap()
        .expect(200, "the V1 image read over V2")
        .unwrap();

    // The tracer's child is the server: stop it first, so strace sees it exit.
    let strace_pid = server.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .unwrap_or_default();
    for pid in children.split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    let _ = server.child.wait();
    server.kill();

    let text = std::fs::read_to_string(&trace).unwrap();
    let mut durable = HashSet::new();
    let mut published = Vec::new();
    // Directories made whose parent was not fsynced since: a name given
    // inside one can vanish with it in a power cut, fsynced or not.
    let mut made: Vec<String> = Vec::new();
    let mut named_in_undurable_dir = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut answered_before_removal_durable = Vec::new();
    for event in stitched(&text).iter().filter_map(|c| traced(c)) {
        match event {
            Traced::Synced(path) => {
                made.retain(|d| Path::new(d).parent() != Some(Path::new(&path)));
                removed.retain(|d| Path::new(d).parent() != Some(Path::new(&path)));
                durable.insert(path);
            }
            Traced::Made(path) => made.push(path),
            Traced::Answered => {
                if let Some(d) = removed.first() {
                    answered_before_removal_durable.push(d.clone());
                }
            }
            Traced::Named(from, to) => {
                let synced = durable.contains(&from);
                if in_pool(&to) {
                    published.push((from.clone(), to.clone(), synced));
                }
                // An upload session renamed out of the way to be removed
                // (closed into the pool, cancelled): until its directory
                // is fsynced a power cut can bring it back, and a retried
                // close would append to its data, the pool blob's inode.
                if Path::new(&to)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-gone-"))
                {
                    removed.push(to.clone());
                }
                if let Some(d) = made.iter().find(|d| Path::new(&to).starts_with(d)) {
                    named_in_undurable_dir.push(format!("{to} (in {d})"));
                }
                if synced {
                    durable.insert(to);
                }
            }
        }
    }
    assert!(
        answered_before_removal_durable.is_empty(),
        "answered before the removal of a closed upload session was durable:\n{}",
        answered_before_removal_durable.join("\n")
    );
    assert!(
        named_in_undurable_dir.is_empty(),
        "named in a directory made without an fsync of its parent:\n{}",
        named_in_undurable_dir.join("\n")
    );
    // The V2 image's two layers, config and manifest, the monolithic blob,
    // the V1 image's two layers, and the config and manifest derived from
    // it: nine names given in the pool at least.
    assert!(
        published.len() >= 9,
        "only {} pool names seen in the trace:\n{text}",
        published.len()
    );
    let unsynced: Vec<String> = published
        .iter()
        .filter(|(_, _, synced)| !synced)
        .map(|(from, to, _)| format!("{from} -> {to}"))
        .collect();
    assert!(
        unsynced.is_empty(),
        "named in the pool without an fsync first:\n{}",
        unsynced.join("\n")
    );
    assert_fsck_clean(&root);
}

/// gc decides on marks that can be a mark pass and 200 ms old, and re-reads
/// ages right before it unlinks. A push that names an old, unreferenced blob
/// without rewriting it (HEAD says present, then the manifest PUT) must make
/// it young *before* the PUT checks it, or a gc whose marks predate the new
/// tag unlinks it under that tag. Here the PUT is refused (it also names a
/// blob never uploaded), as a client's first attempt may be: what it found
/// present must still be there when the client PUTs again, whatever gc ran
/// in between. An unrelated old orphan shows that gc did collect.
#[test]
fn gc_spares_the_old_blobs_a_manifest_push_just_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let server = HttpServer::start(&root);
    let img = v2_img(7, 7, 10_000);
    for b in img.blobs() {
        v2_upload(server.addr, "gc/renew", b).unwrap();
    }
    let orphan = random_bytes(10_000, 7070);
    v2_upload(server.addr, "gc/renew", &orphan).unwrap();
    let files = |blob: &[u8]| {
        let hex = digest(blob).trim_start_matches("sha256:").to_string();
        [
            root.join("_berth/blobs/sha256").join(&hex),
            root.join("_berth/v2/gc/renew/_blobs").join(&hex),
        ]
    };
    // The event gc's grace waits for: every file older than it.
    let grace = Duration::from_secs(10);
    let all: Vec<_> = img
        .blobs()
        .map(|b| b.as_slice())
        .chain([orphan.as_slice()])
        .flat_map(files)
        .collect();
    wait_until_older_than(&all, grace);

    // The first PUT names the image's blobs and one never uploaded.
    let mut manifest: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    let missing = random_bytes(100, 7071);
    manifest["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest(&missing), "size": missing.len(),
        }));
    let body = serde_json::to_vec(&manifest).unwrap();
    let r = fetch(
        server.addr,
        "PUT",
        "/v2/gc/renew/manifests/1",
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("MANIFEST_BLOB_UNKNOWN"), "{}", r.text());

    let report = gc(&root, "10s");
    for b in img.blobs() {
        for f in files(b) {
            assert!(
                f.exists(),
                "gc removed {} named by the PUT:\n{report}",
                f.display()
            );
        }
    }
    for f in files(&orphan) {
        assert!(
            !f.exists(),
            "gc kept the old orphan {}:\n{report}",
            f.display()
        );
    }
    // The client's second attempt needs no upload of what it found present.
    try_v2_put_manifest(&mut Fresh(server.addr), "gc/renew", "1", &img).unwrap();
    v2_verify(server.addr, "gc/renew", &img).unwrap();
    assert_fsck_clean(&root);
}

/// A push finds old, unreferenced blobs present in ways that write nothing
/// to them: a HEAD answering 200, an upload of bytes the pool already has
/// (a closed session, a monolithic POST), a mount. Each must renew the blob
/// for gc, as the manifest PUT does, since the PUT may come long after
/// (other layers still uploading). Before, a gc in between removed them,
/// and the PUT of a push that did everything right failed with
/// `MANIFEST_BLOB_UNKNOWN`. An unrelated old orphan shows that gc did
/// collect.
#[test]
fn gc_spares_the_old_blobs_a_push_found_present_before_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let server = HttpServer::start(&root);
    let layers = vec![
        base_layer(9),
        random_bytes(10_000, 7080),
        random_bytes(10_000, 7081),
    ];
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let img = V2Image::with_config(layers.clone(), &config);
    let config_bytes = img.blobs().find(|b| !layers.contains(b)).unwrap().clone();
    let [head_me, session_me, post_me, mount_me] =
        [&config_bytes, &layers[0], &layers[1], &layers[2]];
    for b in [head_me, session_me, post_me] {
        v2_upload(server.addr, "gc/found", b).unwrap();
    }
    v2_upload(server.addr, "gc/other", mount_me).unwrap();
    let orphan = random_bytes(10_000, 7082);
    v2_upload(server.addr, "gc/found", &orphan).unwrap();
    let pool = |blob: &[u8]| {
        let hex = digest(blob).trim_start_matches("sha256:").to_string();
        root.join("_berth/blobs/sha256").join(hex)
    };
    let grace = Duration::from_secs(10);
    let everything = files_under(&root.join("_berth"));
    wait_until_older_than(&everything, grace);

    // The push finds each one present.
    let d = digest(head_me);
    let r = fetch(
        server.addr,
        "HEAD",
        &format!("/v2/gc/found/blobs/{d}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    try_v2_push_blob(&mut Fresh(server.addr), "gc/found", session_me).unwrap();
    let d = digest(post_me);
    let r = fetch(
        server.addr,
        "POST",
        &format!("/v2/gc/found/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        post_me,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let d = digest(mount_me);
    let r = fetch(
        server.addr,
        "POST",
        &format!("/v2/gc/found/blobs/uploads/?mount={d}&from=gc/other"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    let report = gc(&root, "10s");
    for b in [head_me, session_me, post_me, mount_me] {
        assert!(
            pool(b).exists(),
            "gc removed {} that the push was told is present:\n{report}",
            digest(b)
        );
    }
    assert!(!pool(&orphan).exists(), "gc kept the old orphan:\n{report}");
    try_v2_put_manifest(&mut Fresh(server.addr), "gc/found", "1", &img).unwrap();
}

// ---- hosts whose clocks disagree --------------------------------------------------

/// A command running a berth process on a host whose clock is `offset`
/// off (libfaketime's format: `+2h`, `-2h`). Only the process's clock is
/// off: file times still come from the filesystem's clock, as a store on
/// NFS is stamped by its server whatever the writing host's clock says.
/// `env` execs the program with libfaketime preloaded, so the process a
/// test stops is berth's itself (the `faketime` wrapper forks, and
/// stopping it would leave berth running).
fn on_skewed_host(offset: &str) -> Command {
    let lib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("faketime/libfaketimeMT.so.1")))
        .find(|p| p.exists())
        .expect("libfaketimeMT.so.1 (Debian package faketime)");
    let mut c = Command::new("env");
    c.arg(format!("LD_PRELOAD={}", lib.display()))
        .arg(format!("FAKETIME={offset}"))
        .args(["FAKETIME_DONT_FAKE_MONOTONIC=1", "NO_FAKE_STAT=1"]);
    c
}

/// The pool file of `blob` under `root`.
fn pool_file(root: &Path, blob: &[u8]) -> std::path::PathBuf {
    let hex = digest(blob).trim_start_matches("sha256:").to_string();
    root.join("_berth/blobs/sha256").join(hex)
}

/// gc on a host whose clock runs two hours ahead of the store's (an NFS
/// server and its clients drift apart when one has no NTP). gc read every
/// file's age against its own clock, so a blob a push uploaded a moment
/// ago looked two hours old and was collected under the push. gc reads
/// ages on the store's clock: an old orphan still goes, the fresh blob
/// stays.
#[test]
fn gc_on_a_host_whose_clock_runs_ahead_keeps_a_push_in_flight() {
    if !require_tool("faketime", "faketime") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let server = HttpServer::start(&root);
    let orphan = random_bytes(10_000, 7090);
    v2_upload(server.addr, "clock/ahead", &orphan).unwrap();
    let grace = Duration::from_secs(10);
    wait_until_older_than(&files_under(&root.join("_berth")), grace);
    let in_flight = random_bytes(10_000, 7091);
    v2_upload(server.addr, "clock/ahead", &in_flight).unwrap();

    let out = run_ok(
        on_skewed_host("+2h")
            .arg(bin("berth-server"))
            .args(["gc", "--grace", "10s", "--root"])
            .arg(&root),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        pool_file(&root, &in_flight).exists(),
        "gc on a host two hours ahead removed a blob uploaded just now:\n{report}"
    );
    assert!(
        !pool_file(&root, &orphan).exists(),
        "gc kept the old orphan:\n{report}"
    );
}

/// A push through a host whose clock lags two hours behind finds an old
/// blob present (a writer's HEAD answering 200), which renews it for gc.
/// The renewal stamped the marker with the writer's clock, two hours in
/// the past, so gc on a correct host took it for an old renewal and
/// removed the blob before the push's manifest named it. A renewal is
/// stamped by the store's clock.
#[test]
fn a_renewal_by_a_host_whose_clock_lags_keeps_the_blob_from_gc() {
    if !require_tool("faketime", "faketime") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let server = HttpServer::start(&root);
    let (found, orphan) = (random_bytes(10_000, 7092), random_bytes(10_000, 7093));
    for b in [&found, &orphan] {
        v2_upload(server.addr, "clock/behind", b).unwrap();
    }
    let grace = Duration::from_secs(10);
    wait_until_older_than(&files_under(&root.join("_berth")), grace);

    let lagging = HttpServer::start_under(&root, on_skewed_host("-2h"));
    let d = digest(&found);
    let r = fetch(
        lagging.addr,
        "HEAD",
        &format!("/v2/clock/behind/blobs/{d}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);

    let report = gc(&root, "10s");
    assert!(
        pool_file(&root, &found).exists(),
        "gc removed the blob a push through a lagging host was just told is present:\n{report}"
    );
    assert!(
        !pool_file(&root, &orphan).exists(),
        "gc kept the old orphan:\n{report}"
    );
}

/// A push pauses between two chunks of a layer (docker does, while it
/// reads the next chunk from a slow disk; a client resumes the next day
/// within the 24 h a session lasts). Another host whose clock runs a day
/// ahead starts an upload, which sweeps sessions idle longer than a day
/// by its own clock: it removed the paused session, and the push's next
/// chunk found none. The sweep reads idleness on the store's clock.
#[test]
fn a_host_a_day_ahead_does_not_sweep_a_paused_upload() {
    if !require_tool("faketime", "faketime") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let server = HttpServer::start(&root);
    let blob = random_bytes(100_000, 7094);
    let d = digest(&blob);
    let r = fetch(
        server.addr,
        "POST",
        "/v2/clock/paused/blobs/uploads/",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.header("location").unwrap().to_string();
    let half = blob.len() / 2;
    let r = fetch(
        server.addr,
        "PATCH",
        &loc,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &format!("0-{}", half - 1)),
        ],
        &blob[..half],
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());

    // The host a day ahead starts an upload of its own (the sweep runs first).
    let ahead = HttpServer::start_under(&root, on_skewed_host("+25h"));
    let r = fetch(
        ahead.addr,
        "POST",
        "/v2/clock/other/blobs/uploads/",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());

    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = fetch(
        server.addr,
        "PUT",
        &format!("{loc}{sep}digest={d}"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &format!("{half}-{}", blob.len() - 1)),
        ],
        &blob[half..],
    )
    .unwrap();
    assert_eq!(
        r.status,
        201,
        "the paused upload did not survive a host a day ahead: {}",
        r.text()
    );
    assert!(pool_file(&root, &blob).exists());
}
