//! Presence: the heartbeat script injected into the app's HTML pages, so a closed browser
//! frees its seat after `presence_timeout` instead of `idle_timeout`.
//!
//! Everything here is pure and unit-tested without a socket: which responses get the script
//! ([`plan`]), the script itself ([`script`]), the CSP header rewrite ([`csp`]), the body
//! splice over (compressed) chunks ([`inject`]) and the heartbeat flood limit ([`limit`]).
//! The proxy only calls these from its response filters and heartbeat handler. Presence rules
//! themselves (when a seat ends) live in `policy::seat`; this module never decides seats.

pub mod csp;
pub mod inject;
pub mod limit;
pub mod script;
pub mod warned;

pub use inject::{Encoding, InjectError, Injector};
pub use limit::{HeartbeatLimiter, Verdict};
pub use script::Script;
pub use warned::IdleWarnings;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};
use pingora_http::ResponseHeader;

pub use crate::config::paths::beat_period;

/// Text or an attribute value made safe inside HTML; the script tag's nonce and every page
/// `responses` renders use it.
pub fn escape_html(s: &str) -> String {
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

/// Whether a heartbeat is the `pagehide` beacon (`?hint=hide`).
pub fn is_hide_hint(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "hint" && v == "hide")
    })
}

/// How the gateway's banners look: the end notice below, and the idle warning the heartbeat
/// script builds (`script::Extras::warn`).
pub const BANNER_STYLE: &str = "position:fixed;top:0;left:0;right:0;z-index:2147483647;\
padding:.6em 1em;background:#b00020;color:#fff;font:bold 15px sans-serif;text-align:center";

/// The banner spliced into the pages of a session an administrator is ending with a grace
/// period, so the user sees it (the `X-Seatgate-Notice` header is for programs). Plain
/// markup with inline style: no script, so no CSP change is needed for it to show.
pub fn ending_notice(seconds: u64) -> Bytes {
    Bytes::from(format!(
        "<div role=\"alert\" data-seatgate-notice style=\"{BANNER_STYLE}\">Your session will be \
ended by an administrator in {seconds} s. Save your work now.</div>"
    ))
}

/// Whether a heartbeat reports input since the previous beat (`?input=1`).
pub fn is_input(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "input" && v == "1")
    })
}

/// How one response is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Rewrite {
    pub encoding: Encoding,
    pub csp: csp::CspPlan,
}

fn values<'h>(h: &'h HeaderMap, name: &HeaderName) -> Vec<&'h str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn is_html(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let mime = parts.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("text/html") {
        return false;
    }
    // The splice works on bytes: only ASCII-compatible charsets (UTF-16/32 pages are left alone).
    !parts.any(|p| {
        p.split_once('=').is_some_and(|(k, v)| {
            let v = v.trim().trim_matches('"').to_ascii_lowercase();
            k.trim().eq_ignore_ascii_case("charset")
                && (v.starts_with("utf-16") || v.starts_with("utf-32"))
        })
    })
}

/// Whether this response is a page a browser renders and we may change: a top-level (or
/// framed) document, 2xx with a body, `text/html`, a coding we can see through, and not
/// marked `no-transform`. Everything else streams through untouched.
pub fn plan(
    script_hash: Option<&str>,
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
) -> Option<Rewrite> {
    if method == Method::HEAD
        || !status.is_success()
        || matches!(status.as_u16(), 204..=206)
        || resp.contains_key(header::CONTENT_RANGE)
    {
        return None;
    }
    if !resp
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_html)
    {
        return None;
    }
    // Fragments fetched by the page's own scripts are not pages: they must stay as the app
    // sent them (a script appended to a fragment would run again in the page).
    let dest = req.get("sec-fetch-dest").and_then(|v| v.to_str().ok());
    if dest.is_some_and(|d| !matches!(d, "document" | "iframe" | "frame")) {
        return None;
    }
    if req
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest"))
    {
        return None;
    }
    let no_transform = values(resp, &header::CACHE_CONTROL).iter().any(|v| {
        v.split(',')
            .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
    });
    if no_transform {
        return None;
    }
    if resp
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0")
    {
        return None;
    }
    let encodings = values(resp, &header::CONTENT_ENCODING);
    let encoding = match encodings.as_slice() {
        [] => Encoding::Identity,
        [one] => Encoding::from_header(Some(one))?,
        _ => return None,
    };
    // Only a script needs the page's CSP to let it run; the notice banner is plain markup.
    let csp = script_hash.map_or_else(csp::CspPlan::default, |hash| {
        csp::plan(
            &values(resp, &header::CONTENT_SECURITY_POLICY),
            &values(resp, &header::CONTENT_SECURITY_POLICY_REPORT_ONLY),
            hash,
        )
    });
    Some(Rewrite { encoding, csp })
}

