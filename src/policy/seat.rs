//! When does a held seat stop counting? One pure function, used by every backend on every
//! lookup, so an expired seat never counts as in use even before a sweep gets to it.

use crate::domain::{Gone, Millis, PoolSpec, ReleaseReason, SeatState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatTimes {
    pub started_at: Millis,
    pub last_activity: Millis,
    /// 0 = never sent a heartbeat: presence does not apply (API clients, JS disabled).
    pub last_heartbeat: Millis,
    pub state: SeatState,
    pub ending_at: Option<Millis>,
}

/// Whether `ending_at` applies: an ending seat, or an uncounted session an admin ended with
/// grace (it keeps its state, since `Ending` would count it).
fn ends(t: &SeatTimes) -> bool {
    t.state == SeatState::Ending || t.state.uncounted()
}

/// The reason the seat has ended at `now`, or `None` while it still holds. The reason is
/// what ended it first: a standby seat found a while after its standby timeout lapsed for
/// `standby`, even if it would also be idle by now.
pub fn expiry(spec: &PoolSpec, t: &SeatTimes, now: Millis) -> Option<ReleaseReason> {
    let (at, why) = first_end(spec, t);
    (now >= at).then_some(why)
}

/// The first instant at which [`expiry`] stops returning `None` (stores that index seats by
/// deadline, such as the Redis sorted set, use it as the score): `expiry(now).is_some()` exactly
/// when `now >= deadline`.
pub fn deadline(spec: &PoolSpec, t: &SeatTimes) -> Millis {
    first_end(spec, t).0
}

/// The earliest way the seat ends, and when. Ties go to the first considered: an end, then
/// lifetime, idle, standby, presence.
fn first_end(spec: &PoolSpec, t: &SeatTimes) -> (Millis, ReleaseReason) {
    let mut best = (
        t.started_at.saturating_add(spec.max_lifetime),
        ReleaseReason::Lifetime,
    );
    if let Some(at) = t.ending_at.filter(|_| ends(t)) {
        if at <= best.0 {
            best = (at, ReleaseReason::Ended);
        }
    }
    if t.state == SeatState::Paused {
        return best;
    }
    let mut consider = |at: Millis, why| {
        if at < best.0 {
            best = (at, why);
        }
    };
    consider(
        t.last_activity.saturating_add(spec.idle_timeout),
        ReleaseReason::Idle,
    );
    if t.state == SeatState::Standby {
        consider(
            t.last_activity.saturating_add(spec.standby_timeout),
            ReleaseReason::Standby,
        );
    }
    if let Some(pt) = spec.presence_timeout.filter(|_| t.last_heartbeat > 0) {
        consider(
            t.last_heartbeat.max(t.last_activity).saturating_add(pt),
            ReleaseReason::Presence,
        );
    }
    best
}

/// What a request with a session cookie that holds no seat gets, per `session.expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Stale {
    RedirectToLogin,
    Adopt,
}

/// `adopt` may only take a seat for cookies the gateway never saw or that merely went idle
/// (the app still considers them logged in); a session ended by an admin, logged out or past
/// its lifetime must never come back by re-using its cookie.
pub fn on_stale(expired: crate::config::Expired, gone: Gone) -> Stale {
    use crate::config::Expired;
    match (expired, gone) {
        (Expired::Login, _) => Stale::RedirectToLogin,
        (Expired::Adopt, Gone::Unknown) => Stale::Adopt,
        (
            Expired::Adopt,
            Gone::Released(ReleaseReason::Idle | ReleaseReason::Presence | ReleaseReason::Standby),
        ) => Stale::Adopt,
        (Expired::Adopt, Gone::Released(_)) => Stale::RedirectToLogin,
    }
}

