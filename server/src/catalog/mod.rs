//! The browsable catalog (issue 19): server-rendered pages of what the
//! registry holds — repositories, a repository's tags, an image — served
//! beside the registry API on the same loopback port by `berth shim` and
//! `berth-server http`.
//!
//! There is one renderer, and it talks to the registry only through the
//! registry's HTTP API over a berth-transport [`Transport`] ([`api`]): an
//! SSH channel with the shim owner's key, or the in-process service as the
//! `http` listener's user. So a page shows exactly what that identity may
//! read, and a delete is the registry's own V2 DELETE with its own checks.
//!
//! Catalog paths are `/` and `/-/...`, which no registry route uses.
//! Safety: the listeners apply the loopback `Host`/`Origin` rule
//! (`crate::loopback::loopback_refusal`) to every catalog request first; the
//! only writing request, `POST /-/delete`, also needs a same-origin
//! `Origin` header and this process's random token from the confirmation
//! form. Everything from the registry is escaped ([`html`]).

pub mod api;
pub mod html;
pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use berth_transport::transport::Transport;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::names::{Digest, RepoName, Tag};
use crate::registry::response::{full_body, ReqBody, RespBody};
use crate::registry::v2::routes::percent_decode;
use api::Api;
use pages::{error_page, Page};

/// Largest delete form body read.
const MAX_FORM: usize = 8 << 10;

/// The catalog of one listener: how to reach the registry, where it is
/// served, and the per-process token of its delete form.
pub struct Catalog {
    transport: Arc<Transport>,
    listen: SocketAddr,
    token: String,
    pull_remote: String,
}

impl Catalog {
    /// A catalog served on `listen`, reading through `transport`;
    /// `pull_remote` is the `REGISTRY` shown in `berth pull` commands.
    pub fn new(transport: Arc<Transport>, listen: SocketAddr, pull_remote: &str) -> Arc<Catalog> {
        let token: [u8; 32] = rand::random();
        Arc::new(Catalog {
            transport,
            listen,
            token: hex::encode(token),
            pull_remote: pull_remote.to_string(),
        })
    }

