//! Is a request of a seat holder activity (does it reset the idle timer)? And is it time to
//! warn that the seat is about to end for idleness? Plain data in, a value out.
//!
//! Three notions, from weakest to strongest evidence that a person is there:
//! * a request: the app's page asked for something (background polling does too);
//! * presence: the heartbeat says the page is still open ([`crate::presence`]);
//! * input: the person pressed a key, clicked, touched, scrolled or came back to the tab.
//!
//! `idle_by: requests` (the default) counts every request that `session.activity.ignore` does
//! not match. `idle_by: input` counts the heartbeat's input, and of requests only top-level
//! navigations and form posts that are not ignored: background calls never count.

use super::classify::{matcher_hits, RequestFacts};
use crate::config::{IdleBy, IgnoreRule, SessionPolicy};
use crate::domain::Millis;
use http::{header, Method};

/// What a request counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Counts {
    /// Resets the idle timer.
    Activity,
    /// Served as usual; the idle timer runs on.
    Ignored,
    /// Activity unless the response's media type is ignored: an entry with `content_type`
    /// matches the request. Asked again with the response's `Content-Type`.
    ByResponse,
}

/// Whether the request counts as activity. `content_type` is the response's, once known
/// (`None` before the app answered): with `None` an entry that needs it gives `ByResponse`.
pub fn counts(s: &SessionPolicy, f: &RequestFacts<'_>, content_type: Option<&str>) -> Counts {
    if s.idle_by == IdleBy::Input && !is_navigation(f) {
        return Counts::Ignored;
    }
    let mut pending = false;
    for rule in s.ignore.iter().filter(|r| matcher_hits(&r.matcher, f)) {
        if rule.content_type.is_empty() {
            return Counts::Ignored;
        }
        match content_type {
            Some(ct) if media_matches(rule, ct) => return Counts::Ignored,
            Some(_) => {}
            None => pending = true,
        }
    }
    if pending {
        Counts::ByResponse
    } else {
        Counts::Activity
    }
}

/// `content_type` entries are lower-case prefixes of the media type (`image/`, `text/css`).
fn media_matches(rule: &IgnoreRule, content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    !mime.is_empty()
        && rule
            .content_type
            .iter()
            .any(|p| mime.starts_with(p.as_str()))
}

/// A top-level navigation or a form post: something a person did, not the page's scripts.
/// Browsers say so in `Sec-Fetch-Mode` (a form post navigates too); without it (old browsers,
/// other clients) a GET that accepts HTML or a POST of a form, not marked as an XHR.
pub fn is_navigation(f: &RequestFacts<'_>) -> bool {
    let h = |n: header::HeaderName| f.headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(mode) = f
        .headers
        .get("sec-fetch-mode")
        .and_then(|v| v.to_str().ok())
    {
        return mode.eq_ignore_ascii_case("navigate");
    }
    if f.headers.contains_key("x-requested-with") {
        return false;
    }
    match *f.method {
        Method::GET | Method::HEAD => h(header::ACCEPT).is_some_and(|a| a.contains("text/html")),
        Method::POST => h(header::CONTENT_TYPE).is_some_and(|c| {
            let c = c.to_ascii_lowercase();
            c.starts_with("application/x-www-form-urlencoded")
                || c.starts_with("multipart/form-data")
        }),
        _ => false,
    }
}

/// Whether the heartbeat's input claim is taken: with `idle_by: input`, and for the "Stay
/// signed in" button of `idle_warning`. Otherwise a beat is presence only, as it always was.
pub fn takes_input(s: &SessionPolicy) -> bool {
    s.idle_by == IdleBy::Input || s.idle_warning.is_some()
}

