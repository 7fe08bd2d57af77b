//! `ssh::run` takes a bound listener and a shutdown future (issue 18), so
//! a test starts the SSH server exactly as the binary does: bind, run, and
//! stop it by completing the future (the binary's is ctrl-c/SIGTERM).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Generous bound on each step, only to turn a hang into a failure.
const DEADLINE: Duration = Duration::from_secs(60);

/// Held by each test while its server runs: the first test checks that its
/// port is closed after the shutdown, and the second test's server, binding
/// an ephemeral port at that moment, could be given the very same one.
static ONE_SERVER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    args: berth_server::ssh::ServeArgs,
}

/// `serve` flags for a store, host key and (empty) authorized_keys in `dir`.
fn flags(dir: &Path) -> Vec<String> {
    let keys = dir.join("authorized_keys");
    std::fs::write(&keys, "").unwrap();
    vec![
        "--root".into(),
        dir.join("store").display().to_string(),
        "--host-key".into(),
        dir.join("hostkey/ssh_host_ed25519_key")
            .display()
            .to_string(),
        "--authorized-keys".into(),
        keys.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]
}

#[test]
fn the_library_serves_a_bound_listener_until_the_shutdown_future_completes() {
    let _alone = ONE_SERVER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(serve_until_stopped());
}

async fn serve_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut argv = vec!["serve".to_string()];
    argv.extend(flags(dir.path()));
    let args = Serve::parse_from(argv).args;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(berth_server::ssh::run(args, listener, async {
        let _ = stopped.await;
    }));

    // The server answers on the listener it was given: an SSH banner.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut banner = [0u8; 8];
    tokio::time::timeout(DEADLINE, conn.read_exact(&mut banner))
        .await
        .expect("banner within the deadline")
        .unwrap();
    assert_eq!(&banner, b"SSH-2.0-");

    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("run returns once the shutdown future completes")
        .unwrap()
        .unwrap();
    // The listener went with it.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn the_binary_stops_cleanly_on_sigterm() {
    let _alone = ONE_SERVER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-server"))
        .arg("serve")
        .args(flags(dir.path()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Listening is announced once the server is ready to accept.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(DEADLINE).is_err() {
        let _ = child.kill();
        panic!("berth-server serve never said it was listening");
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let Ok(status) = rx.recv_timeout(DEADLINE) else {
        // SAFETY: as above; the server ignored SIGTERM, so end it.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("berth-server did not exit after SIGTERM");
    };
    let status = status.unwrap();
    assert!(status.success(), "exit status {status}");
}
