//! The audit log: one JSON line per write or delete ("who pushed this tag?").
//!
//! Lines are appended to `<root>/_berth/audit.log` (or `--audit FILE`) with
//! `O_APPEND` in a single `write`, under an in-process mutex and an `fcntl`
//! lock so several servers on one shared store interleave whole lines. A
//! failure to log is reported in the server log and never fails the request.
//! The file is created with the store's file mode (0640, or 0660 in a
//! group-shared store; `store::atomic::Sharing`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::identity::Identity;
use crate::store::atomic::FileLock;

/// What happened, for one audit line.
#[derive(Debug, Default, Clone)]
pub struct AuditEvent {
    /// Operation (`image.publish`, `tag.put`, `manifest.put`, `tag.delete`, ...).
    pub op: &'static str,
    /// Repository (`ns/repo`) when the operation has one.
    pub repository: Option<String>,
    /// Tag, when the operation has one.
    pub tag: Option<String>,
    /// Content digest (V2 manifest or blob).
    pub digest: Option<String>,
    /// V1 image id.
    pub image: Option<String>,
}

impl AuditEvent {
    /// An event for operation `op`; add what it concerns with the setters.
    pub fn new(op: &'static str) -> AuditEvent {
        AuditEvent {
            op,
            ..Default::default()
        }
    }

    /// The repository (`ns/repo`).
    pub fn repository(mut self, repo: &crate::names::RepoName) -> AuditEvent {
        self.repository = Some(repo.full());
        self
    }

    /// The tag.
    pub fn tag(mut self, tag: &crate::names::Tag) -> AuditEvent {
        self.tag = Some(tag.to_string());
        self
    }

    /// The blob or manifest digest.
    pub fn digest(mut self, digest: &crate::names::Digest) -> AuditEvent {
        self.digest = Some(digest.to_string());
        self
    }

    /// The V1 image id.
    pub fn image(mut self, id: &crate::names::ImageId) -> AuditEvent {
        self.image = Some(id.to_string());
        self
    }
}

/// An append-only JSON-lines audit file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AuditLog {
    /// Audit lines go to `path` (created on first write).
    pub fn new(path: impl Into<PathBuf>) -> AuditLog {
        AuditLog {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event for `who` (blocking; call from the blocking pool).
    pub fn record(&self, who: &Identity, event: &AuditEvent) {
        let time = httpdate::fmt_http_date(SystemTime::now());
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let line = json!({
            "time": time,
            "unix": secs,
            "user": who.user,
            "key": who.key_fingerprint,
            "client": who.client,
            "op": event.op,
            "repository": event.repository,
            "tag": event.tag,
            "digest": event.digest,
            "image": event.image,
        });
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                crate::store::atomic::create_dirs(dir)?;
            }
            let _lock = FileLock::exclusive(&self.path.with_extension("log.lock"))?;
            let mut f = crate::store::atomic::open_append(&self.path)?;
            f.write_all(&bytes)?;
            f.sync_data()
        })();
        if let Err(e) = result {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write audit log");
        }
    }
}

/// Reads audit lines, keeping those matching `repo` and `user` when given.
/// `repo` matches `library/foo` for `foo`.
pub fn query(path: &Path, repo: Option<&str>, user: Option<&str>) -> std::io::Result<Vec<Value>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let want_repo = repo.map(|r| {
        crate::names::RepoName::parse(r)
            .map(|n| n.full())
            .unwrap_or_else(|_| r.to_string())
    });
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(r) = &want_repo {
            if v.get("repository").and_then(Value::as_str) != Some(r.as_str()) {
                continue;
            }
        }
        if let Some(u) = user {
            if v.get("user").and_then(Value::as_str) != Some(u) {
                continue;
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// How far back from the end of the log [`newest`] looks.
pub const NEWEST_SCAN_LIMIT: u64 = 16 << 20;

/// The newest `n` audit lines for which `keep` holds, newest first, found
/// by reading the file backwards from its end in 64 KiB blocks and
/// stopping once `n` are found or [`NEWEST_SCAN_LIMIT`] bytes were read:
/// the cost follows what is shown, not the length of the log, and memory
/// holds one block and `n` entries.
pub fn newest(path: &Path, n: usize, keep: impl Fn(&Value) -> bool) -> std::io::Result<Vec<Value>> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 64 << 10;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut pos = file.metadata()?.len();
    let mut scanned = 0u64;
    // The start of the block read last: the end of a line whose beginning
    // is in the block before it.
    let mut carry: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    while pos > 0 && out.len() < n && scanned < NEWEST_SCAN_LIMIT {
        let step = BLOCK.min(pos);
        pos -= step;
        scanned += step;
        let mut buf = vec![0u8; step as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf)?;
        buf.extend_from_slice(&carry);
        let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
        let partial = if pos > 0 {
            lines.remove(0).to_vec()
        } else {
            Vec::new()
        };
        for line in lines.iter().rev().filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if keep(&v) {
                out.push(v);
                if out.len() == n {
                    break;
                }
            }
        }
        carry = partial;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_queries() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("audit.log"));
        let who = Identity::local("alice");
        log.record(
            &who,
            &AuditEvent {
                op: "tag.put",
                repository: Some("library/foo".into()),
                tag: Some("1".into()),
                ..Default::default()
            },
        );
        log.record(
            &Identity::local("bob"),
            &AuditEvent {
                op: "tag.delete",
                repository: Some("team/x".into()),
                ..Default::default()
            },
        );
        let all = query(log.path(), None, None).unwrap();
        assert_eq!(all.len(), 2);
        let foo = query(log.path(), Some("foo"), None).unwrap();
        assert_eq!(foo.len(), 1);
        assert_eq!(foo[0]["user"], "alice");
        assert_eq!(
            query(log.path(), None, Some("bob")).unwrap()[0]["op"],
            "tag.delete"
        );
        let newest = newest(log.path(), 5, |v| v["user"] != "nobody").unwrap();
        assert_eq!(newest[0]["user"], "bob");
        assert_eq!(newest[1]["user"], "alice");
        let one = super::newest(log.path(), 1, |v| v["user"] == "alice").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0]["user"], "alice");
        // Across many 64 KiB blocks, lines cut by block edges included.
        for i in 0..1500 {
            let who = Identity::local(if i % 7 == 0 { "carol" } else { "dave" });
            log.record(&who, &AuditEvent::new("tag.put"));
        }
        let carol = super::newest(log.path(), 1000, |v| v["user"] == "carol").unwrap();
        assert_eq!(carol.len(), 215);
        let all = super::newest(log.path(), 10_000, |_| true).unwrap();
        assert_eq!(all.len(), 1502);
        assert_eq!(all[1501]["user"], "alice");
    }
}
