//! Reading the app's session cookie (and the gateway's device cookie) out of request headers,
//! and spotting the session cookie an app sets on a successful login.
//!
//! Parsing goes through the `cookie` crate; a malformed pair is skipped, never fatal, so a
//! garbage Cookie header degrades to "no session cookie" and the app sees it unchanged.

use http::HeaderMap;

/// The value of cookie `name` in the request. When a browser sends the name twice (cookies
/// set for two paths), RFC 6265 puts the more specific path first, so the first one wins.
pub fn request_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    for v in headers.get_all(http::header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for c in cookie::Cookie::split_parse(s).flatten() {
            if c.name() == name && !c.value().is_empty() {
                // Re-find the value in the original header text so the borrow outlives the parser.
                let (start, len) = (
                    c.value().as_ptr() as usize - s.as_ptr() as usize,
                    c.value().len(),
                );
                return s.get(start..start + len);
            }
        }
    }
    None
}

/// The session value a response sets for `name`, unless the response deletes it.
pub fn set_cookie_value(set_cookie_values: &[&str], name: &str) -> Option<String> {
    let mut found = None;
    for raw in set_cookie_values {
        let Ok(c) = cookie::Cookie::parse(*raw) else {
            continue;
        };
        if c.name() != name {
            continue;
        }
        let deleted = c.value().is_empty()
            || c.max_age().is_some_and(|a| a.whole_seconds() <= 0)
            || c.expires_datetime()
                .is_some_and(|e| e.unix_timestamp() < 86_400 * 365 * 20);
        found = if deleted {
            None
        } else {
            Some(c.value().to_string())
        };
    }
    found
}

/// Whether a device id the gateway issued looks like one (hex, bounded): anything else is
/// treated as absent, and a fresh one is issued.
pub fn valid_device(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn new_device_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The `Set-Cookie` value of the gateway's long-lived device cookie (`seats_per: user_device`).
pub fn device_set_cookie(name: &str, device: &str) -> String {
    format!("{name}={device}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::COOKIE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn finds_cookie_across_headers_and_skips_garbage() {
        let h = headers(&["a=1; ;;=x; junk", "SID=abc; b=2"]);
        assert_eq!(request_cookie(&h, "SID"), Some("abc"));
        assert_eq!(request_cookie(&h, "b"), Some("2"));
        assert_eq!(request_cookie(&h, "nope"), None);
        assert_eq!(request_cookie(&headers(&["SID="]), "SID"), None);
        assert_eq!(
            request_cookie(&headers(&["SID=first; SID=second"]), "SID"),
            Some("first")
        );
        assert_eq!(request_cookie(&headers(&[";;;==;"]), "SID"), None);
    }

    #[test]
    fn non_utf8_cookie_header_is_ignored() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"SID=\xff").unwrap(),
        );
        assert_eq!(request_cookie(&h, "SID"), None);
    }

    #[test]
    fn set_cookie_detection() {
        assert_eq!(
            set_cookie_value(&["SID=xyz; Path=/; HttpOnly"], "SID"),
            Some("xyz".into())
        );
        assert_eq!(
            set_cookie_value(&["other=1", "SID=xyz"], "SID"),
            Some("xyz".into())
        );
        assert_eq!(set_cookie_value(&["SID=; Max-Age=0"], "SID"), None);
        assert_eq!(set_cookie_value(&["SID=gone; Max-Age=0"], "SID"), None);
        assert_eq!(
            set_cookie_value(&["SID=gone; Expires=Thu, 01 Jan 1970 00:00:00 GMT"], "SID"),
            None
        );
        assert_eq!(set_cookie_value(&["NOTSID=1"], "SID"), None);
        assert_eq!(set_cookie_value(&["garbage"], "SID"), None);
    }
}
