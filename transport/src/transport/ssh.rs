//! The built-in SSH client (russh): one authenticated connection per
//! registry, shared by every stream (a `docker-registry` subsystem channel
//! each), re-established when it drops; through jump hosts, up to 3 more
//! for big uploads ([`SshTransport::open_bulk`]).
//!
//! Done the way OpenSSH users expect (`russh.md` §3):
//! * host keys checked against `~/.ssh/known_hosts` (or `--known-hosts`),
//!   hashed entries and `[host]:port` included; an unknown host is refused
//!   with its fingerprint unless `--accept-new-host-key`; a changed key is
//!   always refused;
//! * authentication with `-i/--identity` keys, then the ssh-agent
//!   (`SSH_AUTH_SOCK`), then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`;
//!   encrypted keys ask for their passphrase on the terminal, once per run
//!   however many hops (each key file is loaded once: `keys`);
//! * `-J` jump hosts, each hop tunnelled through the previous one with a
//!   direct-tcpip channel;
//! * tuned for bulk data (`russh.md` §5): AES-GCM first where the CPU has
//!   AES, TCP_NODELAY, a 64 MiB receive window per channel on every hop, no
//!   compression; through jump hosts, big uploads spread over several
//!   inner connections ([`SshTransport::open_bulk`]).
//!
//! It does not read `~/.ssh/config`; set `BERTH_SSH_COMMAND=ssh` for that.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{cipher, compression, Preferred};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{Diagnostics, Stream, TransportError};
use crate::remote::SshTarget;
use crate::wire::SUBSYSTEM;

mod keys;
mod subsystem;

use keys::KeyCache;
use subsystem::SubsystemStream;

/// How long the TCP connect to the first hop may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// SSH options shared by the native client and the OpenSSH command.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// `-i/--identity` key files, tried first, in order.
    pub identities: Vec<PathBuf>,
    /// `-J` jump hosts, outermost first.
    pub jumps: Vec<SshTarget>,
    /// `--known-hosts FILE` instead of `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// `--accept-new-host-key`: record the key of a host seen for the first time.
    pub accept_new_host_key: bool,
}

/// What went wrong on the native SSH path. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// TCP connect to the first hop failed.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// `host:port`.
        target: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// A host not in known_hosts.
    #[error(
        "host key of {host} is unknown: {algorithm} key {fingerprint} (not in {known_hosts}); \
         if that fingerprint is right, run again with --accept-new-host-key to record it"
    )]
    UnknownHost {
        /// The known_hosts name (`host` or `[host]:port`).
        host: String,
        /// Key type.
        algorithm: String,
        /// SHA256 fingerprint.
        fingerprint: String,
        /// The file checked.
        known_hosts: String,
    },
    /// A host whose recorded key differs: possibly a man in the middle.
    #[error(
        "HOST KEY OF {host} HAS CHANGED: it presents {algorithm} key {fingerprint}, but line \
         {line} of {known_hosts} records another one. Someone may be intercepting the connection; \
         if the host key was really replaced, remove that line"
    )]
    HostKeyChanged {
        /// The known_hosts name.
        host: String,
        /// Key type.
        algorithm: String,
        /// SHA256 fingerprint of the presented key.
        fingerprint: String,
        /// The file checked.
        known_hosts: String,
        /// The line holding the recorded key.
        line: usize,
    },
    /// A host known only under other key types.
    #[error(
        "host key of {host} does not match: it presents {algorithm} key {fingerprint}, but \
         {known_hosts} records only keys of other types for it; check the key and edit the file"
    )]
    HostKeyOtherType {
        /// The known_hosts name.
        host: String,
        /// Key type presented.
        algorithm: String,
        /// SHA256 fingerprint of the presented key.
        fingerprint: String,
        /// The file checked.
        known_hosts: String,
    },
    /// known_hosts could not be read or written.
    #[error("known_hosts file {path}: {message}")]
    KnownHosts {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// No home directory to find `~/.ssh` in.
    #[error("no home directory to find ~/.ssh in; pass --known-hosts and --identity")]
    NoHome,
    /// A key file that could not be used.
    #[error("identity {path}: {message}")]
    Identity {
        /// The key file.
        path: String,
        /// Why it could not be used.
        message: String,
    },
    /// The server closed the connection while keys were being tried: not
    /// a refusal of the keys. berth-server cuts the oldest logins in
    /// progress of an address with more than `--max-startups-per-source`
    /// of them (sshd's MaxStartups drops some too), and sshd disconnects
    /// after MaxAuthTries refused keys.
    #[error(
        "{host}: the server closed the connection during login, before accepting a key \
         (too many logins in progress from this address: berth-server \
         --max-startups-per-source, sshd MaxStartups; or too many keys tried: sshd \
         MaxAuthTries); tried {tried}"
    )]
    ClosedDuringLogin {
        /// The hop.
        host: String,
        /// The keys tried before the connection closed.
        tried: String,
    },
    /// Every key was refused.
    #[error("{user}@{host}: permission denied (publickey); tried {tried}")]
    AuthFailed {
        /// Login name.
        user: String,
        /// The hop.
        host: String,
        /// The keys tried, and notes on the ones skipped.
        tried: String,
    },
    /// A jump host would not open the tunnel to the next hop.
    #[error("jump host {jump} could not open a tunnel to {target}: {source}")]
    Tunnel {
        /// The jump host.
        jump: String,
        /// The next hop.
        target: String,
        /// russh's error.
        source: Box<russh::Error>,
    },
    /// The server refused the `docker-registry` subsystem.
    #[error("{host} refused the {SUBSYSTEM} subsystem (is it a berth server, or sshd with `Subsystem {SUBSYSTEM} berth-server stdio ...`?)")]
    SubsystemRefused {
        /// The registry host.
        host: String,
    },
    /// The connection ended or the protocol failed at a given hop.
    #[error("{host}: {source}")]
    Session {
        /// The hop.
        host: String,
        /// russh's error.
        source: Box<russh::Error>,
    },
    /// A protocol error not yet tied to a host (see [`SshError::at`]).
    #[error("SSH: {0}")]
    Russh(Box<russh::Error>),
}

impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> SshError {
        SshError::Russh(Box::new(e))
    }
}

impl SshError {
    /// Ties a bare protocol error to the hop it happened on.
    fn at(self, host: &SshTarget) -> SshError {
        match self {
            SshError::Russh(source) => SshError::Session {
                host: host.to_string(),
                source,
            },
            other => other,
        }
    }
}

/// Checks host keys for one hop (the russh client handler).
struct Verifier {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_new: bool,
}

impl client::Handler for Verifier {
    type Error = SshError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, SshError> {
        let key = key.public_key();
        let name = SshTarget {
            user: None,
            host: self.host.clone(),
            port: self.port,
        }
        .known_hosts_name();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let algorithm = key.algorithm().to_string();
        let file = self.known_hosts.display().to_string();
        let kh_err = |e: russh::keys::Error| SshError::KnownHosts {
            path: file.clone(),
            message: e.to_string(),
        };
        // One read of the file, judged whole: reading it twice (check,
        // then list) let a client that recorded the same key in between
        // (two runs meeting a new host at once) look like a mismatch.
        let known = russh::keys::known_hosts::known_host_keys_path(
            &self.host,
            self.port,
            &self.known_hosts,
        )
        .map_err(kh_err)?;
        match judge_host_key(&known, &key) {
            HostKeyVerdict::Known => Ok(true),
            HostKeyVerdict::Changed { line } => Err(SshError::HostKeyChanged {
                host: name,
                algorithm,
                fingerprint,
                known_hosts: file,
                line,
            }),
            HostKeyVerdict::OtherTypes => Err(SshError::HostKeyOtherType {
                host: name,
                algorithm,
                fingerprint,
                known_hosts: file,
            }),
            HostKeyVerdict::Unknown if !self.accept_new => Err(SshError::UnknownHost {
                host: name,
                algorithm,
                fingerprint,
                known_hosts: file,
            }),
            HostKeyVerdict::Unknown => {
                russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host,
                    self.port,
                    &key,
                    &self.known_hosts,
                )
                .map_err(kh_err)?;
                tracing::warn!("recorded host key of {name} ({algorithm} {fingerprint}) in {file}");
                Ok(true)
            }
        }
    }
}

/// What known_hosts says of a presented host key.
#[derive(Debug, PartialEq, Eq)]
enum HostKeyVerdict {
    /// Recorded (once or more: clients that met the host at once each
    /// record it).
    Known,
    /// Another key of the same type is recorded, on `line`.
    Changed { line: usize },
    /// Only keys of other types are recorded for the host.
    OtherTypes,
    /// Nothing is recorded for the host.
    Unknown,
}

