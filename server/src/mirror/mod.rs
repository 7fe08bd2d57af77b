//! Pull-through mirror (`serve --mirror-of REGISTRY`, docs/roles.md): a V2
//! read that misses the local store is fetched from the upstream registry,
//! verified, stored, and then answered from the store like any other
//! object — the registry handlers never know the bytes came from elsewhere.
//!
//! * Blobs and manifests by digest are immutable: once stored they are
//!   served without asking the upstream again.
//! * Tags move: a tag is revalidated against the upstream once it is older
//!   than the TTL (`--mirror-ttl`). If the upstream cannot be reached the
//!   cached tag is served as it is; a miss gets a clear 404 saying why.
//! * Concurrent requests for the same missing object wait for one fetch
//!   ([`Inflight`]), then find it in the store.
//! * Writes are refused unless `--mirror-allow-push` is given.
//!
//! [`upstream`] is the V2 client that talks to the upstream over any berth
//! transport (SSH, an in-process mount point, plain or TLS HTTP).

pub mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::names::{Digest, RepoName, Tag};
use crate::store::blocking;
use crate::store::manifests::{LinkVia, TagRecord};
use crate::store::{Store, StoreError};
use upstream::{Fetched, Upstream, UpstreamError};

/// What a mirror is asked to be, as plain values (the command line's
/// `MirrorArgs` in [`crate::cli`] converts into it).
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// The upstream: `ssh://[user@]host[:port]`, a directory (mount point),
    /// or `http(s)://host[:port]`.
    pub upstream: String,
    /// How long a mirrored tag is served before it is checked against the
    /// upstream again.
    pub ttl: Duration,
    /// Accept pushes and deletes (they stay local).
    pub allow_push: bool,
    /// Private keys for SSH upstreams (empty: the keys in ~/.ssh and the agent).
    pub identities: Vec<std::path::PathBuf>,
    /// known_hosts file for SSH upstreams (`None`: ~/.ssh/known_hosts).
    pub known_hosts: Option<std::path::PathBuf>,
}

/// Why a mirrored object could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The upstream could not be asked (down, refused, broke off) and the
    /// object is not cached.
    #[error("{what} is not cached on this mirror and the upstream {upstream} cannot be reached: {source}")]
    Unavailable {
        /// The object asked for.
        what: String,
        /// The upstream registry.
        upstream: String,
        /// What went wrong.
        source: UpstreamError,
    },
    /// The upstream sent something that failed verification.
    #[error("the upstream {upstream} sent a bad {what}: {reason}")]
    Corrupt {
        /// The object asked for.
        what: String,
        /// The upstream registry.
        upstream: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The local store failed.
    #[error("storing a mirrored object: {0}")]
    Store(#[from] std::io::Error),
}

/// Counters of upstream traffic, shown in `/_berth/info` for operators.
#[derive(Debug, Default)]
pub struct MirrorStats {
    /// Requests sent to the upstream.
    pub requests: AtomicU64,
    /// Blob and manifest bytes received from the upstream.
    pub bytes: AtomicU64,
    /// Reads answered from the store without asking the upstream.
    pub hits: AtomicU64,
    /// Cached tags served because the upstream could not be reached.
    pub stale_served: AtomicU64,
    /// Reads the store could not answer alone, so the upstream was asked.
    pub misses: AtomicU64,
    /// Upstream requests that failed (unreachable, refused, bad answer).
    pub upstream_errors: AtomicU64,
}

/// One fetch at a time per object: later requests wait for the first and
/// then find the object stored.
#[derive(Debug, Default)]
struct Inflight {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Inflight {
    /// Runs `work` while holding the lock for `key`.
    async fn once<T>(&self, key: String, work: impl std::future::Future<Output = T>) -> T {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _held = lock.lock().await;
            work.await
        };
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this call hold it: nobody else is waiting.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&key);
        }
        result
    }
}

