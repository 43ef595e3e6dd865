//! The embedded store's own tests: pool counts and the `available` view, beside the
//! contract suite every store runs (tests/ledger).

use super::*;
use crate::domain::{Grant, SeatsPer};
use crate::ledger::{Claim, NoObserver};
use crate::policy::admission::Holders;

fn spec(presence: Option<Millis>) -> PoolSpec {
    PoolSpec {
        key: PoolKey::new("p", "default"),
        grants: vec![Grant {
            seats: 2,
            not_before: None,
            expires: None,
        }],
        idle_timeout: 1_000,
        max_lifetime: 100_000,
        presence_timeout: presence,
        standby_timeout: 50_000,
        seats_per: SeatsPer::Session,
        max_sessions: None,
        groups: vec![],
        overflow_ms: None,
        queue: None,
    }
}

async fn seat(l: &MemoryLedger, i: u64, now: Millis) -> SessionKey {
    let c = Claim {
        pool: PoolKey::new("p", "default"),
        user: Some(format!("u{i}")),
        device: None,
        client: "web".into(),
        lease_id: i,
    };
    let Reservation::Granted(lease) = l.reserve(&c, now).await.unwrap() else {
        panic!("no seat")
    };
    let k = SessionKey::new("p", &i.to_string());
    l.commit(&lease, &c, k, now).await.unwrap();
    k
}

/// The pool's indexes count holders exactly as a walk over every seat does (the rule
/// `admission::admit` applies), with groups (one user in two), pending logins, users
/// without a name, and seats that lapsed without a sweep.
#[tokio::test]
async fn indexed_counts_are_the_walked_counts() {
    use crate::domain::GroupLimit;
    let group = |name: &str, users: &[&str]| GroupLimit {
        name: name.into(),
        users: users.iter().map(|u| u.to_string()).collect(),
        reserve: 1,
        max: None,
    };
    let mut sp = spec(None);
    sp.grants[0].seats = 50;
    sp.groups = vec![group("a", &["u1", "u2", "u3"]), group("b", &["u3", "u4"])];
    let l = MemoryLedger::volatile(Arc::new(NoObserver));
    l.configure(std::slice::from_ref(&sp));
    let claim = |i: u64, user: Option<&str>| Claim {
        pool: sp.key.clone(),
        user: user.map(String::from),
        device: None,
        client: "web".into(),
        lease_id: 1000 + i,
    };
    let users = [
        Some("u1"),
        Some("u3"),
        Some("u3"),
        Some("u4"),
        None,
        Some("u9"),
    ];
    for (i, u) in users.iter().enumerate() {
        let c = claim(i as u64, *u);
        let Reservation::Granted(lease) = l.reserve(&c, 10 * i as u64).await.unwrap() else {
            panic!("no seat")
        };
        // The last two stay pending logins.
        if i < 4 {
            let k = SessionKey::new("p", &i.to_string());
            l.commit(&lease, &c, k, 10 * i as u64).await.unwrap();
        }
    }
    let slot = l.slot(&sp.key).unwrap();
    // At 1_015 the seats of u1 and u3 (committed at 0 and 10) lapsed idle, unswept.
    for now in [40, 1_015] {
        let mut st = slot.lock();
        let expired = st.due(&sp, now);
        let mut walked: Vec<Option<&str>> = st
            .seats
            .values()
            .filter(|l| expiry(&sp, &l.times(), now).is_none())
            .map(|l| l.user.as_deref())
            .collect();
        walked.extend(
            st.pending
                .values()
                .filter(|p| p.counts && p.expires > now)
                .map(|p| p.user.as_deref()),
        );
        assert_eq!(expired.len(), if now == 40 { 0 } else { 2 });
        for user in [
            None,
            Some("u1"),
            Some("u3"),
            Some("u4"),
            Some("u9"),
            Some("zz"),
        ] {
            assert_eq!(
                st.counts(&sp, user, now),
                Holders::new(walked.clone()).counts(&sp, user),
                "at {now} for {user:?}"
            );
        }
    }
}

