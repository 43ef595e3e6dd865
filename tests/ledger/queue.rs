//! The waiting line's contract (issue 12), written against `dyn SeatLedger` and run on every
//! store: positions, promotion of the head when a seat frees, the held seat found by the
//! ticket's lease id and nobody else's, leaving (admitted, abandoned, expired, removed, full),
//! barging, polling limits, the estimate, restarts, and the observer's events (each once).

use crate::common::*;
use seatgate::domain::{
    Claim, FullReason, Joined, Millis, Polled, PoolKey, PoolSpec, QueueEvent, QueueResult,
    QueueSpec, QueueStatus, ReleaseReason, Reservation, SeatId, TicketKey, TicketState,
};
use seatgate::ledger::SeatLedger;

on_every_store!(
    queue_positions_and_the_held_seat,
    queue_abandonment_and_max_wait,
    queue_hold_lapse_passes_the_seat_on,
    queue_barging_on_and_off,
    queue_max_length_is_line_full,
    queue_polls_too_soon_and_unknown_tickets,
    queue_remove_ticket_waiting_and_ready,
    queue_restart_keeps_the_line,
    queue_estimate_from_deadlines,
    queue_estimate_sees_a_seat_taken_within_the_second,
    queue_checks_see_the_line,
);

const HOLD: Millis = 60_000;

fn qspec(seats: u32, barging: bool) -> PoolSpec {
    let mut sp = spec("default", seats);
    sp.queue = Some(QueueSpec {
        hold: HOLD,
        abandon_after: 30_000,
        max_wait: 1_800_000,
        max_length: 1000,
        barging,
    });
    sp
}

pub(crate) fn pool() -> PoolKey {
    PoolKey::new("crm", "default")
}

pub(crate) fn tk(cookie: &str) -> TicketKey {
    TicketKey::new(&pool(), cookie)
}

/// The login carrying ticket `t`: its lease id is the ticket's.
fn ticket_claim(user: &str, t: TicketKey) -> Claim {
    Claim {
        lease_id: t.lease_id(),
        ..claim("default", user)
    }
}

pub(crate) async fn join(l: &dyn SeatLedger, user: &str, t: TicketKey, now: Millis) -> QueueStatus {
    match l.enqueue(&claim("default", user), t, now).await.unwrap() {
        Joined::Queued(s) => s,
        Joined::LineFull => panic!("{user} could not join"),
    }
}

pub(crate) async fn poll(l: &dyn SeatLedger, t: TicketKey, now: Millis) -> QueueStatus {
    match l.poll(&pool(), &t, now).await.unwrap() {
        Polled::Status(s) => s,
        other => panic!("{t:?} polled: {other:?}"),
    }
}

async fn is_full(l: &dyn SeatLedger, c: &Claim, now: Millis) -> bool {
    match l.reserve(c, now).await.unwrap() {
        Reservation::Full(f) => {
            assert_eq!(f.reason, FullReason::Pool);
            true
        }
        Reservation::Granted(lease) => {
            l.cancel(&lease).await;
            false
        }
    }
}

/// The events of the observer so far, by ticket, in order.
fn events(st: &Store) -> Vec<(TicketKey, QueueEvent)> {
    st.seen
        .1
        .lock()
        .unwrap()
        .iter()
        .map(|(t, e, _)| (t.key, *e))
        .collect()
}

async fn within_capacity(l: &dyn SeatLedger, now: Millis) -> u32 {
    let u = usage(l, "default", now).await;
    assert!(u.in_use <= u.capacity, "{u:?}");
    u.queue_length
}

