//! The catalog's pages, each built from registry answers fetched over one
//! connection ([`super::api::Api`]): the repositories list, a repository,
//! an image, and the delete confirmation. Every value from the registry is
//! escaped ([`super::html::esc`]) or URL-encoded before it is written.

use std::fmt::Write;

use http::{Method, StatusCode};
use serde_json::Value;

use super::api::{message, Api};
use super::html::{created, esc, human_size, page, short_digest, size, unix_time, url_part};
use super::Catalog;

/// The audit operations the activity tables show: tag pushes and deletes
/// (blob uploads and V1 image parts would drown them).
const SHOWN_OPS: &str = "manifest.put,tag.put,tag.delete,repository.delete";

/// Repositories per page of the list.
pub const PAGE_SIZE: usize = 50;

/// What a page handler produces: status and HTML.
pub type Page = (StatusCode, String);

/// An error page (the message escaped).
pub fn error_page(status: StatusCode, message: &str) -> Page {
    let body = format!(
        "<h1>{}</h1><p class=\"warn\">{}</p><p><a href=\"/\">All repositories</a></p>",
        esc(status.canonical_reason().unwrap_or("Error")),
        esc(message)
    );
    (status, page("Error", &body))
}

fn s(v: &Value) -> Option<&str> {
    v.as_str()
}

/// `/`: a page of repositories (filter `q`, after `last`) and recent pushes.
pub async fn repositories(api: &mut Api, q: &str, last: &str, flash: &str) -> Page {
    let query = format!(
        "/_berth/repositories?n={PAGE_SIZE}&q={}&last={}",
        url_part(q, false),
        url_part(last, false)
    );
    let list = match api.get(&query).await {
        Ok(v) => v,
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, &e),
    };
    let mut b = String::new();
    b.push_str("<h1>Repositories</h1>");
    if !flash.is_empty() {
        let _ = write!(b, "<p class=\"flash\" role=\"status\">{}</p>", esc(flash));
    }
    let _ = write!(
        b,
        "<form method=\"get\" action=\"/\" role=\"search\"><label for=\"q\">Filter by name</label>\
<input id=\"q\" name=\"q\" type=\"search\" value=\"{}\"> <button type=\"submit\">Filter</button></form>",
        esc(q)
    );
    let rows = list["repositories"].as_array().cloned().unwrap_or_default();
    let _ = write!(
        b,
        "<p class=\"note\">{} repositories{}.</p>",
        list["matching"].as_u64().unwrap_or(0),
        if q.is_empty() {
            String::new()
        } else {
            format!(" whose name contains “{}”", esc(q))
        }
    );
    if rows.is_empty() {
        b.push_str("<p>No repositories to show.</p>");
    } else {
        b.push_str(
            "<div class=\"scroll\"><table id=\"repositories\"><caption class=\"note\">Repositories you may read</caption>\
<thead><tr><th scope=\"col\">Repository</th><th scope=\"col\" class=\"num\">Tags</th>\
<th scope=\"col\" class=\"num\">Size</th><th scope=\"col\">Last push</th></tr></thead><tbody>",
        );
        for r in &rows {
            let name = s(&r["name"]).unwrap_or_default();
            let _ = write!(
                b,
                "<tr><td><a href=\"/-/repository/{}\">{}</a></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                url_part(name, true),
                esc(name),
                r["tags"].as_u64().unwrap_or(0),
                size(r["size"].as_u64()),
                unix_time(r["last_push"].as_u64()),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    b.push_str("<nav class=\"pages\" aria-label=\"Pages\">");
    if !last.is_empty() {
        let _ = write!(
            b,
            "<a href=\"/?q={}\">First page</a> ",
            esc(&url_part(q, false))
        );
    }
    if let Some(next) = s(&list["next"]) {
        let _ = write!(
            b,
            "<a rel=\"next\" href=\"/?q={}&amp;last={}\">Next page</a>",
            esc(&url_part(q, false)),
            esc(&url_part(next, false))
        );
    }
    b.push_str("</nav>");
    match api
        .get(&format!("/_berth/audit?n=10&ops={SHOWN_OPS}"))
        .await
    {
        Ok(a) => audit_section(&mut b, "Recent activity", &a, true),
        Err(e) => {
            let _ = write!(
                b,
                "<h2>Recent activity</h2><p class=\"warn\">{}</p>",
                esc(&e)
            );
        }
    }
    (StatusCode::OK, page("Repositories", &b))
}

/// The audit entries as a table (with the repository column on the list).
fn audit_section(b: &mut String, title: &str, audit: &Value, with_repo: bool) {
    let _ = write!(b, "<h2>{}</h2>", esc(title));
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        b.push_str("<p>No recorded pushes or deletes you may see.</p>");
        return;
    }
    b.push_str("<div class=\"scroll\"><table class=\"audit\"><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Who</th><th scope=\"col\">What</th>");
    if with_repo {
        b.push_str("<th scope=\"col\">Repository</th>");
    }
    b.push_str("<th scope=\"col\">Tag</th><th scope=\"col\">Digest</th></tr></thead><tbody>");
    for e in &entries {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td>",
            unix_time(e["unix"].as_u64()),
            esc(s(&e["user"]).unwrap_or("")),
            esc(s(&e["op"]).unwrap_or("")),
        );
        if with_repo {
            let repo = s(&e["repository"]).unwrap_or("");
            let _ = write!(
                b,
                "<td><a href=\"/-/repository/{}\">{}</a></td>",
                url_part(repo, true),
                esc(repo)
            );
        }
        let _ = write!(
            b,
            "<td>{}</td><td>{}</td></tr>",
            esc(s(&e["tag"]).unwrap_or("")),
            s(&e["digest"]).map(short_digest).unwrap_or_default()
        );
    }
    b.push_str("</tbody></table></div>");
}

