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
//! while a pool is locked). The sweep's and flush's work lists (`others`, `gone_until`,
//! `ended_until`, `dirty`) are taken last and alone: nothing is locked while one is held.
//!
//! The sweep and the flush never walk every session: lapsed counted seats come from their
//! pool's deadline heap, the rest from heaps of their own, and the flush from the list of
//! sessions that changed; at a million sessions a walk took 127 ms every sweep, and a login
//! waiting for a map shard it held saw its p99 go from 0.7 to 15 ms.
//!
//! Durability: state transitions are durable when the call returns; last activity and last
//! heartbeat are written by `flush` in batches, so after a crash they may lag by at most one
//! flush period (`store.flush_interval`). Reservations of logins in flight are not journaled:
//! their requests die with the process.
//!
//! Admission cost does not grow with the pool: a pool keeps its seats by user and a heap of
//! lower bounds of their deadlines, so a login finds only the seats that lapsed since the last
//! one and counts holders per user and group without walking the seats (`slot`); the time
//! overflow seats used is summed over those seats only.
//!
//! Layout: `live` (a seat's atomics), `slot` (a pool's state, admission, counts), `sessions`
//! (cookies to sessions, commit, rekey), `sweep` (releases, expiry, flush), `restore` (the
//! journal replayed at open), `queue` (each pool's waiting line, under the pool's lock, and
//! the wait estimate).

use super::journal::{self, Journal, Op, Written};
use super::{LedgerError, LedgerObserver, SeatLedger, Shared, SharedState};
use crate::domain::{
    Claim, EndOutcome, Full, FullReason, Gone, Joined, Lease, Lookup, Millis, PauseOutcome, Polled,
    PoolKey, PoolSpec, PoolUsage, ReleaseReason, Reservation, SeatId, SeatIds, SeatRecord,
    SeatState, SeatsPer, SessionKey, Ticket, TicketKey, Touch,
};
use crate::policy::admission::{self, Admit, Counts};
use crate::policy::seat::{deadline, expiry, SeatTimes};
use async_trait::async_trait;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

mod live;
mod queue;
mod restore;
mod sessions;
mod slot;
mod sweep;
#[cfg(test)]
mod tests;

use live::*;
use slot::*;

/// How long an ended seat's id is remembered, so a second end says "already ended".
const ENDED_FOR: Millis = 3_600_000;
/// Seats released per pool lock and journal write when many lapse at once: small enough that
/// a login queued behind one such write waits a few milliseconds (512 took 50 ms a write).
const RELEASE_CHUNK: usize = 64;
/// Lapsed seats a login or a first request releases on its way (the sweep takes the rest).
const INLINE_RELEASES: usize = 64;
/// Who ends an overflow seat whose pool spent its allowance (`ended_by`).
pub const OVERFLOW_END: &str = "overflow";

pub struct MemoryLedger {
    pools: super::Pools<PoolSlot>,
    by_session: DashMap<SessionKey, Arc<Live>>,
    by_id: DashMap<SeatId, Arc<Live>>,
    /// Released cookies, remembered until they could no longer be valid (the pool's
    /// `max_lifetime` after the release) so an ended session cannot come back. Only cookies
    /// that held a session get here, so junk cookies cannot grow it.
    gone: DashMap<SessionKey, (Gone, Millis, u64)>,
    ended_ids: DashMap<SeatId, Millis>,
    /// Lower bounds of the deadlines of sessions no pool counts (exempt, named, paused),
    /// earliest first (see [`bound`]); entries of sessions counted or released since are
    /// dropped when they come up.
    others: Mutex<Deadlines<SeatId>>,
    /// When each tombstone in `gone` is up, with its row: one whose row changed since is
    /// skipped.
    gone_until: Mutex<Deadlines<(u64, SessionKey)>>,
    /// When each id in `ended_ids` is up.
    ended_until: Mutex<Deadlines<SeatId>>,
    /// Sessions whose activity changed since the last flush, each once (`Live::dirty`).
    dirty: Mutex<Vec<SeatId>>,
    journal: Option<Journal>,
    observer: Arc<dyn LedgerObserver>,
    ids: SeatIds,
}

/// Entries by the instant each is due, earliest first.
type Deadlines<T> = BinaryHeap<Reverse<(Millis, T)>>;

