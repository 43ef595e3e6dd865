//! Reading the app's session cookie (and the gateway's device cookie) out of request headers,
//! and spotting the session cookie an app sets on a successful login.
//!
//! Parsing goes through the `cookie` crate; a malformed pair is skipped, never fatal, so a
//! garbage Cookie header degrades to "no session cookie" and the app sees it unchanged.

use http::HeaderMap;

/// Every non-empty value of cookie `name` in the request, in header order, borrowed from the
/// header text (re-found there so the borrow outlives the parser).
fn cookie_values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(http::header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(move |s| {
            // Only the pairs named `name` are given to the parser: the Cookie header carries
            // every cookie of the site (analytics, preferences), and parsing each one cost
            // about a thousand instructions on every request. The pairs are split as the
            // crate's `split_parse` splits them, and named as its parser names them.
            s.split(';')
                .filter(move |pair| pair.split_once('=').is_some_and(|(n, _)| n.trim() == name))
                .filter_map(|pair| cookie::Cookie::parse(pair.trim()).ok())
                .filter(|c| !c.value().is_empty())
                .filter_map(move |c| {
                    let start = c.value().as_ptr() as usize - s.as_ptr() as usize;
                    s.get(start..start + c.value().len())
                })
        })
}

/// The value of cookie `name` in the request. When a browser sends the name twice (cookies
/// set for two paths), RFC 6265 puts the more specific path first, so the first one wins.
pub fn request_cookie<'h>(headers: &'h HeaderMap, name: &'h str) -> Option<&'h str> {
    cookie_values(headers, name).next()
}

/// The session cookie as the request carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestSession<'h> {
    None,
    One(&'h str),
    /// The name came twice with different values (cookies left for two paths, or a forged
    /// header). Which one the app reads is the app's business, so the gateway cannot know
    /// which session a seat would be charged to: such a request is refused.
    Ambiguous,
}

/// The session cookie `name` of a request: its one value, or `Ambiguous` when the request
/// carries it more than once with different values (the same value twice is one session).
pub fn request_session<'h>(headers: &'h HeaderMap, name: &'h str) -> RequestSession<'h> {
    let mut values = cookie_values(headers, name);
    let Some(first) = values.next() else {
        return RequestSession::None;
    };
    if values.any(|v| v != first) {
        RequestSession::Ambiguous
    } else {
        RequestSession::One(first)
    }
}

/// What a response says about the session cookie `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CookieWord {
    Set(String),
    Deleted,
}

/// The app's last word on cookie `name` in a response's `Set-Cookie` values, if any.
/// Deletion follows RFC 6265 §5.3: `Max-Age` wins over `Expires`; a `Max-Age` of zero or less,
/// or (without `Max-Age`) an `Expires` before `now_secs`, deletes; so does an empty value,
/// which no browser sends back as a session.
pub fn set_cookie_word(
    set_cookie_values: &[&str],
    name: &str,
    now_secs: i64,
) -> Option<CookieWord> {
    let mut found = None;
    for raw in set_cookie_values {
        let Ok(c) = cookie::Cookie::parse(*raw) else {
            continue;
        };
        if c.name() != name {
            continue;
        }
        let deleted = c.value().is_empty()
            || match c.max_age() {
                Some(age) => age.whole_seconds() <= 0,
                None => c
                    .expires_datetime()
                    .is_some_and(|e| e.unix_timestamp() <= now_secs),
            };
        found = Some(if deleted {
            CookieWord::Deleted
        } else {
            CookieWord::Set(c.value().to_string())
        });
    }
    found
}

/// An answer's `Set-Cookie` values.
pub fn set_cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The session value a response sets for `name`, unless the response deletes it.
pub fn set_cookie_value(set_cookie_values: &[&str], name: &str) -> Option<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match set_cookie_word(set_cookie_values, name, now) {
        Some(CookieWord::Set(v)) => Some(v),
        _ => None,
    }
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

    /// The pre-filter finds what the crate's own split and parse find, on pairs that tell
    /// them apart if anything does: spaces, quotes, prefixes of the name, empty pairs,
    /// pairs without `=`, attributes, and `=` inside values.
    #[test]
    fn only_the_named_pairs_are_parsed_and_found_as_the_crate_finds_them() {
        let crate_values = |s: &str, name: &str| -> Vec<String> {
            cookie::Cookie::split_parse(s)
                .flatten()
                .filter(|c| c.name() == name && !c.value().is_empty())
                .map(|c| c.value().to_string())
                .collect()
        };
        let headers = [
            "SID=a",
            " SID = a ; x=1",
            "_ga=GA1.2.3; SIDX=no; XSID=no; SID=yes; lang=en",
            "SID=\"quoted\"; other=\"x\"",
            ";;SID=a;; ;SID=b",
            "SID; SID=; SID==eq; SID=a=b=c",
            "SID=a; Path=/; HttpOnly",
            "sid=lower; SID=upper",
            "  ",
            "=novalue; SID =\tt",
        ];
        for h in headers {
            let mut map = HeaderMap::new();
            map.insert(http::header::COOKIE, h.parse().unwrap());
            let ours: Vec<String> = cookie_values(&map, "SID").map(str::to_string).collect();
            assert_eq!(ours, crate_values(h, "SID"), "{h:?}");
        }
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

    #[test]
    fn app_word_on_the_session_cookie() {
        let now = 1_800_000_000; // 2027-01-15
        let w = |v: &[&str]| set_cookie_word(v, "SID", now);
        assert_eq!(w(&["SID=new; Path=/"]), Some(CookieWord::Set("new".into())));
        assert_eq!(w(&["SID=x; Max-Age=0"]), Some(CookieWord::Deleted));
        assert_eq!(w(&["SID=x; Max-Age=-1"]), Some(CookieWord::Deleted));
        assert_eq!(w(&["SID="]), Some(CookieWord::Deleted));
        assert_eq!(
            w(&["SID=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]),
            Some(CookieWord::Deleted)
        );
        // Max-Age takes precedence over a past Expires (RFC 6265 5.3 step 3).
        assert_eq!(
            w(&["SID=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=3600"]),
            Some(CookieWord::Set("x".into()))
        );
        // An Expires in the future is a set, even one within the last 20 years of the epoch.
        assert_eq!(
            w(&["SID=x; Expires=Wed, 01 Jan 2031 00:00:00 GMT"]),
            Some(CookieWord::Set("x".into()))
        );
        // The last word wins: delete then set is a rotation.
        assert_eq!(
            w(&["SID=; Max-Age=0", "SID=fresh"]),
            Some(CookieWord::Set("fresh".into()))
        );
        assert_eq!(w(&["OTHER=; Max-Age=0", "garbage"]), None);
    }

    #[test]
    fn one_session_cookie_or_an_ambiguous_one() {
        assert_eq!(
            request_session(&headers(&["a=1"]), "SID"),
            RequestSession::None
        );
        assert_eq!(
            request_session(&headers(&["SID=a; b=2"]), "SID"),
            RequestSession::One("a")
        );
        assert_eq!(
            request_session(&headers(&["SID=a", "x=1; SID=a"]), "SID"),
            RequestSession::One("a")
        );
        assert_eq!(
            request_session(&headers(&["SID=a; SID=b"]), "SID"),
            RequestSession::Ambiguous
        );
        assert_eq!(
            request_session(&headers(&["SID=a", "SID=b"]), "SID"),
            RequestSession::Ambiguous
        );
        assert_eq!(
            request_session(&headers(&["SID=; SID=a"]), "SID"),
            RequestSession::One("a")
        );
    }
}
