//! Transports: each yields byte streams that carry HTTP/1.1 to the registry
//! service, one stream per HTTP connection.
//!
//! * [`InProcess`] — a registry service in this process (berth-server's, on
//!   a mount point), over an in-memory duplex. The service is the caller's:
//!   this crate only defines the trait, see [`Transport::for_remote`].
//! * [`ssh`] — the native russh client: one shared SSH connection (through
//!   jump hosts if asked), a `docker-registry` subsystem channel per stream.
//! * [`command`] — a spawned OpenSSH client (`$BERTH_SSH_COMMAND -s host
//!   docker-registry`) per stream, its stderr kept for error messages.
//! * plain TCP to an HTTP registry (`http://host:port`), and [`tls`] over
//!   it for `https://host:port`.
//!
//! Transports carry bytes and know nothing about the registry API.

pub mod command;
pub mod ssh;
pub mod tls;
mod tunnel;

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::remote::Remote;

/// Environment variable naming an OpenSSH-compatible command to use instead
/// of the built-in SSH client (the `GIT_SSH_COMMAND` convention).
pub const SSH_COMMAND_ENV: &str = "BERTH_SSH_COMMAND";

/// Why a stream to the registry could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The in-process registry on a mount point could not be opened (the
    /// error of the `open_local` given to [`Transport::for_remote`]).
    #[error("opening the store at {path}: {message}")]
    Store {
        /// The mount point.
        path: String,
        /// What the store said.
        message: String,
    },
    /// Native SSH failed (connection, host key, authentication, channel).
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    /// The SSH command could not be started.
    #[error("starting `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it did not start.
        source: io::Error,
    },
    /// An HTTP(S) registry could not be reached.
    #[error("connecting to {address}: {source}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        source: io::Error,
    },
    /// The TLS handshake with an `https://` registry failed (a certificate
    /// that is not trusted or names another host, no common protocol).
    #[error("TLS handshake with {address}: {source}{hint}")]
    Tls {
        /// `host:port`.
        address: String,
        /// rustls's error, as tokio-rustls reports it.
        source: io::Error,
        /// What to do about it, or empty.
        hint: String,
    },
    /// The host of an `https://` address cannot be checked against a
    /// certificate.
    #[error("{host:?} is neither a DNS name nor an IP address a TLS certificate can name")]
    TlsName {
        /// The host as written.
        host: String,
    },
    /// TLS could not be set up (no trusted CA certificates).
    #[error("setting up TLS: {message}")]
    TlsSetup {
        /// What is missing.
        message: String,
    },
    /// The user name for SSH logins could not be found.
    #[error("cannot tell the local user name; put user@ in the address")]
    NoUser,
}

/// A registry service running in this process, reached without a network.
/// berth-server implements it for a mount point
/// (`berth_server::registry::in_process`); it is a trait so that this crate,
/// which berth-server depends on, need not know the server.
pub trait InProcess: Send + Sync {
    /// A new stream whose other end the service answers (on a task of its
    /// own). Must be called inside a Tokio runtime.
    fn open(&self) -> Stream;
}

/// Anything a stream can be built from.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Text a stream's peer printed on the side (the OpenSSH client's stderr),
/// shared so it can still be read after the stream was handed to hyper.
#[derive(Clone)]
pub struct Diagnostics {
    text: Arc<Mutex<Vec<u8>>>,
    /// Set when the side channel reached its end (nothing more will come).
    finished: Arc<AtomicBool>,
    /// Why the stream ended, when the transport knows it for certain (the
    /// native SSH client's refused subsystem): it replaces the guesses an
    /// error message would otherwise make.
    verdict: Arc<Mutex<Option<String>>>,
}

impl Default for Diagnostics {
    /// A side channel with nothing to say (in-process, TCP and native SSH streams).
    fn default() -> Self {
        Diagnostics {
            text: Arc::default(),
            finished: Arc::new(AtomicBool::new(true)),
            verdict: Arc::default(),
        }
    }
}

impl Diagnostics {
    /// Most recent bytes kept: enough for any ssh error, bounded for chatty peers.
    const LIMIT: usize = 16 * 1024;

    /// A side channel that is still being written (see [`Self::finish`]).
    pub fn open() -> Diagnostics {
        Diagnostics {
            text: Arc::default(),
            finished: Arc::new(AtomicBool::new(false)),
            verdict: Arc::default(),
        }
    }

    /// Records why the stream ended (see the field).
    pub fn conclude(&self, why: &str) {
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(why.to_string());
        }
    }

    /// Why the stream ended, if the transport knows.
    pub fn verdict(&self) -> Option<String> {
        self.verdict.lock().ok().and_then(|v| v.clone())
    }

    /// Marks the end of the side channel.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// Waits (at most `limit`) for the side channel to end, so an error
    /// message can include everything the peer had to say about it.
    pub async fn settle(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.finished.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Appends output, keeping the last [`Self::LIMIT`] bytes.
    pub fn push(&self, data: &[u8]) {
        if let Ok(mut buf) = self.text.lock() {
            buf.extend_from_slice(data);
            let excess = buf.len().saturating_sub(Self::LIMIT);
            if excess > 0 {
                buf.drain(..excess);
            }
        }
    }

    /// The text collected so far, trimmed, as one line per line of output.
    pub fn text(&self) -> String {
        self.text
            .lock()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default()
    }
}

impl fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Diagnostics({:?})", self.text())
    }
}

/// One byte stream to the registry service; closing it ends the HTTP
/// connection (and the SSH channel or ssh process behind it).
pub struct Stream {
    io: Box<dyn Io>,
    diagnostics: Diagnostics,
    /// What the transport counts per stream, released when it ends
    /// ([`Stream::holding`]).
    _held: Option<Box<dyn Send>>,
}

