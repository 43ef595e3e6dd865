//! Every answer the gateway writes itself: denials per client kind, the expired-session
//! redirect, bad-request answers and built-in pages.
//!
//! Bodies are rendered once at config load ([`on_full`]) and cloned per request (`Bytes` clones
//! are reference counts). Every generated answer carries `Content-Length` and an explicit
//! `Cache-Control: no-store`; nothing internal (error text, store state) goes into a body.

use crate::config::file::OnFullFile;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// A prebuilt response: status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canned {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Canned {
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Canned {
            status,
            headers: vec![(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body: body.into(),
        }
    }

    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        let mut b: String = body.into();
        b.push('\n');
        Self::new(status, "text/plain; charset=utf-8", b)
    }

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    pub fn html(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self::new(status, "text/html; charset=utf-8", body)
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Appends a header whose value is only known at request time; invalid bytes are dropped
    /// rather than failing the answer.
    pub fn header_str(self, name: HeaderName, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(v) => self.header(name, v),
            Err(_) => self,
        }
    }

    pub fn to_header(&self) -> pingora_error::Result<ResponseHeader> {
        let mut h = ResponseHeader::build(self.status, Some(self.headers.len() + 2))?;
        for (k, v) in &self.headers {
            h.append_header(k.clone(), v.clone())?;
        }
        if !self.headers.iter().any(|(k, _)| k == http::header::CACHE_CONTROL) {
            h.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        }
        h.insert_header(http::header::CONTENT_LENGTH, self.body.len().to_string())?;
        Ok(h)
    }

    /// Writes the whole answer; the app never sees the request.
    pub async fn send(&self, session: &mut Session) -> pingora_error::Result<()> {
        let header = self.to_header()?;
        session.write_response_header(Box::new(header), self.body.is_empty()).await?;
        if !self.body.is_empty() {
            session.write_response_body(Some(self.body.clone()), true).await?;
        }
        Ok(())
    }
}

/// The seat-pool-full answer of one client kind, rendered once from its config.
pub fn on_full(conf: Option<&OnFullFile>, product: &str, seats: u32) -> Result<Canned, String> {
    let default_page = || builtin_page("web-denied", product, seats);
    let Some(c) = conf else {
        return Ok(Canned::html(StatusCode::SERVICE_UNAVAILABLE, default_page()?).header(
            http::header::RETRY_AFTER,
            HeaderValue::from_static("30"),
        ));
    };
    let status = StatusCode::from_u16(c.status.unwrap_or(503))
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .ok_or_else(|| format!("status {} must be a 4xx or 5xx code", c.status.unwrap_or(0)))?;
    let (body, default_type): (Bytes, &str) = match (&c.body, &c.page) {
        (Some(_), Some(_)) => return Err("give `body` or `page`, not both".into()),
        (Some(b), None) => (Bytes::from(b.clone()), "text/plain; charset=utf-8"),
        (None, Some(p)) => (builtin_page(p, product, seats)?, "text/html; charset=utf-8"),
        (None, None) => (default_page()?, "text/html; charset=utf-8"),
    };
    let ct = c.content_type.as_deref().unwrap_or(default_type);
    let ct = HeaderValue::from_str(ct).map_err(|_| format!("content_type `{ct}` is not a valid header value"))?;
    let mut out = Canned { status, headers: vec![(http::header::CONTENT_TYPE, ct)], body };
    for (k, v) in &c.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("`{k}` is not a valid header name"))?;
        if name == http::header::CONTENT_LENGTH || name == http::header::CONTENT_TYPE {
            return Err(format!("header `{k}` is set by the gateway; use content_type"));
        }
        let value = HeaderValue::from_str(v).map_err(|_| format!("header `{k}` has an invalid value"))?;
        out.headers.push((name, value));
    }
    Ok(out)
}

fn builtin_page(name: &str, product: &str, seats: u32) -> Result<Bytes, String> {
    match name {
        "web-denied" => Ok(Bytes::from(denied_page(product, seats))),
        other => Err(format!("unknown built-in page `{other}` (known: web-denied)")),
    }
}

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

fn denied_page(product: &str, seats: u32) -> String {
    let product = escape_html(product);
    let plural = if seats == 1 { "license" } else { "licenses" };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>All licenses are in use</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}}\
