//! Validated registry names: repositories, tags, V1 image ids, digests and
//! V2 upload session ids.
//!
//! Every value that ends up in a filesystem path is one of these types, and
//! each type can only be built through its `parse` constructor. So `..`,
//! absolute paths, NUL bytes, percent-escapes and over-long names are refused
//! before any path exists (design: "validate names before building any path").
//! The rules follow `v1-protocol.md` §1 and `v2-compat.md` §1.1.

use std::fmt;

/// Why a name, tag, id or digest was refused; carries the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A repository name that breaks the component grammar.
    #[error("invalid repository name {0:?}: components must match [a-z0-9]+([._-][a-z0-9]+)*, at most 255 characters")]
    Repository(String),
    /// A tag that breaks `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("invalid tag name {0:?} (must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")]
    Tag(String),
    /// A V1 image id that is not 16 or 64 lowercase hex characters.
    #[error("invalid image id {0:?}")]
    ImageId(String),
    /// A digest that does not follow the grammar: `sha256:` with 64 or
    /// `sha512:` with 128 lowercase hex characters, or another algorithm's
    /// `<algorithm>:<encoded>` form (OCI image-spec `descriptor.md`).
    #[error(
        "invalid digest {0:?} (expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>)"
    )]
    Digest(String),
    /// A well-formed digest of an algorithm berth does not hash with
    /// (`sha384:`, `md5:`, ...); the distribution spec answers it like an
    /// invalid digest (400).
    #[error("unsupported digest algorithm {algorithm:?} in {digest:?} (berth supports sha256 and sha512)")]
    DigestAlgorithm {
        /// The algorithm part.
        algorithm: String,
        /// The whole digest as given.
        digest: String,
    },
}

/// Longest repository name accepted (clients cap host + name at 255).
pub const MAX_REPOSITORY_LEN: usize = 255;

/// A repository, stored as V1 namespace + repository.
///
/// `foo` and `library/foo` are the same repository (`v1-protocol.md` §1): a
/// single component gets the `library` namespace. Deeper names (`a/b/c`) split
/// at the first `/` like the reference server: namespace `a`, repository `b/c`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName {
    namespace: String,
    repository: String,
}

impl RepoName {
    /// Parses a name as it appears in a URL (`foo`, `ns/foo`, `a/b/c`).
    pub fn parse(name: &str) -> Result<RepoName, NameError> {
        let trimmed = name.strip_suffix('/').unwrap_or(name);
        let bad = || NameError::Repository(name.to_string());
        if trimmed.is_empty() || trimmed.len() > MAX_REPOSITORY_LEN {
            return Err(bad());
        }
        let components: Vec<&str> = trimmed.split('/').collect();
        if !components.iter().all(|c| valid_component(c)) {
            return Err(bad());
        }
        let (namespace, repository) = match components.as_slice() {
            [only] => {
                // A lone 64-hex name would be mistaken for an image id by clients.
                if only.len() == 64 && only.bytes().all(is_lower_hex) {
                    return Err(bad());
                }
                ("library".to_string(), only.to_string())
            }
            [ns, rest @ ..] => (ns.to_string(), rest.join("/")),
            [] => return Err(bad()),
        };
        Ok(RepoName {
            namespace,
            repository,
        })
    }

    /// The V1 namespace (`library` for single-component names).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The repository part after the namespace (may contain `/`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The canonical `namespace/repository` form used in V1 answers.
    pub fn full(&self) -> String {
        format!("{}/{}", self.namespace, self.repository)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.repository)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({self})")
    }
}

/// One path component of a repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// A tag name: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Tag(String);

