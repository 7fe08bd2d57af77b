//! `berth push` and `berth pull`: `docker save` / `docker load` archives to
//! and from a registry over the V2 API, without a Docker daemon talking to
//! the registry (issue #5; formats in `v2-compat.md` §3, user guide in
//! `docs/archives.md`).
//!
//! Layout, one layer per level:
//!
//! * [`types`] — what the other modules share: [`types::Compression`],
//!   and the [`types::Image`]s of exact manifest bytes and
//!   [`types::Blob`]s an archive becomes.
//! * [`hashing`] — sha256 of bytes as stored and decompressed (digest and
//!   diff_id), on helper threads.
//! * [`members`] — one checked pass over the input tar (plain, gzip or
//!   zstd; file or pipe), spooling only when the input cannot be re-read;
//!   path-escape and truncation refusals.
//! * [`formats`] (+ [`legacy`]) — the archive shapes in the wild turned
//!   into [`types::Image`]s: exact manifest bytes (checked), and blobs
//!   with the digests and diff_ids their bytes must match.
//! * [`compress`] — `--compress`: uncompressed layers compressed (to a
//!   temporary file) before the push, manifests rewritten, compressed
//!   layers remembered for the next push.
//! * [`verify`] — those checks, run while each blob is read for the push.
//! * [`reference`] — `name[:tag]` as archives and the command line spell it.
//! * [`push`] / [`pull`] — the two operations, over the V2 calls of
//!   [`crate::registry`]; [`resume`] — interrupted uploads picked up again;
//!   [`progress`] — bars, summary, JSON.
//! * [`error`] — [`ArchiveError`].
//!
//! This module holds the two operations' plain options and bodies; the
//! command line (`cli.rs`) fills the options from its arguments.

pub mod compress;
pub mod error;
pub mod formats;
pub mod hashing;
pub mod idle;
pub mod legacy;
pub mod members;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod resume;
pub mod types;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::ArchiveError;

use crate::connect::ConnectOptions;
use members::{Input, Members};
use progress::{Mode, Progress};
use reference::ImageRef;

/// What `berth push` does, as plain values (the CLI's `PushArgs` and the
/// plugin's fill it).
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// How to reach `registry`.
    pub connect: ConnectOptions,
    /// Archive to read; `-` is stdin.
    pub input: PathBuf,
    /// Blobs uploaded at once.
    pub jobs: usize,
    /// Print nothing but errors.
    pub quiet: bool,
    /// Print one JSON event per line on stdout.
    pub json: bool,
    /// The `REGISTRY` address.
    pub registry: String,
    /// Where to push: `NAME:TAG`, `NAME`, or every name in the archive.
    pub name: Option<String>,
    /// Compress the archive's uncompressed layers on the way (`--compress`).
    pub compress: Option<compress::CompressOptions>,
}

/// What `berth pull` does, as plain values (filled by the CLI).
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// How to reach `registry`.
    pub connect: ConnectOptions,
    /// Archive to write (replaced only once complete); `-` is stdout.
    pub output: PathBuf,
    /// Print nothing but errors.
    pub quiet: bool,
    /// Print one JSON event per line (on stderr when the archive goes to stdout).
    pub json: bool,
    /// The `REGISTRY` address.
    pub registry: String,
    /// Image to pull: `NAME[:TAG]`.
    pub name: String,
}

fn mode(quiet: bool, json: bool) -> Mode {
    if quiet {
        Mode::Quiet
    } else if json {
        Mode::Json
    } else {
        Mode::Auto
    }
}

fn parse_ref(s: &str) -> Result<ImageRef, ArchiveError> {
    ImageRef::parse(s).ok_or_else(|| {
        ArchiveError::Selection(format!(
            "bad image name {s:?}: expected NAME[:TAG] with lowercase name components"
        ))
    })
}

fn blocking_error(e: tokio::task::JoinError) -> ArchiveError {
    ArchiveError::io("reading the archive", std::io::Error::other(e.to_string()))
}