/// Seconds until the idle end when the warning is due (`idle_warning` before it), else `None`.
pub fn idle_warning(s: &SessionPolicy, last_activity: Millis, now: Millis) -> Option<u64> {
    let warn = s.idle_warning?.as_millis() as u64;
    let end = last_activity.saturating_add(s.idle_timeout.as_millis() as u64);
    (now < end && now.saturating_add(warn) >= end).then(|| (end - now).div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Product};
    use http::{HeaderMap, HeaderValue, Uri};

    fn product(session_extra: &str) -> std::sync::Arc<Product> {
        let yaml = format!(
            "listen: 127.0.0.1:8080
admin: {{ listen: 127.0.0.1:9090 }}
store: {{ kind: embedded }}
products:
  - name: crm
    upstream: 127.0.0.1:8000
    session:
      cookie: SID
      idle_timeout: 10m
      max_lifetime: 12h
      presence_timeout: 90s
{session_extra}
    login: {{ path: /login }}
    seats: 1
"
        );
        parse(&yaml).unwrap().products[0].clone()
    }

    fn req<'a>(method: &'a Method, uri: &'a Uri, h: &'a HeaderMap) -> RequestFacts<'a> {
        RequestFacts::new(method, uri, h)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    const RULES: &str = "      activity:
        ignore:
          - { path_prefix: /api/poll }
          - { header: { name: X-Requested-With, value: XMLHttpRequest } }
          - { path_prefix: /static, content_type: [image/, text/css] }";

    #[test]
    fn requests_mode_table() {
        let p = product(RULES);
        let get = Method::GET;
        let none = headers(&[]);
        let xhr = headers(&[("x-requested-with", "XMLHttpRequest")]);
        let cases: [(&str, &HeaderMap, Option<&str>, Counts); 8] = [
            ("/page", &none, None, Counts::Activity),
            ("/api/poll", &none, None, Counts::Ignored),
            ("/api/poll/unread", &none, None, Counts::Ignored),
            ("/api/pollster", &none, None, Counts::Activity),
            ("/page", &xhr, None, Counts::Ignored),
            ("/static/a.png", &none, None, Counts::ByResponse),
            ("/static/a.png", &none, Some("image/png"), Counts::Ignored),
            (
                "/static/app.html",
                &none,
                Some("Text/HTML; charset=utf-8"),
                Counts::Activity,
            ),
        ];
        for (i, (path, h, ct, want)) in cases.into_iter().enumerate() {
            let uri: Uri = path.parse().unwrap();
            assert_eq!(
                counts(&p.session, &req(&get, &uri, h), ct),
                want,
                "case {i}"
            );
        }
        // Without rules every request is activity, as before `session.activity` existed.
        let plain = product("");
        let uri: Uri = "/api/poll".parse().unwrap();
        assert_eq!(
            counts(&plain.session, &req(&get, &uri, &xhr), None),
            Counts::Activity
        );
        assert!(!takes_input(&plain.session));
    }

    #[test]
    fn input_mode_counts_navigations_and_form_posts_only() {
        let p = product(&format!("      idle_by: input\n{RULES}"));
        assert!(takes_input(&p.session));
        let (get, post) = (Method::GET, Method::POST);
        let nav = headers(&[("sec-fetch-mode", "navigate"), ("accept", "text/html")]);
        let fetch = headers(&[("sec-fetch-mode", "cors"), ("accept", "text/html")]);
        let old_nav = headers(&[("accept", "text/html,application/xhtml+xml")]);
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let json = headers(&[("content-type", "application/json")]);
        let old_xhr = headers(&[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
        ]);
        let cases: [(&Method, &str, &HeaderMap, Counts); 8] = [
            (&get, "/page", &nav, Counts::Activity),
            (&get, "/page", &fetch, Counts::Ignored),
            (&get, "/page", &old_nav, Counts::Activity),
            (&post, "/save", &form, Counts::Activity),
            (&post, "/save", &json, Counts::Ignored),
            (&get, "/page", &old_xhr, Counts::Ignored),
            // An ignored path stays ignored even as a navigation.
            (&get, "/api/poll", &nav, Counts::Ignored),
            (&get, "/static/x.png", &nav, Counts::ByResponse),
        ];
        for (i, (m, path, h, want)) in cases.into_iter().enumerate() {
            let uri: Uri = path.parse().unwrap();
            assert_eq!(counts(&p.session, &req(m, &uri, h), None), want, "case {i}");
        }
    }

    #[test]
    fn warning_window() {
        let p = product("      idle_warning: 2m");
        let s = &p.session;
        assert!(takes_input(s));
        let min = 60_000;
        assert_eq!(idle_warning(s, 0, 7 * min), None);
        assert_eq!(idle_warning(s, 0, 8 * min - 1), None);
        assert_eq!(idle_warning(s, 0, 8 * min), Some(120));
        assert_eq!(idle_warning(s, 0, 10 * min - 1500), Some(2));
        assert_eq!(idle_warning(s, 0, 10 * min), None, "over: the seat is gone");
        assert_eq!(idle_warning(&product("").session, 0, 9 * min), None);
    }
}
