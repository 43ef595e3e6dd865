//! Self-service from a full-pool denial: may a denied login be offered to end one of the
//! user's *own* sessions, and the signed tokens that carry such an offer.
//!
//! The offer is only made after the app has verified the credentials (the gateway sends it the
//! login, keeps the new session from the browser and logs it out at the app), so knowing a user
//! name is never enough to end that user's sessions. A token names one seat of one user of one
//! product, expires quickly and is spent on first use. With a shared store (Redis) the key and
//! the used ids live in the store, so every replica accepts a token once; otherwise the key is
//! per-process and a restart invalidates outstanding offers, which costs the user one more login
//! and never lets a forged or stale token end anything.
//!
//! Once the chosen session is ended, the seat it freed is reserved for the same user for
//! `self_service.hold` ([`Holds`] remembers which reservation is whose), so "End this session
//! and continue" really continues even while others are logging in.
//!
//! Pure: keys, ids and time are inputs; [`Spent`] and [`Holds`] only remember ids in memory
//! (the single-process store's case; `gate::Tokens` keeps them in a shared store when there is
//! one).

use crate::domain::{Millis, PoolKey, SeatId, SeatRecord, SeatState};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// What a login refused for lack of a seat gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum FullLogin {
    /// The denial, without the app ever seeing the request.
    Deny,
    /// Forward the login so the app checks the password; on success offer the user's own
    /// sessions instead of handing out the new one.
    VerifyThenOffer,
}

/// `html_page`: the client kind's `on_full` is the built-in page (a browser, which can show the
/// offer and post the choice); `own`: the user's sessions that hold a seat of the login's pool.
pub fn on_full(enabled: bool, html_page: bool, user: Option<&str>, own: usize) -> FullLogin {
    if enabled && html_page && user.is_some() && own > 0 {
        FullLogin::VerifyThenOffer
    } else {
        FullLogin::Deny
    }
}

/// The user's sessions whose end would free a seat for this login: same pool, same user, still
/// holding a seat (an `ending` seat is already on its way out, a paused one holds none). Oldest
/// first, as listed.
pub fn own_sessions<'a>(all: &'a [SeatRecord], pool: &PoolKey, user: &str) -> Vec<&'a SeatRecord> {
    all.iter()
        .filter(|r| &r.pool == pool && r.user.as_deref() == Some(user))
        .filter(|r| matches!(r.state, SeatState::Active | SeatState::Standby))
        .collect()
}

/// The signing key (per process, or shared by every replica through the store).
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn random() -> Self {
        TokenKey(rand::random())
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        TokenKey(b)
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What a token allows: `user` may end seat `seat` of `product`, until `expires`, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOffer {
    /// Random; what makes the token single-use.
    #[serde(rename = "i")]
    pub id: u64,
    #[serde(rename = "p")]
    pub product: String,
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "s")]
    pub seat: SeatId,
    /// The seat's pool, so its freed seat can be held in that pool.
    #[serde(rename = "o")]
    pub pool: String,
    #[serde(rename = "e")]
    pub expires: Millis,
}

/// Why a token is refused; each is a clear 4xx, none ends anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token at all (missing, truncated, not base64/JSON).
    Malformed,
    /// Well formed but not signed by this gateway (tampered, or issued before a restart).
    Forged,
    Expired,
    /// Already used once.
    Spent,
    /// Signed for another product than the one it was posted to.
    WrongProduct,
}

impl TokenError {
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            TokenError::Malformed => StatusCode::BAD_REQUEST,
            TokenError::Forged | TokenError::WrongProduct => StatusCode::FORBIDDEN,
            TokenError::Expired | TokenError::Spent => StatusCode::GONE,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Forged => "forged",
            TokenError::Expired => "expired",
            TokenError::Spent => "spent",
            TokenError::WrongProduct => "wrong_product",
        }
    }

    /// The sentence shown to the user.
    pub fn message(&self) -> &'static str {
        match self {
            TokenError::Malformed => "This request does not carry a valid choice.",
            TokenError::Forged | TokenError::WrongProduct => {
                "This choice was not issued by the license gateway (or the gateway restarted since)."
            }
            TokenError::Expired => "This offer has expired.",
            TokenError::Spent => "This choice has already been used.",
        }
    }
}

/// Tokens are far smaller; anything longer is refused before any decoding.
const MAX_TOKEN_LEN: usize = 2048;

