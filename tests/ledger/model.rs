//! Model-based test: random sequences of what users, the app, admins and the clock do, run
//! against a store and against a plain reference model of pools, seats and sessions. After
//! every step the store's seats in use and live sessions must equal the model's, and nothing
//! is ever above capacity. Proptest shrinks a failing sequence to a short one.
//!
//! `SEATGATE_MODEL_CASES` sets the number of cases (CI: 32 of at most 40 steps).

use crate::common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use seatgate::domain::{
    Claim, EndOutcome, Gone, Lease, Millis, PauseOutcome, PoolKey, PoolSpec, ReleaseReason,
    Reservation, SeatId, SeatState, Touch,
};
use seatgate::ledger::LedgerError;
use std::collections::HashMap;

const COOKIES: usize = 6;
const USERS: usize = 3;
const SLOTS: usize = 3;
/// Pool `b` has one seat per user: a user's second login reuses the seat.
const POOLS: [(&str, u32); 2] = [("a", 2), ("b", 1)];
const STANDBY: Millis = 60_000;
const PRESENCE: Millis = 90_000;
const IDLE: Millis = 300_000;
const LIFETIME: Millis = 1_800_000;
/// How long an ended seat's id is remembered (so a second end says "already ended").
const ENDED_FOR: Millis = 3_600_000;
const STEP: Millis = 30_000;
const NO_SEAT: SeatId = SeatId(0x5eed_0001);

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!($($fmt)+)));
        }
    };
}

#[derive(Clone, Debug)]
enum Op {
    /// reserve + commit with the cookie the app set.
    Login {
        pool: usize,
        user: usize,
        cookie: usize,
    },
    /// reserve + cancel: a wrong password.
    FailedLogin {
        pool: usize,
        user: usize,
    },
    /// A login in flight whose answer comes later (`Commit`); with `hold`, a seat held that
    /// many steps for a self-service re-login.
    Reserve {
        pool: usize,
        user: usize,
        slot: usize,
        hold: Option<u8>,
    },
    Commit {
        slot: usize,
        cookie: usize,
    },
    /// A request; `activity: false` is one that does not reset the idle timer (ignored, or
    /// not input under `idle_by: input`).
    Request {
        cookie: usize,
        activity: bool,
    },
    /// The presence script's ping; `input`: the person used the page since the last one.
    Heartbeat {
        cookie: usize,
        input: bool,
    },
    Logout {
        cookie: usize,
    },
    /// The app deleted its session cookie.
    AppLogout {
        cookie: usize,
    },
    /// The app set a new value for its session cookie.
    Rotate {
        old: usize,
        new: usize,
    },
    Exempt {
        cookie: usize,
        named: bool,
    },
    /// An admin ends the seat the cookie last held, with grace in steps.
    End {
        cookie: usize,
        grace: u8,
    },
    Pause {
        cookie: usize,
    },
    Resume {
        cookie: usize,
    },
    Advance {
        steps: u8,
    },
    Sweep,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..COOKIES;
    let u = 0..USERS;
    let p = 0..POOLS.len();
    prop_oneof![
        4 => (p.clone(), u.clone(), c.clone())
            .prop_map(|(pool, user, cookie)| Op::Login { pool, user, cookie }),
        1 => (p.clone(), u.clone()).prop_map(|(pool, user)| Op::FailedLogin { pool, user }),
        1 => (p, u, 0..SLOTS, proptest::option::of(1..4u8))
            .prop_map(|(pool, user, slot, hold)| Op::Reserve { pool, user, slot, hold }),
        1 => (0..SLOTS, c.clone()).prop_map(|(slot, cookie)| Op::Commit { slot, cookie }),
        5 => (c.clone(), proptest::bool::weighted(0.7))
            .prop_map(|(cookie, activity)| Op::Request { cookie, activity }),
        2 => (c.clone(), any::<bool>()).prop_map(|(cookie, input)| Op::Heartbeat { cookie, input }),
        1 => c.clone().prop_map(|cookie| Op::Logout { cookie }),
        1 => c.clone().prop_map(|cookie| Op::AppLogout { cookie }),
        1 => (c.clone(), c.clone()).prop_map(|(old, new)| Op::Rotate { old, new }),
        1 => (c.clone(), any::<bool>()).prop_map(|(cookie, named)| Op::Exempt { cookie, named }),
        1 => (c.clone(), 0..3u8).prop_map(|(cookie, grace)| Op::End { cookie, grace }),
        1 => c.clone().prop_map(|cookie| Op::Pause { cookie }),
        1 => c.prop_map(|cookie| Op::Resume { cookie }),
        3 => (1..=12u8).prop_map(|steps| Op::Advance { steps }),
        1 => Just(Op::Sweep),
        1 => Just(Op::Restart),
    ]
}