/// The three ways to pull `name:tag`, one per line.
fn pull_commands(cat: &Catalog, name: &str, tag: &str) -> String {
    let file = name.rsplit('/').next().unwrap_or(name);
    format!(
        "docker pull {addr}/{name}:{tag}\nberth pull {remote} {name}:{tag} | docker load\nskopeo copy --src-tls-verify=false docker://{addr}/{name}:{tag} docker-archive:{file}-{tag}.tar",
        addr = cat.listen,
        remote = shell_word(&cat.pull_remote),
    )
}

/// A word safe to paste in a shell (single-quoted when it needs to be).
fn shell_word(w: &str) -> String {
    if w.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// A platform as `linux/arm64/v8`.
fn platform_name(p: &Value) -> String {
    [&p["os"], &p["architecture"], &p["variant"]]
        .iter()
        .filter_map(|v| v.as_str().filter(|s| !s.is_empty()))
        .collect::<Vec<_>>()
        .join("/")
}

/// `/-/repository/<name>`: tags with digest, size, created, platforms,
/// origin and pull commands; audit entries; delete links when allowed.
pub async fn repository(cat: &Catalog, api: &mut Api, name: &str, flash: &str) -> Page {
    let info = match api
        .call(
            Method::GET,
            &format!("/_berth/tags?repository={}", url_part(name, false)),
        )
        .await
    {
        Ok(a) if a.status == StatusCode::OK => a.json,
        Ok(a) if a.status == StatusCode::NOT_FOUND || a.status == StatusCode::BAD_REQUEST => {
            return error_page(
                StatusCode::NOT_FOUND,
                &format!("No repository {name} you may read."),
            )
        }
        Ok(a) => return error_page(StatusCode::BAD_GATEWAY, &message(&a)),
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, &e),
    };
    let name = s(&info["repository"]).unwrap_or(name).to_string();
    let may_delete = info["delete"].as_bool() == Some(true);
    let tags = info["tags"].as_array().cloned().unwrap_or_default();
    let mut b = String::new();
    let _ = write!(b, "<h1>{}</h1>", esc(&name));
    if !flash.is_empty() {
        let _ = write!(b, "<p class=\"flash\" role=\"status\">{}</p>", esc(flash));
    }
    let _ = write!(
        b,
        "<dl><dt>Tags</dt><dd>{}</dd><dt>Total size</dt><dd>{}</dd></dl>",
        tags.len(),
        size(info["size"].as_u64())
    );
    let default_tag = tags
        .iter()
        .filter_map(|t| s(&t["tag"]))
        .find(|t| *t == "latest")
        .or_else(|| tags.first().and_then(|t| s(&t["tag"])));
    if let Some(tag) = default_tag {
        let _ = write!(
            b,
            "<h2>Pull</h2><pre id=\"pull\" aria-label=\"Pull commands for {}\">{}</pre>",
            esc(tag),
            esc(&pull_commands(cat, &name, tag))
        );
    }
    b.push_str("<h2>Tags</h2>");
    if tags.is_empty() {
        b.push_str("<p>No tags.</p>");
    } else {
        b.push_str("<div class=\"scroll\"><table id=\"tags\"><thead><tr><th scope=\"col\">Tag</th><th scope=\"col\">Digest</th>\
<th scope=\"col\" class=\"num\">Size</th><th scope=\"col\">Created</th><th scope=\"col\">Platforms</th><th scope=\"col\">Origin</th>");
        if may_delete {
            b.push_str("<th scope=\"col\">Delete</th>");
        }
        b.push_str("</tr></thead><tbody>");
        for t in &tags {
            let tag = s(&t["tag"]).unwrap_or_default();
            let digest = s(&t["digest"]).unwrap_or_default();
            let image_link = |d: &str, text: &str| {
                format!(
                    "<a href=\"/-/image/{}@{}\">{}</a>",
                    url_part(&name, true),
                    url_part(d, false),
                    text
                )
            };
            let digest_cell = if digest.is_empty() {
                esc(s(&t["error"]).unwrap_or("no V2 form"))
            } else {
                image_link(digest, &short_digest(digest))
            };
            let mut platforms = String::new();
            let list = t["platforms"].as_array().cloned().unwrap_or_default();
            if t["index"].as_bool() == Some(true) {
                platforms.push_str("<ul>");
                for p in &list {
                    let pname = platform_name(p);
                    let label = if pname.is_empty() {
                        esc(s(&p["artifact_type"]).unwrap_or("unknown platform"))
                    } else {
                        esc(&pname)
                    };
                    let _ = write!(
                        platforms,
                        "<li class=\"platform\">{} {} ({})</li>",
                        image_link(s(&p["digest"]).unwrap_or_default(), &label),
                        short_digest(s(&p["digest"]).unwrap_or_default()),
                        human_size(p["size"].as_u64().unwrap_or(0))
                    );
                }
                platforms.push_str("</ul>");
            } else {
                let names: Vec<String> = list.iter().map(platform_name).collect();
                let _ = write!(
                    platforms,
                    "<span class=\"platform\">{}</span>",
                    esc(&names.join(", "))
                );
            }
            let _ = write!(
                b,
                "<tr><th scope=\"row\" class=\"tag\">{}<details><summary>pull</summary><pre>{}</pre></details></th><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td>",
                esc(tag),
                esc(&pull_commands(cat, &name, tag)),
                digest_cell,
                size(t["size"].as_u64()),
                created(s(&t["created"])),
                platforms,
                esc(s(&t["origin"]).unwrap_or("")),
            );
            if may_delete {
                let _ = write!(
                    b,
                    "<td><a class=\"delete\" href=\"/-/delete?repository={}&amp;tag={}\">Delete {}</a></td>",
                    url_part(&name, false),
                    url_part(tag, false),
                    esc(tag)
                );
            }
            b.push_str("</tr>");
        }
        b.push_str("</tbody></table></div>");
    }
    if may_delete {
        let _ = write!(
            b,
            "<p><a class=\"delete\" href=\"/-/delete?repository={}\">Delete the repository {}</a></p>",
            url_part(&name, false),
            esc(&name)
        );
    }
    match api
        .get(&format!(
            "/_berth/audit?n=20&ops={SHOWN_OPS}&repository={}",
            url_part(&name, false)
        ))
        .await
    {
        Ok(a) => audit_section(&mut b, "Who pushed what, when", &a, false),
        Err(e) => {
            let _ = write!(
                b,
                "<h2>Who pushed what, when</h2><p class=\"warn\">{}</p>",
                esc(&e)
            );
        }
    }
    (StatusCode::OK, page(&name, &b))
}