/// `base64url(json) "." base64url(HMAC-SHA256(key, base64url(json)))`.
pub fn sign(key: &TokenKey, offer: &EndOffer) -> String {
    let payload = B64.encode(serde_json::to_vec(offer).unwrap_or_default());
    let mac = hmac_sha256(&key.0, payload.as_bytes());
    format!("{payload}.{}", B64.encode(mac))
}

/// Checks form, signature and expiry (single use is [`Spent`]'s job, product the caller's).
pub fn verify(key: &TokenKey, token: &str, now: Millis) -> Result<EndOffer, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (payload, mac) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let mac = B64.decode(mac).map_err(|_| TokenError::Malformed)?;
    if mac.len() != 32 {
        return Err(TokenError::Malformed);
    }
    // Constant time: a timing difference must not reveal how much of a forged MAC is right.
    if !crate::crypto::hmac_verify(&key.0, payload.as_bytes(), &mac) {
        return Err(TokenError::Forged);
    }
    let json = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
    let offer: EndOffer = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if now >= offer.expires {
        return Err(TokenError::Expired);
    }
    Ok(offer)
}

pub use crate::crypto::hmac_sha256;

/// Ids of used tokens, each kept until its token expires (after that the token is refused as
/// expired anyway). Tokens are only minted after the app accepted a password, so the set grows
/// with successful logins, not with junk; the cap is a backstop.
pub struct Spent {
    used: Mutex<HashMap<u64, Millis>>,
    cap: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    First,
    Again,
    /// The cap is reached with unexpired ids: refuse rather than forget one (which would let it
    /// be replayed).
    Busy,
}

impl Spent {
    pub fn new(cap: usize) -> Self {
        Spent {
            used: Mutex::new(HashMap::new()),
            cap,
        }
    }

    /// Marks `offer` used; says whether it was the first use.
    pub fn spend(&self, offer: &EndOffer, now: Millis) -> Spend {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains_key(&offer.id) {
            return Spend::Again;
        }
        if used.len() >= self.cap {
            used.retain(|_, until| *until > now);
            if used.len() >= self.cap {
                return Spend::Busy;
            }
        }
        used.insert(offer.id, offer.expires);
        Spend::First
    }

