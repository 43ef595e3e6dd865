//! `products[].seats` or `pools` (with grants, dates, users, headers, overflow) and
//! `groups` (reserves and maxima within a pool).

use super::locate::Locator;
use super::{fields, queue};
use crate::config::file;
use crate::config::{ConfigError, Grant, Group, Pool};
use std::collections::HashSet;

pub fn pools(p: &file::ProductFile, i: usize, loc: &Locator) -> Result<Vec<Pool>, ConfigError> {
    let k = |s: &str| format!("products[{i}].{s}");
    let ctx = p.name.as_str();
    if let Some(q) = &p.queue {
        queue::check(q, &k("queue"), ctx, loc)?;
    }
    match (p.seats, p.pools.is_empty()) {
        (Some(_), false) => {
            Err(loc.invalid(&k("seats"), Some(ctx), "give `seats` or `pools`, not both"))
        }
        (None, true) => Err(loc.invalid(&k("seats"), Some(ctx), "required (or `pools`)")),
        (Some(n), true) => Ok(vec![Pool {
            name: "default".into(),
            grants: vec![Grant {
                seats: n.get(),
                not_before: None,
                expires: None,
            }],
            users: HashSet::new(),
            header: None,
            overflow_ms: None,
            default: true,
            queue: queue::spec(p.queue.as_ref(), None),
        }]),
        (None, false) => {
            let mut out: Vec<Pool> = Vec::new();
            let mut mapped: HashSet<&str> = HashSet::new();
            for (pi, pf) in p.pools.iter().enumerate() {
                let pk = k(&format!("pools[{pi}]"));
                if out.iter().any(|x| x.name == pf.name) {
                    return Err(loc.invalid(
                        &format!("{pk}.name"),
                        Some(&pf.name),
                        "duplicate pool name",
                    ));
                }
                let grants = match (pf.seats, pf.grants.is_empty()) {
                    (Some(_), false) => {
                        return Err(loc.invalid(
                            &format!("{pk}.seats"),
                            Some(&pf.name),
                            "give `seats` or `grants`, not both",
                        ))
                    }
                    (None, true) => {
                        return Err(loc.invalid(
                            &format!("{pk}.seats"),
                            Some(&pf.name),
                            "required (or `grants`)",
                        ))
                    }
                    (Some(n), true) => vec![Grant {
                        seats: n,
                        not_before: None,
                        expires: None,
                    }],
                    (None, false) => pf
                        .grants
                        .iter()
                        .enumerate()
                        .map(|(gi, g)| {
                            let gk = format!("{pk}.grants[{gi}]");
                            let nb = g
                                .not_before
                                .as_deref()
                                .map(|d| {
                                    fields::date_ms(d, &format!("{gk}.not_before"), &pf.name, loc)
                                })
                                .transpose()?;
                            let ex = g
                                .expires
                                .as_deref()
                                .map(|d| {
                                    fields::date_ms(d, &format!("{gk}.expires"), &pf.name, loc)
                                })
                                .transpose()?;
                            if let (Some(a), Some(b)) = (nb, ex) {
                                if b <= a {
                                    return Err(loc.invalid(
                                        &format!("{gk}.expires"),
                                        Some(&pf.name),
                                        "expires before not_before",
                                    ));
                                }
                            }
                            Ok(Grant {
                                seats: g.seats,
                                not_before: nb,
                                expires: ex,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                if grants.iter().map(|g| g.seats).sum::<u32>() == 0 {
                    return Err(loc.invalid(
                        &format!("{pk}.seats"),
                        Some(&pf.name),
                        "must be at least 1",
                    ));
                }
                for u in &pf.users {
                    if !mapped.insert(u.as_str()) {
                        return Err(loc.invalid(
                            &format!("{pk}.users"),
                            Some(&pf.name),
                            &format!(
                                "user `{u}` is already mapped to another pool (pools overlap)"
                            ),
                        ));
                    }
                }
                if pf
                    .overflow
                    .as_ref()
                    .is_some_and(|o| !(o.seat_minutes.is_finite() && o.seat_minutes > 0.0))
                {
                    return Err(loc.invalid(
                        &format!("{pk}.overflow.seat_minutes"),
                        Some(&pf.name),
                        "must be a positive number of seat-minutes",
                    ));
                }
                if let Some(q) = &pf.queue {
                    queue::check(q, &format!("{pk}.queue"), &pf.name, loc)?;
                }
                let header = pf
                    .header
                    .as_ref()
                    .map(|h| fields::header_match(h, &format!("{pk}.header"), &pf.name, loc))
                    .transpose()?;
                out.push(Pool {
                    name: pf.name.clone(),
                    grants,
                    users: pf.users.iter().cloned().collect(),
                    header,
                    overflow_ms: pf
                        .overflow
                        .as_ref()
                        .map(|o| (o.seat_minutes * 60_000.0) as u64),
                    default: pf.default,
                    queue: queue::spec(p.queue.as_ref(), pf.queue.as_ref()),
                });
            }
            match out.iter().filter(|p| p.default).count() {
                0 if out.len() == 1 => out[0].default = true,
                1 => {}
                0 => {
                    return Err(loc.invalid(
                        &k("pools"),
                        Some(ctx),
                        "mark exactly one pool `default: true`",
                    ))
                }
                _ => {
                    return Err(loc.invalid(
                        &k("pools"),
                        Some(ctx),
                        "more than one pool is `default: true`",
                    ))
                }
            }
            Ok(out)
        }
    }
}

pub fn groups(
    files: &[file::GroupFile],
    pools: &[Pool],
    k: &dyn Fn(&str) -> String,
    ctx: &str,
    loc: &Locator,
) -> Result<Vec<Group>, ConfigError> {
    let mut groups = Vec::new();
    for (gi, g) in files.iter().enumerate() {
        let gk = k(&format!("groups[{gi}]"));
        let pool = match &g.pool {
            None => pools.iter().position(|x| x.default).unwrap_or(0),
            Some(name) => pools.iter().position(|x| &x.name == name).ok_or_else(|| {
                loc.invalid(
                    &format!("{gk}.pool"),
                    Some(&g.name),
                    &format!("unknown pool `{name}`"),
                )
            })?,
        };
        let cap = pools[pool].grants.iter().map(|g| g.seats).sum::<u32>();
        let reserve = g.reserve.unwrap_or(0);
        if reserve > cap {
            return Err(loc.invalid(
                &format!("{gk}.reserve"),
                Some(&g.name),
                &format!(
                    "reserve {reserve} is larger than pool `{}` ({cap} seats)",
                    pools[pool].name
                ),
            ));
        }
        if let (Some(max), r) = (g.max, reserve) {
            if max < r {
                return Err(loc.invalid(
                    &format!("{gk}.max"),
                    Some(&g.name),
                    "max must be at least reserve",
                ));
            }
        }
        groups.push(Group {
            name: g.name.clone(),
            users: g.users.iter().cloned().collect(),
            reserve,
            max: g.max,
            pool,
        });
    }
    for (pi, pool) in pools.iter().enumerate() {
        let r: u32 = groups
            .iter()
            .filter(|g| g.pool == pi)
            .map(|g| g.reserve)
            .sum();
        let cap: u32 = pool.grants.iter().map(|g| g.seats).sum();
        if r > cap {
            return Err(loc.invalid(
                &k("groups"),
                Some(ctx),
                &format!(
                    "reserves add up to {r}, more than pool `{}` ({cap} seats)",
                    pool.name
                ),
            ));
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{base_with, product};
    use crate::config::{Config, TextTest};

    /// The product with `block` in place of `seats: 1` (from line 9).
    fn with(block: &str) -> Result<Config, String> {
        product(&base_with("seats", block))
    }

    const TWO_POOLS: &str = "    pools:
      - name: gold
        users: [ann]
        grants:
          - { seats: 2 }
          - { seats: 3, not_before: 2030-01-01, expires: 2031-01-01 }
        overflow: { seat_minutes: 60 }
      - name: base
        seats: 1
        default: true
        header: { name: X-Tier, value: base }";

    #[test]
    fn seats_make_one_default_pool() {
        let c = with("    seats: 4").unwrap();
        let p = &c.products[0];
        assert_eq!(p.pools.len(), 1);
        assert_eq!(
            (p.pools[0].name.as_str(), p.pools[0].default),
            ("default", true)
        );
        assert_eq!((p.pools[0].capacity(0), p.granted_seats()), (4, 4));
        assert_eq!(
            p.pool_keys[0],
            crate::domain::PoolKey::new("crm", "default")
        );
    }

    #[test]
    fn pools_with_grants_users_headers_and_overflow() {
        let c = with(TWO_POOLS).unwrap();
        let p = &c.products[0];
        let (gold, base) = (&p.pools[0], &p.pools[1]);
        assert_eq!(gold.grants.len(), 2);
        assert_eq!(gold.grants[1].not_before, Some(1_893_456_000_000));
        assert_eq!(gold.grants[1].expires, Some(1_924_992_000_000));
        // Before 2030 only the first grant is in force; every grant counts for the page.
        assert_eq!((gold.capacity(0), gold.capacity(1_900_000_000_000)), (2, 5));
        assert_eq!(p.granted_seats(), 6);
        assert!(gold.users.contains("ann") && !gold.default);
        assert_eq!(gold.overflow_ms, Some(3_600_000));
        assert!(base.default);
        assert_eq!(
            base.header.as_ref().unwrap().test,
            TextTest::Equals("base".into())
        );
        // One pool alone is the default without saying so.
        let c = with("    pools:\n      - { name: only, seats: 2 }").unwrap();
        assert!(c.products[0].pools[0].default);
    }

    #[test]
    fn pool_errors_name_the_key_and_line() {
        let err = |block: &str| with(block).unwrap_err();
        assert_eq!(
            product(
                &(super::super::testing::BASE.to_string()
                    + "    pools:\n      - { name: gold, seats: 1 }\n")
            )
            .unwrap_err(),
            "products[0].seats (line 9): give `seats` or `pools`, not both"
        );
        assert_eq!(
            err("    hosts: []"),
            "products[0].seats (line 5): required (or `pools`)"
        );
        assert_eq!(
            err("    pools:\n      - { name: gold, seats: 1 }\n      - { name: gold, seats: 2 }"),
            "products[0].pools[1].name (line 10): duplicate pool name"
        );
        assert_eq!(
            err("    pools:\n      - { name: gold, seats: 1, grants: [{ seats: 1 }] }"),
            "products[0].pools[0].seats (line 10): give `seats` or `grants`, not both"
        );
        assert_eq!(
            err("    pools:\n      - { name: gold }"),
            "products[0].pools[0].seats (line 10): required (or `grants`)"
        );
        assert_eq!(
            err("    pools:\n      - { name: gold, seats: 0 }"),
            "products[0].pools[0].seats (line 10): must be at least 1"
        );
        assert!(err("    pools:\n      - name: gold\n        grants:\n          - { seats: 1, not_before: 2030-13-01 }")
            .starts_with(
                "products[0].pools[0].grants[0].not_before (line 12): `2030-13-01` is not a date \
                 (YYYY-MM-DD or RFC 3339): "
            ));
        assert_eq!(
            err("    pools:\n      - name: gold\n        grants:\n          - { seats: 1, not_before: 2031-01-01, expires: 2030-01-01 }"),
            "products[0].pools[0].grants[0].expires (line 12): expires before not_before"
        );
        assert_eq!(
            err("    pools:\n      - { name: gold, seats: 1, users: [ann] }\n      - { name: base, seats: 1, users: [ann], default: true }"),
            "products[0].pools[1].users (line 11): user `ann` is already mapped to another pool \
             (pools overlap)"
        );
        assert_eq!(
            err("    pools:\n      - name: gold\n        seats: 1\n        overflow: { seat_minutes: 0 }"),
            "products[0].pools[0].overflow.seat_minutes (line 12): must be a positive number of \
             seat-minutes"
        );
        assert_eq!(
            err("    pools:\n      - { name: gold, seats: 1 }\n      - { name: base, seats: 1 }"),
            "products[0].pools (line 9): mark exactly one pool `default: true`"
        );
        assert_eq!(
            err("    pools:\n      - { name: gold, seats: 1, default: true }\n      - { name: base, seats: 1, default: true }"),
            "products[0].pools (line 9): more than one pool is `default: true`"
        );
    }

    #[test]
    fn groups_reserve_within_their_pool() {
        let c = with(&format!(
            "{TWO_POOLS}\n    groups:\n      - {{ name: nurses, users: [ann], reserve: 1, max: 2 }}\n      - {{ name: docs, users: [], pool: gold, reserve: 4 }}"
        ))
        .unwrap();
        let g = &c.products[0].groups;
        assert_eq!(
            (g[0].name.as_str(), g[0].pool, g[0].reserve, g[0].max),
            ("nurses", 1, 1, Some(2))
        );
        assert!(g[0].users.contains("ann"));
        assert_eq!((g[1].pool, g[1].reserve, g[1].max), (0, 4, None));
    }

    #[test]
    fn group_errors_name_the_key_and_line() {
        let err = |groups: &str| with(&format!("    seats: 3\n    groups:\n{groups}")).unwrap_err();
        assert_eq!(
            err("      - { name: g, users: [], pool: gold }"),
            "products[0].groups[0].pool (line 11): unknown pool `gold`"
        );
        assert_eq!(
            err("      - { name: g, users: [], reserve: 4 }"),
            "products[0].groups[0].reserve (line 11): reserve 4 is larger than pool `default` \
             (3 seats)"
        );
        assert_eq!(
            err("      - { name: g, users: [], reserve: 2, max: 1 }"),
            "products[0].groups[0].max (line 11): max must be at least reserve"
        );
        assert_eq!(
            err("      - { name: g, users: [], reserve: 2 }\n      - { name: h, users: [], reserve: 2 }"),
            "products[0].groups (line 10): reserves add up to 4, more than pool `default` (3 seats)"
        );
    }
}
