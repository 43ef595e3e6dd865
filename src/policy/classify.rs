//! Which product, which client kind, which action: plain data in, a value out.

use crate::config::Mode;
use crate::config::{Config, Matcher, Product, UserSource};
use http::{HeaderMap, Method, StatusCode};

pub use crate::config::paths::HEARTBEAT_SUFFIX;
/// Where the buttons of the self-service offer post (below the product's `path_prefix`).
pub const SELF_SERVICE_SUFFIX: &str = ".seatgate/self-service";

/// Where a waiting page polls its ticket's place in line (below the product's `path_prefix`).
pub const QUEUE_SUFFIX: &str = ".seatgate/queue";

/// The waiting line's poll endpoint of a product whose requests live below `path_prefix`.
pub fn queue_path(path_prefix: &str) -> String {
    format!("{}/{QUEUE_SUFFIX}", path_prefix.trim_end_matches('/'))
}

/// The self-service endpoint of a product whose requests live below `path_prefix`.
pub fn self_service_path(path_prefix: &str) -> String {
    format!(
        "{}/{SELF_SERVICE_SUFFIX}",
        path_prefix.trim_end_matches('/')
    )
}

/// What the proxy pulls out of a request before asking anything.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    uri: &'a http::Uri,
}

impl<'a> RequestFacts<'a> {
    pub fn new(method: &'a Method, uri: &'a http::Uri, headers: &'a HeaderMap) -> Self {
        RequestFacts {
            path: uri.path(),
            method,
            headers,
            uri,
        }
    }

    /// The same request classified by `path` (its [`normalize_path`] form).
    pub fn with_path(self, path: &'a str) -> Self {
        RequestFacts { path, ..self }
    }

    /// The Host header (or the absolute URI's authority). Only products routed by `hosts`
    /// need it, so it is looked up on demand.
    fn host(&self) -> Option<&'a str> {
        self.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| self.uri.authority().map(|a| a.as_str()))
    }

    /// The Host name without its port; compared case-insensitively, never copied.
    fn host_name(&self) -> Option<&'a str> {
        let h = self.host()?;
        let name = match h.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => h.rsplit_once(':').map_or(h, |(n, p)| {
                if p.bytes().all(|b| b.is_ascii_digit()) {
                    n
                } else {
                    h
                }
            }),
        };
        Some(name)
    }
}

/// The path as an app is likely to read it, for matching only (the app still gets the raw
/// target): percent-encoded unreserved characters decoded (`/%6Cogin`, `/%2e%2e/`), path
/// parameters dropped (`/login;jsessionid=x`), empty segments collapsed (`//login`), and dot
/// segments resolved (RFC 3986 5.2.4), never above the root. Otherwise `//login` or
/// `/app/../login` would reach the app's login without being matched as one, or
/// `/crm/../hr/` another product's upstream under this product's rules. Borrows when there is
/// nothing to do (nearly always).
pub fn normalize_path(raw: &str) -> std::borrow::Cow<'_, str> {
    let b = raw.as_bytes();
    let clean = b.first() == Some(&b'/')
        && !b.iter().any(|&c| c == b'%' || c == b';')
        && !b.windows(2).any(|w| w == b"//" || w == b"/.");
    if clean {
        return std::borrow::Cow::Borrowed(raw);
    }
    let decoded = decode_unreserved(raw);
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(raw.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if path.is_empty() || (trailing && !out.is_empty()) {
        path.push('/');
    }
    std::borrow::Cow::Owned(path)
}

/// Decodes `%XX` where XX is an unreserved character (RFC 3986 2.3); others stay encoded.
fn decode_unreserved(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(c) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    out.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Only ASCII bytes were substituted for ASCII escapes, so the result is still UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| raw.to_string())
}

pub use crate::config::paths::prefix_matches;

