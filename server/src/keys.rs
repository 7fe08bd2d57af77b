//! SSH keys on the server side: the host key (generated on first start,
//! OpenSSH format, mode 0600, outside the store; refused unless private to
//! the server's user) and a lenient `authorized_keys` parser.
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

pub use crate::store::paths::HOST_KEY_NAME;

/// Where `serve` keeps its host key without `--host-key`:
/// `$XDG_CONFIG_HOME/berth/`, else `~/.config/berth/`, of the server's
/// account — never the store, which other accounts may be able to write.
pub fn default_host_key_path() -> Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("neither XDG_CONFIG_HOME nor HOME is set; pass --host-key FILE")?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(config.join("berth").join(HOST_KEY_NAME))
}

/// The host key file `serve` uses: `explicit` (`--host-key`) or the
/// default. Without `--host-key`, a key left at the old default inside the
/// store (`<root>/_berth/ssh_host_ed25519_key`) is never used: the server
/// refuses to start and says how to move it, unless the new default exists.
pub fn host_key_path(explicit: Option<&Path>, store: &crate::store::Paths) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let path = default_host_key_path()?;
    let old = store.legacy_host_key();
    if old.exists() {
        if path.exists() {
            eprintln!(
                "berth-server: warning: ignoring {} inside the store (the host key is {}); delete it",
                old.display(),
                path.display()
            );
        } else {
            let dir = path.parent().unwrap_or(Path::new("."));
            anyhow::bail!(
                "host key {old} is inside the store, where whoever can write the store can replace it; \
                 it is no longer read from there. To keep this key, move it: \
                 mkdir -p -m 700 {dir} && mv {old} {old}.pub {dir}/ \
                 (or pass --host-key FILE; delete it to have a new key generated)",
                old = old.display(),
                dir = dir.display()
            );
        }
    }
    Ok(path)
}

/// Loads the host key at `path`, generating an Ed25519 key there (mode 0600,
/// plus a `.pub`, missing directories created 0700) if the file does not
/// exist. An existing key must be the server user's and private to it
/// ([`crate::strict::check_private`]). Returns the key and whether it was
/// generated.
pub fn load_or_generate_host_key(path: &Path) -> Result<(PrivateKey, bool)> {
    if path.exists() {
        crate::strict::check_private(path)
            .map_err(|e| anyhow::anyhow!("refusing host key: {e}"))?;
        let key = russh::keys::load_secret_key(path, None)
            .with_context(|| format!("loading host key {}", path.display()))?;
        return Ok((key, false));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
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

    /// Re-reads the file now, changed or not (SIGHUP).
    pub fn reload(&mut self) {
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
        assert_eq!(
            fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_generate_host_key(&p).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_key_in_the_store_is_refused_without_host_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Paths::new(dir.path().join("store"));
        let explicit = dir.path().join("k");
        assert_eq!(host_key_path(Some(&explicit), &store).unwrap(), explicit);
        fs::create_dir_all(store.berth_dir()).unwrap();
        fs::write(store.berth_dir().join(HOST_KEY_NAME), "x").unwrap();
        // The environment is the process's: only check what does not depend on it.
        if let Ok(default) = default_host_key_path() {
            if !default.exists() {
                let err = host_key_path(None, &store).unwrap_err().to_string();
                assert!(
                    err.contains("inside the store") && err.contains("mv "),
                    "{err}"
                );
            }
        }
    }
}
