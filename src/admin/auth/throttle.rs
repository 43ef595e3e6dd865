//! Login throttling: failed logins are counted per client address and per user name in
//! one-minute windows, and either counter at the limit refuses further logins. The per-name
//! counter stops one account's password being sprayed from many addresses; the per-address
//! one stops one client trying many names.
//!
//! The decisions (does a counter refuse, what is it after a failure) are pure functions of
//! the counter and `now`; `Throttle` only keeps the counters, bounded because they are keyed
//! by client input.

use dashmap::DashMap;
use std::time::{Duration, Instant};

pub const FAILURES_PER_MINUTE: u32 = 20;
const WINDOW: Duration = Duration::from_secs(60);
/// Bounds the counters: a flood of names must not grow the map without end.
pub const MAX_KEYS: usize = 10_000;

/// One counter: `failures` since `since`, the start of its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub failures: u32,
    pub since: Instant,
}

fn current(w: &Window, now: Instant) -> bool {
    now.saturating_duration_since(w.since) < WINDOW
}

/// Whether this counter refuses a login at `now`.
pub fn refuses(w: &Window, now: Instant) -> bool {
    current(w, now) && w.failures >= FAILURES_PER_MINUTE
}

/// The counter after one more failure at `now`: a window that has passed starts afresh.
pub fn after_failure(w: Option<Window>, now: Instant) -> Window {
    match w {
        Some(w) if current(&w, now) => Window {
            failures: w.failures.saturating_add(1),
            since: w.since,
        },
        _ => Window {
            failures: 1,
            since: now,
        },
    }
}

/// The counters a login attempt counts against: its user name and its address (without
/// the port, which a client picks anew for every connection).
pub fn keys(peer: Option<&str>, user: &str) -> Vec<String> {
    let mut keys = vec![format!("user:{user}")];
    if let Some(p) = peer {
        let ip = p.rsplit_once(':').map_or(p, |(ip, _)| ip);
        keys.push(format!("ip:{ip}"));
    }
    keys
}

#[derive(Default)]
pub struct Throttle {
    windows: DashMap<String, Window>,
}

impl Throttle {
    /// Whether logins from `peer`, or for `user`, failed too often in the last minute.
    pub fn throttled(&self, peer: Option<&str>, user: &str, now: Instant) -> bool {
        keys(peer, user)
            .iter()
            .any(|k| self.windows.get(k).is_some_and(|w| refuses(&w, now)))
    }

    pub fn failed(&self, peer: Option<&str>, user: &str, now: Instant) {
        if self.windows.len() >= MAX_KEYS {
            self.windows.retain(|_, w| current(w, now));
        }
        for k in keys(peer, user) {
            // Past the bound (a flood of names) new keys are not tracked; the peer's own key
            // usually is already, so the flood itself is still throttled.
            if self.windows.len() >= MAX_KEYS && !self.windows.contains_key(&k) {
                crate::metrics::limit_reached("admin_failures");
                continue;
            }
            let mut e = self.windows.entry(k).or_insert(Window {
                failures: 0,
                since: now,
            });
            *e = after_failure(Some(*e), now);
        }
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_refuses_at_the_limit_within_its_minute() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let w = |failures| Window {
            failures,
            since: t0,
        };
        // (counter, seconds after its start, refuses)
        let table = [
            (w(0), 0, false),
            (w(FAILURES_PER_MINUTE - 1), 0, false),
            (w(FAILURES_PER_MINUTE), 0, true),
            (w(FAILURES_PER_MINUTE), 59, true),
            (w(FAILURES_PER_MINUTE), 60, false),
            (w(FAILURES_PER_MINUTE + 5), 30, true),
        ];
        for (counter, s, want) in table {
            assert_eq!(refuses(&counter, at(s)), want, "{counter:?} at +{s}s");
        }
    }

    #[test]
    fn failures_add_up_within_a_window_and_start_afresh_after_it() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let first = after_failure(None, t0);
        assert_eq!(
            first,
            Window {
                failures: 1,
                since: t0
            }
        );
        let second = after_failure(Some(first), at(59));
        assert_eq!(
            second,
            Window {
                failures: 2,
                since: t0
            }
        );
        assert_eq!(
            after_failure(Some(second), at(60)),
            Window {
                failures: 1,
                since: at(60)
            }
        );
        // Twenty failures in a minute refuse the twenty-first login.
        let mut w = None;
        for i in 0..FAILURES_PER_MINUTE {
            assert!(!w.is_some_and(|w| refuses(&w, at(1))), "refused after {i}");
            w = Some(after_failure(w, at(1)));
        }
        assert!(refuses(&w.unwrap(), at(1)));
    }

    #[test]
    fn keys_are_the_name_and_the_address_without_port() {
        assert_eq!(keys(None, "kim"), vec!["user:kim"]);
        assert_eq!(
            keys(Some("192.0.2.7:4000"), "kim"),
            vec!["user:kim", "ip:192.0.2.7"]
        );
        assert_eq!(
            keys(Some("[2001:db8::1]:443"), "kim")[1],
            "ip:[2001:db8::1]"
        );
    }

    #[test]
    fn failures_throttle_by_address_and_by_user_name() {
        let a = Throttle::default();
        let now = Instant::now();
        for i in 0..FAILURES_PER_MINUTE {
            // One account sprayed from many addresses.
            a.failed(Some(&format!("10.0.0.{i}:5000")), "admin", now);
        }
        assert!(a.throttled(Some("10.9.9.9:1"), "admin", now));
        assert!(!a.throttled(Some("10.9.9.9:1"), "other", now));
        assert!(!a.throttled(None, "other", now));
        for i in 0..FAILURES_PER_MINUTE {
            // Many names from one address.
            a.failed(Some("192.0.2.7:4000"), &format!("u{i}"), now);
        }
        assert!(a.throttled(Some("192.0.2.7:4001"), "fresh", now));
        assert!(!a.throttled(Some("192.0.2.8:4001"), "fresh", now));
        // A minute later both have lapsed.
        let later = now + WINDOW;
        assert!(!a.throttled(Some("192.0.2.7:4001"), "admin", later));
    }

    #[test]
    fn a_flood_of_names_stays_bounded_and_is_counted() {
        let a = Throttle::default();
        let now = Instant::now();
        let limit = || {
            crate::metrics::LIMITS_REACHED
                .with_label_values(&["admin_failures"])
                .get()
        };
        let before = limit();
        for i in 0..MAX_KEYS + 50 {
            a.failed(Some("192.0.2.1:1000"), &format!("user{i}"), now);
        }
        assert!(a.len() <= MAX_KEYS, "{}", a.len());
        assert!(limit() > before, "reaching the bound was not counted");
        // The flooding address itself is throttled all the same.
        assert!(a.throttled(Some("192.0.2.1:2000"), "anyone", now));
    }
}