/// Reads, verifies and pushes an archive (`berth push`).
pub async fn push_archive(a: PushOptions) -> Result<(), ArchiveError> {
    // Names are checked before the input is read.
    a.name.as_deref().map(parse_ref).transpose()?;
    let input = Input::from_arg(Some(&a.input));
    let members = tokio::task::spawn_blocking(move || Members::read(&input))
        .await
        .map_err(blocking_error)??;
    push_members(a, members).await
}

/// Pushes an archive streamed from `raw` (`docker berth push`: the Docker
/// engine's image export); `a.input` is not read. `what` names the stream
/// in messages.
pub async fn push_stream(
    a: PushOptions,
    raw: Box<dyn std::io::Read + Send>,
    what: String,
) -> Result<(), ArchiveError> {
    a.name.as_deref().map(parse_ref).transpose()?;
    let members = tokio::task::spawn_blocking(move || Members::read_from(raw, &what, None))
        .await
        .map_err(blocking_error)??;
    push_members(a, members).await
}

/// Verifies and pushes the members of an archive already read.
async fn push_members(a: PushOptions, members: Members) -> Result<(), ArchiveError> {
    let target = a.name.as_deref().map(parse_ref).transpose()?;
    let progress = Arc::new(Progress::new(mode(a.quiet, a.json), "push", false));
    let members = Arc::new(members);
    let m = members.clone();
    let (format, images) = tokio::task::spawn_blocking(move || formats::images(&m))
        .await
        .map_err(blocking_error)??;
    let destinations = push::select(&images, target.as_ref())?;
    // Only now, with the archive's structure and metadata checked, is the
    // registry touched; blobs are checked as they are uploaded, and nothing
    // is committed before all of them passed (`push.rs`).
    let transport = Arc::new(a.connect.transport(&a.registry)?);
    progress.event(serde_json::json!({
        "event": "archive", "format": format.as_str(), "images": images.len(),
    }));
    let resume = Arc::new(resume::ResumeState::from_env());
    let images = match a.compress {
        Some(opts) => {
            let sending = compress::Sending {
                members: &members,
                transport: &transport,
                resume: &resume,
                progress: &progress,
            };
            compress::apply(
                &sending,
                images,
                &destinations,
                opts,
                &a.registry,
                &compress::CompressedCache::from_env(),
            )
            .await?
        }
        None => images,
    };
    let pushed = push::push(
        transport,
        members,
        &images,
        &destinations,
        a.jobs,
        progress.clone(),
        resume,
    )
    .await?;
    let names: Vec<String> = pushed.iter().map(|(r, _)| r.to_string()).collect();
    progress.finish(&names.join(", "));
    if !a.quiet && !a.json {
        let mut text = String::new();
        for (r, d) in &pushed {
            text.push_str(&format!("{r} {d}\n"));
        }
        use tokio::io::AsyncWriteExt;
        let mut out = tokio::io::stdout();
        out.write_all(text.as_bytes())
            .await
            .map_err(|e| ArchiveError::io("writing to stdout", e))?;
        out.flush()
            .await
            .map_err(|e| ArchiveError::io("writing to stdout", e))?;
    }
    Ok(())
}

/// Pulls an image into an archive (`berth pull`).
pub async fn pull_archive(a: PullOptions) -> Result<(), ArchiveError> {
    let r = parse_ref(&a.name)?;
    let output = pull::Output::from_arg(Some(&a.output));
    let to_stdout = matches!(output, pull::Output::Stdout);
    if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(ArchiveError::Selection(
            "refusing to write an image archive to a terminal: use --output FILE or a pipe \
             (berth pull ... | docker load)"
                .to_string(),
        ));
    }
    let transport = Arc::new(a.connect.transport(&a.registry)?);
    let progress = Progress::new(mode(a.quiet, a.json), "pull", to_stdout);
    pull::pull(transport, &r, &output, &progress).await?;
    let shown = match &output {
        pull::Output::Stdout => format!("{r} to stdout"),
        pull::Output::File(p) => format!("{r} to {}", p.display()),
    };
    progress.finish(&shown);
    Ok(())
}

#[cfg(test)]
mod tests;
