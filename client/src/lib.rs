//! berth client library: the same registry operations on a mount point or
//! over SSH, and the HTTP shim that lets Docker, podman and skopeo reach an
//! SSH registry.
//!
//! Layout (one layer per level, each calling only the one below):
//!
//! * [`remote`] — `REGISTRY` strings (`ssh://`, `file://`, a directory) and
//!   jump hosts, parsed once.
//! * [`transport`] — byte streams carrying HTTP/1.1 to the registry service:
//!   in-process ([`transport::local`]), the built-in SSH client
//!   ([`transport::ssh`]) or a spawned OpenSSH ([`transport::command`]).
//! * [`http`] — an HTTP/1.1 client over one stream, bodies streamed.
//! * [`catalog`] — `ls`, `tags`, `rm`, `search` over the V1 API.
//! * [`sync`] — `berth sync`: copies repositories between two registries.
//! * [`shim`] — loopback TCP connections piped to registry streams.
//! * [`cli`] — the clap definitions and command bodies shared by the
//!   `berth`, `registryget` and `registryput` binaries.
//! * [`error`] — [`error::ClientError`] and the exit statuses.
//! * [`archive`] — `berth push` / `berth pull` of `docker save` archives.

pub mod archive;
pub mod catalog;
pub mod cli;
pub mod error;
pub mod http;
pub mod remote;
pub mod shim;
pub mod sync;
pub mod transport;
