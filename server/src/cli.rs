//! The command-line flags several server modes share (`serve`, `stdio`,
//! `http`): HTTP limits, registry roles and the pull-through mirror. They
//! are clap types and live here, apart from the library: each converts
//! into the plain options the library takes ([`RegistryConfig`],
//! [`MirrorOptions`]), so `registry` and `mirror` know nothing of clap.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::hooks::WebhookUrl;
use crate::mirror::{Mirror, MirrorOptions};
use crate::registry::RegistryConfig;

/// Flags that turn a server into a mirror (shared by `serve`, `stdio`, `http`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MirrorArgs {
    /// Serve as a pull-through mirror of this registry: `ssh://[user@]host[:port]`,
    /// a directory (mount point), or `http(s)://host[:port]` (a V2 registry).
    #[arg(long = "mirror-of", value_name = "REGISTRY")]
    pub mirror_of: Option<String>,
    /// How long a mirrored tag is served before it is checked against the
    /// upstream again (`30s`, `5m`, `1h`; `0s` checks on every request).
    #[arg(long = "mirror-ttl", value_name = "DURATION", default_value = "5m",
          value_parser = crate::store::gc::parse_duration)]
    pub ttl: Duration,
    /// Accept pushes and deletes on the mirror (they stay local; the
    /// upstream is never written).
    #[arg(long = "mirror-allow-push")]
    pub allow_push: bool,
    /// Private key for SSH upstreams (repeatable; default: the keys in ~/.ssh and the agent).
    #[arg(long = "mirror-identity", value_name = "FILE")]
    pub identities: Vec<std::path::PathBuf>,
    /// known_hosts file for SSH upstreams (default: ~/.ssh/known_hosts).
    #[arg(long = "mirror-known-hosts", value_name = "FILE")]
    pub known_hosts: Option<std::path::PathBuf>,
}

impl MirrorArgs {
    /// The mirror options these flags describe; `None` without `--mirror-of`.
    pub fn options(&self) -> Option<MirrorOptions> {
        Some(MirrorOptions {
            upstream: self.mirror_of.clone()?,
            ttl: self.ttl,
            allow_push: self.allow_push,
            identities: self.identities.clone(),
            known_hosts: self.known_hosts.clone(),
        })
    }
}

/// Registry roles, as command-line flags shared by every server mode:
/// webhooks, chained endpoints and the pull-through mirror (docs/roles.md).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RoleArgs {
    /// POST every push and delete event (distribution's notification
    /// envelope) to this `http://` or `https://` URL; repeatable.
    #[arg(long = "webhook", value_name = "URL", value_parser = WebhookUrl::parse)]
    pub webhooks: Vec<WebhookUrl>,
    /// Run the executables `post-push` and `post-delete` of this directory
    /// after each push and delete. The directory and each hook must be owned
    /// by the server's user or root and not group- or world-writable (a hook
    /// that is not is refused and logged). Default: no hooks; hooks in the
    /// store (`_berth/hooks/`) are never run.
    #[arg(long = "hooks-dir", value_name = "DIR")]
    pub hooks_dir: Option<PathBuf>,
    /// Registry `HOST:PORT` listed in V1 `X-Docker-Endpoints` (servers sharing
    /// this store); repeatable. Default: the request's Host.
    #[arg(long = "endpoint", value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// Accept image manifests whose config's `rootfs.diff_ids` do not
    /// match their layers' uncompressed bytes, as distribution does (the
    /// upstream OCI conformance suite pushes such images). The registry
    /// then stops announcing `Berth-Verifies`, so `berth push` checks
    /// diff_ids locally again. Default: refused (400 MANIFEST_INVALID).
    #[arg(long = "no-diff-id-check")]
    pub no_diff_id_check: bool,
    /// Pull-through mirror.
    #[command(flatten)]
    pub mirror: MirrorArgs,
}

impl RoleArgs {
    /// `config` with these roles; fails on an unusable `--mirror-of` or an
    /// untrusted `--hooks-dir`.
    pub fn apply(&self, config: RegistryConfig) -> Result<RegistryConfig, String> {
        // Absolute, so a hook started with the hooks directory as its working
        // directory is still found by its path.
        let hooks_dir = match &self.hooks_dir {
            Some(dir) => {
                crate::hooks::check_hooks_dir(dir)?;
                Some(
                    std::fs::canonicalize(dir)
                        .map_err(|e| format!("--hooks-dir {}: {e}", dir.display()))?,
                )
            }
            None => None,
        };
        let mirror = match self.mirror.options() {
            Some(options) => Some(Arc::new(Mirror::open(
                &options,
                crate::registry::in_process::open_local,
            )?)),
            None => None,
        };
        Ok(RegistryConfig {
            endpoints: self.endpoints.clone(),
            webhooks: self.webhooks.clone(),
            hooks_dir,
            mirror,
            skip_diff_id_check: self.no_diff_id_check,
            ..config
        })
    }
}

/// HTTP limits, as command-line flags shared by every server mode.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpLimits {
    /// Seconds a client may take to send one HTTP request head (slowloris guard).
    #[arg(long, default_value_t = 30)]
    pub header_timeout: u64,
    /// Largest HTTP request head (request line and headers), in bytes; 431 above.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Largest JSON request body (image json, tags, index lists), in bytes; 413 above.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_json_body: usize,
}

impl HttpLimits {
    /// The registry configuration with these limits.
    pub fn config(&self) -> RegistryConfig {
        RegistryConfig {
            max_json_body: self.max_json_body,
            max_header_bytes: self.max_header_bytes,
            header_timeout: Duration::from_secs(self.header_timeout),
            ..RegistryConfig::default()
        }
    }
}
