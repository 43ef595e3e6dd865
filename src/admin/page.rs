//! The License Usage page: static HTML, CSS and vanilla JS embedded in the binary (no build
//! step), plus the login form that starts a page session.
//!
//! Every HTML answer carries a strict Content-Security-Policy (scripts and styles from this
//! origin only, no framing), so a user name that slipped through as markup could not run.

use http::{Response, StatusCode};

const INDEX_HTML: &str = include_str!("page/index.html");
const LOGIN_HTML: &str = include_str!("page/login.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
}

pub fn html(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    let body = body.as_bytes().to_vec();
    respond(status, "text/html; charset=utf-8", body.clone())
        .header("cache-control", "no-store")
        .header("content-security-policy", CSP)
        .header("x-frame-options", "DENY")
        .body(body)
        .unwrap_or_default()
}

pub fn index() -> Response<Vec<u8>> {
    html(StatusCode::OK, INDEX_HTML)
}

/// `/assets/…`: revalidated on every load so an upgraded gateway never serves a stale script.
pub fn asset(path: &str) -> Option<Response<Vec<u8>>> {
    let (ct, body) = match path {
        "/assets/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/assets/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return None,
    };
    let body = body.as_bytes().to_vec();
    Some(
        respond(StatusCode::OK, ct, body.clone())
            .header("cache-control", "no-cache")
            .body(body)
            .unwrap_or_default(),
    )
}

/// The login form, with an error line when a login just failed.
pub fn login(status: StatusCode, error: Option<&str>) -> Response<Vec<u8>> {
    let error = error.map_or(String::new(), |e| {
        format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            crate::responses::escape_html(e)
        )
    });
    html(status, &LOGIN_HTML.replace("{{error}}", &error))
}

/// 303 to `location`, optionally setting or clearing the page cookie.
pub fn see_other(location: &str, cookie: Option<String>) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header("location", location)
        .header("cache-control", "no-store")
        .header("content-length", 0);
    if let Some(c) = cookie {
        b = b.header("set-cookie", c);
    }
    b.body(Vec::new()).unwrap_or_default()
}

/// The page session cookie: not readable by scripts, never sent cross-site, and over TLS
/// (`admin.tls`) never sent in clear.
pub fn session_cookie(value: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
        super::auth::PAGE_COOKIE,
        if secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        super::auth::PAGE_COOKIE,
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_page_escapes_its_error() {
        let r = login(StatusCode::UNAUTHORIZED, Some("<b>x</b>"));
        let body = String::from_utf8(r.body().clone()).unwrap();
        assert!(body.contains("&lt;b&gt;x&lt;/b&gt;") && !body.contains("<b>x"));
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        assert!(
            !String::from_utf8(login(StatusCode::OK, None).body().clone())
                .unwrap()
                .contains("{{error}}")
        );
    }

    #[test]
    fn assets_are_embedded() {
        assert!(asset("/assets/app.js").is_some() && asset("/assets/app.css").is_some());
        assert!(asset("/assets/../Cargo.toml").is_none());
        assert!(INDEX_HTML.contains("/assets/app.js"));
    }
}
