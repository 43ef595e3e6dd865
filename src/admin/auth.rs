//! Admin authentication: HTTP Basic against argon2 hashes, with a short-lived cache of
//! verified credentials and a per-peer throttle on failures.

use crate::config::{Config, Permission, Role};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use dashmap::DashMap;
use http::{Response, StatusCode};
use pingora_http::RequestHeader;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

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
}

fn unauthorized(msg: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({ "error": msg }).to_string().into_bytes();
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("www-authenticate", "Basic realm=\"seatgate\", charset=\"UTF-8\"")
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
    let v = req.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl Authn {
    pub fn principal(cfg: &Config, name: &str) -> Option<Principal> {
        cfg.admin.users.iter().find(|u| u.name == name).map(|u| Principal {
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
        Argon2::default().verify_password(password.as_bytes(), &parsed).ok()?;
        if self.verified.len() >= MAX_ENTRIES {
            self.verified.clear();
        }
        self.verified.insert(key, (user.to_string(), u.password_hash.clone(), Instant::now()));
        Self::principal(cfg, user)
    }

    pub fn throttled(&self, peer: Option<&str>) -> bool {
        let Some(ip) = peer.map(|p| p.rsplit_once(':').map_or(p, |(ip, _)| ip)) else { return false };
        self.failures
            .get(ip)
            .is_some_and(|f| f.1.elapsed() < Duration::from_secs(60) && f.0 >= FAILURES_PER_MINUTE)
    }

    pub fn failed(&self, peer: Option<&str>) {
        let Some(ip) = peer.map(|p| p.rsplit_once(':').map_or(p, |(ip, _)| ip)) else { return };
        if self.failures.len() >= MAX_ENTRIES {
            self.failures.retain(|_, f| f.1.elapsed() < Duration::from_secs(60));
        }
        let mut e = self.failures.entry(ip.to_string()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= Duration::from_secs(60) {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    pub fn authenticate(&self, cfg: &Config, req: &RequestHeader, peer: Option<&str>) -> Result<Principal, Response<Vec<u8>>> {
        if self.throttled(peer) {
            return Err(too_many());
        }
        let Some((user, password)) = basic_credentials(req) else {
            return Err(unauthorized("authentication required"));
        };
        match self.verify(cfg, &user, &password) {
            Some(p) => Ok(p),
            None => {
                self.failed(peer);
                log::warn!("admin login failed for user {user:?} from {}", peer.unwrap_or("?"));
                Err(unauthorized("wrong user name or password"))
            }
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
        r.insert_header("authorization", "Basic YWRtaW46czNjcjN0Og==").unwrap();
        assert_eq!(basic_credentials(&r), Some(("admin".into(), "s3cr3t:".into())));
        r.insert_header("authorization", "Basic !!!").unwrap();
        assert_eq!(basic_credentials(&r), None);
        r.insert_header("authorization", "Bearer abc").unwrap();
        assert_eq!(basic_credentials(&r), None);
    }

    #[test]
    fn hash_and_verify_roundtrip() {
        let h = hash_password("pw").unwrap();
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"nope", &parsed).is_err());
    }
}
