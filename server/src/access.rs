//! Access control by SSH key: who a key is, and what it may do where.
//!
//! Two modes. Without an access file every key the server accepts may read,
//! write and delete everything (plus `--anonymous-read GLOB` namespaces for
//! clients without a key). With `--access FILE` (TOML, reloaded when it
//! changes) keys map to users, users form groups, and `[[rule]]` entries grant
//! `read`/`write`/`delete` per namespace glob; the most specific matching rule
//! wins and no rule means no access. Write implies read; delete is separate.
//!
//! ```toml
//! [users]
//! alice = ["ssh-ed25519 AAAA... alice@laptop"]
//! ci    = ["restrict ssh-ed25519 AAAA... ci@build"]
//!
//! [[cert_authority]]                     # OpenSSH user certificates
//! key = "ssh-ed25519 AAAA... users-ca"
//! principals = { alice = "alice", "*" = "@same" }   # principal -> user
//!
//! [groups]
//! devs = ["alice", "bob"]
//!
//! [[rule]]
//! namespace = "team-*"                   # exact, or a glob with * and ?
//! read = ["@all"]                        # @all: every known user
//! write = ["@devs"]
//! delete = ["alice"]
//!
//! [[rule]]
//! namespace = "public"
//! read = ["@anonymous", "@all"]          # @anonymous: clients without a key
//! ```
//!
//! Checking returns `Err(Denied)` with a reason the client sees; callers log it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use russh::keys::ssh_key::{Certificate, PublicKey};
use serde::Deserialize;

use crate::identity::Identity;
pub use crate::identity::ANONYMOUS_LOGIN;
use crate::keys::parse_authorized_line;

/// Longest SSH login name accepted.
pub const MAX_LOGIN_LEN: usize = 64;

/// Whether an SSH login name is acceptable: 1 to [`MAX_LOGIN_LEN`] bytes of
/// `A-Z a-z 0-9 . _ @ -`. Clients can send any bytes as a login name, and
/// without an access file it becomes the user every request is logged and
/// audited under, so anything else is refused at authentication.
pub fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= MAX_LOGIN_LEN
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

/// What a request wants to do to a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Pull: manifests, blobs, tags, images.
    Read,
    /// Push: uploads, manifests, tags. Implies read.
    Write,
    /// Delete tags and repositories.
    Delete,
}

impl Action {
    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
        }
    }
}

/// A refused request: the reason shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denied {
    /// Human reason ("user bob may not write namespace team").
    pub reason: String,
    /// Whether the client had no key (answer 401 rather than 403).
    pub anonymous: bool,
}

/// An error in the access file, with the line it is on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct AccessFileError {
    /// The file.
    pub path: String,
    /// 1-based line number (0 when unknown).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    users: BTreeMap<String, Vec<toml::Spanned<String>>>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<toml::Spanned<String>>>,
    #[serde(default, rename = "cert_authority")]
    cert_authorities: Vec<toml::Spanned<RawCa>>,
    #[serde(default, rename = "rule")]
    rules: Vec<toml::Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    key: String,
    #[serde(default)]
    principals: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    namespace: String,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    delete: Vec<String>,
}

/// Who a rule entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    User(String),
    Group(String),
    All,
    Anonymous,
}

#[derive(Debug, Clone)]
struct Rule {
    namespace: String,
    read: Vec<Principal>,
    write: Vec<Principal>,
    delete: Vec<Principal>,
}

#[derive(Debug, Clone)]
struct CertAuthority {
    key: PublicKey,
    principals: BTreeMap<String, String>,
}

