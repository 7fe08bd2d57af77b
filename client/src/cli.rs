//! Command-line surface of the client (`design.md`, command-line contract):
//! the clap definitions and the code behind each command, shared by the
//! `berth`, `registryget` and `registryput` binaries so that
//! `registryget REGISTRY PATH` and `berth get REGISTRY PATH` are one code path.
//!
//! Binaries stay thin: they parse, set up logging and the runtime, call
//! [`run`] (or [`get`]/[`put`]) and turn a [`CliError`] into one line on
//! stderr and an exit status ([`CliError::exit_code`]).
//!
//! The library modules below take plain options
//! ([`ConnectOptions`], [`crate::archive::PushOptions`], ...); the clap
//! types here fill them. Nothing below this module knows clap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ::http::{HeaderName, HeaderValue, Method, Request};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::archive::{ArchiveError, PullOptions, PushOptions};
use crate::catalog::{self, Reference};
use crate::connect::ConnectOptions;
use crate::error::ClientError;
use crate::http::{self, Body, HttpConnection};
use crate::remote::Remote;
use crate::transport::{NewTransport, Transport};

/// Exit status when the registry answered with an error status.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status for every other failure: usage, connection, SSH, I/O.
pub const EXIT_FAILED: u8 = 2;

/// Why a command failed: one of the library's two error types. Registry
/// and transport failures stay [`ClientError`]s even when an archive
/// operation met them, so their exit status survives.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The registry, the transport, local I/O or the command line.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An archive was refused, or a push/pull failed verification (`berth
    /// push`/`pull`).
    #[error(transparent)]
    Archive(ArchiveError),
}

impl From<ArchiveError> for CliError {
    /// Registry errors met by an archive operation keep their type (and
    /// exit status), as does a closed stdout.
    fn from(e: ArchiveError) -> CliError {
        match e {
            ArchiveError::Client(c) => CliError::Client(*c),
            ArchiveError::Io { what, source }
                if source.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                CliError::Client(ClientError::Io { what, source })
            }
            other => CliError::Archive(other),
        }
    }
}

impl CliError {
    /// The process exit status for this error ([`EXIT_CODES`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(ClientError::Status { .. }) => EXIT_REFUSED,
            _ => EXIT_FAILED,
        }
    }

    /// Whether this is a closed stdout (`registryget ... | head`): not worth
    /// a message.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            CliError::Client(e) => e.is_broken_pipe(),
            CliError::Archive(e) => e.is_broken_pipe(),
        }
    }
}

/// Exit statuses, shown by every command's `--help`.
pub const EXIT_CODES: &str = "\
Exit status: 0 success; 1 the registry answered with an error status (its message is on \
stderr); 2 any other failure (usage, connection, SSH host key or login, local I/O).

REGISTRY is ssh://[user@]host[:port], file:///abs/dir or a directory path; berth sync, \
get, put and shim also take a V2 registry at http://host[:port] or https://host[:port] \
(certificate checked against the system trust store, or SSL_CERT_FILE). With \
BERTH_SSH_COMMAND set (e.g. \"ssh -F ~/.ssh/config\"), ssh:// registries are reached by \
running `$BERTH_SSH_COMMAND -s [-p PORT] -- [user@]host docker-registry` instead of the \
built-in SSH client; a host or user starting with '-' is refused.";

/// Read size for streamed request bodies.
const CHUNK: usize = 256 * 1024;

/// SSH options of every command but get/put (`-i` is the identity here).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SshArgs {
    /// Private key file for SSH login (repeatable); tried before ssh-agent
    /// and ~/.ssh/id_{ed25519,ecdsa,rsa}.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// Jump host(s) to reach the registry through, like ssh -J
    /// (repeatable, or a comma list; outermost first).
    #[arg(short = 'J', long = "jump", value_name = "[user@]host[:port]")]
    pub jump: Vec<String>,
    /// known_hosts file to check host keys against [default: ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Record the host key of a host seen for the first time (a changed key
    /// is still refused).
    #[arg(long)]
    pub accept_new_host_key: bool,
}

