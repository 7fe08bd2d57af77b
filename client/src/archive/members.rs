//! One pass over an input archive: every member is checked and made
//! readable again later, whatever order the archive has.
//!
//! `docker save` writes `manifest.json`/`index.json` after the blobs, so a
//! pipe cannot be pushed while it is read. What this module does about it
//! depends on what the input allows (`v2-compat.md` §3.3, "spool members"):
//!
//! * a regular file holding a plain tar: nothing is copied, and member data
//!   is not even read (the pass seeks from header to header); each member is
//!   remembered as an (offset, size) range of the input file;
//! * a pipe, or a gzip/zstd-compressed outer tar: each regular member is
//!   spooled to its own file in a private temporary directory (removed when
//!   the [`Members`] value is dropped).
//!
//! The pass only sniffs each member's compression from its first bytes. It
//! does not hash: blob digests and diff_ids are checked while the blobs are
//! read for the upload (`verify.rs`, issue 9), except for the few members
//! whose digests must be known up front ([`Members::hashes`]).
//!
//! Security (the refusals of issue #5): absolute member paths, `..`
//! components, symlinks or hard links resolving outside the archive,
//! device/fifo/sparse members and truncated members are errors. Nothing
//! here interprets the format; see `formats.rs`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use super::error::ArchiveError;
use super::hashing::{read_chunk, Digester, Hashes, CHUNK};
use super::types::Compression;

/// Largest metadata member (manifest.json, index.json, configs) read into memory.
pub const METADATA_LIMIT: u64 = 64 << 20;
/// Link hops followed before a chain is declared a loop.
const MAX_LINK_HOPS: usize = 16;
/// Read size of the pass.
/// Bytes sniffed at the start of each member for its compression.
const HEAD: u64 = 6;

/// Where the archive comes from.
#[derive(Debug, Clone)]
pub enum Input {
    /// Standard input (a pipe from `docker save`).
    Stdin,
    /// A file on disk.
    File(PathBuf),
}

impl Input {
    /// `-` means stdin, anything else a path.
    pub fn from_arg(arg: Option<&Path>) -> Input {
        match arg {
            Some(p) if p.as_os_str() != "-" => Input::File(p.to_path_buf()),
            _ => Input::Stdin,
        }
    }

    /// Name used in messages.
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "stdin".to_string(),
            Input::File(p) => p.display().to_string(),
        }
    }
}

/// Where a member's bytes can be read again.
#[derive(Debug, Clone)]
enum Source {
    /// A spooled copy.
    Spooled(PathBuf),
    /// A range of the (plain tar) input file.
    Range(u64),
}

/// One regular file of the archive.
#[derive(Debug, Clone)]
pub struct Member {
    /// The normalized member path.
    pub path: String,
    source: Source,
    /// Byte length.
    pub size: u64,
    /// Compression sniffed from the first bytes.
    pub compression: Compression,
}

/// A member path: a file, or a link to another member path.
#[derive(Debug, Clone)]
enum Entry {
    File(Member),
    /// A symlink or hard link, target already resolved to a normalized
    /// archive path (checked to stay inside the archive).
    Link(String),
}

/// Every member of one archive, readable in any order.
#[derive(Debug)]
pub struct Members {
    input: String,
    /// The input file for [`Source::Range`] members.
    file: Option<PathBuf>,
    entries: HashMap<String, Entry>,
    /// Digests computed by [`Members::hashes`], by member path.
    hashed: Mutex<HashMap<String, Hashes>>,
    /// Spool directory, removed on drop.
    _spool: Option<tempfile::TempDir>,
}

/// What the pass keeps of each regular member's bytes.
#[derive(Clone, Copy)]
enum Keep<'a> {
    /// A copy in this spool directory (pipes, compressed archives).
    Spool(&'a Path),
    /// Nothing: the member is a range of the input file, this long.
    InPlace(u64),
}

impl Members {
    /// Reads the whole input once (blocking: run it off the async runtime).
    pub fn read(input: &Input) -> Result<Members, ArchiveError> {
        let name = input.name();
        let (raw, regular_file): (Box<dyn Read>, Option<PathBuf>) = match input {
            Input::Stdin => (Box::new(io::stdin().lock()), None),
            Input::File(p) => {
                let f =
                    File::open(p).map_err(|e| ArchiveError::io(format!("opening {name}"), e))?;
                let meta = f
                    .metadata()
                    .map_err(|e| ArchiveError::io(format!("reading {name}"), e))?;
                let regular = meta.is_file().then(|| p.clone());
                (Box::new(f), regular)
            }
        };
        Self::read_from(raw, &name, regular_file)
    }