fn pool_spec(i: usize) -> PoolSpec {
    let mut sp = spec(POOLS[i].0, POOLS[i].1);
    sp.idle_timeout = IDLE;
    sp.max_lifetime = LIFETIME;
    sp.standby_timeout = STANDBY;
    sp.presence_timeout = Some(PRESENCE);
    if i == 1 {
        sp.seats_per = seatgate::domain::SeatsPer::User;
    }
    sp
}

fn pool_key(i: usize) -> PoolKey {
    PoolKey::new("crm", POOLS[i].0)
}

fn cookie(i: usize) -> String {
    format!("c{i}")
}

#[derive(Clone, Debug)]
struct MSeat {
    id: SeatId,
    pool: usize,
    user: String,
    cookie: usize,
    started: Millis,
    la: Millis,
    /// 0: never pinged, presence does not apply.
    hb: Millis,
    state: SeatState,
    ending_at: Option<Millis>,
}

impl MSeat {
    fn counts(&self) -> bool {
        matches!(
            self.state,
            SeatState::Standby | SeatState::Active | SeatState::Ending
        )
    }

    /// When the seat stops holding, and why: the rules as the README states them.
    fn end(&self) -> (Millis, ReleaseReason) {
        let mut ends = vec![(self.started + LIFETIME, ReleaseReason::Lifetime)];
        if let Some(at) = self.ending_at {
            ends.insert(0, (at, ReleaseReason::Ended));
        }
        if self.state != SeatState::Paused {
            ends.push((self.la + IDLE, ReleaseReason::Idle));
            if self.state == SeatState::Standby {
                ends.push((self.la + STANDBY, ReleaseReason::Standby));
            }
            if self.hb > 0 {
                ends.push((self.hb.max(self.la) + PRESENCE, ReleaseReason::Presence));
            }
        }
        // The earliest wins; on a tie, the first listed.
        ends.into_iter().min_by_key(|(t, _)| *t).unwrap()
    }
}

struct MLease {
    claim: Claim,
    lease: Lease,
    /// Until when it counts in its pool (0: it never did, it reuses a seat).
    expires: Millis,
    /// Until when it is a lease at all.
    until: Millis,
}

#[derive(Default)]
struct Model {
    now: Millis,
    seats: Vec<MSeat>,
    leases: Vec<Option<MLease>>,
    /// Released cookies: why, and until when that is remembered.
    gone: HashMap<usize, (ReleaseReason, Millis)>,
    ended: HashMap<SeatId, Millis>,
    last_id: HashMap<usize, SeatId>,
    /// Most seats (and counting leases) held at once, and logins or resumes refused, per pool.
    peak: [u32; 2],
    denied: [u64; 2],
}

impl Model {
    /// Whatever ended by `now` is released as of the instant it ended.
    fn settle(&mut self) {
        let now = self.now;
        let (dead, live): (Vec<_>, Vec<_>) = self.seats.drain(..).partition(|s| s.end().0 <= now);
        self.seats = live;
        for s in dead {
            let (at, why) = s.end();
            self.tombstone(&s, why, at);
        }
    }

    fn tombstone(&mut self, s: &MSeat, why: ReleaseReason, at: Millis) {
        self.gone.insert(s.cookie, (why, at + LIFETIME));
        if why == ReleaseReason::Ended {
            self.ended.insert(s.id, at + ENDED_FOR);
        }
    }

    fn release(&mut self, i: usize, why: ReleaseReason) -> MSeat {
        let s = self.seats.remove(i);
        self.tombstone(&s, why, self.now);
        s
    }

    fn by_cookie(&self, c: usize) -> Option<usize> {
        self.seats.iter().position(|s| s.cookie == c)
    }

    fn by_id(&self, id: SeatId) -> Option<usize> {
        self.seats.iter().position(|s| s.id == id)
    }

