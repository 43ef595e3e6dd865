//! The License Usage page's login sessions: a signed cookie plus a CSRF token for the page's
//! POSTs.
//!
//! Page sessions are signed with a key drawn at process start (HMAC-SHA256, `crate::crypto`),
//! so a cookie can neither be forged nor outlive the process; they are also kept in a bounded
//! table so logout revokes one at once. The CSRF token is the HMAC of the session id under
//! the same key: it needs no storage, and a token from one session is useless in another.

use super::{Authn, Principal};
use crate::config::Config;
use crate::crypto::{ct_eq, hmac_sha256};
use base64::Engine;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// The most live page sessions (the table is keyed by successful logins, which are throttled).
const MAX_SESSIONS: usize = 10_000;

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
        if self.live.len() >= MAX_SESSIONS {
            let now = Instant::now();
            self.live.retain(|_, s| s.expires > now);
            if self.live.len() >= MAX_SESSIONS {
                crate::metrics::limit_reached("admin_page_sessions");
                return None;
            }
        }
        let sid: [u8; 16] = rand::random();
        let expires_unix = crate::domain::now_ms() / 1000 + ttl.as_secs();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::auth::hash_password;
    use crate::config::Permission;

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
}