    /// Reads an archive from any reader. `seekable` is the path of `raw`
    /// when it is a regular file read from its start (members of a plain tar
    /// are then not copied).
    pub fn read_from(
        mut raw: Box<dyn Read>,
        input: &str,
        seekable: Option<PathBuf>,
    ) -> Result<Members, ArchiveError> {
        let mut head = Vec::with_capacity(6);
        (&mut raw)
            .take(6)
            .read_to_end(&mut head)
            .map_err(|e| ArchiveError::io(format!("reading {input}"), e))?;
        if head.is_empty() {
            return Err(ArchiveError::NotAnArchive {
                input: input.to_string(),
                detail: "the input is empty".to_string(),
            });
        }
        let outer = Compression::sniff(&head);
        if let (Compression::None, Some(path)) = (outer, &seekable) {
            // A plain tar in a regular file: seek from header to header.
            drop(raw);
            let what = |e| ArchiveError::io(format!("reading {input}"), e);
            let file = File::open(path).map_err(what)?;
            let len = file.metadata().map_err(what)?.len();
            let mut members = Members::new(input, seekable.clone());
            let mut archive = tar::Archive::new(file);
            let entries = archive
                .entries_with_seek()
                .map_err(|e| classify(input, e))?;
            members.scan(entries, Keep::InPlace(len))?;
            return Ok(members);
        }
        let chained = io::Cursor::new(head).chain(raw);
        let reader: Box<dyn Read> = match outer {
            Compression::None => Box::new(chained),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(chained)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(chained)
                    .map_err(|e| ArchiveError::io(format!("reading {input}"), e))?,
            ),
            Compression::Other(kind) => {
                return Err(ArchiveError::NotAnArchive {
                    input: input.to_string(),
                    detail: format!("{kind}-compressed archives are not supported; decompress it first (gzip and zstd are read directly)"),
                })
            }
        };
        let spool = tempfile::Builder::new()
            .prefix("berth-push-")
            .tempdir()
            .map_err(|e| ArchiveError::io("creating a spool directory", e))?;
        let mut members = Members::new(input, None);
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| classify(input, e))?;
        members.scan(entries, Keep::Spool(spool.path()))?;
        members._spool = Some(spool);
        Ok(members)
    }

    fn new(input: &str, file: Option<PathBuf>) -> Members {
        Members {
            input: input.to_string(),
            file,
            entries: HashMap::new(),
            hashed: Mutex::new(HashMap::new()),
            _spool: None,
        }
    }

    fn scan<R: Read>(
        &mut self,
        entries: tar::Entries<'_, R>,
        keep: Keep<'_>,
    ) -> Result<(), ArchiveError> {
        let input = self.input.clone();
        let bad = |e: io::Error| classify(&input, e);
        let mut buf = vec![0u8; CHUNK];
        let mut count = 0usize;
        for entry in entries {
            let mut entry = entry.map_err(bad)?;
            count += 1;
            let raw_path = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw_path).into_owned();
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() {
                continue;
            }
            let path = normalize(&input, &shown, &raw_path)?;
            if path.is_empty() {
                continue;
            }
            match kind {
                tar::EntryType::Directory => {}
                tar::EntryType::Symlink => {
                    let target = link_target(&input, &shown, &entry)?;
                    let resolved = resolve_symlink(&input, &path, &target)?;
                    self.entries.insert(path, Entry::Link(resolved));
                }
                tar::EntryType::Link => {
                    let target = link_target(&input, &shown, &entry)?;
                    let resolved = normalize(&input, &target, target.as_bytes())?;
                    if resolved.is_empty() {
                        return Err(unsafe_path(&input, &shown, "hard link to the archive root"));
                    }
                    self.entries.insert(path, Entry::Link(resolved));
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.header().size().map_err(bad)?;
                    let truncated = |read: u64| ArchiveError::Truncated {
                        input: input.clone(),
                        detail: format!("member {shown:?} has {read} of its {size} bytes"),
                    };
                    let mut head = Vec::with_capacity(HEAD as usize);
                    let source = match keep {
                        Keep::InPlace(len) => {
                            let offset = entry.raw_file_position();
                            if offset.checked_add(size).is_none_or(|end| end > len) {
                                return Err(truncated(len.saturating_sub(offset).min(size)));
                            }
                            (&mut entry)
                                .take(HEAD)
                                .read_to_end(&mut head)
                                .map_err(bad)?;
                            Source::Range(offset)
                        }
                        Keep::Spool(dir) => {
                            let p = dir.join(count.to_string());
                            let f = File::create(&p)
                                .map_err(|e| ArchiveError::io("writing the spool", e))?;
                            let mut w = BufWriter::with_capacity(CHUNK, f);
                            let mut read = 0u64;
                            loop {
                                let n = entry.read(&mut buf).map_err(bad)?;
                                if n == 0 {
                                    break;
                                }
                                let data = buf.get(..n).unwrap_or_default();
                                if head.len() < HEAD as usize {
                                    let want = (HEAD as usize - head.len()).min(n);
                                    head.extend_from_slice(data.get(..want).unwrap_or_default());
                                }
                                read += n as u64;
                                w.write_all(data)
                                    .map_err(|e| ArchiveError::io("writing the spool", e))?;
                            }
                            if read != size {
                                return Err(truncated(read));
                            }
                            w.into_inner().map_err(|e| {
                                ArchiveError::io("writing the spool", e.into_error())
                            })?;
                            Source::Spooled(p)
                        }
                    };
                    self.entries.insert(
                        path.clone(),
                        Entry::File(Member {
                            path,
                            source,
                            size,
                            compression: Compression::sniff(&head),
                        }),
                    );
                }
                other => {
                    return Err(ArchiveError::UnsupportedMember {
                        input: input.clone(),
                        member: shown,
                        kind: format!("{other:?}"),
                    })
                }
            }
        }
        if count == 0 {
            return Err(ArchiveError::NotAnArchive {
                input,
                detail: "no tar members".to_string(),
            });
        }
        // Links must end at a regular file inside the archive; a dangling
        // link is only an error when something needs it (lookups report it).
        Ok(())
    }

    /// The input's name, for messages.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Whether `path` names a member (file or link).
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches("./"))
    }

    /// Every member path (files and links), for format detection.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The regular file `path` names, following links inside the archive.
    pub fn get(&self, path: &str, needed_by: &str) -> Result<&Member, ArchiveError> {
        let mut p = path.trim_start_matches("./").to_string();
        for _ in 0..MAX_LINK_HOPS {
            match self.entries.get(&p) {
                Some(Entry::File(m)) => return Ok(m),
                Some(Entry::Link(t)) => p = t.clone(),
                None => break,
            }
        }
        Err(ArchiveError::Missing {
            member: path.to_string(),
            needed_by: needed_by.to_string(),
        })
    }

    /// Opens a member for reading (blocking).
    pub fn open(&self, m: &Member) -> Result<Box<dyn Read + Send>, ArchiveError> {
        let what = || format!("reading {} from {}", m.path, self.input);
        match &m.source {
            Source::Spooled(p) => Ok(Box::new(
                File::open(p).map_err(|e| ArchiveError::io(what(), e))?,
            )),
            Source::Range(offset) => {
                let file = self.file.as_ref().ok_or_else(|| {
                    ArchiveError::io(what(), io::Error::other("input is not seekable"))
                })?;
                let mut f = File::open(file).map_err(|e| ArchiveError::io(what(), e))?;
                f.seek(SeekFrom::Start(*offset))
                    .map_err(|e| ArchiveError::io(what(), e))?;
                Ok(Box::new(f.take(m.size)))
            }
        }
    }

    /// The file holding a member's bytes and the offset they start at
    /// (for async readers: spooled copies and plain-tar inputs are files).
    pub fn location(&self, m: &Member) -> Option<(PathBuf, u64)> {
        match &m.source {
            Source::Spooled(p) => Some((p.clone(), 0)),
            Source::Range(offset) => self.file.clone().map(|f| (f, *offset)),
        }
    }

    /// A member's bytes, for metadata (bounded by [`METADATA_LIMIT`]).
    pub fn read_small(&self, path: &str, needed_by: &str) -> Result<Vec<u8>, ArchiveError> {
        let m = self.get(path, needed_by)?;
        if m.size > METADATA_LIMIT {
            return Err(ArchiveError::metadata(
                path,
                format!("{} bytes is too large for a metadata file", m.size),
            ));
        }
        let mut out = Vec::with_capacity(m.size as usize);
        self.open(m)?
            .read_to_end(&mut out)
            .map_err(|e| ArchiveError::io(format!("reading {path}"), e))?;
        if out.len() as u64 != m.size {
            return Err(changed(path, out.len() as u64, m.size));
        }
        Ok(out)
    }

    /// The digests of a member, computed now by reading it whole (and
    /// decompressing a gzip/zstd member): for the members whose digests the
    /// archive does not state and which are needed before the push (layers
    /// of pre-1.10 archives, compressed `layer.tar` files). Remembered, so
    /// a member shared by several images is read once.
    pub fn hashes(&self, m: &Member) -> Result<Hashes, ArchiveError> {
        let cache = |h: &mut HashMap<String, Hashes>| h.get(&m.path).cloned();
        if let Some(h) = self.hashed.lock().ok().as_deref_mut().and_then(cache) {
            return Ok(h);
        }
        let mut r = self.open(m)?;
        let mut digester = Digester::new(m.compression);
        let mut read = 0u64;
        loop {
            let chunk = read_chunk(&mut r)
                .map_err(|e| ArchiveError::io(format!("reading {}", m.path), e))?;
            if chunk.is_empty() {
                break;
            }
            read += chunk.len() as u64;
            digester.update(&chunk);
        }
        if read != m.size {
            return Err(changed(&m.path, read, m.size));
        }
        let h = digester.finish();
        if let Ok(mut map) = self.hashed.lock() {
            map.insert(m.path.clone(), h.clone());
        }
        Ok(h)
    }
}