    fn in_use(&self, pool: usize) -> u32 {
        let seats = self
            .seats
            .iter()
            .filter(|s| s.pool == pool && s.counts())
            .count();
        let leases = self
            .leases
            .iter()
            .flatten()
            .filter(|l| l.lease.pool == pool_key(pool) && l.expires > self.now)
            .count();
        (seats + leases) as u32
    }

    /// A seat or counting lease was just taken in `pool` (`extra`: one the model does not
    /// hold itself, a lease of a login in flight).
    fn bump(&mut self, pool: usize, extra: u32) {
        self.peak[pool] = self.peak[pool].max(self.in_use(pool) + extra);
    }

    fn has_room(&self, pool: usize) -> bool {
        self.in_use(pool) < POOLS[pool].1
    }

    /// The seat a login of `user` to `pool` takes over (pools with one seat per user).
    fn reusable(&self, pool: usize, user: &str) -> Option<SeatId> {
        if pool != 1 {
            return None;
        }
        self.seats
            .iter()
            .filter(|s| s.pool == pool && s.user == user)
            .filter(|s| matches!(s.state, SeatState::Active | SeatState::Standby))
            .max_by_key(|s| s.la)
            .map(|s| s.id)
    }

    /// The model's side of `commit`: a granted lease meets cookie `c`. `fresh`: the lease has
    /// not lapsed.
    fn commit(
        &mut self,
        pool: usize,
        user: &str,
        reuse: Option<SeatId>,
        fresh: bool,
        c: usize,
        got: Result<SeatId, LedgerError>,
    ) -> Result<(), TestCaseError> {
        if let Some(i) = self.by_cookie(c) {
            let want = self.seats[i].id;
            check!(
                matches!(got, Ok(id) if id == want),
                "commit of a known session: {got:?}, model {want:?}"
            );
            return Ok(());
        }
        let reused = reuse
            .and_then(|id| self.by_id(id))
            .filter(|&i| matches!(self.seats[i].state, SeatState::Active | SeatState::Standby));
        if let Some(i) = reused {
            let now = self.now;
            let s = &mut self.seats[i];
            let (old, id) = (s.cookie, s.id);
            s.cookie = c;
            s.la = now;
            self.gone
                .insert(old, (ReleaseReason::Replaced, now + LIFETIME));
            self.gone.remove(&c);
            self.last_id.insert(c, id);
            check!(
                matches!(got, Ok(g) if g == id),
                "reuse commit: {got:?}, model {id:?}"
            );
            return Ok(());
        }
        let counted = fresh && reuse.is_none();
        match got {
            Ok(id) => {
                check!(
                    counted || self.has_room(pool),
                    "a lapsed or reusing lease committed a new seat in a full pool"
                );
                self.seat(id, pool, user, c, SeatState::Standby);
                self.bump(pool, 0);
            }
            Err(LedgerError::LeaseLost(_)) => check!(
                !counted && !self.has_room(pool),
                "lease lost with room or unlapsed"
            ),
            Err(e) => check!(false, "commit: {e}"),
        }
        Ok(())
    }

    fn gone_of(&self, c: usize) -> Gone {
        match self.gone.get(&c) {
            Some((why, until)) if *until > self.now => Gone::Released(*why),
            _ => Gone::Unknown,
        }
    }

    fn seat(&mut self, id: SeatId, pool: usize, user: &str, c: usize, state: SeatState) -> &MSeat {
        self.gone.remove(&c);
        self.last_id.insert(c, id);
        self.seats.push(MSeat {
            id,
            pool,
            user: user.to_string(),
            cookie: c,
            started: self.now,
            la: self.now,
            hb: 0,
            state,
            ending_at: None,
        });
        self.seats.last().unwrap()
    }
}

fn claim_for(pool: usize, user: usize) -> Claim {
    let mut c = claim(POOLS[pool].0, &format!("u{user}"));
    c.lease_id |= 1 << 62;
    c
}

