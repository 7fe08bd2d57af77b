//! The client (`registryget`, `registryput`, `berth ...`) against real peers:
//! every remote kind (mount point, native SSH to `berth-server serve`,
//! native SSH to stock sshd hosting `berth-server stdio`, OpenSSH through
//! `BERTH_SSH_COMMAND`) moves the same bytes; jump hosts (native `-J` and
//! OpenSSH ProxyJump); host key checks; the shim with the Docker 1.x V1
//! sequence, the Python V1 client and curl; and failures mid-transfer.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_tests::*;

/// How long an expected event may take on a loaded machine (a bound on a
/// hang, never a guess at timing).
const DEADLINE: Duration = Duration::from_secs(60);

/// Keys, store and known_hosts of one test, in one temp dir.
struct Fixture {
    keys: Keyring,
    key: ClientKey,
    authorized: PathBuf,
    known_hosts: PathBuf,
}

impl std::ops::Deref for Fixture {
    type Target = Keyring;
    fn deref(&self) -> &Keyring {
        &self.keys
    }
}

impl Fixture {
    fn new() -> Option<Fixture> {
        let keys = Keyring::new(&["alice"])?;
        Some(Fixture {
            authorized: keys.authorized_keys(&["alice"]),
            known_hosts: keys.state.join("known_hosts"),
            key: keys.key("alice").clone(),
            keys,
        })
    }

    /// Appends lines to the test's known_hosts file.
    fn trust(&self, lines: &[String]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.known_hosts)
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    /// `berth-server stdio` as sshd's `docker-registry` subsystem.
    fn sshd_with_stdio(&self) -> Sshd {
        let sub = format!(
            "{} stdio --root {} --user tester",
            bin("berth-server").display(),
            self.root.display()
        );
        let sshd_dir = self.dir.path().join("sshd");
        std::fs::create_dir_all(&sshd_dir).unwrap();
        Sshd::start(&sshd_dir, &self.authorized, Some(&sub))
    }

    /// A new ed25519 key in the state directory, encrypted with the
    /// passphrase `open sesame` and authorized on the servers.
    fn locked_key(&self, name: &str) -> PathBuf {
        let locked = self.state.join(name);
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "open sesame", "-f"])
                .arg(&locked),
        );
        let public = std::fs::read_to_string(format!("{}.pub", locked.display())).unwrap();
        let mut keys = std::fs::read_to_string(&self.authorized).unwrap();
        keys.push_str(&public);
        std::fs::write(&self.authorized, keys).unwrap();
        locked
    }

    /// A stock sshd without the subsystem (a bastion).
    fn bastion(&self) -> Sshd {
        let d = self.dir.path().join("bastion");
        std::fs::create_dir_all(&d).unwrap();
        Sshd::start(&d, &self.authorized, None)
    }
}

/// How a command reaches the registry: the REGISTRY argument, extra flags
/// placed before it, and environment variables.
#[derive(Clone)]
struct Via {
    registry: String,
    flags: Vec<String>,
    env: Vec<(String, String)>,
}

impl Via {
    fn local(root: &Path) -> Via {
        Via {
            registry: root.display().to_string(),
            flags: vec![],
            env: vec![],
        }
    }

    fn native(f: &Fixture, port: u16) -> Via {
        Self::native_as(f, port, &f.key.private)
    }

    /// [`Via::native`] logging in with another private key (long forms:
    /// `-i` means `--include` for get/put).
    fn native_as(f: &Fixture, port: u16, key: &Path) -> Via {
        Via {
            registry: format!("ssh://root@127.0.0.1:{port}"),
            flags: vec![
                "--identity".into(),
                key.display().to_string(),
                "--known-hosts".into(),
                f.known_hosts.display().to_string(),
            ],
            env: vec![],
        }
    }

    /// `BERTH_SSH_COMMAND="ssh <options>"` (port passed by berth as `-p`).
    fn openssh(f: &Fixture, port: u16) -> Via {
        let opts: Vec<String> = ssh_options(&f.key.private, port);
        let mut kept = Vec::new();
        let mut it = opts.into_iter();
        while let Some(o) = it.next() {
            if o == "-p" {
                it.next();
                continue;
            }
            kept.push(o);
        }
        Via {
            registry: format!("ssh://root@127.0.0.1:{port}"),
            flags: vec![],
            env: vec![(
                "BERTH_SSH_COMMAND".into(),
                format!("ssh {}", kept.join(" ")),
            )],
        }
    }

