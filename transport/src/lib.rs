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
//!
//! Beside the layers, [`manifest_refs`] reads what a manifest references,
//! for both sides.

#![warn(missing_docs)]

pub mod http;
pub mod manifest_refs;
pub mod remote;
pub mod transport;
