//! `berth-server serve`: the russh SSH server.
//!
//! Public-key authentication only. Surface: subsystem `docker-registry`
//! (HTTP/1.1 per channel, keep-alive), exec `registryget PATH` /
//! `registryput PATH`; shells, ptys, env, X11, agent and port forwarding are
//! refused. The [`Handler`] only authenticates and routes: each channel gets
//! its own task that owns the channel and does all I/O (`russh.md` §2.3, §6.1).
//! Tuned per `russh.md` §0/§5: AES-GCM first, nodelay, 16 MiB windows.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use russh::keys::ssh_key::{Certificate, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, MethodKind, MethodSet, Preferred};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::access::{AccessControl, ANONYMOUS_LOGIN};
use crate::exec::{self, ExecCommand};
use crate::keys::{self, AuthorizedKeysFile};
use crate::registry::{BoxError, HttpLimits, Identity, Registry, RegistryConfig, ReqBody};
use crate::store::Store;

/// The subsystem name carrying HTTP/1.1.
pub const SUBSYSTEM: &str = "docker-registry";

/// Flags of `berth-server serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The store directory (the mount point).
    #[arg(long, default_value = "./berth-data")]
    pub root: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub listen: SocketAddr,
    /// Host key (OpenSSH format); generated (Ed25519, mode 0600) if missing.
    /// Must be owned by the server's user with no group/other access.
    /// Default: $XDG_CONFIG_HOME/berth/ssh_host_ed25519_key (~/.config/berth/...).
    #[arg(long)]
    pub host_key: Option<PathBuf>,
    /// Keys allowed to read and write everything (when there is no --access
    /// file). Default: ~/.ssh/authorized_keys of the user running the server.
    /// Re-read when it changes.
    #[arg(long, conflicts_with = "access")]
    pub authorized_keys: Option<PathBuf>,
    /// Access file (TOML): users and their keys, groups, per-namespace
    /// read/write/delete rules. Re-read when it changes. See docs/access.md.
    #[arg(long)]
    pub access: Option<PathBuf>,
    /// Without an access file: namespaces (globs) keyless clients may read,
    /// logging in as `anonymous` (e.g. `ssh -o PubkeyAuthentication=no anonymous@host`).
    #[arg(
        long = "anonymous-read",
        value_name = "GLOB",
        conflicts_with = "access"
    )]
    pub anonymous_read: Vec<String>,
    /// Audit log file (one JSON line per write or delete). Default: <root>/_berth/audit.log.
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Most simultaneous SSH connections; more are closed at once.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Most open channels per connection; more are refused.
    #[arg(long, default_value_t = 64)]
    pub max_channels: usize,
    /// Seconds an SSH connection may stay idle before it is dropped.
    #[arg(long, default_value_t = 600)]
    pub idle_timeout: u64,
    /// HTTP limits of every channel.
    #[command(flatten)]
    pub limits: HttpLimits,
    /// Webhooks and chained endpoints.
    #[command(flatten)]
    pub roles: crate::registry::RoleArgs,
}

impl ServeArgs {
    /// The registry configuration these flags describe.
    pub fn registry_config(&self) -> anyhow::Result<RegistryConfig> {
        self.roles
            .apply(self.limits.config())
            .map_err(anyhow::Error::msg)
    }
}

/// The russh configuration tuned for bulk transfer.
pub fn ssh_config(
    host_key: russh::keys::PrivateKey,
    idle_timeout: Duration,
) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-berth_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        // `none` is answered only for the `anonymous` login (see auth_none).
        methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::None][..]),
        auth_rejection_time: Duration::from_millis(200),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        window_size: 16 << 20,
        maximum_packet_size: 65535,
        channel_buffer_size: 128,
        preferred: Preferred {
            cipher: Cow::Borrowed(&[
                russh::cipher::AES_256_GCM,
                russh::cipher::AES_128_GCM,
                russh::cipher::CHACHA20_POLY1305,
            ]),
            compression: Cow::Borrowed(&[russh::compression::NONE]),
            ..Preferred::default()
        },
        inactivity_timeout: Some(idle_timeout),
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// State shared by every connection of one server.
struct Shared {
    registry: Arc<Registry>,
    /// Keys from authorized_keys; `None` when an access file names the keys.
    authorized: Option<Mutex<AuthorizedKeysFile>>,
    max_channels: usize,
}

impl Shared {
    /// The user a key authenticates as: from the access file, or (without
    /// one) the SSH login name when the key is in authorized_keys.
    fn user_for_key(&self, login: &str, key: &PublicKey) -> Option<String> {
        match &self.authorized {
            Some(file) => {
                let mut keys = file.lock().unwrap_or_else(|e| e.into_inner());
                keys.refresh();
                keys.find(key).map(|_| login.to_string())
            }
            None => self
                .registry
                .access()
                .policy()
                .user_for_key(key)
                .map(str::to_string),
        }
    }
}

