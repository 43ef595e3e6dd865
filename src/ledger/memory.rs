//! The embedded store: seats in memory, every admission, state change and release journaled to
//! redb.
//!
//! Concurrency: touching a seat that is already active (almost every request) is a lookup in a
//! sharded `DashMap` plus atomic stores on the seat; it takes no global lock and no pool lock.
//! Everything that changes a seat's state (commit, the first request of a standby seat, pause,
//! resume, end, rekey, release) takes the pool's `std::sync::Mutex` for a few microseconds,
//! re-checks the seat there and queues its journal write before letting go of the lock, so the
//! journal sees changes in the order memory did. The mutex is never held across an `.await`:
//! the write is awaited after, before the caller acts on it.
//!
//! Lock order: a pool's mutex, then a `DashMap` shard (never the reverse: no map guard is held
//! while a pool is locked).
//!
//! Durability: state transitions are durable when the call returns; last activity and last
//! heartbeat are written by `flush` in batches, so after a crash they may lag by at most one
//! flush period (`store.flush_interval`). Reservations of logins in flight are not journaled:
//! their requests die with the process.

use super::journal::{self, Journal, Op, Written};
use super::{
    Claim, EndOutcome, Gone, Lease, LedgerError, LedgerObserver, Lookup, Millis, PauseOutcome,
    PoolKey, PoolSpec, PoolUsage, ReleaseReason, Reservation, SeatId, SeatLedger, SeatRecord,
    SeatState, SessionKey, Shared, SharedState, Touch,
};
use crate::domain::SeatsPer;
use crate::policy::admission::{self, Admit, Holders};
use crate::policy::seat::{deadline, expiry, SeatTimes};
use async_trait::async_trait;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// How long an ended seat's id is remembered, so a second end says "already ended".
const ENDED_FOR: Millis = 3_600_000;
/// Who ends an overflow seat whose pool spent its allowance (`ended_by`).
pub const OVERFLOW_END: &str = "overflow";

pub struct MemoryLedger {
    pools: super::Pools<PoolSlot>,
    by_session: DashMap<SessionKey, Arc<Live>>,
    by_id: DashMap<SeatId, Arc<Live>>,
    /// Released cookies, remembered until they could no longer be valid (the pool's
    /// `max_lifetime` after the release) so an ended session cannot come back. Only cookies
    /// that held a session get here, so junk cookies cannot grow it.
    gone: DashMap<SessionKey, (Gone, Millis)>,
    ended_ids: DashMap<SeatId, Millis>,
    journal: Option<Journal>,
    observer: Arc<dyn LedgerObserver>,
}

struct PoolSlot {
    key: PoolKey,
    spec: RwLock<Arc<PoolSpec>>,
    state: Mutex<PoolState>,
}

impl PoolSlot {
    fn spec(&self) -> Arc<PoolSpec> {
        self.spec.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The state, for a change: whoever may change seats, pending reservations or their
    /// deadlines goes through here, so the cached count of [`Self::view`] is dropped.
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        let mut st = self.view();
        st.held_until = None;
        st
    }

