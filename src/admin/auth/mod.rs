//! Admin authentication: HTTP Basic against argon2 hashes, with a short-lived cache of
//! verified credentials and a throttle on failures (`throttle`); and the License Usage page's
//! own login (`pages`): a signed session cookie plus a CSRF token for the page's POSTs.

mod pages;
pub mod throttle;

pub use pages::{CookieError, PageSessions};

use crate::config::{Config, Permission, Role};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use dashmap::DashMap;
use http::{Response, StatusCode};
use pingora_http::RequestHeader;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use throttle::Throttle;

/// The page's session cookie.
pub const PAGE_COOKIE: &str = "seatgate_admin";
/// The header the page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Verified credentials are trusted this long before argon2 runs again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Bounds the credentials cache: it is keyed by client input.
const MAX_ENTRIES: usize = 10_000;

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
    failures: Throttle,
    pub pages: PageSessions,
}

/// Why a login with a name and password was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Too many failures for this name or from this address in the last minute.
    Throttled,
    /// No such admin, or the wrong password.
    Wrong,
}

/// How a request proved who it is. Only cookie-authenticated writes need a CSRF token: a
/// browser attaches the cookie to cross-site requests, while Basic API clients send their
/// credentials on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Basic,
    Cookie { sid: [u8; 16] },
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

    /// Whether logins from `peer`, or for `user`, failed too often in the last minute.
    pub fn throttled(&self, peer: Option<&str>, user: &str) -> bool {
        self.failures.throttled(peer, user, Instant::now())
    }

    pub fn failed(&self, peer: Option<&str>, user: &str) {
        self.failures.failed(peer, user, Instant::now())
    }

    /// One login with a name and password, from the API or the page's form: refused unhurt
    /// while throttled (argon2 does not even run), counted against the throttle when wrong.
    pub fn attempt(
        &self,
        cfg: &Config,
        user: &str,
        password: &str,
        peer: Option<&str>,
    ) -> Result<Principal, LoginRefusal> {
        if self.throttled(peer, user) {
            return Err(LoginRefusal::Throttled);
        }
        match self.verify(cfg, user, password) {
            Some(p) => Ok(p),
            None => {
                self.failed(peer, user);
                Err(LoginRefusal::Wrong)
            }
        }
    }

    /// An API login (HTTP Basic); `Err` is the answer to send.
    fn login(
        &self,
        cfg: &Config,
        user: &str,
        password: &str,
        peer: Option<&str>,
    ) -> Result<Principal, Box<Response<Vec<u8>>>> {
        match self.attempt(cfg, user, password, peer) {
            Ok(p) => Ok(p),
            Err(LoginRefusal::Throttled) => Err(Box::new(too_many())),
            Err(LoginRefusal::Wrong) => {
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
    fn a_throttled_login_is_refused_even_with_the_right_password() {
        let h = hash_password("pw").unwrap();
        let kim = format!("{{ name: kim, password_hash: \"{h}\", role: own, permission: view }}");
        let cfg = crate::admin::tests::crm_config(&format!(
            "admin:\n  listen: 127.0.0.1:2\n  users:\n    - {kim}"
        ));
        let a = Authn::default();
        let peer = Some("192.0.2.9:1234");
        assert_eq!(a.attempt(&cfg, "kim", "no", peer), Err(LoginRefusal::Wrong));
        assert_eq!(a.attempt(&cfg, "kim", "pw", peer).unwrap().name, "kim");
        assert_eq!(
            a.attempt(&cfg, "nobody", "pw", peer),
            Err(LoginRefusal::Wrong)
        );
        for _ in 1..throttle::FAILURES_PER_MINUTE {
            a.failed(peer, "kim");
        }
        assert_eq!(
            a.attempt(&cfg, "kim", "pw", peer),
            Err(LoginRefusal::Throttled)
        );
        // The name is throttled from any address, and the address for any name.
        assert_eq!(
            a.attempt(&cfg, "kim", "pw", Some("198.51.100.1:1")),
            Err(LoginRefusal::Throttled)
        );
        assert_eq!(
            a.attempt(&cfg, "ann", "pw", Some("192.0.2.9:80")),
            Err(LoginRefusal::Throttled)
        );
    }

    #[test]
    fn hash_and_verify_roundtrip() {
        let h = hash_password("pw").unwrap();
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"nope", &parsed).is_err());
    }
}
