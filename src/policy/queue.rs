//! The waiting line's arithmetic: how long a ticket will likely wait, and the release rate
//! that estimate reads. Pure: the stores feed it their deadlines and counts.

use crate::domain::Millis;

/// The window of the release rate.
pub const RATE_WINDOW: Millis = 3_600_000;
const BUCKET: Millis = 60_000;
const BUCKETS: usize = (RATE_WINDOW / BUCKET) as usize;

/// `Retry-After` when nothing says when a seat will free.
pub const UNKNOWN_RETRY_AFTER_SECS: u64 = 60;

/// How long until `needed` seats are likely free: the `needed`-th earliest deadline of the
/// seats held (`earliest`, sorted earliest first: each seat's idle, lifetime or presence
/// expiry, whichever comes first, as if nobody used the app again) and `needed` releases at
/// the rate of the last hour, whichever is sooner. `None` when neither says anything (no
/// deadline that far down the list and no release in the window).
pub fn estimate(
    earliest: &[Millis],
    needed: u32,
    releases: u64,
    window: Millis,
    now: Millis,
) -> Option<Millis> {
    if needed == 0 {
        return Some(0);
    }
    let by_deadline = earliest
        .get(needed as usize - 1)
        .map(|d| d.saturating_sub(now));
    let by_rate =
        (releases > 0 && window > 0).then(|| (needed as u64).saturating_mul(window) / releases);
    match (by_deadline, by_rate) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `Retry-After` seconds for an estimate: at least 1, rounded up.
pub fn retry_after_secs(estimate: Option<Millis>) -> u64 {
    match estimate {
        Some(ms) => ms.div_ceil(1000).max(1),
        None => UNKNOWN_RETRY_AFTER_SECS,
    }
}

/// Releases per minute over the last hour, in a ring of minute buckets.
#[derive(Clone, Debug, Default)]
pub struct ReleaseRate {
    /// (minute, releases in it); a bucket whose minute is out of the window counts nothing.
    buckets: Vec<(u64, u64)>,
    /// The first release seen: the window is shorter while the gateway is younger than it.
    since: Option<Millis>,
}

impl ReleaseRate {
    pub fn record(&mut self, n: u64, now: Millis) {
        if n == 0 {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![(u64::MAX, 0); BUCKETS];
        }
        self.since.get_or_insert(now);
        let minute = now / BUCKET;
        let b = &mut self.buckets[(minute % BUCKETS as u64) as usize];
        if b.0 != minute {
            *b = (minute, 0);
        }
        b.1 += n;
    }

    /// Releases within the window ending at `now`, and the window's length (the time since
    /// the first release when that is shorter, at least a minute).
    pub fn over_window(&self, now: Millis) -> (u64, Millis) {
        let minute = now / BUCKET;
        let oldest = minute.saturating_sub(BUCKETS as u64 - 1);
        let n = self
            .buckets
            .iter()
            .filter(|(m, _)| *m != u64::MAX && *m >= oldest && *m <= minute)
            .map(|(_, c)| c)
            .sum();
        let window = self.since.map_or(RATE_WINDOW, |s| {
            now.saturating_sub(s).clamp(BUCKET, RATE_WINDOW)
        });
        (n, window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    #[test]
    fn the_sooner_of_deadline_and_rate() {
        let d = [NOW + 30_000, NOW + 90_000, NOW + 600_000];
        // Second in line: the second deadline (90 s) against 2 releases at 6/h (20 min).
        assert_eq!(estimate(&d, 2, 6, RATE_WINDOW, NOW), Some(90_000));
        // A fast rate wins: 60 releases in the hour, one a minute.
        assert_eq!(estimate(&d, 3, 60, RATE_WINDOW, NOW), Some(180_000));
        // Deeper than the deadlines known: the rate alone.
        assert_eq!(estimate(&d, 5, 60, RATE_WINDOW, NOW), Some(300_000));
        // Neither: unknown, not a guess.
        assert_eq!(estimate(&d, 5, 0, RATE_WINDOW, NOW), None);
        assert_eq!(estimate(&[], 1, 0, RATE_WINDOW, NOW), None);
        // A deadline already passed (not yet swept) is "now".
        assert_eq!(estimate(&[NOW - 5], 1, 0, RATE_WINDOW, NOW), Some(0));
        assert_eq!(estimate(&d, 0, 0, RATE_WINDOW, NOW), Some(0));
    }

    #[test]
    fn retry_after_is_at_least_a_second() {
        assert_eq!(retry_after_secs(Some(0)), 1);
        assert_eq!(retry_after_secs(Some(1001)), 2);
        assert_eq!(retry_after_secs(Some(60_000)), 60);
        assert_eq!(retry_after_secs(None), UNKNOWN_RETRY_AFTER_SECS);
    }

    #[test]
    fn the_rate_forgets_releases_older_than_an_hour() {
        let mut r = ReleaseRate::default();
        assert_eq!(r.over_window(NOW), (0, RATE_WINDOW));
        r.record(3, NOW);
        r.record(2, NOW + 30 * 60_000);
        // Young: the window is the time since the first release, at least a minute.
        assert_eq!(r.over_window(NOW), (3, 60_000));
        assert_eq!(r.over_window(NOW + 30 * 60_000), (5, 30 * 60_000));
        // 61 minutes on, the first bucket is out of the window; the ring slot is reused.
        assert_eq!(r.over_window(NOW + 61 * 60_000).0, 2);
        r.record(1, NOW + 60 * 60_000);
        assert_eq!(r.over_window(NOW + 60 * 60_000).0, 3);
        assert_eq!(r.over_window(NOW + 200 * 60_000), (0, RATE_WINDOW));
    }
}
