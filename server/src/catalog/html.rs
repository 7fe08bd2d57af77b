//! HTML building blocks of the catalog pages: escaping (everything that
//! comes from the registry — names, labels, history lines — goes through
//! [`esc`] or [`url_part`]), the page frame with its embedded stylesheet,
//! and human-readable sizes and times. No JavaScript, nothing fetched.

use std::fmt::Write;

/// The stylesheet, inside every page: no second request, nothing external.
/// Dark text on white (contrast above 7:1), focus outlines kept, tables
/// scroll sideways on a phone instead of overflowing.
pub const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:16px/1.45 system-ui,sans-serif;color:#1a1a1a;background:#fff;margin:0 auto;max-width:70rem;padding:1rem}\
a{color:#0645ad}a:focus,button:focus,input:focus{outline:3px solid #f6a000;outline-offset:1px}\
header{border-bottom:1px solid #ccc;margin-bottom:1rem}header a{font-weight:700;text-decoration:none}\
h1{font-size:1.5rem;word-break:break-all}h2{font-size:1.2rem;margin-top:1.6rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f2f2f2}td.num,th.num{text-align:right;white-space:nowrap}\
code,pre{font:14px/1.4 ui-monospace,monospace;background:#f4f4f4;border-radius:3px}\
code{padding:0 .2rem;word-break:break-all}pre{padding:.5rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}\
form.inline{display:inline}label{font-weight:600;margin-right:.4rem}\
input[type=search]{font-size:1rem;padding:.3rem;width:min(22rem,100%)}\
button{font-size:1rem;padding:.3rem .8rem;cursor:pointer}button.danger{background:#a50e0e;color:#fff;border:1px solid #700}\
.note{color:#444}.flash{background:#e8f4e8;border:1px solid #6a6;padding:.5rem}.warn{background:#fdecea;border:1px solid #a50e0e;padding:.5rem}\
nav.pages{margin-top:1rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}\
@media (max-width:40rem){body{padding:.5rem}th,td{padding:.25rem}}";

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a value for a URL path or query: everything except
/// unreserved characters, `/` when `keep_slash`, and `:` and `@` (digests).
pub fn url_part(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@')
            || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A whole page: `title` (escaped here) and an already-built `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{} · berth</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head>\
<body><header><p><a href=\"/\">berth catalog</a></p></header><main>{body}</main></body></html>\n",
        esc(title)
    )
}

/// `1.5 MiB`, inside a `<data>` element carrying the exact byte count.
pub fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => "<span class=\"note\">unknown</span>".to_string(),
        Some(b) => format!(
            "<data value=\"{b}\" title=\"{b} bytes\">{}</data>",
            human_size(b)
        ),
    }
}

/// Bytes in binary units with one decimal (`512 B`, `2.0 MiB`).
pub fn human_size(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A Unix time as `2026-12-01 04:42 UTC` in a `<time>` element.
pub fn unix_time(secs: Option<u64>) -> String {
    let Some(secs) = secs else {
        return "<span class=\"note\">—</span>".to_string();
    };
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let text = httpdate::fmt_http_date(t);
    format!(
        "<time datetime=\"{}\">{}</time>",
        esc(&rfc3339(secs)),
        esc(&text)
    )
}

/// A timestamp string from an image config (RFC 3339), shown as given
/// up to the seconds.
pub fn created(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => {
            let short: String = s.chars().take(19).collect();
            format!(
                "<time datetime=\"{}\">{} UTC</time>",
                esc(s),
                esc(&short.replace('T', " "))
            )
        }
        _ => "<span class=\"note\">—</span>".to_string(),
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The first 12 hex digits of a digest, with the whole digest as a title.
pub fn short_digest(d: &str) -> String {
    let hex = d.split_once(':').map_or(d, |(_, h)| h);
    let short: String = hex.chars().take(12).collect();
    format!("<code title=\"{}\">{}</code>", esc(d), esc(&short))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_urls() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(url_part("team/app", true), "team/app");
        assert_eq!(url_part("team/app", false), "team%2Fapp");
        assert_eq!(url_part("a b\"<", true), "a%20b%22%3C");
        assert_eq!(url_part("sha256:ab", true), "sha256:ab");
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2 << 20), "2.0 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_000_000), "2026-11-30T00:53:20Z");
    }
}