/// The product a request belongs to: hosts must match (empty = any), then the longest
/// `path_prefix` wins; a product naming the host beats one that accepts any host.
pub fn product_for(cfg: &Config, f: &RequestFacts<'_>) -> Option<usize> {
    let mut host = None;
    let mut best: Option<(usize, (bool, usize))> = None;
    for (i, p) in cfg.products.iter().enumerate() {
        let host_hit = if p.hosts.is_empty() {
            false
        } else if host
            .get_or_insert_with(|| f.host_name())
            .is_some_and(|h| p.hosts.iter().any(|x| x.eq_ignore_ascii_case(h)))
        {
            true
        } else {
            continue;
        };
        if !prefix_matches(&p.path_prefix, f.path) {
            continue;
        }
        let rank = (host_hit, p.path_prefix.trim_end_matches('/').len());
        if best.is_none_or(|(_, r)| rank > r) {
            best = Some((i, rank));
        }
    }
    best.map(|(i, _)| i)
}

pub fn matcher_hits(m: &Matcher, f: &RequestFacts<'_>) -> bool {
    m.path_prefix
        .as_deref()
        .is_none_or(|p| prefix_matches(p, f.path))
        && m.method.as_ref().is_none_or(|x| x == f.method)
        && m.user_agent.as_deref().is_none_or(|ua| {
            f.headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains(ua))
        })
        && m.header.as_ref().is_none_or(|h| {
            f.headers
                .get_all(&h.name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| h.test.matches(v)))
        })
}

/// First matching client kind; `None` when the product lists none (or none matches and there
/// is no default), which means an ordinary seat-holding web client.
pub fn client_for(p: &Product, f: &RequestFacts<'_>) -> Option<usize> {
    p.clients.iter().position(|c| matcher_hits(&c.matcher, f))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Action {
    Heartbeat,
    /// The gateway's own self-service endpoint: never forwarded, whatever the method.
    SelfService,
    /// The waiting line's poll endpoint: never forwarded, whatever the method.
    Queue,
    Login,
    Logout,
    /// Pass/fail availability check: forwarded only while a seat is free.
    Check,
    /// A request carrying the session cookie: it must hold a seat.
    Session,
    /// Nothing to enforce (no cookie, exempt client, public page).
    Pass,
}

impl Action {
    /// Every action in declaration order, so `a as usize` indexes it.
    pub const ALL: [Action; 8] = [
        Action::Heartbeat,
        Action::SelfService,
        Action::Queue,
        Action::Login,
        Action::Logout,
        Action::Check,
        Action::Session,
        Action::Pass,
    ];

    /// The `action` label of `seatgate_request_duration_seconds`.
    pub fn label(self) -> &'static str {
        match self {
            Action::Heartbeat => "heartbeat",
            Action::SelfService => "self_service",
            Action::Queue => "queue",
            Action::Login => "login",
            Action::Logout => "logout",
            Action::Check => "check",
            Action::Session => "session",
            Action::Pass => "pass",
        }
    }
}

pub fn action(
    p: &Product,
    mode: Mode,
    f: &RequestFacts<'_>,
    has_session_cookie: bool,
    has_credentials: bool,
) -> Action {
    if f.path.ends_with(HEARTBEAT_SUFFIX) && f.method == Method::POST {
        return Action::Heartbeat;
    }
    if f.path.ends_with(SELF_SERVICE_SUFFIX) {
        return Action::SelfService;
    }
    if f.path.ends_with(QUEUE_SUFFIX) {
        return Action::Queue;
    }
    match mode {
        Mode::Exempt => return Action::Pass,
        Mode::Check => {
            // Checks with no credentials at all go to the app, which answers 401 itself.
            return if has_credentials || has_session_cookie {
                Action::Check
            } else {
                Action::Pass
            };
        }
        Mode::Hold => {}
    }
    // Case-insensitively: a `/LOGIN` the app (IIS, Windows-hosted Java) takes for its login
    // must not dodge the seat; on a case-sensitive app it is a 404 that takes nothing.
    if f.path.eq_ignore_ascii_case(&p.login.path) && f.method == p.login.method {
        return Action::Login;
    }
    if let Some(l) = &p.logout {
        if f.path.eq_ignore_ascii_case(&l.path) && l.method.as_ref().is_none_or(|m| m == f.method) {
            return if has_session_cookie {
                Action::Logout
            } else {
                Action::Pass
            };
        }
    }
    // The login page itself must load even with a stale cookie, or the expired redirect loops.
    if has_session_cookie && !f.path.eq_ignore_ascii_case(&p.login.path) {
        Action::Session
    } else {
        Action::Pass
    }
}

