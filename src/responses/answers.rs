//! Fixed answers of the request path: the expired-session redirect, bad requests, rate
//! limits and the store-down answer.

use super::Canned;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// 302 to the login page after the seat of this session ended; clears the session cookie and
/// leaves a short-lived notice cookie the login page (or the injected script) can show.
pub fn expired_redirect(login_path: &str, cookie: &str, cookie_path: &str, reason: &str) -> Canned {
    let location = format!(
        "{login_path}{}seatgate_notice={reason}",
        if login_path.contains('?') { '&' } else { '?' }
    );
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

/// A request carrying the session cookie twice with different values: refused, and the copy
/// at the app's cookie path deleted so that logging in again gives the browser one session.
pub fn ambiguous_session(cookie: &str, cookie_path: &str) -> Canned {
    Canned::text(
        StatusCode::BAD_REQUEST,
        format!(
            "This request carries the session cookie `{cookie}` more than once with different \
             values, so it cannot be told which session it belongs to. Log in again."
        ),
    )
    .header_str(
        http::header::SET_COOKIE,
        &format!("{cookie}=; Path={cookie_path}; Max-Age=0; HttpOnly"),
    )
}

pub fn bad_request(status: StatusCode, why: &str) -> Canned {
    Canned::text(status, why)
}

pub fn no_content() -> Canned {
    Canned {
        status: StatusCode::NO_CONTENT,
        headers: vec![],
        body: Bytes::new(),
        head: None,
    }
}

pub fn gone(why: &str) -> Canned {
    Canned::text(StatusCode::GONE, why)
}

/// A per-client rate limit hit (heartbeat floods).
pub fn too_many(why: &str, retry_after_secs: u64) -> Canned {
    Canned::text(StatusCode::TOO_MANY_REQUESTS, why).header_str(
        http::header::RETRY_AFTER,
        &retry_after_secs.max(1).to_string(),
    )
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

    #[test]
    fn expired_redirect_clears_cookie() {
        let r = expired_redirect("/login", "SID", "/", "idle");
        assert_eq!(r.status, StatusCode::FOUND);
        let loc = r
            .headers
            .iter()
            .find(|(k, _)| k == http::header::LOCATION)
            .unwrap();
        assert_eq!(loc.1, "/login?seatgate_notice=idle");
        assert!(r.headers.iter().any(|(k, v)| k == http::header::SET_COOKIE
            && v.to_str().unwrap().starts_with("SID=; Path=/; Max-Age=0")));
    }
}
