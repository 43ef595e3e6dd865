//! The embedded store: seats in memory, every admission and release journaled to redb.
//!
//! Concurrency: touching a seat (every request) is a lookup in a sharded `DashMap` plus
//! atomic stores on the seat; it takes no global lock and no pool lock. Admissions take the
//! pool's `std::sync::Mutex` for a few microseconds (count holders, decide, insert) — that mutex
//! is what makes the pool exact — and never hold it across an `.await`: journaling happens
//! after the decision is recorded in memory, before the caller acts on it.

use super::journal::{Journal, Op};
use super::{
    Claim, EndOutcome, Gone, Lease, LedgerError, LedgerObserver, Millis, PauseOutcome, PoolKey,
    PoolSpec, PoolUsage, ReleaseReason, Reservation, SeatId, SeatLedger, SeatRecord, SeatState,
    SessionKey, Touch,
};
use crate::config::file::SeatsPer;
use crate::policy::admission::{self, Admit, Holders};
use crate::policy::seat::{deadline, expiry, SeatTimes};
use async_trait::async_trait;
use dashmap::DashMap;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Released cookies are remembered so an ended session cannot come back; bounded so a flood of
/// junk cookies cannot grow memory without end.
const MAX_TOMBSTONES: usize = 200_000;

pub struct MemoryLedger {
    pools: super::Pools<PoolSlot>,
    by_session: DashMap<SessionKey, Arc<Live>>,
    by_id: DashMap<SeatId, Arc<Live>>,
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
    /// Seats that count (standby, active, ending); paused ones are not here.
    seats: HashMap<SeatId, Arc<Live>>,
    pending: HashMap<u64, Pending>,
    peak: u32,
    denied: u64,
    /// Overflow seat time used by released overflow seats, in ms.
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
    overflow: bool,
    last_activity: AtomicU64,
    last_heartbeat: AtomicU64,
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

fn state_from_u8(v: u8) -> SeatState {
    match v {
        0 => SeatState::Standby,
        1 => SeatState::Active,
        2 => SeatState::Ending,
        4 => SeatState::Exempt,
        5 => SeatState::Named,
        _ => SeatState::Paused,
    }
}

impl Live {
    fn state(&self) -> SeatState {
        state_from_u8(self.state.load(Ordering::Acquire))
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
            state: t.state,
            ending_at: t.ending_at,
            overflow: self.overflow,
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
    /// under `pools`; seats that expired while the gateway was down are released.
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
        let mut dead = Vec::new();
        for (name, v) in loaded.counters {
            if let Some(k) = name
                .strip_prefix("overflow_ms/")
                .and_then(|k| k.split_once('/'))
            {
                if let Some(slot) = me.slot(&PoolKey::new(k.0, k.1)) {
                    slot.lock().overflow_used_ms = v;
                }
            }
        }
        for rec in loaded.seats {
            let Some(slot) = me.slot(&rec.pool) else {
                dead.push((rec, ReleaseReason::Config));
                continue;
            };
            let live = Arc::new(Live {
                id: rec.id,
                slot: slot.clone(),
                user: rec.user.clone(),
                device: rec.device.clone(),
                client: rec.client.clone(),
                started_at: rec.started_at,
                overflow: rec.overflow,
                last_activity: AtomicU64::new(rec.last_activity),
                last_heartbeat: AtomicU64::new(rec.last_heartbeat),
                state: AtomicU8::new(state_to_u8(rec.state)),
                ending_at: AtomicU64::new(rec.ending_at.unwrap_or(0)),
                dirty: AtomicBool::new(false),
                session: Mutex::new(rec.session),
                ended_by: Mutex::new(rec.ended_by.clone()),
            });
            if let Some(reason) = live.expired(now) {
                dead.push((rec, reason));
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
        for (key, gone, until) in loaded.gone {
            if until > now {
                me.gone.insert(key, (gone, until));
            }
        }
        let mut ops = Vec::new();
        for (rec, reason) in dead {
            ops.push(Op::Delete(rec.id));
            if let Some(k) = rec.session {
                let until = now + me.tombstone_ttl(&rec.pool);
                me.gone.insert(k, (Gone::Released(reason), until));
                ops.push(Op::Tombstone(k, Gone::Released(reason), until));
            }
            me.observer.released(&rec, reason);
        }
        me.journal_commit(ops).await;
        for slot in me.pools.read().unwrap_or_else(|e| e.into_inner()).values() {
            let mut st = slot.lock();
            st.peak = st.seats.len() as u32;
        }
        Ok(me)
    }

    fn slot(&self, key: &PoolKey) -> Option<Arc<PoolSlot>> {
        super::pool_in(&self.pools, key)
    }

    fn slots(&self) -> Vec<Arc<PoolSlot>> {
        super::pools_by_key(&self.pools)
    }

    fn tombstone_ttl(&self, pool: &PoolKey) -> Millis {
        self.slot(pool)
            .map_or(24 * 3600 * 1000, |s| s.spec().max_lifetime)
    }

    async fn journal_commit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        if let Some(j) = &self.journal {
            if let Err(e) = j.commit(ops).await {
                log::error!(
                    "seat journal write failed; the change is live in memory but not durable: {e}"
                );
            }
        }
    }

    fn remember_gone(&self, key: SessionKey, gone: Gone, until: Millis, ops: &mut Vec<Op>) {
        if self.gone.len() < MAX_TOMBSTONES {
            self.gone.insert(key, (gone, until));
            ops.push(Op::Tombstone(key, gone, until));
        }
    }

    /// Holders of a pool at `now`, expired seats and leases excluded (and returned for release).
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

    fn overflow_left(st: &PoolState, spec: &PoolSpec, now: Millis) -> Option<u64> {
        let allowance = spec.overflow_ms?;
        let running: u64 = st
            .seats
            .values()
            .filter(|l| l.overflow)
            .map(|l| now.saturating_sub(l.started_at))
            .sum();
        Some(allowance.saturating_sub(st.overflow_used_ms + running))
    }

    /// Releases seats found expired while their pool was locked.
    async fn release_all(&self, lives: Vec<(Arc<Live>, ReleaseReason)>, now: Millis) {
        for (live, reason) in lives {
            self.release_live(&live, reason, now).await;
        }
    }

    async fn release_live(
        &self,
        live: &Arc<Live>,
        reason: ReleaseReason,
        now: Millis,
    ) -> Option<SeatRecord> {
        let mut counter = None;
        {
            let mut st = live.slot.lock();
            let held = st.seats.remove(&live.id).is_some();
            if !held && live.state() != SeatState::Paused {
                return None;
            }
            if !held && !self.by_id.contains_key(&live.id) {
                return None;
            }
            if live.overflow && held {
                st.overflow_used_ms += now.saturating_sub(live.started_at);
                counter = Some(st.overflow_used_ms);
            }
        }
        self.by_id.remove(&live.id)?;
        let rec = live.record();
        let mut ops = vec![Op::Delete(live.id)];
        if let Some(k) = rec.session {
            self.by_session.remove_if(&k, |_, v| v.id == live.id);
            let until = now + live.slot.spec().max_lifetime;
            self.remember_gone(k, Gone::Released(reason), until, &mut ops);
        }
        if let Some(v) = counter {
            ops.push(Op::Counter(
                format!(
                    "overflow_ms/{}/{}",
                    live.slot.key.product, live.slot.key.pool
                ),
                v,
            ));
        }
        if reason == ReleaseReason::Ended {
            self.ended_ids.insert(live.id, now + 3_600_000);
        }
        self.journal_commit(ops).await;
        self.observer.released(&rec, reason);
        Some(rec)
    }

    fn new_live(
        slot: &Arc<PoolSlot>,
        claim: &Claim,
        session: SessionKey,
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
            overflow,
            last_activity: AtomicU64::new(now),
            last_heartbeat: AtomicU64::new(0),
            state: AtomicU8::new(state_to_u8(SeatState::Standby)),
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
            .ok_or_else(|| LedgerError::Unavailable(format!("unknown pool {}", claim.pool)))?;
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
        self.release_all(expired, now).await;
        Ok(outcome)
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
    async fn commit(
        &self,
        lease: &Lease,
        claim: &Claim,
        session: SessionKey,
        now: Millis,
    ) -> Result<SeatId, LedgerError> {
        let slot = self
            .slot(&lease.pool)
            .ok_or_else(|| LedgerError::Unavailable(format!("unknown pool {}", lease.pool)))?;
        let spec = slot.spec();
        let mut ops = Vec::new();
        let mut replaced = None;
        let live = {
            let mut st = slot.lock();
            let pending = st.pending.remove(&lease.id);
            // The app may hand back the session it already had: that session keeps its seat.
            let existing = self.by_session.get(&session).map(|e| e.clone());
            if let Some(live) = existing.filter(|l| {
                st.seats.contains_key(&l.id) && expiry(&spec, &l.times(), now).is_none()
            }) {
                live.last_activity.store(now, Ordering::Release);
                return Ok(live.id);
            }
            let reuse = lease
                .reuse
                .and_then(|id| st.seats.get(&id).cloned())
                .filter(|l| {
                    expiry(&spec, &l.times(), now).is_none() && l.state() != SeatState::Ending
                });
            if let Some(live) = reuse {
                let old = live
                    .session
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(session);
                live.last_activity.store(now, Ordering::Release);
                replaced = old.filter(|o| *o != session);
                live
            } else {
                let counted = pending.as_ref().is_some_and(|p| p.counts);
                let mut overflow = pending.as_ref().is_some_and(|p| p.overflow);
                if !counted {
                    // The lease expired (slow app) or its reusable seat went away: admit afresh.
                    let (holders, _) = Self::holders(&st, &spec, now);
                    let left = Self::overflow_left(&st, &spec, now);
                    match admission::admit(&spec, &holders, claim.user.as_deref(), now, left) {
                        Admit::Deny(_) => return Err(LedgerError::LeaseLost(lease.id)),
                        a => overflow = a == Admit::Overflow,
                    }
                }
                let live = Self::new_live(&slot, claim, session, overflow, now);
                st.seats.insert(live.id, live.clone());
                let n = st.seats.len() as u32;
                st.peak = st.peak.max(n);
                live
            }
        };
        if let Some(old) = replaced {
            self.by_session.remove_if(&old, |_, v| v.id == live.id);
            self.remember_gone(
                old,
                Gone::Released(ReleaseReason::Replaced),
                now + spec.max_lifetime,
                &mut ops,
            );
        }
        self.by_session.insert(session, live.clone());
        self.by_id.insert(live.id, live.clone());
        self.gone.remove(&session);
        ops.push(Op::Forget(session));
        ops.push(Op::Put(Box::new(live.record())));
        self.journal_commit(ops).await;
        Ok(live.id)
    }

    async fn cancel(&self, lease: &Lease) {
        if let Some(slot) = self.slot(&lease.pool) {
            slot.lock().pending.remove(&lease.id);
        }
    }

    async fn touch(&self, session: &SessionKey, now: Millis) -> Result<Touch, LedgerError> {
        let live = match self.by_session.get(session) {
            Some(l) => l.clone(),
            None => {
                let gone = self.gone.get(session).map_or(Gone::Unknown, |g| g.0);
                return Ok(Touch::Gone(gone));
            }
        };
        if let Some(reason) = live.expired(now) {
            self.release_live(&live, reason, now).await;
            return Ok(Touch::Gone(Gone::Released(reason)));
        }
        let mut state = live.state();
        if state == SeatState::Paused {
            if self.resume(live.id, now).await? != PauseOutcome::Done {
                return Ok(Touch::Gone(Gone::Released(ReleaseReason::Paused)));
            }
            state = SeatState::Active;
        }
        live.last_activity.store(now, Ordering::Release);
        live.dirty.store(true, Ordering::Release);
        if state == SeatState::Standby
            && live
                .state
                .compare_exchange(
                    0,
                    state_to_u8(SeatState::Active),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            state = SeatState::Active;
        }
        let ending = live.ending_at.load(Ordering::Acquire);
        Ok(Touch::Held {
            id: live.id,
            pool: live.slot.key.clone(),
            state,
            ending_at: (ending > 0).then_some(ending),
        })
    }

    async fn heartbeat(&self, session: &SessionKey, now: Millis) -> Result<bool, LedgerError> {
        let Some(live) = self.by_session.get(session).map(|l| l.clone()) else {
            return Ok(false);
        };
        if let Some(reason) = live.expired(now) {
            self.release_live(&live, reason, now).await;
            return Ok(false);
        }
        if live.state() == SeatState::Paused {
            return Ok(false);
        }
        if live.last_heartbeat.swap(now, Ordering::AcqRel) == 0 {
            // Presence now applies to this seat: its deadline may come sooner.
            drop(live.slot.lock());
        }
        live.dirty.store(true, Ordering::Release);
        Ok(true)
    }

    async fn release(
        &self,
        session: &SessionKey,
        reason: ReleaseReason,
        now: Millis,
    ) -> Result<Option<SeatRecord>, LedgerError> {
        let Some(live) = self.by_session.get(session).map(|l| l.clone()) else {
            return Ok(None);
        };
        Ok(self.release_live(&live, reason, now).await)
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
            let Some(live) = self.by_id.get(id).map(|l| l.clone()) else {
                let o = if self.ended_ids.contains_key(id) {
                    EndOutcome::AlreadyEnded
                } else {
                    EndOutcome::NotFound
                };
                out.push((*id, o));
                continue;
            };
            if live.expired(now).is_some() {
                let r = live.expired(now).unwrap_or(ReleaseReason::Idle);
                self.release_live(&live, r, now).await;
                out.push((*id, EndOutcome::NotFound));
                continue;
            }
            if live.state() == SeatState::Ending {
                out.push((*id, EndOutcome::AlreadyEnded));
                continue;
            }
            *live.ended_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(by.to_string());
            let at = now + grace_ms;
            if grace_ms == 0 || live.state() == SeatState::Paused {
                self.release_live(&live, ReleaseReason::Ended, now).await;
                out.push((*id, EndOutcome::Ending { at: now }));
                continue;
            }
            live.ending_at.store(at, Ordering::Release);
            live.state
                .store(state_to_u8(SeatState::Ending), Ordering::Release);
            drop(live.slot.lock());
            self.journal_commit(vec![Op::Put(Box::new(live.record()))])
                .await;
            out.push((*id, EndOutcome::Ending { at }));
        }
        Ok(out)
    }

    async fn pause(&self, id: SeatId, now: Millis) -> Result<PauseOutcome, LedgerError> {
        let Some(live) = self.by_id.get(&id).map(|l| l.clone()) else {
            return Ok(PauseOutcome::NotFound);
        };
        if live.expired(now).is_some() {
            return Ok(PauseOutcome::NotFound);
        }
        {
            let mut st = live.slot.lock();
            if !matches!(live.state(), SeatState::Active | SeatState::Standby) {
                return Ok(PauseOutcome::WrongState);
            }
            st.seats.remove(&id);
            live.state
                .store(state_to_u8(SeatState::Paused), Ordering::Release);
        }
        let rec = live.record();
        self.journal_commit(vec![Op::Put(Box::new(rec.clone()))])
            .await;
        self.observer.released(&rec, ReleaseReason::Paused);
        Ok(PauseOutcome::Done)
    }

    async fn resume(&self, id: SeatId, now: Millis) -> Result<PauseOutcome, LedgerError> {
        let Some(live) = self.by_id.get(&id).map(|l| l.clone()) else {
            return Ok(PauseOutcome::NotFound);
        };
        let spec = live.slot.spec();
        let (admitted, expired) = {
            let mut st = live.slot.lock();
            if live.state() != SeatState::Paused {
                return Ok(PauseOutcome::WrongState);
            }
            let (holders, expired) = Self::holders(&st, &spec, now);
            if matches!(
                admission::admit(&spec, &holders, live.user.as_deref(), now, None),
                Admit::Deny(_)
            ) {
                st.denied += 1;
                (false, expired)
            } else {
                live.last_activity.store(now, Ordering::Release);
                live.state
                    .store(state_to_u8(SeatState::Active), Ordering::Release);
                st.seats.insert(id, live.clone());
                let n = st.seats.len() as u32;
                st.peak = st.peak.max(n);
                (true, expired)
            }
        };
        if !admitted {
            self.release_all(expired, now).await;
            return Ok(PauseOutcome::Full);
        }
        self.release_all(expired, now).await;
        let rec = live.record();
        self.journal_commit(vec![Op::Put(Box::new(rec.clone()))])
            .await;
        self.observer.resumed(&rec);
        Ok(PauseOutcome::Done)
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
                if expiry(&spec, &l.times(), now).is_some() {
                    continue;
                }
                live += 1;
                match l.state() {
                    SeatState::Standby => standby += 1,
                    SeatState::Ending => ending += 1,
                    _ => {}
                }
                if l.overflow {
                    running_overflow += now.saturating_sub(l.started_at);
                }
            }
            let pending = st
                .pending
                .values()
                .filter(|p| p.counts && p.expires > now)
                .count() as u32;
            let capacity = spec.capacity(now);
            let in_use = live + pending;
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
                overflow_used_seconds: (st.overflow_used_ms + running_overflow) / 1000,
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

    async fn sweep(&self, now: Millis) -> Result<usize, LedgerError> {
        let expired: Vec<(Arc<Live>, ReleaseReason)> = self
            .by_id
            .iter()
            .filter_map(|e| e.value().expired(now).map(|r| (e.value().clone(), r)))
            .collect();
        let n = expired.len();
        self.release_all(expired, now).await;
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
        self.ended_ids.retain(|_, until| *until > now);
        if let (Some(j), false) = (&self.journal, forget.is_empty()) {
            j.enqueue(forget);
        }
        Ok(n)
    }

    async fn flush(&self) -> Result<(), LedgerError> {
        let ops: Vec<Op> = self
            .by_id
            .iter()
            .filter(|e| e.value().dirty.swap(false, Ordering::AcqRel))
            .map(|e| {
                let l = e.value();
                Op::Activity(
                    l.id,
                    l.last_activity.load(Ordering::Acquire),
                    l.last_heartbeat.load(Ordering::Acquire),
                )
            })
            .collect();
        if let (Some(j), false) = (&self.journal, ops.is_empty()) {
            j.commit(ops).await.map_err(LedgerError::Journal)?;
        }
        Ok(())
    }

    async fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::SeatsPer;
    use crate::config::Grant;
    use crate::ledger::{Claim, NoObserver};

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