/// A parsed access file.
#[derive(Debug, Clone)]
pub struct Policy {
    /// No access file: every authenticated user counts as known.
    open: bool,
    users: BTreeMap<String, Vec<PublicKey>>,
    groups: BTreeMap<String, BTreeSet<String>>,
    cert_authorities: Vec<CertAuthority>,
    rules: Vec<Rule>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

impl Policy {
    /// Parses an access file; every error names its line.
    pub fn parse(text: &str, path: &str) -> Result<Policy, AccessFileError> {
        let err = |offset: usize, reason: String| AccessFileError {
            path: path.to_string(),
            line: line_of(text, offset),
            reason,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            AccessFileError {
                path: path.to_string(),
                line,
                reason: e.message().to_string(),
            }
        })?;
        let mut users = BTreeMap::new();
        let mut seen_keys: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        for (name, lines) in &raw.users {
            if !valid_user_name(name) {
                let at = lines.first().map(|l| l.span().start).unwrap_or(0);
                return Err(err(at, format!("invalid user name {name:?}")));
            }
            let mut keys = Vec::new();
            for line in lines {
                let key = match parse_authorized_line(line.get_ref()) {
                    Ok(Some(k)) => k.key,
                    Ok(None) => {
                        return Err(err(
                            line.span().start,
                            format!("user {name}: empty key line"),
                        ))
                    }
                    Err(e) => return Err(err(line.span().start, format!("user {name}: {e}"))),
                };
                let blob = key
                    .fingerprint(russh::keys::HashAlg::Sha256)
                    .as_bytes()
                    .to_vec();
                if let Some(other) = seen_keys.insert(blob, name.clone()) {
                    if &other != name {
                        return Err(err(
                            line.span().start,
                            format!("key of user {name} is also a key of user {other}"),
                        ));
                    }
                }
                keys.push(key);
            }
            users.insert(name.clone(), keys);
        }
        let mut groups = BTreeMap::new();
        for (name, members) in &raw.groups {
            let mut set = BTreeSet::new();
            for m in members {
                if !users.contains_key(m.get_ref()) {
                    return Err(err(
                        m.span().start,
                        format!("group {name}: unknown user {:?}", m.get_ref()),
                    ));
                }
                set.insert(m.get_ref().clone());
            }
            groups.insert(name.clone(), set);
        }
        let mut cert_authorities = Vec::new();
        for ca in &raw.cert_authorities {
            let at = ca.span().start;
            let key = match parse_authorized_line(&ca.get_ref().key) {
                Ok(Some(k)) => k.key,
                _ => return Err(err(at, "cert_authority: bad key".into())),
            };
            for (principal, user) in &ca.get_ref().principals {
                if user != "@same" && !users.contains_key(user) {
                    return Err(err(
                        at,
                        format!(
                            "cert_authority: principal {principal:?} maps to unknown user {user:?}"
                        ),
                    ));
                }
            }
            cert_authorities.push(CertAuthority {
                key,
                principals: ca.get_ref().principals.clone(),
            });
        }
        let mut rules = Vec::new();
        for rule in &raw.rules {
            let at = rule.span().start;
            let r = rule.get_ref();
            if r.namespace.is_empty()
                || !r
                    .namespace
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-*?".contains(&b))
            {
                return Err(err(
                    at,
                    format!("rule: invalid namespace pattern {:?}", r.namespace),
                ));
            }
            let principals = |list: &[String]| -> Result<Vec<Principal>, AccessFileError> {
                list.iter()
                    .map(|p| match p.as_str() {
                        "@all" => Ok(Principal::All),
                        "@anonymous" => Ok(Principal::Anonymous),
                        g if g.starts_with('@') => {
                            if groups.contains_key(&g[1..]) {
                                Ok(Principal::Group(g[1..].to_string()))
                            } else {
                                Err(err(
                                    at,
                                    format!("rule {}: unknown group {g:?}", r.namespace),
                                ))
                            }
                        }
                        u if users.contains_key(u) => Ok(Principal::User(u.to_string())),
                        u => Err(err(at, format!("rule {}: unknown user {u:?}", r.namespace))),
                    })
                    .collect()
            };
            let write = principals(&r.write)?;
            let delete = principals(&r.delete)?;
            if write.contains(&Principal::Anonymous) || delete.contains(&Principal::Anonymous) {
                return Err(err(
                    at,
                    format!("rule {}: @anonymous may only be granted read", r.namespace),
                ));
            }
            rules.push(Rule {
                namespace: r.namespace.clone(),
                read: principals(&r.read)?,
                write,
                delete,
            });
        }
        Ok(Policy {
            open: false,
            users,
            groups,
            cert_authorities,
            rules,
        })
    }

    /// The policy without an access file: every authenticated user may do
    /// everything; keyless clients may read the `anonymous_read` globs.
    pub fn open(anonymous_read: &[String]) -> Policy {
        let mut rules = vec![Rule {
            namespace: "*".into(),
            read: vec![Principal::All],
            write: vec![Principal::All],
            delete: vec![Principal::All],
        }];
        for glob in anonymous_read {
            rules.push(Rule {
                namespace: glob.clone(),
                read: vec![Principal::All, Principal::Anonymous],
                write: vec![Principal::All],
                delete: vec![Principal::All],
            });
        }
        Policy {
            open: true,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            cert_authorities: vec![],
            rules,
        }
    }

