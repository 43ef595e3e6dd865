//! Admin authentication: HTTP Basic against argon2 hashes, with a short-lived cache of
//! verified credentials and a per-peer throttle on failures; and the License Usage page's own
//! login: a signed session cookie plus a CSRF token for the page's POSTs.
//!
//! Page sessions are signed with a key drawn at process start (HMAC-SHA256), so a cookie can
//! neither be forged nor outlive the process; they are also kept in a bounded table so logout
//! revokes one at once. The CSRF token is the HMAC of the session id under the same key: it
//! needs no storage, and a token from one session is useless in another.

use crate::config::{Config, Permission, Role};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use dashmap::DashMap;
use http::{Response, StatusCode};
use pingora_http::RequestHeader;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// The page's session cookie.
pub const PAGE_COOKIE: &str = "seatgate_admin";
/// The header the page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Verified credentials are trusted this long before argon2 runs again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Bounds both maps: they are keyed by client input.
const MAX_ENTRIES: usize = 10_000;
const FAILURES_PER_MINUTE: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub products: Vec<String>,
    pub permission: Permission,
}

#[derive(Default)]
pub struct Authn {
    verified: DashMap<[u8; 32], (String, String, Instant)>,
    failures: DashMap<String, (u32, Instant)>,
    pub pages: PageSessions,
}

/// How a request proved who it is. Only cookie-authenticated writes need a CSRF token: a
/// browser attaches the cookie to cross-site requests, while Basic API clients send their
/// credentials on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Basic,
    Cookie { sid: [u8; 16] },
}

pub use crate::crypto::{ct_eq, hmac_sha256};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// A fingerprint of the admin's password hash: changing the password in the config (and
/// reloading) ends that admin's page sessions.
fn hash_fingerprint(password_hash: &str) -> [u8; 8] {
    let d = Sha256::digest(password_hash.as_bytes());
    let mut f = [0u8; 8];
    f.copy_from_slice(&d[..8]);
    f
}

struct PageSession {
    name: String,
    expires: Instant,
    fingerprint: [u8; 8],
}

/// Logged-in page sessions. Bounded: logins are throttled per peer, and expired entries are
/// dropped before a new one is refused.
pub struct PageSessions {
    key: [u8; 32],
    live: DashMap<[u8; 16], PageSession>,
}

