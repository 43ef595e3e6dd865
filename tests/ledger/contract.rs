//! The ledger contract, written once against `dyn SeatLedger` and run on every store: every
//! operation of the trait and every release reason. Each scenario restarts the store
//! (`checkpoint`) between steps where the store survives restarts, so whatever a step leaves
//! behind must be durable.

use crate::common::*;
use seatgate::domain::SeatsPer;
use seatgate::domain::{
    EndOutcome, FullReason, Gone, Lookup, PauseOutcome, PoolKey, ReleaseReason, Reservation,
    SeatId, SeatState, Touch,
};
use seatgate::ledger::{LedgerError, SeatLedger, Shared};
use std::sync::Arc;

fn held(t: &Touch) -> (SeatId, SeatState, Option<u64>) {
    match t {
        Touch::Held {
            id,
            state,
            ending_at,
            ..
        } => (*id, *state, *ending_at),
        Touch::Gone(g) => panic!("expected a held seat, got {g:?}"),
    }
}

fn gone(r: ReleaseReason) -> Touch {
    Touch::Gone(Gone::Released(r))
}

on_every_store!(
    login_touch_logout,
    restart_keeps_every_state,
    a_crash_loses_at_most_the_unflushed_activity,
    expiry_reasons,
    end_and_lookup,
    pause_and_resume,
    replaced_by_reuse_and_rekey,
    app_logout_and_config,
    uncounted_sessions,
    commit_is_idempotent,
    lapsed_lease_is_rechecked,
    hold_and_cancel,
    tombstones_last_max_lifetime,
    end_racing_pause_leaves_no_zombie,
    two_requests_of_a_paused_session,
    failed_journal_write_is_not_a_seat,
    overflow_stops_when_spent,
    overflow_time_of_paused_seats,
    overflow_seat_that_fits_is_promoted,
    stale_view_is_no_answer,
    clock_offset_steps_redis_time,
    concurrent_operations_keep_the_pool_exact,
    replicas_agree_within_the_cache_bound,
    shared_values_and_health,
    ignored_requests_keep_the_idle_timer,
    input_beats_are_activity,
);

async fn login_touch_logout(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 2)], s(0)).await;
    let a = login(st.l(), "default", "ann", "A", s(0)).await;
    let rec = session(st.l(), a, s(0)).await.unwrap();
    assert_eq!(rec.state, SeatState::Standby);
    assert_eq!(rec.user.as_deref(), Some("ann"));
    assert_eq!(rec.session, Some(key("A")));
    assert_eq!(usage(st.l(), "default", s(0)).await.in_use, 1);

    let t = st.l().touch(&key("A"), s(1)).await.unwrap();
    assert_eq!(held(&t), (a, SeatState::Active, None));
    st.checkpoint(s(1)).await;
    assert_eq!(
        session(st.l(), a, s(2)).await.unwrap().state,
        SeatState::Active,
        "a used seat is active after a restart"
    );
    // Quiet for almost the idle timeout, across a restart: still in.
    st.checkpoint(s(500)).await;
    let t = st.l().touch(&key("A"), s(600)).await.unwrap();
    assert_eq!(held(&t).0, a);

    let rec = st
        .l()
        .release(&key("A"), ReleaseReason::Logout, s(601))
        .await
        .unwrap()
        .expect("released");
    assert_eq!(rec.id, a);
    assert_eq!(
        st.l().touch(&key("A"), s(602)).await.unwrap(),
        gone(ReleaseReason::Logout)
    );
    assert_eq!(st.seen.reasons(a), vec![ReleaseReason::Logout]);
    assert_eq!(usage(st.l(), "default", s(602)).await.in_use, 0);
    assert!(st
        .l()
        .release(&key("A"), ReleaseReason::Logout, s(603))
        .await
        .unwrap()
        .is_none());
    assert!(!st.l().heartbeat(&key("nobody"), s(603)).await.unwrap());
    assert_eq!(
        st.l().touch(&key("nobody"), s(603)).await.unwrap(),
        Touch::Gone(Gone::Unknown)
    );
}

async fn restart_keeps_every_state(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 4)], s(0)).await;
    let l = st.l();
    let a = login(l, "default", "ann", "A", s(0)).await;
    let b = login(l, "default", "bob", "B", s(0)).await;
    let c = login(l, "default", "cat", "C", s(0)).await;
    let d = login(l, "default", "dan", "D", s(0)).await;
    let e = l
        .admit_uncounted(&claim("default", "svc"), SeatState::Exempt, key("E"), s(0))
        .await
        .unwrap();
    for k in ["B", "C", "D"] {
        let _ = l.touch(&key(k), s(1)).await.unwrap();
    }
    assert_eq!(l.pause(c, s(2)).await.unwrap(), PauseOutcome::Done);
    assert_eq!(
        l.end(&[d], 300_000, "admin", s(5)).await.unwrap(),
        vec![(d, EndOutcome::Ending { at: s(305) })]
    );
    st.checkpoint(s(10)).await;

    let states: Vec<_> = st
        .l()
        .sessions(s(10))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.state, r.ending_at, r.last_activity))
        .collect();
    for want in [
        (a, SeatState::Standby, None, s(0)),
        (b, SeatState::Active, None, s(1)),
        (c, SeatState::Paused, None, s(1)),
        (d, SeatState::Ending, Some(s(305)), s(1)),
        (e, SeatState::Exempt, None, s(0)),
    ] {
        assert!(states.contains(&want), "{want:?} not in {states:?}");
    }
    assert_eq!(usage(st.l(), "default", s(10)).await.in_use, 3);

    // A standby seat still lapses; an active one does not.
    assert_eq!(
        st.l().touch(&key("A"), s(61)).await.unwrap(),
        gone(ReleaseReason::Standby)
    );
    assert_eq!(held(&st.l().touch(&key("B"), s(100)).await.unwrap()).0, b);
    assert_eq!(st.l().resume(c, s(100)).await.unwrap(), PauseOutcome::Done);
    assert_eq!(
        held(&st.l().touch(&key("D"), s(100)).await.unwrap()),
        (d, SeatState::Ending, Some(s(305)))
    );
    assert_eq!(
        held(&st.l().touch(&key("E"), s(100)).await.unwrap()).1,
        SeatState::Exempt
    );
    st.checkpoint(s(200)).await;
    let rec = session(st.l(), b, s(200)).await.unwrap();
    assert_eq!(rec.last_activity, s(100), "flushed activity survives");
    assert_eq!(rec.state, SeatState::Active);
    let rec = session(st.l(), c, s(200)).await.unwrap();
    assert_eq!(rec.state, SeatState::Active, "a resume survives");
    assert_eq!(
        st.l().touch(&key("D"), s(305)).await.unwrap(),
        gone(ReleaseReason::Ended)
    );
    assert_eq!(
        st.l().touch(&key("B"), s(700)).await.unwrap(),
        gone(ReleaseReason::Idle)
    );
}