/// Why a login request cannot be read; each maps to a clear 4xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadLogin {
    TooLarge {
        limit: usize,
    },
    NotUtf8,
    MissingUser(String),
    UnsupportedType,
    /// The user is named twice with different values: the gateway cannot know which one the
    /// app will log in, so it would charge the seat to a guess.
    AmbiguousUser(String),
}

impl BadLogin {
    pub fn status(&self) -> StatusCode {
        match self {
            BadLogin::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BadLogin::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn message(&self) -> String {
        match self {
            BadLogin::TooLarge { limit } => {
                format!("login request body is larger than {limit} bytes")
            }
            BadLogin::NotUtf8 => "login request is not valid UTF-8".into(),
            BadLogin::MissingUser(f) => format!("login request has no `{f}`"),
            BadLogin::AmbiguousUser(f) => {
                format!("login request names `{f}` more than once with different values")
            }
            BadLogin::UnsupportedType => {
                "login request must be application/x-www-form-urlencoded or application/json".into()
            }
        }
    }
}

/// The string `field` of a JSON login object. serde_json keeps the last of duplicate keys
/// while other parsers keep the first, so a key given twice with different values is refused.
fn json_field(text: &str, field: &str) -> Result<String, BadLogin> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    struct Seed<'f>(&'f str);
    enum Found {
        Missing,
        One(String),
        Twice,
    }
    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Found;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Found;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Found, A::Error> {
            let mut found: Option<Option<String>> = None;
            let mut twice = false;
            while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                if k != self.0 {
                    m.next_value::<IgnoredAny>()?;
                    continue;
                }
                let v: serde_json::Value = m.next_value()?;
                let v = v.as_str().map(str::to_string);
                match &found {
                    Some(prev) if *prev != v => twice = true,
                    _ => found = Some(v),
                }
            }
            Ok(match (twice, found) {
                (true, _) => Found::Twice,
                (false, Some(Some(v))) => Found::One(v),
                (false, _) => Found::Missing,
            })
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let found = Seed(field)
        .deserialize(&mut de)
        .and_then(|f| de.end().map(|()| f));
    match found {
        Ok(Found::One(v)) => Ok(v),
        Ok(Found::Twice) => Err(BadLogin::AmbiguousUser(field.to_string())),
        _ => Err(BadLogin::MissingUser(field.to_string())),
    }
}

