//! The referrers index (distribution-spec v1.1, "Listing Referrers"):
//! which manifests pushed into a repository name a given `subject`.
//!
//! A manifest or index pushed with a `subject` gets one record,
//! `_berth/v2/<repo>/_referrers/<subject>/<referrer>`, holding the
//! descriptor the referrers index lists for it (media type, size, digest,
//! `artifactType` — or the config's media type for an image manifest — and
//! the manifest's annotations). The subject need not exist: signatures may
//! arrive before the image they sign. Records are per repository, like every
//! link, so a referrer is listed only where it was pushed.
//!
//! A record is an index, not the truth: a referrer is listed only while its
//! manifest is still linked in the repository, so a crash between a DELETE's
//! steps never shows a deleted referrer. `gc` keeps the referrers of a live
//! subject and sweeps records whose referrer it collected; `fsck` checks each
//! record against the manifest it names.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::atomic::{remove_durable, write_atomic, TEMP_PREFIX};
use super::{read_optional, Store};
use crate::names::digest_text as text;
use crate::names::{Digest, RepoName};

/// One entry of a referrers index: the descriptor of a manifest that names
/// a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferrerDescriptor {
    /// The referrer's manifest media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The referrer manifest's digest.
    #[serde(with = "text")]
    pub digest: Digest,
    /// Size of the referrer manifest in bytes.
    pub size: u64,
    /// `artifactType` of the manifest, else its config's media type (images).
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// The manifest's annotations, copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
}

/// Why a manifest's `subject` field cannot be accepted.
#[derive(Debug, thiserror::Error)]
#[error("invalid subject: {0}")]
pub struct SubjectError(String);

/// The digest a manifest's `subject` names, if it has one.
pub fn subject_of(manifest: &Value) -> Result<Option<Digest>, SubjectError> {
    let Some(subject) = manifest.get("subject") else {
        return Ok(None);
    };
    if subject.is_null() {
        return Ok(None);
    }
    let digest = subject
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| SubjectError("subject is not a descriptor with a digest".into()))?;
    Digest::parse(digest)
        .map(Some)
        .map_err(|e| SubjectError(e.to_string()))
}

/// The descriptor the referrers index lists for a pushed manifest.
pub fn describe(
    manifest: &Value,
    media_type: &str,
    digest: &Digest,
    size: u64,
) -> ReferrerDescriptor {
    let text_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let artifact_type = text_of(manifest.get("artifactType"))
        .filter(|t| !t.is_empty())
        .or_else(|| text_of(manifest.get("config").and_then(|c| c.get("mediaType"))));
    ReferrerDescriptor {
        media_type: media_type.to_string(),
        digest: digest.clone(),
        size,
        artifact_type,
        annotations: manifest
            .get("annotations")
            .and_then(Value::as_object)
            .filter(|a| !a.is_empty())
            .cloned(),
    }
}