async fn queue_positions_and_the_held_seat(kind: Kind) {
    let mut st = Store::new(kind, vec![qspec(1, false)], s(0)).await;
    login(st.l(), "default", "ann", "A", s(0)).await;
    let (t1, t2, t3) = (tk("one"), tk("two"), tk("three"));
    for (i, (u, t)) in [("bob", t1), ("cat", t2), ("dan", t3)].iter().enumerate() {
        let q = join(st.l(), u, *t, s(1)).await;
        assert_eq!(q.state, TicketState::Waiting);
        assert_eq!((q.position, q.length), (i as u32 + 1, i as u32 + 1));
        assert_eq!(q.ready_until, None);
    }
    assert_eq!(within_capacity(st.l(), s(1)).await, 3);
    // Joining again keeps the place.
    assert_eq!(join(st.l(), "cat", t2, s(1)).await.position, 2);
    assert!(is_full(st.l(), &claim("default", "eve"), s(1)).await);
    st.checkpoint(s(1)).await;

    st.l()
        .release(&key("A"), ReleaseReason::Logout, s(2))
        .await
        .unwrap()
        .expect("released");
    // The freed seat is the head's: a newcomer and the second in line are refused.
    assert!(is_full(st.l(), &claim("default", "eve"), s(2)).await);
    assert!(is_full(st.l(), &ticket_claim("cat", t2), s(2)).await);
    let q = poll(st.l(), t1, s(3)).await;
    assert_eq!(q.state, TicketState::Ready);
    assert_eq!(q.position, 1);
    assert_eq!(q.estimated_wait, Some(0));
    let until = q.ready_until.expect("ready until");
    assert!(until >= s(2) + HOLD && until <= s(3) + HOLD, "{until}");
    assert_eq!(poll(st.l(), t2, s(3)).await.state, TicketState::Waiting);
    assert_eq!(within_capacity(st.l(), s(3)).await, 3);

    // The head's login takes the held seat.
    let c = ticket_claim("bob", t1);
    let Reservation::Granted(lease) = st.l().reserve(&c, s(4)).await.unwrap() else {
        panic!("the head's login found no seat");
    };
    let id = st.l().commit(&lease, &c, key("B"), s(4)).await.unwrap();
    let left = st.l().queue_admitted(&pool(), &t1, s(4)).await.unwrap();
    assert_eq!(left.map(|t| t.key), Some(t1));
    assert!(st
        .l()
        .queue_admitted(&pool(), &t1, s(4))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        session(st.l(), id, s(4)).await.unwrap().user.as_deref(),
        Some("bob")
    );
    let q = poll(st.l(), t2, s(5)).await;
    assert_eq!(
        (q.position, q.length, q.state),
        (1, 2, TicketState::Waiting)
    );
    assert_eq!(poll(st.l(), t3, s(5)).await.position, 2);
    assert_eq!(within_capacity(st.l(), s(5)).await, 2);
    assert_eq!(usage(st.l(), "default", s(5)).await.in_use, 1);
    assert_eq!(
        st.l().poll(&pool(), &t1, s(6)).await.unwrap(),
        Polled::Unknown
    );
    let listed: Vec<_> = st.l().queue(s(6)).await.unwrap();
    let order: Vec<_> = listed.iter().map(|t| (t.key, t.position)).collect();
    assert_eq!(order, vec![(t2, 1), (t3, 2)]);
    assert_eq!(listed[0].user.as_deref(), Some("cat"));
    assert_eq!(listed[0].joined_at, s(1));

    assert_eq!(
        events(&st),
        vec![
            (t1, QueueEvent::Joined),
            (t2, QueueEvent::Joined),
            (t3, QueueEvent::Joined),
            (t1, QueueEvent::Ready),
            (t1, QueueEvent::Left(QueueResult::Admitted)),
        ]
    );
    let admitted_at = st.seen.1.lock().unwrap()[4].2;
    assert_eq!(admitted_at, s(4));
}