/// Runs the SSH server until the process is stopped.
pub async fn run(args: ServeArgs) -> Result<()> {
    let store = Store::open(&args.root)
        .with_context(|| format!("opening store {}", args.root.display()))?;
    let host_key_path = keys::host_key_path(args.host_key.as_deref(), store.paths())?;
    let (host_key, generated) = keys::load_or_generate_host_key(&host_key_path)?;
    let host_fp = keys::fingerprint(host_key.public_key());
    if generated {
        eprintln!(
            "berth-server: generated host key {} ({host_fp})",
            host_key_path.display()
        );
    }
    let authorized_path = match &args.authorized_keys {
        Some(p) => p.clone(),
        None => {
            let home =
                std::env::var_os("HOME").context("HOME is not set; pass --authorized-keys")?;
            PathBuf::from(home).join(".ssh").join("authorized_keys")
        }
    };
    let (access, authorized) = match &args.access {
        Some(path) => (AccessControl::from_file(path)?, None),
        None => {
            let authorized = AuthorizedKeysFile::load(&authorized_path);
            if authorized.is_empty() {
                eprintln!(
                    "berth-server: warning: no usable key in {}; nobody can log in until one is added",
                    authorized_path.display()
                );
            }
            (
                AccessControl::open(&args.anonymous_read),
                Some(Mutex::new(authorized)),
            )
        }
    };
    let keys_from = match &args.access {
        Some(p) => format!("access file {}", p.display()),
        None => format!("keys from {}", authorized_path.display()),
    };
    let registry =
        Registry::with_access(store, args.registry_config()?, access, args.audit.clone());
    crate::mirror::announce(&registry);
    let shared = Arc::new(Shared {
        registry,
        authorized,
        max_channels: args.max_channels,
    });
    let config = Arc::new(ssh_config(host_key, Duration::from_secs(args.idle_timeout)));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "berth-server: listening on {addr} (root {}, host key {host_fp}, {keys_from})",
        args.root.display(),
    );
    let connections = Arc::new(Semaphore::new(args.max_connections));
    let ids = AtomicU64::new(1);
    loop {
        let (stream, peer) = listener.accept().await?;
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = ids.fetch_add(1, Ordering::Relaxed);
        let handler = Conn {
            shared: shared.clone(),
            peer,
            conn,
            who: None,
            pending: HashMap::new(),
            open: Arc::new(AtomicUsize::new(0)),
            warned_channel_limit: false,
        };
        let config = config.clone();
        let span = tracing::info_span!("conn", id = conn, %peer);
        tokio::spawn(
            async move {
                match russh::server::run_stream(config, stream, handler).await {
                    Ok(session) => {
                        if let Err(e) = session.await {
                            tracing::debug!(error = %e, "connection ended");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "handshake failed"),
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// One SSH connection: authenticates, then routes channel requests to tasks.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    conn: u64,
    who: Option<Identity>,
    /// Channels opened but not yet given a subsystem/exec request.
    pending: HashMap<ChannelId, Channel<Msg>>,
    /// Channels of this connection still running (pending ones included).
    open: Arc<AtomicUsize>,
    /// Whether the channel-limit warning was already logged.
    warned_channel_limit: bool,
}

/// Decrements a connection's open-channel count when a channel task ends.
struct ChannelSlot(Arc<AtomicUsize>);

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    fn identity(&self) -> Identity {
        self.who
            .clone()
            .unwrap_or_else(|| Identity::local("unknown"))
    }

    fn start(
        &mut self,
        id: ChannelId,
        session: &mut Session,
        job: Job,
    ) -> Result<(), anyhow::Error> {
        let Some(channel) = self.pending.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let registry = self.shared.registry.clone();
        let who = self.identity();
        let slot = ChannelSlot(self.open.clone());
        let span =
            tracing::info_span!("channel", conn = self.conn, channel = %id, user = %who.log_user());
        tokio::spawn(
            async move {
                let _slot = slot;
                match job {
                    Job::Http => serve_http_channel(channel, registry, who).await,
                    Job::Exec(cmd) => run_exec_channel(channel, registry, who, cmd).await,
                    Job::Usage(msg) => usage_error(channel, &msg).await,
                }
            }
            .instrument(span),
        );
        Ok(())
    }
}

/// What a channel task does.
enum Job {
    Http,
    Exec(ExecCommand),
    Usage(String),
}

impl Handler for Conn {
    type Error = anyhow::Error;

    async fn auth_none(&mut self, login: &str) -> Result<Auth, Self::Error> {
        // OpenSSH always probes `none` first: only the `anonymous` login may
        // succeed with it, so a client with keys is never downgraded.
        if login == ANONYMOUS_LOGIN && self.shared.registry.access().policy().allows_anonymous() {
            tracing::info!("anonymous client");
            self.who = Some(Identity::anonymous(Some(self.peer.to_string())));
            return Ok(Auth::Accept);
        }
        Ok(Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        login: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Unknown keys are refused before the client signs anything. russh
        // also asks here for certificates (with the certificate's key, and
        // nothing saying it is one), so when certificate authorities are
        // configured the decision waits for the signed request
        // (auth_publickey / auth_openssh_certificate).
        let known = self.shared.user_for_key(login, offer.public_key).is_some();
        let cas = self
            .shared
            .registry
            .access()
            .policy()
            .has_cert_authorities();
        Ok(if known || cas {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        login: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fp = keys::fingerprint(key.public_key);
        let Some(user) = self.shared.user_for_key(login, key.public_key) else {
            tracing::info!(login, key = %fp, "public key refused");
            return Ok(Auth::reject());
        };
        tracing::info!(login, user, key = %fp, "authenticated");
        self.who = Some(Identity {
            user,
            key_fingerprint: Some(fp),
            client: Some(self.peer.to_string()),
        });
        Ok(Auth::Accept)
    }

    async fn auth_openssh_certificate(
        &mut self,
        login: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        // russh checked the signature by the certificate's key; the CA
        // signature, validity, type and principals are checked here.
        let fp = keys::fingerprint(&PublicKey::from(cert.public_key().clone()));
        let Some(user) = self
            .shared
            .registry
            .access()
            .policy()
            .user_for_certificate(cert)
        else {
            tracing::info!(login, key = %fp, "certificate refused");
            return Ok(Auth::reject());
        };
        tracing::info!(login, user, key = %fp, key_id = cert.key_id(), "authenticated by certificate");
        self.who = Some(Identity {
            user,
            key_fingerprint: Some(fp),
            client: Some(self.peer.to_string()),
        });
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.open.load(Ordering::Relaxed) >= self.shared.max_channels {
            if !self.warned_channel_limit {
                // Once per connection: a flood must not flood the log too.
                tracing::warn!(
                    max = self.shared.max_channels,
                    "channel limit reached; refusing channels"
                );
                self.warned_channel_limit = true;
            }
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        self.pending.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == SUBSYSTEM {
            self.start(id, session, Job::Http)
        } else {
            tracing::info!(name, "unknown subsystem refused");
            self.refuse(id, session)
        }
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(data).into_owned();
        if line.trim() == SUBSYSTEM {
            return self.start(id, session, Job::Http);
        }
        match exec::parse(&line) {
            Ok(Some(cmd)) => self.start(id, session, Job::Exec(cmd)),
            Err(msg) => self.start(id, session, Job::Usage(msg)),
            Ok(None) => {
                tracing::info!(command = %crate::logsafe::Escaped(&line), "exec refused");
                self.refuse(id, session)
            }
        }
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!("shell refused");
        self.refuse(id, session)
    }

    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        id: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)?;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.pending.remove(&id).is_some() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Conn {
    /// Refuses a request and drops the channel (an unread channel would stall
    /// the connection after `channel_buffer_size` messages, `russh.md` §6.2).
    fn refuse(&mut self, id: ChannelId, session: &mut Session) -> Result<(), anyhow::Error> {
        session.channel_failure(id)?;
        if let Some(ch) = self.pending.remove(&id) {
            self.open.fetch_sub(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = ch.close().await;
            });
        }
        Ok(())
    }
}

/// Serves HTTP/1.1 on one subsystem channel until the client closes it.
async fn serve_http_channel(channel: Channel<Msg>, registry: Arc<Registry>, who: Identity) {
    let (mut rd, wr) = channel.split();
    {
        let io = tokio::io::join(rd.make_reader(), wr.make_writer());
        if let Err(e) = registry.serve_connection(io, who).await {
            tracing::debug!(error = %e, "http channel ended");
        }
    }
    let _ = wr.exit_status(0).await;
    let _ = wr.eof().await;
    let _ = wr.close().await;
}

/// The channel's incoming data as a request body (ends at EOF).
fn channel_body(rd: russh::ChannelReadHalf) -> ReqBody {
    let frames = stream::unfold(rd, |mut rd| async move {
        loop {
            match rd.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    return Some((Ok::<_, BoxError>(Frame::data(data)), rd))
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => return None,
                Some(_) => continue,
            }
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Runs `registryget`/`registryput` on a channel and reports the exit status.
async fn run_exec_channel(
    channel: Channel<Msg>,
    registry: Arc<Registry>,
    who: Identity,
    cmd: ExecCommand,
) {
    let (rd, wr) = channel.split();
    tracing::info!(method = %cmd.method, path = %crate::logsafe::Escaped(&cmd.path), "exec");
    let code = exec::run(
        registry,
        cmd,
        &who,
        channel_body(rd),
        wr.make_writer(),
        wr.make_writer_ext(Some(1)),
    )
    .await;
    let _ = wr.exit_status(code).await;
    let _ = wr.eof().await;
    let _ = wr.close().await;
}

/// Answers a malformed exec command with its usage message and status 2.
async fn usage_error(channel: Channel<Msg>, msg: &str) {
    let (_rd, wr) = channel.split();
    let _ = wr
        .extended_data_bytes(1, format!("berth-server: {msg}\n").into_bytes())
        .await;
    let _ = wr.exit_status(2).await;
    let _ = wr.eof().await;
    let _ = wr.close().await;
}
