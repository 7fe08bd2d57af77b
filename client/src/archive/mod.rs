//! `berth push` and `berth pull`: `docker save` / `docker load` archives to
//! and from a registry over the V2 API, without a Docker daemon talking to
//! the registry (issue #5; formats in `v2-compat.md` §3, user guide in
//! `docs/archives.md`).
//!
//! Layout, one layer per level:
//!
//! * [`members`] — one checked pass over the input tar (plain, gzip or
//!   zstd; file or pipe), spooling only when the input cannot be re-read;
//!   path-escape and truncation refusals.
//! * [`formats`] (+ [`legacy`]) — the archive shapes in the wild turned
//!   into [`formats::Image`]s: exact manifest bytes (checked), and blobs
//!   with the digests and diff_ids their bytes must match.
//! * [`verify`] — those checks, run while each blob is read for the push.
//! * [`reference`] — `name[:tag]` as archives and the command line spell it.
//! * [`registry`] — the V2 calls (HEAD/GET blob, upload, manifest PUT/GET).
//! * [`push`] / [`pull`] — the two operations; [`progress`] — bars, summary, JSON.
//! * [`error`] — [`ArchiveError`].
//!
//! This module holds the clap arguments and the two command bodies.

pub mod error;
pub mod formats;
pub mod legacy;
pub mod members;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod resume;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::ArchiveError;

use crate::cli::{SshArgs, EXIT_CODES};
use crate::error::ClientError;
use members::{Input, Members};
use progress::{Mode, Progress};
use reference::ImageRef;

/// `berth push`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct PushArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Archive to read (`docker save`, `skopeo copy ... docker-archive:` or
    /// `oci-archive:`, optionally gzip/zstd-compressed); `-` is stdin.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    pub input: PathBuf,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = push::DEFAULT_JOBS)]
    pub jobs: usize,
    /// Print nothing but errors.
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one JSON event per line on stdout (start, blob, manifest, done).
    #[arg(long)]
    pub json: bool,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Where to push: NAME:TAG pushes the image the archive calls that (or
    /// its only image); NAME pushes every tag of NAME in the archive; none
    /// pushes every image under the names in the archive.
    pub name: Option<String>,
}

/// `berth pull`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct PullArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Archive to write (replaced only once complete); `-` is stdout.
    #[arg(long, short = 'o', value_name = "FILE|-", default_value = "-")]
    pub output: PathBuf,
    /// Print nothing but errors.
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one JSON event per line (on stderr when the archive goes to stdout).
    #[arg(long)]
    pub json: bool,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Image to pull: NAME[:TAG] (tag `latest` by default).
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
pub async fn push_archive(a: PushArgs) -> Result<(), ArchiveError> {
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
    a: PushArgs,
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
async fn push_members(a: PushArgs, members: Members) -> Result<(), ArchiveError> {
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
    let transport = Arc::new(a.ssh.transport(&a.registry)?);
    progress.event(serde_json::json!({
        "event": "archive", "format": format.as_str(), "images": images.len(),
    }));
    let resume = Arc::new(resume::ResumeState::from_env());
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
pub async fn pull_archive(a: PullArgs) -> Result<(), ArchiveError> {
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
    let transport = Arc::new(a.ssh.transport(&a.registry)?);
    let progress = Progress::new(mode(a.quiet, a.json), "pull", to_stdout);
    pull::pull(transport, &r, &output, &progress).await?;
    let shown = match &output {
        pull::Output::Stdout => format!("{r} to stdout"),
        pull::Output::File(p) => format!("{r} to {}", p.display()),
    };
    progress.finish(&shown);
    Ok(())
}

/// Converts for the CLI: registry errors keep their type (and exit status).
pub fn into_client_error(e: ArchiveError) -> ClientError {
    match e {
        ArchiveError::Client(c) => *c,
        ArchiveError::Io { what, source } if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ClientError::Io { what, source }
        }
        other => ClientError::Archive(Box::new(other)),
    }
}

/// `berth push` as the CLI runs it.
pub async fn push_command(a: PushArgs) -> Result<(), ClientError> {
    push_archive(a).await.map_err(into_client_error)
}

/// `berth pull` as the CLI runs it.
pub async fn pull_command(a: PullArgs) -> Result<(), ClientError> {
    pull_archive(a).await.map_err(into_client_error)
}

#[cfg(test)]
mod tests;