    /// A client command: `prog [sub] FLAGS... REGISTRY ARGS...`.
    fn cmd(&self, prog: &str, sub: Option<&str>, pre: &[&str], args: &[&str]) -> Command {
        let mut c = Command::new(bin(prog));
        if let Some(s) = sub {
            c.arg(s);
        }
        c.args(pre).args(&self.flags).arg(&self.registry).args(args);
        c.env_remove("SSH_AUTH_SOCK")
            .env_remove("BERTH_SSH_COMMAND");
        c.env("HOME", std::env::temp_dir().join("berth-test-no-home"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn get(&self, pre: &[&str], path: &str) -> Output {
        run_with_input(&mut self.cmd("registryget", None, pre, &[path]), b"")
    }

    fn put(&self, pre: &[&str], path: &str, body: &[u8]) -> Output {
        run_with_input(&mut self.cmd("registryput", None, pre, &[path]), body)
    }
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The V1 upload/download every remote kind must carry byte for byte: json,
/// layer (streamed from stdin, and from a file), checksum, tag; then json
/// and layer back, `-i` headers, an error status, and the listing commands.
fn roundtrip(via: &Via, seed: u64, layer_size: usize) {
    let img = V1Image::chain(seed, 1, layer_size);
    let id = &img.ids[0];
    let repo = format!("team/app{seed}");
    ok(
        via.put(&[], &format!("/v1/images/{id}/json"), &img.jsons[0]),
        "json PUT",
    );
    ok(
        via.put(&[], &format!("/v1/images/{id}/layer"), &img.layers[0]),
        "layer PUT",
    );
    let sum = img.payload_checksum(0);
    ok(
        via.put(
            &[
                "-H",
                &format!("X-Docker-Checksum-Payload: {sum}"),
                "-H",
                "X-Docker-Checksum: tarsum+sha256:0",
            ],
            &format!("/v1/images/{id}/checksum"),
            b"",
        ),
        "checksum PUT",
    );
    ok(
        via.put(
            &[],
            &format!("/v1/repositories/{repo}/tags/latest"),
            format!("\"{id}\"").as_bytes(),
        ),
        "tag PUT",
    );

    let json = ok(via.get(&[], &format!("/v1/images/{id}/json")), "json GET");
    assert_eq!(json.stdout, img.jsons[0], "json bytes differ");
    let layer = ok(via.get(&[], &format!("/v1/images/{id}/layer")), "layer GET");
    assert_eq!(layer.stdout.len(), img.layers[0].len());
    assert!(layer.stdout == img.layers[0], "layer bytes differ");
    // `berth get` is the same command.
    let layer2 = ok(
        run_with_input(
            &mut via.cmd(
                "berth",
                Some("get"),
                &[],
                &[&format!("/v1/images/{id}/layer")],
            ),
            b"",
        ),
        "berth get",
    );
    assert_eq!(sha256_hex(&layer2.stdout), sha256_hex(&img.layers[0]));

    // -i: status line and headers before the body, like curl -i.
    let head = ok(via.get(&["-i"], &format!("/v1/images/{id}/json")), "GET -i");
    let text = String::from_utf8_lossy(&head.stdout).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("x-docker-checksum-payload: {sum}")),
        "{text}"
    );
    assert!(head.stdout.ends_with(&img.jsons[0]));

    // An error status: exit 1, the registry's message on stderr.
    let missing = "0".repeat(64);
    let out = via.get(&[], &format!("/v1/images/{missing}/json"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.starts_with("registryget: GET /v1/images/"), "{err}");
    assert!(
        err.contains("404") && err.contains("Image not found"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    // ls / tags / search / rm over the same remote.
    ok(
        via.put(
            &[],
            &format!("/v1/repositories/{repo}/tags/v1"),
            format!("\"{id}\"").as_bytes(),
        ),
        "second tag PUT",
    );
    let berth = |sub: &str, args: &[&str]| -> Output {
        ok(
            run_with_input(&mut via.cmd("berth", Some(sub), &["--json"], args), b""),
            sub,
        )
    };
    let json = |out: Output| -> serde_json::Value { serde_json::from_slice(&out.stdout).unwrap() };
    let ls = json(berth("ls", &[]));
    assert!(
        ls.as_array().unwrap().contains(&serde_json::json!(repo)),
        "{ls}"
    );
    let found = json(berth("search", &[&format!("app{seed}")]));
    assert_eq!(found, serde_json::json!([repo]));
    let tags = json(berth("tags", &[&repo]));
    assert_eq!(tags, serde_json::json!({ "latest": id, "v1": id }));
    let human = ok(
        run_with_input(&mut via.cmd("berth", Some("tags"), &[], &[&repo]), b""),
        "tags",
    );
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(
        human.contains("latest") && human.contains(id.as_str()),
        "{human}"
    );
    let rm = json(berth("rm", &[&format!("{repo}:latest")]));
    assert_eq!(
        rm,
        serde_json::json!({ "deleted": format!("{repo}:latest") })
    );
    assert_eq!(
        json(berth("tags", &[&repo])),
        serde_json::json!({ "v1": id })
    );
    let out = run_with_input(
        &mut via.cmd("berth", Some("rm"), &[], &[&format!("{repo}:nope")]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("berth: DELETE"),
        "{}",
        stderr(&out)
    );
    // The whole repository.
    let out = ok(
        run_with_input(&mut via.cmd("berth", Some("rm"), &[], &[&repo]), b""),
        "rm repository",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("deleted repository {repo}\n")
    );
    let ls = json(berth("ls", &[]));
    assert!(
        !ls.as_array().unwrap().contains(&serde_json::json!(repo)),
        "{ls}"
    );
    // The image itself stays readable after its tags are gone.
    let again = ok(
        via.get(&[], &format!("/v1/images/{id}/json")),
        "json GET after rm",
    );
    assert_eq!(again.stdout, img.jsons[0]);
}

#[test]
fn roundtrip_over_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    roundtrip(&Via::local(&root), 1, 3 << 20);
    // file:///abs/dir names the same store.
    let via = Via {
        registry: format!("file://{}", root.display()),
        ..Via::local(&root)
    };
    let ls = ok(
        run_with_input(&mut via.cmd("berth", Some("ls"), &[], &[]), b""),
        "ls",
    );
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "");
    ok(
        via.put(
            &[],
            "/v1/repositories/solo/tags/latest",
            format!("\"{}\"", V1Image::chain(1, 1, 10).ids[0]).as_bytes(),
        ),
        "tag via file://",
    );
    let ls = ok(
        run_with_input(
            &mut Via::local(&root).cmd("berth", Some("ls"), &[], &[]),
            b"",
        ),
        "ls",
    );
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "library/solo\n");
}

#[test]
fn roundtrip_over_native_ssh_to_berth_server() {
    let Some(f) = Fixture::new() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    f.trust(&[server.known_hosts_line()]);
    roundtrip(&Via::native(&f, server.port()), 2, 5 << 20);
}

#[test]
fn roundtrip_over_native_ssh_to_stock_sshd() {
    let Some(f) = Fixture::new() else { return };
    if !require_tool("/usr/sbin/sshd", "openssh-server") {
        return;
    }
    let sshd = f.sshd_with_stdio();
    f.trust(&[known_hosts_line(sshd.port, &sshd.host_key)]);
    roundtrip(&Via::native(&f, sshd.port), 3, 3 << 20);
}

#[test]
fn roundtrip_over_openssh_command() {
    let Some(f) = Fixture::new() else { return };
    if !require_tool("ssh", "openssh-client") || !require_tool("/usr/sbin/sshd", "openssh-server") {
        return;
    }
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    roundtrip(&Via::openssh(&f, server.port()), 4, 3 << 20);
    let sshd = f.sshd_with_stdio();
    roundtrip(&Via::openssh(&f, sshd.port), 5, 1 << 20);

    // When ssh fails, its own words are in the error.
    let mut via = Via::openssh(&f, free_port());
    via.env[0].1.push_str(" -o ConnectTimeout=5");
    let out = via.get(&[], "/v1/_ping");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("ssh said:") && err.contains("onnection refused"),
        "{err}"
    );
}

#[test]
fn jump_hosts_native_and_openssh_proxyjump() {
    let Some(f) = Fixture::new() else { return };
    if !require_tool("ssh", "openssh-client") || !require_tool("/usr/sbin/sshd", "openssh-server") {
        return;
    }
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    let bastion = f.bastion();
    f.trust(&[
        server.known_hosts_line(),
        known_hosts_line(bastion.port, &bastion.host_key),
    ]);

    // Native: -J through the bastion (sshd does the direct-tcpip).
    let mut via = Via::native(&f, server.port());
    via.flags
        .extend(["-J".to_string(), format!("root@127.0.0.1:{}", bastion.port)]);
    roundtrip(&via, 6, 2 << 20);

    // Two hops, as a comma list: bastion, then bastion again.
    let mut via2 = Via::native(&f, server.port());
    via2.flags.extend([
        "-J".to_string(),
        format!("root@127.0.0.1:{0},root@127.0.0.1:{0}", bastion.port),
    ]);
    let img = V1Image::chain(6, 1, 2 << 20);
    let out = ok(
        via2.get(&[], &format!("/v1/images/{}/layer", img.ids[0])),
        "2 hops",
    );
    assert!(out.stdout == img.layers[0]);

    // A bastion that is down: a clear error naming it.
    let mut bad = Via::native(&f, server.port());
    bad.flags
        .extend(["-J".to_string(), format!("root@127.0.0.1:{}", free_port())]);
    let out = bad.get(&[], "/v1/_ping");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("connecting to 127.0.0.1:"),
        "{}",
        stderr(&out)
    );

    // OpenSSH: ProxyJump from an ssh config file, BERTH_SSH_COMMAND="ssh -F cfg".
    let common = format!(
        "  HostName 127.0.0.1\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n",
        f.key.private.display(),
        f.known_hosts.display()
    );
    let cfg = f.state.join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host bastion\n  Port {}\n{common}\nHost registry\n  Port {}\n  ProxyJump bastion\n{common}",
            bastion.port,
            server.port()
        ),
    )
    .unwrap();
    let via = Via {
        registry: "ssh://registry".into(),
        flags: vec![],
        env: vec![(
            "BERTH_SSH_COMMAND".into(),
            format!("ssh -F {}", cfg.display()),
        )],
    };
    roundtrip(&via, 7, 2 << 20);
}

