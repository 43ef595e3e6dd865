//! The waiting line's arithmetic: how long a ticket will likely wait, and the release rate
//! that estimate reads. Pure: the stores feed it their deadlines and counts.

use crate::domain::{Millis, QueueStatus};

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
    let nth = (needed as usize)
        .checked_sub(1)
        .and_then(|i| earliest.get(i));
    estimate_at(nth.copied(), needed, releases, window, now)
}

/// [`estimate`] from the `needed`-th earliest deadline alone (`nth`), all it reads of the
/// list: what a store that fetches just that one seat's end passes.
pub fn estimate_at(
    nth: Option<Millis>,
    needed: u32,
    releases: u64,
    window: Millis,
    now: Millis,
) -> Option<Millis> {
    if needed == 0 {
        return Some(0);
    }
    let by_deadline = nth.map(|d| d.saturating_sub(now));
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
        Some(ms) => wait_secs(ms).max(1),
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
        (n, rate_window(self.since, now))
    }
}

/// The window a release count covers at `now`: the last hour, or the time since the first
/// release (`since`) when that is shorter, at least a minute.
pub fn rate_window(since: Option<Millis>, now: Millis) -> Millis {
    since.map_or(RATE_WINDOW, |s| {
        now.saturating_sub(s).clamp(BUCKET, RATE_WINDOW)
    })
}

/// The ticket cookie: which line a browser waits in.
pub const TICKET_COOKIE: &str = "seatgate_queue";
/// A pool name longer than this in a ticket is refused unread (names are short words).
const MAX_POOL_HEX: usize = 256;

/// A fresh ticket cookie value for `pool`: the pool's name (hex, so any name is a valid
/// cookie value) and 128 random bits. The name lets a login or poll find the ticket's pool
/// without asking every pool's line; forging it gains nothing, the store knows only the
/// hash of the whole value.
pub fn new_ticket(pool: &str) -> String {
    let mut v = String::with_capacity(pool.len() * 2 + 33);
    v.push_str(&hex::encode(pool));
    v.push('.');
    v.push_str(&format!("{:032x}", rand::random::<u128>()));
    v
}

/// The pool a ticket cookie value names, when the value has the shape `new_ticket` gives.
/// Anything else (garbage, a truncated or oversized value) is `None`: treated as no ticket.
pub fn ticket_pool(value: &str) -> Option<String> {
    let (pool, random) = value.split_once('.')?;
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    // Lowercase only, as `new_ticket` spells it (`hex::decode` would take uppercase too).
    if random.len() != 32
        || !hex(random)
        || pool.is_empty()
        || pool.len() > MAX_POOL_HEX
        || !hex(pool)
    {
        return None;
    }
    String::from_utf8(hex::decode(pool).ok()?).ok()
}

/// `Set-Cookie` of a ticket: HttpOnly (the page's script never reads it, the poll sends it),
/// `SameSite=Lax` like the app's login, `Secure` on a TLS request.
pub fn ticket_set_cookie(path: &str, value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{TICKET_COOKIE}={value}; Path={path}; HttpOnly; SameSite=Lax{secure}")
}

/// `Set-Cookie` that deletes the ticket (its login took the seat).
pub fn ticket_clear_cookie(path: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{TICKET_COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Lax{secure}")
}

/// The cookie path of a product's tickets: its `path_prefix`, so the poll and the login
/// below it both carry the ticket.
pub fn ticket_path(path_prefix: &str) -> &str {
    match path_prefix.trim_end_matches('/') {
        "" => "/",
        p => p,
    }
}

/// Whole seconds of a wait, rounded up (a page never says 0 s while it still waits).
pub fn wait_secs(ms: Millis) -> u64 {
    ms.div_ceil(1000)
}

/// What `GET …/.seatgate/queue` answers: the ticket's status, or `expired` for a ticket the
/// line does not know (left, or never was).
/// Written straight from a struct: a page polls every 2 s, and building a `serde_json::Value`
/// map first cost more than the rest of the answer.
pub fn status_json(status: Option<&QueueStatus>, product: &str) -> String {
    #[derive(serde::Serialize)]
    struct Expired<'a> {
        state: &'static str,
        product: &'a str,
    }
    #[derive(serde::Serialize)]
    struct InLine<'a> {
        state: &'static str,
        position: u32,
        estimated_wait_seconds: Option<u64>,
        ready_until: Option<u64>,
        length: u32,
        product: &'a str,
    }
    let json = match status {
        None => serde_json::to_string(&Expired {
            state: "expired",
            product,
        }),
        Some(s) => serde_json::to_string(&InLine {
            state: s.state.as_str(),
            position: s.position,
            estimated_wait_seconds: s.estimated_wait.map(wait_secs),
            ready_until: s.ready_until.map(|t| t / 1000),
            length: s.length,
            product,
        }),
    };
    // Strings and numbers only: serialising cannot fail.
    json.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TicketState;

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

    #[test]
    fn a_ticket_names_its_pool_and_nothing_else_parses() {
        let t = new_ticket("gold plan");
        assert_eq!(ticket_pool(&t).as_deref(), Some("gold plan"));
        assert_ne!(new_ticket("gold plan"), t);
        assert_eq!(t.split('.').nth(1).unwrap().len(), 32);
        let r = "0123456789abcdef0123456789abcdef";
        for bad in [
            "",
            ".",
            "garbage",
            &format!(".{r}"),
            &format!("6.{r}"),
            &format!("zz.{r}"),
            &format!("64.{}", &r[1..]),
            &format!("64.{r}0"),
            &format!("64.{}", r.to_uppercase()),
            &format!("ff.{r}"),
            &format!("{}.{r}", "61".repeat(200)),
            "64.0123456789abcdef0123456789abcdeg",
        ] {
            assert_eq!(ticket_pool(bad), None, "{bad}");
        }
        assert_eq!(ticket_pool(&format!("64.{r}")).as_deref(), Some("d"));
    }

    #[test]
    fn ticket_cookies() {
        assert_eq!(ticket_path("/"), "/");
        assert_eq!(ticket_path("/crm/"), "/crm");
        assert_eq!(
            ticket_set_cookie("/crm", "v", false),
            "seatgate_queue=v; Path=/crm; HttpOnly; SameSite=Lax"
        );
        assert!(ticket_set_cookie("/", "v", true).ends_with("; Secure"));
        assert!(ticket_clear_cookie("/", false).contains("Max-Age=0"));
    }

    #[test]
    fn status_shape() {
        let s = QueueStatus {
            id: crate::domain::SeatId(7),
            state: TicketState::Waiting,
            position: 2,
            estimated_wait: Some(1500),
            ready_until: None,
            length: 3,
        };
        let v = |s: String| serde_json::from_str::<serde_json::Value>(&s).unwrap();
        assert_eq!(
            v(status_json(Some(&s), "crm")),
            serde_json::json!({"state": "waiting", "position": 2, "estimated_wait_seconds": 2,
                "ready_until": null, "length": 3, "product": "crm"})
        );
        let r = QueueStatus {
            state: TicketState::Ready,
            ready_until: Some(1_700_000_060_500),
            estimated_wait: Some(0),
            ..s
        };
        let j = v(status_json(Some(&r), "crm"));
        assert_eq!(
            (j["state"].as_str(), j["ready_until"].as_u64()),
            (Some("ready"), Some(1_700_000_060))
        );
        assert_eq!(
            v(status_json(None, "crm\"<")),
            serde_json::json!({"state": "expired", "product": "crm\"<"})
        );
    }
}
