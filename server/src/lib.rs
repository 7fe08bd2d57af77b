//! berth-server: a Docker image registry reached over SSH.
//!
//! Module map (kept in step with `docs/architecture.md`):
//!
//! * [`access`] — keys → users → rules: who may read, write, delete where.
//! * [`assets`] — man pages and shell completions from the clap definitions.
//! * [`audit`] — one JSON line per write or delete.
//! * [`config`] — `--config FILE`: the `serve` flags as one TOML file.
//! * [`names`] — validated repository names, tags, image ids and digests.
//! * [`store`] — the mount point: V1 reference layout + content-addressed blob
//!   pool; the only code that builds paths or writes files.
//! * [`registry`] — the HTTP service (V1 and V2 APIs) over the store; every transport
//!   ends in [`registry::Registry::serve_connection`].
//! * [`ssh`] — the russh server: public-key auth, the `docker-registry`
//!   subsystem, and `registryget`/`registryput` exec requests; pre-login
//!   limits (`ssh::admission`) and reloads closing connections
//!   (`ssh::sessions`).
//! * [`hooks`] — post-push/post-delete hooks and webhooks, fed by audited events.
//! * [`mirror`] — the pull-through mirror (`serve --mirror-of`): fetches what
//!   a V2 read misses from the upstream, verified, before the handler runs.
//! * [`exec`] — `registryget PATH` / `registryput PATH` command handling,
//!   shared by the SSH server and stdio mode.
//! * [`http`] — plain HTTP on loopback for local tools and tests.
//! * [`stdio`] — one connection on stdin/stdout for stock sshd.
//! * [`keys`] — host key location, generation and loading, authorized_keys
//!   parsing, user certificates' critical options.
//! * [`metrics`] — counters and their Prometheus text; [`admin`] serves
//!   them with `/healthz` and `/readyz` (`serve --metrics-listen`).
//! * [`logsafe`] — escaping of client-controlled text in logs and audit output.
//! * [`strict`] — StrictModes-style owner/mode checks of hooks and the host key.

pub mod access;
pub mod admin;
pub mod assets;
pub mod audit;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod exec;
pub mod hooks;
pub mod http;
pub mod identity;
pub mod keys;
pub mod logsafe;
pub mod loopback;
pub mod metrics;
pub mod mirror;
pub mod names;
pub mod registry;
pub mod ssh;
pub mod stdio;
pub mod store;
pub mod strict;

/// The version line of `--version`: the package version and the commit the
/// binary was built from (`build/version.rs`), so a running server or a
/// client in a bug report names exactly what it is.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BERTH_COMMIT"),
    ")"
);