/// Judges `key` against the keys `known` recorded for its host (line,
/// key), as OpenSSH does: a match anywhere wins; otherwise a recorded key
/// of the same type means the key changed.
fn judge_host_key(
    known: &[(usize, russh::keys::PublicKey)],
    key: &russh::keys::PublicKey,
) -> HostKeyVerdict {
    if known.iter().any(|(_, k)| k.key_data() == key.key_data()) {
        return HostKeyVerdict::Known;
    }
    match known.iter().find(|(_, k)| k.algorithm() == key.algorithm()) {
        Some((line, _)) => HostKeyVerdict::Changed { line: *line },
        None if known.is_empty() => HostKeyVerdict::Unknown,
        None => HostKeyVerdict::OtherTypes,
    }
}

/// An authenticated connection, with the jump-host connections it tunnels
/// through (kept alive as long as it is).
struct Session {
    /// The first inner connection to the registry.
    primary: Arc<Lane>,
    /// Inner connections added for bulk streams through the jumps
    /// ([`SshTransport::open_bulk`]).
    extra: std::sync::Mutex<ExtraLanes>,
    /// The connections to the jump hosts, outermost first.
    jumps: Vec<Handle<Verifier>>,
}

/// One authenticated SSH connection to the registry.
struct Lane {
    handle: Handle<Verifier>,
    /// Bulk streams on it: [`LaneClaim`]s alive.
    bulk: AtomicUsize,
}

impl Lane {
    fn new(handle: Handle<Verifier>) -> Arc<Lane> {
        Arc::new(Lane {
            handle,
            bulk: AtomicUsize::new(0),
        })
    }
}

/// A bulk stream's hold on its lane, given back when the stream ends.
struct LaneClaim(Arc<Lane>);

impl LaneClaim {
    fn new(lane: &Arc<Lane>) -> LaneClaim {
        lane.bulk.fetch_add(1, Ordering::AcqRel);
        LaneClaim(lane.clone())
    }
}