/// The mirror role of a registry service.
pub struct Mirror {
    upstream: Upstream,
    ttl: Duration,
    allow_push: bool,
    inflight: Inflight,
    /// When each tag was last confirmed against the upstream (this process).
    checked: Mutex<HashMap<(RepoName, Tag), Instant>>,
    /// Each repository's upstream tag list and when it was fetched.
    tag_lists: Mutex<HashMap<RepoName, (Instant, Vec<Tag>)>>,
    /// Until when cached tags are served without asking an upstream that
    /// just failed (a blackholed upstream must not cost every pull a timeout).
    down_until: Mutex<Option<Instant>>,
    stats: MirrorStats,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("upstream", &self.upstream.name())
            .field("ttl", &self.ttl)
            .field("allow_push", &self.allow_push)
            .finish()
    }
}

impl Mirror {
    /// The mirror `options` describe; `open_local` serves a directory
    /// upstream in-process (the registry's `in_process::open_local`, passed
    /// in so the mirror does not depend on the registry).
    pub fn open(
        options: &MirrorOptions,
        open_local: upstream::OpenLocal,
    ) -> Result<Mirror, String> {
        Ok(Mirror::new(
            Upstream::open(options, open_local)?,
            options.ttl,
            options.allow_push,
        ))
    }

    /// A mirror of `upstream` with the given tag TTL and write policy.
    pub fn new(upstream: Upstream, ttl: Duration, allow_push: bool) -> Mirror {
        Mirror {
            upstream,
            ttl,
            allow_push,
            inflight: Inflight::default(),
            checked: Mutex::default(),
            tag_lists: Mutex::default(),
            down_until: Mutex::default(),
            stats: MirrorStats::default(),
        }
    }

    /// The upstream's address, as configured.
    pub fn upstream_name(&self) -> &str {
        self.upstream.name()
    }

    /// The tag TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Upstream traffic so far.
    pub fn stats(&self) -> &MirrorStats {
        &self.stats
    }

    /// Why a write is refused, or `None` when pushes are allowed.
    pub fn refusal(&self) -> Option<String> {
        (!self.allow_push).then(|| {
            format!(
                "this registry is a read-only mirror of {}; push there instead",
                self.upstream.name()
            )
        })
    }

    fn unavailable(&self, what: String, source: UpstreamError) -> MirrorError {
        self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
        MirrorError::Unavailable {
            what,
            upstream: self.upstream.name().to_string(),
            source,
        }
    }

    fn corrupt(&self, what: String, reason: String) -> MirrorError {
        self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
        MirrorError::Corrupt {
            what,
            upstream: self.upstream.name().to_string(),
            reason,
        }
    }