async fn step(st: &mut Store, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let now = m.now;
    m.settle();
    match *op {
        Op::Login {
            pool,
            user,
            cookie: c,
        } => {
            let cl = claim_for(pool, user);
            let name = cl.user.clone().unwrap();
            let reuse = m.reusable(pool, &name);
            let room = m.has_room(pool) || reuse.is_some();
            match st.l().reserve(&cl, now).await.unwrap() {
                Reservation::Granted(lease) => {
                    check!(room, "granted a seat in a full pool");
                    check!(
                        lease.reuse == reuse,
                        "reuse: store {:?}, model {reuse:?}",
                        lease.reuse
                    );
                    if reuse.is_none() {
                        m.bump(pool, 1);
                    }
                    let got = st.l().commit(&lease, &cl, key(&cookie(c)), now).await;
                    m.commit(pool, &name, reuse, true, c, got)?;
                }
                Reservation::Full(f) => {
                    check!(!room, "refused with room: {f:?}");
                    m.denied[pool] += 1;
                }
            }
        }
        Op::FailedLogin { pool, user } => {
            let cl = claim_for(pool, user);
            let reuse = m.reusable(pool, &cl.user.clone().unwrap());
            let room = m.has_room(pool) || reuse.is_some();
            match st.l().reserve(&cl, now).await.unwrap() {
                Reservation::Granted(lease) => {
                    check!(room, "granted a seat in a full pool");
                    if reuse.is_none() {
                        m.bump(pool, 1);
                    }
                    st.l().cancel(&lease).await;
                }
                Reservation::Full(_) => {
                    check!(!room, "refused with room");
                    m.denied[pool] += 1;
                }
            }
        }
        Op::Reserve {
            pool,
            user,
            slot,
            hold,
        } => {
            if m.leases.len() < SLOTS {
                m.leases.resize_with(SLOTS, || None);
            }
            if let Some(old) = m.leases[slot].take() {
                st.l().cancel(&old.lease).await;
            }
            let cl = claim_for(pool, user);
            let reuse = m.reusable(pool, &cl.user.clone().unwrap());
            let room = m.has_room(pool) || reuse.is_some();
            let ttl = hold.map_or(STANDBY, |h| h as Millis * STEP);
            let got = match hold {
                Some(_) => st.l().hold(&cl, ttl, now).await.unwrap(),
                None => st.l().reserve(&cl, now).await.unwrap(),
            };
            match got {
                Reservation::Granted(lease) => {
                    check!(room, "granted a seat in a full pool");
                    check!(
                        lease.reuse == reuse,
                        "reuse: store {:?}, model {reuse:?}",
                        lease.reuse
                    );
                    // A lease that reuses a seat takes none of its own.
                    let expires = if reuse.is_some() { 0 } else { now + ttl };
                    m.leases[slot] = Some(MLease {
                        claim: cl,
                        lease,
                        expires,
                        until: now + ttl,
                    });
                    m.bump(pool, 0);
                }
                Reservation::Full(_) => {
                    check!(!room, "refused with room");
                    m.denied[pool] += 1;
                }
            }
        }
        Op::Commit { slot, cookie: c } => {
            let Some(l) = m.leases.get_mut(slot).and_then(Option::take) else {
                return Ok(());
            };
            let pool = POOLS.iter().position(|p| p.0 == l.lease.pool.pool).unwrap();
            let got = st
                .l()
                .commit(&l.lease, &l.claim, key(&cookie(c)), now)
                .await;
            let user = l.claim.user.clone().unwrap();
            m.commit(pool, &user, l.lease.reuse, l.until > now, c, got)?;
        }
        Op::Heartbeat { cookie: c, input } => {
            let got = st.l().beat(&key(&cookie(c)), input, now).await.unwrap();
            let want = match m.by_cookie(c) {
                Some(i) if m.seats[i].state != SeatState::Paused => {
                    m.seats[i].hb = now;
                    if input {
                        m.seats[i].la = now;
                    }
                    Some(m.seats[i].la)
                }
                _ => None,
            };
            check!(got == want, "beat: store {got:?}, model {want:?}");
        }
        Op::Request {
            cookie: c,
            activity,
        } => {
            let got = st
                .l()
                .touch_as(&key(&cookie(c)), activity, now)
                .await
                .unwrap();
            let want = match m.by_cookie(c) {
                None => Touch::Gone(m.gone_of(c)),
                Some(i) => {
                    let pool = m.seats[i].pool;
                    let paused = m.seats[i].state == SeatState::Paused;
                    if paused && !m.has_room(pool) {
                        m.denied[pool] += 1;
                        Touch::Gone(Gone::Released(ReleaseReason::Paused))
                    } else {
                        if paused {
                            m.seats[i].state = SeatState::Active;
                            m.bump(pool, 0);
                        }
                        let s = &mut m.seats[i];
                        // A state change (resume, standby → active) is activity whatever
                        // the request.
                        if activity || paused || s.state == SeatState::Standby {
                            s.la = now;
                        }
                        if s.state == SeatState::Standby {
                            s.state = SeatState::Active;
                        }
                        Touch::Held {
                            id: s.id,
                            pool: pool_key(s.pool),
                            state: s.state,
                            ending_at: s.ending_at,
                        }
                    }
                }
            };
            check!(got == want, "touch: store {got:?}, model {want:?}");
        }
        Op::Logout { cookie: c } | Op::AppLogout { cookie: c } => {
            let why = if matches!(op, Op::Logout { .. }) {
                ReleaseReason::Logout
            } else {
                ReleaseReason::AppLogout
            };
            let got = st.l().release(&key(&cookie(c)), why, now).await.unwrap();
            let want = m.by_cookie(c).map(|i| m.release(i, why).id);
            check!(
                got.as_ref().map(|r| r.id) == want,
                "release: store {got:?}, model {want:?}"
            );
        }
        Op::Rotate { old, new } => {
            let got = st
                .l()
                .rekey(&key(&cookie(old)), key(&cookie(new)), now)
                .await
                .unwrap();
            let want = match (m.by_cookie(old), m.by_cookie(new)) {
                (None, _) => None,
                (Some(i), _) if old == new => Some(m.seats[i].id),
                (Some(i), Some(j)) => {
                    let keep = m.seats[j].id;
                    m.release(i, ReleaseReason::Replaced);
                    Some(keep)
                }
                (Some(i), None) => {
                    let s = m.seats[i].clone();
                    m.seats[i].cookie = new;
                    m.gone
                        .insert(old, (ReleaseReason::Replaced, now + LIFETIME));
                    m.gone.remove(&new);
                    m.last_id.insert(new, s.id);
                    Some(s.id)
                }
            };
            check!(got == want, "rekey: store {got:?}, model {want:?}");
        }
        Op::Exempt { cookie: c, named } => {
            let state = if named {
                SeatState::Named
            } else {
                SeatState::Exempt
            };
            let cl = claim("a", "svc");
            let got = st
                .l()
                .admit_uncounted(&cl, state, key(&cookie(c)), now)
                .await
                .unwrap();
            match m.by_cookie(c) {
                Some(i) => check!(got == m.seats[i].id, "a second session for one cookie"),
                None => {
                    m.seat(got, 0, "svc", c, state);
                }
            }
        }
        Op::End { cookie: c, grace } => {
            let id = m.last_id.get(&c).copied().unwrap_or(NO_SEAT);
            let grace = grace as Millis * STEP;
            let got = st.l().end(&[id], grace, "admin", now).await.unwrap();
            let want = match m.by_id(id) {
                Some(i) if m.seats[i].ending_at.is_some() => EndOutcome::AlreadyEnded,
                Some(i) if grace == 0 || m.seats[i].state == SeatState::Paused => {
                    m.release(i, ReleaseReason::Ended);
                    EndOutcome::Ending { at: now }
                }
                Some(i) => {
                    let s = &mut m.seats[i];
                    if s.counts() {
                        s.state = SeatState::Ending;
                    }
                    s.ending_at = Some(now + grace);
                    EndOutcome::Ending { at: now + grace }
                }
                None if m.ended.get(&id).is_some_and(|u| *u > now) => EndOutcome::AlreadyEnded,
                None => EndOutcome::NotFound,
            };
            check!(
                got == vec![(id, want)],
                "end: store {got:?}, model {want:?}"
            );
        }
        Op::Pause { cookie: c } => {
            let id = m.last_id.get(&c).copied().unwrap_or(NO_SEAT);
            let got = st.l().pause(id, now).await.unwrap();
            let want = match m.by_id(id) {
                None => PauseOutcome::NotFound,
                Some(i) if matches!(m.seats[i].state, SeatState::Active | SeatState::Standby) => {
                    m.seats[i].state = SeatState::Paused;
                    PauseOutcome::Done
                }
                Some(_) => PauseOutcome::WrongState,
            };
            check!(got == want, "pause: store {got:?}, model {want:?}");
        }
        Op::Resume { cookie: c } => {
            let id = m.last_id.get(&c).copied().unwrap_or(NO_SEAT);
            let got = st.l().resume(id, now).await.unwrap();
            let want = match m.by_id(id) {
                None => PauseOutcome::NotFound,
                Some(i) if m.seats[i].state != SeatState::Paused => PauseOutcome::WrongState,
                Some(i) if !m.has_room(m.seats[i].pool) => {
                    m.denied[m.seats[i].pool] += 1;
                    PauseOutcome::Full
                }
                Some(i) => {
                    m.seats[i].state = SeatState::Active;
                    m.seats[i].la = now;
                    m.bump(m.seats[i].pool, 0);
                    PauseOutcome::Done
                }
            };
            check!(got == want, "resume: store {got:?}, model {want:?}");
        }
        Op::Advance { steps } => {
            m.now += steps as Millis * STEP;
            m.settle();
        }
        Op::Sweep => {
            st.l().sweep(now).await.unwrap();
        }
        Op::Restart => {
            if st.kind == Kind::Volatile {
                return Ok(());
            }
            st.restart(now).await;
            if st.kind == Kind::Journal {
                // Logins in flight die with the process; their leases are gone.
                for l in m.leases.iter_mut().flatten() {
                    l.expires = 0;
                    l.until = 0;
                }
            }
        }
    }
    compare(st, m).await
}