async fn queue_abandonment_and_max_wait(kind: Kind) {
    let mut sp = qspec(1, false);
    sp.queue.as_mut().unwrap().max_wait = 120_000;
    let mut st = Store::new(kind, vec![sp], s(0)).await;
    login(st.l(), "default", "ann", "A", s(0)).await;
    // In use, so her seat outlasts the test (a standby seat would lapse at 60 s).
    let _ = st.l().touch(&key("A"), s(0)).await.unwrap();
    let (t1, t2) = (tk("one"), tk("two"));
    join(st.l(), "bob", t1, s(0)).await;
    join(st.l(), "cat", t2, s(0)).await;
    // Only the second polls; the first stops at once.
    for n in [10, 20] {
        poll(st.l(), t2, s(n)).await;
        st.l().sweep(s(n)).await.unwrap();
    }
    st.checkpoint(s(20)).await;
    poll(st.l(), t2, s(29)).await;
    // A restart counts as a poll: the journal store had it polled at s(20).
    let abandon_at = if kind == Kind::Volatile { 30 } else { 50 };
    st.l().sweep(s(abandon_at)).await.unwrap();
    assert_eq!(
        st.l().poll(&pool(), &t1, s(abandon_at + 1)).await.unwrap(),
        Polled::Unknown
    );
    assert_eq!(poll(st.l(), t2, s(abandon_at + 1)).await.position, 1);
    for n in (abandon_at + 20..120).step_by(20) {
        poll(st.l(), t2, s(n)).await;
    }
    // Past max_wait (from joining, whatever the polls): expired.
    assert_eq!(
        st.l().poll(&pool(), &t2, s(121)).await.unwrap(),
        Polled::Unknown
    );
    assert_eq!(within_capacity(st.l(), s(121)).await, 0);
    assert_eq!(
        events(&st),
        vec![
            (t1, QueueEvent::Joined),
            (t2, QueueEvent::Joined),
            (t1, QueueEvent::Left(QueueResult::Abandoned)),
            (t2, QueueEvent::Left(QueueResult::Expired)),
        ]
    );
}

async fn queue_hold_lapse_passes_the_seat_on(kind: Kind) {
    let mut st = Store::new(kind, vec![qspec(1, false)], s(0)).await;
    login(st.l(), "default", "ann", "A", s(0)).await;
    let (t1, t2) = (tk("one"), tk("two"));
    join(st.l(), "bob", t1, s(0)).await;
    join(st.l(), "cat", t2, s(0)).await;
    st.checkpoint(s(0)).await;
    st.l()
        .release(&key("A"), ReleaseReason::Logout, s(1))
        .await
        .unwrap();
    // The sweep promotes even when nobody polls or logs in.
    st.l().sweep(s(1)).await.unwrap();
    assert_eq!(poll(st.l(), t1, s(2)).await.state, TicketState::Ready);
    // A failed login of the head cancels its lease: the hold stays until ready_until.
    let c = ticket_claim("bob", t1);
    let Reservation::Granted(lease) = st.l().reserve(&c, s(3)).await.unwrap() else {
        panic!("no held seat");
    };
    st.l().cancel(&lease).await;
    assert!(is_full(st.l(), &claim("default", "eve"), s(3)).await);
    assert!(matches!(
        st.l().reserve(&c, s(4)).await.unwrap(),
        Reservation::Granted(_)
    ));
    for n in [20, 40, 60] {
        assert_eq!(poll(st.l(), t2, s(n)).await.state, TicketState::Waiting);
    }
    // The head never logged in: its hold lapses and the seat goes to the next.
    st.l().sweep(s(62)).await.unwrap();
    assert_eq!(
        st.l().poll(&pool(), &t1, s(63)).await.unwrap(),
        Polled::Unknown
    );
    let q = poll(st.l(), t2, s(63)).await;
    assert_eq!((q.state, q.position), (TicketState::Ready, 1));
    assert!(!is_full(st.l(), &ticket_claim("cat", t2), s(64)).await);
    assert!(is_full(st.l(), &claim("default", "eve"), s(64)).await);
    assert!(within_capacity(st.l(), s(64)).await == 1);
    let ev: Vec<_> = events(&st)
        .into_iter()
        .filter(|(_, e)| *e != QueueEvent::Joined)
        .collect();
    assert_eq!(
        ev,
        vec![
            (t1, QueueEvent::Ready),
            (t1, QueueEvent::Left(QueueResult::Expired)),
            (t2, QueueEvent::Ready),
        ]
    );
}