/// SSH options of get/put, where `-i` means "include headers" as in curl.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SshLongArgs {
    /// Private key file for SSH login (repeatable); tried before ssh-agent
    /// and ~/.ssh/id_{ed25519,ecdsa,rsa}.
    #[arg(long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// Jump host(s) to reach the registry through, like ssh -J
    /// (repeatable, or a comma list; outermost first).
    #[arg(short = 'J', long = "jump", value_name = "[user@]host[:port]")]
    pub jump: Vec<String>,
    /// known_hosts file to check host keys against [default: ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Record the host key of a host seen for the first time (a changed key
    /// is still refused).
    #[arg(long)]
    pub accept_new_host_key: bool,
}

impl From<SshLongArgs> for SshArgs {
    fn from(a: SshLongArgs) -> SshArgs {
        SshArgs {
            identity: a.identity,
            jump: a.jump,
            known_hosts: a.known_hosts,
            accept_new_host_key: a.accept_new_host_key,
        }
    }
}

impl From<SshArgs> for ConnectOptions {
    fn from(a: SshArgs) -> ConnectOptions {
        ConnectOptions {
            identity: a.identity,
            jump: a.jump,
            known_hosts: a.known_hosts,
            accept_new_host_key: a.accept_new_host_key,
        }
    }
}

impl SshArgs {
    /// The transport to `registry` with these options (nothing connects yet).
    pub fn transport(&self, registry: &str) -> Result<Transport, ClientError> {
        ConnectOptions::from(self.clone()).transport(registry)
    }
}

/// `--compress`'s values (the library's `archive::compress::Codec`, which
/// knows nothing of clap).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressAlgorithm {
    /// zstd, multithreaded; the manifest becomes OCI.
    Zstd,
    /// gzip, independent members compressed in parallel.
    Gzip,
}

impl From<CompressAlgorithm> for crate::archive::compress::Codec {
    fn from(a: CompressAlgorithm) -> Self {
        match a {
            CompressAlgorithm::Zstd => crate::archive::compress::Codec::Zstd,
            CompressAlgorithm::Gzip => crate::archive::compress::Codec::Gzip,
        }
    }
}

/// `--compress` and its level, for `berth push` and `docker berth push`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompressArgs {
    /// Compress each layer the archive holds uncompressed (docker save's
    /// layer.tar) before sending it, on every core; layers already
    /// compressed are sent as they are. zstd makes the manifest OCI.
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub compress: Option<CompressAlgorithm>,
    /// Level for --compress (zstd 1-22, default 3; gzip 1-9, default 6).
    #[arg(
        long,
        value_name = "N",
        requires = "compress",
        allow_negative_numbers = true
    )]
    pub compress_level: Option<i32>,
}

impl CompressArgs {
    /// The options asked for, the level checked against the algorithm.
    pub fn options(
        &self,
    ) -> Result<Option<crate::archive::compress::CompressOptions>, ArchiveError> {
        self.compress
            .map(|c| crate::archive::compress::CompressOptions::new(c.into(), self.compress_level))
            .transpose()
    }
}

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
    #[arg(long, default_value_t = crate::archive::push::DEFAULT_JOBS)]
    pub jobs: usize,
    /// Print nothing but errors.
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one JSON event per line on stdout (start, blob, manifest, done).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub compress: CompressArgs,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Where to push: NAME:TAG pushes the image the archive calls that (or
    /// its only image); NAME pushes every tag of NAME in the archive; none
    /// pushes every image under the names in the archive.
    pub name: Option<String>,
}

impl TryFrom<PushArgs> for PushOptions {
    type Error = ArchiveError;

    fn try_from(a: PushArgs) -> Result<PushOptions, ArchiveError> {
        let compress = a.compress.options()?;
        Ok(PushOptions {
            connect: a.ssh.into(),
            input: a.input,
            jobs: a.jobs,
            quiet: a.quiet,
            json: a.json,
            registry: a.registry,
            name: a.name,
            compress,
        })
    }
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

impl From<PullArgs> for PullOptions {
    fn from(a: PullArgs) -> PullOptions {
        PullOptions {
            connect: a.ssh.into(),
            output: a.output,
            quiet: a.quiet,
            json: a.json,
            registry: a.registry,
            name: a.name,
        }
    }
}

/// `berth sync`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct SyncArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Registry to copy from: ssh://[user@]host[:port], file:///abs/dir, a directory,
    /// http://host[:port] or https://host[:port].
    pub src: String,
    /// Registry to copy to (same forms).
    pub dst: String,
    /// Repositories (`NAME`, all tags) or tags (`NAME:TAG`) to copy; default: every repository.
    pub references: Vec<String>,
}