impl Drop for LaneClaim {
    fn drop(&mut self) {
        self.0.bulk.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct ExtraLanes {
    lanes: Vec<Arc<Lane>>,
    /// Lanes being logged in, counted against [`MAX_LANES`].
    opening: usize,
}

/// What [`SshTransport::open_bulk`] does for a bulk stream: claim a lane
/// without one, or log in a new one, or share the least busy.
enum LaneChoice {
    Claimed(LaneClaim),
    AddOne,
}

/// Of `lanes` (the primary first), the one carrying the fewest bulk
/// streams; the first of those on a tie.
fn least_busy_of(lanes: &[Arc<Lane>]) -> Arc<Lane> {
    let mut best = &lanes[0];
    for lane in &lanes[1..] {
        if lane.bulk.load(Ordering::Acquire) < best.bulk.load(Ordering::Acquire) {
            best = lane;
        }
    }
    best.clone()
}

impl Session {
    fn is_closed(&self) -> bool {
        self.primary.handle.is_closed() || self.jumps.iter().any(|j| j.is_closed())
    }

    fn extra(&self) -> std::sync::MutexGuard<'_, ExtraLanes> {
        // Nothing panics while holding it; recover the data if it ever did.
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open lanes, the primary first; closed extra lanes are dropped.
    fn lanes(&self, extra: &mut ExtraLanes) -> Vec<Arc<Lane>> {
        extra.lanes.retain(|l| !l.handle.is_closed());
        std::iter::once(self.primary.clone())
            .chain(extra.lanes.iter().cloned())
            .collect()
    }

    /// The lane carrying the fewest bulk streams (the primary on a tie).
    fn least_busy(&self, extra: &mut ExtraLanes) -> Arc<Lane> {
        least_busy_of(&self.lanes(extra))
    }

    /// Claims a lane carrying no bulk stream, or reserves a new one while
    /// fewer than [`MAX_LANES`] exist; otherwise claims the least busy.
    fn choose_bulk_lane(&self) -> LaneChoice {
        let mut extra = self.extra();
        let lanes = self.lanes(&mut extra);
        if let Some(free) = lanes.iter().find(|l| l.bulk.load(Ordering::Acquire) == 0) {
            return LaneChoice::Claimed(LaneClaim::new(free));
        }
        if lanes.len() + extra.opening < MAX_LANES {
            extra.opening += 1;
            return LaneChoice::AddOne;
        }
        LaneChoice::Claimed(LaneClaim::new(&least_busy_of(&lanes)))
    }

    /// Ends a reservation of [`Self::choose_bulk_lane`]: the new lane
    /// (claimed), or, when it could not be logged in, the least busy one.
    fn lane_added(&self, handle: Option<Handle<Verifier>>) -> LaneClaim {
        let mut extra = self.extra();
        extra.opening -= 1;
        match handle {
            Some(handle) => {
                let lane = Lane::new(handle);
                extra.lanes.push(lane.clone());
                LaneClaim::new(&lane)
            }
            None => LaneClaim::new(&self.least_busy(&mut extra)),
        }
    }
}

/// The native SSH transport to one registry host.
pub struct SshTransport {
    target: SshTarget,
    options: SshOptions,
    user: String,
    home: Option<PathBuf>,
    config: Arc<client::Config>,
    session: Mutex<Option<Arc<Session>>>,
    keys: KeyCache,
}

impl SshTransport {
    /// Prepares the transport; nothing connects until the first stream.
    pub fn new(target: SshTarget, options: SshOptions) -> Result<SshTransport, TransportError> {
        let user = super::local_user().ok_or(TransportError::NoUser)?;
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let config = Arc::new(client_config(WINDOW));
        Ok(SshTransport {
            target,
            options,
            user,
            home,
            config,
            session: Mutex::new(None),
            keys: KeyCache::default(),
        })
    }

    /// The live connection, established (again) if there is none.
    pub(crate) async fn connect(&self) -> Result<(), SshError> {
        self.session().await.map(|_| ())
    }

    async fn session(&self) -> Result<Arc<Session>, SshError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
            tracing::info!("SSH connection to {} was lost; reconnecting", self.target);
        }
        *slot = None;
        let s = Arc::new(self.establish().await?);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Whether the registry is reached through jump hosts.
    pub fn through_jumps(&self) -> bool {
        !self.options.jumps.is_empty()
    }

    /// A new subsystem channel for one long upload. Through jump hosts
    /// every inner connection to the registry rides one `direct-tcpip`
    /// channel of the jump, whose window holds it back (a stock sshd
    /// grants 2 MiB: about 2 MiB per round trip to the jump, however many
    /// streams go inside). So a bulk stream gets an inner connection that
    /// carries no other bulk stream: a free one, or a new one logged in
    /// through the same jump connection (no new login at the jump), up to
    /// 4 (`MAX_LANES`); beyond that it shares the least busy. A lane that
    /// cannot be logged in costs nothing but the try: the stream shares.
    /// Without jump hosts this is [`Self::open`]: the registry's windows
    /// are berth's own.
    pub async fn open_bulk(&self) -> Result<Stream, SshError> {
        if !self.through_jumps() {
            return self.open().await;
        }
        let session = self.session().await?;
        let claim = match session.choose_bulk_lane() {
            LaneChoice::Claimed(claim) => claim,
            LaneChoice::AddOne => {
                let added = self.add_lane(&session).await;
                if let Err(e) = &added {
                    tracing::info!(
                        "another connection to {} through the jump host failed ({e}); sharing one",
                        self.target
                    );
                }
                session.lane_added(added.ok())
            }
        };
        match self.open_channel(&claim.0.handle).await {
            Ok(stream) => Ok(stream.holding(claim)),
            Err(e) => {
                tracing::debug!("bulk channel open failed ({e}); opening an ordinary one");
                drop(claim);
                self.open().await
            }
        }
    }

    /// Logs in one more inner connection through the session's jumps.
    async fn add_lane(&self, session: &Session) -> Result<Handle<Verifier>, SshError> {
        let known_hosts = self.known_hosts()?;
        let via = session.jumps.last().zip(self.options.jumps.last());
        let handle = self.connect_hop(via, &self.target, &known_hosts).await?;
        tracing::debug!(
            "another connection to {} through the jump host",
            self.target
        );
        Ok(handle)
    }

    /// A new subsystem channel, on the inner connection carrying the fewest
    /// bulk streams (so a small request does not queue behind an upload in
    /// a jump's window), else on the first; if the first connection turns
    /// out to be dead, it is re-established once and the channel opened
    /// again.
    pub async fn open(&self) -> Result<Stream, SshError> {
        let session = self.session().await?;
        let lane = session.least_busy(&mut session.extra());
        if !Arc::ptr_eq(&lane, &session.primary) {
            // An extra connection that fails is no reason to reconnect.
            match self.open_channel(&lane.handle).await {
                Ok(stream) => return Ok(stream),
                Err(e) => tracing::debug!("channel open on an extra connection failed ({e})"),
            }
        }
        match self.open_channel(&session.primary.handle).await {
            Err(e) if session.is_closed() || matches!(e, SshError::Russh(_)) => {
                tracing::debug!("channel open failed ({e}); reconnecting");
                {
                    let mut slot = self.session.lock().await;
                    if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
                        *slot = None;
                    }
                }
                let session = self.session().await?;
                self.open_channel(&session.primary.handle).await
            }
            other => other,
        }
    }