async fn queue_barging_on_and_off(kind: Kind) {
    for barging in [false, true] {
        let st = Store::new(kind, vec![qspec(1, barging)], s(0)).await;
        login(st.l(), "default", "ann", "A", s(0)).await;
        let t1 = tk("one");
        join(st.l(), "bob", t1, s(0)).await;
        st.l()
            .release(&key("A"), ReleaseReason::Logout, s(1))
            .await
            .unwrap();
        let newcomer = claim("default", "eve");
        match st.l().reserve(&newcomer, s(2)).await.unwrap() {
            Reservation::Granted(lease) => {
                assert!(barging, "a newcomer took the line's seat");
                st.l()
                    .commit(&lease, &newcomer, key("E"), s(2))
                    .await
                    .unwrap();
                let q = poll(st.l(), t1, s(3)).await;
                assert_eq!((q.state, q.position), (TicketState::Waiting, 1));
            }
            Reservation::Full(f) => {
                assert!(!barging, "barging on, yet a free seat was refused");
                assert_eq!(f.reason, FullReason::Pool);
                assert_eq!(poll(st.l(), t1, s(3)).await.state, TicketState::Ready);
            }
        }
        assert_eq!(usage(st.l(), "default", s(3)).await.in_use, 1);
        assert!(usage(st.l(), "default", s(3)).await.denied >= u64::from(!barging));
    }
}

async fn queue_max_length_is_line_full(kind: Kind) {
    let mut sp = qspec(1, false);
    sp.queue.as_mut().unwrap().max_length = 2;
    let st = Store::new(kind, vec![sp], s(0)).await;
    login(st.l(), "default", "ann", "A", s(0)).await;
    join(st.l(), "bob", tk("one"), s(0)).await;
    join(st.l(), "cat", tk("two"), s(0)).await;
    let j = st
        .l()
        .enqueue(&claim("default", "dan"), tk("three"), s(1))
        .await
        .unwrap();
    assert_eq!(j, Joined::LineFull);
    assert_eq!(within_capacity(st.l(), s(1)).await, 2);
    assert_eq!(
        st.l().poll(&pool(), &tk("three"), s(2)).await.unwrap(),
        Polled::Unknown
    );
    assert_eq!(
        events(&st).last(),
        Some(&(tk("three"), QueueEvent::Left(QueueResult::LineFull)))
    );
    // A pool without a queue never lines anyone up.
    let st = Store::new(kind, vec![spec("default", 1)], s(0)).await;
    let j = st
        .l()
        .enqueue(&claim("default", "dan"), tk("three"), s(1))
        .await
        .unwrap();
    assert_eq!(j, Joined::LineFull);
    assert!(events(&st).is_empty());
}

async fn queue_polls_too_soon_and_unknown_tickets(kind: Kind) {
    let mut other = qspec(1, false);
    other.key = PoolKey::new("crm", "other");
    let st = Store::new(kind, vec![qspec(1, false), other], s(0)).await;
    login(st.l(), "default", "ann", "A", s(0)).await;
    login(st.l(), "other", "ann", "O", s(0)).await;
    let t1 = tk("one");
    join(st.l(), "bob", t1, s(0)).await;
    poll(st.l(), t1, s(1)).await;
    match st.l().poll(&pool(), &t1, s(1) + 300).await.unwrap() {
        Polled::TooSoon { retry_after } => assert_eq!(retry_after, 700),
        p => panic!("polled twice within a second: {p:?}"),
    }
    poll(st.l(), t1, s(2)).await;
    // Forged and foreign tickets are unknown, never an error.
    let forged = TicketKey([7; 16]);
    assert_eq!(
        st.l().poll(&pool(), &forged, s(3)).await.unwrap(),
        Polled::Unknown
    );
    let theirs = PoolKey::new("crm", "other");
    let t_other = TicketKey::new(&theirs, "other-ticket");
    let j = st
        .l()
        .enqueue(&claim("other", "cat"), t_other, s(3))
        .await
        .unwrap();
    assert!(matches!(j, Joined::Queued(q) if q.position == 1));
    assert_eq!(
        st.l().poll(&pool(), &t_other, s(4)).await.unwrap(),
        Polled::Unknown
    );
    assert_eq!(
        st.l().poll(&theirs, &t1, s(4)).await.unwrap(),
        Polled::Unknown
    );
    assert_eq!(
        st.l()
            .poll(&PoolKey::new("crm", "nope"), &t1, s(4))
            .await
            .unwrap(),
        Polled::Unknown
    );
    assert!(st
        .l()
        .queue_admitted(&pool(), &forged, s(4))
        .await
        .unwrap()
        .is_none());
    assert_eq!(poll(st.l(), t1, s(5)).await.position, 1);
}