/// `registryget` / `berth get`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct GetArgs {
    /// Print the status line and headers before the body (like curl -i).
    #[arg(short = 'i', long = "include")]
    pub include: bool,
    /// Add a request header (repeatable).
    #[arg(short = 'H', long = "header", value_name = "Name: value")]
    pub headers: Vec<String>,
    #[command(flatten)]
    pub ssh: SshLongArgs,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Request path, e.g. /v1/images/ID/json.
    pub path: String,
}

/// `registryput` / `berth put`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct PutArgs {
    /// Print the status line and headers before the body (like curl -i).
    #[arg(short = 'i', long = "include")]
    pub include: bool,
    /// Add a request header (repeatable), e.g. X-Docker-Checksum-Payload.
    #[arg(short = 'H', long = "header", value_name = "Name: value")]
    pub headers: Vec<String>,
    #[command(flatten)]
    pub ssh: SshLongArgs,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Request path, e.g. /v1/images/ID/layer.
    pub path: String,
    /// File to send as the body [default: stdin, streamed].
    pub file: Option<PathBuf>,
}

/// `berth shim`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct ShimArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Allow a non-loopback listen address: anyone who can connect then
    /// uses the registry with your SSH identity. (On loopback, a request
    /// with a non-loopback Host or a foreign Origin is refused: DNS
    /// rebinding; with a non-loopback address that check is off.)
    #[arg(long)]
    pub allow_remote: bool,
    /// Channels kept open ahead of demand (ssh:// with the built-in
    /// client), so a tool's new connection does not wait two round trips
    /// for its own; each is replaced 10 s after it was opened, and none
    /// after a minute without connections. 0 = off.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=crate::warm::MAX_WARM as i64))]
    pub warm: u8,
}

/// `berth ls` / `berth search`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct ListArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Print JSON (an array of names) instead of one name per line.
    #[arg(long)]
    pub json: bool,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
}

/// `berth search`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct SearchArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Print JSON (an array of names) instead of one name per line.
    #[arg(long)]
    pub json: bool,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Substring of repository names to look for.
    pub term: String,
}

/// `berth tags`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct TagsArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Print JSON (an object tag → image id) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Repository name (`ns/repo`, or `repo` for library/repo).
    pub name: String,
}

/// `berth rm`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct RmArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Print JSON (`{"deleted": ...}`) instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// `NAME:TAG` deletes one tag; `NAME` deletes the repository and its tags.
    pub reference: String,
}

/// `berth info`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct InfoArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Print the server's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
}

/// The `berth` command line.
#[derive(clap::Parser, Debug)]
#[command(
    name = "berth",
    version = crate::VERSION,
    about = "berth: a Docker image registry reached over SSH (client)",
    after_help = EXIT_CODES
)]
pub struct Berth {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The `registryget` command line (the 2013 spec's command).
#[derive(clap::Parser, Debug)]
#[command(
    name = "registryget",
    version = crate::VERSION,
    about = "GET a registry path over any remote; the body goes to stdout."
)]
pub struct RegistryGet {
    /// Same as `berth get`.
    #[command(flatten)]
    pub args: GetArgs,
}

/// The `registryput` command line (the 2013 spec's command).
#[derive(clap::Parser, Debug)]
#[command(
    name = "registryput",
    version = crate::VERSION,
    about = "PUT a registry path over any remote, with FILE or stdin as the body."
)]
pub struct RegistryPut {
    /// Same as `berth put`.
    #[command(flatten)]
    pub args: PutArgs,
}

/// The `docker-berth` command line, as the docker CLI runs it: first
/// argument the metadata request or the plugin's own name.
#[derive(clap::Parser, Debug)]
#[command(
    name = "docker-berth",
    bin_name = "docker",
    version = crate::VERSION,
    about = "Docker CLI plugin: docker berth push|pull, images to and from a berth registry",
    after_help = EXIT_CODES
)]
pub struct PluginCli {
    /// What docker asked for.
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// What the docker CLI runs a plugin with.
#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Print the plugin metadata the docker CLI reads (JSON).
    #[command(name = "docker-cli-plugin-metadata", hide = true)]
    Metadata,
    /// `docker berth ...`.
    Berth {
        /// push or pull.
        #[command(subcommand)]
        command: BerthCommand,
    },
}

