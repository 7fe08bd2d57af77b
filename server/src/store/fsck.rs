//! `berth-server fsck`: checks a store against the contract of
//! `docs/storage.md` and reports every problem with its path.
//!
//! What it verifies: every pool blob hashes to its name; every V1 image's
//! json parses and names its directory, its ancestry matches its parent's,
//! and a published image has its ancestors published, its layer present and a
//! `_checksum` equal to `sha256(json + "\n" + layer)`; every V1 tag names a
//! published image; every V2 tag names a stored manifest whose blobs (config,
//! layers, index children, recursively) are in the pool; every per-repository
//! blob link, manifest record and derived record points into the pool;
//! every blob link says why it exists or, for links written before links
//! did, was earned by its repository (`store::earned`: not made by the
//! manifest-PUT leak of issue 14); every V2 tag's blobs are visible in its
//! repository.
//!
//! What it repairs when asked: a pool blob whose content does not hash to
//! its name, and a V1 image whose layer does not match its `_checksum`, are
//! problems; `--repair` moves them into `_berth/quarantine/`
//! (`store::quarantine`), so HEAD stops answering them and the next push
//! uploads them again.
//!
//! What it leaves alone: crash leftovers are *not* problems (they are what the
//! contract allows a killed writer to leave): `.tmp-*` files, upload sessions,
//! image directories that never got their json, images still in progress.
//! `--repair` removes only the provably garbage ones (older than the grace, or
//! expired sessions) plus per-repository links to blobs that are gone and
//! unearned links; it never touches an object anything legitimately
//! references. It is safe to run while
//! other processes push: a younger leftover may belong to a live request.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::atomic::{remove_durable, FileLock, TEMP_PREFIX};
use super::earned::{self, Link};
use super::layer_facts::LayerFacts;
use super::manifests::LinkRecord;
use super::quarantine::quarantine;
use super::uploads::UPLOAD_MAX_IDLE;
use super::walk::{
    age, dir_age, entries, exists, json_parent, manifest_refs, metadata, metadata_followed,
    optional, pool_entries, read_ancestry, read_tag_file, referrer_records, repos_with, temp_files,
    v1_tags,
};
use super::{hash_file, read_optional, Paths, Store};
use crate::names::{Algorithm, Digest, ImageId, RepoName, Tag, UploadId};

/// Deepest index → manifest nesting followed.
const MAX_INDEX_DEPTH: usize = 8;

/// What `fsck` was asked to do.
#[derive(Debug, Clone)]
pub struct FsckOptions {
    /// Remove provably garbage leftovers.
    pub repair: bool,
    /// Also recompute every layer facts record from its blob (inflating
    /// each layer once); without it a record is only parsed and matched
    /// to an existing blob.
    pub deep: bool,
    /// Leftovers younger than this may belong to a live request: never removed.
    pub grace: Duration,
}

/// How serious one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The store breaks its contract (missing, corrupt or inconsistent object).
    Problem,
    /// A crash leftover that `--repair` would remove.
    Leftover,
    /// A leftover that `--repair` removed.
    Repaired,
    /// Allowed state worth knowing (in-progress image, open upload session).
    Note,
}

/// One finding, with the path it is about.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Problem, leftover, repaired or note.
    pub severity: Severity,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// What is wrong, for a human.
    pub message: String,
}

/// Everything one `fsck` run found, with counts of what it checked.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FsckReport {
    /// Findings in the order they were made.
    pub findings: Vec<Finding>,
    /// Pool blobs hashed.
    pub blobs: usize,
    /// V1 image directories checked.
    pub images: usize,
    /// V1 tags checked.
    pub v1_tags: usize,
    /// V2 tags checked.
    pub v2_tags: usize,
}

impl FsckReport {
    /// Number of contract violations (the exit status depends on it).
    pub fn problems(&self) -> usize {
        self.count(Severity::Problem)
    }

    /// Number of findings of one severity.
    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    fn add(&mut self, severity: Severity, path: &Path, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            path: path.to_path_buf(),
            message: message.into(),
        });
    }
}

// ---- the check ----------------------------------------------------------------

/// Checks the whole store; with `repair`, removes provably garbage leftovers.
///
/// On a shared filesystem another host may replace or remove what the walk
/// is looking at, and GlusterFS or NFS then answer `ESTALE` for the handle
/// the walk still holds (seen in the GlusterFS tests right after a server
/// was killed). A pass that fails transiently is started again from the
/// top ([`super::transient::retry`]), so it reads the store as it is now;
/// every repair is idempotent, so a repeated one changes nothing twice.
pub fn fsck(store: &Store, opts: &FsckOptions) -> io::Result<FsckReport> {
    super::transient::retry("fsck pass", || fsck_pass(store, opts))
}

/// One walk over the whole store (see [`fsck`]).
fn fsck_pass(store: &Store, opts: &FsckOptions) -> io::Result<FsckReport> {
    let mut r = FsckReport::default();
    check_temps(store, opts, &mut r)?;
    check_uploads(store, opts, &mut r)?;
    let pool = check_pool(store, opts, &mut r)?;
    check_images(store, opts, &mut r)?;
    let held = super::quarantine::quarantined(store)?;
    if held > 0 {
        r.add(
            Severity::Note,
            &store.paths().quarantine_dir(),
            format!("{held} quarantined objects (moved out by an earlier repair; safe to delete)"),
        );
    }
    check_v1_tags(store, &mut r)?;
    check_v2(store, opts, &pool, &mut r)?;
    check_records(store, &pool, &mut r)?;
    check_layer_facts(store, opts, &pool, &mut r)?;
    Ok(r)
}