async fn queue_remove_ticket_waiting_and_ready(kind: Kind) {
    let mut st = Store::new(kind, vec![qspec(1, false)], s(0)).await;
    login(st.l(), "default", "ann", "A", s(0)).await;
    let (t1, t2, t3) = (tk("one"), tk("two"), tk("three"));
    let id1 = join(st.l(), "bob", t1, s(0)).await.id;
    let id2 = join(st.l(), "cat", t2, s(0)).await.id;
    join(st.l(), "dan", t3, s(0)).await;
    let removed = st.l().remove_ticket(id2, s(1)).await.unwrap();
    assert_eq!(
        removed.map(|t| (t.key, t.user)),
        Some((t2, Some("cat".into())))
    );
    assert!(st.l().remove_ticket(id2, s(1)).await.unwrap().is_none());
    assert!(st
        .l()
        .remove_ticket(SeatId(12345), s(1))
        .await
        .unwrap()
        .is_none());
    assert_eq!(poll(st.l(), t3, s(2)).await.position, 2);
    st.checkpoint(s(2)).await;
    st.l()
        .release(&key("A"), ReleaseReason::Logout, s(3))
        .await
        .unwrap();
    assert_eq!(poll(st.l(), t1, s(4)).await.state, TicketState::Ready);
    // Removing the ready head gives its held seat to the next.
    let listed = st.l().queue(s(5)).await.unwrap();
    assert_eq!(listed[0].id, id1);
    assert_eq!(listed[0].state, TicketState::Ready);
    st.l()
        .remove_ticket(id1, s(5))
        .await
        .unwrap()
        .expect("removed");
    assert!(is_full(st.l(), &ticket_claim("bob", t1), s(5)).await);
    let q = poll(st.l(), t3, s(6)).await;
    assert_eq!((q.state, q.position, q.length), (TicketState::Ready, 1, 1));
    assert!(!is_full(st.l(), &ticket_claim("dan", t3), s(6)).await);
    assert!(within_capacity(st.l(), s(6)).await == 1);
    let ev: Vec<_> = events(&st)
        .into_iter()
        .filter(|(_, e)| *e != QueueEvent::Joined)
        .collect();
    assert_eq!(
        ev,
        vec![
            (t2, QueueEvent::Left(QueueResult::Removed)),
            (t1, QueueEvent::Ready),
            (t1, QueueEvent::Left(QueueResult::Removed)),
            (t3, QueueEvent::Ready),
        ]
    );
}

async fn queue_restart_keeps_the_line(kind: Kind) {
    let mut st = Store::new(kind, vec![qspec(1, false)], s(0)).await;
    login(st.l(), "default", "ann", "A", s(0)).await;
    let ts: Vec<TicketKey> = (0..5).map(|i| tk(&format!("t{i}"))).collect();
    for (i, t) in ts.iter().enumerate() {
        join(st.l(), &format!("u{i}"), *t, s(i as u64)).await;
    }
    st.l()
        .remove_ticket(st.l().queue(s(5)).await.unwrap()[2].id, s(5))
        .await
        .unwrap();
    st.checkpoint(s(10)).await;
    let listed = st.l().queue(s(10)).await.unwrap();
    let keys: Vec<_> = listed.iter().map(|t| t.key).collect();
    assert_eq!(keys, vec![ts[0], ts[1], ts[3], ts[4]]);
    assert_eq!(listed[2].user.as_deref(), Some("u3"));
    assert_eq!(listed[2].joined_at, s(3));
    for (i, t) in [ts[0], ts[1], ts[3], ts[4]].iter().enumerate() {
        assert_eq!(poll(st.l(), *t, s(11)).await.position, i as u32 + 1);
    }
    st.l()
        .release(&key("A"), ReleaseReason::Logout, s(12))
        .await
        .unwrap();
    assert_eq!(poll(st.l(), ts[0], s(13)).await.state, TicketState::Ready);
    // The held seat is not durable: the ticket comes back waiting and is promoted again.
    st.checkpoint(s(14)).await;
    let q = poll(st.l(), ts[0], s(15)).await;
    assert_eq!((q.state, q.position), (TicketState::Ready, 1));
    assert!(is_full(st.l(), &claim("default", "eve"), s(15)).await);
    let c = ticket_claim("u0", ts[0]);
    let Reservation::Granted(lease) = st.l().reserve(&c, s(16)).await.unwrap() else {
        panic!("no held seat after the restart");
    };
    st.l().commit(&lease, &c, key("U0"), s(16)).await.unwrap();
    st.l()
        .queue_admitted(&pool(), &ts[0], s(16))
        .await
        .unwrap()
        .expect("admitted");
    st.checkpoint(s(17)).await;
    assert_eq!(poll(st.l(), ts[1], s(18)).await.position, 1);
    assert_eq!(
        st.l().poll(&pool(), &ts[0], s(18)).await.unwrap(),
        Polled::Unknown
    );
    assert_eq!(within_capacity(st.l(), s(18)).await, 3);
    let admitted = events(&st)
        .iter()
        .filter(|(t, e)| *t == ts[0] && *e == QueueEvent::Left(QueueResult::Admitted))
        .count();
    assert_eq!(admitted, 1);
}