h1{{font-size:1.4em}}</style></head><body><h1>All licenses are in use</h1>\
<p>All {seats} concurrent {plural} of <strong>{product}</strong> are in use right now.</p>\
<p>Please try again in a few minutes, or ask a colleague who is done to log out.</p></body></html>\n"
    )
}

/// 302 to the login page after the seat of this session ended; clears the session cookie and
/// leaves a short-lived notice cookie the login page (or the injected script) can show.
pub fn expired_redirect(login_path: &str, cookie: &str, cookie_path: &str, reason: &str) -> Canned {
    let location = format!("{login_path}{}seatgate_notice={reason}", if login_path.contains('?') { '&' } else { '?' });
    let body = format!("Your session has ended ({reason}). Please log in again.");
    Canned::text(StatusCode::FOUND, body)
        .header_str(http::header::LOCATION, &location)
        .header_str(
            http::header::SET_COOKIE,
            &format!("{cookie}=; Path={cookie_path}; Max-Age=0; HttpOnly"),
        )
        .header_str(
            http::header::SET_COOKIE,
            &format!("seatgate_notice={reason}; Path=/; Max-Age=60; SameSite=Lax"),
        )
}

pub fn bad_request(status: StatusCode, why: &str) -> Canned {
    Canned::text(status, why)
}

pub fn no_content() -> Canned {
    Canned { status: StatusCode::NO_CONTENT, headers: vec![], body: Bytes::new() }
}

pub fn gone(why: &str) -> Canned {
    Canned::text(StatusCode::GONE, why)
}

/// The store did not answer and the product is `fail_closed`.
pub fn unavailable() -> Canned {
    Canned::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "The license service is temporarily unavailable. Please try again shortly.",
    )
    .header(http::header::RETRY_AFTER, HeaderValue::from_static("10"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(yaml: &str) -> OnFullFile {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn default_denial_names_product_and_seats() {
        let c = on_full(None, "crm <x>", 5).unwrap();
        assert_eq!(c.status, StatusCode::SERVICE_UNAVAILABLE);
        let body = std::str::from_utf8(&c.body).unwrap();
        assert!(body.contains("All licenses are in use"));
        assert!(body.contains("All 5 concurrent licenses of <strong>crm &lt;x&gt;</strong>"));
    }

    #[test]
    fn body_status_and_headers_from_config() {
        let c = on_full(
            Some(&conf("{status: 401, body: \"the user name or password is invalid\", headers: {WWW-Authenticate: Basic}}")),
            "crm",
            5,
        )
        .unwrap();
        assert_eq!(c.status, StatusCode::UNAUTHORIZED);
        assert_eq!(&c.body[..], b"the user name or password is invalid");
        assert!(c.headers.iter().any(|(k, v)| k == "www-authenticate" && v == "Basic"));
    }

    #[test]
    fn bad_on_full_is_an_error() {
        assert_eq!(on_full(Some(&conf("{status: 200}")), "p", 1).unwrap_err(), "status 200 must be a 4xx or 5xx code");
        assert!(on_full(Some(&conf("{page: nope}")), "p", 1).unwrap_err().contains("unknown built-in page `nope`"));
        assert!(on_full(Some(&conf("{body: a, page: web-denied}")), "p", 1).is_err());
        assert!(on_full(Some(&conf("{headers: {Content-Length: \"3\"}}")), "p", 1).is_err());
    }

    #[test]
    fn header_always_has_length_and_no_store() {
        let h = Canned::text(StatusCode::GONE, "x").to_header().unwrap();
        assert_eq!(h.headers.get("content-length").unwrap(), "2");
        assert_eq!(h.headers.get("cache-control").unwrap(), "no-store");
    }

    #[test]
    fn expired_redirect_clears_cookie() {
        let r = expired_redirect("/login", "SID", "/", "idle");
        assert_eq!(r.status, StatusCode::FOUND);
        let loc = r.headers.iter().find(|(k, _)| k == http::header::LOCATION).unwrap();
        assert_eq!(loc.1, "/login?seatgate_notice=idle");
        assert!(r.headers.iter().any(|(k, v)| k == http::header::SET_COOKIE && v.to_str().unwrap().starts_with("SID=; Path=/; Max-Age=0")));
    }
}