    /// The user a key belongs to.
    pub fn user_for_key(&self, key: &PublicKey) -> Option<&str> {
        self.users
            .iter()
            .find(|(_, keys)| keys.iter().any(|k| k.key_data() == key.key_data()))
            .map(|(name, _)| name.as_str())
    }

    /// The user an OpenSSH user certificate maps to: signed by a configured
    /// CA, valid now, a user certificate, and a principal mapped to a user.
    pub fn user_for_certificate(&self, cert: &Certificate) -> Option<String> {
        if cert.cert_type() != russh::keys::ssh_key::certificate::CertType::User {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs();
        for ca in &self.cert_authorities {
            let fp = ca.key.fingerprint(russh::keys::HashAlg::Sha256);
            if cert.validate_at(now, [&fp]).is_err() {
                continue;
            }
            for principal in cert.valid_principals() {
                let mapped = ca
                    .principals
                    .get(principal)
                    .or_else(|| ca.principals.get("*"));
                match mapped.map(String::as_str) {
                    Some("@same") if self.users.contains_key(principal) => {
                        return Some(principal.clone())
                    }
                    Some("@same") | None => continue,
                    Some(user) => return Some(user.to_string()),
                }
            }
        }
        None
    }

    /// Whether OpenSSH user certificates can authenticate at all.
    pub fn has_cert_authorities(&self) -> bool {
        !self.cert_authorities.is_empty()
    }

    /// Whether any rule lets keyless clients read something.
    pub fn allows_anonymous(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.read.contains(&Principal::Anonymous))
    }

    /// Whether rule entry `p` names `user`. With an access file only users
    /// it lists are anyone: a connection whose user a reload removed gets
    /// nothing, even from `@all`, while it is being closed.
    fn names(&self, p: &Principal, user: Option<&str>) -> bool {
        if user.is_some_and(|me| !self.open && !self.users.contains_key(me)) {
            return false;
        }
        match (p, user) {
            (Principal::Anonymous, None) => true,
            (Principal::All, Some(_)) => true,
            (Principal::User(u), Some(me)) => u == me,
            (Principal::Group(g), Some(me)) => self.groups.get(g).is_some_and(|m| m.contains(me)),
            _ => false,
        }
    }

