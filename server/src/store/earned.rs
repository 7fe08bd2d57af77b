//! Which per-repository blob links a repository never earned (issue 14).
//!
//! Until links recorded why they exist ([`LinkVia`]), a manifest PUT linked
//! every blob the manifest named into the repository, whether or not the
//! repository held it: naming another namespace's digests was enough to
//! read its blobs. Links written since say why; a legacy (empty) link is
//! judged by when it appeared, because the leak always wrote the manifest's
//! own link first and the links of the blobs it named right after it:
//!
//! * a legacy link to blob B is **unearned** when a legacy link of a
//!   manifest M naming B in the same repository is older than B's link (B
//!   appeared after M: only M's PUT can have made it), or exactly as old
//!   (same timestamp tick) while B's pool file did not change at that tick
//!   either (a real upload of B right before M would have changed it);
//! * links from manifests derived from a V1 tag are earned (that tag is in
//!   the repository), and so is everything written with a [`LinkVia`].
//!
//! What the store cannot tell is kept: a legacy link no manifest explains
//! came from an upload or a mount. This module only judges; `fsck` reports
//! and, with `--repair`, removes.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::manifests::{LinkRecord, LinkVia};
use super::walk::{entries, manifest_refs, metadata};
use super::Store;
use crate::names::{Digest, ImageId};

/// One link file of a repository.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// The blob it makes visible.
    pub digest: Digest,
    /// The link file.
    pub path: PathBuf,
    /// What it says.
    pub record: LinkRecord,
}

/// A link that only the manifest-PUT leak explains.
#[derive(Debug, Clone)]
pub(crate) struct Unearned {
    /// Index into the links passed to [`unearned`].
    pub link: usize,
    /// The manifest whose PUT made it.
    pub manifest: Digest,
}

/// Manifest digests generated for V1 images (`_berth/derived/*`).
pub(crate) fn derived_manifests(store: &Store) -> io::Result<HashSet<Digest>> {
    let mut out = HashSet::new();
    for (name, _) in entries(&store.paths().derived_dir())? {
        let Ok(id) = ImageId::parse(&name) else {
            continue;
        };
        // Unreadable is an error: a derived manifest left out would make
        // the links it explains look unearned, and `--repair` remove them.
        if let Some(rec) = store.derived(&id)? {
            out.insert(rec.manifest);
        }
    }
    Ok(out)
}

/// (seconds, nanoseconds) of a timestamp, comparable at full precision.
type Stamp = (i64, i64);

fn mtime(m: &fs::Metadata) -> Stamp {
    (m.mtime(), m.mtime_nsec())
}

fn ctime(m: &fs::Metadata) -> Stamp {
    (m.ctime(), m.ctime_nsec())
}

/// The legacy links of one repository that the leak made (module doc).
pub(crate) fn unearned(
    store: &Store,
    links: &[Link],
    derived: &HashSet<Digest>,
) -> io::Result<Vec<Unearned>> {
    let mut legacy: HashMap<&Digest, (usize, Stamp)> = HashMap::new();
    for (i, l) in links.iter().enumerate() {
        if l.record == LinkRecord::Legacy {
            if let Some(m) = metadata(&l.path)? {
                legacy.insert(&l.digest, (i, mtime(&m)));
            }
        }
    }
    // Blobs some manifest derived from a V1 tag names: earned whatever else.
    let mut via_derived = HashSet::new();
    let mut found: HashMap<usize, Digest> = HashMap::new();
    for l in links {
        let Some((_, bytes)) = store.manifest(&l.digest)? else {
            continue;
        };
        let refs = manifest_refs(&bytes);
        let is_derived = derived.contains(&l.digest)
            || matches!(l.record, LinkRecord::Via(LinkVia::Derived { .. }));
        if is_derived {
            via_derived.extend(refs.into_iter().map(|(d, _)| d));
            continue;
        }
        let Some(&(_, m_time)) = legacy.get(&l.digest) else {
            continue; // linked since links say why: it linked nothing else
        };
        for (d, _) in refs {
            let Some(&(i, b_time)) = legacy.get(&d) else {
                continue;
            };
            let leaked =
                b_time > m_time || (b_time == m_time && !pool_changed_at(store, &d, m_time)?);
            if leaked && d != l.digest {
                found.entry(i).or_insert_with(|| l.digest.clone());
            }
        }
    }
    let mut out: Vec<Unearned> = found
        .into_iter()
        .filter(|(i, _)| !via_derived.contains(&links[*i].digest))
        .map(|(link, manifest)| Unearned { link, manifest })
        .collect();
    out.sort_by_key(|u| u.link);
    Ok(out)
}