/// The SSH connections (`conn=N` of the server's `channel{..}` spans) that
/// carried channels in the part of the debug log `log` after byte `from`.
fn connections_with_channels(log: &Path, from: usize) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("channel started"))
        .filter_map(|l| {
            let at = l.find("channel{conn=")? + "channel{conn=".len();
            let n = &l[at..];
            Some(n[..n.find(|c: char| !c.is_ascii_digit())?].to_string())
        })
        .collect()
}

/// A logged `berth-server serve` (with `extra` flags) behind the stock
/// sshd jump host of the fixture, and the way there (`-J`).
struct BehindAJump {
    _server: SshServer,
    _bastion: Sshd,
    via: Via,
    /// The server's debug log ([`SshServer::start_logged`]).
    log: PathBuf,
}

impl BehindAJump {
    fn start(f: &Fixture, extra: &[&str]) -> BehindAJump {
        let log = f.dir.path().join("server.log");
        let server = SshServer::start_logged(&f.root, &f.authorized, &f.state, extra, &log);
        let bastion = f.bastion();
        f.trust(&[
            server.known_hosts_line(),
            known_hosts_line(bastion.port, &bastion.host_key),
        ]);
        let mut via = Via::native(f, server.port());
        via.flags
            .extend(["-J".to_string(), format!("root@127.0.0.1:{}", bastion.port)]);
        BehindAJump {
            _server: server,
            _bastion: bastion,
            via,
            log,
        }
    }

    /// `berth push --input archive name`, which must succeed; the
    /// connections that carried its channels.
    fn push(&self, archive: &Path, name: &str) -> std::collections::BTreeSet<String> {
        let from = std::fs::metadata(&self.log)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let input = archive.to_str().unwrap();
        ok(
            self.via
                .cmd("berth", Some("push"), &["-q", "--input", input], &[name])
                .output()
                .unwrap(),
            "push through the jump",
        );
        connections_with_channels(&self.log, from)
    }
}

/// `berth pull -o out name` through `via`, which must succeed; the sha256
/// of each layer of the archive it wrote.
fn pulled_layers(via: &Via, name: &str, out: &Path) -> Vec<String> {
    let pre = ["-q", "-o", out.to_str().unwrap()];
    let done = via
        .cmd("berth", Some("pull"), &pre, &[name])
        .output()
        .unwrap();
    ok(done, &format!("pull of {name}"));
    crate::sharedfs::archive_layers(out)
}

/// Issue 17: through a stock sshd jump host, an inner SSH connection rides
/// one `direct-tcpip` channel, whose window (OpenSSH grants 2 MiB) holds
/// an upload to about 2 MiB per round trip to the jump, however many
/// blobs go in parallel inside. So a push gives each big blob it sends at
/// the same time an inner connection of its own: one more login at the
/// registry through the same jump connection. Small blobs and a re-push
/// that sends nothing log in once, and every byte arrives as it was.
#[test]
fn a_push_through_a_jump_host_sends_big_blobs_on_connections_of_their_own() {
    let Some(f) = Fixture::new() else { return };
    if !require_tool("/usr/sbin/sshd", "openssh-server") || !require_tool("python3", "python3") {
        return;
    }
    let jump = BehindAJump::start(&f, &[]);
    let (via, push) = (&jump.via, |a: &Path, n: &str| jump.push(a, n));

    // Layers of 40, 20 and 13 MiB: two of them big enough for their own.
    let big = crate::sharedfs::make_archives(&f.dir.path().join("big"), 17, 40, 1);
    let used = push(&big[0].path, "team/big:1");
    assert_eq!(used.len(), 2, "connections carrying channels: {used:?}");

    // Nothing to send: the one connection.
    let used = push(&big[0].path, "team/big:2");
    assert_eq!(used.len(), 1, "re-push: {used:?}");
    // Small layers (1 MiB and less): the one connection.
    let small = crate::sharedfs::make_archives(&f.dir.path().join("small"), 18, 1, 1);
    let used = push(&small[0].path, "team/small:1");
    assert_eq!(used.len(), 1, "small push: {used:?}");

    // What went up comes back byte for byte.
    for (name, archive) in [("team/big:1", &big[0]), ("team/small:1", &small[0])] {
        let out = f
            .dir
            .path()
            .join(format!("{}.tar", name.replace(['/', ':'], "-")));
        assert_eq!(pulled_layers(via, name, &out), archive.layers);
    }
    assert_fsck_clean(&f.root);
}

