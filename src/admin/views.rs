//! The JSON shapes the API answers with (sessions, pools, the caller), and the listing's
//! filters and paging: pure functions of what the ledger returned.

use super::auth::Principal;
use crate::config::{Config, Permission, Role};
use crate::domain::{PoolKey, PoolSpec, PoolUsage, SeatId, SeatRecord, Ticket};
use crate::policy::seat::{deadline, SeatTimes};
use serde_json::{json, Value};
use std::collections::HashMap;

pub use crate::audit::rfc3339;

/// Parsed `GET /api/sessions` filters; unknown parameters are an error, not ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub user: Option<String>,
    pub product: Option<String>,
    pub license_type: Option<String>,
    pub state: Option<String>,
    /// Paging: at most this many sessions, ordered by id, after `cursor` (an id).
    pub limit: Option<usize>,
    pub cursor: Option<SeatId>,
}

/// The most sessions one page may ask for.
pub const MAX_PAGE: usize = 1000;

pub fn parse_filter(query: Option<&str>) -> Result<SessionFilter, String> {
    let mut f = SessionFilter::default();
    for (k, v) in filter_pairs(query)? {
        match k.as_str() {
            "user" => f.user = v,
            "product" => f.product = v,
            "license_type" | "pool" => f.license_type = v,
            "state" => {
                if let Some(s) = &v {
                    if s.parse::<crate::domain::SeatState>().is_err() {
                        return Err(format!("unknown state `{s}`"));
                    }
                }
                f.state = v
            }
            "limit" => {
                let n = v.as_deref().map(str::parse::<usize>);
                match n {
                    Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => f.limit = Some(n),
                    _ => return Err(format!("`limit` must be a number from 1 to {MAX_PAGE}")),
                }
            }
            "cursor" => {
                f.cursor = match v.as_deref().map(str::parse::<SeatId>) {
                    None => None,
                    Some(Ok(id)) => Some(id),
                    Some(Err(())) => return Err("`cursor` must be a session id".into()),
                }
            }
            other => {
                return Err(format!(
                    "unknown filter `{other}` (user, product, license_type, state, limit, cursor)"
                ))
            }
        }
    }
    Ok(f)
}

/// A listing's query string as filter names and values (an empty value is no filter): the
/// sessions' and the waiting lines' alike; a value over 256 bytes is refused.
pub fn filter_pairs(query: Option<&str>) -> Result<Vec<(String, Option<String>)>, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| {
            if v.len() > 256 {
                return Err(format!("filter `{k}` is too long"));
            }
            Ok((
                k.into_owned(),
                Some(v.into_owned()).filter(|v| !v.is_empty()),
            ))
        })
        .collect()
}

impl SessionFilter {
    pub fn matches(&self, s: &SeatRecord) -> bool {
        self.user
            .as_ref()
            .is_none_or(|u| s.user.as_deref() == Some(u.as_str()))
            && self.product.as_ref().is_none_or(|p| &s.pool.product == p)
            && self.license_type.as_ref().is_none_or(|l| &s.pool.pool == l)
            && self.state.as_ref().is_none_or(|st| s.state.as_str() == st)
    }
}

/// One page of a listing, and the cursor of the next page when there is more.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<'a> {
    pub sessions: Vec<&'a SeatRecord>,
    pub next: Option<SeatId>,
}

/// The sessions of `visible` the filter keeps. Without `limit` that is all of them in the
/// ledger's order; with it, by id (so a page boundary stays put while sessions come and go),
/// after `cursor`, at most `limit`.
pub fn page<'a>(
    visible: impl IntoIterator<Item = &'a SeatRecord>,
    filter: &SessionFilter,
) -> Page<'a> {
    let mut sessions: Vec<&SeatRecord> =
        visible.into_iter().filter(|s| filter.matches(s)).collect();
    let mut next = None;
    if let Some(limit) = filter.limit {
        sessions.sort_by_key(|s| s.id);
        sessions.retain(|s| filter.cursor.is_none_or(|c| s.id > c));
        if sessions.len() > limit {
            sessions.truncate(limit);
            next = sessions.last().map(|s| s.id);
        }
    }
    Page { sessions, next }
}