    /// The address printed on start (`catalog: http://127.0.0.1:5000/`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.listen)
    }

    /// Whether a request path is the catalog's rather than the registry's.
    pub fn is_catalog_path(path: &str) -> bool {
        path == "/" || path.starts_with("/-/")
    }

    /// Answers one catalog request. The caller has already applied the
    /// loopback `Host`/`Origin` rule.
    pub fn answer(
        self: Arc<Self>,
        req: Request<ReqBody>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<RespBody>> + Send>> {
        Box::pin(async move { self.answer_now(req).await })
    }

    async fn answer_now(&self, req: Request<ReqBody>) -> Response<RespBody> {
        let start = std::time::Instant::now();
        let path = req.uri().path().to_string();
        let route = route(req.method(), &path, req.uri().query());
        let result = match route {
            Route::Delete => self.delete(req).await,
            Route::Refuse(status, message) => Ok(error_page(status, &message)),
            Route::Confirm { name, tag } => Ok(pages::confirm_delete(self, &name, tag.as_deref())),
            read => match Api::open(&self.transport).await {
                Err(e) => Ok(error_page(StatusCode::BAD_GATEWAY, &e)),
                Ok(mut api) => Ok(match read {
                    Route::List { q, last, flash } => {
                        pages::repositories(&mut api, &q, &last, &flash).await
                    }
                    Route::Repository { name, flash } => {
                        pages::repository(self, &mut api, &name, &flash).await
                    }
                    Route::Image { name, digest } => {
                        pages::image(&mut api, &name, digest.as_str()).await
                    }
                    _ => error_page(StatusCode::NOT_FOUND, "no such catalog page"),
                }),
            },
        };
        let resp = match result {
            Ok((status, html)) => html_response(status, html),
            Err(resp) => resp,
        };
        tracing::debug!(
            path = %crate::logsafe::Escaped(&path),
            status = resp.status().as_u16(),
            ms = start.elapsed().as_millis(),
            "catalog page"
        );
        resp
    }

    /// `POST /-/delete`: checks Origin and token, then deletes the tag (V2
    /// DELETE of the tag) or every tag of the repository and its V1
    /// records, and redirects to what remains.
    async fn delete(&self, req: Request<ReqBody>) -> Result<Page, Response<RespBody>> {
        if let Some(refusal) = self.cross_site(req.headers()) {
            return Ok(error_page(StatusCode::FORBIDDEN, &refusal));
        }
        let Some(body) = read_form(req.into_body()).await else {
            return Ok(error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the delete form is too large or was cut short",
            ));
        };
        let form = parse_form(&String::from_utf8_lossy(&body));
        let field = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if !constant_time_eq(field("token").as_bytes(), self.token.as_bytes()) {
            return Ok(error_page(
                StatusCode::FORBIDDEN,
                "the delete form's token is not this catalog's: reload the page and confirm again",
            ));
        }
        let raw = field("repository");
        let name = match RepoName::parse(&raw) {
            Ok(_) => raw,
            Err(e) => return Ok(error_page(StatusCode::BAD_REQUEST, &e.to_string())),
        };
        let tag = match optional_tag(&field("tag")) {
            Ok(t) => t,
            Err(e) => return Ok(error_page(StatusCode::BAD_REQUEST, &e.to_string())),
        };
        let mut api = match Api::open(&self.transport).await {
            Ok(api) => api,
            Err(e) => return Ok(error_page(StatusCode::BAD_GATEWAY, &e)),
        };
        let tags: Vec<String> = match &tag {
            Some(t) => vec![t.to_string()],
            None => {
                let path = format!("/_berth/tags?repository={}", html::url_part(&name, false));
                match api.get(&path).await {
                    Ok(v) => v["tags"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|t| t["tag"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    Err(e) => return Ok(error_page(StatusCode::NOT_FOUND, &e)),
                }
            }
        };
        for t in &tags {
            let path = format!("/v2/{name}/manifests/{t}");
            match api.call(Method::DELETE, &path).await {
                Ok(a) if a.status.is_success() => {}
                Ok(a) => {
                    let status = if a.status.is_client_error() {
                        a.status
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    return Ok(error_page(
                        status,
                        &format!("deleting {name}:{t}: {}", api::message(&a)),
                    ));
                }
                Err(e) => return Ok(error_page(StatusCode::BAD_GATEWAY, &e)),
            }
        }
        let location = match &tag {
            Some(t) => format!(
                "/-/repository/{}?deleted={}",
                html::url_part(&name, true),
                html::url_part(&format!("Deleted tag {t}."), false)
            ),
            None => {
                // The V1 records (index list, repository json) go with the
                // repository; a repository that only ever had V2 tags has
                // none, and answers 404 here.
                let path = format!("/v1/repositories/{name}/");
                match api.call(Method::DELETE, &path).await {
                    Ok(a) if a.status.is_success() || a.status == StatusCode::NOT_FOUND => {}
                    Ok(a) => {
                        return Ok(error_page(
                            StatusCode::BAD_GATEWAY,
                            &format!("deleting {name}: {}", api::message(&a)),
                        ))
                    }
                    Err(e) => return Ok(error_page(StatusCode::BAD_GATEWAY, &e)),
                }
                format!(
                    "/?deleted={}",
                    html::url_part(&format!("Deleted repository {name}."), false)
                )
            }
        };
        let mut r = html_response(StatusCode::SEE_OTHER, String::new());
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(r)
    }

    /// Why a delete POST looks cross-site: a browser sends `Origin` with
    /// every POST, so one without it, or from another origin, or marked
    /// cross-site by `Sec-Fetch-Site`, is refused.
    fn cross_site(&self, headers: &HeaderMap) -> Option<String> {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let Some(origin) = origin else {
            return Some("a delete needs the browser's Origin header".to_string());
        };
        if crate::loopback::loopback_refusal(None, Some(origin), self.listen).is_some() {
            return Some(format!(
                "refusing a delete from Origin \"{}\"",
                crate::logsafe::Escaped(origin)
            ));
        }
        match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            Some(site) if site != "same-origin" => Some(format!(
                "refusing a delete sent from a {} page",
                crate::logsafe::Escaped(site)
            )),
            _ => None,
        }
    }
}

/// The registry serves the catalog beside its API through this
/// ([`crate::registry::Registry::serve_connection_guarded`]).
impl crate::registry::PageService for Catalog {
    fn claims(&self, path: &str) -> bool {
        Catalog::is_catalog_path(path)
    }

    fn answer(
        self: Arc<Self>,
        req: Request<ReqBody>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<RespBody>> + Send>> {
        Catalog::answer(self, req)
    }
}

/// A catalog request, its names validated.
enum Route {
    List {
        q: String,
        last: String,
        flash: String,
    },
    Repository {
        name: String,
        flash: String,
    },
    Image {
        name: String,
        digest: Digest,
    },
    Confirm {
        name: String,
        tag: Option<String>,
    },
    Delete,
    Refuse(StatusCode, String),
}

/// Routes `method path?query`; every name, tag and digest is validated
/// before it can reach a registry path.
fn route(method: &Method, path: &str, query: Option<&str>) -> Route {
    let q = |k: &str| crate::registry::v2::routes::query_param(query, k).unwrap_or_default();
    let read = method == Method::GET || method == Method::HEAD;
    if method == Method::POST && path == "/-/delete" {
        return Route::Delete;
    }
    if !read {
        return Route::Refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "the catalog answers GET, and POST for a confirmed delete".to_string(),
        );
    }
    if path == "/" {
        return Route::List {
            q: q("q"),
            last: q("last"),
            flash: q("deleted"),
        };
    }
    if let Some(raw) = path.strip_prefix("/-/repository/") {
        return match RepoName::parse(raw) {
            Ok(_) => Route::Repository {
                name: raw.to_string(),
                flash: q("deleted"),
            },
            Err(e) => Route::Refuse(StatusCode::NOT_FOUND, e.to_string()),
        };
    }
    if let Some(rest) = path.strip_prefix("/-/image/") {
        if let Some((n, d)) = rest.rsplit_once('@') {
            if let (Ok(_), Ok(digest)) = (RepoName::parse(n), Digest::parse(&percent_decode(d))) {
                return Route::Image {
                    name: n.to_string(),
                    digest,
                };
            }
        }
        return Route::Refuse(
            StatusCode::NOT_FOUND,
            "expected /-/image/<repository>@<digest>".to_string(),
        );
    }
    if path == "/-/delete" {
        let name = q("repository");
        return match (RepoName::parse(&name), optional_tag(&q("tag"))) {
            (Ok(_), Ok(tag)) => Route::Confirm {
                name,
                tag: tag.map(|t| t.to_string()),
            },
            (Err(e), _) | (_, Err(e)) => Route::Refuse(StatusCode::BAD_REQUEST, e.to_string()),
        };
    }
    Route::Refuse(StatusCode::NOT_FOUND, "no such catalog page".to_string())
}

/// A tag parameter: empty means none.
fn optional_tag(raw: &str) -> Result<Option<Tag>, crate::names::NameError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        Tag::parse(raw).map(Some)
    }
}