async fn expiry_reasons(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 10)], s(0)).await;
    let l = st.l();
    let a = login(l, "default", "ann", "A", s(0)).await;
    let b = login(l, "default", "bob", "B", s(0)).await;
    let c = login(l, "default", "cat", "C", s(0)).await;
    let d = login(l, "default", "dan", "D", s(0)).await;
    for k in ["B", "C", "D"] {
        let _ = l.touch(&key(k), s(1)).await.unwrap();
    }
    assert!(l.heartbeat(&key("C"), s(2)).await.unwrap());
    st.checkpoint(s(3)).await;
    let l = st.l();
    assert_eq!(
        l.touch(&key("A"), s(60)).await.unwrap(),
        gone(ReleaseReason::Standby)
    );
    assert_eq!(held(&l.touch(&key("C"), s(91)).await.unwrap()).0, c);
    assert!(l.heartbeat(&key("C"), s(100)).await.unwrap());
    st.checkpoint(s(101)).await;
    let l = st.l();
    // Presence: gone 90 s after the later of the last heartbeat and the last request.
    assert_eq!(
        l.touch(&key("C"), s(190)).await.unwrap(),
        gone(ReleaseReason::Presence)
    );
    assert!(!l.heartbeat(&key("C"), s(191)).await.unwrap());
    for t in [500, 1000, 1500, 2000, 2500, 3000, 3500] {
        assert_eq!(held(&l.touch(&key("D"), s(t)).await.unwrap()).0, d);
        if t == 500 {
            assert!(l.sweep(s(601)).await.unwrap() >= 1, "B idles out");
            assert_eq!(
                l.touch(&key("B"), s(602)).await.unwrap(),
                gone(ReleaseReason::Idle)
            );
        }
    }
    assert_eq!(
        l.touch(&key("D"), s(3600)).await.unwrap(),
        gone(ReleaseReason::Lifetime)
    );
    assert_eq!(st.seen.reasons(a), vec![ReleaseReason::Standby]);
    assert_eq!(st.seen.reasons(b), vec![ReleaseReason::Idle]);
    assert_eq!(st.seen.reasons(c), vec![ReleaseReason::Presence]);
    assert_eq!(st.seen.reasons(d), vec![ReleaseReason::Lifetime]);
    assert_eq!(usage(st.l(), "default", s(3600)).await.in_use, 0);
}

async fn end_and_lookup(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 2)], s(0)).await;
    let l = st.l();
    let a = login(l, "default", "ann", "A", s(0)).await;
    let _ = l.touch(&key("A"), s(1)).await.unwrap();
    let listed = session(l, a, s(2)).await.unwrap();
    assert_eq!(l.lookup(a, s(2)).await.unwrap(), Lookup::Live(listed));
    assert_eq!(
        l.end(&[a], 30_000, "admin", s(10)).await.unwrap(),
        vec![(a, EndOutcome::Ending { at: s(40) })]
    );
    assert_eq!(
        usage(l, "default", s(11)).await.in_use,
        1,
        "ending still holds"
    );
    assert_eq!(
        held(&l.touch(&key("A"), s(20)).await.unwrap()),
        (a, SeatState::Ending, Some(s(40)))
    );
    assert_eq!(
        l.end(&[a], 30_000, "admin", s(21)).await.unwrap(),
        vec![(a, EndOutcome::AlreadyEnded)]
    );
    assert_eq!(
        session(l, a, s(21)).await.unwrap().ended_by.as_deref(),
        Some("admin")
    );
    st.checkpoint(s(22)).await;
    let l = st.l();
    assert_eq!(
        l.touch(&key("A"), s(40)).await.unwrap(),
        gone(ReleaseReason::Ended)
    );
    assert_eq!(l.lookup(a, s(41)).await.unwrap(), Lookup::Ended);
    assert_eq!(
        l.end(&[a], 0, "admin", s(41)).await.unwrap(),
        vec![(a, EndOutcome::AlreadyEnded)]
    );

    let b = login(l, "default", "bob", "B", s(50)).await;
    assert_eq!(
        l.end(&[b], 0, "admin", s(50)).await.unwrap(),
        vec![(b, EndOutcome::Ending { at: s(50) })]
    );
    assert_eq!(
        l.touch(&key("B"), s(51)).await.unwrap(),
        gone(ReleaseReason::Ended)
    );
    assert_eq!(usage(l, "default", s(51)).await.in_use, 0);
    let nobody = SeatId(0x1234_5679);
    assert_eq!(l.lookup(nobody, s(51)).await.unwrap(), Lookup::Unknown);
    assert_eq!(
        l.end(&[nobody], 0, "admin", s(51)).await.unwrap(),
        vec![(nobody, EndOutcome::NotFound)]
    );
    st.checkpoint(s(52)).await;
    let l = st.l();
    assert_eq!(
        l.lookup(b, s(52)).await.unwrap(),
        Lookup::Ended,
        "remembered"
    );

    // Looking up changes nothing: not the activity, and an expired seat is not released.
    let c = login(l, "default", "cat", "C", s(100)).await;
    let _ = l.touch(&key("C"), s(101)).await.unwrap();
    let before = st.seen.count();
    assert!(matches!(
        l.lookup(c, s(300)).await.unwrap(),
        Lookup::Live(_)
    ));
    assert_eq!(session(l, c, s(300)).await.unwrap().last_activity, s(101));
    assert_eq!(l.lookup(c, s(800)).await.unwrap(), Lookup::Unknown);
    assert_eq!(st.seen.count(), before, "lookup released nothing");
    assert_eq!(l.sweep(s(800)).await.unwrap(), 1);
    assert_eq!(st.seen.reasons(c), vec![ReleaseReason::Idle]);
}

async fn pause_and_resume(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 1)], s(0)).await;
    let l = st.l();
    let a = login(l, "default", "ann", "A", s(0)).await;
    let _ = l.touch(&key("A"), s(1)).await.unwrap();
    assert_eq!(l.pause(a, s(2)).await.unwrap(), PauseOutcome::Done);
    assert_eq!(st.seen.reasons(a), vec![ReleaseReason::Paused]);
    assert_eq!(usage(l, "default", s(2)).await.in_use, 0);
    assert_eq!(session(l, a, s(2)).await.unwrap().state, SeatState::Paused);
    assert_eq!(l.pause(a, s(2)).await.unwrap(), PauseOutcome::WrongState);
    assert_eq!(
        l.pause(SeatId(0x77), s(2)).await.unwrap(),
        PauseOutcome::NotFound
    );
    assert!(!l.heartbeat(&key("A"), s(2)).await.unwrap());

    let _b = login(l, "default", "bob", "B", s(3)).await;
    assert_eq!(l.resume(a, s(4)).await.unwrap(), PauseOutcome::Full);
    assert_eq!(
        l.touch(&key("A"), s(5)).await.unwrap(),
        gone(ReleaseReason::Paused)
    );
    assert_eq!(session(l, a, s(5)).await.unwrap().state, SeatState::Paused);
    st.checkpoint(s(5)).await;
    let l = st.l();
    assert_eq!(session(l, a, s(5)).await.unwrap().state, SeatState::Paused);
    assert!(l
        .release(&key("B"), ReleaseReason::Logout, s(6))
        .await
        .unwrap()
        .is_some());
    assert_eq!(l.resume(a, s(7)).await.unwrap(), PauseOutcome::Done);
    assert_eq!(usage(l, "default", s(7)).await.in_use, 1);
    assert_eq!(session(l, a, s(7)).await.unwrap().state, SeatState::Active);
    assert_eq!(l.resume(a, s(7)).await.unwrap(), PauseOutcome::WrongState);
    assert_eq!(l.pause(a, s(8)).await.unwrap(), PauseOutcome::Done);
    st.checkpoint(s(8)).await;
    let l = st.l();
    assert_eq!(
        held(&l.touch(&key("A"), s(9)).await.unwrap()),
        (a, SeatState::Active, None),
        "a request resumes a paused session when a seat is free"
    );
    assert_eq!(usage(l, "default", s(9)).await.in_use, 1);
    // A paused session still ends at its lifetime.
    assert_eq!(l.pause(a, s(10)).await.unwrap(), PauseOutcome::Done);
    assert_eq!(l.resume(a, s(3600)).await.unwrap(), PauseOutcome::NotFound);
    assert!(l.sweep(s(3600)).await.unwrap() <= 1);
    assert!(session(l, a, s(3600)).await.is_none());
    assert_eq!(
        l.touch(&key("A"), s(3601)).await.unwrap(),
        gone(ReleaseReason::Lifetime)
    );
}