    /// The rule that governs a namespace: exact match first, then the glob
    /// with the most literal characters (ties: the earlier rule).
    fn rule_for(&self, namespace: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| glob_match(&r.namespace, namespace))
            .max_by_key(|(i, r)| {
                let exact = !r.namespace.contains(['*', '?']);
                let literal = r
                    .namespace
                    .chars()
                    .filter(|c| *c != '*' && *c != '?')
                    .count();
                (exact, literal, std::cmp::Reverse(*i))
            })
            .map(|(_, r)| r)
    }

    /// Whether `user` (`None` = anonymous) may do `action` in `namespace`.
    pub fn allows(&self, user: Option<&str>, namespace: &str, action: Action) -> bool {
        let Some(rule) = self.rule_for(namespace) else {
            return false;
        };
        let any = |list: &[Principal]| list.iter().any(|p| self.names(p, user));
        match action {
            Action::Read => any(&rule.read) || any(&rule.write),
            Action::Write => any(&rule.write),
            Action::Delete => any(&rule.delete),
        }
    }

    /// Whether `user` may write anywhere (V1 image uploads need this).
    pub fn writes_somewhere(&self, user: Option<&str>) -> bool {
        self.rules
            .iter()
            .any(|r| r.write.iter().any(|p| self.names(p, user)))
    }

    /// For `berth info`: each rule's namespace pattern and what `user` may do there.
    pub fn summary(&self, user: Option<&str>) -> Vec<(String, bool, bool, bool)> {
        let mut out: Vec<(String, bool, bool, bool)> = self
            .rules
            .iter()
            .map(|r| {
                let ns = r.namespace.as_str();
                // Evaluate at a name the pattern matches, through rule_for, so
                // the answer is what a request there would get.
                let probe = ns.replace(['*', '?'], "x");
                let rule_here = self.rule_for(&probe).map(|x| x.namespace.as_str()) == Some(ns);
                let may = |a| rule_here && self.allows(user, &probe, a);
                (
                    ns.to_string(),
                    may(Action::Read),
                    may(Action::Write),
                    may(Action::Delete),
                )
            })
            .filter(|(_, r, w, d)| *r || *w || *d)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn valid_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Called with the new policy each time the access file is re-read, before
/// any request can see it (see [`AccessControl::on_reload`]).
pub type ReloadHook = Box<dyn Fn(&Policy) + Send + Sync>;

/// The live access policy: an open policy, or a file re-read when it changes.
pub struct AccessControl {
    source: Source,
    hooks: Mutex<Vec<ReloadHook>>,
    /// Why the last re-read of the file failed, while the previous rules
    /// stay in force (`/readyz` reports it).
    reload_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Source {
    Open(Arc<Policy>),
    File {
        path: PathBuf,
        state: Mutex<(Option<SystemTime>, Arc<Policy>)>,
    },
}

impl AccessControl {
    /// Everyone with a key may do everything; `anonymous_read` globs are readable without one.
    pub fn open(anonymous_read: &[String]) -> AccessControl {
        AccessControl {
            source: Source::Open(Arc::new(Policy::open(anonymous_read))),
            hooks: Mutex::new(Vec::new()),
            reload_error: Mutex::new(None),
        }
    }

    /// Loads an access file; any error (with its line) refuses the start.
    pub fn from_file(path: &Path) -> Result<AccessControl, AccessFileError> {
        let (modified, policy) = load(path)?;
        Ok(AccessControl {
            source: Source::File {
                path: path.to_path_buf(),
                state: Mutex::new((modified, Arc::new(policy))),
            },
            hooks: Mutex::new(Vec::new()),
            reload_error: Mutex::new(None),
        })
    }

    /// Whether keys come from the access file (else from authorized_keys).
    pub fn has_file(&self) -> bool {
        matches!(self.source, Source::File { .. })
    }

    /// Runs `hook` on every successful re-read of the access file, with the
    /// new policy, while the reload still holds the policy lock: nothing can
    /// use the new rules before every hook has returned. The SSH server uses
    /// it to close the connections of users the new file no longer lets in.
    /// A hook must not call [`AccessControl::policy`] (it would deadlock).
    pub fn on_reload(&self, hook: ReloadHook) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// The current policy, re-reading the file if it changed. A file that
    /// became invalid keeps the last good policy (and says so in the log).
    pub fn policy(&self) -> Arc<Policy> {
        match &self.source {
            Source::Open(p) => p.clone(),
            Source::File { path, state } => {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if modified != st.0 {
                    match load(path) {
                        Ok((m, p)) => {
                            for hook in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter()
                            {
                                hook(&p);
                            }
                            tracing::info!(path = %path.display(), "access file reloaded");
                            *self.reload_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                            *st = (m, Arc::new(p));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "access file invalid; keeping the previous rules");
                            *self.reload_error.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(e.to_string());
                            st.0 = modified;
                        }
                    }
                }
                st.1.clone()
            }
        }
    }

    /// Re-reads the access file now, changed or not (SIGHUP: an edit within
    /// the file system's timestamp granularity still counts), then answers
    /// like [`AccessControl::policy`].
    pub fn reload(&self) -> Arc<Policy> {
        if let Source::File { state, .. } = &self.source {
            // No file has this modification time, so the next read reloads.
            state.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(SystemTime::UNIX_EPOCH);
        }
        self.policy()
    }

    /// Why the file on disk is not the policy in force (its last re-read
    /// failed), if it is not. Re-reads a changed file first.
    pub fn reload_error(&self) -> Option<String> {
        drop(self.policy());
        self.reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks one action on one namespace for a connection's identity.
    pub fn check(&self, who: &Identity, namespace: &str, action: Action) -> Result<(), Denied> {
        let user = who.subject();
        if self.policy().allows(user, namespace, action) {
            return Ok(());
        }
        let reason = match user {
            Some(u) => format!("user {u} may not {} namespace {namespace}", action.name()),
            None => format!(
                "anonymous clients may not {} namespace {namespace}; connect with a key",
                action.name()
            ),
        };
        tracing::info!(user = %who.log_user(), namespace, action = action.name(), "denied");
        Err(Denied {
            reason,
            anonymous: user.is_none(),
        })
    }
}

fn load(path: &Path) -> Result<(Option<SystemTime>, Policy), AccessFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| AccessFileError {
        path: path.display().to_string(),
        line: 0,
        reason: format!("cannot read: {e}"),
    })?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((modified, Policy::parse(&text, &path.display().to_string())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> String {
        let k = russh::keys::ssh_key::PrivateKey::from(
            russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]),
        );
        k.public_key().to_openssh().unwrap()
    }

    fn policy() -> Policy {
        let text = format!(
            r#"
[users]
admin = ["{}"]
writer = ["{}"]
reader = ["{}"]

[groups]
devs = ["writer", "admin"]

[[rule]]
namespace = "*"
delete = ["admin"]
write = ["admin"]

[[rule]]
namespace = "team-*"
read = ["@all"]
write = ["@devs"]
delete = ["admin"]

[[rule]]
namespace = "team-secret"
read = ["admin"]
write = ["admin"]

[[rule]]
namespace = "public"
read = ["@anonymous", "@all"]
write = ["writer"]
"#,
            key(1),
            key(2),
            key(3)
        );
        Policy::parse(&text, "access.toml").unwrap()
    }

    #[test]
    fn login_names() {
        for ok in [
            "alice",
            "ci.bot@build-1",
            "anonymous",
            "A_B-9",
            &"x".repeat(64),
        ] {
            assert!(valid_login(ok), "{ok:?}");
        }
        for bad in [
            "",
            "a b",
            "a\nb",
            "a\x1b[2J",
            "é",
            "a/b",
            "a:b",
            &"x".repeat(65),
        ] {
            assert!(!valid_login(bad), "{bad:?}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("team-*", "team-a"));
        assert!(!glob_match("team-*", "teams"));
        assert!(glob_match("t?am", "team"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn most_specific_rule_wins() {
        let p = policy();
        assert!(p.allows(Some("reader"), "team-a", Action::Read));
        assert!(!p.allows(Some("reader"), "team-a", Action::Write));
        assert!(p.allows(Some("writer"), "team-a", Action::Write));
        assert!(
            p.allows(Some("writer"), "team-a", Action::Read),
            "write implies read"
        );
        assert!(!p.allows(Some("writer"), "team-a", Action::Delete));
        assert!(p.allows(Some("admin"), "team-a", Action::Delete));
        // the exact rule beats the glob
        assert!(!p.allows(Some("reader"), "team-secret", Action::Read));
        assert!(!p.allows(Some("writer"), "team-secret", Action::Write));
        // anonymous
        assert!(p.allows(None, "public", Action::Read));
        assert!(!p.allows(None, "public", Action::Write));
        assert!(!p.allows(None, "team-a", Action::Read));
        assert!(p.allows_anonymous());
        // the catch-all
        assert!(!p.allows(Some("reader"), "other", Action::Read));
        assert!(p.allows(Some("admin"), "other", Action::Delete));
        assert!(p.writes_somewhere(Some("writer")));
        assert!(!p.writes_somewhere(Some("reader")));
        assert!(!p.writes_somewhere(None));
        // A user the file does not list (removed by a reload) gets nothing.
        assert!(!p.allows(Some("mallory"), "public", Action::Read));
        assert!(!p.allows(Some("mallory"), "team-a", Action::Read));
        assert!(Policy::open(&[]).allows(Some("anyone"), "x", Action::Delete));
    }

    #[test]
    fn keys_map_to_users() {
        let p = policy();
        let k = russh::keys::ssh_key::PublicKey::from_openssh(&key(2)).unwrap();
        assert_eq!(p.user_for_key(&k), Some("writer"));
        let stranger = russh::keys::ssh_key::PublicKey::from_openssh(&key(9)).unwrap();
        assert_eq!(p.user_for_key(&stranger), None);
    }

    #[test]
    fn errors_name_the_line() {
        let e = Policy::parse("[users]\nalice = [\"ssh-ed25519 AAAA\"]\n", "f").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = Policy::parse(
            &format!(
                "[users]\na = [\"{}\"]\n\n[[rule]]\nnamespace = \"x\"\nread = [\"bob\"]\n",
                key(1)
            ),
            "f",
        )
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.reason.contains("unknown user"));
        let e = Policy::parse(
            "[[rule]]\nnamespace = \"x\"\nwrite = [\"@anonymous\"]\n",
            "f",
        )
        .unwrap_err();
        assert!(e.reason.contains("only be granted read"));
        let e = Policy::parse("[userz]\n", "f").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn summary_lists_what_a_user_may_do() {
        let p = policy();
        let s = p.summary(Some("writer"));
        assert!(s.contains(&("team-*".to_string(), true, true, false)));
        assert!(s.contains(&("public".to_string(), true, true, false)));
        assert!(!s.iter().any(|(ns, ..)| ns == "team-secret"));
        let anon = p.summary(None);
        assert_eq!(anon, vec![("public".to_string(), true, false, false)]);
    }
}