/// The pools of the running config, to compute when each listed seat ends.
pub fn spec_map(cfg: &Config) -> HashMap<PoolKey, PoolSpec> {
    cfg.products
        .iter()
        .flat_map(|p| crate::config::pool_specs(p))
        .map(|s| (s.key.clone(), s))
        .collect()
}

/// The JSON shape of one session (DESIGN.md contract, plus a few extra fields).
/// `expires_at` is the instant the seat stops counting unless something renews it: the same
/// rule the ledger applies (idle, lifetime, presence, standby, end), so the page can drop an
/// expired row without waiting for the next poll.
pub fn session_json(specs: &HashMap<PoolKey, PoolSpec>, s: &SeatRecord) -> Value {
    let expires_at = specs.get(&s.pool).map(|spec| {
        deadline(
            spec,
            &SeatTimes {
                started_at: s.started_at,
                last_activity: s.last_activity,
                last_heartbeat: s.last_heartbeat,
                state: s.state,
                ending_at: s.ending_at,
            },
        )
    });
    json!({
        "id": s.id.to_string(),
        "product": s.pool.product,
        "user": s.user,
        "device": s.device.as_ref().map(|d| d.chars().take(8).collect::<String>()),
        "client": s.client,
        "license_type": s.pool.pool,
        "state": s.state.as_str(),
        "started_at": rfc3339(s.started_at),
        "last_activity": rfc3339(s.last_activity),
        "last_heartbeat": (s.last_heartbeat > 0).then(|| rfc3339(s.last_heartbeat)),
        // Every request, ignored ones included (`session.activity`), and the person's input
        // as the heartbeat reported it: who is really away. `null` for never (or not since
        // the gateway recorded it).
        "last_request": (s.last_request > 0).then(|| rfc3339(s.last_request)),
        "last_input": (s.last_input > 0).then(|| rfc3339(s.last_input)),
        "expires_at": expires_at.map(rfc3339),
        "ending_at": s.ending_at.map(rfc3339),
        "ended_by": s.ended_by,
        "overflow": s.overflow,
    })
}

/// One pool's counts in `GET /api/usage`.
pub fn usage_json(u: &PoolUsage) -> Value {
    json!({"product": u.product, "pool": u.pool, "capacity": u.capacity, "in_use": u.in_use,
        "available": u.available, "peak": u.peak, "denied": u.denied, "standby": u.standby,
        "ending": u.ending, "overflow_used_seconds": u.overflow_used_seconds,
        "queue_length": u.queue_length})
}

/// One ticket of a waiting line in `GET /api/queue`: its public id (never the cookie or its
/// hash), and the user as typed at the login that joined.
pub fn ticket_json(t: &Ticket) -> Value {
    json!({
        "id": t.id.to_string(),
        "product": t.pool.product,
        "pool": t.pool.pool,
        "position": t.position,
        "user": t.user,
        "client": t.client,
        "joined_at": rfc3339(t.joined_at),
        "last_poll": rfc3339(t.last_poll),
        "state": t.state.as_str(),
        "ready_until": t.ready_until.map(rfc3339),
    })
}

