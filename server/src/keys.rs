//! SSH keys on the server side: the host key (generated on first start,
//! OpenSSH format, mode 0600) and a lenient `authorized_keys` parser.
//!
//! russh has no authorized_keys parser and `ssh_key::AuthorizedKeys` fails on
//! quoted options with spaces and on any bad line (`russh.md` §2.6), so we
//! parse per line: quote-aware options, then `type base64 [comment]`; bad
//! lines are logged and skipped. Keys compare by key data, never by comment.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use russh::keys::ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey};
use russh::keys::Algorithm;

pub mod certificate;

/// Loads the host key at `path`, generating an Ed25519 key there (mode 0600,
/// plus a `.pub`) if the file does not exist. Returns the key and whether it
/// was generated.
pub fn load_or_generate_host_key(path: &Path) -> Result<(PrivateKey, bool)> {
    if path.exists() {
        let key = russh::keys::load_secret_key(path, None)
            .with_context(|| format!("loading host key {}", path.display()))?;
        return Ok((key, false));
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
        .context("generating host key")?;
    let text = key
        .to_openssh(LineEnding::LF)
        .context("encoding host key")?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating host key {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    let public = key
        .public_key()
        .to_openssh()
        .context("encoding public host key")?;
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    fs::write(PathBuf::from(pub_path), format!("{public}\n"))?;
    Ok((key, true))
}

/// `SHA256:...` fingerprint of a public key (what `ssh-keygen -l` prints).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Key types that start the key part of an authorized_keys line.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// One parsed authorized_keys entry.
#[derive(Debug, Clone)]
pub struct AuthorizedKey {
    /// The public key.
    pub key: PublicKey,
    /// The options field, unparsed (`restrict,command="..."`), empty if none.
    pub options: String,
    /// The comment after the key, if any.
    pub comment: String,
}

/// Splits a line into whitespace-separated tokens, keeping double-quoted
/// spans (with `\"` escapes) inside one token.
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses one authorized_keys line. `Ok(None)` for blank and comment lines.
pub fn parse_authorized_line(line: &str) -> Result<Option<AuthorizedKey>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let toks = tokens(line);
    let pos = toks
        .iter()
        .position(|t| KEY_TYPES.contains(&t.as_str()))
        .ok_or("no known key type on the line")?;
    if pos > 1 {
        return Err("unexpected text before the key type".into());
    }
    let options = if pos == 1 {
        toks[0].clone()
    } else {
        String::new()
    };
    let base64 = toks.get(pos + 1).ok_or("key type without key data")?;
    let key =
        russh::keys::parse_public_key_base64(base64).map_err(|e| format!("bad key data: {e}"))?;
    let comment = toks[pos + 2..].join(" ");
    Ok(Some(AuthorizedKey {
        key,
        options,
        comment,
    }))
}

/// A set of authorized keys read from a file, re-read when the file changes.
#[derive(Debug)]
pub struct AuthorizedKeysFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    keys: Vec<AuthorizedKey>,
}

impl AuthorizedKeysFile {
    /// Reads `path` (a missing file means no keys, with a warning).
    pub fn load(path: &Path) -> AuthorizedKeysFile {
        let mut f = AuthorizedKeysFile {
            path: path.to_path_buf(),
            modified: None,
            keys: Vec::new(),
        };
        f.reload();
        f
    }

    /// The file this set comes from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reload(&mut self) {
        let modified = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read authorized keys; no key can log in");
                self.keys.clear();
                self.modified = modified;
                return;
            }
        };
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            match parse_authorized_line(line) {
                Ok(Some(k)) if k.options.split(',').any(|o| o.trim() == "cert-authority") => {
                    tracing::warn!(path = %self.path.display(), line = n + 1, "skipping cert-authority key (use an access file for certificates)");
                }
                Ok(Some(k)) => keys.push(k),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), line = n + 1, error = %e, "skipping bad authorized_keys line")
                }
            }
        }
        self.keys = keys;
        self.modified = modified;
    }

    /// Re-reads the file if its modification time changed; returns whether it did.
    pub fn refresh(&mut self) -> bool {
        let modified = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified != self.modified {
            self.reload();
            return true;
        }
        false
    }

    /// The entry for `key`, compared by key data (not comment).
    pub fn find(&self, key: &PublicKey) -> Option<&AuthorizedKey> {
        self.keys
            .iter()
            .find(|k| k.key.key_data() == key.key_data())
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is authorized.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn parses_lines() {
        assert!(parse_authorized_line("").unwrap().is_none());
        assert!(parse_authorized_line("# comment").unwrap().is_none());
        let k = parse_authorized_line(&format!("{ED} alice@laptop"))
            .unwrap()
            .unwrap();
        assert_eq!(k.comment, "alice@laptop");
        let k = parse_authorized_line(&format!(r#"command="/bin/echo hi there",no-pty {ED} ci"#))
            .unwrap()
            .unwrap();
        assert_eq!(k.options, r#"command="/bin/echo hi there",no-pty"#);
        assert!(parse_authorized_line("ssh-ed25519 notbase64!").is_err());
        assert!(parse_authorized_line("garbage").is_err());
    }

    #[test]
    fn generates_host_key_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k/host");
        let (k1, made) = load_or_generate_host_key(&p).unwrap();
        assert!(made);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (k2, made) = load_or_generate_host_key(&p).unwrap();
        assert!(!made);
        assert_eq!(fingerprint(k1.public_key()), fingerprint(k2.public_key()));
    }
}
