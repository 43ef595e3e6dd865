//! Self-service token state, behind the store's shared values: the key tokens are signed
//! with, the marks of used tokens and the seats held for users who freed one.

use crate::domain::{Lease, Millis, PoolKey};
use crate::ledger::{LedgerError, Shared, SharedState};
use crate::policy::selfserve::{EndOffer, Hold, Holds, Spend, Spent, TokenKey};

const MAX_SPENT: usize = 100_000;
const MAX_HOLDS: usize = 100_000;

/// Where the signing key and the marks of used tokens live, so that a token works on whichever
/// gateway it is posted to: in the store when the store is shared (`store.kind: redis`: one key
/// for every replica, created by the first that needs it; a used token id marked there until
/// the token expires), else in this process.
const SHARED_KEY: &str = "selfserve:key";

/// Self-service state: the signing key, used token ids and held seats, in the store when it is
/// shared (through its shared values), else in this process.
pub struct Tokens {
    local_key: TokenKey,
    /// The key in use, settled on first use: the store's shared one, or `local_key`.
    key: tokio::sync::OnceCell<TokenKey>,
    spent: Spent,
    holds: Holds,
}

impl Default for Tokens {
    fn default() -> Self {
        Self::new()
    }
}

impl Tokens {
    pub fn new() -> Self {
        Self::with_caps(MAX_SPENT, MAX_HOLDS)
    }

    /// At most `spent` used tokens and `holds` held seats remembered in this process (the
    /// backstops past which self-service answers "busy" or holds nothing).
    pub fn with_caps(spent: usize, holds: usize) -> Self {
        Tokens {
            local_key: TokenKey::random(),
            key: tokio::sync::OnceCell::new(),
            spent: Spent::new(spent),
            holds: Holds::new(holds),
        }
    }

    /// The signing key. Asked of the store on first use rather than at start: the store's
    /// connection is made inside the proxy's runtime. A store error is not remembered.
    pub async fn key(&self, store: &dyn SharedState) -> std::result::Result<TokenKey, LedgerError> {
        self.key
            .get_or_try_init(|| async {
                let mine = hex(&rand::random::<[u8; 32]>());
                match store.shared_once(SHARED_KEY, &mine, None).await? {
                    Shared::Local => Ok(self.local_key.clone()),
                    Shared::Value(k) => unhex32(&k).map(TokenKey::from_bytes).ok_or_else(|| {
                        LedgerError::Unavailable(format!(
                            "the shared `{SHARED_KEY}` is not 32 hex bytes"
                        ))
                    }),
                }
            })
            .await
            .cloned()
    }

    /// Marks `offer` used, in the store when it is shared, else here.
    pub async fn spend(
        &self,
        store: &dyn SharedState,
        offer: &EndOffer,
        now: Millis,
    ) -> std::result::Result<Spend, LedgerError> {
        let mine = format!("{:x}", rand::random::<u64>());
        let ttl = offer.expires.saturating_sub(now);
        match store
            .shared_once(&spent_name(offer), &mine, Some(ttl))
            .await?
        {
            Shared::Local => Ok(self.spent.spend(offer, now)),
            Shared::Value(v) if v == mine => Ok(Spend::First),
            Shared::Value(_) => Ok(Spend::Again),
        }
    }

    /// Gives a token back after the store failed to end its seat, so the button can be retried.
    pub async fn refund(&self, store: &dyn SharedState, offer: &EndOffer) {
        self.spent.refund(offer);
        if let Err(e) = store.shared_swap(&spent_name(offer), None, 1).await {
            log::warn!("cannot give back a self-service token: {e}");
        }
    }

    /// Remembers a held seat for `user`, in the store when it is shared (so the user's next
    /// login finds it on any replica), else here. Answers the lease of a hold it replaced (the
    /// user freed a second seat before coming back), whose reservation the caller gives back.
    pub async fn put_hold(
        &self,
        store: &dyn SharedState,
        pool: &PoolKey,
        user: &str,
        hold: Hold,
        now: Millis,
    ) -> std::result::Result<Option<Lease>, String> {
        let value = format!("{:x}:{}", hold.lease, hold.until);
        let ttl = hold.until.saturating_sub(now);
        let replaced = match store
            .shared_swap(&hold_name(pool, user), Some(&value), ttl)
            .await
        {
            Ok(Shared::Local) => self.holds.put(pool, user, hold, now).map_err(|_| {
                crate::metrics::limit_reached("self_service_holds");
                "too many seats held".to_string()
            })?,
            Ok(Shared::Value(old)) => old
                .as_deref()
                .and_then(parse_hold)
                .filter(|h| h.until > now),
            Err(e) => return Err(e.to_string()),
        };
        Ok(replaced.map(|old| held_lease(pool, old)))
    }

    /// The user's unexpired held seat in `pool`, removed: a login is about to use it.
    pub async fn take_hold(
        &self,
        store: &dyn SharedState,
        pool: &PoolKey,
        user: &str,
        now: Millis,
    ) -> Option<Hold> {
        match store.shared_swap(&hold_name(pool, user), None, 1).await {
            Ok(Shared::Local) => self.holds.take(pool, user, now),
            Ok(Shared::Value(old)) => old
                .as_deref()
                .and_then(parse_hold)
                .filter(|h| h.until > now),
            Err(e) => {
                // The login goes on without the hold (and meets the same store error).
                log::warn!("cannot look up a held seat: {e}");
                None
            }
        }
    }
}

fn spent_name(offer: &EndOffer) -> String {
    format!("selfserve:spent:{:x}", offer.id)
}

/// Product, pool and user names may hold any character: hashed, they cannot run together.
fn hold_name(pool: &PoolKey, user: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [&pool.product, &pool.pool, user] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("selfserve:hold:{}", hex(&h.finalize()[..16]))
}

/// `lease:until` as `put_hold` writes it; anything else is no hold.
fn parse_hold(v: &str) -> Option<Hold> {
    let (lease, until) = v.split_once(':')?;
    Some(Hold {
        lease: u64::from_str_radix(lease, 16).ok()?,
        until: until.parse().ok()?,
    })
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    hex::decode_to_slice(s, &mut k).ok()?;
    Some(k)
}

/// The lease of a hold, as `cancel` wants it.
fn held_lease(pool: &PoolKey, h: Hold) -> Lease {
    Lease {
        id: h.lease,
        pool: pool.clone(),
        reuse: None,
        overflow: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_names_and_values_round_trip() {
        let k: [u8; 32] = rand::random();
        assert_eq!(unhex32(&hex(&k)), Some(k));
        assert_eq!(unhex32("abc"), None);
        assert_eq!(unhex32(&"zz".repeat(32)), None);
        let h = Hold {
            lease: 0xdead_beef,
            until: 1_700_000_000_123,
        };
        assert_eq!(parse_hold(&format!("{:x}:{}", h.lease, h.until)), Some(h));
        for bad in ["", "x:1", "12", "12:", "12:y"] {
            assert_eq!(parse_hold(bad), None, "{bad}");
        }
        // Names that would run together as plain text stay apart.
        let a = hold_name(&PoolKey::new("a:b", "c"), "u");
        let b = hold_name(&PoolKey::new("a", "b:c"), "u");
        assert_ne!(a, b);
        assert_eq!(a, hold_name(&PoolKey::new("a:b", "c"), "u"));
    }
}