/// An HTML answer that no cache keeps and no other site may frame.
fn html_response(status: StatusCode, html: String) -> Response<RespBody> {
    let mut r = Response::new(full_body(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

/// A form body of at most [`MAX_FORM`] bytes, or `None`.
async fn read_form(mut body: ReqBody) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if out.len() + data.len() > MAX_FORM {
                return None;
            }
            out.extend_from_slice(&data);
        }
    }
    Some(out)
}

/// `application/x-www-form-urlencoded` pairs.
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Compares secrets without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_forms_and_tokens() {
        assert!(Catalog::is_catalog_path("/"));
        assert!(Catalog::is_catalog_path("/-/repository/team/app"));
        for p in [
            "/v2/",
            "/v1/_ping",
            "/_berth/info",
            "/_ping",
            "/favicon.ico",
        ] {
            assert!(!Catalog::is_catalog_path(p), "{p}");
        }
        assert_eq!(
            parse_form("repository=team%2Fapp&tag=v1&token=ab+c"),
            vec![
                ("repository".to_string(), "team/app".to_string()),
                ("tag".to_string(), "v1".to_string()),
                ("token".to_string(), "ab c".to_string())
            ]
        );
        assert_eq!(percent_decode("sha256%3Aab%"), "sha256:ab%");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn deletes_need_a_same_origin_post() {
        let t = Arc::new(Transport::Tcp {
            address: "127.0.0.1:1".into(),
        });
        let cat = Catalog::new(t, "127.0.0.1:5000".parse().unwrap(), "ssh://r");
        let mut h = HeaderMap::new();
        assert!(cat.cross_site(&h).is_some());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cat.cross_site(&h).is_some());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:5000"),
        );
        assert!(cat.cross_site(&h).is_none());
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cat.cross_site(&h).is_some());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(cat.cross_site(&h).is_none());
    }
}