/// A JSON array of strings as one shell-like line; `None` when absent.
fn words(v: &Value) -> Option<String> {
    let a = v.as_array()?;
    Some(
        a.iter()
            .map(|w| {
                w.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| w.to_string())
            })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// `/-/image/<name>@<digest>`: an index's children, or an image's config
/// (entrypoint, env names, labels), layers with sizes and history lines,
/// and its referrers.
pub async fn image(api: &mut Api, name: &str, digest: &str) -> Page {
    let manifest = match api
        .call(Method::GET, &format!("/v2/{name}/manifests/{digest}"))
        .await
    {
        Ok(a) if a.status == StatusCode::OK => a.json,
        Ok(a) if a.status.is_client_error() => {
            return error_page(StatusCode::NOT_FOUND, &message(&a))
        }
        Ok(a) => return error_page(StatusCode::BAD_GATEWAY, &message(&a)),
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, &e),
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1><a href=\"/-/repository/{}\">{}</a>@<code>{}</code></h1>",
        url_part(name, true),
        esc(name),
        esc(digest)
    );
    let media = s(&manifest["mediaType"]).unwrap_or("(no mediaType)");
    let _ = write!(b, "<p>Manifest type: <code>{}</code></p>", esc(media));
    if let Some(children) = manifest["manifests"].as_array() {
        b.push_str("<h2>Platforms</h2><div class=\"scroll\"><table id=\"children\"><thead><tr><th scope=\"col\">Platform</th><th scope=\"col\">Digest</th><th scope=\"col\" class=\"num\">Manifest size</th></tr></thead><tbody>");
        for c in children {
            let d = s(&c["digest"]).unwrap_or_default();
            let pname = platform_name(&c["platform"]);
            let _ = write!(
                b,
                "<tr><td><a href=\"/-/image/{}@{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td></tr>",
                url_part(name, true),
                url_part(d, false),
                esc(if pname.is_empty() { s(&c["artifactType"]).unwrap_or("unknown") } else { &pname }),
                short_digest(d),
                size(c["size"].as_u64())
            );
        }
        b.push_str("</tbody></table></div>");
    } else {
        image_details(api, name, &manifest, &mut b).await;
    }
    referrers(api, name, digest, &mut b).await;
    (StatusCode::OK, page(&format!("{name}@{digest}"), &b))
}