async fn queue_estimate_from_deadlines(kind: Kind) {
    let st = Store::new(kind, vec![qspec(2, false)], s(0)).await;
    // Nothing held and nothing released: unknown.
    assert_eq!(st.l().wait_estimate(&pool(), 1, s(0)), None);
    login(st.l(), "default", "ann", "A", s(0)).await;
    login(st.l(), "default", "bob", "B", s(10)).await;
    // Standby seats lapse after the standby timeout (60 s) unless used.
    st.refresh().await;
    let w = st.l().wait_estimate(&pool(), 1, s(20));
    assert_eq!(w, Some(40_000), "the first deadline");
    let q = join(st.l(), "cat", tk("one"), s(20)).await;
    assert_eq!(q.estimated_wait, Some(40_000));
    let q = join(st.l(), "dan", tk("two"), s(20)).await;
    assert_eq!(
        q.estimated_wait,
        Some(50_000),
        "second in line: the second deadline"
    );
    // A release is counted in the rate: deeper in line than the deadlines go, the rate says.
    st.l()
        .release(&key("A"), ReleaseReason::Logout, s(30))
        .await
        .unwrap();
    let q = poll(st.l(), tk("one"), s(31)).await;
    assert_eq!((q.state, q.estimated_wait), (TicketState::Ready, Some(0)));
    st.refresh().await;
    let w = st.l().wait_estimate(&pool(), 3, s(32));
    assert!(w.is_some(), "one release in the window gives a rate");
}

/// Deadlines read just before a seat was taken still give its deadline within the second
/// (a full pool's first denial says when to come back, not "unknown").
async fn queue_estimate_sees_a_seat_taken_within_the_second(kind: Kind) {
    let st = Store::new(kind, vec![qspec(1, false)], s(0)).await;
    st.refresh().await;
    assert_eq!(st.l().wait_estimate(&pool(), 1, s(0)), None);
    login(st.l(), "default", "ann", "A", s(0)).await;
    st.refresh().await;
    assert_eq!(
        st.l().wait_estimate(&pool(), 1, s(0) + 10),
        Some(60_000 - 10)
    );
}

/// A pass/fail check answers for a newcomer: with barging off it fails while anyone waits,
/// even in the moment between a release and the head's promotion; with barging on a free seat
/// passes (the newcomer's login would get it).
async fn queue_checks_see_the_line(kind: Kind) {
    for barging in [false, true] {
        let st = Store::new(kind, vec![qspec(1, barging)], s(0)).await;
        login(st.l(), "default", "ann", "A", s(0)).await;
        join(st.l(), "bob", tk("one"), s(0)).await;
        st.refresh().await;
        assert_eq!(st.l().available(&pool(), s(0)), Some(0));
        st.l()
            .release(&key("A"), ReleaseReason::Logout, s(1))
            .await
            .unwrap();
        st.refresh().await;
        let free = st.l().available(&pool(), s(1));
        if barging {
            assert_eq!(
                free,
                Some(1),
                "barging on: the free seat is a newcomer's to take"
            );
        } else {
            assert_eq!(
                free,
                Some(0),
                "barging off: bob waits, so a check must fail"
            );
        }
    }
}