/// `docker berth` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BerthCommand {
    /// Push a local image to a berth registry, streamed from the engine.
    Push(PluginPushArgs),
    /// Pull an image from a berth registry into the engine.
    Pull(PluginPullArgs),
}

/// `docker berth push`.
#[derive(clap::Args, Debug, Clone)]
pub struct PluginPushArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = crate::archive::push::DEFAULT_JOBS)]
    pub jobs: usize,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub compress: CompressArgs,
    /// A local image: name[:tag] or id.
    pub image: String,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Name in the registry [default: IMAGE's name and tag, without a
    /// registry host].
    pub name: Option<String>,
}

/// `docker berth pull`.
#[derive(clap::Args, Debug, Clone)]
pub struct PluginPullArgs {
    #[command(flatten)]
    pub ssh: SshArgs,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// ssh://[user@]host[:port], file:///abs/dir or a directory.
    pub registry: String,
    /// Image to pull: NAME[:TAG] (tag `latest` by default).
    pub name: String,
}

/// `berth` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// GET a registry path; body to stdout (same as registryget).
    Get(GetArgs),
    /// PUT a registry path with a file or stdin (same as registryput).
    Put(PutArgs),
    /// Serve the registry on a loopback HTTP port for docker/podman/skopeo.
    Shim(ShimArgs),
    /// List repositories.
    Ls(ListArgs),
    /// List the tags of a repository.
    Tags(TagsArgs),
    /// Delete a tag, or a whole repository.
    Rm(RmArgs),
    /// Search repository names.
    Search(SearchArgs),
    /// Who the registry thinks you are, and what you may read/write/delete where.
    Info(InfoArgs),
    /// Push a `docker save` archive (file or stdin) to the registry.
    Push(PushArgs),
    /// Pull an image into a `docker load` archive (file or stdout).
    Pull(PullArgs),
    /// Copy repositories between two registries (only missing blobs; digests kept).
    Sync(SyncArgs),
    /// Write the man pages and shell completions of berth, registryget,
    /// registryput and docker-berth under DIR (packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory (`man/`, `completions/`).
        dir: PathBuf,
    },
}

/// Runs one `berth` command.
pub async fn run(cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Push(a) => Ok(crate::archive::push_archive(a.try_into()?).await?),
        Command::Pull(a) => Ok(crate::archive::pull_archive(a.into()).await?),
        Command::Get(a) => Ok(get(a).await?),
        Command::Put(a) => Ok(put(a).await?),
        Command::Shim(a) => Ok(shim(a).await?),
        Command::Sync(a) => Ok(sync(a).await?),
        Command::GenerateAssets { dir } => Ok(generate_assets(&dir)?),
        Command::Ls(a) => {
            let t = a.ssh.transport(&a.registry)?;
            Ok(print_names(catalog::list(&t).await?, a.json).await?)
        }
        Command::Search(a) => {
            let t = a.ssh.transport(&a.registry)?;
            Ok(print_names(catalog::search(&t, &a.term).await?, a.json).await?)
        }
        Command::Info(a) => {
            let t = a.ssh.transport(&a.registry)?;
            let v = catalog::info(&t).await?;
            let text = if a.json {
                format!("{v}\n")
            } else {
                catalog::format_info(&v)
            };
            Ok(write_stdout(text.as_bytes()).await?)
        }
        Command::Tags(a) => {
            let t = a.ssh.transport(&a.registry)?;
            let tags = catalog::tags(&t, &a.name).await?;
            let text = if a.json {
                let map: serde_json::Map<String, serde_json::Value> = tags
                    .into_iter()
                    .map(|(t, id)| (t, serde_json::Value::String(id)))
                    .collect();
                format!("{}\n", serde_json::Value::Object(map))
            } else {
                let width = tags.iter().map(|(t, _)| t.len()).max().unwrap_or(3).max(3);
                let mut s = format!("{:<width$}  IMAGE\n", "TAG");
                for (t, id) in tags {
                    s.push_str(&format!("{t:<width$}  {id}\n"));
                }
                s
            };
            Ok(write_stdout(text.as_bytes()).await?)
        }
        Command::Rm(a) => {
            let reference = Reference::parse(&a.reference)?;
            let t = a.ssh.transport(&a.registry)?;
            catalog::remove(&t, &reference).await?;
            let text = match (&reference.tag, a.json) {
                (_, true) => format!("{}\n", serde_json::json!({ "deleted": a.reference })),
                (Some(_), false) => format!("deleted tag {}\n", a.reference),
                (None, false) => format!("deleted repository {}\n", a.reference),
            };
            Ok(write_stdout(text.as_bytes()).await?)
        }
    }
}