    /// The state, to read it without changing any seat.
    fn view(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct PoolState {
    /// Seats that count (standby, active, ending); paused and uncounted ones are not here.
    seats: HashMap<SeatId, Arc<Live>>,
    pending: HashMap<u64, Pending>,
    peak: u32,
    denied: u64,
    /// `peak` and `denied` as last written by `flush` (they survive restarts, lagging by at
    /// most one flush period).
    stats_written: (u32, u64),
    /// Overflow seat time used by overflow seats that no longer run, in ms.
    overflow_used_ms: u64,
    /// Seats held (live and pending) and the first instant one of them may lapse: checks
    /// answer from this in O(1) instead of scanning every seat, until a seat changes or
    /// that instant passes.
    held_until: Option<(u32, Millis)>,
}

struct Pending {
    user: Option<String>,
    expires: Millis,
    counts: bool,
    overflow: bool,
}

struct Live {
    id: SeatId,
    slot: Arc<PoolSlot>,
    user: Option<String>,
    device: Option<String>,
    client: String,
    started_at: Millis,
    /// Admitted beyond capacity: its time counts against the pool's overflow allowance while
    /// it holds a seat (a pause ends that for good: a resume is admitted within capacity).
    overflow: AtomicBool,
    last_activity: AtomicU64,
    last_heartbeat: AtomicU64,
    last_request: AtomicU64,
    last_input: AtomicU64,
    state: AtomicU8,
    ending_at: AtomicU64,
    dirty: AtomicBool,
    session: Mutex<Option<SessionKey>>,
    ended_by: Mutex<Option<String>>,
}

fn state_to_u8(s: SeatState) -> u8 {
    match s {
        SeatState::Standby => 0,
        SeatState::Active => 1,
        SeatState::Ending => 2,
        SeatState::Paused => 3,
        SeatState::Exempt => 4,
        SeatState::Named => 5,
    }
}

/// `None` for a value `state_to_u8` never gives: refused, not read as some state.
fn state_from_u8(v: u8) -> Option<SeatState> {
    match v {
        0 => Some(SeatState::Standby),
        1 => Some(SeatState::Active),
        2 => Some(SeatState::Ending),
        3 => Some(SeatState::Paused),
        4 => Some(SeatState::Exempt),
        5 => Some(SeatState::Named),
        _ => None,
    }
}

impl Live {
    fn state(&self) -> SeatState {
        // Only `set_state` and the constructors store it, always from a `SeatState`.
        state_from_u8(self.state.load(Ordering::Acquire))
            .expect("a seat's state is only stored through state_to_u8")
    }

    fn set_state(&self, s: SeatState) {
        self.state.store(state_to_u8(s), Ordering::Release);
    }

    fn overflow(&self) -> bool {
        self.overflow.load(Ordering::Acquire)
    }

    fn times(&self) -> SeatTimes {
        let ending = self.ending_at.load(Ordering::Acquire);
        SeatTimes {
            started_at: self.started_at,
            last_activity: self.last_activity.load(Ordering::Acquire),
            last_heartbeat: self.last_heartbeat.load(Ordering::Acquire),
            state: self.state(),
            ending_at: (ending > 0).then_some(ending),
        }
    }

    fn session(&self) -> Option<SessionKey> {
        *self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_session(&self, k: Option<SessionKey>) -> Option<SessionKey> {
        std::mem::replace(
            &mut *self.session.lock().unwrap_or_else(|e| e.into_inner()),
            k,
        )
    }

    fn record(&self) -> SeatRecord {
        let t = self.times();
        SeatRecord {
            id: self.id,
            pool: self.slot.key.clone(),
            user: self.user.clone(),
            device: self.device.clone(),
            client: self.client.clone(),
            session: self.session(),
            started_at: self.started_at,
            last_activity: t.last_activity,
            last_heartbeat: t.last_heartbeat,
            last_request: self.last_request.load(Ordering::Acquire),
            last_input: self.last_input.load(Ordering::Acquire),
            state: t.state,
            ending_at: t.ending_at,
            overflow: self.overflow(),
            ended_by: self
                .ended_by
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn expired(&self, now: Millis) -> Option<ReleaseReason> {
        expiry(&self.slot.spec(), &self.times(), now)
    }

    /// When a seat found expired at `now` stopped holding: its deadline, not the moment a
    /// sweep or a request noticed (tombstones and overflow time run from there).
    fn ended_at(&self, now: Millis) -> Millis {
        deadline(&self.slot.spec(), &self.times()).min(now)
    }

    /// Overflow time this seat has used by `now` (it stops counting at its deadline).
    fn overflow_ms(&self, spec: &PoolSpec, now: Millis) -> u64 {
        if !self.overflow() {
            return 0;
        }
        deadline(spec, &self.times())
            .min(now)
            .saturating_sub(self.started_at)
    }
}

fn overflow_counter(key: &PoolKey) -> String {
    format!("overflow_ms/{}/{}", key.product, key.pool)
}

fn ended_counter(id: SeatId) -> String {
    format!("ended/{id}")
}

/// What a release decided under the pool lock, for the observer once the lock is gone.
struct Released {
    record: SeatRecord,
    reason: ReleaseReason,
}

/// A queued journal write (none for a volatile store).
struct Write {
    written: Option<Written>,
}

impl Write {
    async fn durable(self) -> Result<(), LedgerError> {
        match self.written {
            Some(w) => journal::settle(w).await.map_err(LedgerError::Journal),
            None => Ok(()),
        }
    }

    /// For changes already made that a failed write cannot take back: said in the log.
    async fn logged(self) {
        if let Err(e) = self.durable().await {
            log::error!(
                "seat journal write failed; the change is live in memory but not durable: {e}"
            );
        }
    }
}

/// How a paused or standby seat fared when it was to become active.
enum Activated {
    /// Active already (or ending, uncounted): nothing to change.
    Now(SeatState),
    /// A paused seat took a seat again.
    Resumed,
    /// A paused seat with no seat free.
    Full,
    /// Released meanwhile.
    Gone,
}

impl MemoryLedger {
    /// A ledger without a journal: seats die with the process (benchmarks, unit tests).
    pub fn volatile(observer: Arc<dyn LedgerObserver>) -> Self {
        MemoryLedger {
            pools: RwLock::new(HashMap::default()),
            by_session: DashMap::new(),
            by_id: DashMap::new(),
            gone: DashMap::new(),
            ended_ids: DashMap::new(),
            journal: None,
            observer,
        }
    }

    /// Opens (or creates) the journal at `path` and restores the seats that are still valid
    /// under `pools`, in the state they were in; seats that expired while the gateway was down
    /// are released (as of when they expired), those of pools no longer configured with
    /// reason `config`.
    pub async fn open(
        path: &Path,
        pools: &[PoolSpec],
        observer: Arc<dyn LedgerObserver>,
        now: Millis,
    ) -> Result<Self, LedgerError> {
        let (journal, loaded) = Journal::open(path).map_err(LedgerError::Journal)?;
        let mut me = Self::volatile(observer);
        me.journal = Some(journal);
        me.configure(pools);
        let mut ops = Vec::new();
        for (name, v) in loaded.counters {
            let stat = ["overflow_ms", "peak", "denied"]
                .into_iter()
                .find_map(|stat| {
                    let (product, pool) = name
                        .strip_prefix(stat)?
                        .strip_prefix('/')?
                        .split_once('/')?;
                    Some((stat, PoolKey::new(product, pool)))
                });
            if let Some((stat, key)) = stat {
                if let Some(slot) = me.slot(&key) {
                    let mut st = slot.lock();
                    match stat {
                        "overflow_ms" => st.overflow_used_ms = v,
                        "peak" => st.stats_written.0 = v as u32,
                        _ => st.stats_written.1 = v,
                    }
                }
            } else if let Some(id) = name.strip_prefix("ended/") {
                let id = id.parse::<SeatId>().map_err(|_| {
                    LedgerError::Corrupt(format!("journal counter `{name}`: bad seat id"))
                })?;
                if v > now {
                    me.ended_ids.insert(id, v);
                } else {
                    ops.push(Op::Unset(name.clone()));
                }
            } else {
                return Err(LedgerError::Corrupt(format!(
                    "journal counter `{name}`: unknown name"
                )));
            }
        }
        for (key, gone, until) in loaded.gone {
            if until > now {
                me.gone.insert(key, (gone, until));
            } else {
                ops.push(Op::Forget(key));
            }
        }
        let mut dead = Vec::new();
        for rec in loaded.seats {
            let Some(slot) = me.slot(&rec.pool) else {
                dead.push((rec, ReleaseReason::Config, now, 24 * 3_600_000));
                continue;
            };
            let live = Arc::new(Live {
                id: rec.id,
                slot: slot.clone(),
                user: rec.user.clone(),
                device: rec.device.clone(),
                client: rec.client.clone(),
                started_at: rec.started_at,
                overflow: AtomicBool::new(rec.overflow),
                last_activity: AtomicU64::new(rec.last_activity),
                last_heartbeat: AtomicU64::new(rec.last_heartbeat),
                last_request: AtomicU64::new(rec.last_request),
                last_input: AtomicU64::new(rec.last_input),
                state: AtomicU8::new(state_to_u8(rec.state)),
                ending_at: AtomicU64::new(rec.ending_at.unwrap_or(0)),
                dirty: AtomicBool::new(false),
                session: Mutex::new(rec.session),
                ended_by: Mutex::new(rec.ended_by.clone()),
            });
            if let Some(reason) = live.expired(now) {
                let spec = slot.spec();
                let at = live.ended_at(now);
                let mut st = slot.lock();
                if live.overflow() && rec.state.holds_seat() {
                    st.overflow_used_ms += live.overflow_ms(&spec, now);
                    ops.push(Op::Counter(
                        overflow_counter(&slot.key),
                        st.overflow_used_ms,
                    ));
                }
                dead.push((rec, reason, at, spec.max_lifetime));
                continue;
            }
            if rec.state.holds_seat() {
                slot.lock().seats.insert(rec.id, live.clone());
            }
            if let Some(k) = rec.session {
                me.by_session.insert(k, live.clone());
            }
            me.by_id.insert(rec.id, live);
        }
        let mut released = Vec::new();
        for (rec, reason, at, ttl) in dead {
            ops.push(Op::Delete(rec.id));
            if let Some(k) = rec.session {
                let g = Gone::Released(reason);
                me.gone.insert(k, (g, at + ttl));
                ops.push(Op::Tombstone(k, g, at + ttl));
            }
            if reason == ReleaseReason::Ended {
                me.ended_ids.insert(rec.id, at + ENDED_FOR);
                ops.push(Op::Counter(ended_counter(rec.id), at + ENDED_FOR));
            }
            released.push(Released {
                record: rec,
                reason,
            });
        }
        me.submit(ops).durable().await?;
        for r in released {
            me.observer.released(&r.record, r.reason);
        }
        for slot in me.slots() {
            let mut st = slot.lock();
            st.peak = st.stats_written.0.max(st.seats.len() as u32);
            st.denied = st.stats_written.1;
        }
        Ok(me)
    }

    /// Test hook: makes every journal write fail (a full or failing disk) while set.
    #[doc(hidden)]
    pub fn fail_journal_writes(&self, on: bool) {
        if let Some(j) = &self.journal {
            j.set_failing(on);
        }
    }

    fn slot(&self, key: &PoolKey) -> Option<Arc<PoolSlot>> {
        super::pool_in(&self.pools, key)
    }

    fn slots(&self) -> Vec<Arc<PoolSlot>> {
        super::pools_by_key(&self.pools)
    }

    /// Queues a journal write. Called with the pool lock held, so writes reach the file in the
    /// order their changes were made.
    fn submit(&self, ops: Vec<Op>) -> Write {
        Write {
            written: match (&self.journal, ops.is_empty()) {
                (Some(j), false) => Some(j.submit(ops)),
                _ => None,
            },
        }
    }

    fn live_of(&self, session: &SessionKey) -> Option<Arc<Live>> {
        self.by_session.get(session).map(|l| l.clone())
    }

    fn live_by_id(&self, id: &SeatId) -> Option<Arc<Live>> {
        self.by_id.get(id).map(|l| l.clone())
    }

    /// Whether `live` is still the listed session of its id (not released meanwhile).
    fn is_current(&self, live: &Arc<Live>) -> bool {
        self.by_id
            .get(&live.id)
            .is_some_and(|v| Arc::ptr_eq(v.value(), live))
    }

    fn gone_of(&self, session: &SessionKey, now: Millis) -> Gone {
        match self.gone.get(session).map(|g| *g) {
            Some((g, until)) if until > now => g,
            _ => Gone::Unknown,
        }
    }

    fn ended(&self, id: &SeatId, now: Millis) -> bool {
        self.ended_ids.get(id).is_some_and(|u| *u > now)
    }

    /// Makes `session` lead to `live`, unless another session that still holds has it: then
    /// that one's id. The map entry is the one place where two pools racing for one cookie
    /// meet, so one cookie never holds two sessions.
    fn claim_session(&self, session: SessionKey, live: &Arc<Live>, now: Millis) -> Option<SeatId> {
        match self.by_session.entry(session) {
            Entry::Occupied(mut e) => {
                let other = e.get();
                if !Arc::ptr_eq(other, live)
                    && other.expired(now).is_none()
                    && self.is_current(other)
                {
                    return Some(other.id);
                }
                e.insert(live.clone());
                None
            }
            Entry::Vacant(v) => {
                v.insert(live.clone());
                None
            }
        }
    }

    fn remember_gone(&self, key: SessionKey, gone: Gone, until: Millis, ops: &mut Vec<Op>) {
        self.gone.insert(key, (gone, until));
        ops.push(Op::Tombstone(key, gone, until));
    }

    /// Releases `live` as of `at`; the caller holds its pool's lock (`st`). `None` when it was
    /// released already.
    fn release_locked(
        &self,
        st: &mut PoolState,
        live: &Arc<Live>,
        reason: ReleaseReason,
        at: Millis,
        ops: &mut Vec<Op>,
    ) -> Option<Released> {
        self.by_id
            .remove_if(&live.id, |_, v| Arc::ptr_eq(v, live))?;
        let spec = live.slot.spec();
        if st.seats.remove(&live.id).is_some() {
            if live.overflow() {
                st.overflow_used_ms += live.overflow_ms(&spec, at);
                ops.push(Op::Counter(
                    overflow_counter(&live.slot.key),
                    st.overflow_used_ms,
                ));
            }
            Self::promote_overflow(st, &live.slot.key, &spec, at, ops);
        }
        let record = live.record();
        ops.push(Op::Delete(live.id));
        if let Some(k) = record.session {
            // A cookie that leads to another session meanwhile keeps it.
            if self
                .by_session
                .remove_if(&k, |_, v| Arc::ptr_eq(v, live))
                .is_some()
            {
                self.remember_gone(k, Gone::Released(reason), at + spec.max_lifetime, ops);
            }
        }
        if reason == ReleaseReason::Ended {
            self.ended_ids.insert(live.id, at + ENDED_FOR);
            ops.push(Op::Counter(ended_counter(live.id), at + ENDED_FOR));
        }
        Some(Released { record, reason })
    }

    /// A seat that left made room: overflow seats beyond what the pool is still over capacity
    /// become ordinary seats (oldest first), so overflow time is time spent over capacity, and
    /// a spent allowance never ends a seat that fits.
    fn promote_overflow(
        st: &mut PoolState,
        key: &PoolKey,
        spec: &PoolSpec,
        at: Millis,
        ops: &mut Vec<Op>,
    ) {
        if spec.overflow_ms.is_none() {
            return;
        }
        let holds = |l: &&Arc<Live>| expiry(spec, &l.times(), at).is_none();
        let mut running: Vec<Arc<Live>> = st
            .seats
            .values()
            .filter(|l| l.overflow())
            .filter(holds)
            .cloned()
            .collect();
        if running.is_empty() {
            return;
        }
        let held = st.seats.values().filter(holds).count()
            + st.pending
                .values()
                .filter(|p| p.counts && p.expires > at)
                .count();
        let over = held.saturating_sub(spec.capacity(at) as usize);
        if running.len() <= over {
            return;
        }
        running.sort_by_key(|l| (l.started_at, l.id));
        let promote = running.len() - over;
        for l in running.into_iter().take(promote) {
            st.overflow_used_ms += l.overflow_ms(spec, at);
            l.overflow.store(false, Ordering::Release);
            ops.push(Op::Put(Box::new(l.record())));
        }
        ops.push(Op::Counter(overflow_counter(key), st.overflow_used_ms));
    }

    /// Releases `live` for `reason` as of `at` and tells the observer.
    async fn release_at(
        &self,
        live: &Arc<Live>,
        reason: ReleaseReason,
        at: Millis,
    ) -> Option<SeatRecord> {
        let mut ops = Vec::new();
        let (done, write) = {
            let mut st = live.slot.lock();
            let done = self.release_locked(&mut st, live, reason, at, &mut ops);
            (done, self.submit(ops))
        };
        write.logged().await;
        let done = done?;
        self.observer.released(&done.record, done.reason);
        Some(done.record)
    }

    /// Releases a seat found expired at `now`, as of the instant it expired.
    async fn expire(&self, live: &Arc<Live>, reason: ReleaseReason, now: Millis) {
        self.release_at(live, reason, live.ended_at(now)).await;
    }

    /// Releases seats found expired while their pool was locked.
    async fn expire_all(&self, lives: Vec<(Arc<Live>, ReleaseReason)>, now: Millis) {
        for (live, reason) in lives {
            self.expire(&live, reason, now).await;
        }
    }

    /// Holders of a pool at `now`, expired seats and lapsed leases excluded (the seats are
    /// returned for release).
    fn holders<'a>(
        st: &'a PoolState,
        spec: &PoolSpec,
        now: Millis,
    ) -> (Holders<'a>, Vec<(Arc<Live>, ReleaseReason)>) {
        let mut users = Vec::with_capacity(st.seats.len() + st.pending.len());
        let mut expired = Vec::new();
        for live in st.seats.values() {
            match expiry(spec, &live.times(), now) {
                Some(r) => expired.push((live.clone(), r)),
                None => users.push(live.user.as_deref()),
            }
        }
        for p in st.pending.values() {
            if p.counts && p.expires > now {
                users.push(p.user.as_deref());
            }
        }
        (Holders::new(users), expired)
    }

    /// A seat was taken: the peak counts what holds now (seats past their deadline that no
    /// sweep has released yet do not).
    fn bump_peak(st: &mut PoolState, spec: &PoolSpec, now: Millis) {
        let (holders, _) = Self::holders(st, spec, now);
        let n = holders.users.len() as u32;
        st.peak = st.peak.max(n);
    }

    fn overflow_left(st: &PoolState, spec: &PoolSpec, now: Millis) -> Option<u64> {
        let allowance = spec.overflow_ms?;
        let running: u64 = st.seats.values().map(|l| l.overflow_ms(spec, now)).sum();
        Some(allowance.saturating_sub(st.overflow_used_ms + running))
    }

    fn new_live(
        slot: &Arc<PoolSlot>,
        claim: &Claim,
        session: SessionKey,
        state: SeatState,
        overflow: bool,
        now: Millis,
    ) -> Arc<Live> {
        Arc::new(Live {
            id: SeatId::random(),
            slot: slot.clone(),
            user: claim.user.clone(),
            device: claim.device.clone(),
            client: claim.client.clone(),
            started_at: now,
            overflow: AtomicBool::new(overflow),
            last_activity: AtomicU64::new(now),
            last_heartbeat: AtomicU64::new(0),
            last_request: AtomicU64::new(now),
            last_input: AtomicU64::new(0),
            state: AtomicU8::new(state_to_u8(state)),
            ending_at: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            session: Mutex::new(Some(session)),
            ended_by: Mutex::new(None),
        })
    }

    fn reusable(st: &PoolState, spec: &PoolSpec, claim: &Claim, now: Millis) -> Option<SeatId> {
        let user = claim.user.as_deref()?;
        let same_device = |l: &Live| match spec.seats_per {
            SeatsPer::UserDevice => claim.device.is_some() && l.device == claim.device,
            SeatsPer::User => true,
            SeatsPer::Session => false,
        };
        st.seats
            .values()
            .filter(|l| l.user.as_deref() == Some(user) && same_device(l))
            .filter(|l| matches!(l.state(), SeatState::Active | SeatState::Standby))
            .filter(|l| expiry(spec, &l.times(), now).is_none())
            .max_by_key(|l| l.last_activity.load(Ordering::Relaxed))
            .map(|l| l.id)
    }

    /// A cookie that leads to a session that expired is released before it is used again.
    async fn clear_expired(&self, session: &SessionKey, now: Millis) {
        if let Some(old) = self.live_of(session) {
            if let Some(r) = old.expired(now) {
                self.expire(&old, r, now).await;
            }
        }
    }

    /// Moves `live` from cookie `from` to `to` (the app set a new value, or a login reused the
    /// seat): `from` is refused from then on. The caller holds the pool lock.
    fn move_session(
        &self,
        live: &Arc<Live>,
        from: Option<SessionKey>,
        to: SessionKey,
        now: Millis,
        ops: &mut Vec<Op>,
    ) {
        live.set_session(Some(to));
        self.gone.remove(&to);
        ops.push(Op::Forget(to));
        if let Some(old) = from.filter(|o| *o != to) {
            self.by_session.remove_if(&old, |_, v| Arc::ptr_eq(v, live));
            let until = now + live.slot.spec().max_lifetime;
            self.remember_gone(old, Gone::Released(ReleaseReason::Replaced), until, ops);
        }
    }

    /// Takes a move back whose journal write failed.
    fn unmove_session(&self, live: &Arc<Live>, from: Option<SessionKey>, to: SessionKey) {
        let _st = live.slot.lock();
        live.set_session(from);
        self.by_session.remove_if(&to, |_, v| Arc::ptr_eq(v, live));
        if let Some(old) = from {
            self.gone.remove(&old);
            self.by_session.insert(old, live.clone());
        }
    }

    /// A paused or standby seat becomes active (a request, or a resume asked by its owner).
    /// Decided under the pool lock, so two requests of one paused session both get in.
    async fn activate(&self, live: &Arc<Live>, now: Millis) -> Activated {
        let spec = live.slot.spec();
        let (outcome, expired, write) = {
            let mut st = live.slot.lock();
            if !self.is_current(live) {
                return Activated::Gone;
            }
            match live.state() {
                SeatState::Standby => {
                    live.set_state(SeatState::Active);
                    live.last_activity.store(now, Ordering::Release);
                    let w = self.submit(vec![Op::Put(Box::new(live.record()))]);
                    (Activated::Now(SeatState::Active), Vec::new(), w)
                }
                SeatState::Paused => {
                    let (holders, expired) = Self::holders(&st, &spec, now);
                    if matches!(
                        admission::admit(&spec, &holders, live.user.as_deref(), now, None),
                        Admit::Deny(_)
                    ) {
                        st.denied += 1;
                        (Activated::Full, expired, Write { written: None })
                    } else {
                        live.last_activity.store(now, Ordering::Release);
                        live.set_state(SeatState::Active);
                        st.seats.insert(live.id, live.clone());
                        Self::bump_peak(&mut st, &spec, now);
                        let w = self.submit(vec![Op::Put(Box::new(live.record()))]);
                        (Activated::Resumed, expired, w)
                    }
                }
                s => (Activated::Now(s), Vec::new(), Write { written: None }),
            }
        };
        write.logged().await;
        self.expire_all(expired, now).await;
        if let Activated::Resumed = outcome {
            self.observer.resumed(&live.record());
        }
        outcome
    }
}

impl MemoryLedger {
    /// `reserve` with the reservation's lifetime given (`None`: the pool's standby timeout).
    async fn reserve_for(
        &self,
        claim: &Claim,
        ttl: Option<Millis>,
        now: Millis,
    ) -> Result<Reservation, LedgerError> {
        let slot = self
            .slot(&claim.pool)
            .ok_or_else(|| LedgerError::UnknownPool(claim.pool.clone()))?;
        let spec = slot.spec();
        let ttl = ttl.unwrap_or(spec.standby_timeout);
        let (outcome, expired) = {
            let mut st = slot.lock();
            st.pending.retain(|_, p| p.expires > now);
            if let Some(p) = st.pending.get(&claim.lease_id) {
                let lease = Lease {
                    id: claim.lease_id,
                    pool: claim.pool.clone(),
                    reuse: None,
                    overflow: p.overflow,
                };
                return Ok(Reservation::Granted(lease));
            }
            if let Some(id) = Self::reusable(&st, &spec, claim, now) {
                let pending = Pending {
                    user: claim.user.clone(),
                    expires: now + ttl,
                    counts: false,
                    overflow: false,
                };
                st.pending.insert(claim.lease_id, pending);
                let lease = Lease {
                    id: claim.lease_id,
                    pool: claim.pool.clone(),
                    reuse: Some(id),
                    overflow: false,
                };
                return Ok(Reservation::Granted(lease));
            }
            let (holders, expired) = Self::holders(&st, &spec, now);
            let in_use = holders.users.len() as u32;
            let overflow_left = Self::overflow_left(&st, &spec, now);
            let outcome = match admission::admit(
                &spec,
                &holders,
                claim.user.as_deref(),
                now,
                overflow_left,
            ) {
                Admit::Deny(full) => {
                    st.denied += 1;
                    Reservation::Full(full)
                }
                admit => {
                    let overflow = admit == Admit::Overflow;
                    let pending = Pending {
                        user: claim.user.clone(),
                        expires: now + ttl,
                        counts: true,
                        overflow,
                    };
                    st.pending.insert(claim.lease_id, pending);
                    st.peak = st.peak.max(in_use + 1);
                    Reservation::Granted(Lease {
                        id: claim.lease_id,
                        pool: claim.pool.clone(),
                        reuse: None,
                        overflow,
                    })
                }
            };
            (outcome, expired)
        };
        self.expire_all(expired, now).await;
        Ok(outcome)
    }

    /// Ends the overflow seats of pools whose allowance is spent, as an admin end would.
    async fn stop_spent_overflow(&self, now: Millis) {
        for slot in self.slots() {
            let spec = slot.spec();
            let Some(allowance) = spec.overflow_ms else {
                continue;
            };
            let mut ops = Vec::new();
            let (released, write) = {
                let mut st = slot.lock();
                if Self::overflow_left(&st, &spec, now) != Some(0) {
                    continue;
                }
                let running: Vec<Arc<Live>> = st
                    .seats
                    .values()
                    .filter(|l| l.overflow() && expiry(&spec, &l.times(), now).is_none())
                    .cloned()
                    .collect();
                let mut released = Vec::new();
                for live in running {
                    *live.ended_by.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(OVERFLOW_END.to_string());
                    released.extend(self.release_locked(
                        &mut st,
                        &live,
                        ReleaseReason::Ended,
                        now,
                        &mut ops,
                    ));
                }
                if st.overflow_used_ms > allowance {
                    // They stop at the sweep after the allowance ran out; what they ran past
                    // it is not charged.
                    st.overflow_used_ms = allowance;
                    ops.push(Op::Counter(overflow_counter(&slot.key), allowance));
                }
                (released, self.submit(ops))
            };
            write.logged().await;
            for r in released {
                log::info!(
                    "seat {} ended: the overflow allowance of {} is spent",
                    r.record.id,
                    slot.key
                );
                self.observer.released(&r.record, r.reason);
            }
        }
    }
}

/// One process, one store: nothing to share with, so the caller keeps these values itself.
#[async_trait]
impl SharedState for MemoryLedger {
    async fn shared_once(
        &self,
        _name: &str,
        _value: &str,
        _ttl_ms: Option<Millis>,
    ) -> Result<Shared<String>, LedgerError> {
        Ok(Shared::Local)
    }

    async fn shared_swap(
        &self,
        _name: &str,
        _value: Option<&str>,
        _ttl_ms: Millis,
    ) -> Result<Shared<Option<String>>, LedgerError> {
        Ok(Shared::Local)
    }
}

#[async_trait]
impl SeatLedger for MemoryLedger {
    fn configure(&self, pools: &[PoolSpec]) {
        let mut map = self.pools.write().unwrap_or_else(|e| e.into_inner());
        for spec in pools {
            match map.get(&spec.key) {
                Some(slot) => {
                    *slot.spec.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(spec.clone());
                    drop(slot.lock());
                }
                None => {
                    map.insert(
                        spec.key.clone(),
                        Arc::new(PoolSlot {
                            key: spec.key.clone(),
                            spec: RwLock::new(Arc::new(spec.clone())),
                            state: Mutex::new(PoolState::default()),
                        }),
                    );
                }
            }
        }
    }

    async fn reserve(&self, claim: &Claim, now: Millis) -> Result<Reservation, LedgerError> {
        self.reserve_for(claim, None, now).await
    }

    async fn hold(
        &self,
        claim: &Claim,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Reservation, LedgerError> {
        self.reserve_for(claim, Some(ttl_ms), now).await
    }

    /// A cookie that already leads to a live session (of any pool, in any state) keeps it: the
    /// lease is dropped and that session's id returned, so concurrent requests with one
    /// adopted cookie never take two seats. A lease that lapsed is admitted afresh
    /// (`LeaseLost` when the pool is full). Not done unless written: a failed journal write
    /// takes the seat back and answers `Journal`.
    async fn commit(
        &self,
        lease: &Lease,
        claim: &Claim,
        session: SessionKey,
        now: Millis,
    ) -> Result<SeatId, LedgerError> {
        let slot = self
            .slot(&lease.pool)
            .ok_or_else(|| LedgerError::UnknownPool(lease.pool.clone()))?;
        let spec = slot.spec();
        self.clear_expired(&session, now).await;
        let mut ops = Vec::new();
        let (live, moved, expired, write) = {
            let mut st = slot.lock();
            let pending = st.pending.remove(&lease.id);
            if let Some(l) = self.live_of(&session) {
                if l.expired(now).is_none() && self.is_current(&l) {
                    return Ok(l.id);
                }
            }
            let reuse = lease
                .reuse
                .and_then(|id| st.seats.get(&id).cloned())
                .filter(|l| {
                    expiry(&spec, &l.times(), now).is_none()
                        && matches!(l.state(), SeatState::Active | SeatState::Standby)
                });
            let mut expired = Vec::new();
            let (live, moved) = if let Some(live) = reuse {
                if let Some(other) = self.claim_session(session, &live, now) {
                    return Ok(other);
                }
                let old = live.session();
                live.last_activity.store(now, Ordering::Release);
                self.move_session(&live, old, session, now, &mut ops);
                (Some(live), Some(old))
            } else {
                let mut lost = false;
                // A lease that lapsed no longer counts (its seat may have gone to another).
                let fresh = pending.filter(|p| p.expires > now);
                let mut overflow = fresh.as_ref().is_some_and(|p| p.overflow);
                if overflow {
                    // Reserved beyond capacity, but a seat left meanwhile: it fits now.
                    let (holders, _) = Self::holders(&st, &spec, now);
                    overflow = holders.users.len() as u32 >= spec.capacity(now);
                }
                if !fresh.as_ref().is_some_and(|p| p.counts) {
                    let (holders, exp) = Self::holders(&st, &spec, now);
                    expired = exp;
                    let left = Self::overflow_left(&st, &spec, now);
                    match admission::admit(&spec, &holders, claim.user.as_deref(), now, left) {
                        Admit::Deny(_) => lost = true,
                        a => overflow = a == Admit::Overflow,
                    }
                }
                if lost {
                    (None, None)
                } else {
                    let live =
                        Self::new_live(&slot, claim, session, SeatState::Standby, overflow, now);
                    if let Some(other) = self.claim_session(session, &live, now) {
                        return Ok(other);
                    }
                    st.seats.insert(live.id, live.clone());
                    self.by_id.insert(live.id, live.clone());
                    Self::bump_peak(&mut st, &spec, now);
                    self.gone.remove(&session);
                    ops.push(Op::Forget(session));
                    (Some(live), None)
                }
            };
            let write = match &live {
                Some(l) => {
                    ops.push(Op::Put(Box::new(l.record())));
                    self.submit(ops)
                }
                None => Write { written: None },
            };
            (live, moved, expired, write)
        };
        self.expire_all(expired, now).await;
        let Some(live) = live else {
            return Err(LedgerError::LeaseLost(lease.id));
        };
        if let Err(e) = write.durable().await {
            match moved {
                Some(old) => self.unmove_session(&live, old, session),
                None => {
                    slot.lock().seats.remove(&live.id);
                    self.by_id.remove_if(&live.id, |_, v| Arc::ptr_eq(v, &live));
                    self.by_session
                        .remove_if(&session, |_, v| Arc::ptr_eq(v, &live));
                }
            }
            return Err(e);
        }
        Ok(live.id)
    }

    async fn cancel(&self, lease: &Lease) {
        if let Some(slot) = self.slot(&lease.pool) {
            slot.lock().pending.remove(&lease.id);
        }
    }

    async fn admit_uncounted(
        &self,
        claim: &Claim,
        state: SeatState,
        session: SessionKey,
        now: Millis,
    ) -> Result<SeatId, LedgerError> {
        if !state.uncounted() {
            return Err(LedgerError::Unavailable(format!(
                "admit_uncounted with state {}",
                state.as_str()
            )));
        }
        let slot = self
            .slot(&claim.pool)
            .ok_or_else(|| LedgerError::UnknownPool(claim.pool.clone()))?;
        self.clear_expired(&session, now).await;
        let (live, write) = {
            let _st = slot.lock();
            let live = Self::new_live(&slot, claim, session, state, false, now);
            if let Some(other) = self.claim_session(session, &live, now) {
                return Ok(other);
            }
            self.by_id.insert(live.id, live.clone());
            self.gone.remove(&session);
            let ops = vec![Op::Forget(session), Op::Put(Box::new(live.record()))];
            (live, self.submit(ops))
        };
        if let Err(e) = write.durable().await {
            let _st = slot.lock();
            self.by_id.remove_if(&live.id, |_, v| Arc::ptr_eq(v, &live));
            self.by_session
                .remove_if(&session, |_, v| Arc::ptr_eq(v, &live));
            return Err(e);
        }
        Ok(live.id)
    }

    /// When `new` already leads to a live session of its own, that one stays and the seat of
    /// `old` is released (`Replaced`): the answer is then the id of `new`'s session.
    async fn rekey(
        &self,
        old: &SessionKey,
        new: SessionKey,
        now: Millis,
    ) -> Result<Option<SeatId>, LedgerError> {
        let Some(live) = self.live_of(old) else {
            return Ok(None);
        };
        if let Some(r) = live.expired(now) {
            self.expire(&live, r, now).await;
            return Ok(None);
        }
        if *old == new {
            return Ok(Some(live.id));
        }
        self.clear_expired(&new, now).await;
        let mut ops = Vec::new();
        let (outcome, moved, replaced, write) = {
            let mut st = live.slot.lock();
            // Released, or moved to another cookie meanwhile: `old` holds nothing now.
            if !self.is_current(&live) || live.session() != Some(*old) {
                return Ok(None);
            }
            match self.claim_session(new, &live, now) {
                Some(other) => {
                    let r =
                        self.release_locked(&mut st, &live, ReleaseReason::Replaced, now, &mut ops);
                    (other, false, r, self.submit(ops))
                }
                None => {
                    self.move_session(&live, Some(*old), new, now, &mut ops);
                    ops.push(Op::Put(Box::new(live.record())));
                    (live.id, true, None, self.submit(ops))
                }
            }
        };
        if !moved {
            write.logged().await;
            if let Some(r) = replaced {
                self.observer.released(&r.record, r.reason);
            }
            return Ok(Some(outcome));
        }
        if let Err(e) = write.durable().await {
            self.unmove_session(&live, Some(*old), new);
            return Err(e);
        }
        Ok(Some(outcome))
    }

    /// Ended means what `end` would answer `AlreadyEnded` for (an ending seat is `Live` with
    /// state `Ending`); a seat past its deadline that no sweep has released yet is `Unknown`,
    /// or `Ended` when the deadline was its end.
    async fn lookup(&self, id: SeatId, now: Millis) -> Result<Lookup, LedgerError> {
        Ok(match self.live_by_id(&id) {
            Some(l) => match l.expired(now) {
                None => Lookup::Live(l.record()),
                Some(ReleaseReason::Ended) => Lookup::Ended,
                Some(_) => Lookup::Unknown,
            },
            None if self.ended(&id, now) => Lookup::Ended,
            None => Lookup::Unknown,
        })
    }

    async fn touch_as(
        &self,
        session: &SessionKey,
        activity: bool,
        now: Millis,
    ) -> Result<Touch, LedgerError> {
        let Some(live) = self.live_of(session) else {
            return Ok(Touch::Gone(self.gone_of(session, now)));
        };
        if let Some(reason) = live.expired(now) {
            self.expire(&live, reason, now).await;
            return Ok(Touch::Gone(Gone::Released(reason)));
        }
        let mut state = live.state();
        if matches!(state, SeatState::Paused | SeatState::Standby) {
            state = match self.activate(&live, now).await {
                Activated::Now(s) => s,
                Activated::Resumed => SeatState::Active,
                Activated::Full => return Ok(Touch::Gone(Gone::Released(ReleaseReason::Paused))),
                Activated::Gone => return Ok(Touch::Gone(self.gone_of(session, now))),
            };
        }
        if activity {
            live.last_activity.store(now, Ordering::Release);
        }
        live.last_request.fetch_max(now, Ordering::AcqRel);
        live.dirty.store(true, Ordering::Release);
        let ending = live.ending_at.load(Ordering::Acquire);
        Ok(Touch::Held {
            id: live.id,
            pool: live.slot.key.clone(),
            state,
            ending_at: (ending > 0).then_some(ending),
        })
    }

    async fn beat(
        &self,
        session: &SessionKey,
        input: bool,
        now: Millis,
    ) -> Result<Option<Millis>, LedgerError> {
        let Some(live) = self.live_of(session) else {
            return Ok(None);
        };
        if let Some(reason) = live.expired(now) {
            self.expire(&live, reason, now).await;
            return Ok(None);
        }
        if live.state() == SeatState::Paused {
            return Ok(None);
        }
        if live.last_heartbeat.swap(now, Ordering::AcqRel) == 0 {
            // Presence now applies to this seat: its deadline may come sooner.
            drop(live.slot.lock());
        }
        if input {
            live.last_activity.fetch_max(now, Ordering::AcqRel);
            live.last_input.fetch_max(now, Ordering::AcqRel);
        }
        live.dirty.store(true, Ordering::Release);
        Ok(Some(live.last_activity.load(Ordering::Acquire)))
    }

    /// A session past its deadline is released for what ended it, and the answer is `None`:
    /// it held nothing at `now`.
    async fn release(
        &self,
        session: &SessionKey,
        reason: ReleaseReason,
        now: Millis,
    ) -> Result<Option<SeatRecord>, LedgerError> {
        let Some(live) = self.live_of(session) else {
            return Ok(None);
        };
        if let Some(r) = live.expired(now) {
            self.expire(&live, r, now).await;
            return Ok(None);
        }
        Ok(self.release_at(&live, reason, now).await)
    }

    async fn end(
        &self,
        ids: &[SeatId],
        grace_ms: Millis,
        by: &str,
        now: Millis,
    ) -> Result<Vec<(SeatId, EndOutcome)>, LedgerError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let gone = |me: &Self| {
                if me.ended(id, now) {
                    EndOutcome::AlreadyEnded
                } else {
                    EndOutcome::NotFound
                }
            };
            let Some(live) = self.live_by_id(id) else {
                out.push((*id, gone(self)));
                continue;
            };
            if let Some(r) = live.expired(now) {
                self.expire(&live, r, now).await;
                out.push((*id, gone(self)));
                continue;
            }
            let mut ops = Vec::new();
            let (outcome, released, write) = {
                let mut st = live.slot.lock();
                if !self.is_current(&live) {
                    (gone(self), None, Write { written: None })
                } else if live.state() == SeatState::Ending
                    || live.ending_at.load(Ordering::Acquire) > 0
                {
                    (EndOutcome::AlreadyEnded, None, Write { written: None })
                } else {
                    *live.ended_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(by.to_string());
                    if grace_ms == 0 || live.state() == SeatState::Paused {
                        let r = self.release_locked(
                            &mut st,
                            &live,
                            ReleaseReason::Ended,
                            now,
                            &mut ops,
                        );
                        (EndOutcome::Ending { at: now }, r, self.submit(ops))
                    } else {
                        let at = now + grace_ms;
                        live.ending_at.store(at, Ordering::Release);
                        if !live.state().uncounted() {
                            // Uncounted sessions keep their state: ending must not count them.
                            live.set_state(SeatState::Ending);
                        }
                        ops.push(Op::Put(Box::new(live.record())));
                        (EndOutcome::Ending { at }, None, self.submit(ops))
                    }
                }
            };
            write.logged().await;
            if let Some(r) = released {
                self.observer.released(&r.record, r.reason);
            }
            out.push((*id, outcome));
        }
        Ok(out)
    }

    async fn pause(&self, id: SeatId, now: Millis) -> Result<PauseOutcome, LedgerError> {
        let Some(live) = self.live_by_id(&id) else {
            return Ok(PauseOutcome::NotFound);
        };
        if let Some(r) = live.expired(now) {
            self.expire(&live, r, now).await;
            return Ok(PauseOutcome::NotFound);
        }
        let spec = live.slot.spec();
        let (rec, write) = {
            let mut st = live.slot.lock();
            if !self.is_current(&live) {
                return Ok(PauseOutcome::NotFound);
            }
            if !matches!(live.state(), SeatState::Active | SeatState::Standby) {
                return Ok(PauseOutcome::WrongState);
            }
            st.seats.remove(&id);
            let mut ops = Vec::new();
            if live.overflow() {
                // Its overflow time ends here; a resume is admitted within capacity.
                st.overflow_used_ms += live.overflow_ms(&spec, now);
                live.overflow.store(false, Ordering::Release);
                ops.push(Op::Counter(
                    overflow_counter(&live.slot.key),
                    st.overflow_used_ms,
                ));
            }
            live.set_state(SeatState::Paused);
            Self::promote_overflow(&mut st, &live.slot.key, &spec, now, &mut ops);
            let rec = live.record();
            ops.push(Op::Put(Box::new(rec.clone())));
            (rec, self.submit(ops))
        };
        write.logged().await;
        self.observer.released(&rec, ReleaseReason::Paused);
        Ok(PauseOutcome::Done)
    }

    async fn resume(&self, id: SeatId, now: Millis) -> Result<PauseOutcome, LedgerError> {
        let Some(live) = self.live_by_id(&id) else {
            return Ok(PauseOutcome::NotFound);
        };
        if let Some(r) = live.expired(now) {
            self.expire(&live, r, now).await;
            return Ok(PauseOutcome::NotFound);
        }
        if live.state() != SeatState::Paused {
            return Ok(PauseOutcome::WrongState);
        }
        Ok(match self.activate(&live, now).await {
            Activated::Resumed => PauseOutcome::Done,
            // Another request resumed it first.
            Activated::Now(_) => PauseOutcome::WrongState,
            Activated::Full => PauseOutcome::Full,
            Activated::Gone => PauseOutcome::NotFound,
        })
    }

    async fn sessions(&self, now: Millis) -> Result<Vec<SeatRecord>, LedgerError> {
        let mut v: Vec<SeatRecord> = self
            .by_id
            .iter()
            .filter(|e| e.value().expired(now).is_none())
            .map(|e| e.value().record())
            .collect();
        v.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn usage(&self, now: Millis) -> Result<Vec<PoolUsage>, LedgerError> {
        let mut out = Vec::new();
        for slot in self.slots() {
            let spec = slot.spec();
            let st = slot.view();
            let (mut standby, mut ending, mut live) = (0u32, 0u32, 0u32);
            let mut running_overflow = 0u64;
            for l in st.seats.values() {
                running_overflow += l.overflow_ms(&spec, now);
                if expiry(&spec, &l.times(), now).is_some() {
                    continue;
                }
                live += 1;
                match l.state() {
                    SeatState::Standby => standby += 1,
                    SeatState::Ending => ending += 1,
                    _ => {}
                }
            }
            let pending = st
                .pending
                .values()
                .filter(|p| p.counts && p.expires > now)
                .count() as u32;
            let capacity = spec.capacity(now);
            let in_use = live + pending;
            let mut used = st.overflow_used_ms + running_overflow;
            if let Some(allowance) = spec.overflow_ms {
                used = used.min(allowance);
            }
            out.push(PoolUsage {
                product: slot.key.product.clone(),
                pool: slot.key.pool.clone(),
                capacity,
                in_use,
                available: capacity.saturating_sub(in_use),
                peak: st.peak,
                denied: st.denied,
                standby: standby + pending,
                ending,
                overflow_used_seconds: used / 1000,
            });
        }
        Ok(out)
    }

    fn available(&self, pool: &PoolKey, now: Millis) -> Option<u32> {
        let slot = self.slot(pool)?;
        let spec = slot.spec();
        let mut st = slot.view();
        let held = match st.held_until {
            Some((held, until)) if now < until => held,
            _ => {
                let mut until = Millis::MAX;
                let mut held = 0u32;
                for l in st.seats.values() {
                    let t = l.times();
                    if expiry(&spec, &t, now).is_none() {
                        held += 1;
                        until = until.min(deadline(&spec, &t));
                    }
                }
                for p in st.pending.values().filter(|p| p.counts && p.expires > now) {
                    held += 1;
                    until = until.min(p.expires);
                }
                st.held_until = Some((held, until));
                held
            }
        };
        Some(spec.capacity(now).saturating_sub(held))
    }

    /// Releases whatever expired, then ends the overflow seats of pools whose allowance is
    /// spent, and forgets tombstones and ended ids whose time is up.
    async fn sweep(&self, now: Millis) -> Result<usize, LedgerError> {
        let expired: Vec<(Arc<Live>, ReleaseReason)> = self
            .by_id
            .iter()
            .filter_map(|e| e.value().expired(now).map(|r| (e.value().clone(), r)))
            .collect();
        let n = expired.len();
        self.expire_all(expired, now).await;
        self.stop_spent_overflow(now).await;
        for slot in self.slots() {
            slot.lock().pending.retain(|_, p| p.expires > now);
        }
        let mut forget = Vec::new();
        self.gone.retain(|k, (_, until)| {
            let keep = *until > now;
            if !keep {
                forget.push(Op::Forget(*k));
            }
            keep
        });
        self.ended_ids.retain(|id, until| {
            let keep = *until > now;
            if !keep {
                forget.push(Op::Unset(ended_counter(*id)));
            }
            keep
        });
        if let (Some(j), false) = (&self.journal, forget.is_empty()) {
            j.enqueue(forget);
        }
        Ok(n)
    }

    async fn flush(&self) -> Result<(), LedgerError> {
        let mut ops: Vec<Op> = self
            .by_id
            .iter()
            .filter(|e| e.value().dirty.swap(false, Ordering::AcqRel))
            .flat_map(|e| {
                let l = e.value();
                [
                    Op::Activity(
                        l.id,
                        l.last_activity.load(Ordering::Acquire),
                        l.last_heartbeat.load(Ordering::Acquire),
                    ),
                    Op::Input(
                        l.id,
                        l.last_request.load(Ordering::Acquire),
                        l.last_input.load(Ordering::Acquire),
                    ),
                ]
            })
            .collect();
        for slot in self.slots() {
            let mut st = slot.view();
            if st.stats_written != (st.peak, st.denied) {
                st.stats_written = (st.peak, st.denied);
                let k = &slot.key;
                ops.push(Op::Counter(
                    format!("peak/{}/{}", k.product, k.pool),
                    st.peak as u64,
                ));
                ops.push(Op::Counter(
                    format!("denied/{}/{}", k.product, k.pool),
                    st.denied,
                ));
            }
        }
        if let (Some(j), false) = (&self.journal, ops.is_empty()) {
            j.commit(ops).await.map_err(LedgerError::Journal)?;
        }
        Ok(())
    }

    /// `false` while the last journal write failed and none has succeeded since: a probe
    /// write first, so a disk that fails is seen even when nothing else is written.
    async fn healthy(&self) -> bool {
        match &self.journal {
            Some(j) => j.commit(Vec::new()).await.is_ok() && j.error().is_none(),
            None => true,
        }
    }

    fn describe(&self) -> serde_json::Value {
        let error = self.journal.as_ref().and_then(|j| j.error());
        serde_json::json!({
            "kind": "embedded",
            "up": error.is_none(),
            "write_error": error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Grant, SeatsPer};
    use crate::ledger::{Claim, NoObserver};

    #[test]
    fn a_state_byte_reads_back_and_an_unknown_one_is_refused() {
        for st in [
            SeatState::Standby,
            SeatState::Active,
            SeatState::Ending,
            SeatState::Paused,
            SeatState::Exempt,
            SeatState::Named,
        ] {
            assert_eq!(state_from_u8(state_to_u8(st)), Some(st));
        }
        assert_eq!(state_from_u8(6), None);
        assert_eq!(state_from_u8(255), None);
    }

    /// A journal whose rows this gateway cannot read is refused at open, naming the row.
    #[tokio::test]
    async fn an_unreadable_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, fn(&redb::WriteTransaction)); 4] = [
            ("seat record 7", |w| {
                let t = redb::TableDefinition::<u64, &[u8]>::new("seats");
                w.open_table(t)
                    .unwrap()
                    .insert(7, &b"{\"state\":\"actve\"}"[..])
                    .unwrap();
            }),
            ("released session", |w| {
                let t = redb::TableDefinition::<&[u8], &[u8]>::new("gone");
                let v = br#"[{"released":"tired"},1]"#;
                w.open_table(t)
                    .unwrap()
                    .insert(&[1u8; 16][..], &v[..])
                    .unwrap();
            }),
            ("journal counter `ended/xyz`", |w| {
                let t = redb::TableDefinition::<&str, u64>::new("meta");
                w.open_table(t).unwrap().insert("ended/xyz", 1).unwrap();
            }),
            ("journal counter `seats_sold`", |w| {
                let t = redb::TableDefinition::<&str, u64>::new("meta");
                w.open_table(t).unwrap().insert("seats_sold", 1).unwrap();
            }),
        ];
        for (i, (says, write)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("j{i}.redb"));
            {
                let db = redb::Database::create(&path).unwrap();
                let w = db.begin_write().unwrap();
                write(&w);
                w.commit().unwrap();
            }
            let Err(e) = MemoryLedger::open(&path, &[], Arc::new(NoObserver), 10).await else {
                panic!("opened a journal with an unreadable row ({says})");
            };
            assert!(e.to_string().contains(says), "{e} should name {says}");
        }
    }

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
}