/// Layer facts records (`store::layer_facts`): each parses and names a
/// pool blob; `--deep` recomputes it from the blob. A record whose blob is
/// gone (or that does not parse, or is wrong) is removed by `--repair`
/// once older than the grace period: it is recomputed on demand.
fn check_layer_facts(
    store: &Store,
    opts: &FsckOptions,
    pool: &HashSet<Digest>,
    r: &mut FsckReport,
) -> io::Result<()> {
    let p = store.paths();
    for (name, path) in entries(&p.layer_facts_dir())? {
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let Some(d) = Paths::digest_of_key(&name) else {
            r.add(
                Severity::Problem,
                &path,
                "unexpected entry among layer facts records",
            );
            continue;
        };
        let Some(raw) = read_optional(&path)? else {
            continue;
        };
        let problem = match LayerFacts::from_record(&raw) {
            Err(e) => Some(format!("layer facts record does not parse: {e}")),
            Ok(_) if !(pool.contains(&d) || exists(&p.blob(&d))?) => {
                Some("layer facts record without its blob".to_string())
            }
            Ok(facts) if opts.deep => match store.measure_blob(&d) {
                Ok(Some(m)) if m.facts == facts => None,
                Ok(Some(m)) => Some(format!(
                    "layer facts record says {} ({} bytes), the blob uncompresses to {} ({} bytes)",
                    facts.diff_id,
                    facts.uncompressed_size,
                    m.facts.diff_id,
                    m.facts.uncompressed_size
                )),
                Ok(None) => None,
                Err(e) => Some(format!("layer facts record for an unreadable layer: {e}")),
            },
            Ok(_) => None,
        };
        let Some(problem) = problem else { continue };
        r.add(Severity::Problem, &path, &problem);
        if opts.repair && age(&path, &store.clock())?.is_some_and(|a| a >= opts.grace) {
            remove_durable(&path)?;
            r.add(Severity::Repaired, &path, "layer facts record removed");
        }
    }
    Ok(())
}

fn check_temps(store: &Store, opts: &FsckOptions, r: &mut FsckReport) -> io::Result<()> {
    for path in temp_files(store)? {
        let Some(a) = age(&path, &store.clock())? else {
            continue;
        };
        if a < opts.grace {
            r.add(
                Severity::Note,
                &path,
                "temporary file of a write that may still be running",
            );
        } else if opts.repair {
            remove_durable(&path)?;
            r.add(Severity::Repaired, &path, "stale temporary file removed");
        } else {
            r.add(Severity::Leftover, &path, "stale temporary file");
        }
    }
    Ok(())
}

fn check_uploads(store: &Store, opts: &FsckOptions, r: &mut FsckReport) -> io::Result<()> {
    for (name, path) in entries(&store.paths().uploads_dir())? {
        if name.starts_with(TEMP_PREFIX) {
            if metadata(&path)?.is_some_and(|m| m.is_dir()) {
                closed_session_leftover(store, opts, &path, r)?;
            }
            continue; // files: judged by check_temps
        }
        let Some(id) = UploadId::parse(&name) else {
            r.add(
                Severity::Problem,
                &path,
                "unexpected entry among upload sessions",
            );
            continue;
        };
        let Some(idle) = dir_age(&path, &store.clock())? else {
            continue;
        };
        if idle <= UPLOAD_MAX_IDLE {
            let note = match store.upload_owner(&id) {
                Ok(Some(_)) => "open upload session",
                // Opened before sessions were bound to their owner (issue 14).
                Ok(None) => {
                    "open upload session with no owner record (refused under an access file)"
                }
                Err(_) => "open upload session whose owner record does not parse (refused)",
            };
            r.add(Severity::Note, &path, note);
        } else if opts.repair {
            store.cancel_upload(&id)?;
            r.add(Severity::Repaired, &path, "expired upload session removed");
        } else {
            r.add(Severity::Leftover, &path, "expired upload session");
        }
    }
    Ok(())
}

/// A session closed or cancelled by a process that died between renaming it
/// out of the way and deleting it (`.tmp-gone-<id>/`): unreachable by name.
fn closed_session_leftover(
    store: &Store,
    opts: &FsckOptions,
    path: &Path,
    r: &mut FsckReport,
) -> io::Result<()> {
    let Some(a) = dir_age(path, &store.clock())? else {
        return Ok(());
    };
    if a < opts.grace {
        r.add(Severity::Note, path, "upload session being removed");
    } else if opts.repair {
        fs::remove_dir_all(path)?;
        r.add(
            Severity::Repaired,
            path,
            "removed upload session leftover deleted",
        );
    } else {
        r.add(Severity::Leftover, path, "removed upload session leftover");
    }
    Ok(())
}

