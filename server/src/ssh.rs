//! `berth-server serve`: the russh SSH server.
//!
//! Public-key authentication only. Surface: subsystem `docker-registry`
//! (HTTP/1.1 per channel, keep-alive), exec `registryget PATH` /
//! `registryput PATH`; shells, ptys, env, X11, agent and port forwarding are
//! refused. The [`Handler`] only authenticates and routes: each channel gets
//! its own task that owns the channel and does all I/O (`russh.md` §2.3, §6.1).
//! Tuned per `russh.md` §0/§5: AES-GCM first, nodelay, 16 MiB windows.
//!
//! Before any of that, [`admission`] decides whether a connection gets a
//! slot (pre-login limits and the login grace time), and [`sessions`] lets
//! an access-file reload close connections it no longer lets in.

mod admission;
mod sessions;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tracing::Instrument;

use crate::access::{valid_login, AccessControl, Policy, ANONYMOUS_LOGIN};
use crate::cli::HttpLimits;
use crate::exec::{self, ExecCommand};
use crate::keys::certificate::check_critical_options;
use crate::keys::{self, AuthorizedKeysFile};
use crate::metrics::{counters, AuthFailure};
use crate::registry::{BoxError, Identity, Registry, RegistryConfig, ReqBody};
use crate::store::Store;
use admission::{Cutter, Gate, Startup};
use berth_transport::wire::SUBSYSTEM;
use sessions::{Credential, Login, Registered, Sessions};

/// Flags of `berth-server serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Read settings from this TOML file: each key is one of these flags'
    /// long name (`root = "/var/lib/berth"`, `max-connections = 64`,
    /// `webhook = ["https://..."]`, `mirror-allow-push = true`); a flag given
    /// here wins over the file. See docs/operations.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Most simultaneous logged-in SSH connections; a login beyond them is
    /// refused. Connections still logging in count apart (--max-startups).
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Most connections still logging in (sshd's MaxStartups). When full, a
    /// new connection displaces the oldest waiting one of the source that
    /// holds the most, so a flood cannot keep real users out.
    #[arg(long, default_value_t = 64)]
    pub max_startups: usize,
    /// Most connections still logging in from one source (an IPv4 address
    /// or an IPv6 /64; sshd's PerSourceMaxStartups). When a source is at it,
    /// its new connection displaces its oldest waiting one.
    #[arg(long, default_value_t = 10)]
    pub max_startups_per_source: usize,
    /// Seconds a connection may take to log in before it is closed (sshd's
    /// LoginGraceTime).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub login_grace_time: u64,
    /// Most open channels per connection; more are refused.
    #[arg(long, default_value_t = 64)]
    pub max_channels: usize,
    /// Seconds an SSH connection may stay idle before it is dropped.
    #[arg(long, default_value_t = 600)]
    pub idle_timeout: u64,
    /// HTTP limits of every channel.
    #[command(flatten)]
    pub limits: HttpLimits,
    /// Metrics and health listener.
    #[command(flatten)]
    pub admin: crate::admin::AdminArgs,
    /// Webhooks and chained endpoints.
    #[command(flatten)]
    pub roles: crate::cli::RoleArgs,
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
    /// Connection slots before and after login.
    gate: Arc<Gate>,
    /// Logged-in connections, for access-file reloads.
    sessions: Arc<Sessions>,
}

impl Shared {
    /// The user a credential logs in as under `policy`, or why it may not:
    /// the one rule for both the login and every access-file reload.
    fn resolve(
        &self,
        login: &str,
        peer: IpAddr,
        credential: &Credential,
        policy: &Policy,
    ) -> Result<String, String> {
        match credential {
            Credential::Key(key) => match &self.authorized {
                Some(file) => file
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .find(key)
                    .map(|_| login.to_string())
                    .ok_or_else(|| "key not in authorized_keys".to_string()),
                None => policy
                    .user_for_key(key)
                    .map(str::to_string)
                    .ok_or_else(|| "key not in the access file".to_string()),
            },
            Credential::Certificate(cert) => {
                let user = policy.user_for_certificate(cert).ok_or_else(|| {
                    "certificate not valid now, not from a configured CA, or no principal maps to a user"
                        .to_string()
                })?;
                check_critical_options(cert, peer)?;
                Ok(user)
            }
            Credential::Anonymous if login == ANONYMOUS_LOGIN && policy.allows_anonymous() => {
                Ok(ANONYMOUS_LOGIN.to_string())
            }
            Credential::Anonymous => Err("no anonymous access".to_string()),
        }
    }

