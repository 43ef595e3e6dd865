//! May this login take a seat? Pure rules over counts, shared by every ledger backend.
//!
//! FlexLM semantics for groups: a group's `reserve` seats are usable only by its members and
//! are used first by them; members beyond their reserve draw on the unreserved seats like
//! everybody else; `max` caps a group whatever is free.

use crate::domain::{Full, FullReason, GroupLimit, Millis, PoolSpec};

/// Who holds the pool's seats right now (pending logins included, expired seats excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holders<'a> {
    pub users: Vec<Option<&'a str>>,
}

impl<'a> Holders<'a> {
    pub fn new(users: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        Holders {
            users: users.into_iter().collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Admit {
    Seat,
    /// All seats taken but the pool's pay-per-use allowance is not spent.
    Overflow,
    Deny(Full),
}

/// The first group `user` belongs to (a user in two groups counts in the first).
pub fn group_of(groups: &[GroupLimit], user: Option<&str>) -> Option<usize> {
    let u = user?;
    groups.iter().position(|g| g.users.contains(u))
}

/// What admission needs to know of the holders, for one asking user: how many hold, how many
/// of them are that user, and how many are in each group (by [`group_of`]). A store that keeps
/// these counts as seats come and go decides without walking the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub in_use: u32,
    pub mine: u32,
    pub per_group: Vec<u32>,
}

impl Holders<'_> {
    pub fn counts(&self, spec: &PoolSpec, user: Option<&str>) -> Counts {
        let mut per_group = vec![0u32; spec.groups.len()];
        for h in &self.users {
            if let Some(g) = group_of(&spec.groups, *h) {
                per_group[g] += 1;
            }
        }
        Counts {
            in_use: self.users.len() as u32,
            mine: user.map_or(0, |u| {
                self.users.iter().filter(|h| **h == Some(u)).count() as u32
            }),
            per_group,
        }
    }
}

/// Decides one admission. `overflow_left_ms` is what remains of the pool's overflow allowance.
pub fn admit(
    spec: &PoolSpec,
    holders: &Holders<'_>,
    user: Option<&str>,
    now: Millis,
    overflow_left_ms: Option<u64>,
) -> Admit {
    admit_counts(
        spec,
        &holders.counts(spec, user),
        user,
        now,
        overflow_left_ms,
    )
}

/// [`admit`] from counts. `counts.per_group` has one entry per group of `spec`.
pub fn admit_counts(
    spec: &PoolSpec,
    counts: &Counts,
    user: Option<&str>,
    now: Millis,
    overflow_left_ms: Option<u64>,
) -> Admit {
    let capacity = spec.capacity(now);
    let in_use = counts.in_use;
    let full = |reason| {
        Admit::Deny(Full {
            in_use,
            capacity,
            reason,
        })
    };

    if let (Some(max), Some(_)) = (spec.max_sessions, user) {
        if counts.mine >= max {
            return full(FullReason::UserMax);
        }
    }
    let my_group = group_of(&spec.groups, user);
    let per_group = &counts.per_group;
    let in_groups: u32 = per_group.iter().sum();
    let mut general_used = in_use.saturating_sub(in_groups);
    if let Some(g) = my_group {
        if spec.groups[g].max.is_some_and(|m| per_group[g] >= m) {
            return full(FullReason::GroupMax);
        }
    }
    let reserved: u32 = spec.groups.iter().map(|g| g.reserve).sum();
    for (g, limit) in spec.groups.iter().enumerate() {
        general_used += per_group[g].saturating_sub(limit.reserve);
    }
    let general_capacity = capacity.saturating_sub(reserved);
    let fits = in_use < capacity
        && (my_group.is_some_and(|g| per_group[g] < spec.groups[g].reserve)
            || general_used < general_capacity);
    if fits {
        return Admit::Seat;
    }
    match overflow_left_ms {
        Some(left) if left > 0 => Admit::Overflow,
        Some(_) => full(FullReason::OverflowSpent),
        None => full(FullReason::Pool),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Grant, PoolKey, SeatsPer};

    fn spec(seats: u32, groups: Vec<GroupLimit>, max_sessions: Option<u32>) -> PoolSpec {
        PoolSpec {
            key: PoolKey::new("p", "default"),
            grants: vec![Grant {
                seats,
                not_before: None,
                expires: None,
            }],
            idle_timeout: 1000,
            max_lifetime: 10_000,
            presence_timeout: None,
            standby_timeout: 1000,
            seats_per: SeatsPer::Session,
            max_sessions,
            groups,
            overflow_ms: None,
            queue: None,
        }
    }

    fn group(name: &str, users: &[&str], reserve: u32, max: Option<u32>) -> GroupLimit {
        GroupLimit {
            name: name.into(),
            users: users.iter().map(|s| s.to_string()).collect(),
            reserve,
            max,
        }
    }

    #[test]
    fn plain_pool() {
        let s = spec(2, vec![], None);
        assert_eq!(
            admit(&s, &Holders::new([]), Some("a"), 0, None),
            Admit::Seat
        );
        assert_eq!(
            admit(&s, &Holders::new([Some("x")]), None, 0, None),
            Admit::Seat
        );
        assert_eq!(
            admit(&s, &Holders::new([Some("x"), None]), Some("a"), 0, None),
            Admit::Deny(Full {
                in_use: 2,
                capacity: 2,
                reason: FullReason::Pool
            })
        );
    }

    #[test]
    fn reserve_is_kept_for_the_group() {
        // 3 seats, 1 reserved for ops: outsiders get 2, ops still gets in.
        let s = spec(3, vec![group("ops", &["olga"], 1, None)], None);
        let two = Holders::new([Some("a"), Some("b")]);
        assert!(matches!(
            admit(&s, &two, Some("c"), 0, None),
            Admit::Deny(_)
        ));
        assert_eq!(admit(&s, &two, Some("olga"), 0, None), Admit::Seat);
        // A member beyond the reserve competes for unreserved seats.
        let h = Holders::new([Some("olga"), Some("a")]);
        assert_eq!(admit(&s, &h, Some("olga"), 0, None), Admit::Seat);
        let h = Holders::new([Some("olga"), Some("a"), Some("b")]);
        assert!(matches!(
            admit(&s, &h, Some("olga"), 0, None),
            Admit::Deny(_)
        ));
    }

    #[test]
    fn group_max_caps_members() {
        let s = spec(10, vec![group("interns", &["i1", "i2"], 0, Some(1))], None);
        assert_eq!(
            admit(&s, &Holders::new([]), Some("i1"), 0, None),
            Admit::Seat
        );
        assert_eq!(
            admit(&s, &Holders::new([Some("i1")]), Some("i2"), 0, None),
            Admit::Deny(Full {
                in_use: 1,
                capacity: 10,
                reason: FullReason::GroupMax
            })
        );
        assert_eq!(
            admit(&s, &Holders::new([Some("i1")]), Some("bob"), 0, None),
            Admit::Seat
        );
    }

    #[test]
    fn max_sessions_per_user() {
        let s = spec(10, vec![], Some(2));
        let h = Holders::new([Some("a"), Some("a")]);
        assert_eq!(
            admit(&s, &h, Some("a"), 0, None),
            Admit::Deny(Full {
                in_use: 2,
                capacity: 10,
                reason: FullReason::UserMax
            })
        );
        assert_eq!(admit(&s, &h, Some("b"), 0, None), Admit::Seat);
    }

    #[test]
    fn grants_sum_and_expire() {
        let mut s = spec(1, vec![], None);
        s.grants.push(Grant {
            seats: 2,
            not_before: Some(100),
            expires: Some(200),
        });
        assert_eq!(s.capacity(50), 1);
        assert_eq!(s.capacity(150), 3);
        assert_eq!(s.capacity(200), 1);
        let h = Holders::new([None, None]);
        assert_eq!(admit(&s, &h, None, 150, None), Admit::Seat);
        assert!(matches!(admit(&s, &h, None, 250, None), Admit::Deny(_)));
    }

    #[test]
    fn overflow_only_when_full_and_not_spent() {
        let s = spec(1, vec![], None);
        assert_eq!(admit(&s, &Holders::new([]), None, 0, Some(1)), Admit::Seat);
        assert_eq!(
            admit(&s, &Holders::new([None]), None, 0, Some(60_000)),
            Admit::Overflow
        );
        assert_eq!(
            admit(&s, &Holders::new([None]), None, 0, Some(0)),
            Admit::Deny(Full {
                in_use: 1,
                capacity: 1,
                reason: FullReason::OverflowSpent
            })
        );
    }
}