/// Whether a lazily pruned heap (`entries`, of which those of items gone or watched again
/// since are stale) has outgrown the `live` items it watches enough to be rebuilt from them.
fn outgrown(entries: usize, live: usize) -> bool {
    entries > 2 * live + 1024
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
            others: Mutex::default(),
            gone_until: Mutex::default(),
            ended_until: Mutex::default(),
            dirty: Mutex::default(),
            journal: None,
            observer,
            ids: SeatIds::default(),
        }
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

    /// The session of `session` if it is still within its deadlines; one found past them is
    /// released now, with the reason that ended it first, and is `None` like an unknown one.
    async fn live_within(&self, session: &SessionKey, now: Millis) -> Option<Arc<Live>> {
        let live = self.live_of(session)?;
        match live.expired(now) {
            Some(reason) => {
                self.expire(&live, reason, now).await;
                None
            }
            None => Some(live),
        }
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
            Some((g, until, _)) if until > now => g,
            _ => Gone::Unknown,
        }
    }

    fn ended(&self, id: &SeatId, now: Millis) -> bool {
        self.ended_ids.get(id).is_some_and(|u| *u > now)
    }
}

impl MemoryLedger {}

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
        let mut respec = false;
        for spec in pools {
            match map.get(&spec.key) {
                Some(slot) => {
                    *slot.spec.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(spec.clone());
                    let mut st = slot.lock();
                    st.rewatch(spec);
                    Self::rewatch_line(&mut st, spec);
                    respec = true;
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
        drop(map);
        if respec {
            // A new spec may bring deadlines sooner: every uncounted session watched afresh
            // (a walk, at a reload only).
            self.rewatch_others();
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
        self.commit_lease(lease, claim, session, now).await
    }

    async fn cancel(&self, lease: &Lease) {
        if let Some(slot) = self.slot(&lease.pool) {
            let mut st = slot.lock();
            // A ready ticket whose login failed keeps its hold until `ready_until`.
            if !st.line.is_ready_lease(lease.id) {
                st.pending.remove(&lease.id);
            }
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
            let live = self.new_live(&slot, claim, session, state, false, now);
            if let Some(other) = self.claim_session(session, &live, now) {
                return Ok(other);
            }
            self.by_id.insert(live.id, live.clone());
            self.watch_other(&live, now);
            let mut ops = Vec::with_capacity(2);
            self.forget_gone(session, &mut ops);
            ops.push(Op::Put(Box::new(live.record())));
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

    async fn rekey(
        &self,
        old: &SessionKey,
        new: SessionKey,
        now: Millis,
    ) -> Result<Option<SeatId>, LedgerError> {
        self.rekey_now(old, new, now).await
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
        self.mark_dirty(&live);
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
        let Some(live) = self.live_within(session, now).await else {
            return Ok(None);
        };
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
        self.mark_dirty(&live);
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
        let Some(live) = self.live_within(session, now).await else {
            return Ok(None);
        };
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
                            st.watch(&live, &live.slot.spec(), now);
                        } else {
                            self.watch_other(&live, now);
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
            st.remove_seat(&id);
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
            self.watch_other(&live, now);
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
        self.usage_now(now).await
    }

    fn available(&self, pool: &PoolKey, now: Millis) -> Option<u32> {
        self.available_now(pool, now)
    }

    async fn sweep(&self, now: Millis) -> Result<usize, LedgerError> {
        let n = self.sweep_now(now).await?;
        self.sweep_lines(now).await;
        Ok(n)
    }

    async fn flush(&self) -> Result<(), LedgerError> {
        self.flush_now().await?;
        self.flush_lines().await
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

    async fn enqueue(
        &self,
        claim: &Claim,
        ticket: TicketKey,
        now: Millis,
    ) -> Result<Joined, LedgerError> {
        self.enqueue_now(claim, ticket, now).await
    }

    async fn poll(
        &self,
        pool: &PoolKey,
        ticket: &TicketKey,
        now: Millis,
    ) -> Result<Polled, LedgerError> {
        Ok(self.poll_now(pool, ticket, now))
    }

    async fn queue_admitted(
        &self,
        pool: &PoolKey,
        ticket: &TicketKey,
        now: Millis,
    ) -> Result<Option<Ticket>, LedgerError> {
        Ok(self.admitted_now(pool, ticket, now).await)
    }

    async fn remove_ticket(&self, id: SeatId, now: Millis) -> Result<Option<Ticket>, LedgerError> {
        Ok(self.remove_ticket_now(id, now).await)
    }

    async fn queue(&self, now: Millis) -> Result<Vec<Ticket>, LedgerError> {
        Ok(self.queue_now(now))
    }

    fn wait_estimate(&self, pool: &PoolKey, seats: u32, now: Millis) -> Option<Millis> {
        self.wait_estimate_now(pool, seats, now)
    }
}