/// The extra connection of a push through a jump host is an optimisation:
/// a registry that refuses the extra login (here every login past the
/// first, `--max-connections 1`) still takes the whole push, on the one
/// connection it let in.
#[test]
fn a_push_through_a_jump_host_shares_its_connection_when_no_other_login_is_let_in() {
    let Some(f) = Fixture::new() else { return };
    if !require_tool("/usr/sbin/sshd", "openssh-server") || !require_tool("python3", "python3") {
        return;
    }
    let jump = BehindAJump::start(&f, &["--max-connections", "1"]);
    let big = crate::sharedfs::make_archives(&f.dir.path().join("big"), 19, 40, 1);
    assert_eq!(jump.push(&big[0].path, "team/big:1").len(), 1);
    let text = std::fs::read_to_string(&jump.log).unwrap();
    assert!(
        text.contains("--max-connections"),
        "no extra login was tried:\n{text}"
    );
    // Read back from the store itself: another login could still find the
    // push's slot taken until the server has seen its connection close.
    let out = f.dir.path().join("back.tar");
    assert_eq!(
        pulled_layers(&Via::local(&f.root), "team/big:1", &out),
        big[0].layers
    );
    assert_fsck_clean(&f.root);
}

#[test]
fn an_encrypted_key_is_unlocked_once_for_the_jump_and_the_registry() {
    let Some(f) = Fixture::new() else { return };
    if !require_tool("/usr/sbin/sshd", "openssh-server") || !require_tool("script", "util-linux") {
        return;
    }
    let locked = f.locked_key("locked");
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    let bastion = f.bastion();
    f.trust(&[
        server.known_hosts_line(),
        known_hosts_line(bastion.port, &bastion.host_key),
    ]);

    // The jump host and the registry both log in with the key: the
    // passphrase is typed once (on a pty from `script`).
    let mut via = Via::native_as(&f, server.port(), &locked);
    via.flags
        .extend(["-J".to_string(), format!("root@127.0.0.1:{}", bastion.port)]);
    let inner = via.cmd("registryget", None, &[], &["/v1/_ping"]);
    // A second prompt would wait for good: `timeout` bounds that hang.
    let line = bounded_line(&inner);
    let out = answer_prompt(on_a_pty(&line), "Enter passphrase for key", "open sesame");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.matches("Enter passphrase for key").count(),
        1,
        "{text}"
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("{}"), "{text}");
}

#[test]
fn a_login_cut_by_the_server_is_not_reported_as_a_refused_key() {
    // berth-server cuts the oldest login in progress from an address that
    // has more than --max-startups-per-source of them. The client whose
    // login was cut must say so, not "permission denied (publickey)" (the
    // key was never refused): a crowd of logins from one address (CI
    // behind NAT) otherwise looks like a key problem.
    let Some(f) = Fixture::new() else { return };
    if !require_tool("script", "util-linux") {
        return;
    }
    let locked = f.locked_key("locked-cut");
    let log = f.dir.path().join("server.log");
    let server = SshServer::start_logged(
        &f.root,
        &f.authorized,
        &f.state,
        &["--max-startups-per-source", "1"],
        &log,
    );
    f.trust(&[server.known_hosts_line()]);
    let inner = Via::native_as(&f, server.port(), &locked).cmd("registryget", None, &[], &["/v2/"]);
    let line = bounded_line(&inner);
    // The client waits at the passphrase prompt in the middle of its login:
    // a second connection from 127.0.0.1 then displaces it.
    let mut crowd = None;
    let out = answer_prompt_after(
        on_a_pty(&line),
        "Enter passphrase for key",
        || {
            crowd = Some(std::net::TcpStream::connect(server.addr).unwrap());
            eventually("the server cutting the waiting login", DEADLINE, || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("cutting a waiting connection")
            });
        },
        "open sesame",
    );
    drop(crowd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("closed the connection during login"),
        "{text}"
    );
    assert!(!text.contains("permission denied"), "{text}");
}

#[test]
fn a_server_without_the_subsystem_is_a_clear_error_not_a_hang() {
    // The built-in client sends its first request right behind the
    // subsystem request, without waiting for the answer; sshd refuses an
    // unknown subsystem but keeps the channel open, so the client must
    // notice the refusal itself instead of waiting for a response.
    let Some(f) = Fixture::new() else { return };
    if !require_tool("/usr/sbin/sshd", "openssh-server") {
        return;
    }
    let sshd = f.bastion();
    f.trust(&[known_hosts_line(sshd.port, &sshd.host_key)]);
    let via = Via::native(&f, sshd.port);
    for tool in ["registryget", "berth"] {
        let inner = match tool {
            "berth" => via.cmd("berth", Some("pull"), &["-o", "-"], &["team/app:1"]),
            _ => via.cmd(tool, None, &[], &["/v1/_ping"]),
        };
        // A hang is cut (and fails the test) by `timeout`.
        let mut bounded = Command::new("timeout");
        bounded
            .arg(DEADLINE.as_secs().to_string())
            .arg(inner.get_program())
            .args(inner.get_args())
            .stdin(Stdio::null());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => bounded.env(k, v),
                None => bounded.env_remove(k),
            };
        }
        let out = bounded.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{tool}: {err}");
        assert!(
            err.contains("refused the docker-registry subsystem"),
            "{tool}: {err}"
        );
        assert!(
            !err.contains("connection to the registry was lost"),
            "{tool}: {err}"
        );
    }
}