/// Whether the app's answer to a request carrying an unknown session cookie shows that the
/// app honours that cookie (`expired: adopt`): a success or a redirect elsewhere than the
/// login page, without deleting the cookie. A 401/403, any error, a redirect to the login
/// page or a deletion all say the cookie is not a session of the app's.
pub fn app_accepts_session(
    status: StatusCode,
    location: Option<&str>,
    login_path: &str,
    deletes_cookie: bool,
) -> bool {
    if deletes_cookie || status.as_u16() >= 400 {
        return false;
    }
    if status.is_redirection() {
        let target = location.unwrap_or("");
        // Absolute or relative, only the path counts: `https://app/login?next=/x` is the login.
        let path = match target.find("://") {
            Some(i) => target[i + 3..]
                .find('/')
                .map_or("/", |j| &target[i + 3 + j..]),
            None => target,
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        if path.eq_ignore_ascii_case(login_path) {
            return false;
        }
    }
    true
}

/// Whether the login body must be read to find the user.
pub fn needs_body(src: &UserSource) -> bool {
    matches!(src, UserSource::Form(_))
}

const MAX_USER_LEN: usize = 256;

/// The user name a login names, per `login.user`.
pub fn login_user(
    src: &UserSource,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, BadLogin> {
    let clean = |s: &str, what: &str| -> Result<Option<String>, BadLogin> {
        let s = s.trim();
        if s.is_empty() || s.len() > MAX_USER_LEN || s.chars().any(char::is_control) {
            return Err(BadLogin::MissingUser(what.to_string()));
        }
        if s.contains('\u{FFFD}') {
            return Err(BadLogin::NotUtf8);
        }
        Ok(Some(s.to_string()))
    };
    match src {
        UserSource::None => Ok(None),
        UserSource::Header(h) => {
            let mut values = headers.get_all(h).iter();
            let v = values
                .next()
                .ok_or_else(|| BadLogin::MissingUser(h.to_string()))?;
            if values.any(|other| other != v) {
                return Err(BadLogin::AmbiguousUser(h.to_string()));
            }
            let v = v.to_str().map_err(|_| BadLogin::NotUtf8)?;
            clean(v, h.as_str())
        }
        UserSource::Form(field) => {
            let ct = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                });
            let text = std::str::from_utf8(body).map_err(|_| BadLogin::NotUtf8)?;
            match ct.as_deref() {
                Some("application/x-www-form-urlencoded") => {
                    let mut values = form_urlencoded::parse(text.as_bytes())
                        .filter(|(k, _)| k == field)
                        .map(|(_, v)| v);
                    let v = values
                        .next()
                        .ok_or_else(|| BadLogin::MissingUser(field.clone()))?;
                    if values.any(|other| other != v) {
                        return Err(BadLogin::AmbiguousUser(field.clone()));
                    }
                    clean(&v, field)
                }
                Some("application/json") => {
                    let v = json_field(text, field)?;
                    clean(&v, field)
                }
                _ => Err(BadLogin::UnsupportedType),
            }
        }
    }
}

/// Credentials of a pass/fail check client (Basic/Bearer auth or an API key header).
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::AUTHORIZATION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn action_all_is_in_declaration_order() {
        // Metric series are indexed by `Action as usize`.
        for (i, a) in Action::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i, "{}", a.label());
        }
    }

    const YAML: &str = r#"
listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9090 }
store: { kind: embedded, path: /tmp/x.redb }
products:
  - name: crm
    upstream: 127.0.0.1:8000
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login, user: { form_field: username } }
    logout: { path: /logout }
    seats: 5
    clients:
      - kind: mobile
        match: { path_prefix: /sdata/mobile }
        mode: check
      - kind: outlook
        match: { user_agent: Outlook }
        mode: check
      - kind: web
  - name: reports
    upstream: 127.0.0.1:8001
    path_prefix: /reports
    session: { cookie: RSID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /reports/login }
    seats: 1
  - name: hr
    upstream: 127.0.0.1:8002
    hosts: [hr.example.com]
    session: { cookie: HSID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login }
    seats: 1