    /// Opens a channel and asks for the subsystem without waiting for the
    /// answer: the first request goes out right behind it
    /// ([`subsystem::SubsystemStream`], one round trip less per channel).
    async fn open_channel(&self, handle: &Handle<Verifier>) -> Result<Stream, SshError> {
        let channel = handle.channel_open_session().await?;
        channel.request_subsystem(true, SUBSYSTEM).await?;
        let refusal = SshError::SubsystemRefused {
            host: self.target.to_string(),
        }
        .to_string();
        // Finished from the start: a refusal is known when the stream ends.
        let diagnostics = Diagnostics::default();
        let (read, write) = channel.split();
        Ok(Stream::new(
            SubsystemStream::new(read, write, refusal, diagnostics.clone()),
            diagnostics,
        ))
    }

    fn known_hosts(&self) -> Result<PathBuf, SshError> {
        match (&self.options.known_hosts, &self.home) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(home)) => Ok(home.join(".ssh").join("known_hosts")),
            (None, None) => Err(SshError::NoHome),
        }
    }

    /// Connects hop by hop: TCP to the first, direct-tcpip through each
    /// jump host to the next, authenticating at every hop.
    async fn establish(&self) -> Result<Session, SshError> {
        let known_hosts = self.known_hosts()?;
        let mut jumps: Vec<(Handle<Verifier>, &SshTarget)> = Vec::new();
        for hop in &self.options.jumps {
            let via = jumps.last().map(|(h, t)| (h, *t));
            let handle = self.connect_hop(via, hop, &known_hosts).await?;
            jumps.push((handle, hop));
        }
        let via = jumps.last().map(|(h, t)| (h, *t));
        let handle = self.connect_hop(via, &self.target, &known_hosts).await?;
        Ok(Session {
            primary: Lane::new(handle),
            extra: Default::default(),
            jumps: jumps.into_iter().map(|(h, _)| h).collect(),
        })
    }

    /// One hop: over TCP, or tunnelled through `via`; host key checked,
    /// then authenticated.
    async fn connect_hop(
        &self,
        via: Option<(&Handle<Verifier>, &SshTarget)>,
        hop: &SshTarget,
        known_hosts: &Path,
    ) -> Result<Handle<Verifier>, SshError> {
        let verifier = Verifier {
            host: hop.host.clone(),
            port: hop.port,
            known_hosts: known_hosts.to_path_buf(),
            accept_new: self.options.accept_new_host_key,
        };
        let mut handle = match via {
            None => {
                let addr = format!("{}:{}", hop.host, hop.port);
                let tcp = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    TcpStream::connect((hop.host.as_str(), hop.port)),
                )
                .await
                .map_err(|_| SshError::Connect {
                    target: addr.clone(),
                    source: std::io::ErrorKind::TimedOut.into(),
                })?
                .map_err(|source| SshError::Connect {
                    target: addr,
                    source,
                })?;
                let _ = tcp.set_nodelay(true);
                client::connect_stream(self.config.clone(), tcp, verifier)
                    .await
                    .map_err(|e| e.at(hop))?
            }
            Some((jump, jump_target)) => {
                let tunnel = jump
                    .channel_open_direct_tcpip(
                        hop.host.as_str(),
                        u32::from(hop.port),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|source| SshError::Tunnel {
                        jump: jump_target.to_string(),
                        target: hop.to_string(),
                        source: Box::new(source),
                    })?;
                // Decoupled: russh's loops would otherwise deadlock on a
                // long link (`tunnel` module).
                let stream = super::tunnel::decouple(tunnel.into_stream());
                client::connect_stream(self.config.clone(), stream, verifier)
                    .await
                    .map_err(|e| e.at(hop))?
            }
        };
        self.authenticate(&mut handle, hop).await?;
        Ok(handle)
    }

    /// Logs in: [`Self::try_every_key`], then tells a connection the
    /// server closed midway from keys it refused.
    async fn authenticate(
        &self,
        handle: &mut Handle<Verifier>,
        hop: &SshTarget,
    ) -> Result<(), SshError> {
        let mut tried: Vec<String> = Vec::new();
        let outcome = self.try_every_key(handle, hop, &mut tried).await;
        match outcome {
            Ok(true) => return Ok(()),
            // A key file that could not be loaded (a wrong passphrase) is
            // the story, whatever the server did meanwhile.
            Err(e @ SshError::Identity { .. }) => return Err(e),
            _ => {}
        }
        let tried = if tried.is_empty() {
            "no keys (none given with -i, no ssh-agent, no ~/.ssh/id_* files)".to_string()
        } else {
            tried.join(", ")
        };
        if handle.is_closed() {
            return Err(SshError::ClosedDuringLogin {
                host: hop.to_string(),
                tried,
            });
        }
        outcome?;
        // `user@` once: the hop names the user only when it was given.
        let host = SshTarget {
            user: None,
            ..hop.clone()
        };
        Err(SshError::AuthFailed {
            user: hop.user_or(&self.user).to_string(),
            host: host.to_string(),
            tried,
        })
    }

    /// Tries `-i` keys, then the agent, then the default key files; true
    /// once one is accepted. `tried` collects what was tried.
    async fn try_every_key(
        &self,
        handle: &mut Handle<Verifier>,
        hop: &SshTarget,
        tried: &mut Vec<String>,
    ) -> Result<bool, SshError> {
        let user = hop.user_or(&self.user).to_string();

        // `anonymous@host` asks for keyless access (SSH `none`), which the
        // server grants only where its rules let anonymous clients read.
        if user == "anonymous" {
            match handle.authenticate_none(&user).await {
                Ok(r) if r.success() => return Ok(true),
                Ok(_) => tried.push("anonymous access (refused by the server)".to_string()),
                Err(e) => tried.push(format!("anonymous access ({e})")),
            }
        }

        for path in &self.options.identities {
            let key = self.keys.get(path).await?;
            if try_key(handle, &user, key, hop).await? {
                return Ok(true);
            }
            tried.push(path.display().to_string());
        }

        if std::env::var_os("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty()) {
            match AgentClient::connect_env().await {
                Ok(mut agent) => match agent.request_identities().await {
                    Ok(ids) => {
                        for id in ids {
                            let key = id.public_key().into_owned();
                            let hash = if key.algorithm().is_rsa() {
                                handle
                                    .best_supported_rsa_hash()
                                    .await
                                    .map_err(|e| SshError::from(e).at(hop))?
                                    .flatten()
                            } else {
                                None
                            };
                            let fp = key.fingerprint(HashAlg::Sha256).to_string();
                            match handle
                                .authenticate_publickey_with(&user, key, hash, &mut agent)
                                .await
                            {
                                Ok(r) if r.success() => return Ok(true),
                                Ok(_) => tried.push(format!("agent key {fp}")),
                                Err(e) => tried.push(format!("agent key {fp} ({e})")),
                            }
                        }
                    }
                    Err(e) => tried.push(format!("ssh-agent (listing keys failed: {e})")),
                },
                Err(e) => tried.push(format!("ssh-agent (unreachable: {e})")),
            }
        }

        if let Some(home) = &self.home {
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let path = home.join(".ssh").join(name);
                if !path.exists() {
                    continue;
                }
                match self.keys.get(&path).await {
                    Ok(key) => {
                        if try_key(handle, &user, key, hop).await? {
                            return Ok(true);
                        }
                        tried.push(path.display().to_string());
                    }
                    Err(e) => tried.push(format!("{} (skipped: {e})", path.display())),
                }
            }
        }

        Ok(false)
    }
}

