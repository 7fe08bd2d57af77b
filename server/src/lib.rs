//! berth-server: a Docker image registry reached over SSH.
//!
//! Module map (kept in step with `docs/architecture.md`), lowest first;
//! imports point down this list only (no module imports one above it):
//!
//! * [`names`] — validated repository names, tags, image ids, digests and
//!   upload session ids.
//! * [`logsafe`] — escaping of client-controlled text in logs and audit output.
//! * [`identity`] — who a connection is (user, key, address); below every
//!   module that reads it.
//! * [`strict`] — StrictModes-style owner/mode checks of hooks and the host key.
//! * [`store`] — the mount point: V1 reference layout + content-addressed blob
//!   pool; the only code that builds paths (`store::paths`) or writes files;
//!   `store::walk` the read-only walks `fsck` and `gc` share.
//! * [`keys`] — host key location, generation and loading, authorized_keys
//!   parsing, user certificates' critical options.
//! * [`access`] — keys → users → rules: who may read, write, delete where.
//! * [`audit`] — one JSON line per write or delete.
//! * [`mirror`] — the pull-through mirror (`serve --mirror-of`): fetches what
//!   a V2 read misses from the upstream, verified, before the handler runs;
//!   built from plain options, it never imports the registry.
//! * [`metrics`] — counters and their Prometheus text (with the store's gauges and
//!   the mirror's counters).
//! * [`hooks`] — post-push/post-delete hooks and webhooks, fed by audited events.
//! * [`loopback`] — the loopback `Host`/`Origin` rule of loopback listeners.
//! * [`registry`] — the HTTP service (V1 and V2 APIs) over the store; every transport
//!   ends in [`registry::Registry::serve_connection`].
//! * [`catalog`] — the browsable catalog pages, a client of the registry API,
//!   served beside it on loopback listeners ([`registry::PageService`]).
//! * [`exec`] — `registryget PATH` / `registryput PATH` command handling,
//!   shared by the SSH server and stdio mode.
//! * [`admin`] — serves the metrics with `/healthz` and `/readyz`
//!   (`serve --metrics-listen`).
//! * [`cli`] — the clap flags several modes share, converted into the
//!   library's plain options.
//! * [`ssh`] — the russh server: public-key auth, the `docker-registry`
//!   subsystem, and `registryget`/`registryput` exec requests; pre-login
//!   limits (`ssh::admission`) and reloads closing connections
//!   (`ssh::sessions`); [`ssh::run`] serves a bound listener until a
//!   shutdown future completes.
//! * [`http`] — plain HTTP on loopback for local tools and tests.
//! * [`stdio`] — one connection on stdin/stdout for stock sshd.
//! * [`config`] — `--config FILE`: the `serve` flags as one TOML file.
//! * [`assets`] — man pages and shell completions from the clap definitions.

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