#[test]
fn host_keys_unknown_accepted_changed() {
    let Some(f) = Fixture::new() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    let via = Via::native(&f, server.port());
    let fingerprint = {
        let out = run_ok(
            Command::new("ssh-keygen")
                .arg("-lf")
                .arg(format!("{}.pub", server.host_key.display())),
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert!(fingerprint.starts_with("SHA256:"));

    // Unknown host: refused, with the fingerprint and how to accept it.
    let out = via.get(&[], "/v1/_ping");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("unknown"), "{err}");
    assert!(err.contains(&fingerprint), "{err}");
    assert!(err.contains("--accept-new-host-key"), "{err}");
    assert!(
        !f.known_hosts.exists()
            || std::fs::read_to_string(&f.known_hosts)
                .unwrap()
                .trim()
                .is_empty()
    );

    // Accepted with --accept-new-host-key, and recorded.
    ok(
        via.get(&["--accept-new-host-key"], "/v1/_ping"),
        "accept new",
    );
    let recorded = std::fs::read_to_string(&f.known_hosts).unwrap();
    assert!(
        recorded.contains(&format!("[127.0.0.1]:{}", server.port())),
        "{recorded}"
    );
    ok(via.get(&[], "/v1/_ping"), "known now");

    // Hashed entries (ssh-keygen -H) match too.
    run_ok(
        Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&f.known_hosts),
    );
    let hashed = std::fs::read_to_string(&f.known_hosts).unwrap();
    assert!(
        hashed.contains("|1|") && !hashed.contains("[127.0.0.1]"),
        "{hashed}"
    );
    ok(via.get(&[], "/v1/_ping"), "hashed entry");

    // A changed key: refused, even with --accept-new-host-key.
    let other = ClientKey::generate(&f.state, "impostor");
    let mut parts = other.public_line.split_whitespace();
    let (t, k) = (parts.next().unwrap(), parts.next().unwrap());
    std::fs::write(
        &f.known_hosts,
        format!("[127.0.0.1]:{} {t} {k}\n", server.port()),
    )
    .unwrap();
    for pre in [&[][..], &["--accept-new-host-key"][..]] {
        let out = via.get(pre, "/v1/_ping");
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("HAS CHANGED"), "{err}");
        assert!(err.contains(&fingerprint), "{err}");
    }
    let unchanged = std::fs::read_to_string(&f.known_hosts).unwrap();
    assert_eq!(unchanged.lines().count(), 1, "{unchanged}");
}

#[test]
fn authentication_failures_are_clear() {
    let Some(f) = Fixture::new() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    f.trust(&[server.known_hosts_line()]);
    // A key the server does not know.
    let stranger = ClientKey::generate(&f.state, "stranger");
    let via = Via::native_as(&f, server.port(), &stranger.private);
    let out = via.get(&[], "/v1/_ping");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("permission denied") && err.contains("stranger"),
        "{err}"
    );

    // An encrypted key and no terminal to ask for the passphrase.
    if require_tool("setsid", "util-linux") {
        let locked = f.state.join("locked");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "secret words", "-f"])
                .arg(&locked),
        );
        let via = Via::native_as(&f, server.port(), &locked);
        let mut cmd = Command::new("setsid");
        let inner = via.cmd("registryget", None, &[], &["/v1/_ping"]);
        cmd.arg(inner.get_program()).args(inner.get_args());
        cmd.env_remove("SSH_AUTH_SOCK");
        let out = run_with_input(&mut cmd, b"");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("encrypted") && err.contains("passphrase"),
            "{err}"
        );
    }

    // On a terminal (a pty from `script`), the passphrase is asked for.
    if require_tool("script", "util-linux") {
        let locked = f.state.join("locked-tty");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "open sesame", "-f"])
                .arg(&locked),
        );
        let public = std::fs::read_to_string(locked.with_extension("pub"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pub", locked.display())))
            .unwrap();
        let mut keys = std::fs::read_to_string(&f.authorized).unwrap();
        keys.push_str(&public);
        std::fs::write(&f.authorized, keys).unwrap();
        let via = Via::native_as(&f, server.port(), &locked);
        let inner = via.cmd("registryget", None, &[], &["/v1/_ping"]);
        let line: Vec<String> = std::iter::once(inner.get_program())
            .chain(inner.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for (passphrase, accepted) in [("open sesame", true), ("wrong", false)] {
            // The passphrase is typed once the prompt is up.
            let out = answer_prompt(on_a_pty(&line), "Enter passphrase for key", passphrase);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(text.contains("Enter passphrase for key"), "{text}");
            if accepted {
                assert!(out.status.success(), "{text}");
                assert!(text.contains("{}"), "{text}");
            } else {
                assert!(!out.status.success(), "{text}");
                assert!(text.contains("wrong passphrase"), "{text}");
            }
        }
    }

    // The agent: a key loaded with ssh-add authenticates without -i.
    if require_tool("ssh-agent", "openssh-client") && require_tool("ssh-add", "openssh-client") {
        let sock = f.state.join("agent.sock");
        let mut agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually("the agent's socket", DEADLINE, || sock.exists());
        run_ok(
            Command::new("ssh-add")
                .arg(&f.key.private)
                .env("SSH_AUTH_SOCK", &sock),
        );
        let via = Via {
            flags: vec!["--known-hosts".into(), f.known_hosts.display().to_string()],
            ..Via::native(&f, server.port())
        };
        let mut cmd = via.cmd("registryget", None, &[], &["/v1/_ping"]);
        cmd.env("SSH_AUTH_SOCK", &sock);
        let out = run_with_input(&mut cmd, b"");
        let _ = agent.kill();
        let _ = agent.wait();
        ok(out, "agent auth");
    }
}

/// `inner`'s command line (program and arguments) under `timeout
/// --foreground DEADLINE`, for [`on_a_pty`]: a hang becomes a failure.
/// `--foreground` keeps the program in the terminal's foreground process
/// group; in timeout's own group it would be stopped (SIGTTOU) as it turns
/// the terminal's echo off for a prompt.
fn bounded_line(inner: &Command) -> Vec<String> {
    [
        "timeout".into(),
        "--foreground".into(),
        DEADLINE.as_secs().to_string(),
    ]
    .into_iter()
    .chain(
        std::iter::once(inner.get_program())
            .chain(inner.get_args())
            .map(|a| a.to_string_lossy().into_owned()),
    )
    .collect()
}

/// `line` run on a pseudo-terminal (by `script`), as a user at a terminal
/// would run it: no `HOME` keys and no agent, so only `-i` keys count.
fn on_a_pty(line: &[String]) -> Command {
    let mut cmd = Command::new("script");
    cmd.arg("-qec")
        .arg(line.join(" "))
        .arg("/dev/null")
        // `script` runs the line with $SHELL: the same shell everywhere
        // (bash execs a lone command, dash forks it: process groups differ).
        .env("SHELL", "/bin/sh")
        .env("HOME", std::env::temp_dir().join("berth-test-no-home"))
        .env_remove("SSH_AUTH_SOCK");
    cmd
}

/// Runs `cmd` (stdout piped), waits for `prompt` in its output, types
/// `answer` and a newline, closes its input, and returns its whole output
/// once it exits.
fn answer_prompt(cmd: Command, prompt: &str, answer: &str) -> Output {
    answer_prompt_after(cmd, prompt, || {}, answer)
}

/// [`answer_prompt`], running `meanwhile` once the prompt is there and
/// before the answer is typed.
fn answer_prompt_after(
    mut cmd: Command,
    prompt: &str,
    meanwhile: impl FnOnce(),
    answer: &str,
) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut text = Vec::new();
    let end = std::time::Instant::now() + DEADLINE;
    while !String::from_utf8_lossy(&text).contains(prompt) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => text.extend(chunk),
            Err(_) => panic!("no {prompt:?} prompt: {}", String::from_utf8_lossy(&text)),
        }
    }
    meanwhile();
    stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
    // Nothing more is typed: a second prompt reads the end of input and
    // fails, rather than waiting for good.
    drop(stdin);
    for chunk in rx {
        text.extend(chunk);
    }
    reader.join().unwrap();
    let mut out = child.wait_with_output().unwrap();
    out.stdout = text;
    out
}