impl Tag {
    /// Validates a tag from a URL or request body.
    pub fn parse(s: &str) -> Result<Tag, NameError> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && b.len() <= 128 {
            Ok(Tag(s.to_string()))
        } else {
            Err(NameError::Tag(s.to_string()))
        }
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A V1 image id: 16 or 64 lowercase hex characters (`v1-protocol.md` §1).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ImageId(String);

impl ImageId {
    /// Validates an id from a URL or a JSON field (`id`, `parent`).
    pub fn parse(s: &str) -> Result<ImageId, NameError> {
        if (s.len() == 16 || s.len() == 64) && s.bytes().all(is_lower_hex) {
            Ok(ImageId(s.to_string()))
        } else {
            Err(NameError::ImageId(s.to_string()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A hash algorithm a digest may name: the two the OCI image spec
/// registers (`descriptor.md`, "Registered algorithms").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Algorithm {
    /// `sha256:` — what every client uses by default.
    Sha256,
    /// `sha512:` — OCI Distribution 1.1 conformance pushes it too.
    Sha512,
}

impl Algorithm {
    /// Every supported algorithm (listings walk one blob pool per algorithm).
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

    /// The algorithm's name as it prefixes a digest.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Looks an algorithm up by name (`sha256`, `sha512`).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Length of the hex-encoded hash.
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh running hash of this algorithm.
    pub fn hasher(self) -> Hasher {
        use sha2::Digest as _;
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// The digest of a byte slice under this algorithm.
    pub fn digest_of(self, bytes: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish()
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A running hash of one [`Algorithm`], so code that streams bytes can
/// verify a digest of either algorithm without knowing which.
#[derive(Clone)]
pub enum Hasher {
    /// sha256 state.
    Sha256(sha2::Sha256),
    /// sha512 state.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest as _;
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        use sha2::Digest as _;
        match self {
            Hasher::Sha256(h) => Digest::from_sha256(&h.finalize()),
            Hasher::Sha512(h) => Digest(format!("sha512:{}", hex::encode(h.finalize()))),
        }
    }
}

/// A content digest: `sha256:<64 lowercase hex>` or
/// `sha512:<128 lowercase hex>` (the algorithm's exact length, lower case
/// only, so one blob has one spelling and one path).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Digest(String);

impl Digest {
    /// Validates a digest string. A malformed one is [`NameError::Digest`];
    /// a well-formed one of another algorithm (the OCI grammar
    /// `[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`) is
    /// [`NameError::DigestAlgorithm`].
    pub fn parse(s: &str) -> Result<Digest, NameError> {
        let malformed = || NameError::Digest(s.to_string());
        let (algorithm, encoded) = s.split_once(':').ok_or_else(malformed)?;
        let Some(alg) = Algorithm::from_name(algorithm) else {
            let grammar_ok = !algorithm.is_empty()
                && algorithm.split(['+', '.', '_', '-']).all(|c| {
                    !c.is_empty()
                        && c.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
                && !encoded.is_empty()
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
            return Err(if grammar_ok {
                NameError::DigestAlgorithm {
                    algorithm: algorithm.to_string(),
                    digest: s.to_string(),
                }
            } else {
                malformed()
            });
        };
        if encoded.len() == alg.hex_len() && encoded.bytes().all(is_lower_hex) {
            Ok(Digest(s.to_string()))
        } else {
            Err(malformed())
        }
    }

    /// Builds a digest from a finished sha256 hash.
    pub fn from_sha256(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    /// sha256 of a byte slice, as a digest (what berth computes unless a
    /// client named another algorithm).
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Algorithm::Sha256.digest_of(bytes)
    }

    /// The algorithm named before the `:`.
    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex characters after `<algorithm>:` (64 for sha256, 128 for sha512).
    pub fn hex(&self) -> &str {
        &self.0[self.algorithm().name().len() + 1..]
    }

    /// The full `<algorithm>:<hex>` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated upload session id (a lowercase hyphenated UUID), so that an id
/// from a URL can become a path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn new() -> UploadId {
        UploadId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Validates an id from a URL; `None` for anything but a canonical UUID.
    pub fn parse(s: &str) -> Option<UploadId> {
        let u = uuid::Uuid::parse_str(s).ok()?;
        let canonical = u.hyphenated().to_string();
        (canonical == s).then_some(UploadId(canonical))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for UploadId {
    fn default() -> Self {
        UploadId::new()
    }
}

/// Serde form of a [`Digest`] in the store's records: a plain string,
/// re-validated on read (`#[serde(with = "digest_text")]`).
pub mod digest_text {
    use super::Digest;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the digest as its string.
    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    /// Reads a string and validates it as a digest.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        let r = RepoName::parse("foo").unwrap();
        assert_eq!((r.namespace(), r.repository()), ("library", "foo"));
        assert_eq!(RepoName::parse("library/foo").unwrap(), r);
        let r = RepoName::parse("team/app/").unwrap();
        assert_eq!(r.full(), "team/app");
        let r = RepoName::parse("a/b/c").unwrap();
        assert_eq!((r.namespace(), r.repository()), ("a", "b/c"));
        for ok in ["a.b", "a_b", "a__b", "a---b", "test_user/x-y.z"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "..", "a/../b", "a/./b", "%2e%2e", "/abs", "a//b", "A", "a\0b", "-a", "a-", "a..b",
            "a___b", "a/.", ".hidden", "a b",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
        assert!(RepoName::parse(&"z".repeat(64)).is_ok());
        assert!(RepoName::parse(&"a".repeat(64).replace('a', "0")).is_err());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "..", "a\0", &"a".repeat(129), "a b"] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_and_digests() {
        assert!(ImageId::parse(&"a".repeat(64)).is_ok());
        assert!(ImageId::parse(&"0".repeat(16)).is_ok());
        for bad in ["", "..", &"A".repeat(64), &"a".repeat(63), &"g".repeat(64)] {
            assert!(ImageId::parse(bad).is_err(), "{bad:?}");
        }
        let d = Digest::of_bytes(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
    }

    #[test]
    fn sha512_digests() {
        let d = Algorithm::Sha512.digest_of(b"");
        assert_eq!(
            d.as_str(),
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
             47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.algorithm(), Algorithm::Sha512);
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.hex(), &d.as_str()[7..]);
        let mut h = Algorithm::Sha512.hasher();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), Algorithm::Sha512.digest_of(b"abc"));
        assert_eq!(Algorithm::from_name("sha512"), Some(Algorithm::Sha512));
        assert_eq!(Algorithm::from_name("sha384"), None);
    }

    #[test]
    fn malformed_and_unsupported_digests() {
        let hex64 = "a".repeat(64);
        let hex128 = "a".repeat(128);
        for malformed in [
            String::new(),
            "sha256".into(),
            "sha256:".into(),
            ":abc".into(),
            "sha512:00".into(),
            format!("sha512:{hex64}"),
            format!("sha256:{hex128}"),
            format!("sha512:{}", "A".repeat(128)),
            format!("sha512:{}g", "a".repeat(127)),
            format!("SHA256:{hex64}"),
            format!("sha256:{hex64}/../x"),
            format!("sha256 :{hex64}"),
            "sha384:abc/def".into(),
            "-md5:abc".into(),
        ] {
            assert!(
                matches!(Digest::parse(&malformed), Err(NameError::Digest(_))),
                "{malformed:?}: {:?}",
                Digest::parse(&malformed)
            );
        }
        for unsupported in [
            format!("sha384:{}", "a".repeat(96)),
            "md5:d41d8cd98f00b204e9800998ecf8427e".into(),
            "blake3:abc".into(),
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8".into(),
        ] {
            assert!(
                matches!(
                    Digest::parse(&unsupported),
                    Err(NameError::DigestAlgorithm { .. })
                ),
                "{unsupported:?}: {:?}",
                Digest::parse(&unsupported)
            );
        }
    }
}