pub fn notice(gone: Gone) -> &'static str {
    match gone {
        Gone::Unknown => "unknown",
        Gone::Released(r) => r.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Expired;
    use crate::domain::{Grant, PoolKey, SeatsPer};

    fn spec() -> PoolSpec {
        PoolSpec {
            key: PoolKey::new("p", "default"),
            grants: vec![Grant {
                seats: 1,
                not_before: None,
                expires: None,
            }],
            idle_timeout: 100,
            max_lifetime: 1000,
            presence_timeout: Some(30),
            standby_timeout: 50,
            seats_per: SeatsPer::Session,
            max_sessions: None,
            groups: vec![],
            overflow_ms: None,
            queue: None,
        }
    }

    fn t(state: SeatState, last_activity: Millis, last_heartbeat: Millis) -> SeatTimes {
        SeatTimes {
            started_at: 0,
            last_activity,
            last_heartbeat,
            state,
            ending_at: None,
        }
    }

    #[test]
    fn table() {
        let s = spec();
        let cases = [
            (t(SeatState::Active, 0, 0), 99, None),
            (t(SeatState::Active, 0, 0), 100, Some(ReleaseReason::Idle)),
            (
                t(SeatState::Active, 950, 0),
                1000,
                Some(ReleaseReason::Lifetime),
            ),
            (
                t(SeatState::Standby, 0, 0),
                50,
                Some(ReleaseReason::Standby),
            ),
            (t(SeatState::Standby, 0, 0), 49, None),
            // Presence applies only once a heartbeat was seen, and heartbeats don't renew idle.
            (
                t(SeatState::Active, 0, 10),
                40,
                Some(ReleaseReason::Presence),
            ),
            (t(SeatState::Active, 0, 10), 39, None),
            (t(SeatState::Active, 0, 80), 100, Some(ReleaseReason::Idle)),
            (t(SeatState::Active, 20, 10), 49, None),
            (t(SeatState::Paused, 0, 0), 500, None),
            // Found long after: the reason is what ended it first.
            (
                t(SeatState::Standby, 0, 0),
                500,
                Some(ReleaseReason::Standby),
            ),
            (t(SeatState::Active, 0, 0), 5000, Some(ReleaseReason::Idle)),
            (
                SeatTimes {
                    ending_at: Some(20),
                    ..t(SeatState::Ending, 0, 0)
                },
                20,
                Some(ReleaseReason::Ended),
            ),
            (
                SeatTimes {
                    ending_at: Some(20),
                    ..t(SeatState::Ending, 0, 0)
                },
                19,
                None,
            ),
        ];
        for (i, (times, now, want)) in cases.iter().enumerate() {
            assert_eq!(expiry(&s, times, *now), *want, "case {i}");
        }
    }

    #[test]
    fn deadline_is_where_expiry_starts() {
        let s = spec();
        let states = [
            SeatState::Standby,
            SeatState::Active,
            SeatState::Ending,
            SeatState::Paused,
        ];
        for state in states {
            for (la, hb, ending) in [
                (0, 0, None),
                (20, 10, Some(30)),
                (5, 0, Some(500)),
                (90, 95, None),
            ] {
                let times = SeatTimes {
                    started_at: 0,
                    last_activity: la,
                    last_heartbeat: hb,
                    state,
                    ending_at: ending,
                };
                let d = deadline(&s, &times);
                assert!(expiry(&s, &times, d).is_some(), "{times:?} at {d}");
                assert!(
                    d == 0 || expiry(&s, &times, d - 1).is_none(),
                    "{times:?} before {d}"
                );
            }
        }
    }

    #[test]
    fn stale_cookies() {
        assert_eq!(
            on_stale(Expired::Login, Gone::Unknown),
            Stale::RedirectToLogin
        );
        assert_eq!(on_stale(Expired::Adopt, Gone::Unknown), Stale::Adopt);
        assert_eq!(
            on_stale(Expired::Adopt, Gone::Released(ReleaseReason::Idle)),
            Stale::Adopt
        );
        assert_eq!(
            on_stale(Expired::Adopt, Gone::Released(ReleaseReason::Ended)),
            Stale::RedirectToLogin
        );
        assert_eq!(
            on_stale(Expired::Adopt, Gone::Released(ReleaseReason::Logout)),
            Stale::RedirectToLogin
        );
    }
}
