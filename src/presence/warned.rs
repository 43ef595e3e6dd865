//! Which seats have been shown the idle warning for their current stretch of idleness, so
//! `seatgate_idle_warnings_total` counts a warning once, not once per beat while it shows.
//!
//! Keyed by session, holding the `last_activity` the warning was for: activity after it (input,
//! "Stay signed in", a navigation) starts a new stretch, and a later warning counts again.
//! Only sessions the ledger confirmed hold a seat are entered, so the map is bounded by live
//! seats; entries are dropped when the warning is over, and all at once past [`MAX`].

use crate::domain::{Millis, SessionKey};
use dashmap::DashMap;

const MAX: usize = 100_000;

#[derive(Default)]
pub struct IdleWarnings {
    shown: DashMap<SessionKey, Millis>,
}

impl IdleWarnings {
    /// The warning is due for `session` idle since `last_activity`: `true` the first time.
    pub fn first(&self, session: SessionKey, last_activity: Millis) -> bool {
        if self.shown.len() >= MAX && !self.shown.contains_key(&session) {
            self.shown.clear();
        }
        self.shown.insert(session, last_activity) != Some(last_activity)
    }

    /// No warning is due (any more) for `session`.
    pub fn clear(&self, session: &SessionKey) {
        self.shown.remove(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_stretch_of_idleness() {
        let w = IdleWarnings::default();
        let k = SessionKey::new("crm", "a");
        assert!(w.first(k, 10));
        assert!(!w.first(k, 10), "the next beat of the same warning");
        assert!(w.first(k, 50), "activity since: a new warning");
        w.clear(&k);
        assert!(w.first(k, 50));
    }
}