async fn replaced_by_reuse_and_rekey(kind: Kind) {
    let mut sp = spec("default", 2);
    sp.seats_per = SeatsPer::UserDevice;
    let mut st = Store::new(kind, vec![sp], s(0)).await;
    let l = st.l();
    let mut c = claim("default", "ann");
    c.device = Some("d1".into());
    let a = login_with(l, &c, "A", s(0)).await;
    let _ = l.touch(&key("A"), s(1)).await.unwrap();
    c.lease_id += 1;
    let Reservation::Granted(lease) = l.reserve(&c, s(2)).await.unwrap() else {
        panic!("full")
    };
    assert_eq!(lease.reuse, Some(a));
    assert_eq!(l.commit(&lease, &c, key("B"), s(2)).await.unwrap(), a);
    assert_eq!(
        l.touch(&key("A"), s(3)).await.unwrap(),
        gone(ReleaseReason::Replaced)
    );
    assert_eq!(held(&l.touch(&key("B"), s(3)).await.unwrap()).0, a);
    assert_eq!(usage(l, "default", s(3)).await.in_use, 1);

    assert_eq!(l.rekey(&key("B"), key("C"), s(10)).await.unwrap(), Some(a));
    assert_eq!(
        l.touch(&key("B"), s(11)).await.unwrap(),
        gone(ReleaseReason::Replaced)
    );
    assert_eq!(
        held(&l.touch(&key("C"), s(11)).await.unwrap()),
        (a, SeatState::Active, None)
    );
    let list = l.sessions(s(11)).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].session, Some(key("C")));
    assert_eq!(list[0].user.as_deref(), Some("ann"));
    assert_eq!(list[0].started_at, s(0));
    st.checkpoint(s(12)).await;
    let l = st.l();
    assert_eq!(
        l.touch(&key("B"), s(13)).await.unwrap(),
        gone(ReleaseReason::Replaced)
    );
    assert_eq!(held(&l.touch(&key("C"), s(13)).await.unwrap()).0, a);
    assert_eq!(l.rekey(&key("X"), key("Y"), s(14)).await.unwrap(), None);
    assert_eq!(
        l.touch(&key("Y"), s(14)).await.unwrap(),
        Touch::Gone(Gone::Unknown)
    );
    assert_eq!(l.rekey(&key("C"), key("C"), s(14)).await.unwrap(), Some(a));

    // Onto a cookie that holds a session of its own: that one stays, the old one is replaced.
    let d = login(l, "default", "bob", "D", s(15)).await;
    assert_eq!(l.rekey(&key("C"), key("D"), s(16)).await.unwrap(), Some(d));
    assert_eq!(
        l.touch(&key("C"), s(17)).await.unwrap(),
        gone(ReleaseReason::Replaced)
    );
    assert_eq!(usage(l, "default", s(17)).await.in_use, 1);
    assert!(st.seen.reasons(a).contains(&ReleaseReason::Replaced));

    // A paused seat and an uncounted session move with their state.
    assert_eq!(l.pause(d, s(18)).await.unwrap(), PauseOutcome::Done);
    assert_eq!(l.rekey(&key("D"), key("D2"), s(19)).await.unwrap(), Some(d));
    assert_eq!(session(l, d, s(19)).await.unwrap().state, SeatState::Paused);
    let e = l
        .admit_uncounted(&claim("default", "svc"), SeatState::Exempt, key("E"), s(20))
        .await
        .unwrap();
    assert_eq!(l.rekey(&key("E"), key("F"), s(21)).await.unwrap(), Some(e));
    assert_eq!(
        held(&l.touch(&key("F"), s(22)).await.unwrap()),
        (e, SeatState::Exempt, None)
    );
    assert_eq!(
        l.touch(&key("E"), s(22)).await.unwrap(),
        gone(ReleaseReason::Replaced)
    );
}

async fn app_logout_and_config(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 2), spec("old", 1)], s(0)).await;
    let l = st.l();
    let a = login(l, "default", "ann", "A", s(0)).await;
    let rec = l
        .release(&key("A"), ReleaseReason::AppLogout, s(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.id, a);
    assert_eq!(
        l.touch(&key("A"), s(2)).await.unwrap(),
        gone(ReleaseReason::AppLogout)
    );
    assert_eq!(st.seen.reasons(a), vec![ReleaseReason::AppLogout]);

    let b = login(l, "old", "bob", "B", s(3)).await;
    if kind != Kind::Journal {
        // Only the embedded store restarts with a config: elsewhere a pool that is no longer
        // configured keeps its seats until they end.
        return;
    }
    st.restart_with(vec![spec("default", 2)], s(4)).await;
    assert_eq!(
        st.l().touch(&key("B"), s(5)).await.unwrap(),
        gone(ReleaseReason::Config)
    );
    assert_eq!(st.seen.reasons(b), vec![ReleaseReason::Config]);
}

