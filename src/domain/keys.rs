//! What names a session, a seat and a pool.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A session cookie, hashed with its product so the raw value is never stored or logged.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionKey(pub [u8; 16]);

impl SessionKey {
    pub fn new(product: &str, cookie_value: &str) -> Self {
        let mut h = Sha256::new();
        h.update(product.as_bytes());
        h.update([0u8]);
        h.update(cookie_value.as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        SessionKey(k)
    }

    /// [`SessionKey::new`], remembered per thread for the cookies seen lately: every request
    /// of a held session hashes its cookie, and SHA-256 runs in software on CPUs without the
    /// SHA extensions (Intel before Ice Lake, common in clouds; any CPU under valgrind), where
    /// it was the largest single cost seatgate adds to a forwarded request. The memo holds no
    /// cookie: a slot is found and checked by a 64-bit SipHash under this thread's random key,
    /// which a client cannot aim at another's slot without knowing the key.
    pub fn of_cookie(product: &str, cookie_value: &str) -> Self {
        KEY_MEMO.with(|m| m.borrow_mut().get(product, cookie_value))
    }

    pub fn hex(&self) -> String {
        hex16(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        from_hex16(s).map(SessionKey)
    }
}

/// Slots of a thread's [`SessionKey::of_cookie`] memo (24 bytes each).
const KEY_MEMO_SLOTS: usize = 4096;

thread_local! {
    static KEY_MEMO: std::cell::RefCell<KeyMemo> = std::cell::RefCell::new(KeyMemo::new());
}

/// Direct-mapped: a cookie's tag picks its slot, and a newer cookie there replaces it.
struct KeyMemo {
    tags: std::hash::RandomState,
    /// Tag 0 marks an empty slot (tags are odd).
    slots: Box<[(u64, SessionKey)]>,
}

impl KeyMemo {
    fn new() -> Self {
        KeyMemo {
            tags: std::hash::RandomState::new(),
            slots: vec![(0, SessionKey([0; 16])); KEY_MEMO_SLOTS].into_boxed_slice(),
        }
    }

    fn get(&mut self, product: &str, cookie_value: &str) -> SessionKey {
        use std::hash::BuildHasher;
        let tag = self.tags.hash_one((product, cookie_value)) | 1;
        let slot = &mut self.slots[(tag >> 1) as usize % KEY_MEMO_SLOTS];
        if slot.0 != tag {
            *slot = (tag, SessionKey::new(product, cookie_value));
        }
        slot.1
    }
}

/// A 16-byte key as the 32 lowercase hex digits the stores keep it as.
pub(super) fn hex16(k: &[u8; 16]) -> String {
    hex::encode(k)
}

/// The key `hex16` wrote; `None` for anything else (length, or a digit that is not hex).
pub(super) fn from_hex16(s: &str) -> Option<[u8; 16]> {
    let mut k = [0u8; 16];
    hex::decode_to_slice(s, &mut k).ok()?;
    Some(k)
}

impl fmt::Debug for SessionKey {
    /// Only a short prefix: enough to correlate log lines, useless to hijack a session.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sk:{:02x}{:02x}{:02x}{:02x}",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeatId(pub u64);

impl SeatId {
    pub fn random() -> Self {
        SeatId(rand::random::<u64>() | 1)
    }
}

/// Low bits of a [`SeatIds`] id below its millisecond.
const ID_TIME_SHIFT: u32 = 20;

/// Seat ids that grow with time, for the embedded store: its journal's tables are keyed by
/// seat id, and random ids made every login rewrite a random leaf of each (most of the
/// journal writer's time at 100k seats); ids in order append at the tables' right edge. The
/// bits below the millisecond stay random where they can, so an id does not name the next.
/// Unique within a process; the store checks a fresh id against those it restored.
#[derive(Debug, Default)]
pub struct SeatIds {
    last: std::sync::atomic::AtomicU64,
}

impl SeatIds {
    pub fn next(&self) -> SeatId {
        use std::sync::atomic::Ordering::Relaxed;
        let below = (1u64 << ID_TIME_SHIFT) - 1;
        let candidate = (super::now_ms() << ID_TIME_SHIFT) | (rand::random::<u64>() & below) | 1;
        let fresh = |last: u64| candidate.max(last.saturating_add(2));
        let prev = self
            .last
            .fetch_update(Relaxed, Relaxed, |last| Some(fresh(last)))
            .unwrap_or_else(|last| last);
        SeatId(fresh(prev))
    }

    /// Every id from now on is above `id` (one this source gave before a restart), whatever
    /// the clock says.
    pub fn after(&self, id: u64) {
        self.last
            .fetch_max(id, std::sync::atomic::Ordering::Relaxed);
    }
}

impl fmt::Display for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seat:{self}")
    }
}

impl FromStr for SeatId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.is_empty() || s.len() > 16 {
            return Err(());
        }
        u64::from_str_radix(s, 16).map(SeatId).map_err(|_| ())
    }
}

impl Serialize for SeatId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SeatId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("bad seat id `{s}`")))
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
pub struct PoolKey {
    pub product: String,
    pub pool: String,
}

impl PoolKey {
    pub fn new(product: &str, pool: &str) -> Self {
        PoolKey {
            product: product.into(),
            pool: pool.into(),
        }
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.product, self.pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_answers_what_the_hash_would() {
        // Three times the memo's slots: evictions and refills, in two products whose
        // cookies are the same text.
        for round in 0..2 {
            for i in 0..3 * KEY_MEMO_SLOTS {
                let cookie = format!("cookie-{i}");
                for product in ["crm", "erp"] {
                    assert_eq!(
                        SessionKey::of_cookie(product, &cookie),
                        SessionKey::new(product, &cookie),
                        "round {round}, {product}/{cookie}"
                    );
                }
            }
        }
        assert_ne!(
            SessionKey::of_cookie("crm", "a"),
            SessionKey::of_cookie("erp", "a")
        );
        // The separator keeps product and cookie apart, through the memo too.
        assert_ne!(
            SessionKey::of_cookie("ab", "c"),
            SessionKey::of_cookie("a", "bc")
        );
    }

    #[test]
    fn seat_ids_grow_and_never_repeat_across_threads() {
        let ids = std::sync::Arc::new(SeatIds::default());
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || (0..50_000).map(|_| ids.next().0).collect::<Vec<_>>())
            })
            .collect();
        let mut all = Vec::new();
        for r in runs {
            let mine = r.join().unwrap();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "in order per caller");
            all.extend(mine);
        }
        assert!(all.iter().all(|id| id % 2 == 1), "odd like random ones");
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "unique");
    }

    #[test]
    fn ids_after_one_given_before_are_above_it() {
        let ids = SeatIds::default();
        let ahead = (crate::domain::now_ms() + 3_600_000) << ID_TIME_SHIFT;
        ids.after(ahead);
        assert!(ids.next().0 > ahead);
        ids.after(1);
        assert!(ids.next().0 > ahead, "never back");
    }

    #[test]
    fn a_seat_id_starts_with_its_millisecond() {
        let before = crate::domain::now_ms();
        let id = SeatIds::default().next().0 >> ID_TIME_SHIFT;
        assert!(
            id >= before && id <= crate::domain::now_ms() + 1,
            "{id} vs {before}"
        );
    }
}
