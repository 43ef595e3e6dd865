//! `on_full`: what a client kind is answered when its pool is full, validated at load into a
//! typed value. `responses` renders it (once per config snapshot); config builds no HTTP
//! answer itself, so it needs neither the page templates nor pingora's response types.

use super::file::OnFullFile;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnFull {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    /// The configured headers in file order; never Content-Type or Content-Length, which the
    /// gateway sets.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: OnFullBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFullBody {
    /// `body`: sent as written.
    Text(Bytes),
    /// `page` (or neither): a built-in page, rendered with the product's name and seats.
    Page(Page),
}

/// The built-in pages `on_full.page` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    WebDenied,
}

impl Page {
    fn parse(name: &str) -> Result<Page, String> {
        match name {
            "web-denied" => Ok(Page::WebDenied),
            other => Err(format!(
                "unknown built-in page `{other}` (known: web-denied)"
            )),
        }
    }
}

const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

impl OnFull {
    /// A client kind without `on_full` (and a request without a client kind): the built-in
    /// page, 503, and a hint to retry in 30 s.
    pub fn builtin() -> OnFull {
        OnFull {
            status: StatusCode::SERVICE_UNAVAILABLE,
            content_type: HTML,
            headers: vec![(http::header::RETRY_AFTER, HeaderValue::from_static("30"))],
            body: OnFullBody::Page(Page::WebDenied),
        }
    }
}

/// Validates one client kind's `on_full`; the error is the reason alone (the caller adds the
/// key and line).
pub fn on_full(conf: Option<&OnFullFile>) -> Result<OnFull, String> {
    let Some(c) = conf else {
        return Ok(OnFull::builtin());
    };
    let status = StatusCode::from_u16(c.status.unwrap_or(503))
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .ok_or_else(|| format!("status {} must be a 4xx or 5xx code", c.status.unwrap_or(0)))?;
    let (body, default_type) = match (&c.body, &c.page) {
        (Some(_), Some(_)) => return Err("give `body` or `page`, not both".into()),
        (Some(b), None) => (OnFullBody::Text(Bytes::from(b.clone())), TEXT),
        (None, Some(p)) => (OnFullBody::Page(Page::parse(p)?), HTML),
        (None, None) => (OnFullBody::Page(Page::WebDenied), HTML),
    };
    let content_type = match c.content_type.as_deref() {
        None => default_type,
        Some(ct) => HeaderValue::from_str(ct)
            .map_err(|_| format!("content_type `{ct}` is not a valid header value"))?,
    };
    let mut headers = Vec::with_capacity(c.headers.len());
    for (k, v) in &c.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("`{k}` is not a valid header name"))?;
        if name == http::header::CONTENT_LENGTH || name == http::header::CONTENT_TYPE {
            return Err(format!(
                "header `{k}` is set by the gateway; use content_type"
            ));
        }
        let value =
            HeaderValue::from_str(v).map_err(|_| format!("header `{k}` has an invalid value"))?;
        headers.push((name, value));
    }
    Ok(OnFull {
        status,
        content_type,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(yaml: &str) -> OnFullFile {
        serde_norway::from_str(yaml).unwrap()
    }

    fn check(yaml: &str) -> Result<OnFull, String> {
        on_full(Some(&conf(yaml)))
    }

    #[test]
    fn absent_is_the_builtin_page_with_retry_after() {
        let o = on_full(None).unwrap();
        assert_eq!(o, OnFull::builtin());
        assert_eq!(o.status, 503);
        assert_eq!(o.content_type, "text/html; charset=utf-8");
        assert_eq!(
            o.headers,
            [(http::header::RETRY_AFTER, HeaderValue::from_static("30"))]
        );
        assert_eq!(o.body, OnFullBody::Page(Page::WebDenied));
    }

    #[test]
    fn a_body_is_text_unless_typed_and_headers_keep_file_order() {
        let o = check(
            "{status: 429, body: '{\"e\":1}', content_type: application/json, \
             headers: {Retry-After: '5', X-A: b}}",
        )
        .unwrap();
        assert_eq!(o.status, 429);
        assert_eq!(o.content_type, "application/json");
        assert_eq!(o.body, OnFullBody::Text(Bytes::from_static(b"{\"e\":1}")));
        let names: Vec<_> = o.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["retry-after", "x-a"]);
        assert_eq!(
            check("{body: busy}").unwrap().content_type,
            "text/plain; charset=utf-8"
        );
        // A configured answer without headers has no Retry-After of its own.
        let page = check("{status: 403, page: web-denied}").unwrap();
        assert_eq!(
            (page.status, page.headers.len()),
            (StatusCode::FORBIDDEN, 0)
        );
        assert_eq!(page.body, OnFullBody::Page(Page::WebDenied));
        assert_eq!(check("{}").unwrap().status, 503);
    }

    #[test]
    fn each_error_says_why() {
        let err = |y: &str| check(y).unwrap_err();
        assert_eq!(err("{status: 200}"), "status 200 must be a 4xx or 5xx code");
        assert_eq!(
            err("{status: 1000}"),
            "status 1000 must be a 4xx or 5xx code"
        );
        assert_eq!(
            err("{body: a, page: web-denied}"),
            "give `body` or `page`, not both"
        );
        assert_eq!(
            err("{page: nope}"),
            "unknown built-in page `nope` (known: web-denied)"
        );
        assert_eq!(
            err("{content_type: \"a\\nb\"}"),
            "content_type `a\nb` is not a valid header value"
        );
        assert_eq!(
            err("{headers: {'a b': c}}"),
            "`a b` is not a valid header name"
        );
        assert_eq!(
            err("{headers: {Content-Length: '3'}}"),
            "header `Content-Length` is set by the gateway; use content_type"
        );
        assert_eq!(
            err("{headers: {Content-Type: x}}"),
            "header `Content-Type` is set by the gateway; use content_type"
        );
        assert_eq!(
            err("{headers: {X-A: \"a\\nb\"}}"),
            "header `X-A` has an invalid value"
        );
    }

    #[test]
    fn bad_on_full_is_an_error() {
        assert_eq!(
            check("{status: 200}").unwrap_err(),
            "status 200 must be a 4xx or 5xx code"
        );
        assert!(check("{page: nope}")
            .unwrap_err()
            .contains("unknown built-in page `nope`"));
        assert!(check("{body: a, page: web-denied}").is_err());
        assert!(check("{headers: {Content-Length: \"3\"}}").is_err());
    }
}