async fn uncounted_sessions(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 1)], s(0)).await;
    let l = st.l();
    let pool = PoolKey::new("crm", "default");
    let _a = login(l, "default", "ann", "A", s(0)).await;
    let e = l
        .admit_uncounted(&claim("default", "svc"), SeatState::Exempt, key("E"), s(1))
        .await
        .expect("an exempt user gets in with the pool full");
    let n = l
        .admit_uncounted(&claim("default", "nina"), SeatState::Named, key("N"), s(1))
        .await
        .unwrap();
    let _ = l.touch(&key("A"), s(1)).await.unwrap();
    assert_eq!(
        held(&l.touch(&key("E"), s(2)).await.unwrap()),
        (e, SeatState::Exempt, None)
    );
    assert_eq!(
        held(&l.touch(&key("N"), s(2)).await.unwrap()),
        (n, SeatState::Named, None)
    );
    let u = usage(l, "default", s(2)).await;
    assert_eq!((u.in_use, u.available, u.standby), (1, 0, 0));
    st.refresh().await;
    assert_eq!(st.l().available(&pool, s(2)), Some(0));
    let l = st.l();
    let list = l.sessions(s(2)).await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(session(l, e, s(2)).await.unwrap().state, SeatState::Exempt);
    assert_eq!(session(l, n, s(2)).await.unwrap().state, SeatState::Named);
    assert_eq!(
        l.admit_uncounted(&claim("default", "svc"), SeatState::Exempt, key("E"), s(2))
            .await
            .unwrap(),
        e,
        "admitting a known session again finds it"
    );
    assert_eq!(l.sessions(s(2)).await.unwrap().len(), 3);
    assert_eq!(l.pause(e, s(2)).await.unwrap(), PauseOutcome::WrongState);
    assert_eq!(l.resume(e, s(2)).await.unwrap(), PauseOutcome::WrongState);
    st.checkpoint(s(3)).await;
    let l = st.l();
    assert_eq!(
        held(&l.touch(&key("E"), s(3)).await.unwrap()).1,
        SeatState::Exempt
    );
    assert_eq!(l.sessions(s(3)).await.unwrap().len(), 3);
    assert!(l
        .release(&key("A"), ReleaseReason::Logout, s(4))
        .await
        .unwrap()
        .is_some());
    assert_eq!(usage(l, "default", s(4)).await.available, 1);

    assert_eq!(
        l.end(&[n], 30_000, "admin", s(5)).await.unwrap(),
        vec![(n, EndOutcome::Ending { at: s(35) })]
    );
    assert_eq!(
        held(&l.touch(&key("N"), s(10)).await.unwrap()),
        (n, SeatState::Named, Some(s(35)))
    );
    assert_eq!(usage(l, "default", s(10)).await.in_use, 0);
    assert_eq!(
        l.touch(&key("N"), s(35)).await.unwrap(),
        gone(ReleaseReason::Ended)
    );

    let rec = l
        .release(&key("E"), ReleaseReason::Logout, s(36))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rec.id, rec.state), (e, SeatState::Exempt));
    let seen = st.seen.of(e);
    assert_eq!(seen.len(), 1, "the observer hears of uncounted releases");
    assert_eq!(
        (seen[0].0.state, seen[0].1),
        (SeatState::Exempt, ReleaseReason::Logout)
    );
    assert_eq!(
        l.touch(&key("E"), s(37)).await.unwrap(),
        gone(ReleaseReason::Logout)
    );

    let x = l
        .admit_uncounted(&claim("default", "x"), SeatState::Exempt, key("X"), s(100))
        .await
        .unwrap();
    let y = l
        .admit_uncounted(&claim("default", "y"), SeatState::Named, key("Y"), s(100))
        .await
        .unwrap();
    let z = l
        .admit_uncounted(&claim("default", "z"), SeatState::Exempt, key("Z"), s(100))
        .await
        .unwrap();
    assert!(l
        .release(&key("Z"), ReleaseReason::AppLogout, s(101))
        .await
        .unwrap()
        .is_some());
    assert_eq!(st.seen.reasons(z), vec![ReleaseReason::AppLogout]);
    for t in [500, 1000, 1500, 2000, 2500, 3000, 3500] {
        let _ = l.touch(&key("Y"), s(100 + t)).await.unwrap();
        if t == 500 {
            assert_eq!(
                l.touch(&key("X"), s(700)).await.unwrap(),
                gone(ReleaseReason::Idle)
            );
        }
    }
    assert!(l.sweep(s(3700)).await.unwrap() >= 1);
    assert_eq!(st.seen.reasons(x), vec![ReleaseReason::Idle]);
    assert_eq!(st.seen.reasons(y), vec![ReleaseReason::Lifetime]);
    assert!(l.sessions(s(3700)).await.unwrap().is_empty());
}

async fn commit_is_idempotent(kind: Kind) {
    let st = Store::new(kind, vec![spec("default", 20), spec("b", 3)], s(0)).await;
    let l = st.l();
    let k = login(l, "default", "ann", "K", s(0)).await;
    assert_eq!(login(l, "default", "ann", "K", s(1)).await, k);
    assert_eq!(usage(l, "default", s(1)).await.in_use, 1, "no second seat");

    // Many requests with one adopted cookie at once take one seat.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let l = st.arc();
        tasks.push(tokio::spawn(async move {
            login(l.as_ref(), "default", "", "M", s(2)).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(usage(l, "default", s(2)).await.in_use, 2);

    assert_eq!(l.pause(k, s(3)).await.unwrap(), PauseOutcome::Done);
    assert_eq!(login(l, "default", "ann", "K", s(4)).await, k);
    assert_eq!(session(l, k, s(4)).await.unwrap().state, SeatState::Paused);
    assert_eq!(usage(l, "default", s(4)).await.in_use, 1);
    // One session holds a seat in one pool only.
    assert_eq!(login(l, "b", "ann", "M", s(5)).await, ids[0]);
    assert_eq!(usage(l, "b", s(5)).await.in_use, 0);
    let e = l
        .admit_uncounted(&claim("default", "svc"), SeatState::Exempt, key("E"), s(6))
        .await
        .unwrap();
    assert_eq!(login(l, "default", "svc", "E", s(6)).await, e);
    assert_eq!(
        l.admit_uncounted(&claim("default", "svc"), SeatState::Exempt, key("M"), s(6))
            .await
            .unwrap(),
        ids[0]
    );
    assert_eq!(usage(l, "default", s(6)).await.in_use, 1);
    assert_eq!(l.sessions(s(6)).await.unwrap().len(), 3);
}

async fn lapsed_lease_is_rechecked(kind: Kind) {
    let st = Store::new(kind, vec![spec("default", 1)], s(0)).await;
    let l = st.l();
    let b = login(l, "default", "bob", "B", s(0)).await;
    let _ = l.touch(&key("B"), s(0)).await.unwrap();
    assert_eq!(l.pause(b, s(1)).await.unwrap(), PauseOutcome::Done);
    let c1 = claim("default", "ann");
    let Reservation::Granted(slow) = l.reserve(&c1, s(2)).await.unwrap() else {
        panic!("full")
    };
    // The slow login's reservation lapses (standby_timeout); the paused seat takes it back.
    assert_eq!(l.resume(b, s(63)).await.unwrap(), PauseOutcome::Done);
    match l.commit(&slow, &c1, key("A"), s(64)).await {
        Err(LedgerError::LeaseLost(id)) => assert_eq!(id, slow.id),
        other => panic!("a lapsed lease in a full pool committed: {other:?}"),
    }
    let u = usage(l, "default", s(62)).await;
    assert_eq!((u.in_use, u.capacity), (1, 1));
    assert_eq!(
        l.touch(&key("A"), s(62)).await.unwrap(),
        Touch::Gone(Gone::Unknown)
    );

    // With room, a lapsed lease is admitted afresh.
    assert!(l
        .release(&key("B"), ReleaseReason::Logout, s(63))
        .await
        .unwrap()
        .is_some());
    let c3 = claim("default", "cat");
    let Reservation::Granted(late) = l.reserve(&c3, s(100)).await.unwrap() else {
        panic!("full")
    };
    let id = l.commit(&late, &c3, key("C"), s(200)).await.unwrap();
    assert_eq!(held(&l.touch(&key("C"), s(201)).await.unwrap()).0, id);
    assert_eq!(usage(l, "default", s(201)).await.in_use, 1);
}

async fn hold_and_cancel(kind: Kind) {
    let st = Store::new(kind, vec![spec("default", 1)], s(0)).await;
    let l = st.l();
    let pool = PoolKey::new("crm", "default");
    let c = claim("default", "ann");
    let Reservation::Granted(h) = l.hold(&c, 5_000, s(0)).await.unwrap() else {
        panic!("full")
    };
    assert_eq!(usage(l, "default", s(1)).await.in_use, 1);
    let other = claim("default", "bob");
    assert!(matches!(
        l.reserve(&other, s(1)).await.unwrap(),
        Reservation::Full(f) if f.reason == FullReason::Pool
    ));
    // The held seat is found again by its lease id.
    let Reservation::Granted(again) = l.reserve(&c, s(2)).await.unwrap() else {
        panic!("the hold was not found")
    };
    assert_eq!(again.id, h.id);
    l.cancel(&again).await;
    assert_eq!(usage(l, "default", s(2)).await.in_use, 0);
    st.refresh().await;
    assert_eq!(st.l().available(&pool, s(2)), Some(1));
    let l = st.l();
    let Reservation::Granted(h2) = l.hold(&c, 5_000, s(3)).await.unwrap() else {
        panic!("full")
    };
    assert_eq!(usage(l, "default", s(7)).await.in_use, 1);
    assert_eq!(usage(l, "default", s(8)).await.in_use, 0, "the hold lapsed");
    let Reservation::Granted(_) = l.reserve(&other, s(8)).await.unwrap() else {
        panic!("a lapsed hold still counts")
    };
    let _ = h2;
}

async fn tombstones_last_max_lifetime(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 3)], s(0)).await;
    let l = st.l();
    login(l, "default", "ann", "A", s(0)).await;
    login(l, "default", "bob", "B", s(0)).await;
    for k in ["A", "B"] {
        assert!(l
            .release(&key(k), ReleaseReason::Logout, s(10))
            .await
            .unwrap()
            .is_some());
    }
    st.checkpoint(s(11)).await;
    let l = st.l();
    assert_eq!(
        l.touch(&key("A"), s(3609)).await.unwrap(),
        gone(ReleaseReason::Logout)
    );
    // Past max_lifetime the cookie could no longer be valid: forgotten, swept or not.
    assert_eq!(
        l.touch(&key("B"), s(3610)).await.unwrap(),
        Touch::Gone(Gone::Unknown)
    );
    l.sweep(s(3610)).await.unwrap();
    assert_eq!(
        l.touch(&key("A"), s(3610)).await.unwrap(),
        Touch::Gone(Gone::Unknown)
    );
    st.checkpoint(s(3611)).await;
    assert_eq!(
        st.l().touch(&key("A"), s(3611)).await.unwrap(),
        Touch::Gone(Gone::Unknown)
    );
}