/// Config, layers and history of an image manifest.
async fn image_details(api: &mut Api, name: &str, manifest: &Value, b: &mut String) {
    let config_digest = s(&manifest["config"]["digest"]).unwrap_or_default();
    let config = if config_digest.is_empty() {
        Value::Null
    } else {
        match api.get(&format!("/v2/{name}/blobs/{config_digest}")).await {
            Ok(c) => c,
            Err(e) => {
                let _ = write!(b, "<p class=\"warn\">Config unreadable: {}</p>", esc(&e));
                Value::Null
            }
        }
    };
    let c = &config["config"];
    b.push_str("<h2>Config</h2><dl id=\"config\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(b, "<dt>{}</dt><dd>{}</dd>", esc(k), v);
    };
    row("Created", created(s(&config["created"])));
    row("Platform", esc(&platform_name(&config)));
    row("Config", short_digest(config_digest));
    for (label, key) in [("Entrypoint", "Entrypoint"), ("Command", "Cmd")] {
        if let Some(w) = words(&c[key]) {
            row(label, format!("<code>{}</code>", esc(&w)));
        }
    }
    for (label, key) in [("Working directory", "WorkingDir"), ("User", "User")] {
        if let Some(v) = s(&c[key]).filter(|v| !v.is_empty()) {
            row(label, format!("<code>{}</code>", esc(v)));
        }
    }
    let env: Vec<String> = c["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str())
                .map(|e| e.split_once('=').map_or(e, |(k, _)| k).to_string())
                .collect()
        })
        .unwrap_or_default();
    row(
        "Environment (names only)",
        if env.is_empty() {
            "—".to_string()
        } else {
            env.iter()
                .map(|n| format!("<code class=\"env\">{}</code>", esc(n)))
                .collect::<Vec<_>>()
                .join(" ")
        },
    );
    b.push_str("</dl>");
    b.push_str("<h2>Labels</h2>");
    match c["Labels"].as_object().filter(|l| !l.is_empty()) {
        None => b.push_str("<p>No labels.</p>"),
        Some(labels) => {
            b.push_str("<div class=\"scroll\"><table id=\"labels\"><thead><tr><th scope=\"col\">Label</th><th scope=\"col\">Value</th></tr></thead><tbody>");
            for (k, v) in labels {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                let _ = write!(
                    b,
                    "<tr><td><code>{}</code></td><td>{}</td></tr>",
                    esc(k),
                    esc(&v)
                );
            }
            b.push_str("</tbody></table></div>");
        }
    }
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let digests: Vec<&str> = layers.iter().filter_map(|l| s(&l["digest"])).collect();
    let sizes = if digests.is_empty() {
        Value::Null
    } else {
        api.get(&format!(
            "/_berth/layers?repository={}&digests={}",
            url_part(name, false),
            url_part(&digests.join(","), false)
        ))
        .await
        .map(|v| v["layers"].clone())
        .unwrap_or(Value::Null)
    };
    let history = config["history"].as_array().cloned().unwrap_or_default();
    let mut steps = history
        .iter()
        .filter(|h| h["empty_layer"].as_bool() != Some(true));
    b.push_str("<h2>Layers</h2><div class=\"scroll\"><table id=\"layers\"><thead><tr><th scope=\"col\" class=\"num\">#</th><th scope=\"col\">Digest</th>\
<th scope=\"col\" class=\"num\">Compressed</th><th scope=\"col\" class=\"num\">Uncompressed</th><th scope=\"col\">Created by</th></tr></thead><tbody>");
    for (i, l) in layers.iter().enumerate() {
        let d = s(&l["digest"]).unwrap_or_default();
        let step = steps.next();
        let _ = write!(
            b,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            i + 1,
            short_digest(d),
            size(l["size"].as_u64()),
            size(sizes[d]["uncompressed"].as_u64()),
            esc(step
                .and_then(|h| s(&h["created_by"]).filter(|c| !c.is_empty()).or(s(&h["comment"])))
                .unwrap_or("")),
        );
    }
    b.push_str("</tbody></table></div>");
    if !history.is_empty() {
        b.push_str("<h2>History</h2><ol id=\"history\">");
        for h in &history {
            let step = s(&h["created_by"])
                .filter(|c| !c.is_empty())
                .map(|c| format!("<code>{}</code>", esc(c)));
            let comment = s(&h["comment"]).filter(|c| !c.is_empty()).map(esc);
            let text = match (step, comment) {
                (Some(step), Some(comment)) => format!("{step} — {comment}"),
                (Some(one), None) | (None, Some(one)) => one,
                (None, None) => "<span class=\"note\">(no description)</span>".to_string(),
            };
            let _ = write!(
                b,
                "<li>{}{}</li>",
                text,
                if h["empty_layer"].as_bool() == Some(true) {
                    " <span class=\"note\">(no layer)</span>"
                } else {
                    ""
                }
            );
        }
        b.push_str("</ol>");
    }
}