/// Hashes every pool blob; returns the digests present (a quarantined one
/// is not).
fn check_pool(
    store: &Store,
    opts: &FsckOptions,
    r: &mut FsckReport,
) -> io::Result<HashSet<Digest>> {
    let mut present = HashSet::new();
    for (d, path) in pool_entries(store.paths())? {
        let is_temp = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX));
        if is_temp {
            continue;
        }
        let Some(d) = d else {
            r.add(
                Severity::Problem,
                &path,
                "unexpected entry in the blob pool",
            );
            continue;
        };
        let Some(actual) = optional(&path, |path| hash_file(path, b"", d.algorithm()))? else {
            continue; // gc removed it
        };
        r.blobs += 1;
        if actual != d {
            let why = format!("blob content hashes to {actual}, not to its name");
            r.add(Severity::Problem, &path, &why);
            if opts.repair {
                let to = quarantine(store, &path, &why)?;
                r.add(
                    Severity::Repaired,
                    &path,
                    format!("moved to {} (the next push uploads it again)", to.display()),
                );
                continue;
            }
        }
        present.insert(d);
    }
    Ok(present)
}

fn check_images(store: &Store, opts: &FsckOptions, r: &mut FsckReport) -> io::Result<()> {
    let p = store.paths();
    for (name, dir) in entries(&p.images_dir())? {
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(id) = ImageId::parse(&name) else {
            r.add(Severity::Problem, &dir, "unexpected entry among images");
            continue;
        };
        r.images += 1;
        let json_path = p.image_json(&id);
        let Some(json_raw) = read_optional(&json_path)? else {
            no_json_dir(store, opts, &id, &dir, r)?;
            continue;
        };
        let in_progress = exists(&p.image_inprogress(&id))?;
        if in_progress {
            r.add(
                Severity::Note,
                &dir,
                "image upload in progress (not visible to readers)",
            );
            continue;
        }
        if !check_published_image(store, &id, &json_raw, r)? && opts.repair {
            let to = quarantine(store, &dir, "layer content does not match its checksum")?;
            r.add(
                Severity::Repaired,
                &dir,
                format!(
                    "image whose layer does not match its checksum moved to {}",
                    to.display()
                ),
            );
        }
    }
    Ok(())
}

/// An image directory without json: a json PUT that never completed.
fn no_json_dir(
    store: &Store,
    opts: &FsckOptions,
    id: &ImageId,
    dir: &Path,
    r: &mut FsckReport,
) -> io::Result<()> {
    let Some(a) = dir_age(dir, &store.clock())? else {
        return Ok(());
    };
    if a < opts.grace {
        r.add(Severity::Note, dir, "image directory being created");
    } else if opts.repair {
        let p = store.paths();
        let lock = FileLock::exclusive_within(&p.image_lock(id), Duration::from_secs(5))?;
        if lock.is_some() && !exists(&p.image_json(id))? {
            fs::remove_dir_all(dir)?;
            super::atomic::sync_parent(dir)?;
            r.add(
                Severity::Repaired,
                dir,
                "image directory without json removed",
            );
        }
    } else {
        r.add(
            Severity::Leftover,
            dir,
            "image directory without json (an interrupted upload)",
        );
    }
    Ok(())
}

/// Checks a published V1 image; `Ok(false)` only when its layer does not
/// match its recorded payload checksum or blob digest (content not matching
/// its name: `--repair` quarantines the image).
fn check_published_image(
    store: &Store,
    id: &ImageId,
    json_raw: &[u8],
    r: &mut FsckReport,
) -> io::Result<bool> {
    let p = store.paths();
    let json_path = p.image_json(id);
    let json: Value = match serde_json::from_slice(json_raw) {
        Ok(v) => v,
        Err(e) => {
            r.add(
                Severity::Problem,
                &json_path,
                format!("json does not parse: {e}"),
            );
            return Ok(true);
        }
    };
    if json.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        r.add(
            Severity::Problem,
            &json_path,
            "json id does not match the image directory",
        );
    }
    let parent = match json_parent(&json) {
        Ok(parent) => parent,
        Err(e) => {
            r.add(Severity::Problem, &json_path, e);
            None
        }
    };
    let anc_path = p.image_ancestry(id);
    match read_ancestry(store, id)? {
        None => r.add(
            Severity::Problem,
            &anc_path,
            "ancestry missing or unparseable",
        ),
        Some(anc) => {
            if anc.first().map(String::as_str) != Some(id.as_str()) {
                r.add(
                    Severity::Problem,
                    &anc_path,
                    "ancestry does not start with the image",
                );
            }
            match &parent {
                None if anc.len() != 1 => r.add(
                    Severity::Problem,
                    &anc_path,
                    "ancestry lists parents but the json has none",
                ),
                None => {}
                Some(parent) => {
                    if anc.get(1).map(String::as_str) != Some(parent.as_str()) {
                        r.add(
                            Severity::Problem,
                            &anc_path,
                            format!("ancestry does not continue with the parent {parent}"),
                        );
                    } else if read_ancestry(store, parent)?.as_deref() != Some(&anc[1..]) {
                        r.add(
                            Severity::Problem,
                            &anc_path,
                            format!("ancestry disagrees with the parent {parent}'s"),
                        );
                    }
                }
            }
            for a in anc.iter().skip(1) {
                let published = match ImageId::parse(a) {
                    Ok(a) => exists(&p.image_json(&a))? && !exists(&p.image_inprogress(&a))?,
                    Err(_) => false,
                };
                if !published {
                    r.add(
                        Severity::Problem,
                        &anc_path,
                        format!("ancestor {a} is missing or not published"),
                    );
                }
            }
        }
    }
    let layer = p.image_layer(id);
    if !exists(&layer)? {
        r.add(Severity::Problem, &layer, "published image has no layer");
        return Ok(true);
    }
    let sums = store.stored_checksums(id)?;
    if sums.is_empty() {
        // Projected from a V2 push: the first V1 read records the checksum.
        return projected_layer_matches(store, id, &layer, r);
    }
    let mut prefix = json_raw.to_vec();
    prefix.push(b'\n');
    let Some(payload) = optional(&layer, |l| hash_file(l, &prefix, Algorithm::Sha256))? else {
        return Ok(true); // gc removed the image meanwhile
    };
    if !sums.iter().any(|s| s == payload.as_str()) {
        r.add(
            Severity::Problem,
            &p.image_checksum(id),
            format!("_checksum does not contain the payload checksum {payload}"),
        );
        return Ok(false);
    }
    Ok(true)
}

