//! Who may see and do what: pure functions of the admin (role, products, permission) and the
//! session, returning values the handlers turn into answers.
//!
//! * `super` sees every session, `domain` those of its products, `own` only its own.
//! * `control` is needed to end a session; pausing (keeping the session but giving up its
//!   seat) is also the session owner's choice alone, whatever the role.
//! * A paused session is listed for its owner only: it holds no seat, so nobody else has
//!   anything to free.
//! * A session someone may not see is *unknown* to them (404), never *forbidden* (403): a
//!   refusal would tell them it exists.

use super::auth::Principal;
use crate::config::{Permission, Role};
use crate::domain::{SeatRecord, SeatState, Ticket};

/// What an admin asks to do with one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    See,
    End,
    /// Pause or resume: both are the owner's choice.
    Pause,
}

/// Why an action on a session is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Answered as if the session did not exist.
    Unknown,
    /// The admin sees the session but may not do this to it.
    Forbidden,
}

fn owner(p: &Principal, seat: &SeatRecord) -> bool {
    seat.user.as_deref() == Some(p.name.as_str())
}

/// The role's reach, the same for sessions and tickets: `super` all, `domain` those of its
/// products, `own` those whose user is the admin's name.
fn in_reach(p: &Principal, product: &str, user: Option<&str>) -> bool {
    match p.role {
        Role::Super => true,
        Role::Domain => p.products.iter().any(|x| x == product),
        Role::Own => user == Some(p.name.as_str()),
    }
}

pub fn may_see(p: &Principal, seat: &SeatRecord) -> bool {
    if seat.state == SeatState::Paused && !owner(p, seat) {
        return false;
    }
    in_reach(p, &seat.pool.product, seat.user.as_deref())
}

pub fn may_control(p: &Principal, seat: &SeatRecord) -> bool {
    p.permission == Permission::Control && may_see(p, seat)
}

/// Pausing keeps a session but gives up its seat: a choice for the session's owner only.
pub fn may_pause(p: &Principal, seat: &SeatRecord) -> bool {
    may_control(p, seat) && owner(p, seat)
}

/// Whether `p` may do `action` to `seat`, and if not, how the refusal is answered.
pub fn check(p: &Principal, action: Action, seat: &SeatRecord) -> Result<(), Refusal> {
    if !may_see(p, seat) {
        return Err(Refusal::Unknown);
    }
    let allowed = match action {
        Action::See => true,
        Action::End => may_control(p, seat),
        Action::Pause => may_pause(p, seat),
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::Forbidden)
    }
}

/// Whether `p` sees a ticket in a waiting line: as for sessions, the user being the name as
/// typed at the login that joined.
pub fn may_see_ticket(p: &Principal, t: &Ticket) -> bool {
    in_reach(p, &t.pool.product, t.user.as_deref())
}

/// Whether `p` may remove ticket `t` from its line: `control` over a ticket it sees, exactly
/// as ending a session. A ticket it may not see is unknown to it.
pub fn check_remove_ticket(p: &Principal, t: &Ticket) -> Result<(), Refusal> {
    if !may_see_ticket(p, t) {
        Err(Refusal::Unknown)
    } else if p.permission != Permission::Control {
        Err(Refusal::Forbidden)
    } else {
        Ok(())
    }
}

/// Whether `p` sees a product's pool counts and reports at all.
pub fn may_see_product(p: &Principal, product: &str) -> bool {
    p.role != Role::Domain || p.products.iter().any(|x| x == product)
}

/// Whether `p` learns that a session it asked to end has already ended. Whose it was is gone
/// with it, so only a super admin, who could have seen any session, is told it existed.
pub fn may_know_ended(p: &Principal) -> bool {
    p.role == Role::Super
}

/// Whether `p` sees the report hours of `user`: `own` sees pool-wide counts (like the usage
/// table) but only its own hours.
pub fn may_see_hours_of(p: &Principal, user: &str) -> bool {
    p.role != Role::Own || user == p.name
}

