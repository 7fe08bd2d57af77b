//! `berth ls`, `tags`, `rm`, `search`: repository listings and deletions
//! over the V1 API (`/v1/search`, `/v1/repositories/<name>/tags`, DELETE of
//! a tag or a repository), which every berth server answers.
//!
//! Each function returns the data; printing (human or `--json`) is the
//! caller's job.

use ::http::{Method, Request};
use serde_json::Value;

use crate::error::ClientError;
use crate::http::{self, HttpConnection};
use crate::transport::Transport;

/// Sends one request without a body and returns the parsed JSON answer
/// (`null` for an empty body), or the registry's error as [`ClientError::Status`].
pub async fn call(transport: &Transport, method: Method, path: &str) -> Result<Value, ClientError> {
    let what = http::describe(&method, path);
    let mut conn = HttpConnection::open(transport).await?;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::HOST_HEADER, http::HOST)
        .body(http::empty())
        .map_err(|e| ClientError::Usage(format!("{what}: {e}")))?;
    let resp = conn.send(req).await?;
    let status = resp.status();
    let body = http::read_small_body(&what, resp.into_body(), &conn.diagnostics()).await?;
    if !status.is_success() {
        return Err(ClientError::Status {
            what,
            status,
            message: berth_transport::wire::error_message(&body),
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
        what,
        message: format!("invalid JSON: {e}"),
    })
}

/// A repository name and an optional tag, from `NAME[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `ns/repo` or `repo`.
    pub name: String,
    /// The tag, if given.
    pub tag: Option<String>,
}

impl Reference {
    /// Splits `NAME[:TAG]` at a colon after the last `/`.
    pub fn parse(s: &str) -> Result<Reference, ClientError> {
        let slash = s.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match s[slash..].rfind(':') {
            Some(i) => (&s[..slash + i], Some(&s[slash + i + 1..])),
            None => (s, None),
        };
        let bad = |c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c));
        if name.is_empty() || name.contains(bad) || name.starts_with('/') || name.contains("//") {
            return Err(ClientError::Usage(format!("bad repository name {s:?}")));
        }
        if let Some(t) = tag {
            if t.is_empty()
                || t.contains(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
            {
                return Err(ClientError::Usage(format!("bad tag in {s:?}")));
            }
        }
        Ok(Reference {
            name: name.to_string(),
            tag: tag.map(str::to_string),
        })
    }
}

/// Every repository name (`ns/repo`), sorted.
pub async fn list(transport: &Transport) -> Result<Vec<String>, ClientError> {
    search(transport, "").await
}

/// Repository names containing `term`, sorted.
pub async fn search(transport: &Transport, term: &str) -> Result<Vec<String>, ClientError> {
    let path = if term.is_empty() {
        "/v1/search".to_string()
    } else {
        format!("/v1/search?q={}", percent_encode(term))
    };
    let v = call(transport, Method::GET, &path).await?;
    let results =
        v.get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| ClientError::Protocol {
                what: http::describe(&Method::GET, &path),
                message: "no \"results\" list".to_string(),
            })?;
    let mut names: Vec<String> = results
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    names.sort();
    Ok(names)
}

/// Who the server thinks we are and what we may do where (`GET /_berth/info`).
pub async fn info(transport: &Transport) -> Result<Value, ClientError> {
    call(transport, Method::GET, "/_berth/info").await
}

/// Human rendering of [`info`]: the identity, then one line per namespace rule.
pub fn format_info(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let anonymous = v.get("anonymous").and_then(Value::as_bool).unwrap_or(false);
    let mut out = if anonymous {
        "you are anonymous (no key)\n".to_string()
    } else {
        format!("you are {} (key {})\n", s("user"), s("key"))
    };
    let rules = v
        .get("namespaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if rules.is_empty() {
        out.push_str("you may not access any namespace\n");
    }
    for r in rules {
        let flag = |k: &str, c: char| {
            if r.get(k).and_then(Value::as_bool).unwrap_or(false) {
                c
            } else {
                '-'
            }
        };
        let ns = r.get("namespace").and_then(Value::as_str).unwrap_or("?");
        out.push_str(&format!(
            "  {}{}{}  {ns}\n",
            flag("read", 'R'),
            flag("write", 'W'),
            flag("delete", 'D')
        ));
    }
    out
}

/// Tags of a repository with their image ids, sorted by tag.
pub async fn tags(transport: &Transport, name: &str) -> Result<Vec<(String, String)>, ClientError> {
    let path = format!("/v1/repositories/{name}/tags");
    let v = call(transport, Method::GET, &path).await?;
    let map = v.as_object().ok_or_else(|| ClientError::Protocol {
        what: http::describe(&Method::GET, &path),
        message: "expected an object of tags".to_string(),
    })?;
    let mut tags: Vec<(String, String)> = map
        .iter()
        .map(|(t, id)| (t.clone(), id.as_str().unwrap_or_default().to_string()))
        .collect();
    tags.sort();
    Ok(tags)
}

/// Deletes one tag, or the whole repository when no tag is given.
pub async fn remove(transport: &Transport, reference: &Reference) -> Result<(), ClientError> {
    let path = match &reference.tag {
        Some(tag) => format!("/v1/repositories/{}/tags/{tag}", reference.name),
        None => format!("/v1/repositories/{}/", reference.name),
    };
    call(transport, Method::DELETE, &path).await.map(|_| ())
}

/// Percent-encodes a query value (everything but unreserved characters).
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("team/app:v1").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_deref()),
            ("team/app", Some("v1"))
        );
        let r = Reference::parse("app").unwrap();
        assert_eq!((r.name.as_str(), r.tag), ("app", None));
        for bad in ["", "a:", "/a", "a//b", "a b", "a:b:c", "a:t/x"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_queries() {
        assert_eq!(percent_encode("a b&c/d"), "a%20b%26c%2Fd");
    }
}
