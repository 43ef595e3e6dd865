//! `store`: the embedded file or Redis (one server, a cluster or sentinels) and the
//! store's intervals.

use super::locate::Locator;
use crate::config::file;
use crate::config::{ConfigError, RedisConfig, RedisTarget, StoreBackend, StoreConfig, StoreKind};
use std::path::PathBuf;
use std::time::Duration;

pub fn store(s: file::StoreFile, loc: &Locator) -> Result<StoreConfig, ConfigError> {
    let backend = match s.kind {
        StoreKind::Embedded => {
            if s.redis.is_some() {
                return Err(loc.invalid("store.redis", None, "only used with `kind: redis`"));
            }
            StoreBackend::Embedded {
                path: s
                    .path
                    .unwrap_or_else(|| PathBuf::from("data/seatgate.redb")),
            }
        }
        StoreKind::Redis => {
            let r = s
                .redis
                .ok_or_else(|| loc.invalid("store.redis", None, "required with `kind: redis`"))?;
            let target = match (r.url, r.cluster, r.sentinel) {
                (Some(u), None, None) => {
                    RedisTarget::Single(redis_url(&u, "store.redis.url", loc)?)
                }
                (None, Some(c), None) if !c.is_empty() => RedisTarget::Cluster(
                    c.iter()
                        .map(|u| redis_url(u, "store.redis.cluster", loc))
                        .collect::<Result<_, _>>()?,
                ),
                (None, None, Some(sn)) if !sn.urls.is_empty() => RedisTarget::Sentinel {
                    master: sn.master,
                    urls: sn
                        .urls
                        .iter()
                        .map(|u| redis_url(u, "store.redis.sentinel.urls", loc))
                        .collect::<Result<_, _>>()?,
                },
                _ => {
                    return Err(loc.invalid(
                        "store.redis",
                        None,
                        "give exactly one of `url`, `cluster` (non-empty) or `sentinel`",
                    ))
                }
            };
            let prefix = r.prefix.unwrap_or_else(|| "seatgate".into());
            if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
                return Err(loc.invalid(
                    "store.redis.prefix",
                    None,
                    "must be non-empty without braces or spaces",
                ));
            }
            StoreBackend::Redis(RedisConfig { target, prefix })
        }
    };
    let flush_interval = s.flush_interval.map_or(Duration::from_secs(5), |d| d.0);
    let sweep_interval = s.sweep_interval.map_or(Duration::from_secs(5), |d| d.0);
    if flush_interval.is_zero() || sweep_interval.is_zero() {
        return Err(loc.invalid("store.flush_interval", None, "intervals must be above zero"));
    }
    Ok(StoreConfig {
        backend,
        flush_interval,
        sweep_interval,
    })
}

fn redis_url(u: &str, key: &str, loc: &Locator) -> Result<String, ConfigError> {
    let rest = u
        .strip_prefix("redis://")
        .or_else(|| u.strip_prefix("rediss://"))
        .ok_or_else(|| loc.invalid(key, Some(u), &format!("`{u}` must start with redis://")))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let hostport = hostport.rsplit('@').next().unwrap_or_default();
    file::parse_addr(hostport).map_err(|e| loc.invalid(key, Some(u), &e))?;
    Ok(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, ONE_PRODUCT};
    use super::*;
    use crate::config::Config;

    /// `store:` on line 3, its keys (`body`, indented two spaces) from line 4.
    fn store(body: &str) -> Result<StoreConfig, String> {
        parse(&format!(
            "listen: 127.0.0.1:8080\nadmin: {{ listen: 127.0.0.1:9090 }}\nstore:\n{body}\n{ONE_PRODUCT}"
        ))
        .map(|c: Config| c.store)
    }

    #[test]
    fn embedded_and_each_redis_target() {
        let s = store("  kind: embedded").unwrap();
        assert_eq!(
            s.backend,
            StoreBackend::Embedded {
                path: "data/seatgate.redb".into()
            }
        );
        assert_eq!(
            (s.flush_interval, s.sweep_interval),
            (Duration::from_secs(5), Duration::from_secs(5))
        );
        let s = store("  kind: embedded\n  path: /var/lib/s.redb\n  flush_interval: 1s").unwrap();
        assert_eq!(
            s.backend,
            StoreBackend::Embedded {
                path: "/var/lib/s.redb".into()
            }
        );
        assert_eq!(s.flush_interval, Duration::from_secs(1));
        let redis = |r: &str| match store(&format!("  kind: redis\n  redis: {r}"))
            .unwrap()
            .backend
        {
            StoreBackend::Redis(c) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            redis("{ url: \"redis://127.0.0.1:6379/0\" }"),
            RedisConfig {
                target: RedisTarget::Single("redis://127.0.0.1:6379/0".into()),
                prefix: "seatgate".into()
            }
        );
        assert_eq!(
            redis("{ cluster: [\"redis://a:1\", \"rediss://u:p@b:2\"], prefix: sg }"),
            RedisConfig {
                target: RedisTarget::Cluster(vec!["redis://a:1".into(), "rediss://u:p@b:2".into()]),
                prefix: "sg".into()
            }
        );
        assert_eq!(
            redis("{ sentinel: { master: m, urls: [\"redis://s:26379\"] } }").target,
            RedisTarget::Sentinel {
                master: "m".into(),
                urls: vec!["redis://s:26379".into()]
            }
        );
    }

    #[test]
    fn store_errors_name_the_key_and_line() {
        let err = |body: &str| store(body).unwrap_err();
        assert_eq!(
            err("  kind: embedded\n  redis: { url: \"redis://a:1\" }"),
            "store.redis (line 5): only used with `kind: redis`"
        );
        assert_eq!(
            err("  kind: redis"),
            "store.redis: required with `kind: redis`"
        );
        assert_eq!(
            err("  kind: redis\n  redis: { url: \"http://a:1\" }"),
            "store.redis.url (line 5): `http://a:1` must start with redis://"
        );
        assert!(err("  kind: redis\n  redis: { url: \"redis://a:x\" }")
            .starts_with("store.redis.url (line 5): "),);
        assert_eq!(
            err("  kind: redis\n  redis:\n    cluster: [\"redis://a:1\", \"redis:/b\"]"),
            "store.redis.cluster (line 6): `redis:/b` must start with redis://"
        );
        for both in [
            "{ url: \"redis://a:1\", cluster: [\"redis://b:1\"] }",
            "{ cluster: [] }",
            "{ sentinel: { master: m, urls: [] } }",
        ] {
            assert_eq!(
                err(&format!("  kind: redis\n  redis: {both}")),
                "store.redis (line 5): give exactly one of `url`, `cluster` (non-empty) or `sentinel`"
            );
        }
        assert_eq!(
            err("  kind: redis\n  redis: { url: \"redis://a:1\", prefix: \"a b\" }"),
            "store.redis.prefix (line 5): must be non-empty without braces or spaces"
        );
        assert_eq!(
            err("  kind: embedded\n  sweep_interval: 0s"),
            "store.flush_interval: intervals must be above zero"
        );
        assert_eq!(
            err("  kind: embedded\n  flush_interval: 0s"),
            "store.flush_interval (line 5): intervals must be above zero"
        );
        assert!(err("  kind: memory").contains("unknown variant `memory`"));
    }
}