async fn compare(st: &Store, m: &Model) -> Result<(), TestCaseError> {
    let now = m.now;
    for u in st.l().usage(now).await.unwrap() {
        let pool = POOLS.iter().position(|p| p.0 == u.pool).unwrap();
        check!(
            u.in_use == m.in_use(pool),
            "pool {}: store has {} in use, model {}",
            u.pool,
            u.in_use,
            m.in_use(pool)
        );
        check!(u.in_use <= u.capacity, "pool {} above capacity", u.pool);
        check!(
            (u.peak, u.denied) == (m.peak[pool], m.denied[pool]),
            "pool {}: store peak {} denied {}, model peak {} denied {}",
            u.pool,
            u.peak,
            u.denied,
            m.peak[pool],
            m.denied[pool]
        );
    }
    let mut got: Vec<_> = st
        .l()
        .sessions(now)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.id,
                r.pool.pool.clone(),
                r.user.unwrap_or_default(),
                r.session,
                r.state,
                r.ending_at,
                r.started_at,
                r.last_activity,
                r.last_heartbeat,
            )
        })
        .collect();
    let mut want: Vec<_> = m
        .seats
        .iter()
        .map(|s| {
            (
                s.id,
                POOLS[s.pool].0.to_string(),
                s.user.clone(),
                Some(key(&cookie(s.cookie))),
                s.state,
                s.ending_at,
                s.started,
                s.la,
                s.hb,
            )
        })
        .collect();
    got.sort_by_key(|g| g.0);
    want.sort_by_key(|w| w.0);
    check!(
        got == want,
        "sessions at +{}s:\n store {got:?}\n model {want:?}",
        (now - T0) / 1000
    );
    for s in &m.seats {
        check!(s.end().0 > now, "model holds a seat past its deadline");
    }
    Ok(())
}

async fn run_case(kind: Kind, ops: &[Op]) -> Result<(), TestCaseError> {
    let specs = (0..POOLS.len()).map(pool_spec).collect();
    let mut st = Store::new(kind, specs, T0).await;
    let mut m = Model {
        now: T0,
        ..Model::default()
    };
    for (i, op) in ops.iter().enumerate() {
        step(&mut st, &mut m, op)
            .await
            .map_err(|e| TestCaseError::fail(format!("step {i} {op:?}: {e}")))?;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("SEATGATE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

fn run_model(kind: Kind) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        ..Config::default()
    });
    let ops = proptest::collection::vec(op(), 1..=40);
    if let Err(e) = runner.run(&ops, |ops| rt.block_on(run_case(kind, &ops))) {
        panic!("{kind:?}: {e}");
    }
}

#[test]
fn model_volatile() {
    run_model(Kind::Volatile);
}

#[test]
fn model_journal() {
    run_model(Kind::Journal);
}

#[test]
fn model_redis() {
    run_model(Kind::Redis);
}