impl Default for PageSessions {
    fn default() -> Self {
        PageSessions {
            key: rand::random(),
            live: DashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// Not ours, tampered with, or from another process.
    Invalid,
    Expired,
    /// Logged out, or the admin's password or entry changed.
    Revoked,
}

impl PageSessions {
    /// Starts a session for `name`; returns the cookie value, or `None` when the table is full.
    pub fn start(&self, cfg: &Config, name: &str, ttl: Duration) -> Option<String> {
        let u = cfg.admin.users.iter().find(|u| u.name == name)?;
        if self.live.len() >= MAX_ENTRIES {
            let now = Instant::now();
            self.live.retain(|_, s| s.expires > now);
            if self.live.len() >= MAX_ENTRIES {
                crate::metrics::limit_reached("admin_page_sessions");
                return None;
            }
        }
        let sid: [u8; 16] = rand::random();
        let expires_unix = crate::ledger::now_ms() / 1000 + ttl.as_secs();
        self.live.insert(
            sid,
            PageSession {
                name: name.to_string(),
                expires: Instant::now() + ttl,
                fingerprint: hash_fingerprint(&u.password_hash),
            },
        );
        let mut payload = Vec::with_capacity(24 + name.len());
        payload.extend_from_slice(&sid);
        payload.extend_from_slice(&expires_unix.to_be_bytes());
        payload.extend_from_slice(name.as_bytes());
        let mac = hmac_sha256(&self.key, &payload);
        Some(format!("{}.{}", b64(&payload), b64(&mac)))
    }

    /// The admin a cookie value stands for, checked against the current config.
    pub fn check(&self, cfg: &Config, value: &str) -> Result<(Principal, [u8; 16]), CookieError> {
        let (payload, mac) = value.split_once('.').ok_or(CookieError::Invalid)?;
        let (payload, mac) = (
            unb64(payload).ok_or(CookieError::Invalid)?,
            unb64(mac).ok_or(CookieError::Invalid)?,
        );
        if payload.len() < 24 || !ct_eq(&hmac_sha256(&self.key, &payload), &mac) {
            return Err(CookieError::Invalid);
        }
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&payload[..16]);
        let name = std::str::from_utf8(&payload[24..]).map_err(|_| CookieError::Invalid)?;
        let live = self.live.get(&sid).ok_or(CookieError::Revoked)?;
        if live.expires <= Instant::now() {
            drop(live);
            self.live.remove(&sid);
            return Err(CookieError::Expired);
        }
        let current = cfg.admin.users.iter().find(|u| u.name == name);
        if live.name != name
            || current.is_none_or(|u| hash_fingerprint(&u.password_hash) != live.fingerprint)
        {
            drop(live);
            self.live.remove(&sid);
            return Err(CookieError::Revoked);
        }
        let p = Authn::principal(cfg, name).ok_or(CookieError::Revoked)?;
        Ok((p, sid))
    }

    pub fn end(&self, sid: &[u8; 16]) {
        self.live.remove(sid);
    }

    pub fn csrf_token(&self, sid: &[u8; 16]) -> String {
        let mut msg = b"csrf\0".to_vec();
        msg.extend_from_slice(sid);
        b64(&hmac_sha256(&self.key, &msg))
    }

    pub fn csrf_ok(&self, sid: &[u8; 16], token: Option<&str>) -> bool {
        token.is_some_and(|t| ct_eq(t.as_bytes(), self.csrf_token(sid).as_bytes()))
    }
}

fn unauthorized(msg: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({ "error": msg }).to_string().into_bytes();
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(
            "www-authenticate",
            "Basic realm=\"seatgate\", charset=\"UTF-8\"",
        )
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

fn too_many() -> Response<Vec<u8>> {
    let body = br#"{"error":"too many failed logins; wait a minute"}"#.to_vec();
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("retry-after", "60")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

/// `(user, password)` of a Basic `Authorization` header.
pub fn basic_credentials(req: &RequestHeader) -> Option<(String, String)> {
    let v = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl Authn {
    pub fn principal(cfg: &Config, name: &str) -> Option<Principal> {
        cfg.admin
            .users
            .iter()
            .find(|u| u.name == name)
            .map(|u| Principal {
                name: u.name.clone(),
                role: u.role,
                products: u.products.clone(),
                permission: u.permission,
            })
    }

    /// Checks a name and password; `Ok(None)` when they do not match.
    pub fn verify(&self, cfg: &Config, user: &str, password: &str) -> Option<Principal> {
        let u = cfg.admin.users.iter().find(|u| u.name == user)?;
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.update([0]);
        h.update(u.password_hash.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if let Some(e) = self.verified.get(&key) {
            if e.2.elapsed() < CACHE_TTL && e.1 == u.password_hash {
                return Self::principal(cfg, user);
            }
        }
        let parsed = PasswordHash::new(&u.password_hash).ok()?;
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .ok()?;
        if self.verified.len() >= MAX_ENTRIES {
            crate::metrics::limit_reached("admin_credentials");
            self.verified.clear();
        }
        self.verified.insert(
            key,
            (user.to_string(), u.password_hash.clone(), Instant::now()),
        );
        Self::principal(cfg, user)
    }

    /// Whether logins from `peer`, or for `user`, failed too often in the last minute. The
    /// per-name limit stops one account's password being sprayed from many addresses.
    pub fn throttled(&self, peer: Option<&str>, user: &str) -> bool {
        throttle_keys(peer, user).iter().any(|k| {
            self.failures.get(k).is_some_and(|f| {
                f.1.elapsed() < Duration::from_secs(60) && f.0 >= FAILURES_PER_MINUTE
            })
        })
    }

    pub fn failed(&self, peer: Option<&str>, user: &str) {
        if self.failures.len() >= MAX_ENTRIES {
            self.failures
                .retain(|_, f| f.1.elapsed() < Duration::from_secs(60));
        }
        for k in throttle_keys(peer, user) {
            // Past the bound (a flood of names) new keys are not tracked; the peer's own key
            // usually is already, so the flood itself is still throttled.
            if self.failures.len() >= MAX_ENTRIES && !self.failures.contains_key(&k) {
                crate::metrics::limit_reached("admin_failures");
                continue;
            }
            let mut e = self.failures.entry(k).or_insert((0, Instant::now()));
            if e.1.elapsed() >= Duration::from_secs(60) {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }

    /// Checks a name and password with the per-peer throttle; `Err` is the answer to send.
    pub fn login(
        &self,
        cfg: &Config,
        user: &str,
        password: &str,
        peer: Option<&str>,
    ) -> Result<Principal, Box<Response<Vec<u8>>>> {
        if self.throttled(peer, user) {
            return Err(Box::new(too_many()));
        }
        match self.verify(cfg, user, password) {
            Some(p) => Ok(p),
            None => {
                self.failed(peer, user);
                log::warn!(
                    "admin login failed for user {user:?} from {}",
                    peer.unwrap_or("?")
                );
                Err(Box::new(unauthorized("wrong user name or password")))
            }
        }
    }

    /// HTTP Basic first (API clients), else the page's session cookie.
    pub fn authenticate(
        &self,
        cfg: &Config,
        req: &RequestHeader,
        peer: Option<&str>,
    ) -> Result<(Principal, Via), Box<Response<Vec<u8>>>> {
        if req.headers.contains_key(http::header::AUTHORIZATION) {
            let Some((user, password)) = basic_credentials(req) else {
                return Err(Box::new(unauthorized(
                    "malformed Authorization header (HTTP Basic expected)",
                )));
            };
            return self
                .login(cfg, &user, &password, peer)
                .map(|p| (p, Via::Basic));
        }
        let Some(value) = crate::policy::cookies::request_cookie(&req.headers, PAGE_COOKIE) else {
            return Err(Box::new(unauthorized("authentication required")));
        };
        match self.pages.check(cfg, value) {
            Ok((p, sid)) => Ok((p, Via::Cookie { sid })),
            Err(CookieError::Expired) => Err(Box::new(unauthorized("page session expired"))),
            Err(_) => Err(Box::new(unauthorized("not logged in"))),
        }
    }
}

/// The failure counters a login attempt adds to: its address and its user name.
fn throttle_keys(peer: Option<&str>, user: &str) -> Vec<String> {
    let mut keys = vec![format!("user:{user}")];
    if let Some(p) = peer {
        let ip = p.rsplit_once(':').map_or(p, |(ip, _)| ip);
        keys.push(format!("ip:{ip}"));
    }
    keys
}

/// A PHC argon2id hash of `password` (for `seatgate hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parsing() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(basic_credentials(&r), None);
        r.insert_header("authorization", "Basic YWRtaW46czNjcjN0Og==")
            .unwrap();
        assert_eq!(
            basic_credentials(&r),
            Some(("admin".into(), "s3cr3t:".into()))
        );
        r.insert_header("authorization", "Basic !!!").unwrap();
        assert_eq!(basic_credentials(&r), None);
        r.insert_header("authorization", "Bearer abc").unwrap();
        assert_eq!(basic_credentials(&r), None);
    }

    #[test]
    fn failures_throttle_by_address_and_by_user_name() {
        let a = Authn::default();
        for i in 0..FAILURES_PER_MINUTE {
            // One account sprayed from many addresses.
            a.failed(Some(&format!("10.0.0.{i}:5000")), "admin");
        }
        assert!(a.throttled(Some("10.9.9.9:1"), "admin"));
        assert!(!a.throttled(Some("10.9.9.9:1"), "other"));
        assert!(!a.throttled(None, "other"));
        for i in 0..FAILURES_PER_MINUTE {
            // Many names from one address.
            a.failed(Some("192.0.2.7:4000"), &format!("u{i}"));
        }
        assert!(a.throttled(Some("192.0.2.7:4001"), "fresh"));
        assert!(!a.throttled(Some("192.0.2.8:4001"), "fresh"));
    }

    #[test]
    fn a_flood_of_names_stays_bounded_and_is_counted() {
        let a = Authn::default();
        let limit = || {
            crate::metrics::LIMITS_REACHED
                .with_label_values(&["admin_failures"])
                .get()
        };
        let before = limit();
        for i in 0..MAX_ENTRIES + 50 {
            a.failed(Some("192.0.2.1:1000"), &format!("user{i}"));
        }
        assert!(a.failures.len() <= MAX_ENTRIES, "{}", a.failures.len());
        assert!(limit() > before, "reaching the bound was not counted");
        // The flooding address itself is throttled all the same.
        assert!(a.throttled(Some("192.0.2.1:2000"), "anyone"));
    }

    fn config_with_admin(hash: &str) -> Config {
        let kim =
            format!("{{ name: kim, password_hash: \"{hash}\", role: own, permission: view }}");
        crate::admin::tests::crm_config(&format!(
            "admin:\n  listen: 127.0.0.1:2\n  users:\n    - {kim}"
        ))
    }

    #[test]
    fn page_cookies_are_signed_revocable_and_bound_to_the_password() {
        let h = hash_password("pw").unwrap();
        let cfg = config_with_admin(&h);
        let pages = PageSessions::default();
        assert!(pages
            .start(&cfg, "nobody", Duration::from_secs(60))
            .is_none());
        let c = pages.start(&cfg, "kim", Duration::from_secs(60)).unwrap();
        let (p, sid) = pages.check(&cfg, &c).unwrap();
        assert_eq!((p.name.as_str(), p.permission), ("kim", Permission::View));
        // Tampering with the payload (another name) breaks the MAC.
        let (payload, mac) = c.split_once('.').unwrap();
        let mut raw = unb64(payload).unwrap();
        *raw.last_mut().unwrap() = b'x';
        assert_eq!(
            pages
                .check(&cfg, &format!("{}.{mac}", b64(&raw)))
                .unwrap_err(),
            CookieError::Invalid
        );
        for junk in ["", ".", "a.b", "!!!.???", &c[1..]] {
            assert!(pages.check(&cfg, junk).is_err(), "{junk:?}");
        }
        // Another process (another key) does not accept it.
        assert_eq!(
            PageSessions::default().check(&cfg, &c).unwrap_err(),
            CookieError::Invalid
        );
        // CSRF tokens are per session.
        let t = pages.csrf_token(&sid);
        assert!(pages.csrf_ok(&sid, Some(&t)));
        assert!(!pages.csrf_ok(&sid, None) && !pages.csrf_ok(&sid, Some("x")));
        let c2 = pages.start(&cfg, "kim", Duration::from_secs(60)).unwrap();
        let (_, sid2) = pages.check(&cfg, &c2).unwrap();
        assert!(!pages.csrf_ok(&sid2, Some(&t)));
        // A new password (config reload) ends the session; so does logout.
        let cfg2 = config_with_admin(&hash_password("new").unwrap());
        assert_eq!(pages.check(&cfg2, &c2).unwrap_err(), CookieError::Revoked);
        pages.end(&sid);
        assert_eq!(pages.check(&cfg, &c).unwrap_err(), CookieError::Revoked);
        let short = pages.start(&cfg, "kim", Duration::from_millis(0)).unwrap();
        assert_eq!(pages.check(&cfg, &short).unwrap_err(), CookieError::Expired);
    }

    #[test]
    fn hash_and_verify_roundtrip() {
        let h = hash_password("pw").unwrap();
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"nope", &parsed).is_err());
    }
}