/// Parses a metadata member as JSON.
pub fn read_json(members: &Members, path: &str, needed_by: &str) -> Result<Value, ArchiveError> {
    let bytes = members.read_small(path, needed_by)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ArchiveError::metadata(path, format!("invalid JSON: {e}")))
}

fn changed(path: &str, read: u64, size: u64) -> ArchiveError {
    ArchiveError::io(
        format!("reading {path}"),
        io::Error::other(format!(
            "read {read} of its {size} bytes (the input file was modified?)"
        )),
    )
}

/// Tells truncation apart from other tar errors.
fn classify(input: &str, e: io::Error) -> ArchiveError {
    let text = e.to_string();
    if e.kind() == io::ErrorKind::UnexpectedEof
        || text.contains("unexpected EOF")
        || text.contains("failed to read entire block")
        || text.contains("unexpected end of file")
    {
        ArchiveError::Truncated {
            input: input.to_string(),
            detail: text,
        }
    } else {
        ArchiveError::NotAnArchive {
            input: input.to_string(),
            detail: text,
        }
    }
}

fn unsafe_path(input: &str, member: &str, reason: &str) -> ArchiveError {
    ArchiveError::UnsafePath {
        input: input.to_string(),
        member: member.to_string(),
        reason: reason.to_string(),
    }
}