    /// The policy to decide with now: re-reads a changed access file (its
    /// reload hook runs [`Shared::revoke`]) or a changed authorized_keys
    /// file (revoking here), so a connection the change shuts out is
    /// closed before anything is decided under the new keys.
    fn current_policy(&self) -> Arc<Policy> {
        let policy = self.registry.access().policy();
        if let Some(file) = &self.authorized {
            let changed = file.lock().unwrap_or_else(|e| e.into_inner()).refresh();
            if changed {
                self.revoke(&policy);
            }
        }
        policy
    }

    /// Closes the connections `policy` (a reloaded access file) or the
    /// current authorized_keys no longer let in as the user they logged in as.
    fn revoke(&self, policy: &Policy) {
        self.sessions.revoke(|l| {
            self.resolve(&l.login, l.peer.ip(), &l.credential, policy)
                .ok()
        });
    }
}

/// Checks what `args` name the way [`run`] would before it listens, without
/// creating anything (`berth-server check-config`): the access file parses,
/// the hooks directory is trusted, the mirror upstream is well formed.
/// Prints notes (`# ...` lines) for what [`run`] would create or warn about.
pub fn check_settings(args: &ServeArgs) -> Result<()> {
    args.registry_config()?;
    args.admin.check()?;
    let paths = crate::store::Paths::new(&args.root);
    if !paths.images_dir().is_dir() {
        println!(
            "# note: {} is not a store yet; it is created at first start",
            args.root.display()
        );
    }
    let host_key = keys::host_key_path(args.host_key.as_deref(), &paths)?;
    if host_key.exists() {
        crate::strict::check_private(&host_key)
            .map_err(|e| anyhow::anyhow!("refusing host key: {e}"))?;
    } else {
        println!(
            "# note: host key {} is generated at first start",
            host_key.display()
        );
    }
    match &args.access {
        Some(path) => drop(AccessControl::from_file(path)?),
        None => {
            let path = match &args.authorized_keys {
                Some(p) => p.clone(),
                None => PathBuf::from(
                    std::env::var_os("HOME").context("HOME is not set; pass --authorized-keys")?,
                )
                .join(".ssh/authorized_keys"),
            };
            if AuthorizedKeysFile::load(&path).is_empty() {
                println!(
                    "# warning: no usable key in {}; nobody can log in until one is added",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Binds `args.listen`, the listener [`run`] takes (the binary's way in).
pub async fn bind(args: &ServeArgs) -> Result<TcpListener> {
    TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))
}

/// Runs the SSH server on `listener` until `shutdown` completes, as
/// mini-redis's `server::run(listener, shutdown)` does: the binary binds
/// ([`bind`]) and passes ctrl-c/SIGTERM, a test binds port 0 and passes a
/// channel, and both start the server the same way. On shutdown it stops
/// accepting and returns; open connections end with the runtime.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    args.admin.check()?;
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
    crate::mirror::announce(registry.config().mirror.as_ref());
    args.admin.start(registry.clone()).await?;
    let shared = Arc::new(Shared {
        registry,
        authorized,
        max_channels: args.max_channels,
        gate: Gate::new(
            args.max_startups,
            args.max_startups_per_source,
            args.max_connections,
        ),
        sessions: Arc::new(Sessions::default()),
    });
    watch_key_files(&shared);
    let config = Arc::new(ssh_config(host_key, Duration::from_secs(args.idle_timeout)));
    let addr = listener.local_addr()?;
    println!(
        "berth-server: listening on {addr} (root {}, host key {host_fp}, {keys_from})",
        args.root.display(),
    );
    let grace = Duration::from_secs(args.login_grace_time);
    let ids = AtomicU64::new(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        let conn = ids.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("conn", id = conn, %peer);
        let _ = stream.set_nodelay(true);
        let (stream, cutter) = match Cutter::new(stream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(parent: &span, error = %e, "cannot set up the connection");
                continue;
            }
        };
        let Some(startup) = shared.gate.admit(peer.ip(), cutter.clone()) else {
            tracing::debug!(parent: &span, "--max-startups or --max-startups-per-source is 0; closing");
            continue;
        };
        let (logged_in, login_seen) = oneshot::channel();
        let handler = Conn {
            shared: shared.clone(),
            peer,
            conn,
            who: None,
            pending: HashMap::new(),
            open: Arc::new(AtomicUsize::new(0)),
            warned_channel_limit: false,
            startup: Some(startup),
            logged_in: Some(logged_in),
            session: None,
            cutter: cutter.clone(),
            warned_login_name: false,
        };
        let config = config.clone();
        let open = counters().ssh_connections.open();
        tokio::spawn(
            async move {
                let _open = open;
                let session = async move {
                    match russh::server::run_stream(config, stream, handler).await {
                        Ok(session) => {
                            if let Err(e) = session.await {
                                tracing::debug!(error = %e, "connection ended");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "handshake failed"),
                    }
                };
                tokio::pin!(session);
                tokio::select! {
                    () = &mut session => return,
                    seen = tokio::time::timeout(grace, login_seen) => {
                        // Err: the grace time is over; Ok(Err): the session
                        // ended without a login (it finishes below).
                        if seen.is_err() {
                            tracing::info!(seconds = grace.as_secs(), "no login within the login grace time; closing");
                            cutter.cut();
                        }
                    }
                }
                session.await;
            }
            .instrument(span),
        );
    }
}

/// Re-reads the key files every second ([`Shared::current_policy`]), so a
/// removed key loses its open connections even when no request or login
/// arrives to notice the change.
fn watch_key_files(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    shared.registry.access().on_reload(Box::new(move |policy| {
        if let Some(shared) = weak.upgrade() {
            shared.revoke(policy);
        }
    }));
    reload_on_sighup(shared);
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(shared) => drop(shared.current_policy()),
                None => return,
            }
        }
    });
}

