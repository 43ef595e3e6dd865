//! Per-session heartbeat rate limit: a flood from one session is answered 429 without a store
//! round trip, while the normal rate (one beat per tab per period, plus a beat whenever a
//! tab becomes visible) always passes.
//!
//! Fixed windows of one beat period, counted per session. Exact enough: the worst case lets
//! `2 × LIMIT` beats through around a window edge, which is harmless. Only sessions that
//! the ledger confirmed hold a seat are counted, so the map is bounded by live seats, not by
//! whatever cookies a client invents; stale entries are dropped when the map grows.

use crate::domain::{Millis, SessionKey};
use dashmap::DashMap;

/// Beats allowed per session per period: room for a dozen tabs and some tab switching.
pub const LIMIT: u32 = 20;

/// Past this many tracked sessions, entries from old windows are dropped.
const PRUNE_AT: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    Allowed,
    Limited { retry_after_ms: Millis },
}

#[derive(Default)]
pub struct HeartbeatLimiter {
    windows: DashMap<SessionKey, (Millis, u32)>,
}

impl HeartbeatLimiter {
    /// Whether a beat of `session` may go to the store now; `period` is the product's beat
    /// period. Does not count the beat: call [`Self::record`] once the store confirmed it.
    pub fn check(&self, session: &SessionKey, period: Millis, now: Millis) -> Verdict {
        let period = period.max(1);
        let window = now / period;
        match self.windows.get(session) {
            Some(w) if w.0 == window && w.1 >= LIMIT => Verdict::Limited {
                retry_after_ms: (window + 1) * period - now,
            },
            _ => Verdict::Allowed,
        }
    }

    pub fn record(&self, session: SessionKey, period: Millis, now: Millis) {
        let window = now / period.max(1);
        let mut e = self.windows.entry(session).or_insert((window, 0));
        if e.0 != window {
            *e = (window, 0);
        }
        e.1 = e.1.saturating_add(1);
        drop(e);
        if self.windows.len() > PRUNE_AT {
            self.windows.retain(|_, w| w.0 + 1 >= window);
        }
    }

    /// Forgets a session whose seat is gone.
    pub fn forget(&self, session: &SessionKey) {
        self.windows.remove(session);
    }

    pub fn tracked(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_limited_until_the_next_window() {
        let l = HeartbeatLimiter::default();
        let k = SessionKey::new("crm", "abc");
        let other = SessionKey::new("crm", "def");
        let period = 1000;
        let t0 = 10_000;
        for i in 0..LIMIT {
            assert_eq!(l.check(&k, period, t0 + i as u64), Verdict::Allowed);
            l.record(k, period, t0 + i as u64);
        }
        assert_eq!(
            l.check(&k, period, t0 + 100),
            Verdict::Limited {
                retry_after_ms: 900
            }
        );
        // Per session: another session is not affected.
        assert_eq!(l.check(&other, period, t0 + 100), Verdict::Allowed);
        // The next window starts afresh.
        assert_eq!(l.check(&k, period, t0 + 1000), Verdict::Allowed);
        l.record(k, period, t0 + 1000);
        assert_eq!(l.check(&k, period, t0 + 1001), Verdict::Allowed);
        l.forget(&k);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn unconfirmed_sessions_are_never_stored() {
        let l = HeartbeatLimiter::default();
        for i in 0..100u32 {
            let _ = l.check(&SessionKey::new("crm", &i.to_string()), 1000, 5);
        }
        assert_eq!(l.tracked(), 0);
    }
}