impl Store {
    /// Records `referrer` (pushed into `repo`, already linked there) as a
    /// referrer of `subject`. Re-recording the same manifest is a no-op in
    /// effect (its descriptor is a function of its bytes).
    pub fn record_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &ReferrerDescriptor,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec(referrer).map_err(io::Error::other)?;
        write_atomic(
            &self.paths().v2_referrer(repo, subject, &referrer.digest),
            &bytes,
        )
    }

    /// Removes the record of `referrer` under `subject`; whether there was one.
    pub fn drop_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> io::Result<bool> {
        remove_durable(&self.paths().v2_referrer(repo, subject, referrer))
    }

    /// One page of the referrers of `subject` in `repo`, in digest order:
    /// those after `after` whose manifests are still linked there and whose
    /// artifactType is `filter` (if given), at most `max_entries` and, past
    /// the first, at most `max_bytes` of records. Records are read one at a
    /// time, so memory stays bounded however many there are or however large
    /// their annotations. Returns the page and whether more follow. A record
    /// that cannot be read is skipped with a warning (`fsck` reports it).
    pub fn referrers_page(
        &self,
        repo: &RepoName,
        subject: &Digest,
        page: &ReferrersPage<'_>,
    ) -> io::Result<(Vec<ReferrerDescriptor>, bool)> {
        let dir = self.paths().v2_referrers_dir(repo, subject);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], false)),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(TEMP_PREFIX) {
                names.push((entry.path(), name));
            }
        }
        let mut candidates: Vec<(Digest, std::path::PathBuf)> = Vec::new();
        for (path, name) in names {
            // The file name is the referrer's digest; its record says so too.
            let Some(raw) = read_optional(&path)? else {
                continue; // deleted while listing
            };
            let desc: ReferrerDescriptor = match serde_json::from_slice(&raw) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(repository = %repo, %subject, record = %name, error = %e, "unreadable referrer record skipped");
                    continue;
                }
            };
            if page
                .after
                .is_some_and(|a| desc.digest.as_str() <= a.as_str())
            {
                continue;
            }
            if page
                .artifact_type
                .is_some_and(|t| desc.artifact_type.as_deref() != Some(t))
            {
                continue;
            }
            candidates.push((desc.digest, path));
        }
        candidates.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (i, (digest, path)) in candidates.iter().enumerate() {
            if !self.blob_in_repo(repo, digest)? {
                continue;
            }
            let Some(raw) = read_optional(path)? else {
                continue;
            };
            let Ok(desc) = serde_json::from_slice::<ReferrerDescriptor>(&raw) else {
                continue;
            };
            if out.len() == page.max_entries
                || (!out.is_empty() && bytes + raw.len() > page.max_bytes)
            {
                let more = candidates[i..]
                    .iter()
                    .any(|(d, _)| self.blob_in_repo(repo, d).unwrap_or(true));
                return Ok((out, more));
            }
            bytes += raw.len();
            out.push(desc);
        }
        Ok((out, false))
    }

    /// Every referrer of `subject` in `repo` still linked there, in digest
    /// order (for tests and tools; the API pages with [`Store::referrers_page`]).
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> io::Result<Vec<ReferrerDescriptor>> {
        let all = ReferrersPage {
            after: None,
            artifact_type: None,
            max_entries: usize::MAX,
            max_bytes: usize::MAX,
        };
        Ok(self.referrers_page(repo, subject, &all)?.0)
    }
}