/// An admin end racing the owner's pause: whatever order they land in, a listed session that
/// holds a seat counts, and one that counts is listed.
async fn end_racing_pause_leaves_no_zombie(kind: Kind) {
    let st = Store::new(kind, vec![spec("default", 1)], s(0)).await;
    for i in 0..200u64 {
        let now = s(i * 10);
        let cookie = format!("R{i}");
        let id = login(st.l(), "default", "ann", &cookie, now).await;
        let _ = st.l().touch(&key(&cookie), now).await.unwrap();
        let (l1, l2) = (st.arc(), st.arc());
        let go = Arc::new(tokio::sync::Barrier::new(2));
        let go2 = go.clone();
        let end = tokio::spawn(async move {
            go.wait().await;
            l1.end(&[id], 60_000, "admin", now).await.unwrap()
        });
        let pause = tokio::spawn(async move {
            go2.wait().await;
            l2.pause(id, now).await.unwrap()
        });
        let (_, _) = (end.await.unwrap(), pause.await.unwrap());
        let listed = st.l().sessions(now).await.unwrap();
        let holding = listed.iter().filter(|r| r.state.holds_seat()).count() as u32;
        assert_eq!(
            usage(st.l(), "default", now).await.in_use,
            holding,
            "round {i}: {listed:?}"
        );
        let _ = st
            .l()
            .release(&key(&cookie), ReleaseReason::Logout, now)
            .await
            .unwrap();
        assert!(st.l().sessions(now).await.unwrap().is_empty(), "round {i}");
    }
}

/// Two requests of a paused session at once, with a seat free: both are let in.
async fn two_requests_of_a_paused_session(kind: Kind) {
    let st = Store::new(kind, vec![spec("default", 1)], s(0)).await;
    for i in 0..200u64 {
        let now = s(i * 10);
        let cookie = format!("P{i}");
        let id = login(st.l(), "default", "ann", &cookie, now).await;
        assert_eq!(st.l().pause(id, now).await.unwrap(), PauseOutcome::Done);
        let mut tasks = Vec::new();
        let go = Arc::new(tokio::sync::Barrier::new(2));
        for _ in 0..2 {
            let (l, k, go) = (st.arc(), key(&cookie), go.clone());
            tasks.push(tokio::spawn(async move {
                go.wait().await;
                l.touch(&k, now).await.unwrap()
            }));
        }
        for t in tasks {
            let t = t.await.unwrap();
            assert_eq!(held(&t), (id, SeatState::Active, None), "round {i}");
        }
        assert_eq!(usage(st.l(), "default", now).await.in_use, 1);
        let _ = st
            .l()
            .release(&key(&cookie), ReleaseReason::Logout, now)
            .await
            .unwrap();
    }
}

async fn failed_journal_write_is_not_a_seat(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 2)], s(0)).await;
    let Some(mem) = st.mem().filter(|_| kind == Kind::Journal) else {
        return;
    };
    mem.fail_journal_writes(true);
    let c = claim("default", "ann");
    let Reservation::Granted(lease) = st.l().reserve(&c, s(0)).await.unwrap() else {
        panic!("full")
    };
    match st.l().commit(&lease, &c, key("A"), s(0)).await {
        Err(LedgerError::Journal(_)) => {}
        other => panic!("a commit that was not written was reported as {other:?}"),
    }
    assert_eq!(usage(st.l(), "default", s(0)).await.in_use, 0);
    assert!(st.l().sessions(s(0)).await.unwrap().is_empty());
    assert_eq!(
        st.l().touch(&key("A"), s(0)).await.unwrap(),
        Touch::Gone(Gone::Unknown)
    );
    assert!(
        !st.l().healthy().await,
        "a store that cannot write is not healthy"
    );
    assert!(st.l().describe()["write_error"].is_string());
    st.mem().unwrap().fail_journal_writes(false);
    assert!(st.l().healthy().await);
    let a = login(st.l(), "default", "ann", "A", s(1)).await;
    st.restart(s(2)).await;
    assert_eq!(held(&st.l().touch(&key("A"), s(2)).await.unwrap()).0, a);
    assert_eq!(st.l().sessions(s(2)).await.unwrap().len(), 1);
}