impl Stream {
    /// Wraps a transport's stream.
    pub fn new(io: impl Io + 'static, diagnostics: Diagnostics) -> Stream {
        Stream {
            io: Box::new(io),
            diagnostics,
            _held: None,
        }
    }

    /// Keeps `guard` alive as long as the stream, so that what a transport
    /// counts per stream (the SSH connection a bulk stream claimed,
    /// [`ssh::SshTransport::open_bulk`]) is given back when it ends.
    pub fn holding(mut self, guard: impl Send + 'static) -> Stream {
        self._held = Some(Box::new(guard));
        self
    }

    /// The side channel of this stream (ssh's stderr); empty for other transports.
    pub fn diagnostics(&self) -> Diagnostics {
        self.diagnostics.clone()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A registry reachable over one of the transports; cheap to share
/// (`Arc`) between the shim's connections.
pub enum Transport {
    /// A registry service in this process (a mount point served by
    /// berth-server's registry).
    InProcess(Arc<dyn InProcess>),
    /// Built-in SSH client.
    Ssh(ssh::SshTransport),
    /// Spawned OpenSSH client.
    Command(command::CommandTransport),
    /// Plain TCP to an HTTP V2 registry (`http://host:port`).
    Tcp {
        /// `host:port` to connect to.
        address: String,
    },
    /// TLS over TCP to an HTTPS V2 registry (`https://host:port`).
    Tls(tls::TlsTransport),
}

impl Transport {
    /// Chooses the transport for `remote`: for SSH the command in
    /// `$BERTH_SSH_COMMAND` when set, the built-in client otherwise; TCP for
    /// `http://`, TLS over TCP for `https://` (the trust store is loaded
    /// here); and for a directory ([`Remote::Local`]) whatever
    /// `open_local` makes of it.
    ///
    /// `open_local` is a parameter because the in-process registry service
    /// lives in berth-server, which depends on this crate and not the other
    /// way round: the client and the server's mirror both pass
    /// `berth_server::registry::in_process::open_local`. It is called only
    /// for a directory.
    pub fn for_remote(
        remote: &Remote,
        options: ssh::SshOptions,
        open_local: impl FnOnce(&Path) -> Result<Arc<dyn InProcess>, TransportError>,
    ) -> Result<Transport, TransportError> {
        match remote {
            Remote::Local(path) => Ok(Transport::InProcess(open_local(path)?)),
            Remote::Http { host, port } => Ok(Transport::Tcp {
                address: format!("{host}:{port}"),
            }),
            Remote::Https { host, port } => {
                Ok(Transport::Tls(tls::TlsTransport::new(host, *port)?))
            }
            Remote::Ssh(target) => match std::env::var(SSH_COMMAND_ENV) {
                Ok(cmd) if !cmd.trim().is_empty() => Ok(Transport::Command(
                    command::CommandTransport::new(cmd, target.clone(), options),
                )),
                _ => Ok(Transport::Ssh(ssh::SshTransport::new(
                    target.clone(),
                    options,
                )?)),
            },
        }
    }

    /// Opens a new stream carrying one HTTP/1.1 connection.
    pub async fn open(&self) -> Result<Stream, TransportError> {
        match self {
            Transport::InProcess(t) => Ok(t.open()),
            Transport::Ssh(t) => Ok(t.open().await?),
            Transport::Command(t) => t.open(),
            Transport::Tcp { address } => Ok(Stream::new(
                connect_tcp(address).await?,
                Diagnostics::default(),
            )),
            Transport::Tls(t) => t.open().await,
        }
    }

    /// Opens a stream for one long upload. Through SSH jump hosts it gets
    /// an inner SSH connection no other bulk stream uses, when one is free
    /// or can still be added ([`ssh::SshTransport::open_bulk`]): each such
    /// connection rides its own jump channel, whose window holds it back.
    /// Every other transport opens a plain stream ([`Self::open`]).
    pub async fn open_bulk(&self) -> Result<Stream, TransportError> {
        match self {
            Transport::Ssh(t) => Ok(t.open_bulk().await?),
            other => other.open().await,
        }
    }

    /// Whether [`Self::open_bulk`] can give a stream more than
    /// [`Self::open`] does: only the native SSH client through jump hosts.
    pub fn spreads_bulk(&self) -> bool {
        matches!(self, Transport::Ssh(t) if t.through_jumps())
    }

    /// Establishes whatever can be established ahead of the first stream
    /// (the SSH connection and its authentication), so that a long-running
    /// shim reports host key or login problems at start, not at first use.
    pub async fn prepare(&self) -> Result<(), TransportError> {
        match self {
            Transport::Ssh(t) => Ok(t.connect().await.map(|_| ())?),
            Transport::InProcess(_)
            | Transport::Command(_)
            | Transport::Tcp { .. }
            | Transport::Tls(_) => Ok(()),
        }
    }
}

/// A TCP connection to `address` (`host:port`) with Nagle off, for the
/// HTTP(S) transports.
async fn connect_tcp(address: &str) -> Result<tokio::net::TcpStream, TransportError> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|source| TransportError::Connect {
            address: address.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The local user's login name: for SSH logins without `user@`, and the
/// name in-process requests are attributed to.
pub fn local_user() -> Option<String> {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var) {
            if !u.is_empty() {
                return Some(u);
            }
        }
    }
    // SAFETY: getpwuid returns a pointer to static storage or null; we copy
    // the name out before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_str()
            .ok()
            .map(str::to_string)
    }
}