/// Offers one private key; `Ok(false)` when the server refuses it.
async fn try_key(
    handle: &mut Handle<Verifier>,
    user: &str,
    key: Arc<PrivateKey>,
    hop: &SshTarget,
) -> Result<bool, SshError> {
    let hash = if key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| SshError::from(e).at(hop))?
            .flatten()
    } else {
        None
    };
    let result = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
        .await
        .map_err(|e| SshError::from(e).at(hop))?;
    Ok(result.success())
}

/// The window the client grants for each channel, on every hop: what the
/// registry (or a jump host) may send before the client's next window
/// adjust. russh adjusts at half the window, so one stream moves about
/// (window / 2) / RTT: 64 MiB lets a pull run at ~650 MB/s at 50 ms RTT (16
/// MiB held it at 160 MB/s, docs/performance.md). It costs the client no
/// memory of its own: received data waits in the channel's bounded queue
/// and behind it in the kernel, or, through a jump host, in the tunnel's
/// bounded queue and behind it in the jump's buffers (`tunnel` module).
const WINDOW: u32 = 64 << 20;

/// Most inner connections to the registry through jump hosts
/// ([`SshTransport::open_bulk`]): `berth push`'s default `--jobs`, so each
/// blob it sends at once can have its own, while the registry sees a
/// handful of logins from the jump's address (berth-server lets 10 log in
/// at once per source).
const MAX_LANES: usize = 4;