/// The cached count of `available` must follow every way a seat stops counting: idle
/// lapse without a sweep, a touch that moves the lapse later, an end with grace, and
/// presence that starts with the first heartbeat.
#[tokio::test]
async fn available_follows_lapses_without_a_sweep() {
    let pool = PoolKey::new("p", "default");
    let l = MemoryLedger::volatile(Arc::new(NoObserver));
    l.configure(&[spec(Some(300))]);
    let a = seat(&l, 1, 0).await;
    assert_eq!(l.available(&pool, 10), Some(1));
    // A second request (touch) moves the idle lapse from 1000 to 1500.
    let _ = l.touch(&a, 500).await.unwrap();
    assert_eq!(l.available(&pool, 999), Some(1));
    assert_eq!(l.available(&pool, 1_200), Some(1));
    assert_eq!(
        l.available(&pool, 1_500),
        Some(2),
        "idle lapse counts at once"
    );

    let b = seat(&l, 2, 2_000).await;
    assert_eq!(l.available(&pool, 2_010), Some(1));
    // The first heartbeat makes presence apply: gone 300 ms after it.
    assert!(l.heartbeat(&b, 2_020).await.unwrap());
    assert_eq!(l.available(&pool, 2_200), Some(1));
    assert_eq!(
        l.available(&pool, 2_330),
        Some(2),
        "presence lapse counts at once"
    );

    let c = seat(&l, 3, 3_000).await;
    let id = l
        .sessions(3_000)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.session == Some(c))
        .map(|s| s.id)
        .unwrap();
    assert_eq!(l.available(&pool, 3_010), Some(1));
    l.end(&[id], 100, "admin", 3_020).await.unwrap();
    assert_eq!(l.available(&pool, 3_100), Some(1));
    assert_eq!(
        l.available(&pool, 3_120),
        Some(2),
        "ended seat counts at once"
    );
}

/// A long line with coming and going: every ticket's poll position is its place in the
/// listing (the rank tree over join numbers stays right through its rebuilds).
#[tokio::test]
async fn line_positions_survive_much_coming_and_going() {
    use crate::domain::{Joined, Polled, QueueSpec, TicketKey};
    let mut sp = spec(None);
    sp.grants[0].seats = 1;
    sp.idle_timeout = u64::MAX / 4;
    sp.max_lifetime = u64::MAX / 4;
    sp.queue = Some(QueueSpec {
        hold: 1_000,
        abandon_after: 1 << 40,
        max_wait: 1 << 40,
        max_length: 10_000,
        barging: false,
    });
    let pool = sp.key.clone();
    let l = MemoryLedger::volatile(Arc::new(NoObserver));
    l.configure(&[sp]);
    seat(&l, 0, 1).await;
    let tk = |i: u32| TicketKey::new(&pool, &format!("t{i}"));
    let claim = Claim {
        pool: pool.clone(),
        user: Some("u".into()),
        device: None,
        client: "web".into(),
        lease_id: 1,
    };
    let (mut next, mut in_line) = (0, 0);
    for round in 0..4u64 {
        for _ in 0..700 {
            let j = l.enqueue(&claim, tk(next), 10 + round).await.unwrap();
            assert!(matches!(j, Joined::Queued(_)));
            next += 1;
            in_line += 1;
        }
        // Every third ticket in line leaves, from anywhere in it.
        let listed = l.queue(10 + round).await.unwrap();
        for t in listed.iter().step_by(3) {
            l.queue_admitted(&pool, &t.key, 10 + round).await.unwrap();
            in_line -= 1;
        }
    }
    let listed = l.queue(20).await.unwrap();
    assert_eq!(listed.len(), in_line);
    for (i, t) in listed.iter().enumerate() {
        match l.poll(&pool, &t.key, 5_000).await.unwrap() {
            Polled::Status(s) => {
                assert_eq!(s.position, i as u32 + 1, "ticket {i}");
                assert_eq!(s.length as usize, listed.len());
            }
            p => panic!("{p:?}"),
        }
    }
}

