//! berth client library: the same registry operations on a mount point or
//! over SSH, and the HTTP shim that lets Docker, podman and skopeo reach an
//! SSH registry.
//!
//! Layout (one layer per level, each calling only the one below):
//!
//! * [`remote`] — `REGISTRY` strings (`ssh://`, `http://`, `file://`, a
//!   directory) and jump hosts, parsed once (berth-transport's, re-exported).
//! * [`transport`] — byte streams carrying HTTP/1.1 to the registry service
//!   (berth-transport's): in-process (berth-server's registry on a
//!   directory), the built-in SSH client ([`transport::ssh`]), a spawned
//!   OpenSSH ([`transport::command`]) or TCP.
//! * [`http`] — an HTTP/1.1 client over one stream, bodies streamed
//!   (berth-transport's, answering with [`error::ClientError`]).
//! * [`connect`] — how a command reaches its `REGISTRY` (SSH options as
//!   plain values, turned into a transport when needed).
//! * [`registry`] — the V2 calls of push, pull and sync (blob HEAD/GET,
//!   uploads, manifest PUT/GET) on one connection.
//! * [`catalog`] — `ls`, `tags`, `rm`, `search` over the V1 API.
//! * [`sync`] — `berth sync`: copies repositories between two registries.
//! * [`shim`] — loopback TCP connections piped to registry streams.
//! * [`warm`] — streams opened ahead of demand for the shim (issue 17).
//! * [`cli`] — the clap definitions and command bodies shared by the
//!   `berth`, `registryget` and `registryput` binaries, and the exit
//!   statuses ([`cli::CliError`]); the only module that knows clap (the
//!   `docker-berth` plugin's command line is here too, run by [`plugin`]).
//! * [`error`] — [`error::ClientError`].
//! * [`docker`] — the Docker Engine API on its socket (image id, export,
//!   load), for [`plugin`]: the `docker berth` CLI plugin.
//! * [`archive`] — `berth push` / `berth pull` of `docker save` archives.

pub mod archive;
pub mod catalog;
pub mod cli;
pub mod connect;
pub mod docker;
pub mod error;
pub mod http;
pub mod plugin;
pub mod registry;
pub mod shim;
pub mod sync;
pub mod transport;
pub mod warm;

pub use berth_transport::remote;

/// The version line of `--version`: the package version and the commit the
/// binary was built from (`build/version.rs`), so a running server or a
/// client in a bug report names exactly what it is.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BERTH_COMMIT"),
    ")"
);