/// Whether the pool file of `digest` changed (was created or hard-linked,
/// as closing an upload does) no earlier than `at`.
fn pool_changed_at(store: &Store, digest: &Digest, at: Stamp) -> io::Result<bool> {
    Ok(metadata(&store.paths().blob(digest))?.is_some_and(|m| ctime(&m) >= at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::RepoName;
    use crate::store::media;
    use std::time::{Duration, SystemTime};

    /// Sets a file's mtime to `base + secs`.
    fn stamp(path: &std::path::Path, base: SystemTime, secs: u64) {
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(base + Duration::from_secs(secs)).unwrap();
    }

    fn links_of(store: &Store, repo: &RepoName) -> Vec<Link> {
        let dir = store.paths().v2_blob_links_dir(repo);
        entries(&dir)
            .unwrap()
            .into_iter()
            .map(|(name, path)| Link {
                digest: Digest::parse(&format!("sha256:{name}")).unwrap(),
                record: LinkRecord::parse(&fs::read(&path).unwrap()),
                path,
            })
            .collect()
    }

    /// A legacy (empty) link file, as versions before issue 14 wrote them.
    fn legacy_link(store: &Store, repo: &RepoName, d: &Digest) {
        let p = store.paths().v2_blob_link(repo, d);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"").unwrap();
    }

    #[test]
    fn legacy_links_made_after_their_manifest_are_unearned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (cfg, layer, own) = (
            store.put_small_blob(b"{}").unwrap(),
            store.put_small_blob(b"alice's layer").unwrap(),
            store.put_small_blob(b"an uploaded layer").unwrap(),
        );
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{cfg}"}},"layers":[{{"digest":"{layer}"}},{{"digest":"{own}"}}]}}"#
        );
        let md = store
            .put_manifest(m.as_bytes(), media::OCI_MANIFEST)
            .unwrap();
        let repo = RepoName::parse("evil/x").unwrap();
        for d in [&cfg, &layer, &own, &md] {
            legacy_link(&store, &repo, d);
        }
        // `own` was uploaded before the manifest; cfg and layer appeared a
        // second after it (the leak linked them).
        let base = SystemTime::now() - Duration::from_secs(3600);
        let p = store.paths();
        stamp(&p.v2_blob_link(&repo, &own), base, 0);
        stamp(&p.v2_blob_link(&repo, &md), base, 1);
        stamp(&p.v2_blob_link(&repo, &cfg), base, 2);
        stamp(&p.v2_blob_link(&repo, &layer), base, 2);
        let links = links_of(&store, &repo);
        let found = unearned(&store, &links, &HashSet::new()).unwrap();
        let mut got: Vec<&Digest> = found.iter().map(|u| &links[u.link].digest).collect();
        got.sort();
        let mut want = vec![&cfg, &layer];
        want.sort();
        assert_eq!(got, want);
        assert!(found.iter().all(|u| u.manifest == md));

        // The same links from a manifest derived from a V1 tag are earned.
        let derived = HashSet::from([md.clone()]);
        assert!(unearned(&store, &links, &derived).unwrap().is_empty());

        // Same tick as the manifest: earned when the pool file changed at
        // or after that tick (an upload closed right before the PUT; here
        // the pool files are younger than the links), unearned when the
        // pool file is older (here the links are stamped in the future).
        for d in [&cfg, &layer] {
            stamp(&p.v2_blob_link(&repo, d), base, 1);
        }
        let links = links_of(&store, &repo);
        let found = unearned(&store, &links, &HashSet::new()).unwrap();
        assert_eq!(found.len(), 0, "pool files changed after: {found:?}");
        let later = SystemTime::now() + Duration::from_secs(3600);
        for d in [&md, &cfg, &layer] {
            stamp(&p.v2_blob_link(&repo, d), later, 0);
        }
        stamp(&p.v2_blob_link(&repo, &own), base, 0);
        let links = links_of(&store, &repo);
        let found = unearned(&store, &links, &HashSet::new()).unwrap();
        assert_eq!(found.len(), 2, "pool files older than the tick: {found:?}");

        // Links that say why are never judged.
        let repo2 = RepoName::parse("private/app").unwrap();
        store
            .link_blob_to_repo(&repo2, &md, &LinkVia::Manifest)
            .unwrap();
        store
            .link_blob_to_repo(&repo2, &layer, &LinkVia::Upload)
            .unwrap();
        let links = links_of(&store, &repo2);
        assert!(unearned(&store, &links, &HashSet::new())
            .unwrap()
            .is_empty());
    }
}