/// A V1 layer without `_checksum` (projected from a V2 push) against the
/// blob digest recorded for it: sharing its inode with that pool blob means
/// the pool check already hashed it; otherwise (the pool blob was
/// quarantined or never linked) it is hashed here. `Ok(false)` on mismatch.
fn projected_layer_matches(
    store: &Store,
    id: &ImageId,
    layer: &Path,
    r: &mut FsckReport,
) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let Some(info) = store.v1_layer_info(id)? else {
        return Ok(true);
    };
    let same_inode = |a: &fs::Metadata, b: &fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    if let (Some(l), Some(b)) = (
        metadata_followed(layer)?,
        metadata_followed(&store.paths().blob(&info.blob))?,
    ) {
        if same_inode(&l, &b) {
            return Ok(true);
        }
    }
    let Some(actual) = optional(layer, |l| hash_file(l, b"", info.blob.algorithm()))? else {
        return Ok(true); // gc removed the image meanwhile
    };
    if actual == info.blob {
        return Ok(true);
    }
    r.add(
        Severity::Problem,
        layer,
        format!(
            "layer content hashes to {actual}, not to its recorded blob {}",
            info.blob
        ),
    );
    Ok(false)
}

fn check_v1_tags(store: &Store, r: &mut FsckReport) -> io::Result<()> {
    let p = store.paths();
    for (_, _, path) in v1_tags(store)? {
        r.v1_tags += 1;
        match read_tag_file(&path)? {
            None if !exists(&path)? => {} // deleted meanwhile
            None => r.add(
                Severity::Problem,
                &path,
                "tag file does not hold an image id",
            ),
            Some(id) => {
                if !exists(&p.image_json(&id))? || exists(&p.image_inprogress(&id))? {
                    r.add(
                        Severity::Problem,
                        &path,
                        format!("tag names image {id}, which is not published"),
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_v2(
    store: &Store,
    opts: &FsckOptions,
    pool: &HashSet<Digest>,
    r: &mut FsckReport,
) -> io::Result<()> {
    let p = store.paths();
    let v2 = p.v2_dir();
    // A mirror fetches blobs and child manifests when first asked for them.
    let lazy = store.mirror_of()?.is_some();
    // Links first, so that what a repair removes shows in the tag checks.
    check_links(store, opts, pool, r)?;
    check_referrers(store, opts, r)?;
    for (repo, dir) in repos_with(&v2, Paths::V2_TAGS)? {
        for (name, path) in entries(&dir)? {
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let Ok(tag) = Tag::parse(&name) else {
                r.add(Severity::Problem, &path, "unexpected entry among V2 tags");
                continue;
            };
            r.v2_tags += 1;
            let rec = match store.v2_tag(&repo, &tag) {
                Ok(Some(rec)) => rec,
                Ok(None) => continue, // deleted meanwhile
                // The storage, not the record: the pass is retried.
                Err(e) if super::transient::is_transient_chain(&e) => return Err(e),
                Err(e) => {
                    r.add(Severity::Problem, &path, e.to_string());
                    continue;
                }
            };
            check_manifest(store, &rec.digest, &path, 0, lazy, r)?;
            if !lazy {
                check_tag_visibility(store, &repo, &path, &rec.digest, r)?;
            }
        }
    }
    Ok(())
}

/// Referrer records (`store::referrers`): each names a manifest that is
/// still linked in its repository, whose `subject` is the record's subject
/// and whose descriptor is what the record says. A record whose manifest is
/// no longer linked is a leftover (`--repair` removes it once older than the
/// grace; the referrers API already ignores it); any other mismatch is a
/// problem (re-pushing the referrer rewrites its record).
fn check_referrers(store: &Store, opts: &FsckOptions, r: &mut FsckReport) -> io::Result<()> {
    use super::referrers::{describe, subject_of, ReferrerDescriptor};
    for rec in referrer_records(store)? {
        let Some(raw) = read_optional(&rec.path)? else {
            continue; // deleted meanwhile
        };
        let desc: ReferrerDescriptor = match serde_json::from_slice(&raw) {
            Ok(d) => d,
            Err(e) => {
                r.add(
                    Severity::Problem,
                    &rec.path,
                    format!("unreadable referrer record: {e}"),
                );
                continue;
            }
        };
        if desc.digest != rec.referrer {
            r.add(
                Severity::Problem,
                &rec.path,
                format!(
                    "referrer record names {}, not the file's {}",
                    desc.digest, rec.referrer
                ),
            );
            continue;
        }
        let linked = store.manifest_in_repo(&rec.repo, &rec.referrer)?;
        let Some((media_type, bytes)) = linked else {
            let old = age(&rec.path, &store.clock())?.is_some_and(|a| a >= opts.grace);
            if opts.repair && old {
                remove_durable(&rec.path)?;
                r.add(
                    Severity::Repaired,
                    &rec.path,
                    "record of a referrer no longer in its repository removed",
                );
            } else if old {
                r.add(
                    Severity::Leftover,
                    &rec.path,
                    "record of a referrer no longer in its repository",
                );
            } else {
                r.add(
                    Severity::Note,
                    &rec.path,
                    "record of a referrer being pushed or deleted",
                );
            }
            continue;
        };
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        match subject_of(&value) {
            Ok(Some(s)) if s == rec.subject => {}
            _ => {
                r.add(
                    Severity::Problem,
                    &rec.path,
                    format!(
                        "manifest {} does not name subject {}",
                        rec.referrer, rec.subject
                    ),
                );
                continue;
            }
        }
        if describe(&value, &media_type, &rec.referrer, bytes.len() as u64) != desc {
            r.add(
                Severity::Problem,
                &rec.path,
                format!(
                    "referrer record of {} does not describe its manifest",
                    rec.referrer
                ),
            );
        }
    }
    Ok(())
}

/// Per-repository blob links: each points into the pool, says why it
/// exists, and was earned by the repository (`store::earned`, issue 14).
/// `--repair` removes links to missing blobs and unearned links, once
/// older than the grace.
fn check_links(
    store: &Store,
    opts: &FsckOptions,
    pool: &HashSet<Digest>,
    r: &mut FsckReport,
) -> io::Result<()> {
    let p = store.paths();
    let derived = earned::derived_manifests(store)?;
    for (repo, dir) in repos_with(&p.v2_dir(), Paths::V2_BLOB_LINKS)? {
        let mut links = Vec::new();
        for (name, path) in entries(&dir)? {
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let Some(d) = Paths::digest_of_key(&name) else {
                r.add(
                    Severity::Problem,
                    &path,
                    "unexpected entry among blob links",
                );
                continue;
            };
            let Some(raw) = read_optional(&path)? else {
                continue; // gc removed it
            };
            let record = LinkRecord::parse(&raw);
            if let LinkRecord::Corrupt(e) = &record {
                r.add(
                    Severity::Problem,
                    &path,
                    format!("link record does not parse: {e}"),
                );
            }
            if pool.contains(&d) || exists(&p.blob(&d))? {
                links.push(Link {
                    digest: d,
                    path,
                    record,
                });
                continue;
            }
            let old = age(&path, &store.clock())?.is_some_and(|a| a >= opts.grace);
            if opts.repair && old {
                remove_durable(&path)?;
                r.add(Severity::Repaired, &path, "link to a missing blob removed");
            } else {
                r.add(
                    Severity::Problem,
                    &path,
                    format!("repository links blob {d}, which is not in the pool"),
                );
            }
        }
        for u in earned::unearned(store, &links, &derived)? {
            let link = &links[u.link];
            let what = format!(
                "{} links blob {} only because manifest {} named it: no upload or mount \
                 brought it here (the manifest-PUT leak of issue 14)",
                repo.full(),
                link.digest,
                u.manifest
            );
            let old = age(&link.path, &store.clock())?.is_some_and(|a| a >= opts.grace);
            if opts.repair && old {
                remove_durable(&link.path)?;
                r.add(Severity::Repaired, &link.path, format!("{what}; removed"));
            } else {
                r.add(Severity::Problem, &link.path, what);
            }
        }
    }
    Ok(())
}

/// A V2 tag's manifest names only blobs (and child manifests) visible in
/// the tag's repository; otherwise a pull of the tag fails half-way (what
/// repairing unearned links leaves behind a manifest pushed through the
/// leak: re-push the image or delete the tag). Not on a mirror's store,
/// which links each blob when it is first asked for.
fn check_tag_visibility(
    store: &Store,
    repo: &RepoName,
    tag_path: &Path,
    digest: &Digest,
    r: &mut FsckReport,
) -> io::Result<()> {
    let Some((_, bytes)) = store.manifest(digest)? else {
        return Ok(()); // reported by check_manifest
    };
    for (d, _) in manifest_refs(&bytes) {
        if store.blob_size(&d)?.is_some() && !store.blob_in_repo(repo, &d)? {
            r.add(
                Severity::Problem,
                tag_path,
                format!(
                    "tag names manifest {digest}, whose blob {d} is not visible in {}: \
                     re-push the image or delete the tag",
                    repo.full()
                ),
            );
        }
    }
    Ok(())
}

/// A manifest (named by `from`) is stored and everything it names is
/// present — on a mirror's store (`lazy`), what it names may also be not
/// fetched yet, which is noted, not a problem.
fn check_manifest(
    store: &Store,
    digest: &Digest,
    from: &Path,
    depth: usize,
    lazy: bool,
    r: &mut FsckReport,
) -> io::Result<()> {
    let p = store.paths();
    let bytes = match store.manifest(digest) {
        Ok(Some((_, bytes))) => bytes,
        Ok(None) => {
            let what = if exists(&p.blob(digest))? {
                "its manifest record is missing"
            } else {
                "its blob is missing"
            };
            r.add(
                Severity::Problem,
                from,
                format!("names manifest {digest}, but {what}"),
            );
            return Ok(());
        }
        Err(e) => {
            r.add(Severity::Problem, &p.manifest_record(digest), e.to_string());
            return Ok(());
        }
    };
    if bytes.len() > super::MAX_MANIFEST {
        // No push can store one; gc refuses to collect while it is live.
        r.add(
            Severity::Problem,
            &p.blob(digest),
            format!(
                "manifest is {} bytes, larger than the {} the registry accepts; gc will not run while it is live",
                bytes.len(),
                super::MAX_MANIFEST
            ),
        );
    }
    if serde_json::from_slice::<Value>(&bytes).is_err() {
        r.add(
            Severity::Problem,
            &p.blob(digest),
            "manifest does not parse",
        );
        return Ok(());
    }
    for (d, child) in manifest_refs(&bytes) {
        let fetched = exists(&p.blob(&d))?;
        if lazy && !fetched {
            r.add(
                Severity::Note,
                &p.blob(digest),
                format!("manifest {digest} names {d}, not fetched from the upstream yet"),
            );
        } else if child && depth < MAX_INDEX_DEPTH {
            check_manifest(store, &d, &p.blob(digest), depth + 1, lazy, r)?;
        } else if !fetched {
            r.add(
                Severity::Problem,
                &p.blob(digest),
                format!("manifest {digest} names blob {d}, which is not in the pool"),
            );
        }
    }
    Ok(())
}

/// Manifest records and derived records point into the pool.
fn check_records(store: &Store, pool: &HashSet<Digest>, r: &mut FsckReport) -> io::Result<()> {
    let p = store.paths();
    let there = |d: &Digest| -> io::Result<bool> { Ok(pool.contains(d) || exists(&p.blob(d))?) };
    for (name, path) in entries(&p.manifest_records_dir())? {
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        match Paths::digest_of_key(&name) {
            None => r.add(
                Severity::Problem,
                &path,
                "unexpected entry among manifest records",
            ),
            Some(d) => {
                if !there(&d)? && exists(&path)? {
                    r.add(Severity::Problem, &path, "manifest record without its blob")
                }
            }
        }
    }
    for (name, path) in entries(&p.derived_dir())? {
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(id) = ImageId::parse(&name) else {
            r.add(
                Severity::Problem,
                &path,
                "unexpected entry among derived records",
            );
            continue;
        };
        match store.derived(&id) {
            Ok(Some(rec)) => {
                for d in [&rec.manifest, &rec.config] {
                    if !there(d)? {
                        r.add(
                            Severity::Problem,
                            &path,
                            format!("derived record names {d}, which is not in the pool"),
                        );
                    }
                }
            }
            Ok(None) => {}
            Err(e) => r.add(Severity::Problem, &path, e.to_string()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::publish_v1_image as v1_image;
    use std::time::SystemTime;

    fn opts(repair: bool) -> FsckOptions {
        FsckOptions {
            repair,
            deep: false,
            grace: Duration::ZERO,
        }
    }

    fn problems_about(r: &FsckReport, needle: &str) -> usize {
        r.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem && f.message.contains(needle))
            .count()
    }

    #[tokio::test]
    async fn clean_store_then_each_kind_of_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = ImageId::parse(&"a".repeat(64)).unwrap();
        let b = ImageId::parse(&"b".repeat(64)).unwrap();
        v1_image(&store, &a, None, b"base").await;
        v1_image(&store, &b, Some(&a), b"child").await;
        let repo = RepoName::parse("team/app").unwrap();
        store
            .put_tag(&repo, &Tag::parse("1").unwrap(), &b, b"{}")
            .unwrap();
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#;
        let cfg = store.put_small_blob(b"{}").unwrap();
        let m = String::from_utf8_lossy(m).replace(
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            cfg.as_str(),
        );
        let md = store
            .put_manifest(m.as_bytes(), super::super::media::OCI_MANIFEST)
            .unwrap();
        let rec = super::super::manifests::TagRecord {
            digest: md.clone(),
            v1: None,
        };
        store
            .set_v2_tag(&repo, &Tag::parse("v2").unwrap(), &rec)
            .unwrap();
        for d in [&cfg, &md] {
            store
                .link_blob_to_repo(&repo, d, &super::super::manifests::LinkVia::Manifest)
                .unwrap();
        }

        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(r.problems(), 0, "{:#?}", r.findings);
        assert_eq!((r.images, r.v1_tags, r.v2_tags), (2, 1, 1));

        // A corrupt pool blob, a broken checksum, a missing config blob.
        let p = store.paths().clone();
        fs::write(p.blob(&Digest::of_bytes(b"base")), b"BASE").unwrap();
        fs::write(p.image_checksum(&b), br#"["sha256:00"]"#).unwrap();
        fs::remove_file(p.blob(&cfg)).unwrap();
        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(problems_about(&r, "hashes to"), 1, "{:#?}", r.findings);
        // `a`'s layer shares the corrupted inode, so its checksum fails too.
        assert_eq!(
            problems_about(&r, "payload checksum"),
            2,
            "{:#?}",
            r.findings
        );
        assert_eq!(
            problems_about(&r, "not in the pool"),
            2,
            "{:#?}",
            r.findings
        );

        // A tag naming an unpublished image; an ancestry that lies.
        let c = ImageId::parse(&"c".repeat(64)).unwrap();
        store
            .put_image_json(&c, format!(r#"{{"id":"{c}"}}"#).as_bytes(), "test")
            .unwrap();
        fs::write(p.tag(&repo, &Tag::parse("2").unwrap()), c.as_str()).unwrap();
        fs::write(p.image_ancestry(&b), format!(r#"["{b}"]"#)).unwrap();
        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(problems_about(&r, "not published"), 1, "{:#?}", r.findings);
        assert_eq!(problems_about(&r, "ancestry lists"), 0);
        assert_eq!(problems_about(&r, "ancestry does not continue"), 1);
    }

    /// Issue 14: a store written before links said why, where evil/x got
    /// alice's layer by naming it in a manifest. fsck names the link,
    /// `--repair` removes it, and then the tag that used it is reported.
    #[test]
    fn unearned_legacy_links_are_reported_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cfg = store.put_small_blob(b"{}").unwrap();
        let layer = store.put_small_blob(b"alice's layer").unwrap();
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{cfg}"}},"layers":[{{"digest":"{layer}"}}]}}"#
        );
        let md = store
            .put_manifest(m.as_bytes(), super::super::media::OCI_MANIFEST)
            .unwrap();
        let evil = RepoName::parse("evil/x").unwrap();
        let p = store.paths().clone();
        // The old manifest PUT: the manifest's link, then those of what it named.
        let base = SystemTime::now() - Duration::from_secs(7200);
        for (i, d) in [&cfg, &md, &layer].into_iter().enumerate() {
            let link = p.v2_blob_link(&evil, d);
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            fs::write(&link, b"").unwrap();
            // cfg was uploaded by mallory herself, before the manifest.
            let at = base + Duration::from_secs(i as u64);
            fs::File::options()
                .write(true)
                .open(&link)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        let tag = Tag::parse("steal").unwrap();
        let rec = super::super::manifests::TagRecord {
            digest: md.clone(),
            v1: None,
        };
        store.set_v2_tag(&evil, &tag, &rec).unwrap();

        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(problems_about(&r, "issue 14"), 1, "{:#?}", r.findings);
        assert!(r
            .findings
            .iter()
            .any(|f| f.path == p.v2_blob_link(&evil, &layer)));
        let r = fsck(&store, &opts(true)).unwrap();
        assert_eq!(r.count(Severity::Repaired), 1, "{:#?}", r.findings);
        assert!(!p.v2_blob_link(&evil, &layer).exists());
        assert!(p.v2_blob_link(&evil, &cfg).exists() && p.v2_blob_link(&evil, &md).exists());
        assert!(
            store.blob_size(&layer).unwrap().is_some(),
            "the pool keeps alice's blob"
        );
        assert_eq!(
            problems_about(&r, "is not visible in evil/x"),
            1,
            "{:#?}",
            r.findings
        );
    }

    #[tokio::test]
    async fn repair_removes_only_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = ImageId::parse(&"a".repeat(64)).unwrap();
        v1_image(&store, &a, None, b"base").await;
        let p = store.paths().clone();
        let tmp = p.images_dir().join(a.as_str()).join(".tmp-layer-1");
        fs::write(&tmp, b"partial").unwrap();
        let empty = p.image_dir(&ImageId::parse(&"d".repeat(64)).unwrap());
        fs::create_dir_all(&empty).unwrap();
        fs::write(empty.join(".lock"), b"").unwrap();
        let link = p.v2_blob_link(&RepoName::parse("x").unwrap(), &Digest::of_bytes(b"gone"));
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        fs::write(&link, b"").unwrap();
        let session = store.start_upload().unwrap();

        // A generous grace protects everything young.
        let young = FsckOptions {
            repair: true,
            deep: false,
            grace: Duration::from_secs(3600),
        };
        let r = fsck(&store, &young).unwrap();
        assert_eq!(r.count(Severity::Repaired), 0, "{:#?}", r.findings);
        assert!(tmp.exists() && empty.exists());

        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(r.count(Severity::Leftover), 2, "{:#?}", r.findings);
        assert_eq!(r.problems(), 1, "the dangling link: {:#?}", r.findings);
        let r = fsck(&store, &opts(true)).unwrap();
        assert_eq!(r.count(Severity::Repaired), 3, "{:#?}", r.findings);
        assert_eq!(r.problems(), 0);
        assert!(!tmp.exists() && !empty.exists() && !link.exists());
        // The published image and the open session are untouched.
        assert!(store.image_json(&a).is_ok());
        assert_eq!(store.upload_offset(&session).unwrap(), Some(0));
        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(r.problems() + r.count(Severity::Leftover), 0);
    }

    /// Issue 15 attack: a pool blob (and a V1 layer) whose content does not
    /// match its name is answered as present by HEAD, so every later push
    /// skips it. `--repair` must move it out so the next push uploads it.
    #[tokio::test]
    async fn repair_quarantines_content_that_does_not_match_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = ImageId::parse(&"a".repeat(64)).unwrap();
        v1_image(&store, &a, None, b"v1 base layer").await;
        let d2 = store.put_small_blob(b"layer two").unwrap();
        let p = store.paths().clone();
        // Same length, other bytes: what a second writer left behind.
        fs::write(p.blob(&d2), b"LAYER TWO").unwrap();
        fs::write(p.image_layer(&a), b"V1 BASE LAYER").unwrap(); // shares the pool inode
        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(problems_about(&r, "hashes to"), 2, "{:#?}", r.findings);
        assert_eq!(
            problems_about(&r, "payload checksum"),
            1,
            "{:#?}",
            r.findings
        );
        assert!(
            store.blob_size(&d2).unwrap().is_some(),
            "without --repair nothing moves"
        );

        let r = fsck(&store, &opts(true)).unwrap();
        assert_eq!(r.count(Severity::Repaired), 3, "{:#?}", r.findings);
        assert_eq!(
            store.blob_size(&d2).unwrap(),
            None,
            "HEAD still answers the corrupt blob"
        );
        assert!(
            !p.image_json(&a).exists(),
            "the corrupt V1 image is still readable"
        );
        let held = fs::read_dir(dir.path().join("_berth/quarantine"))
            .unwrap()
            .count();
        assert_eq!(held, 3, "the bad objects are kept for inspection");

        // The next push uploads the blob again; the store is clean after.
        assert_eq!(store.put_small_blob(b"layer two").unwrap(), d2);
        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(r.problems(), 0, "{:#?}", r.findings);
        assert!(r.findings.iter().any(|f| f.message.contains("quarantined")));
    }

    /// sha512 objects are checked like sha256 ones: a consistent sha512
    /// image (pool blobs, links, manifest record, tag) is clean; a sha512
    /// blob whose bytes changed is hashed with sha512, reported and
    /// quarantined, and pushing it again makes the store clean.
    #[tokio::test]
    async fn sha512_blobs_are_verified_with_sha512_and_quarantined() {
        use super::super::manifests::{LinkVia, TagRecord};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("team/app").unwrap();
        let sha512 = Algorithm::Sha512;
        let cfg = store.put_small_blob_as(b"{}", sha512).unwrap();
        let layer = store.put_small_blob_as(b"sha512 layer", sha512).unwrap();
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{cfg}"}},"layers":[{{"digest":"{layer}"}}]}}"#
        );
        let md = store
            .put_manifest_as(m.as_bytes(), super::super::media::OCI_MANIFEST, sha512)
            .unwrap();
        assert_eq!(md.algorithm(), Algorithm::Sha512);
        for d in [&cfg, &layer] {
            store.link_blob_to_repo(&repo, d, &LinkVia::Upload).unwrap();
        }
        store
            .link_blob_to_repo(&repo, &md, &LinkVia::Manifest)
            .unwrap();
        let rec = TagRecord {
            digest: md.clone(),
            v1: None,
        };
        store
            .set_v2_tag(&repo, &Tag::parse("512").unwrap(), &rec)
            .unwrap();
        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(r.problems(), 0, "{:#?}", r.findings);
        assert_eq!(r.blobs, 3, "the sha512 pool was not walked");

        let p = store.paths().clone();
        fs::write(p.blob(&layer), b"SHA512 LAYER").unwrap();
        let r = fsck(&store, &opts(true)).unwrap();
        let want = format!(
            "blob content hashes to {}",
            sha512.digest_of(b"SHA512 LAYER")
        );
        assert_eq!(problems_about(&r, &want), 1, "{:#?}", r.findings);
        assert_eq!(store.blob_size(&layer).unwrap(), None, "not quarantined");
        assert_eq!(store.blob_size(&cfg).unwrap(), Some(2), "a good blob moved");

        // Re-pushed (uploaded and linked again: the repair dropped the
        // link to the missing blob, as for sha256).
        assert_eq!(
            store.put_small_blob_as(b"sha512 layer", sha512).unwrap(),
            layer
        );
        store
            .link_blob_to_repo(&repo, &layer, &LinkVia::Upload)
            .unwrap();
        let r = fsck(&store, &opts(false)).unwrap();
        assert_eq!(r.problems(), 0, "{:#?}", r.findings);
    }

    /// A V1 layer projected from a V2 push has no `_checksum`: when its pool
    /// blob is quarantined, the V1 image sharing those bytes goes too.
    #[tokio::test]
    async fn repair_quarantines_a_projected_v1_layer_with_its_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = ImageId::parse(&"a".repeat(64)).unwrap();
        v1_image(&store, &a, None, b"projected layer").await;
        let p = store.paths().clone();
        fs::remove_file(p.image_checksum(&a)).unwrap(); // as a projection leaves it
        let blob = Digest::of_bytes(b"projected layer");
        let info = super::super::manifests::LayerInfo {
            blob: blob.clone(),
            size: 15,
            diff_id: blob.clone(),
            media_type: super::super::media::DOCKER_LAYER_TAR.to_string(),
        };
        store.set_v1_layer_info(&a, &info).unwrap();
        assert_eq!(fsck(&store, &opts(false)).unwrap().problems(), 0);

        fs::write(p.blob(&blob), b"PROJECTED LAYER").unwrap(); // the shared inode
        let r = fsck(&store, &opts(true)).unwrap();
        assert_eq!(problems_about(&r, "hashes to"), 2, "{:#?}", r.findings);
        assert_eq!(r.count(Severity::Repaired), 2, "{:#?}", r.findings);
        assert!(
            !p.image_json(&a).exists(),
            "the V1 image still serves the bad bytes"
        );
        assert_eq!(store.blob_size(&blob).unwrap(), None);
    }
}