impl Rewrite {
    /// Adjusts the response header for a body whose length changes: no `Content-Length`
    /// (chunked for HTTP/1.1 clients, `chunked == true`; close-delimited otherwise), a weak
    /// ETag (the bytes differ from the app's), no ranges, and the CSP values the plan needs.
    pub fn apply(&self, resp: &mut ResponseHeader, chunked: bool) -> pingora_error::Result<()> {
        resp.remove_header(&header::CONTENT_LENGTH);
        if chunked && !resp.headers.contains_key(header::TRANSFER_ENCODING) {
            resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        }
        resp.remove_header(&header::ACCEPT_RANGES);
        if let Some(etag) = resp
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|e| !e.starts_with("W/"))
            .map(|e| format!("W/{e}"))
        {
            resp.insert_header(header::ETAG, etag)?;
        }
        for (name, new) in [
            (header::CONTENT_SECURITY_POLICY, &self.csp.enforce),
            (
                header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
                &self.csp.report_only,
            ),
        ] {
            if let Some(values) = new {
                resp.remove_header(&name);
                for v in values {
                    resp.append_header(name.clone(), v.as_str())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn script() -> Script {
        Script::new("/.seatgate/heartbeat", Duration::from_secs(3))
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn decide(
        method: Method,
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Option<Rewrite> {
        plan(
            Some(&script().csp_hash),
            &method,
            &h(req),
            StatusCode::from_u16(status).unwrap(),
            &h(resp),
        )
    }

    const HTML: (&str, &str) = ("content-type", "text/html; charset=utf-8");

    #[test]
    fn notice_banner_is_plain_markup_naming_the_seconds() {
        let b = ending_notice(30);
        let t = std::str::from_utf8(&b).unwrap();
        assert!(t.contains("ended by an administrator in 30 s"), "{t}");
        assert!(!t.contains("<script"), "{t}");
        // Without a script the page's CSP is left alone.
        let r = plan(
            None,
            &Method::GET,
            &h(&[]),
            StatusCode::OK,
            &h(&[HTML, ("content-security-policy", "script-src 'self'")]),
        )
        .unwrap();
        assert_eq!(r.csp, csp::CspPlan::default());
    }

    #[test]
    fn beat_period_and_hint() {
        assert_eq!(beat_period(Some(Duration::from_secs(90))), 30_000);
        assert_eq!(beat_period(Some(Duration::from_secs(3))), 1_000);
        assert_eq!(beat_period(None), 30_000);
        assert!(is_hide_hint(Some(script::HIDE_HINT_QUERY)));
        assert!(is_hide_hint(Some("a=1&hint=hide")));
        assert!(!is_hide_hint(Some("hint=hidden")));
        assert!(!is_hide_hint(None));
    }

    #[test]
    fn html_pages_get_the_script() {
        let r = decide(Method::GET, &[], 200, &[HTML]).unwrap();
        assert_eq!(r.encoding, Encoding::Identity);
        assert_eq!(r.csp, csp::CspPlan::default());
        let r = decide(
            Method::POST,
            &[("sec-fetch-dest", "document")],
            200,
            &[("content-type", "TEXT/HTML"), ("content-encoding", "gzip")],
        )
        .unwrap();
        assert_eq!(r.encoding, Encoding::Gzip);
    }

    #[test]
    fn everything_else_is_left_alone() {
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Method, Headers, u16, Headers)] = &[
            (
                Method::GET,
                &[],
                200,
                &[("content-type", "application/json")],
            ),
            (Method::GET, &[], 200, &[("content-type", "text/htmlx")]),
            (Method::GET, &[], 200, &[]),
            (Method::HEAD, &[], 200, &[HTML]),
            (Method::GET, &[], 204, &[HTML]),
            (Method::GET, &[], 206, &[HTML]),
            (Method::GET, &[], 304, &[HTML]),
            (Method::GET, &[], 302, &[HTML]),
            (Method::GET, &[], 500, &[HTML]),
            (Method::GET, &[], 200, &[HTML, ("content-encoding", "zstd")]),
            (
                Method::GET,
                &[],
                200,
                &[
                    HTML,
                    ("content-encoding", "gzip"),
                    ("content-encoding", "br"),
                ],
            ),
            (
                Method::GET,
                &[],
                200,
                &[HTML, ("cache-control", "private, no-transform")],
            ),
            (Method::GET, &[], 200, &[HTML, ("content-length", "0")]),
            (
                Method::GET,
                &[],
                200,
                &[("content-type", "text/html; charset=UTF-16")],
            ),
            (Method::GET, &[("sec-fetch-dest", "empty")], 200, &[HTML]),
            (
                Method::GET,
                &[("x-requested-with", "XMLHttpRequest")],
                200,
                &[HTML],
            ),
        ];
        for (m, req, status, resp) in cases {
            assert_eq!(
                decide(m.clone(), req, *status, resp),
                None,
                "{m} {req:?} {status} {resp:?}"
            );
        }
    }

    #[test]
    fn headers_are_adjusted_for_the_new_body() {
        let resp_h = [
            HTML,
            ("content-length", "120"),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
            ("content-security-policy", "default-src 'self'"),
            ("content-encoding", "gzip"),
        ];
        let r = decide(Method::GET, &[], 200, &resp_h).unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (k, v) in resp_h {
            resp.append_header(k.to_string(), v).unwrap();
        }
        r.apply(&mut resp, true).unwrap();
        let get = |n: &str| resp.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("content-length"), None);
        assert_eq!(get("transfer-encoding").as_deref(), Some("chunked"));
        assert_eq!(get("accept-ranges"), None);
        assert_eq!(get("etag").as_deref(), Some("W/\"v1\""));
        assert_eq!(get("content-encoding").as_deref(), Some("gzip"));
        assert_eq!(
            get("content-security-policy").unwrap(),
            format!(
                "default-src 'self'; script-src 'self' {}",
                script().csp_hash
            )
        );
        // An HTTP/1.0 client gets a close-delimited body instead.
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("content-length", "5").unwrap();
        r.apply(&mut resp, false).unwrap();
        assert!(resp.headers.get("transfer-encoding").is_none());
        assert!(resp.headers.get("content-length").is_none());
    }
}