/// Which page of a referrers list to read ([`Store::referrers_page`]).
#[derive(Debug, Clone)]
pub struct ReferrersPage<'a> {
    /// Start after this digest (the previous page's last).
    pub after: Option<&'a Digest>,
    /// Only referrers with this artifactType.
    pub artifact_type: Option<&'a str>,
    /// At most this many entries.
    pub max_entries: usize,
    /// At most this many bytes of records, past the first entry.
    pub max_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifests::LinkVia;
    use crate::store::media;
    use serde_json::json;

    #[test]
    fn subjects_and_descriptors() {
        assert!(subject_of(&json!({"schemaVersion": 2})).unwrap().is_none());
        assert!(subject_of(&json!({"subject": {"size": 3}})).is_err());
        assert!(subject_of(&json!({"subject": {"digest": "sha256:zz"}})).is_err());
        let s = Digest::of_bytes(b"s");
        let m = json!({
            "subject": {"digest": s.as_str(), "size": 1, "mediaType": media::OCI_MANIFEST},
            "config": {"mediaType": "application/vnd.example.sig", "digest": s.as_str(), "size": 1},
            "annotations": {"a": "b"},
        });
        assert_eq!(subject_of(&m).unwrap(), Some(s.clone()));
        let d = describe(&m, media::OCI_MANIFEST, &s, 7);
        assert_eq!(
            d.artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
        assert_eq!(d.annotations.unwrap()["a"], "b");
        // artifactType wins over the config's media type; empty annotations are left out.
        let m = json!({"artifactType": "x/y", "config": {"mediaType": "c/d"}, "annotations": {}});
        let d = describe(&m, media::OCI_MANIFEST, &s, 7);
        assert_eq!(d.artifact_type.as_deref(), Some("x/y"));
        assert!(d.annotations.is_none());
    }

    #[test]
    fn listed_only_while_linked_in_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("team/app").unwrap();
        let other = RepoName::parse("team/other").unwrap();
        let subject = Digest::of_bytes(b"not pushed yet");
        let body = br#"{"schemaVersion":2,"artifactType":"a/b"}"#;
        let d = store.put_manifest(body, media::OCI_MANIFEST).unwrap();
        let desc = describe(
            &serde_json::from_slice(body).unwrap(),
            media::OCI_MANIFEST,
            &d,
            body.len() as u64,
        );
        store.record_referrer(&repo, &subject, &desc).unwrap();
        // Recorded but not linked: not listed.
        assert!(store.referrers(&repo, &subject).unwrap().is_empty());
        store
            .link_blob_to_repo(&repo, &d, &LinkVia::Manifest)
            .unwrap();
        assert_eq!(store.referrers(&repo, &subject).unwrap(), vec![desc]);
        assert!(store.referrers(&other, &subject).unwrap().is_empty());
        assert!(store.drop_referrer(&repo, &subject, &d).unwrap());
        assert!(store.referrers(&repo, &subject).unwrap().is_empty());
        assert!(!store.drop_referrer(&repo, &subject, &d).unwrap());
    }

    #[test]
    fn pages_are_bounded_by_count_and_bytes_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = RepoName::parse("team/app").unwrap();
        let subject = Digest::of_bytes(b"subject");
        let mut all = Vec::new();
        for i in 0..5 {
            let kind = if i % 2 == 0 { "sig" } else { "sbom" };
            let note = "n".repeat(if i == 2 { 10_000 } else { 10 });
            let body = serde_json::to_vec(&json!({
                "schemaVersion": 2, "artifactType": kind, "annotations": {"i": i, "note": note},
            }))
            .unwrap();
            let d = store.put_manifest(&body, media::OCI_MANIFEST).unwrap();
            store
                .link_blob_to_repo(&repo, &d, &LinkVia::Manifest)
                .unwrap();
            let desc = describe(
                &serde_json::from_slice(&body).unwrap(),
                media::OCI_MANIFEST,
                &d,
                body.len() as u64,
            );
            store.record_referrer(&repo, &subject, &desc).unwrap();
            all.push(desc);
        }
        all.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
        let page = |after: Option<&Digest>, t: Option<&str>, n: usize, bytes: usize| {
            store
                .referrers_page(
                    &repo,
                    &subject,
                    &ReferrersPage {
                        after,
                        artifact_type: t,
                        max_entries: n,
                        max_bytes: bytes,
                    },
                )
                .unwrap()
        };
        // Count: pages of two chain to the end.
        let (p1, more) = page(None, None, 2, usize::MAX);
        assert_eq!((p1.as_slice(), more), (&all[..2], true));
        let (p2, more) = page(Some(&p1[1].digest), None, 2, usize::MAX);
        assert_eq!((p2.as_slice(), more), (&all[2..4], true));
        let (p3, more) = page(Some(&p2[1].digest), None, 2, usize::MAX);
        assert_eq!((p3.as_slice(), more), (&all[4..], false));
        // Bytes: the large record never shares a page beyond its first entry,
        // and a page always holds at least one entry.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (p, more) = page(after.as_ref(), None, 100, 1000);
            assert!(!p.is_empty());
            let is_big = |d: &ReferrerDescriptor| {
                d.annotations.as_ref().unwrap()["note"]
                    .as_str()
                    .unwrap()
                    .len()
                    > 1000
            };
            if p.iter().any(is_big) {
                assert_eq!(p.len(), 1, "the 10 kB record shares a 1 kB page");
            }
            after = p.last().map(|d| d.digest.clone());
            seen.extend(p);
            if !more {
                break;
            }
        }
        assert_eq!(seen, all);
        // Filter.
        let (sigs, _) = page(None, Some("sig"), 100, usize::MAX);
        assert_eq!(sigs.len(), 3);
        assert!(sigs
            .iter()
            .all(|d| d.artifact_type.as_deref() == Some("sig")));
    }
}
