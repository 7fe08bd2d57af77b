//! berth transports: how to reach a registry, shared by the client (`berth`,
//! `registryget`, `registryput`, the shim) and the server (the pull-through
//! mirror's upstream). It depends on neither, so both can depend on it.
//!
//! Layout (one layer per level, each calling only the one below):
//!
//! * [`remote`] — `REGISTRY` strings (`ssh://`, `http://`, `file://`, a
//!   directory) and jump hosts, parsed once.
//! * [`transport`] — byte streams carrying HTTP/1.1 to a registry: the
//!   built-in SSH client ([`transport::ssh`]), a spawned OpenSSH
//!   ([`transport::command`]), plain TCP, or an in-process registry service
//!   supplied by the caller ([`transport::InProcess`]; berth-server
//!   implements it, this crate cannot know the server).
//! * [`http`] — an HTTP/1.1 client over one stream, bodies streamed, and
//!   [`http::HttpError`].
//! * [`v2`] — the V2 read calls (manifest, blob, tags) over one such
//!   connection: the client's pull and sync and the server's mirror read
//!   through them.
//!
//! Beside the layers, what both ends must agree on:
//!
//! * [`wire`] — the subsystem name, the header names of the V2 API and of
//!   berth's extensions, and how an error body is read.
//! * [`manifest_refs`] — what a manifest references (config, layers,
//!   child manifests, schema 1 layers).

#![warn(missing_docs)]

pub mod http;
pub mod manifest_refs;
pub mod remote;
pub mod transport;
pub mod v2;
pub mod wire;