async fn overflow_stops_when_spent(kind: Kind) {
    let mut sp = spec("default", 1);
    sp.overflow_ms = Some(60_000);
    let mut st = Store::new(kind, vec![sp], s(0)).await;
    let l = st.l();
    let a = login(l, "default", "ann", "A", s(0)).await;
    let _ = l.touch(&key("A"), s(1)).await.unwrap();
    let cb = claim("default", "bob");
    let Reservation::Granted(lease) = l.reserve(&cb, s(0)).await.unwrap() else {
        panic!("no overflow seat")
    };
    assert!(lease.overflow);
    let b = l.commit(&lease, &cb, key("B"), s(0)).await.unwrap();
    let _ = l.touch(&key("B"), s(1)).await.unwrap();
    assert_eq!(usage(l, "default", s(30)).await.overflow_used_seconds, 30);
    st.checkpoint(s(30)).await;
    let l = st.l();
    l.sweep(s(59)).await.unwrap();
    assert_eq!(held(&l.touch(&key("B"), s(59)).await.unwrap()).0, b);
    l.sweep(s(61)).await.unwrap();
    assert_eq!(
        l.touch(&key("B"), s(62)).await.unwrap(),
        gone(ReleaseReason::Ended),
        "an overflow seat stops when the allowance is spent"
    );
    assert_eq!(l.lookup(b, s(62)).await.unwrap(), Lookup::Ended);
    let seen = st.seen.of(b);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, ReleaseReason::Ended);
    assert_eq!(seen[0].0.ended_by.as_deref(), Some("overflow"));
    assert_eq!(held(&l.touch(&key("A"), s(62)).await.unwrap()).0, a);
    let u = usage(l, "default", s(62)).await;
    assert_eq!((u.in_use, u.overflow_used_seconds), (1, 60));
    assert!(matches!(
        l.reserve(&claim("default", "cat"), s(63)).await.unwrap(),
        Reservation::Full(f) if f.reason == FullReason::OverflowSpent
    ));
}

async fn overflow_time_of_paused_seats(kind: Kind) {
    let mut sp = spec("default", 1);
    sp.overflow_ms = Some(600_000);
    let mut st = Store::new(kind, vec![sp], s(0)).await;
    let l = st.l();
    let _x = login(l, "default", "xia", "X", s(0)).await;
    let _ = l.touch(&key("X"), s(0)).await.unwrap();
    let cy = claim("default", "yan");
    let Reservation::Granted(lease) = l.reserve(&cy, s(0)).await.unwrap() else {
        panic!("no overflow seat")
    };
    assert!(lease.overflow);
    let y = l.commit(&lease, &cy, key("Y"), s(0)).await.unwrap();
    assert_eq!(l.pause(y, s(20)).await.unwrap(), PauseOutcome::Done);
    st.checkpoint(s(21)).await;
    let l = st.l();
    assert_eq!(
        usage(l, "default", s(100)).await.overflow_used_seconds,
        20,
        "a paused overflow seat used 20 s and uses no more"
    );
    assert_eq!(l.resume(y, s(100)).await.unwrap(), PauseOutcome::Full);
    assert!(l
        .release(&key("X"), ReleaseReason::Logout, s(105))
        .await
        .unwrap()
        .is_some());
    assert_eq!(l.resume(y, s(110)).await.unwrap(), PauseOutcome::Done);
    assert_eq!(usage(l, "default", s(200)).await.overflow_used_seconds, 20);
}

async fn stale_view_is_no_answer(kind: Kind) {
    let st = Store::new(kind, vec![spec("default", 2)], s(0)).await;
    let pool = PoolKey::new("crm", "default");
    login(st.l(), "default", "ann", "A", s(0)).await;
    let _ = st.l().touch(&key("A"), s(0)).await.unwrap();
    st.refresh().await;
    assert_eq!(st.l().available(&pool, s(1)), Some(1));
    let Some(r) = st.redis() else {
        assert_eq!(st.l().last_known(&key("A")), None);
        return;
    };
    assert_eq!(r.last_known(&key("A")), Some(true));
    assert_eq!(r.last_known(&key("nobody")), Some(false));
    r.age_views(seatgate::ledger::redis::VIEW_EVERY * 2 + std::time::Duration::from_millis(1));
    assert_eq!(
        r.available(&pool, s(1)),
        None,
        "a stale view answers nothing"
    );
    // A session this gateway saw holding a seat goes on under `last_known` (logins do not:
    // they ask `available`).
    assert_eq!(r.last_known(&key("A")), Some(true));
    st.refresh().await;
    assert_eq!(st.l().available(&pool, s(1)), Some(1));
}

async fn shared_values_and_health(kind: Kind) {
    let st = Store::new(kind, vec![spec("default", 2)], s(0)).await;
    let l = st.l();
    assert!(l.healthy().await);
    let once = l.shared_once("k", "x", None).await.unwrap();
    let swap = l.shared_swap("k", Some("z"), 10_000).await.unwrap();
    if kind == Kind::Redis {
        assert_eq!(once, Shared::Value("x".into()));
        assert_eq!(
            l.shared_once("k", "y", None).await.unwrap(),
            Shared::Value("z".into())
        );
        assert_eq!(swap, Shared::Value(Some("x".into())));
    } else {
        assert_eq!(once, Shared::Local);
        assert_eq!(swap, Shared::Local);
    }
    assert!(l.describe().get("kind").is_some());
}

/// The other test clock of the Redis store: an offset added to `TIME` (the session cache is
/// bypassed while one is set).
async fn clock_offset_steps_redis_time(kind: Kind) {
    let st = Store::new(kind, vec![spec("default", 1)], s(0)).await;
    let Some(r) = st.redis() else {
        return;
    };
    r.use_caller_clock(false);
    let now = seatgate::domain::now_ms();
    let a = login(st.l(), "default", "ann", "A", now).await;
    assert_eq!(held(&r.touch(&key("A"), now).await.unwrap()).0, a);
    r.set_clock_offset_ms(599_000);
    assert_eq!(held(&r.touch(&key("A"), now).await.unwrap()).0, a);
    r.set_clock_offset_ms(599_000 + 601_000);
    assert_eq!(
        r.touch(&key("A"), now).await.unwrap(),
        gone(ReleaseReason::Idle)
    );
}