/// `tool PATH` through `via`, running with every stdio piped.
fn spawn_piped(via: &Via, tool: &str, path: &str) -> std::process::Child {
    let mut cmd = via.cmd(tool, None, &[], &[path]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Starts `berth shim` and returns it with its address.
fn shim(via: &Via) -> (Proc, std::net::SocketAddr) {
    let cmd = via.cmd("berth", Some("shim"), &["--listen", "127.0.0.1:0"], &[]);
    let (proc, line) = spawn_until_line(cmd, "berth shim: serving", "berth shim");
    assert!(line.contains("on http://127.0.0.1:"), "{line}");
    (proc, addr_in(&line.replace("http://", "")))
}

/// The `channel{...}` span of each line of the server log `log` that
/// contains every one of `words` (its debug log: [`SshServer::start_logged`]).
fn channel_spans(log: &Path, words: &[&str]) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .filter_map(|l| {
            let at = l.find("channel{")?;
            let end = at + l[at..].find('}')?;
            Some(l[at..=end].to_string())
        })
        .collect()
}

/// Issue 17: over ssh:// the shim keeps channels opened ahead of demand
/// (`--warm`), so a new connection's first request goes out at once on a
/// channel the server started before the TCP connection existed, instead
/// of waiting for a channel open and a subsystem request. Connections
/// beyond the pool still get channels of their own.
#[test]
fn shim_answers_on_a_channel_opened_before_the_connection() {
    let Some(f) = Fixture::new() else { return };
    let log = f.dir.path().join("server.log");
    let server = SshServer::start_logged(&f.root, &f.authorized, &f.state, &[], &log);
    f.trust(&[server.known_hosts_line()]);
    let via = Via::native(&f, server.port());
    let cmd = via.cmd(
        "berth",
        Some("shim"),
        &["--listen", "127.0.0.1:0", "--warm", "2"],
        &[],
    );
    let (_shim, line) = spawn_until_line(cmd, "berth shim: serving", "berth shim");
    let addr = addr_in(&line.replace("http://", ""));
    // The startup ping's channel (closed since), then the pool's two.
    eventually("the warm channels", DEADLINE, || {
        channel_spans(&log, &["channel started"]).len() >= 3
    });
    // A connection answered on a channel the server started before it
    // connected. A warm channel that reaches its age limit just as the
    // connection comes is replaced by a new one, so up to three connections
    // are tried; without warm channels none of them is.
    let answered = || channel_spans(&log, &["path=/v2/", "answered"]);
    let mut missed = Vec::new();
    let mut c = loop {
        let before = channel_spans(&log, &["channel started"]);
        let seen = answered().len();
        let mut c = tcp_conn(addr);
        let r = c.request("GET", "/v2/", &[], ReqBody::None);
        assert_eq!(r.status, 200, "{}", r.text());
        eventually("the request in the server log", DEADLINE, || {
            answered().len() > seen
        });
        let on = answered().swap_remove(seen);
        if before.contains(&on) {
            break c;
        }
        missed.push((on, before));
        assert!(
            missed.len() < 3,
            "no connection was answered on a channel started before it: {missed:?}"
        );
    };

    // Three connections at once, with c still open: more than the pool.
    let mut more: Vec<_> = (0..3).map(|_| tcp_conn(addr)).collect();
    for m in &mut more {
        let r = m.request("GET", "/v2/", &[], ReqBody::None);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = c.request("GET", "/v1/_ping", &[], ReqBody::None);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn shim_carries_the_docker_v1_sequence_over_ssh() {
    let Some(f) = Fixture::new() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    f.trust(&[server.known_hosts_line()]);
    let (_shim, addr) = shim(&Via::native(&f, server.port()));
    let img = V1Image::chain(11, 3, 400_000);
    {
        // Docker 1.x uses a new connection per request; one keep-alive
        // connection and several short ones both go through.
        let mut c = tcp_conn(addr);
        v1_push(&mut c, "team/shimmed", "v1", &img);
    }
    let mut c = tcp_conn(addr);
    v1_pull_and_verify(&mut c, "team/shimmed", "v1", &img);

    // X-Docker-Endpoints points back at the shim (from the Host it was sent).
    if require_tool("curl", "curl") {
        let out = run_ok(Command::new("curl").args([
            "-sS",
            "-i",
            "-X",
            "PUT",
            "-H",
            "X-Docker-Token: true",
            "-H",
            "Content-Type: application/json",
            "--data",
            "[]",
            &format!("http://{addr}/v1/repositories/team/other/"),
        ]));
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        assert!(
            text.contains(&format!("x-docker-endpoints: {addr}")),
            "{text}"
        );
    }

    // The store holds what was pushed (read locally, no server involved).
    let local = Via::local(&f.root);
    let out = ok(
        local.get(&[], &format!("/v1/images/{}/layer", img.ids[2])),
        "local read",
    );
    assert!(out.stdout == img.layers[2]);
}

#[test]
fn shim_serves_a_local_directory_to_the_python_v1_client() {
    if !require_python_module("docker_registry_client", "docker-registry-client") {
        return;
    }
    let Some(f) = Fixture::new() else { return };
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    f.trust(&[server.known_hosts_line()]);
    for via in [Via::local(&f.root), Via::native(&f, server.port())] {
        let (_shim, addr) = shim(&via);
        let img = V1Image::chain(21, 2, 10_000);
        let mut c = tcp_conn(addr);
        v1_push(&mut c, "team/web", "latest", &img);
        let v = python_v1_client(&format!("http://{addr}"), &img.ids[0]).unwrap();
        assert_eq!(v["repositories"], serde_json::json!(["team/web"]));
        assert_eq!(v["tags"], serde_json::json!(["latest"]));
        assert_eq!(v["after_tag"], serde_json::json!(["latest", "stable"]));
        assert_eq!(v["stable"], serde_json::json!(img.ids[0]));
        assert_eq!(v["after_untag"], serde_json::json!(["latest"]));
    }
}

#[test]
fn shim_refuses_non_loopback_listen() {
    let dir = tempfile::tempdir().unwrap();
    let via = Via::local(dir.path());
    let out = run_with_input(
        &mut via.cmd("berth", Some("shim"), &["--listen", "0.0.0.0:0"], &[]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--allow-remote"), "{}", stderr(&out));
}

#[test]
fn killed_server_fails_the_transfer_and_the_shim_recovers() {
    let Some(f) = Fixture::new() else { return };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = SshServer::start_on(&f.root, &f.authorized, &f.state, &listen, &[]);
    f.trust(&[server.known_hosts_line()]);
    let via = Via::native(&f, port);
    let img = V1Image::chain(31, 1, 1 << 20);
    let id = &img.ids[0];
    ok(
        via.put(&[], &format!("/v1/images/{id}/json"), &img.jsons[0]),
        "json",
    );

    // Upload: stdin fed slowly; the server dies while it writes the layer.
    let mut child = spawn_piped(&via, "registryput", &format!("/v1/images/{id}/layer"));
    let mut stdin = child.stdin.take().unwrap();
    let chunk = random_bytes(256 << 10, 5);
    // Fed until the server is writing the layer (the event: its temp file
    // holds bytes, past the server's 1 MiB write buffer).
    let image_dir = f.root.join("images").join(id);
    let stored = || {
        std::fs::read_dir(&image_dir).is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with(".tmp-")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
        })
    };
    let end = std::time::Instant::now() + DEADLINE;
    while !stored() {
        assert!(
            std::time::Instant::now() < end,
            "the upload never reached the store"
        );
        stdin.write_all(&chunk).unwrap();
    }
    server.proc.kill();
    for _ in 0..64 {
        if stdin.write_all(&chunk).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("registryput: PUT /v1/images/"), "{err}");
    assert!(err.contains("connection to the registry was lost"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // Download: a large layer, the server killed while it streams.
    let mut server = SshServer::start_on(&f.root, &f.authorized, &f.state, &listen, &[]);
    let big = V1Image::chain(32, 1, 48 << 20);
    let bid = &big.ids[0];
    ok(
        via.put(&[], &format!("/v1/images/{bid}/json"), &big.jsons[0]),
        "json",
    );
    ok(
        via.put(&[], &format!("/v1/images/{bid}/layer"), &big.layers[0]),
        "layer",
    );
    ok(
        via.put(
            &[
                "-H",
                &format!("X-Docker-Checksum-Payload: {}", big.payload_checksum(0)),
            ],
            &format!("/v1/images/{bid}/checksum"),
            b"",
        ),
        "checksum",
    );
    let mut child = spawn_piped(&via, "registryget", &format!("/v1/images/{bid}/layer"));
    drop(child.stdin.take());
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0u8; 1 << 20];
    stdout.read_exact(&mut first).unwrap();
    server.proc.kill();
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    let out = child.wait_with_output().unwrap();
    assert!(first.len() + rest.len() < big.layers[0].len());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("registryget: GET /v1/images/"), "{err}");
    assert!(err.contains("connection to the registry was lost"), "{err}");

    // The shim: works, fails cleanly while the server is down, recovers
    // once it is back on the same port.
    let server = SshServer::start_on(&f.root, &f.authorized, &f.state, &listen, &[]);
    let (_shim, addr) = shim(&via);
    let ping = |addr| {
        let mut c = tcp_conn(addr);
        c.request("GET", "/v1/_ping", &[], ReqBody::None)
    };
    assert_eq!(ping(addr).status, 200);
    drop(server);
    // The shim may first try the connection it had; every answer is a
    // clean failure until it reports the registry unreachable. A request
    // whose head already went to the dead connection is not retried (the
    // registry may have acted on it): the shim closes that connection
    // without an answer, which a tool also takes as a failure.
    let answer = |addr| {
        tcp_conn(addr)
            .send("GET", "/v1/_ping", &[], ReqBody::None)
            .ok()
    };
    let end = std::time::Instant::now() + DEADLINE;
    let r = loop {
        match answer(addr) {
            Some(r) if r.status == 502 => break r,
            Some(r) => assert!(r.status >= 500, "{} {}", r.status, r.text()),
            None => {}
        }
        assert!(
            std::time::Instant::now() < end,
            "the shim never reported the registry unreachable"
        );
    };
    assert!(
        r.text().contains("cannot reach the registry"),
        "{}",
        r.text()
    );
    let _server = SshServer::start_on(&f.root, &f.authorized, &f.state, &listen, &[]);
    let r = ping(addr);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut c = tcp_conn(addr);
    let r = c.request("GET", &format!("/v1/images/{bid}/json"), &[], ReqBody::None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, big.jsons[0]);
}

/// An OCI image layout at `dir` with one image of one gzip layer (a tar of
/// `file` holding `data`), tagged `tag`; returns (manifest digest, layer
/// blob bytes).
fn oci_layout(dir: &Path, tag: &str, data: &[u8]) -> (String, Vec<u8>) {
    let tar = make_tar(dir, "layer", &[("file", data)]);
    let (digest, mut gzs) = write_oci_layout(dir, tag, &[tar], false);
    (digest, gzs.remove(0))
}

#[test]
fn shim_skopeo_push_and_pull_over_ssh() {
    let Some(f) = Fixture::new() else { return };
    if !require_tool("skopeo", "skopeo")
        || !require_tool("ssh", "openssh-client")
        || !require_tool("tar", "tar")
        || !require_tool("gzip", "gzip")
    {
        return;
    }
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    f.trust(&[server.known_hosts_line()]);
    let vias = [
        ("native", Via::native(&f, server.port())),
        ("openssh", Via::openssh(&f, server.port())),
    ];
    for (i, (kind, via)) in vias.iter().enumerate() {
        let (_shim, addr) = shim(via);
        let work = f.dir.path().join(format!("skopeo-{kind}"));
        let src = work.join("src");
        let back = work.join("back");
        std::fs::create_dir_all(&src).unwrap();
        let (digest, layer) = oci_layout(&src, "v1", &random_bytes(3 << 20, 40 + i as u64));
        let image = format!("docker://{addr}/team/skopeo-{kind}:v1");
        let skopeo = |args: &[&str]| -> String {
            let out = run_ok(Command::new("skopeo").args(args));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", src.display()),
            &image,
        ]);
        let inspect: serde_json::Value =
            serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &image])).unwrap();
        assert_eq!(inspect["Digest"], serde_json::json!(digest), "{kind}");
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &image,
            &format!("oci:{}:v1", back.display()),
        ]);
        let blob = std::fs::read(back.join("blobs/sha256").join(sha256_hex(&layer))).unwrap();
        assert!(
            blob == layer,
            "{kind}: layer bytes differ after the round trip"
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            serde_json::json!(digest),
            "{kind}"
        );
    }
}

