//! `queue` of a product and of its pools: the waiting line's settings. A pool's keys override
//! its product's one by one; off unless `enabled` says otherwise.

use super::locate::Locator;
use crate::config::file::{Dur, QueueFile};
use crate::config::ConfigError;
use crate::domain::QueueSpec;
use std::time::Duration;

pub const DEFAULT_HOLD: Duration = Duration::from_secs(60);
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_MAX_LENGTH: u32 = 1000;
/// Bounds that keep every deadline far from overflowing and catch a unit typo ("30h" hold).
const MAX_HOLD: Duration = Duration::from_secs(3600);
const MAX_WAIT_LIMIT: Duration = Duration::from_secs(24 * 3600);
const MAX_LENGTH_LIMIT: u32 = 1_000_000;

/// Checks the values one `queue` section gives (`key`: its dotted key, `entity`: the product
/// or pool name its line is found below).
pub fn check(q: &QueueFile, key: &str, entity: &str, loc: &Locator) -> Result<(), ConfigError> {
    let bad = |field: &str, reason: &str| ConfigError::Invalid {
        key: format!("{key}.{field}"),
        line: loc
            .line_below(entity, "queue", &format!("{field}:"))
            .or_else(|| loc.line(&format!("{key}.{field}"), Some(entity))),
        reason: reason.to_string(),
    };
    let durations = [
        ("hold", q.hold, MAX_HOLD, "must be between 1s and 1h"),
        (
            "abandon_after",
            q.abandon_after,
            MAX_HOLD,
            "must be between 1s and 1h",
        ),
        (
            "max_wait",
            q.max_wait,
            MAX_WAIT_LIMIT,
            "must be between 1s and 24h",
        ),
    ];
    for (field, v, max, why) in durations {
        if let Some(d) = v {
            if d.0 < Duration::from_secs(1) || d.0 > max {
                return Err(bad(field, why));
            }
        }
    }
    if let Some(n) = q.max_length {
        if n == 0 || n > MAX_LENGTH_LIMIT {
            return Err(bad("max_length", "must be between 1 and 1000000"));
        }
    }
    Ok(())
}

/// The pool's line from its product's `queue` and its own (both already checked).
pub fn spec(product: Option<&QueueFile>, pool: Option<&QueueFile>) -> Option<QueueSpec> {
    // A key the pool gives wins over its product's, one key at a time.
    fn key<T>(
        product: Option<&QueueFile>,
        pool: Option<&QueueFile>,
        f: fn(&QueueFile) -> Option<T>,
    ) -> Option<T> {
        pool.and_then(f).or_else(|| product.and_then(f))
    }
    let ms = |f: fn(&QueueFile) -> Option<Dur>, default: Duration| {
        key(product, pool, f).map_or(default, |d| d.0).as_millis() as u64
    };
    key(product, pool, |q| q.enabled)
        .unwrap_or(false)
        .then(|| QueueSpec {
            hold: ms(|q| q.hold, DEFAULT_HOLD),
            abandon_after: ms(|q| q.abandon_after, DEFAULT_ABANDON_AFTER),
            max_wait: ms(|q| q.max_wait, DEFAULT_MAX_WAIT),
            max_length: key(product, pool, |q| q.max_length).unwrap_or(DEFAULT_MAX_LENGTH),
            barging: key(product, pool, |q| q.barging).unwrap_or(false),
        })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{product, BASE};
    use super::*;

    fn one(extra: &str) -> Result<crate::config::Config, String> {
        product(&(BASE.to_string() + extra))
    }

    #[test]
    fn off_by_default_and_defaults_when_on() {
        let c = one("").unwrap();
        assert_eq!(c.products[0].pools[0].queue, None);
        let c = one("    queue: { enabled: false, hold: 5s }\n").unwrap();
        assert_eq!(c.products[0].pools[0].queue, None);
        let c = one("    queue: { enabled: true }\n").unwrap();
        assert_eq!(
            c.products[0].pools[0].queue,
            Some(QueueSpec {
                hold: 60_000,
                abandon_after: 30_000,
                max_wait: 1_800_000,
                max_length: 1000,
                barging: false,
            })
        );
        let specs = crate::config::pool_specs(&c.products[0]);
        assert_eq!(specs[0].queue, c.products[0].pools[0].queue);
    }

    #[test]
    fn a_pool_overrides_its_product_key_by_key() {
        let c = product(
            "    upstream: 127.0.0.1:8000
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login }
    queue: { enabled: true, hold: 10s, max_length: 5 }
    pools:
      - name: std
        seats: 2
        default: true
        queue: { hold: 3s, barging: true }
      - name: gold
        seats: 1
        users: [ann]
        queue: { enabled: false }
      - name: plain
        seats: 1
        users: [bob]
",
        )
        .unwrap();
        let q: Vec<_> = c.products[0].pools.iter().map(|p| p.queue).collect();
        let std = q[0].unwrap();
        assert_eq!(
            (std.hold, std.max_length, std.barging, std.abandon_after),
            (3000, 5, true, 30_000)
        );
        assert_eq!(q[1], None);
        let plain = q[2].unwrap();
        assert_eq!(
            (plain.hold, plain.max_length, plain.barging),
            (10_000, 5, false)
        );
        // A pool may turn its own line on under a product without one.
        let c = product(
            "    upstream: 127.0.0.1:8000
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login }
    pools:
      - name: std
        seats: 2
        queue: { enabled: true, abandon_after: 2s }
",
        )
        .unwrap();
        assert_eq!(c.products[0].pools[0].queue.unwrap().abandon_after, 2000);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = |extra: &str| one(extra).unwrap_err();
        assert_eq!(
            err("    self_service: { hold: 30s }\n    queue: { enabled: true, hold: 0s }\n"),
            "products[0].queue.hold (line 11): must be between 1s and 1h"
        );
        assert_eq!(
            err("    queue:\n      enabled: true\n      abandon_after: 500ms\n"),
            "products[0].queue.abandon_after (line 12): must be between 1s and 1h"
        );
        assert_eq!(
            err("    queue: { max_wait: 2d }\n"),
            "products[0].queue.max_wait (line 10): must be between 1s and 24h"
        );
        assert_eq!(
            err("    queue: { max_length: 0 }\n"),
            "products[0].queue.max_length (line 10): must be between 1 and 1000000"
        );
        let e = err("    queue: { enabled: true, holdd: 5s }\n");
        assert!(e.contains("unknown field `holdd`"), "{e}");
        let e = product(
            "    upstream: 127.0.0.1:8000
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login }
    pools:
      - name: std
        seats: 2
        queue:
          enabled: true
          max_length: 0
",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "products[0].pools[0].queue.max_length (line 14): must be between 1 and 1000000"
        );
    }
}