/// `berth generate-assets DIR`: man pages and completions for packaging.
fn generate_assets(dir: &std::path::Path) -> Result<(), ClientError> {
    use clap::CommandFactory;
    for cmd in [
        Berth::command(),
        RegistryGet::command(),
        RegistryPut::command(),
        PluginCli::command().name("docker-berth"),
    ] {
        berth_server::assets::generate(cmd, dir).map_err(|source| ClientError::Io {
            what: format!("writing man pages and completions to {}", dir.display()),
            source,
        })?;
    }
    Ok(())
}

async fn print_names(names: Vec<String>, json: bool) -> Result<(), ClientError> {
    let text = if json {
        format!("{}\n", serde_json::Value::from(names))
    } else {
        names.iter().map(|n| format!("{n}\n")).collect()
    };
    write_stdout(text.as_bytes()).await
}

pub(crate) async fn write_stdout(data: &[u8]) -> Result<(), ClientError> {
    let mut out = tokio::io::stdout();
    let io = |source| ClientError::Io {
        what: "writing to stdout".to_string(),
        source,
    };
    out.write_all(data).await.map_err(io)?;
    out.flush().await.map_err(io)
}

/// `berth sync`: copies, then prints the report.
pub async fn sync(a: SyncArgs) -> Result<(), ClientError> {
    let references = a
        .references
        .iter()
        .map(|r| Reference::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let src = a.ssh.transport(&a.src)?;
    let dst = a.ssh.transport(&a.dst)?;
    let report = crate::sync::sync(&src, &dst, &references).await?;
    let text = if a.json {
        format!(
            "{}\n",
            serde_json::to_string(&report).unwrap_or_else(|_| "{}".to_string())
        )
    } else {
        format!(
            "sync: {} tags ({} unchanged), {} manifests and {} blobs sent ({} bytes), {} blobs already there\n",
            report.tags,
            report.tags_unchanged,
            report.manifests_sent,
            report.blobs_sent,
            report.bytes_sent,
            report.blobs_present
        )
    };
    write_stdout(text.as_bytes()).await
}

/// `registryget`: GET PATH, the body to stdout.
pub async fn get(a: GetArgs) -> Result<(), ClientError> {
    let t = SshArgs::from(a.ssh).transport(&a.registry)?;
    transfer(&t, Method::GET, &a.path, &a.headers, a.include, None).await
}

/// `registryput`: PUT PATH with FILE or stdin as the streamed body.
pub async fn put(a: PutArgs) -> Result<(), ClientError> {
    let t = SshArgs::from(a.ssh).transport(&a.registry)?;
    let (reader, len): (Box<dyn AsyncRead + Send + Unpin>, Option<u64>) = match &a.file {
        Some(p) if p.as_os_str() != "-" => {
            let f = tokio::fs::File::open(p)
                .await
                .map_err(|source| ClientError::Io {
                    what: format!("opening {}", p.display()),
                    source,
                })?;
            let len = f.metadata().await.ok().map(|m| m.len());
            (Box::new(f), len)
        }
        _ => (Box::new(tokio::io::stdin()), None),
    };
    let body = StreamBody::new(
        ReaderStream::with_capacity(reader, CHUNK)
            .map_ok(Frame::data)
            .map_err(BoxError::from),
    )
    .boxed_unsync();
    transfer(
        &t,
        Method::PUT,
        &a.path,
        &a.headers,
        a.include,
        Some((body, len)),
    )
    .await
}

type BoxError = crate::http::BoxError;

/// One request with streamed bodies both ways: the response body goes to
/// stdout on success; an error status becomes [`ClientError::Status`].
async fn transfer(
    t: &Transport,
    method: Method,
    path: &str,
    headers: &[String],
    include: bool,
    body: Option<(Body, Option<u64>)>,
) -> Result<(), ClientError> {
    if !path.starts_with('/') {
        return Err(ClientError::Usage(format!(
            "request path {path:?} must start with /"
        )));
    }
    let what = http::describe(&method, path);
    let mut builder = Request::builder().method(method).uri(path);
    for h in headers {
        let (k, v) = h.split_once(':').ok_or_else(|| {
            ClientError::Usage(format!("bad header {h:?}: expected 'Name: value'"))
        })?;
        let k = HeaderName::try_from(k.trim())
            .map_err(|e| ClientError::Usage(format!("bad header name in {h:?}: {e}")))?;
        let v = HeaderValue::try_from(v.trim())
            .map_err(|e| ClientError::Usage(format!("bad header value in {h:?}: {e}")))?;
        builder = builder.header(k, v);
    }
    let body = match body {
        Some((b, len)) => {
            if let Some(len) = len {
                builder = builder.header(::http::header::CONTENT_LENGTH, len);
            }
            b
        }
        None => http::empty(),
    };
    let req = builder
        .body(body)
        .map_err(|e| ClientError::Usage(format!("{what}: {e}")))?;

    let mut conn = HttpConnection::open(t).await?;
    let resp = conn.send(req).await?;
    let status = resp.status();
    let mut out = tokio::io::stdout();
    let out_err = |source| ClientError::Io {
        what: "writing to stdout".to_string(),
        source,
    };
    if include {
        let mut head = format!("HTTP/1.1 {status}\r\n");
        for (k, v) in resp.headers() {
            head.push_str(&format!(
                "{k}: {}\r\n",
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes()).await.map_err(out_err)?;
    }
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = http::read_small_body(&what, body, &conn.diagnostics()).await?;
        if include {
            out.write_all(&bytes).await.map_err(out_err)?;
            out.flush().await.map_err(out_err)?;
        }
        return Err(ClientError::Status {
            what,
            status,
            message: berth_transport::wire::error_message(&bytes),
        });
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(source) => {
                return Err(ClientError::Http {
                    what: format!("{what}: reading the response body"),
                    detail: crate::http::explain(&source, &conn.diagnostics()).await,
                    source,
                })
            }
        };
        if let Ok(data) = frame.into_data() {
            let data: Bytes = data;
            out.write_all(&data).await.map_err(out_err)?;
        }
    }
    out.flush().await.map_err(out_err)
}

/// `berth shim`: prints its startup line, then serves until killed.
pub async fn shim(a: ShimArgs) -> Result<(), ClientError> {
    if !crate::shim::is_loopback(&a.listen) && !a.allow_remote {
        return Err(ClientError::Usage(format!(
            "refusing to listen on non-loopback {}: anyone who can connect would use the registry \
             with your SSH identity; pass --allow-remote if you mean it",
            a.listen
        )));
    }
    let remote: Remote = a.registry.parse()?;
    let transport = Arc::new(Transport::new(
        &remote,
        ConnectOptions::from(a.ssh.clone()).options()?,
    )?);
    transport.prepare().await?;
    // One request before the startup line, so that a wrong host, key or
    // subsystem shows up now rather than as Docker's first failure.
    catalog::call(&transport, Method::GET, "/v1/_ping").await?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|source| ClientError::Io {
            what: format!("listening on {}", a.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ClientError::Io {
        what: "reading the listen address".to_string(),
        source,
    })?;
    write_stdout(format!("berth shim: serving {remote} on http://{addr}\n").as_bytes()).await?;
    let catalog = crate::shim::is_loopback(&addr)
        .then(|| berth_server::catalog::Catalog::new(transport.clone(), addr, &a.registry));
    if let Some(c) = &catalog {
        write_stdout(format!("catalog: {}\n", c.url()).as_bytes()).await?;
    }
    // Only the built-in SSH client pays round trips per stream that a pool
    // can take off: in-process streams are free, and a spawned ssh per
    // stream is a whole login (the server logs each, and it may prompt on
    // the terminal) that OpenSSH's own ControlMaster multiplexing makes
    // cheap instead; HTTP(S) registries may close idle connections sooner
    // than any age the pool could assume.
    let warm = match *transport {
        Transport::Ssh(_) => usize::from(a.warm),
        _ => 0,
    };
    let open_transport = transport.clone();
    let streams = Arc::new(crate::warm::WarmPool::new(
        Arc::new(move || {
            let t = open_transport.clone();
            Box::pin(async move { t.open().await })
        }),
        warm,
    ));
    crate::shim::serve(listener, streams, catalog)
        .await
        .map_err(|source| ClientError::Io {
            what: format!("accepting connections on {addr}"),
            source,
        })
}