/// A reload that turns a pool's line off: its tickets leave (expired, told once) at the next
/// sweep, and the seat held for a ready one is given back.
#[tokio::test]
async fn a_line_turned_off_by_reload_empties() {
    use crate::domain::{Polled, QueueEvent, QueueResult, QueueSpec, Ticket, TicketKey};
    #[derive(Default)]
    struct Events(Mutex<Vec<(TicketKey, QueueEvent)>>);
    impl LedgerObserver for Events {
        fn released(&self, _: &SeatRecord, _: ReleaseReason) {}
        fn queue_event(&self, t: &Ticket, ev: QueueEvent, _: Millis) {
            self.0.lock().unwrap().push((t.key, ev));
        }
    }
    let mut sp = spec(None);
    sp.grants[0].seats = 1;
    sp.idle_timeout = 1 << 40;
    sp.queue = Some(QueueSpec {
        hold: 60_000,
        abandon_after: 30_000,
        max_wait: 1 << 40,
        max_length: 10,
        barging: false,
    });
    let pool = sp.key.clone();
    let seen = Arc::new(Events::default());
    let l = MemoryLedger::volatile(seen.clone());
    l.configure(std::slice::from_ref(&sp));
    let (a, b) = (TicketKey::new(&pool, "a"), TicketKey::new(&pool, "b"));
    let claim = Claim {
        pool: pool.clone(),
        user: Some("u".into()),
        device: None,
        client: "web".into(),
        lease_id: 1,
    };
    // A free seat: the first ticket is ready at once, the second waits.
    let _ = l.enqueue(&claim, a, 10).await.unwrap();
    let _ = l.enqueue(&claim, b, 10).await.unwrap();
    assert_eq!(l.available(&pool, 20), Some(0), "held for the ready ticket");
    sp.queue = None;
    l.configure(&[sp]);
    l.sweep(1_000).await.unwrap();
    l.sweep(2_000).await.unwrap();
    assert_eq!(
        l.available(&pool, 2_000),
        Some(1),
        "the held seat is given back"
    );
    assert_eq!(l.poll(&pool, &a, 3_000).await.unwrap(), Polled::Unknown);
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![
            (a, QueueEvent::Joined),
            (a, QueueEvent::Ready),
            (b, QueueEvent::Joined),
            (a, QueueEvent::Left(QueueResult::Expired)),
            (b, QueueEvent::Left(QueueResult::Expired)),
        ]
    );
}

/// The sweep forgets tombstones and ended ids once their time is up, from their own heaps,
/// without walking the maps; a cookie that held a seat again since keeps its newer tombstone.
#[tokio::test]
async fn the_sweep_forgets_what_is_up_and_keeps_what_is_newer() {
    let l = MemoryLedger::volatile(Arc::new(NoObserver));
    l.configure(&[spec(None)]);
    let a = seat(&l, 1, 0).await;
    let b = seat(&l, 2, 0).await;
    l.release(&a, ReleaseReason::Logout, 10).await.unwrap();
    let id_b = l.live_of(&b).unwrap().id;
    l.end(&[id_b], 0, "admin", 10).await.unwrap();
    assert_eq!((l.gone.len(), l.ended_ids.len()), (2, 1));
    // Cookie `a` holds a seat again at 50_000 and is released at 60_000: a tombstone until
    // 160_000; its first one (until 100_010) is up before that.
    let c = Claim {
        pool: PoolKey::new("p", "default"),
        user: Some("u1".into()),
        device: None,
        client: "web".into(),
        lease_id: 9,
    };
    let Reservation::Granted(lease) = l.reserve(&c, 50_000).await.unwrap() else {
        panic!("no seat")
    };
    l.commit(&lease, &c, a, 50_000).await.unwrap();
    l.release(&a, ReleaseReason::Logout, 60_000).await.unwrap();
    l.sweep(100_010).await.unwrap();
    assert!(l.gone.contains_key(&a), "the newer tombstone stays");
    assert!(!l.gone.contains_key(&b), "b's is up");
    assert_eq!(l.ended_ids.len(), 1, "an ended id is kept an hour");
    l.sweep(ENDED_FOR + 10).await.unwrap();
    assert_eq!((l.gone.len(), l.ended_ids.len()), (0, 0));
    let (gone_left, ended_left) = (
        l.gone_until.lock().unwrap().len(),
        l.ended_until.lock().unwrap().len(),
    );
    assert_eq!((gone_left, ended_left), (0, 0), "their heaps are drained");
}

/// A seat found lapsed, then asked about by a sweep whose clock went back, holds again and is
/// watched; when its time comes again the sweep releases it (nothing leaves it doomed with no
/// heap entry and no place in the order).
#[tokio::test]
async fn a_seat_doomed_before_the_clock_went_back_is_swept_when_it_lapses_again() {
    let l = MemoryLedger::volatile(Arc::new(NoObserver));
    let sp = spec(None);
    l.configure(std::slice::from_ref(&sp));
    let k = seat(&l, 1, 0).await;
    let slot = l.slot(&sp.key).unwrap();
    assert_eq!(
        slot.lock().due(&sp, 1_500).len(),
        1,
        "idle since 0, lapsed at 1_000"
    );
    assert_eq!(l.sweep(500).await.unwrap(), 0, "at 500 it holds");
    {
        let st = slot.view();
        assert!(st.doomed.is_empty() && st.doomed_order.is_empty());
        assert!(st.any_due(1_000), "watched again");
    }
    assert!(matches!(
        l.touch(&k, 500).await.unwrap(),
        crate::domain::Touch::Held { .. }
    ));
    assert_eq!(
        l.sweep(2_000).await.unwrap(),
        1,
        "idle since 500, lapsed at 1_500"
    );
    assert!(l.live_of(&k).is_none());
}