/// Many tasks doing everything at once to a few shared cookies: at no moment is the pool above
/// capacity, and afterwards every seat counted is listed, every cookie leads to at most one
/// session, and each listed session answers to its cookie.
async fn concurrent_operations_keep_the_pool_exact(kind: Kind) {
    use rand::{RngExt, SeedableRng};
    const COOKIES: usize = 6;
    const CAP: u32 = 3;
    let st = Store::new(kind, vec![spec("default", CAP)], s(0)).await;
    let now = s(1);
    let ids = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let (l, stop) = (st.arc(), stop.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                max = max.max(usage(l.as_ref(), "default", now).await.in_use);
                tokio::task::yield_now().await;
            }
            max
        })
    };
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let (l, ids) = (st.arc(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t);
            for _ in 0..150 {
                let c = format!("K{}", rng.random_range(0..COOKIES));
                let k = key(&c);
                let id = ids
                    .lock()
                    .unwrap()
                    .get(&c)
                    .copied()
                    .unwrap_or(SeatId(0x5eed));
                match rng.random_range(0..9) {
                    0 | 1 => {
                        let cl = claim("default", &format!("u{t}"));
                        if let Reservation::Granted(lease) = l.reserve(&cl, now).await.unwrap() {
                            if let Ok(id) = l.commit(&lease, &cl, k, now).await {
                                ids.lock().unwrap().insert(c, id);
                            }
                        }
                    }
                    2 => {
                        let _ = l.touch(&k, now).await.unwrap();
                    }
                    3 => {
                        let _ = l.pause(id, now).await.unwrap();
                    }
                    4 => {
                        let _ = l.resume(id, now).await.unwrap();
                    }
                    5 => {
                        let grace = if rng.random_bool(0.5) { 0 } else { 10_000 };
                        let _ = l.end(&[id], grace, "admin", now).await.unwrap();
                    }
                    6 => {
                        let _ = l.release(&k, ReleaseReason::Logout, now).await.unwrap();
                    }
                    7 => {
                        let to = format!("K{}", rng.random_range(0..COOKIES));
                        if let Some(id) = l.rekey(&k, key(&to), now).await.unwrap() {
                            ids.lock().unwrap().insert(to, id);
                        }
                    }
                    _ => {
                        let cl = claim("default", "svc");
                        let id = l
                            .admit_uncounted(&cl, SeatState::Exempt, k, now)
                            .await
                            .unwrap();
                        ids.lock().unwrap().insert(c, id);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let max = checker.await.unwrap();
    assert!(max <= CAP, "{max} seats in use in a pool of {CAP}");

    let l = st.l();
    let listed = l.sessions(now).await.unwrap();
    let holding = listed.iter().filter(|r| r.state.holds_seat()).count() as u32;
    let u = usage(l, "default", now).await;
    assert_eq!(
        u.in_use, holding,
        "counted seats are the listed ones: {listed:?}"
    );
    assert!(u.in_use <= CAP);
    let mut cookies: Vec<_> = listed.iter().map(|r| r.session).collect();
    cookies.sort_by_key(|k| k.map(|k| k.0));
    cookies.dedup();
    assert_eq!(
        cookies.len(),
        listed.len(),
        "one cookie, one session: {listed:?}"
    );
    for i in 0..COOKIES {
        let k = key(&format!("K{i}"));
        let t = l.touch(&k, now).await.unwrap();
        match listed.iter().find(|r| r.session == Some(k)) {
            Some(r) if r.state == SeatState::Paused => {}
            Some(r) => assert_eq!(held(&t).0, r.id, "K{i}"),
            None => assert!(matches!(t, Touch::Gone(_)), "K{i}: {t:?}"),
        }
    }
}

/// Overflow time is time over capacity: when an ordinary seat leaves, an overflow seat that
/// now fits stops using the allowance (and is never ended for it).
async fn overflow_seat_that_fits_is_promoted(kind: Kind) {
    let mut sp = spec("default", 1);
    sp.overflow_ms = Some(60_000);
    let mut st = Store::new(kind, vec![sp], s(0)).await;
    let l = st.l();
    login(l, "default", "ann", "A", s(0)).await;
    let _ = l.touch(&key("A"), s(0)).await.unwrap();
    let cb = claim("default", "bob");
    let Reservation::Granted(lease) = l.reserve(&cb, s(0)).await.unwrap() else {
        panic!("no overflow seat")
    };
    assert!(lease.overflow);
    let b = l.commit(&lease, &cb, key("B"), s(0)).await.unwrap();
    let _ = l.touch(&key("B"), s(1)).await.unwrap();
    assert!(l
        .release(&key("A"), ReleaseReason::Logout, s(10))
        .await
        .unwrap()
        .is_some());
    st.checkpoint(s(11)).await;
    let l = st.l();
    assert_eq!(usage(l, "default", s(100)).await.overflow_used_seconds, 10);
    assert!(!session(l, b, s(100)).await.unwrap().overflow);
    let cc = claim("default", "cat");
    let Reservation::Granted(lease) = l.reserve(&cc, s(101)).await.unwrap() else {
        panic!("no overflow seat")
    };
    assert!(lease.overflow);
    let c = l.commit(&lease, &cc, key("C"), s(101)).await.unwrap();
    let _ = l.touch(&key("C"), s(102)).await.unwrap();
    l.sweep(s(151)).await.unwrap();
    assert_eq!(
        l.touch(&key("C"), s(152)).await.unwrap(),
        gone(ReleaseReason::Ended),
        "the second overflow seat spends the rest"
    );
    assert_eq!(st.seen.reasons(c), vec![ReleaseReason::Ended]);
    assert_eq!(held(&l.touch(&key("B"), s(152)).await.unwrap()).0, b);
    assert_eq!(usage(l, "default", s(152)).await.overflow_used_seconds, 60);
}

/// Two gateway replicas on one Redis: what one does, the other sees at once when it asks the
/// store, and at the latest `CACHE_TTL` later when it answered from its session cache.
async fn replicas_agree_within_the_cache_bound(kind: Kind) {
    let st = Store::new(kind, vec![spec("default", 2)], s(0)).await;
    let Some(b) = st.replica() else {
        return;
    };
    let a = st.l();
    let ttl = seatgate::ledger::redis::CACHE_TTL.as_millis() as u64;
    let id = login(a, "default", "ann", "A", s(0)).await;
    let _ = a.touch(&key("A"), s(0)).await.unwrap();
    assert_eq!(held(&b.touch(&key("A"), s(1)).await.unwrap()).0, id);
    // Ended on A: B's cached answer may hold for CACHE_TTL, never longer.
    assert_eq!(
        a.end(&[id], 0, "admin", s(1)).await.unwrap(),
        vec![(id, EndOutcome::Ending { at: s(1) })]
    );
    assert_eq!(
        a.touch(&key("A"), s(1)).await.unwrap(),
        gone(ReleaseReason::Ended)
    );
    assert_eq!(
        b.touch(&key("A"), s(1) + ttl).await.unwrap(),
        gone(ReleaseReason::Ended)
    );
    // A login on one replica is known to the other (one pool, one count).
    let c = login(&b, "default", "cat", "C", s(2)).await;
    assert_eq!(held(&a.touch(&key("C"), s(2)).await.unwrap()).0, c);
    assert_eq!(usage(a, "default", s(2)).await.in_use, 1);
    assert_eq!(
        login(a, "default", "cat", "C", s(2)).await,
        c,
        "no second seat"
    );
    // Activity seen from B's cache reaches the store with B's flush.
    let _ = b.touch(&key("C"), s(3)).await.unwrap();
    let _ = b.touch(&key("C"), s(3) + 500).await.unwrap();
    b.flush().await.unwrap();
    assert_eq!(session(a, c, s(4)).await.unwrap().last_activity, s(3) + 500);
}

/// After a crash (no flush) every seat is back in its state; only the activity since the last
/// flush is lost, so a seat looks that much older, never younger.
async fn a_crash_loses_at_most_the_unflushed_activity(kind: Kind) {
    if kind != Kind::Journal {
        return;
    }
    let mut st = Store::new(kind, vec![spec("default", 2)], s(0)).await;
    let a = login(st.l(), "default", "ann", "A", s(0)).await;
    let _ = st.l().touch(&key("A"), s(1)).await.unwrap();
    let _ = st.l().touch(&key("A"), s(50)).await.unwrap();
    st.l().flush().await.unwrap();
    let _ = st.l().touch(&key("A"), s(100)).await.unwrap();
    st.crash(s(200)).await;
    let rec = session(st.l(), a, s(200)).await.unwrap();
    assert_eq!(rec.state, SeatState::Active, "the state change was durable");
    assert_eq!(rec.last_activity, s(50), "activity as of the last flush");
    assert_eq!(
        st.l().touch(&key("A"), s(650)).await.unwrap(),
        gone(ReleaseReason::Idle)
    );
}

/// `touch_as(.., false)`: the session is served and its `last_request` recorded, but its idle
/// timer runs on (a page polling in the background lapses at `idle_timeout`). Queued activity
/// (Redis cache hits) is neither lost nor faked by requests that were not activity.
async fn ignored_requests_keep_the_idle_timer(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 3)], s(0)).await;
    let l = st.l();
    let a = login(l, "default", "ann", "A", s(0)).await;
    let b = login(l, "default", "bob", "B", s(0)).await;
    for k in ["A", "B"] {
        let _ = l.touch(&key(k), s(1)).await.unwrap();
    }
    // A polls every 100 s, twice in a row within the session cache's bound (a cache hit).
    for t in [100, 200, 300, 400, 500] {
        assert_eq!(
            held(&l.touch_as(&key("A"), false, s(t)).await.unwrap()).0,
            a
        );
        let _ = l.touch_as(&key("A"), false, s(t) + 300).await.unwrap();
    }
    // B: activity, then a cache hit that is only a request, then (the cache stale) a verified
    // request that is not activity either: the queued activity at +500 must survive both.
    let _ = l.touch_as(&key("B"), true, s(505)).await.unwrap();
    let _ = l.touch_as(&key("B"), true, s(505) + 500).await.unwrap();
    let _ = l.touch_as(&key("B"), false, s(505) + 800).await.unwrap();
    let _ = l.touch_as(&key("B"), false, s(507)).await.unwrap();
    st.checkpoint(s(510)).await;
    let ra = session(st.l(), a, s(510)).await.unwrap();
    assert_eq!(
        (ra.last_activity, ra.last_request),
        (s(1), s(500) + 300),
        "ignored requests are requests, not activity"
    );
    let rb = session(st.l(), b, s(510)).await.unwrap();
    assert_eq!((rb.last_activity, rb.last_request), (s(505) + 500, s(507)));
    assert_eq!(rb.last_input, 0);
    // Polling goes on, the seat lapses at idle_timeout from the last activity all the same.
    assert_eq!(
        held(&st.l().touch_as(&key("A"), false, s(600)).await.unwrap()).0,
        a
    );
    assert_eq!(
        st.l().touch_as(&key("A"), false, s(601)).await.unwrap(),
        gone(ReleaseReason::Idle)
    );
    assert_eq!(st.seen.reasons(a), vec![ReleaseReason::Idle]);
    assert_eq!(held(&st.l().touch(&key("B"), s(601)).await.unwrap()).0, b);

    // A standby seat's second request activates it, whatever the request.
    let c = login(st.l(), "default", "cat", "C", s(610)).await;
    assert_eq!(
        held(&st.l().touch_as(&key("C"), false, s(620)).await.unwrap()),
        (c, SeatState::Active, None)
    );
    assert_eq!(
        session(st.l(), c, s(620)).await.unwrap().last_activity,
        s(620)
    );
    // Activity right after a request that was not (a Redis cache hit of an entry verified
    // without activity) is the store's at once, as on the memory store. Found by the model.
    let _ = st.l().touch_as(&key("C"), false, s(650)).await.unwrap();
    let _ = st.l().touch_as(&key("C"), true, s(650)).await.unwrap();
    let r = session(st.l(), c, s(650)).await.unwrap();
    assert_eq!((r.last_activity, r.last_request), (s(650), s(650)));
}