/// Reloading changes every product's rules: super admins with `control` only.
pub fn may_reload(p: &Principal) -> bool {
    p.role == Role::Super && p.permission == Permission::Control
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::seat;

    fn who(role: Role, products: &[&str], permission: Permission) -> Principal {
        Principal {
            name: "kim".into(),
            role,
            products: products.iter().map(|s| s.to_string()).collect(),
            permission,
        }
    }

    fn paused(product: &str, user: &str) -> SeatRecord {
        SeatRecord {
            state: SeatState::Paused,
            ..seat(product, user)
        }
    }

    #[test]
    fn roles() {
        let crm_kim = seat("crm", "kim");
        let crm_bob = seat("crm", "bob");
        let hr_bob = seat("hr", "bob");
        let sup = who(Role::Super, &[], Permission::Control);
        let dom = who(Role::Domain, &["crm"], Permission::Control);
        let own = who(Role::Own, &[], Permission::Control);
        let viewer = who(Role::Domain, &["crm"], Permission::View);
        assert!(may_see(&sup, &hr_bob) && may_control(&sup, &hr_bob));
        assert!(may_see(&dom, &crm_bob) && !may_see(&dom, &hr_bob));
        assert!(may_see(&own, &crm_kim) && !may_see(&own, &crm_bob));
        assert!(may_see(&viewer, &crm_bob) && !may_control(&viewer, &crm_bob));
        // Pause is for the owner only, whatever the role.
        assert!(may_pause(&own, &crm_kim) && may_pause(&sup, &crm_kim));
        assert!(!may_pause(&sup, &hr_bob) && !may_pause(&dom, &crm_bob));
        let own_viewer = who(Role::Own, &[], Permission::View);
        assert!(may_see(&own_viewer, &crm_kim) && !may_pause(&own_viewer, &crm_kim));
        // A paused session is listed for its owner only.
        assert!(!may_see(&sup, &paused("crm", "bob")) && may_see(&sup, &paused("crm", "kim")));
        assert!(may_see_product(&sup, "hr") && may_see_product(&own, "hr"));
        assert!(may_see_product(&dom, "crm") && !may_see_product(&dom, "hr"));
    }

    /// Every role × permission × action on sessions of the admin's own product and another,
    /// the admin's own and someone else's, holding a seat and paused.
    #[test]
    fn table_of_roles_actions_and_session_domains() {
        use Action::{End, Pause, See};
        const OK: Result<(), Refusal> = Ok(());
        const UNKNOWN: Result<(), Refusal> = Err(Refusal::Unknown);
        const FORBIDDEN: Result<(), Refusal> = Err(Refusal::Forbidden);
        // kim administers crm; sessions: (product, user, paused).
        let sessions = [
            ("crm", "kim", false),
            ("crm", "bob", false),
            ("hr", "kim", false),
            ("hr", "bob", false),
            ("crm", "kim", true),
            ("crm", "bob", true),
        ];
        type Row = (Role, Permission, Action, [Result<(), Refusal>; 6]);
        #[rustfmt::skip]
        let table: [Row; 18] = [
            //                                     crm kim    crm bob    hr kim     hr bob     crm kim ⏸  crm bob ⏸
            (Role::Super, Permission::Control, See,   [OK,        OK,        OK,        OK,        OK,        UNKNOWN]),
            (Role::Super, Permission::Control, End,   [OK,        OK,        OK,        OK,        OK,        UNKNOWN]),
            (Role::Super, Permission::Control, Pause, [OK,        FORBIDDEN, OK,        FORBIDDEN, OK,        UNKNOWN]),
            (Role::Super, Permission::View,    See,   [OK,        OK,        OK,        OK,        OK,        UNKNOWN]),
            (Role::Super, Permission::View,    End,   [FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNKNOWN]),
            (Role::Super, Permission::View,    Pause, [FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, UNKNOWN]),
            (Role::Domain, Permission::Control, See,   [OK,        OK,        UNKNOWN,   UNKNOWN,   OK,        UNKNOWN]),
            (Role::Domain, Permission::Control, End,   [OK,        OK,        UNKNOWN,   UNKNOWN,   OK,        UNKNOWN]),
            (Role::Domain, Permission::Control, Pause, [OK,        FORBIDDEN, UNKNOWN,   UNKNOWN,   OK,        UNKNOWN]),
            (Role::Domain, Permission::View,    See,   [OK,        OK,        UNKNOWN,   UNKNOWN,   OK,        UNKNOWN]),
            (Role::Domain, Permission::View,    End,   [FORBIDDEN, FORBIDDEN, UNKNOWN,   UNKNOWN,   FORBIDDEN, UNKNOWN]),
            (Role::Domain, Permission::View,    Pause, [FORBIDDEN, FORBIDDEN, UNKNOWN,   UNKNOWN,   FORBIDDEN, UNKNOWN]),
            (Role::Own, Permission::Control,    See,   [OK,        UNKNOWN,   OK,        UNKNOWN,   OK,        UNKNOWN]),
            (Role::Own, Permission::Control,    End,   [OK,        UNKNOWN,   OK,        UNKNOWN,   OK,        UNKNOWN]),
            (Role::Own, Permission::Control,    Pause, [OK,        UNKNOWN,   OK,        UNKNOWN,   OK,        UNKNOWN]),
            (Role::Own, Permission::View,       See,   [OK,        UNKNOWN,   OK,        UNKNOWN,   OK,        UNKNOWN]),
            (Role::Own, Permission::View,       End,   [FORBIDDEN, UNKNOWN,   FORBIDDEN, UNKNOWN,   FORBIDDEN, UNKNOWN]),
            (Role::Own, Permission::View,       Pause, [FORBIDDEN, UNKNOWN,   FORBIDDEN, UNKNOWN,   FORBIDDEN, UNKNOWN]),
        ];
        for (role, permission, action, expected) in table {
            let p = who(role, &["crm"], permission);
            for ((product, user, is_paused), want) in sessions.iter().zip(expected) {
                let s = if *is_paused {
                    paused(product, user)
                } else {
                    seat(product, user)
                };
                assert_eq!(
                    check(&p, action, &s),
                    want,
                    "{role:?} {permission:?} {action:?} on {product}/{user} paused={is_paused}"
                );
                // `check` agrees with the predicates the listing and the batch checks use.
                assert_eq!(check(&p, See, &s).is_ok(), may_see(&p, &s));
            }
        }
    }

    #[test]
    fn tickets_follow_the_session_rules_for_seeing_and_ending() {
        use crate::domain::{PoolKey, SeatId, TicketKey, TicketState};
        let ticket = |product: &str, user: &str| {
            let pool = PoolKey::new(product, "default");
            Ticket {
                id: SeatId(1),
                key: TicketKey::new(&pool, "c"),
                pool,
                user: Some(user.into()),
                client: "web".into(),
                joined_at: 0,
                last_poll: 0,
                state: TicketState::Waiting,
                ready_until: None,
                position: 1,
            }
        };
        const OK: Result<(), Refusal> = Ok(());
        const UNKNOWN: Result<(), Refusal> = Err(Refusal::Unknown);
        const FORBIDDEN: Result<(), Refusal> = Err(Refusal::Forbidden);
        let tickets = [("crm", "kim"), ("crm", "bob"), ("hr", "kim"), ("hr", "bob")];
        #[rustfmt::skip]
        let table = [
            //                                  crm kim    crm bob    hr kim     hr bob
            (Role::Super, Permission::Control,  [OK,        OK,        OK,        OK]),
            (Role::Super, Permission::View,     [FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN]),
            (Role::Domain, Permission::Control, [OK,        OK,        UNKNOWN,   UNKNOWN]),
            (Role::Domain, Permission::View,    [FORBIDDEN, FORBIDDEN, UNKNOWN,   UNKNOWN]),
            (Role::Own, Permission::Control,    [OK,        UNKNOWN,   OK,        UNKNOWN]),
            (Role::Own, Permission::View,       [FORBIDDEN, UNKNOWN,   FORBIDDEN, UNKNOWN]),
        ];
        for (role, permission, expected) in table {
            let p = who(role, &["crm"], permission);
            for ((product, user), want) in tickets.iter().zip(expected) {
                let t = ticket(product, user);
                assert_eq!(
                    check_remove_ticket(&p, &t),
                    want,
                    "{role:?} {permission:?} {product}/{user}"
                );
                assert_eq!(may_see_ticket(&p, &t), want != UNKNOWN);
                // The same answer as ending a session of that product and user.
                assert_eq!(want, check(&p, Action::End, &seat(product, user)));
            }
        }
    }

    #[test]
    fn products_hours_ended_sessions_and_reload() {
        let table = [
            // role, permission: sees hr's counts, bob's hours, learns of an ended session, reloads
            (Role::Super, Permission::Control, true, true, true, true),
            (Role::Super, Permission::View, true, true, true, false),
            (Role::Domain, Permission::Control, false, true, false, false),
            (Role::Own, Permission::Control, true, false, false, false),
        ];
        for (role, permission, hr, bob, ended, reload) in table {
            let p = who(role, &["crm"], permission);
            let got = (
                may_see_product(&p, "hr"),
                may_see_hours_of(&p, "bob"),
                may_know_ended(&p),
                may_reload(&p),
            );
            assert_eq!(got, (hr, bob, ended, reload), "{role:?} {permission:?}");
            assert!(may_see_product(&p, "crm") && may_see_hours_of(&p, "kim"));
        }
    }
}