#[test]
fn shim_docker_and_podman_push_and_pull_over_ssh() {
    let Some(f) = Fixture::new() else { return };
    if !require_docker() || !require_tool("tar", "tar") {
        return;
    }
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    f.trust(&[server.known_hosts_line()]);
    let (_shim, addr) = shim(&Via::native(&f, server.port()));

    let src = f.dir.path().join("rootfs");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.bin"), random_bytes(2 << 20, 51)).unwrap();
    let tar_path = f.dir.path().join("rootfs.tar");
    run_ok(
        Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
            .arg(&src)
            .arg("-cf")
            .arg(&tar_path)
            .arg("."),
    );
    let image = format!("{addr}/team/docked:1");
    let docker = |args: &[&str]| -> String {
        String::from_utf8_lossy(&run_ok(Command::new("docker").args(args)).stdout).into_owned()
    };
    let rmi = |r: &str| {
        let _ = Command::new("docker").args(["rmi", "-f", r]).output();
    };
    rmi(&image);
    docker(&["import", &tar_path.display().to_string(), &image]);
    let layers_before = docker(&["inspect", "--format", "{{json .RootFS.Layers}}", &image]);
    let pushed = docker(&["push", &image]);
    let digest = pushed
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in {pushed}"))
        .to_string();
    rmi(&image);
    docker(&["pull", &image]);
    let layers_after = docker(&["inspect", "--format", "{{json .RootFS.Layers}}", &image]);
    assert_eq!(layers_after, layers_before, "layer content changed");
    let repo_digests = docker(&["inspect", "--format", "{{json .RepoDigests}}", &image]);
    assert!(
        repo_digests.contains(&format!("{addr}/team/docked@{digest}")),
        "{repo_digests}"
    );
    rmi(&image);

    // podman pulls what docker pushed, and pushes a tag of its own.
    if require_tool("podman", "podman") {
        let podman = |args: &[&str]| -> String {
            String::from_utf8_lossy(&run_ok(Command::new("podman").args(args)).stdout).into_owned()
        };
        podman(&["pull", "--tls-verify=false", &image]);
        let digest_seen = podman(&["image", "inspect", "--format", "{{.Digest}}", &image]);
        assert_eq!(digest_seen.trim(), digest);
        let second = format!("{addr}/team/docked:podman");
        podman(&["tag", &image, &second]);
        podman(&["push", "--tls-verify=false", &second]);
        let _ = Command::new("podman")
            .args(["rmi", "-f", &image, &second])
            .output();
        let tags = ok(
            run_with_input(
                &mut Via::local(&f.root).cmd("berth", Some("tags"), &["--json"], &["team/docked"]),
                b"",
            ),
            "tags",
        );
        let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
        assert!(
            tags.get("1").is_some() && tags.get("podman").is_some(),
            "{tags}"
        );
    }
}

#[test]
fn shim_checks_the_remote_before_serving() {
    let Some(f) = Fixture::new() else { return };
    // Nothing listening: no startup line, a clear error.
    let down = Via::native(&f, free_port());
    let out = run_with_input(
        &mut down.cmd("berth", Some("shim"), &["--listen", "127.0.0.1:0"], &[]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).starts_with("berth: connecting to 127.0.0.1:"),
        "{}",
        stderr(&out)
    );
    // A host whose key is not known: refused before serving anything.
    let server = SshServer::start(&f.root, &f.authorized, &f.state, &[]);
    let via = Via::native(&f, server.port());
    let out = run_with_input(
        &mut via.cmd("berth", Some("shim"), &["--listen", "127.0.0.1:0"], &[]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("--accept-new-host-key"),
        "{}",
        stderr(&out)
    );
}
