//! The gateway's own places under a product's `path_prefix` and the beat they are polled at:
//! pure functions of config values that validation needs (an `ignore` entry must not cover
//! the heartbeat, a presence timeout must leave room for beats) as much as the request path.
//! They live here, below `policy` and `presence`, which call them, so config needs neither.

use crate::domain::Millis;
use std::time::Duration;

/// The heartbeat's path ends so (after the product's `path_prefix`).
pub const HEARTBEAT_SUFFIX: &str = ".seatgate/heartbeat";

/// Whether `path` is `prefix` or below it, on a segment boundary (`/crm` covers `/crm/x`,
/// not `/crmx`); `/` covers everything.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let p = prefix.trim_end_matches('/');
    path == p
        || path
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Where the script beats. Under the product's `path_prefix`, so the request reaches the same
/// product and carries its session cookie even when the cookie is path-scoped.
pub fn heartbeat_url(path_prefix: &str) -> String {
    format!("{}/{HEARTBEAT_SUFFIX}", path_prefix.trim_end_matches('/'))
}

/// The script's beat period, which is also the heartbeat rate-limit window.
pub fn beat_period(presence_timeout: Option<Duration>) -> Millis {
    presence_timeout.map_or(30_000, |pt| (pt.as_millis() as u64 / 3).max(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/crm", "/crm"));
        assert!(prefix_matches("/crm", "/crm/x"));
        assert!(prefix_matches("/crm/", "/crm/x"));
        assert!(!prefix_matches("/crm", "/crmx"));
        assert!(!prefix_matches("/crm", "/"));
    }

    #[test]
    fn heartbeat_sits_below_the_prefix() {
        assert_eq!(heartbeat_url("/"), "/.seatgate/heartbeat");
        assert_eq!(heartbeat_url("/crm/"), "/crm/.seatgate/heartbeat");
    }

    #[test]
    fn beats_three_times_per_presence_timeout_at_most_once_a_second() {
        assert_eq!(beat_period(Some(Duration::from_secs(90))), 30_000);
        assert_eq!(beat_period(Some(Duration::from_secs(1))), 1_000);
        assert_eq!(beat_period(None), 30_000);
    }
}