/// Client settings for bulk transfer (`russh.md` §5): AES-GCM first when the
/// CPU accelerates AES (chacha20 first otherwise), no compression (layers are
/// gzip already), a `window`-byte receive window per channel, 64 KiB
/// packets, TCP_NODELAY (without it tunnelled window adjusts stall jump-host
/// transfers), keepalives so a dead peer is noticed.
fn client_config(window: u32) -> client::Config {
    static AES_FIRST: &[cipher::Name] = &[
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_CTR,
        cipher::AES_192_CTR,
        cipher::AES_128_CTR,
    ];
    static CHACHA_FIRST: &[cipher::Name] = &[
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::AES_256_CTR,
        cipher::AES_192_CTR,
        cipher::AES_128_CTR,
    ];
    static NO_COMPRESSION: &[compression::Name] = &[compression::NONE];
    client::Config {
        preferred: Preferred {
            cipher: Cow::Borrowed(if cpu_has_aes() {
                AES_FIRST
            } else {
                CHACHA_FIRST
            }),
            compression: Cow::Borrowed(NO_COMPRESSION),
            ..Preferred::default()
        },
        window_size: window,
        maximum_packet_size: 65535,
        nodelay: true,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        ..client::Config::default()
    }
}

/// Whether AES-GCM runs in hardware here.
fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(line: &str) -> russh::keys::PublicKey {
        russh::keys::PublicKey::from_openssh(line).unwrap()
    }

    #[test]
    fn a_host_key_is_judged_on_one_reading_of_known_hosts() {
        let ed =
            key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHL0PChPZ6Fqos+T44h2mTheZbQyEwx3jfbfo+CNbQ3Y");
        let other_ed =
            key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJVE8wjZq2fuSewIEpGy8NJK5oruKdWzuNPSz/UnTwlN");
        let ecdsa = key(
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBLvNmxHi4iLand/\
             URSg28z1mDXfTFrpOvlK3rpeCbg4Gl4ViH6egSLYjp/Fq1brVFTQHk6ExOtWJklKTGYFpFH8=",
        );
        assert_eq!(judge_host_key(&[], &ed), HostKeyVerdict::Unknown);
        assert_eq!(
            judge_host_key(&[(3, ed.clone())], &ed),
            HostKeyVerdict::Known
        );
        // Two clients that met the host at once each recorded it.
        assert_eq!(
            judge_host_key(&[(1, ed.clone()), (2, ed.clone())], &ed),
            HostKeyVerdict::Known
        );
        assert_eq!(
            judge_host_key(&[(4, other_ed.clone())], &ed),
            HostKeyVerdict::Changed { line: 4 }
        );
        assert_eq!(
            judge_host_key(&[(5, ecdsa.clone())], &ed),
            HostKeyVerdict::OtherTypes
        );
        // The recorded key found among others: no warning.
        assert_eq!(
            judge_host_key(&[(1, ecdsa), (2, other_ed), (3, ed.clone())], &ed),
            HostKeyVerdict::Known
        );
    }
}