    fn count(&self, fetched: &Fetched) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(fetched.bytes.len() as u64, Ordering::Relaxed);
    }

    /// Makes blob `digest` readable in `repo` if the upstream has it there:
    /// afterwards the local store answers (a miss stays a miss).
    pub async fn ensure_blob(
        &self,
        store: &Store,
        repo: &RepoName,
        remote_name: &str,
        digest: &Digest,
    ) -> Result<(), MirrorError> {
        if in_repo(store, repo, digest).await? {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let what = format!("blob {digest}");
        self.inflight
            .once(format!("blob {digest}"), async {
                if in_repo(store, repo, digest).await? {
                    return Ok(());
                }
                let (s, d) = (store.clone(), digest.clone());
                let pooled = blocking(move || s.blob_size(&d)).await?.is_some();
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let found = if pooled {
                    // Stored for another repository: only ask whether this
                    // repository has it upstream too, and link it.
                    self.upstream.has_blob(remote_name, digest).await
                } else {
                    match self.upstream.fetch_blob(remote_name, digest, store).await {
                        Ok(Some(size)) => {
                            self.stats.bytes.fetch_add(size, Ordering::Relaxed);
                            Ok(true)
                        }
                        Ok(None) => Ok(false),
                        Err(UpstreamError::Corrupt(reason)) => {
                            return Err(self.corrupt(what.clone(), reason))
                        }
                        Err(e) => Err(e),
                    }
                };
                match found {
                    Ok(true) => {
                        let (s, r, d) = (store.clone(), repo.clone(), digest.clone());
                        blocking(move || s.link_blob_to_repo(&r, &d, &LinkVia::MirrorBlob)).await?;
                        tracing::info!(repository = %repo, blob = %digest, "mirrored blob");
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(self.unavailable(what.clone(), e)),
                }
            })
            .await
    }

    /// Makes manifest `digest` readable in `repo` if the upstream has it
    /// there. A copy stored for another repository does not count: the
    /// upstream is asked for this one (manifests are small), so a digest
    /// answers only where the upstream gives it (issue 14).
    pub async fn ensure_manifest_digest(
        &self,
        store: &Store,
        repo: &RepoName,
        remote_name: &str,
        digest: &Digest,
    ) -> Result<(), MirrorError> {
        if manifest_in_repo(store, repo, digest).await? {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let what = format!("manifest {digest}");
        self.inflight
            .once(format!("manifest {} {digest}", repo.full()), async {
                if manifest_in_repo(store, repo, digest).await? {
                    return Ok(());
                }
                let fetched = match self
                    .upstream
                    .fetch_manifest(remote_name, digest.as_str())
                    .await
                {
                    Ok(Some(f)) => f,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(self.unavailable(what.clone(), e)),
                };
                self.count(&fetched);
                if &fetched.digest != digest {
                    return Err(self.corrupt(
                        what.clone(),
                        format!("its bytes hash to {}", fetched.digest),
                    ));
                }
                store_manifest(store, repo, &fetched, None).await?;
                tracing::info!(repository = %repo, manifest = %digest, "mirrored manifest");
                Ok(())
            })
            .await
    }

    /// Makes `repo:tag` current: fetched if unknown, revalidated when older
    /// than the TTL. An unreachable upstream leaves a cached tag as it is.
    pub async fn ensure_tag(
        &self,
        store: &Store,
        repo: &RepoName,
        remote_name: &str,
        tag: &Tag,
    ) -> Result<(), MirrorError> {
        if self.fresh(repo, tag) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let what = format!("{}:{tag}", repo.full());
        self.inflight
            .once(format!("tag {} {tag}", repo.full()), async {
                if self.fresh(repo, tag) {
                    return Ok(());
                }
                let (s, r, t) = (store.clone(), repo.clone(), tag.clone());
                let cached = blocking(move || s.v2_tag(&r, &t)).await?;
                if cached.is_some() && self.recently_down() {
                    self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                let fetched = match self.upstream.fetch_manifest(remote_name, tag.as_str()).await {
                    Ok(f) => f,
                    Err(e) if cached.is_some() => {
                        self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                        self.mark_down(&e);
                        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(repository = %repo, %tag, upstream = self.upstream.name(), error = %e,
                            "upstream unreachable; serving the cached tag");
                        return Ok(());
                    }
                    Err(e) => return Err(self.unavailable(what.clone(), e)),
                };
                let Some(fetched) = fetched else {
                    // Gone upstream: the cached copy (if any) is left alone,
                    // and answers keep coming from the store.
                    tracing::info!(repository = %repo, %tag, "tag unknown upstream");
                    return Ok(());
                };
                self.count(&fetched);
                *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if let Some(claimed) = &fetched.claimed {
                    if *claimed != fetched.digest {
                        return Err(self.corrupt(
                            what.clone(),
                            format!(
                                "Docker-Content-Digest says {claimed}, the bytes hash to {}",
                                fetched.digest
                            ),
                        ));
                    }
                }
                let unchanged = cached.as_ref().is_some_and(|c| c.digest == fetched.digest);
                if !unchanged {
                    store_manifest(store, repo, &fetched, Some(tag)).await?;
                    tracing::info!(repository = %repo, %tag, manifest = %fetched.digest, "mirrored tag");
                }
                self.checked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((repo.clone(), tag.clone()), Instant::now());
                Ok(())
            })
            .await
    }

    /// The upstream's tags of a repository, so a listing on the mirror shows
    /// what can be pulled through it. Cached like a tag for the TTL; when
    /// the upstream cannot be asked, the last list (or none) is used and the
    /// failure logged. Invalid names are dropped.
    pub async fn upstream_tags(&self, repo: &RepoName, remote_name: &str) -> Vec<Tag> {
        let cached = self
            .tag_lists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(repo)
            .cloned();
        if let Some((at, tags)) = &cached {
            if at.elapsed() < self.ttl {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return tags.clone();
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        match self.upstream.tags(remote_name).await {
            Ok(tags) => {
                let tags: Vec<Tag> = tags
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|t| Tag::parse(t).ok())
                    .collect();
                self.tag_lists
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(repo.clone(), (Instant::now(), tags.clone()));
                tags
            }
            Err(e) => {
                self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(repository = remote_name, error = %e,
                    "upstream tag list unavailable; listing cached tags only");
                cached.map(|(_, tags)| tags).unwrap_or_default()
            }
        }
    }

    /// How long cached tags skip an upstream that failed to answer.
    const DOWN_BACKOFF: Duration = Duration::from_secs(10);

    fn mark_down(&self, e: &UpstreamError) {
        if matches!(e, UpstreamError::Connect(_) | UpstreamError::Broken(_)) {
            *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + Self::DOWN_BACKOFF);
        }
    }

    fn recently_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    fn fresh(&self, repo: &RepoName, tag: &Tag) -> bool {
        let checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked
            .get(&(repo.clone(), tag.clone()))
            .is_some_and(|at| at.elapsed() < self.ttl)
    }
}

/// Logs the mirror role at start and connects to the upstream in the
/// background, so a wrong address, host key or login shows in the log at
/// once; cached content is served either way.
pub fn announce(mirror: Option<&Arc<Mirror>>) {
    let Some(mirror) = mirror else {
        return;
    };
    tracing::info!(upstream = mirror.upstream_name(), ttl = ?mirror.ttl(), "pull-through mirror");
    let mirror = mirror.clone();
    tokio::spawn(async move {
        if let Err(e) = mirror.upstream.prepare().await {
            tracing::warn!(upstream = mirror.upstream_name(), error = %e,
                "the upstream cannot be reached now; cached content is still served");
        }
    });
}

async fn in_repo(store: &Store, repo: &RepoName, digest: &Digest) -> std::io::Result<bool> {
    let (s, r, d) = (store.clone(), repo.clone(), digest.clone());
    blocking(move || s.blob_in_repo(&r, &d)).await
}

async fn manifest_in_repo(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
) -> std::io::Result<bool> {
    let (s, r, d) = (store.clone(), repo.clone(), digest.clone());
    blocking(move || s.manifest_in_repo(&r, &d).map(|m| m.is_some())).await
}

/// Stores a fetched manifest, links it (and only it: each blob it names is
/// linked when the upstream gives it for `repo`, [`Mirror::ensure_blob`])
/// to `repo` and points `tag` at it. Mirrored tags are V2-only: their blobs
/// arrive lazily, so there is nothing to project to V1 yet.
async fn store_manifest(
    store: &Store,
    repo: &RepoName,
    fetched: &Fetched,
    tag: Option<&Tag>,
) -> std::io::Result<()> {
    let (s, r, t) = (store.clone(), repo.clone(), tag.cloned());
    let (bytes, media_type, digest) = (
        fetched.bytes.clone(),
        fetched.media_type.clone(),
        fetched.digest.clone(),
    );
    blocking(move || {
        s.put_manifest_as(&bytes, &media_type, digest.algorithm())?;
        s.link_blob_to_repo(&r, &digest, &LinkVia::Mirror)?;
        if let Some(tag) = t {
            // A V1 tag of the same name (a local push, with
            // --mirror-allow-push) would now name another image.
            match s.delete_tag(&r, &tag) {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Io(e)) => return Err(e),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            s.set_v2_tag(&r, &tag, &TagRecord { digest, v1: None })?;
        }
        Ok(())
    })
    .await
}