/// `GET /api/me`: who the caller is, and the page's CSRF token when it came by cookie.
pub fn me_json(who: &Principal, csrf: Option<String>) -> Value {
    let role = match who.role {
        Role::Super => "super",
        Role::Domain => "domain",
        Role::Own => "own",
    };
    let permission = match who.permission {
        Permission::View => "view",
        Permission::Control => "control",
    };
    json!({"name": who.name, "role": role, "permission": permission,
        "products": who.products, "csrf_token": csrf})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{crm_config, seat};
    use crate::domain::SeatState;

    #[test]
    fn filters() {
        assert_eq!(parse_filter(None).unwrap(), SessionFilter::default());
        let f = parse_filter(Some("user=bob&product=crm&license_type=")).unwrap();
        assert_eq!(
            f,
            SessionFilter {
                user: Some("bob".into()),
                product: Some("crm".into()),
                ..Default::default()
            }
        );
        assert!(f.matches(&seat("crm", "bob")) && !f.matches(&seat("hr", "bob")));
        assert_eq!(
            parse_filter(Some("usr=x")).unwrap_err(),
            "unknown filter `usr` (user, product, license_type, state, limit, cursor)"
        );
        assert!(parse_filter(Some("state=zombie")).is_err());
        assert!(parse_filter(Some("state=exempt")).is_ok());
        let f = parse_filter(Some("limit=2&cursor=00000000000000ff")).unwrap();
        assert_eq!((f.limit, f.cursor), (Some(2), Some(SeatId(0xff))));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "cursor=zz",
            "cursor=12345678901234567",
        ] {
            assert!(parse_filter(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_follow_ids_from_the_cursor() {
        let with_id = |id, user: &str| SeatRecord {
            id: SeatId(id),
            ..seat("crm", user)
        };
        let list = [
            with_id(5, "ann"),
            with_id(2, "bob"),
            with_id(9, "ann"),
            with_id(7, "ann"),
        ];
        let ids = |p: &Page| p.sessions.iter().map(|s| s.id.0).collect::<Vec<_>>();
        // Without a limit: everything the filter keeps, in the ledger's order.
        let all = page(&list, &parse_filter(Some("user=ann")).unwrap());
        assert_eq!((ids(&all), all.next), (vec![5, 9, 7], None));
        let first = page(&list, &parse_filter(Some("limit=2")).unwrap());
        assert_eq!((ids(&first), first.next), (vec![2, 5], Some(SeatId(5))));
        let q = format!("limit=2&cursor={}", SeatId(5));
        let last = page(&list, &parse_filter(Some(&q)).unwrap());
        assert_eq!((ids(&last), last.next), (vec![7, 9], None));
        let ann = page(&list, &parse_filter(Some("limit=1&user=ann")).unwrap());
        assert_eq!((ids(&ann), ann.next), (vec![5], Some(SeatId(5))));
    }

    #[test]
    fn expires_at_follows_the_ledger_rule() {
        let cfg = crm_config("admin: { listen: 127.0.0.1:2 }");
        let specs = spec_map(&cfg);
        let mut s = seat("crm", "kim");
        s.last_activity = 60_000;
        assert_eq!(session_json(&specs, &s)["expires_at"], rfc3339(660_000));
        // Paused: idle does not apply, only the lifetime.
        s.state = SeatState::Paused;
        assert_eq!(session_json(&specs, &s)["expires_at"], rfc3339(3_600_000));
        s.state = SeatState::Ending;
        s.ending_at = Some(90_000);
        assert_eq!(session_json(&specs, &s)["expires_at"], rfc3339(90_000));
        s.pool = PoolKey::new("gone", "default");
        assert_eq!(session_json(&specs, &s)["expires_at"], Value::Null);
    }

    #[test]
    fn tickets_show_their_public_id_never_the_cookie_hash() {
        use crate::domain::{TicketKey, TicketState};
        let pool = PoolKey::new("crm", "default");
        let key = TicketKey::new(&pool, "secret-cookie");
        let t = Ticket {
            id: SeatId(0x2a),
            key,
            pool,
            user: Some("Ann".into()),
            client: "web".into(),
            joined_at: 1_000,
            last_poll: 2_000,
            state: TicketState::Ready,
            ready_until: Some(61_000),
            position: 1,
        };
        let j = ticket_json(&t);
        assert_eq!(
            j,
            json!({"id": "000000000000002a", "product": "crm", "pool": "default", "position": 1,
                "user": "Ann", "client": "web", "joined_at": "1970-01-01T00:00:01.000Z",
                "last_poll": "1970-01-01T00:00:02.000Z", "state": "ready",
                "ready_until": "1970-01-01T00:01:01.000Z"})
        );
        assert!(!j.to_string().contains(&key.hex()));
    }

    #[test]
    fn me_names_role_and_permission() {
        let p = Principal {
            name: "kim".into(),
            role: Role::Domain,
            products: vec!["crm".into()],
            permission: Permission::View,
        };
        assert_eq!(
            me_json(&p, None),
            json!({"name": "kim", "role": "domain", "permission": "view",
                "products": ["crm"], "csrf_token": null})
        );
    }
}