    /// Gives a token back after the store failed, so the user can retry the same button.
    pub fn refund(&self, offer: &EndOffer) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&offer.id);
    }

    pub fn len(&self) -> usize {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Seats freed by self-service, each reserved (a pending lease in the store that expires on its
/// own) for one user of one pool until that user's next login takes it.
///
/// At most one hold per (pool, user): ending a second session before coming back replaces the
/// first hold's entry (whose store reservation then lapses by itself). Entries are only made
/// after a valid token was spent, so the map grows with real self-service, not with junk; the
/// cap is a backstop, past which no hold is made (the user then simply competes for the seat).
pub struct Holds {
    held: Mutex<HashMap<(PoolKey, String), Hold>>,
    cap: usize,
}

/// Every entry is an unexpired hold and the cap is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldsFull;

/// One held seat: the store's lease id and when the store drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub lease: u64,
    pub until: Millis,
}

impl Holds {
    pub fn new(cap: usize) -> Self {
        Holds {
            held: Mutex::new(HashMap::new()),
            cap,
        }
    }

    /// Remembers `hold` for `user` in `pool`; refused when full of unexpired holds. Returns
    /// the hold it replaced, whose reservation the caller should drop.
    pub fn put(
        &self,
        pool: &PoolKey,
        user: &str,
        hold: Hold,
        now: Millis,
    ) -> Result<Option<Hold>, HoldsFull> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let key = (pool.clone(), user.to_string());
        if !held.contains_key(&key) && held.len() >= self.cap {
            held.retain(|_, h| h.until > now);
            if held.len() >= self.cap {
                return Err(HoldsFull);
            }
        }
        Ok(held.insert(key, hold).filter(|h| h.until > now))
    }

    /// The user's unexpired hold in `pool`, removed: a login is about to use it.
    pub fn take(&self, pool: &PoolKey, user: &str, now: Millis) -> Option<Hold> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&(pool.clone(), user.to_string()))
            .filter(|h| h.until > now)
    }

    pub fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        use FullLogin::*;
        let cases = [
            // enabled, html, user, own → decision
            (true, true, Some("alice"), 1, VerifyThenOffer),
            (true, true, Some("alice"), 3, VerifyThenOffer),
            (true, true, Some("bob"), 0, Deny),
            (true, true, None, 2, Deny),
            (true, false, Some("alice"), 1, Deny),
            (false, true, Some("alice"), 1, Deny),
        ];
        for (i, (en, html, user, own, want)) in cases.into_iter().enumerate() {
            assert_eq!(on_full(en, html, user, own), want, "case {i}");
        }
    }

    fn rec(id: u64, pool: &str, user: Option<&str>, state: SeatState) -> SeatRecord {
        SeatRecord {
            id: SeatId(id),
            pool: PoolKey::new("crm", pool),
            user: user.map(String::from),
            device: None,
            client: "web".into(),
            session: None,
            started_at: id,
            last_activity: id,
            last_heartbeat: 0,
            last_request: 0,
            last_input: 0,
            state,
            ending_at: None,
            overflow: false,
            ended_by: None,
        }
    }

    #[test]
    fn own_sessions_are_the_users_seats_in_that_pool() {
        let all = [
            rec(1, "default", Some("alice"), SeatState::Active),
            rec(2, "default", Some("bob"), SeatState::Active),
            rec(3, "other", Some("alice"), SeatState::Active),
            rec(4, "default", Some("alice"), SeatState::Standby),
            rec(5, "default", Some("alice"), SeatState::Ending),
            rec(6, "default", Some("alice"), SeatState::Paused),
            rec(7, "default", None, SeatState::Active),
        ];
        let ids: Vec<u64> = own_sessions(&all, &PoolKey::new("crm", "default"), "alice")
            .iter()
            .map(|r| r.id.0)
            .collect();
        assert_eq!(ids, vec![1, 4]);
        assert!(own_sessions(&all, &PoolKey::new("hr", "default"), "alice").is_empty());
    }

    fn offer(expires: Millis) -> EndOffer {
        EndOffer {
            id: 42,
            product: "crm".into(),
            user: "alice".into(),
            seat: SeatId(0xabc),
            pool: "default".into(),
            expires,
        }
    }

    #[test]
    fn tokens_round_trip_and_expire() {
        let k = TokenKey::from_bytes([7; 32]);
        let t = sign(&k, &offer(1000));
        assert_eq!(verify(&k, &t, 999), Ok(offer(1000)));
        assert_eq!(verify(&k, &t, 1000), Err(TokenError::Expired));
        // The token is URL- and form-safe as is.
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let k = TokenKey::from_bytes([7; 32]);
        let t = sign(&k, &offer(1000));
        assert_eq!(
            verify(&TokenKey::from_bytes([8; 32]), &t, 0),
            Err(TokenError::Forged)
        );
        // Another seat or user in the payload, old signature kept.
        let (_, mac) = t.split_once('.').unwrap();
        let mut other = offer(1000);
        other.seat = SeatId(0xabd);
        let forged = format!("{}.{mac}", B64.encode(serde_json::to_vec(&other).unwrap()));
        assert_eq!(verify(&k, &forged, 0), Err(TokenError::Forged));
        let longer = format!(
            "{}.{mac}",
            B64.encode(serde_json::to_vec(&offer(9_999_999)).unwrap())
        );
        assert_eq!(verify(&k, &longer, 0), Err(TokenError::Forged));
        // One flipped character of the MAC.
        let mut bytes = t.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verify(&k, &String::from_utf8(bytes).unwrap(), 0),
            Err(TokenError::Forged)
        );
        for junk in [
            "",
            "abc",
            "abc.",
            ".",
            "a.b.c",
            "!!!.???",
            &"x".repeat(5000),
        ] {
            assert_eq!(verify(&k, junk, 0), Err(TokenError::Malformed), "{junk:?}");
        }
        // Signed but not an offer: malformed, never a panic.
        let p = B64.encode(b"[1,2]");
        let junk = format!("{p}.{}", B64.encode(hmac_sha256(&[7; 32], p.as_bytes())));
        assert_eq!(verify(&k, &junk, 0), Err(TokenError::Malformed));
    }

    #[test]
    fn spent_once_then_again_until_the_cap() {
        let s = Spent::new(2);
        let a = offer(100);
        assert_eq!(s.spend(&a, 0), Spend::First);
        assert_eq!(s.spend(&a, 0), Spend::Again);
        s.refund(&a);
        assert_eq!(s.spend(&a, 0), Spend::First);
        let b = EndOffer {
            id: 43,
            ..offer(100)
        };
        let c = EndOffer {
            id: 44,
            ..offer(100)
        };
        assert_eq!(s.spend(&b, 0), Spend::First);
        assert_eq!(s.spend(&c, 50), Spend::Busy);
        // Once the remembered ids expire they make room (and their tokens are expired anyway).
        assert_eq!(s.spend(&c, 100), Spend::First);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn holds_are_per_pool_and_user_taken_once_and_lapse() {
        let h = Holds::new(2);
        let pool = PoolKey::new("crm", "default");
        let other = PoolKey::new("crm", "other");
        let a = Hold {
            lease: 1,
            until: 100,
        };
        assert_eq!(h.put(&pool, "alice", a, 0), Ok(None));
        assert_eq!(h.take(&pool, "bob", 10), None);
        assert_eq!(h.take(&other, "alice", 10), None);
        assert_eq!(h.take(&pool, "alice", 10), Some(a));
        assert_eq!(h.take(&pool, "alice", 10), None, "taken once");
        // A second end before coming back replaces the first hold.
        assert_eq!(h.put(&pool, "alice", a, 0), Ok(None));
        let b = Hold {
            lease: 2,
            until: 150,
        };
        assert_eq!(h.put(&pool, "alice", b, 10), Ok(Some(a)));
        assert_eq!(
            h.put(
                &pool,
                "bob",
                Hold {
                    lease: 3,
                    until: 50
                },
                10
            ),
            Ok(None)
        );
        // Full of unexpired holds: refused rather than forgetting one.
        assert_eq!(
            h.put(
                &other,
                "carol",
                Hold {
                    lease: 4,
                    until: 200
                },
                20
            ),
            Err(HoldsFull)
        );
        // Bob's has lapsed by 60: it makes room, and would not be handed out anyway.
        assert_eq!(h.take(&pool, "bob", 50), None);
        assert_eq!(
            h.put(
                &other,
                "carol",
                Hold {
                    lease: 4,
                    until: 200
                },
                60
            ),
            Ok(None)
        );
        assert_eq!(h.take(&pool, "alice", 150), None, "expired at `until`");
    }

    fn config(extra: &str, on_full: &str) -> Result<crate::config::Config, String> {
        let yaml = format!(
            r#"
listen: 127.0.0.1:8080
admin: {{ listen: 127.0.0.1:9090 }}
store: {{ kind: embedded, path: /tmp/x.redb }}
products:
  - name: crm
    upstream: 127.0.0.1:8000
    session: {{ cookie: SID, idle_timeout: 20m, max_lifetime: 12h }}
    login: {{ path: /login, user: {{ form_field: username }} }}
    seats: 1
{extra}
    clients:
      - kind: api
        match: {{ path_prefix: /api }}
        on_full: {{ status: 429, body: "busy" }}
      - kind: web
{on_full}
"#
        );
        crate::config::parse(&yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn config_keys_and_which_clients_get_the_page() {
        let c = config("", "").unwrap();
        let p = &c.products[0];
        assert!(p.self_service.enabled);
        assert_eq!(
            p.self_service.token_ttl,
            std::time::Duration::from_secs(120)
        );
        assert!(
            !p.clients[0].builtin_page,
            "a configured body is not the page"
        );
        assert!(p.clients[1].builtin_page);
        let c = config("", "        on_full: { status: 403, page: web-denied }").unwrap();
        assert!(c.products[0].clients[1].builtin_page);
        let c = config("    self_service: { enabled: false, token_ttl: 30s }", "").unwrap();
        let p = &c.products[0];
        assert!(!p.self_service.enabled);
        assert_eq!(p.self_service.token_ttl, std::time::Duration::from_secs(30));
        assert_eq!(p.self_service.hold, std::time::Duration::from_secs(60));
        let c = config("    self_service: { hold: 5s }", "").unwrap();
        assert_eq!(
            c.products[0].self_service.hold,
            std::time::Duration::from_secs(5)
        );
        let e = config("    self_service: { hold: 2h }", "").unwrap_err();
        assert!(e.contains("products[0].self_service.hold"), "{e}");
        assert!(e.contains("must be between 1s and 1h"), "{e}");
        let e = config("    self_service: { token_ttl: 0s }", "").unwrap_err();
        assert!(e.contains("products[0].self_service.token_ttl"), "{e}");
        assert!(e.contains("must be between 1s and 1h"), "{e}");
        let e = config("    self_service: { ttl: 5s }", "").unwrap_err();
        assert!(e.contains("unknown field `ttl`"), "{e}");
    }

    #[test]
    fn token_errors_are_4xx() {
        for e in [
            TokenError::Malformed,
            TokenError::Forged,
            TokenError::Expired,
            TokenError::Spent,
            TokenError::WrongProduct,
        ] {
            assert!(e.status().is_client_error(), "{e:?}");
            assert!(!e.message().is_empty());
        }
    }
}