/// SIGHUP re-reads the access file (or authorized_keys) at once, whatever
/// its modification time says (`systemctl reload berth-server`).
fn reload_on_sighup(shared: &Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch SIGHUP; key files are still re-read when they change");
            return;
        }
    };
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(shared) = weak.upgrade() else { return };
            if let Some(file) = &shared.authorized {
                file.lock().unwrap_or_else(|e| e.into_inner()).reload();
                shared.revoke(&shared.registry.access().policy());
            } else {
                drop(shared.registry.access().reload());
            }
            tracing::info!("SIGHUP: key files re-read");
        }
    });
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
    /// Until login: the connection's slot among those logging in.
    startup: Option<Startup>,
    /// Until login: tells the connection task to stop the grace timer.
    logged_in: Option<oneshot::Sender<()>>,
    /// After login: the logged-in slot and the entry reloads check.
    session: Option<(OwnedSemaphorePermit, Registered)>,
    /// Closes this connection from outside the session.
    cutter: Cutter,
    /// Whether a refused login name was already logged.
    warned_login_name: bool,
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
        if !self.still_allowed() {
            return self.refuse(id, session);
        }
        let Some(channel) = self.pending.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let registry = self.shared.registry.clone();
        let who = self.identity();
        let slot = ChannelSlot(self.open.clone());
        let serving = counters().ssh_channels.open();
        let span =
            tracing::info_span!("channel", conn = self.conn, channel = %id, user = %who.log_user());
        tokio::spawn(
            async move {
                let (_slot, _serving) = (slot, serving);
                // With the span's channel id: lets a log reader tell which
                // channel a request came on and when it was opened.
                tracing::debug!("channel started");
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
        if login == ANONYMOUS_LOGIN {
            if let Some(auth) = self.log_in(login, Credential::Anonymous, None) {
                return Ok(auth);
            }
        } else {
            self.login_name_ok(login);
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
        if !self.login_name_ok(login) {
            counters().auth_failure(AuthFailure::LoginName);
            return Ok(Auth::reject());
        }
        let policy = self.shared.current_policy();
        let credential = Credential::Key(offer.public_key.clone());
        let known = self
            .shared
            .resolve(login, self.peer.ip(), &credential, &policy)
            .is_ok();
        Ok(if known || policy.has_cert_authorities() {
            Auth::Accept
        } else {
            counters().auth_failure(AuthFailure::UnknownKey);
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        login: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fp = keys::fingerprint(key.public_key);
        let credential = Credential::Key(key.public_key.clone());
        Ok(self
            .log_in(login, credential, Some(fp))
            .unwrap_or_else(Auth::reject))
    }

    async fn auth_openssh_certificate(
        &mut self,
        login: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        // russh checked the signature by the certificate's key; the CA
        // signature, validity, type, principals and critical options are
        // checked in Shared::resolve.
        let fp = keys::fingerprint(&PublicKey::from(cert.public_key().clone()));
        tracing::info!(login, key = %fp, key_id = cert.key_id(), "certificate offered");
        let credential = Credential::Certificate(Box::new(cert.clone()));
        Ok(self
            .log_in(login, credential, Some(fp))
            .unwrap_or_else(Auth::reject))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.still_allowed() {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
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
            tracing::info!(name = ?name, "unknown subsystem refused");
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
    /// Checks the login name ([`valid_login`]); a refused one is logged
    /// once per connection, escaped.
    fn login_name_ok(&mut self, login: &str) -> bool {
        if valid_login(login) {
            return true;
        }
        if !self.warned_login_name {
            tracing::info!(
                login = ?login,
                "login name refused: only A-Z a-z 0-9 . _ @ - and at most 64 characters"
            );
            self.warned_login_name = true;
        }
        false
    }

    /// Logs the connection in if `credential` maps to a user for `login`
    /// and a logged-in slot is free; `None` means reject.
    fn log_in(
        &mut self,
        login: &str,
        credential: Credential,
        key_fingerprint: Option<String>,
    ) -> Option<Auth> {
        if !self.login_name_ok(login) {
            counters().auth_failure(AuthFailure::LoginName);
            return None;
        }
        let policy = self.shared.current_policy();
        let user = match self
            .shared
            .resolve(login, self.peer.ip(), &credential, &policy)
        {
            Ok(user) => user,
            Err(why) => {
                counters().auth_failure(match credential {
                    Credential::Key(_) => AuthFailure::UnknownKey,
                    Credential::Certificate(_) => AuthFailure::Certificate,
                    Credential::Anonymous => AuthFailure::Anonymous,
                });
                if !matches!(credential, Credential::Anonymous) {
                    tracing::info!(login, key = key_fingerprint.as_deref().unwrap_or("-"), reason = %why, "login refused");
                }
                return None;
            }
        };
        let Some(permit) = self.shared.gate.log_in() else {
            counters().auth_failure(AuthFailure::ConnectionLimit);
            tracing::warn!(
                login,
                user,
                "too many logged-in connections (--max-connections); login refused"
            );
            return None;
        };
        let who = if matches!(credential, Credential::Anonymous) {
            Identity::anonymous(Some(self.peer.to_string()))
        } else {
            Identity {
                user: user.clone(),
                key_fingerprint,
                client: Some(self.peer.to_string()),
            }
        };
        let entry = Login {
            login: login.to_string(),
            peer: self.peer,
            credential: credential.clone(),
            user: user.clone(),
        };
        let registered = self
            .shared
            .sessions
            .register(self.conn, entry, self.cutter.clone());
        // A reload between the check above and the registration did not
        // see this connection; from here on every reload does. So check
        // once more against whatever is current now.
        let now = self.shared.current_policy();
        if self
            .shared
            .resolve(login, self.peer.ip(), &credential, &now)
            != Ok(user)
        {
            counters().auth_failure(AuthFailure::KeysChanged);
            tracing::info!(login, "key files changed during the login; login refused");
            return None;
        }
        tracing::info!(
            login,
            user = %who.user,
            key = who.key_fingerprint.as_deref().unwrap_or("-"),
            "authenticated"
        );
        self.session = Some((permit, registered));
        self.startup = None;
        if let Some(tx) = self.logged_in.take() {
            let _ = tx.send(());
        }
        self.who = Some(who);
        Some(Auth::Accept)
    }

    /// Whether this connection may still open channels and start requests:
    /// re-reads changed key files first, so a reload that revokes it
    /// happens before the answer.
    fn still_allowed(&self) -> bool {
        self.shared.current_policy();
        self.session
            .as_ref()
            .is_some_and(|(_, registered)| !registered.is_revoked())
    }

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