"#;

    fn facts<'a>(m: &'a Method, uri: &'a http::Uri, h: &'a HeaderMap) -> RequestFacts<'a> {
        RequestFacts::new(m, uri, h)
    }

    #[test]
    fn routes_by_host_then_longest_prefix() {
        let cfg = parse(YAML).unwrap();
        let get = Method::GET;
        let cases = [
            ("crm.example.com", "/", Some(0)),
            ("crm.example.com", "/reports/x", Some(1)),
            ("crm.example.com", "/reportsx", Some(0)),
            ("HR.example.com:8080", "/reports/x", Some(2)),
            ("hr.example.com", "/", Some(2)),
        ];
        for (host, path, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(http::header::HOST, host.parse().unwrap());
            let uri: http::Uri = path.parse().unwrap();
            assert_eq!(
                product_for(&cfg, &facts(&get, &uri, &h)),
                want,
                "{host}{path}"
            );
        }
    }

    #[test]
    fn clients_first_match_wins() {
        let cfg = parse(YAML).unwrap();
        let p = &cfg.products[0];
        let get = Method::GET;
        let mut h = HeaderMap::new();
        let uri: http::Uri = "/sdata/mobile/x".parse().unwrap();
        assert_eq!(client_for(p, &facts(&get, &uri, &h)), Some(0));
        let uri: http::Uri = "/app".parse().unwrap();
        assert_eq!(client_for(p, &facts(&get, &uri, &h)), Some(2));
        h.insert(
            http::header::USER_AGENT,
            "Microsoft Outlook 16".parse().unwrap(),
        );
        assert_eq!(client_for(p, &facts(&get, &uri, &h)), Some(1));
    }

    #[test]
    fn actions() {
        let cfg = parse(YAML).unwrap();
        let p = &cfg.products[0];
        let h = HeaderMap::new();
        let post = Method::POST;
        let get = Method::GET;
        let u = |s: &str| -> http::Uri { s.parse().unwrap() };
        let (login, logout, app, hb) = (
            u("/login"),
            u("/logout"),
            u("/app"),
            u("/.seatgate/heartbeat"),
        );
        assert_eq!(
            action(p, Mode::Hold, &facts(&post, &login, &h), false, false),
            Action::Login
        );
        assert_eq!(
            action(p, Mode::Hold, &facts(&get, &login, &h), true, false),
            Action::Pass
        );
        assert_eq!(
            action(p, Mode::Hold, &facts(&get, &logout, &h), true, false),
            Action::Logout
        );
        assert_eq!(
            action(p, Mode::Hold, &facts(&get, &logout, &h), false, false),
            Action::Pass
        );
        assert_eq!(
            action(p, Mode::Hold, &facts(&get, &app, &h), true, false),
            Action::Session
        );
        assert_eq!(
            action(p, Mode::Hold, &facts(&get, &app, &h), false, false),
            Action::Pass
        );
        assert_eq!(
            action(p, Mode::Check, &facts(&get, &app, &h), false, true),
            Action::Check
        );
        assert_eq!(
            action(p, Mode::Check, &facts(&get, &app, &h), false, false),
            Action::Pass
        );
        assert_eq!(
            action(p, Mode::Exempt, &facts(&get, &app, &h), true, true),
            Action::Pass
        );
        assert_eq!(
            action(p, Mode::Hold, &facts(&post, &hb, &h), true, false),
            Action::Heartbeat
        );
        let ss = u("/.seatgate/self-service");
        for (m, mode) in [
            (&post, Mode::Hold),
            (&get, Mode::Exempt),
            (&post, Mode::Check),
        ] {
            assert_eq!(
                action(p, mode, &facts(m, &ss, &h), false, false),
                Action::SelfService
            );
        }
        let q = u("/.seatgate/queue");
        for (m, mode) in [
            (&get, Mode::Hold),
            (&get, Mode::Exempt),
            (&post, Mode::Check),
        ] {
            assert_eq!(
                action(p, mode, &facts(m, &q, &h), true, true),
                Action::Queue
            );
        }
        assert_eq!(queue_path("/crm/"), "/crm/.seatgate/queue");
        assert_eq!(self_service_path("/"), "/.seatgate/self-service");
        assert_eq!(
            self_service_path("/reports/"),
            "/reports/.seatgate/self-service"
        );
    }

    #[test]
    fn login_user_from_form_json_and_header() {
        let form = UserSource::Form("username".into());
        let mut h = HeaderMap::new();
        assert_eq!(
            login_user(&form, &h, b"username=al"),
            Err(BadLogin::UnsupportedType)
        );
        h.insert(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            login_user(&form, &h, b"password=x&username=Al+B%C3%A9"),
            Ok(Some("Al Bé".into()))
        );
        assert_eq!(
            login_user(&form, &h, b"password=x"),
            Err(BadLogin::MissingUser("username".into()))
        );
        assert_eq!(
            login_user(&form, &h, b"username="),
            Err(BadLogin::MissingUser("username".into()))
        );
        assert_eq!(
            login_user(&form, &h, b"username=\xff\xfe"),
            Err(BadLogin::NotUtf8)
        );
        assert_eq!(
            login_user(&form, &h, b"username=%FF"),
            Err(BadLogin::NotUtf8)
        );
        h.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        assert_eq!(
            login_user(&form, &h, br#"{"username":"jo"}"#),
            Ok(Some("jo".into()))
        );
        assert_eq!(
            login_user(&form, &h, b"{"),
            Err(BadLogin::MissingUser("username".into()))
        );
        let hdr = UserSource::Header("x-user".parse().unwrap());
        assert_eq!(
            login_user(&hdr, &h, b""),
            Err(BadLogin::MissingUser("x-user".into()))
        );
        h.insert("x-user", "kim".parse().unwrap());
        assert_eq!(login_user(&hdr, &h, b""), Ok(Some("kim".into())));
        h.append("x-user", "kim".parse().unwrap());
        assert_eq!(login_user(&hdr, &h, b""), Ok(Some("kim".into())));
        h.append("x-user", "lee".parse().unwrap());
        assert_eq!(
            login_user(&hdr, &h, b""),
            Err(BadLogin::AmbiguousUser("x-user".into()))
        );
    }

    #[test]
    fn paths_normalised_for_matching() {
        let cases = [
            ("/login", "/login"),
            ("/", "/"),
            ("//login", "/login"),
            ("/a//b/", "/a/b/"),
            ("/%6Cogin", "/login"),
            ("/%6cogin", "/login"),
            ("/app/%2e%2e/login", "/login"),
            ("/app/%2E%2E/%2e%2e/../login", "/login"),
            ("/login;jsessionid=ABC", "/login"),
            ("/a;x=1/b;y=2", "/a/b"),
            ("/./login/.", "/login/"),
            ("/crm/../hr/page", "/hr/page"),
            ("/..", "/"),
            ("/a/%2Fb", "/a/%2Fb"),
            ("/%zz/%4", "/%zz/%4"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("*", "/*"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
        assert!(matches!(
            normalize_path("/plain/path"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn app_acceptance_of_an_unknown_cookie() {
        let ok = |code: u16, loc: Option<&str>, del: bool| {
            app_accepts_session(StatusCode::from_u16(code).unwrap(), loc, "/login", del)
        };
        assert!(ok(200, None, false));
        assert!(ok(302, Some("/home"), false));
        assert!(ok(304, None, false));
        assert!(!ok(200, None, true));
        assert!(!ok(401, None, false));
        assert!(!ok(403, None, false));
        assert!(!ok(500, None, false));
        assert!(!ok(302, Some("/login"), false));
        assert!(!ok(302, Some("/login?next=%2Fhome"), false));
        assert!(!ok(303, Some("https://app.example/login#x"), false));
        assert!(!ok(302, Some("/LOGIN"), false));
        assert!(ok(302, Some("https://app.example/loginhelp"), false));
    }

    #[test]
    fn a_user_named_twice_is_refused() {
        let form = UserSource::Form("username".into());
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let amb = Err(BadLogin::AmbiguousUser("username".into()));
        assert_eq!(login_user(&form, &h, b"username=a&username=b"), amb);
        assert_eq!(
            login_user(&form, &h, b"username=a&password=x&username=a"),
            Ok(Some("a".into()))
        );
        h.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        assert_eq!(
            login_user(&form, &h, br#"{"username":"a","username":"b"}"#),
            amb
        );
        assert_eq!(
            login_user(
                &form,
                &h,
                br#"{"username":"a","x":{"username":"b"},"username":"a"}"#
            ),
            Ok(Some("a".into()))
        );
        assert_eq!(
            login_user(&form, &h, br#"{"username":1}"#),
            Err(BadLogin::MissingUser("username".into()))
        );
        assert_eq!(
            login_user(&form, &h, br#"{"username":"a"} trailing"#),
            Err(BadLogin::MissingUser("username".into()))
        );
    }
}