/// `beat(.., input)`: a heartbeat that reports input is activity and `last_input`; one that
/// does not changes neither; for a session that holds nothing it changes nothing at all.
async fn input_beats_are_activity(kind: Kind) {
    let mut st = Store::new(kind, vec![spec("default", 3)], s(0)).await;
    let l = st.l();
    let a = login(l, "default", "ann", "A", s(0)).await;
    let b = login(l, "default", "bob", "B", s(0)).await;
    for k in ["A", "B"] {
        let _ = l.touch(&key(k), s(1)).await.unwrap();
    }
    assert_eq!(l.beat(&key("A"), false, s(50)).await.unwrap(), Some(s(1)));
    assert_eq!(l.beat(&key("A"), true, s(80)).await.unwrap(), Some(s(80)));
    assert_eq!(l.beat(&key("A"), false, s(110)).await.unwrap(), Some(s(80)));
    st.checkpoint(s(120)).await;
    let r = session(st.l(), a, s(120)).await.unwrap();
    assert_eq!(
        (r.last_activity, r.last_input, r.last_heartbeat),
        (s(80), s(80), s(110)),
        "input survives a restart"
    );
    // Beats with input keep the seat past idle_timeout from the last request.
    let l = st.l();
    for t in (180..=720).step_by(60) {
        let beat = l.beat(&key("A"), t % 120 == 0, s(t)).await.unwrap();
        assert!(beat.is_some(), "beat at {t}");
    }
    assert_eq!(
        held(&l.touch_as(&key("A"), false, s(721)).await.unwrap()).0,
        a
    );
    assert_eq!(session(l, a, s(721)).await.unwrap().last_input, s(720));

    // Unknown, released and paused sessions: `None`, and nothing changes.
    assert_eq!(l.beat(&key("nobody"), true, s(721)).await.unwrap(), None);
    assert_eq!(
        l.touch(&key("nobody"), s(721)).await.unwrap(),
        Touch::Gone(Gone::Unknown)
    );
    assert_eq!(l.pause(b, s(60)).await.unwrap(), PauseOutcome::Done);
    assert_eq!(l.beat(&key("B"), true, s(70)).await.unwrap(), None);
    let rb = session(l, b, s(70)).await.unwrap();
    assert_eq!((rb.last_input, rb.state), (0, SeatState::Paused));
    let _ = l
        .release(&key("A"), ReleaseReason::Logout, s(722))
        .await
        .unwrap();
    assert_eq!(l.beat(&key("A"), true, s(723)).await.unwrap(), None);
    assert_eq!(
        l.touch(&key("A"), s(724)).await.unwrap(),
        gone(ReleaseReason::Logout)
    );
}