/// Signatures, SBOMs and attestations: the OCI referrers of a manifest.
async fn referrers(api: &mut Api, name: &str, digest: &str, b: &mut String) {
    b.push_str("<h2>Signatures, SBOMs and attestations</h2>");
    let answer = api
        .call(Method::GET, &format!("/v2/{name}/referrers/{digest}"))
        .await;
    let list = match answer {
        Ok(a) if a.status == StatusCode::OK => {
            a.json["manifests"].as_array().cloned().unwrap_or_default()
        }
        Ok(a) if a.status == StatusCode::NOT_FOUND => Vec::new(),
        Ok(a) => {
            let _ = write!(
                b,
                "<p class=\"warn\">Referrers could not be listed: {}</p>",
                esc(&message(&a))
            );
            return;
        }
        Err(e) => {
            let _ = write!(
                b,
                "<p class=\"warn\">Referrers could not be listed: {}</p>",
                esc(&e)
            );
            return;
        }
    };
    if list.is_empty() {
        b.push_str("<p id=\"referrers\">none</p>");
        return;
    }
    b.push_str("<div class=\"scroll\"><table id=\"referrers\"><thead><tr><th scope=\"col\">Artifact type</th><th scope=\"col\">Digest</th><th scope=\"col\" class=\"num\">Size</th><th scope=\"col\">Annotations</th></tr></thead><tbody>");
    for r in &list {
        let d = s(&r["digest"]).unwrap_or_default();
        let notes = r["annotations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        format!("<code>{}</code>: {}", esc(k), esc(v.as_str().unwrap_or("")))
                    })
                    .collect::<Vec<_>>()
                    .join("<br>")
            })
            .unwrap_or_default();
        let _ = write!(
            b,
            "<tr><td>{}</td><td><a href=\"/-/image/{}@{}\">{}</a></td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(s(&r["artifactType"]).unwrap_or("")),
            url_part(name, true),
            url_part(d, false),
            short_digest(d),
            size(r["size"].as_u64()),
            notes
        );
    }
    b.push_str("</tbody></table></div>");
}

/// `GET /-/delete?repository=R[&tag=T]`: the confirmation step, a form
/// that POSTs back with this process's token.
pub fn confirm_delete(cat: &Catalog, name: &str, tag: Option<&str>) -> Page {
    let what = match tag {
        Some(t) => format!("the tag {t} of {name}"),
        None => format!("the repository {name} and every tag in it"),
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Delete {}?</h1><p class=\"warn\">This removes {} from the registry for everyone; it cannot be undone.</p>\
<form method=\"post\" action=\"/-/delete\"><input type=\"hidden\" name=\"repository\" value=\"{}\">",
        esc(tag.unwrap_or(name)),
        esc(&what),
        esc(name)
    );
    if let Some(t) = tag {
        let _ = write!(
            b,
            "<input type=\"hidden\" name=\"tag\" value=\"{}\">",
            esc(t)
        );
    }
    let _ = write!(
        b,
        "<input type=\"hidden\" name=\"token\" value=\"{}\"><button type=\"submit\" class=\"danger\" id=\"confirm\">Delete</button> \
<a href=\"/-/repository/{}\">Cancel</a></form>",
        esc(&cat.token),
        url_part(name, true)
    );
    (StatusCode::OK, page("Confirm delete", &b))
}
