//! Image references as archives and the command line spell them, reduced
//! to what berth stores: a repository name and a tag.
//!
//! Archives name images as `foo:1`, `team/app:1`, `docker.io/library/foo:1`
//! (containerd) or `localhost:5000/foo:1`; the registry host part means
//! nothing to a berth registry, so it is dropped (`v2-compat.md` §1.1: the
//! path is used as typed). Digest references (`name@sha256:...`) are not
//! tags and are ignored when taken from archives.

use std::fmt;

/// A repository name and an optional tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Repository path without a registry host (`team/app`, `foo`).
    pub name: String,
    /// Tag, if the reference had one.
    pub tag: Option<String>,
}

/// Default tag when none is given.
pub const DEFAULT_TAG: &str = "latest";

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl ImageRef {
    /// Parses `[host/]name[:tag][@digest]`; the host is dropped, and so is
    /// `docker.io/`'s implicit `library/` for one-component names.
    pub fn parse(s: &str) -> Option<ImageRef> {
        let s = s.split('@').next().unwrap_or(s);
        let slash = s.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match s.get(slash..).and_then(|last| last.rfind(':')) {
            Some(i) => (s.get(..slash + i)?, Some(s.get(slash + i + 1..)?)),
            None => (s, None),
        };
        let mut parts: Vec<&str> = path.split('/').collect();
        if parts.len() > 1 {
            let first = parts.first().copied().unwrap_or_default();
            if first.contains(['.', ':']) || first == "localhost" {
                let docker_hub = first == "docker.io" || first == "index.docker.io";
                parts.remove(0);
                if docker_hub && parts.len() == 2 && parts.first() == Some(&"library") {
                    parts.remove(0);
                }
            }
        }
        if parts.is_empty() || !parts.iter().all(|c| valid_component(c)) {
            return None;
        }
        if let Some(t) = tag {
            if !valid_tag(t) {
                return None;
            }
        }
        Some(ImageRef {
            name: parts.join("/"),
            tag: tag.map(str::to_string),
        })
    }

    /// The tag, or `latest`.
    pub fn tag_or_default(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    /// Whether two names denote the same berth repository (`foo` is
    /// `library/foo`).
    pub fn same_name(a: &str, b: &str) -> bool {
        let strip = |s: &str| s.strip_prefix("library/").unwrap_or(s).to_string();
        strip(a) == strip(b)
    }

    /// The fully qualified name Docker and containerd use in archives
    /// (`docker.io/library/foo:1`, `docker.io/team/app:1`), for the
    /// `io.containerd.image.name` annotation.
    pub fn full(&self) -> String {
        let name = if self.name.contains('/') {
            self.name.clone()
        } else {
            format!("library/{}", self.name)
        };
        format!("docker.io/{name}:{}", self.tag_or_default())
    }

    /// `name:tag` as `docker images` shows it (`RepoTags`).
    pub fn short(&self) -> String {
        let name = self.name.strip_prefix("library/").unwrap_or(&self.name);
        format!("{name}:{}", self.tag_or_default())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(t) => write!(f, "{}:{t}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, tag: Option<&str>) -> Option<ImageRef> {
        Some(ImageRef {
            name: name.to_string(),
            tag: tag.map(str::to_string),
        })
    }

    #[test]
    fn parses_references() {
        let cases = [
            ("foo", r("foo", None)),
            ("foo:1", r("foo", Some("1"))),
            ("team/app:v1.2", r("team/app", Some("v1.2"))),
            ("docker.io/library/foo:1", r("foo", Some("1"))),
            ("docker.io/team/app:1", r("team/app", Some("1"))),
            ("localhost:5000/foo:1", r("foo", Some("1"))),
            ("reg.example.com/a/b/c:1", r("a/b/c", Some("1"))),
            ("foo:1@sha256:abc", r("foo", Some("1"))),
            ("Foo:1", None),
            ("foo:", None),
            ("", None),
            ("foo/../bar", None),
        ];
        for (s, want) in cases {
            assert_eq!(ImageRef::parse(s), want, "{s}");
        }
    }

    #[test]
    fn spells_names_for_archives() {
        let a = ImageRef::parse("foo:1").unwrap();
        assert_eq!(a.full(), "docker.io/library/foo:1");
        assert_eq!(a.short(), "foo:1");
        let b = ImageRef::parse("team/app").unwrap();
        assert_eq!(b.full(), "docker.io/team/app:latest");
        assert!(ImageRef::same_name("library/foo", "foo"));
        assert!(!ImageRef::same_name("team/foo", "foo"));
    }
}