/// A member path as a normalized relative path (`./a//b` → `a/b`); absolute
/// paths and `..` components are refused. An empty result is the root.
fn normalize(input: &str, shown: &str, raw: &[u8]) -> Result<String, ArchiveError> {
    let s = std::str::from_utf8(raw).map_err(|_| unsafe_path(input, shown, "not UTF-8"))?;
    if s.contains('\0') {
        return Err(unsafe_path(input, shown, "NUL in path"));
    }
    let mut parts = Vec::new();
    for c in Path::new(s).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path(input, shown, "path contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path(input, shown, "absolute path"))
            }
        }
    }
    Ok(parts.join("/"))
}

fn link_target<R: Read>(
    input: &str,
    shown: &str,
    entry: &tar::Entry<'_, R>,
) -> Result<String, ArchiveError> {
    let target = entry
        .link_name_bytes()
        .ok_or_else(|| unsafe_path(input, shown, "link without a target"))?;
    String::from_utf8(target.into_owned())
        .map_err(|_| unsafe_path(input, shown, "link target is not UTF-8"))
}

/// Resolves a symlink's target relative to the link's directory; it must
/// stay inside the archive.
fn resolve_symlink(input: &str, link: &str, target: &str) -> Result<String, ArchiveError> {
    if target.starts_with('/') {
        return Err(unsafe_path(
            input,
            link,
            &format!("symlink to absolute path {target:?}"),
        ));
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(unsafe_path(
                        input,
                        link,
                        &format!("symlink target {target:?} points outside the archive"),
                    ));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(unsafe_path(input, link, "symlink to the archive root"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_only() {
        assert_eq!(
            resolve_symlink("t", "a/layer.tar", "../b/layer.tar").unwrap(),
            "b/layer.tar"
        );
        assert_eq!(resolve_symlink("t", "a/l", "x").unwrap(), "a/x");
        assert!(resolve_symlink("t", "a/l", "../../etc/passwd").is_err());
        assert!(resolve_symlink("t", "l", "/etc/passwd").is_err());
        assert!(resolve_symlink("t", "l", "..").is_err());
    }

    #[test]
    fn paths_normalize_or_refuse() {
        assert_eq!(normalize("t", "", b"./a//b").unwrap(), "a/b");
        assert_eq!(normalize("t", "", b"./").unwrap(), "");
        assert!(normalize("t", "", b"../x").is_err());
        assert!(normalize("t", "", b"a/../../x").is_err());
        assert!(normalize("t", "", b"/etc/passwd").is_err());
    }

    #[test]
    fn sniffing() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"{\"a\""), Compression::None);
        assert_eq!(Compression::sniff(b"BZh9"), Compression::Other("bzip2"));
    }
}
