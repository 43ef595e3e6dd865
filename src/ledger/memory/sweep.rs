//! Releases: one seat under its pool's lock (tombstone, ended id, overflow time), expiry, the
//! sweep (and spent overflow allowances), and the batched activity flush.

use super::*;

/// Entries a sweep takes off one of its work lists per lock hold, between yields.
const SWEEP_PER_HOLD: usize = 256;

/// Takes the entries due at `now` off `heap`, up to [`SWEEP_PER_HOLD`] (the lock is held for
/// that long only).
fn pop_due<T: Ord + Copy>(heap: &Mutex<Deadlines<T>>, now: Millis) -> Vec<(Millis, T)> {
    let mut h = heap.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    while out.len() < SWEEP_PER_HOLD {
        match h.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                out.extend(h.pop().map(|Reverse(e)| e));
            }
            _ => break,
        }
    }
    out
}

/// Takes every entry due at `now` off `heap` and gives each to `each`, [`SWEEP_PER_HOLD`] per
/// lock hold with a yield between (`each` runs with the lock let go).
async fn drain_due<T: Ord + Copy>(
    heap: &Mutex<Deadlines<T>>,
    now: Millis,
    mut each: impl FnMut(T),
) {
    loop {
        let due = pop_due(heap, now);
        if due.is_empty() {
            return;
        }
        due.into_iter().for_each(|(_, e)| each(e));
        tokio::task::yield_now().await;
    }
}

/// Release chunks whose writes a mass lapse's release keeps queued at once.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A seat found past its deadline, why, and the instant it lapsed.
type Lapsed = (Arc<Live>, ReleaseReason, Millis);

/// Expired seats with the instants they lapsed, in the order [`MemoryLedger::release_chunk`]
/// takes them: seats of one pool next to each other, so a chunk takes one lock; and in id
/// order, the journal's key order, so one chunk's deletes share the tables' pages.
fn in_chunk_order(lives: Vec<(Arc<Live>, ReleaseReason)>, now: Millis) -> Vec<Lapsed> {
    let mut lives: Vec<Lapsed> = lives
        .into_iter()
        .map(|(live, reason)| {
            let at = live.ended_at(now);
            (live, reason, at)
        })
        .collect();
    lives.sort_by_key(|(l, _, _)| (Arc::as_ptr(&l.slot) as usize, l.id.0));
    lives
}

impl MemoryLedger {
    /// Lets a cookie in again (it is used for a seat now): its tombstone and row, if it had one.
    pub(super) fn forget_gone(&self, key: SessionKey, ops: &mut Vec<Op>) {
        if let Some((_, (_, _, row))) = self.gone.remove(&key) {
            ops.push(Op::Forget(key, row));
        }
    }

    pub(super) fn remember_gone(
        &self,
        key: SessionKey,
        gone: Gone,
        until: Millis,
        ops: &mut Vec<Op>,
    ) {
        let row = self.ids.next().0;
        self.keep_gone(key, gone, until, row, ops);
        ops.push(Op::Tombstone(key, gone, until, row));
    }

    /// Keeps `key`'s tombstone (in `row`) in memory until `until`, for the sweep to forget
    /// then; the row of one it replaces is forgotten now.
    pub(super) fn keep_gone(
        &self,
        key: SessionKey,
        gone: Gone,
        until: Millis,
        row: u64,
        ops: &mut Vec<Op>,
    ) {
        if let Some((_, _, old)) = self.gone.insert(key, (gone, until, row)) {
            ops.push(Op::Forget(key, old));
        }
        self.gone_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Reverse((until, (row, key))));
    }

    /// Remembers that seat `id` was ended, until `until` (a second end says "already ended").
    pub(super) fn remember_ended(&self, id: SeatId, until: Millis, ops: Option<&mut Vec<Op>>) {
        self.ended_ids.insert(id, until);
        self.ended_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Reverse((until, id)));
        if let Some(ops) = ops {
            ops.push(Op::Counter(ended_counter(id), until));
        }
    }

    /// A session no pool counts (exempt, named, paused), or whose deadline came sooner while
    /// uncounted (an end with grace): watched for the sweep from `now`.
    pub(super) fn watch_other(&self, live: &Live, now: Millis) {
        let at = bound(&live.slot.spec(), &live.times(), now);
        self.others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Reverse((at, live.id)));
    }

    /// Every uncounted session watched afresh (a new spec; or entries of sessions gone since
    /// outnumber the watched).
    pub(super) fn rewatch_others(&self) {
        let fresh: Vec<_> = self
            .by_id
            .iter()
            .filter(|e| !e.value().state().holds_seat())
            .map(|e| {
                Reverse((
                    bound(&e.value().slot.spec(), &e.value().times(), 0),
                    *e.key(),
                ))
            })
            .collect();
        *self.others.lock().unwrap_or_else(|e| e.into_inner()) = BinaryHeap::from(fresh);
    }

    /// A session's activity changed: it goes on the flush's list the first time since the
    /// last flush (a load first, so the many touches after that cost no atomic write).
    pub(super) fn mark_dirty(&self, live: &Live) {
        // Nothing to write without a journal: the list would only grow.
        if self.journal.is_none() {
            return;
        }
        if !live.dirty.load(Ordering::Acquire) && !live.dirty.swap(true, Ordering::AcqRel) {
            self.dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(live.id);
        }
    }

    /// Uncounted sessions past their deadline at `now`, from the heap of their bounds.
    async fn others_due(&self, now: Millis) -> Vec<(Arc<Live>, ReleaseReason)> {
        let mut out = Vec::new();
        drain_due(&self.others, now, |id| {
            let Some(live) = self.live_by_id(&id) else {
                return;
            };
            if live.state().holds_seat() {
                // Its pool's heap watches it now.
                return;
            }
            match live.expired(now) {
                Some(r) => out.push((live, r)),
                None => {
                    // Later than `now`: this drain does not take it again.
                    let at = bound(&live.slot.spec(), &live.times(), now).max(now + 1);
                    self.others
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Reverse((at, id)));
                }
            }
        })
        .await;
        let (entries, sessions) = (
            self.others.lock().unwrap_or_else(|e| e.into_inner()).len(),
            self.by_id.len(),
        );
        if outgrown(entries, sessions) {
            self.rewatch_others();
        }
        out
    }

    /// Releases `live` as of `at`; the caller holds its pool's lock (`st`). `None` when it was
    /// released already.
    pub(super) fn release_locked(
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
        if st.remove_seat(&live.id).is_some() {
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
            self.remember_ended(live.id, at + ENDED_FOR, Some(ops));
        }
        Some(Released { record, reason })
    }

    /// Releases `live` for `reason` as of `at` and tells the observer.
    pub(super) async fn release_at(
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
    pub(super) async fn expire(&self, live: &Arc<Live>, reason: ReleaseReason, now: Millis) {
        self.release_at(live, reason, live.ended_at(now)).await;
    }

    /// Releases seats found expired, each as of the instant it expired, [`RELEASE_CHUNK`] per
    /// pool lock: a million seats lapsing together cost thousands of short lock holds and
    /// group commits, not a million fsyncs awaited one after another, and admissions get the
    /// lock between chunks. Each seat's release is its own background journal write, so
    /// admissions' writes go ahead of them (`Journal::submit_background`).
    pub(super) async fn expire_all(&self, lives: Vec<(Arc<Live>, ReleaseReason)>, now: Millis) {
        let lives = in_chunk_order(lives, now);
        let mut rest = &lives[..];
        // A few chunks' writes in flight, so the writer always has the next one queued.
        let mut in_flight = VecDeque::new();
        while !rest.is_empty() || !in_flight.is_empty() {
            if !rest.is_empty() && in_flight.len() < CHUNKS_IN_FLIGHT {
                let (released, writes, tail) = self.release_chunk(rest);
                rest = tail;
                in_flight.push_back((released, writes));
                continue;
            }
            let Some((released, writes)) = in_flight.pop_front() else {
                break;
            };
            for w in writes {
                w.logged().await;
            }
            for r in released {
                self.observer.released(&r.record, r.reason);
            }
        }
    }

    /// Releases the first seats of `lives` that share a pool, up to [`RELEASE_CHUNK`], under
    /// one lock hold; their background writes and the seats left.
    fn release_chunk<'a>(&self, lives: &'a [Lapsed]) -> (Vec<Released>, Vec<Write>, &'a [Lapsed]) {
        let Some((first, _, _)) = lives.first() else {
            return (Vec::new(), Vec::new(), lives);
        };
        let slot = first.slot.clone();
        let n = lives
            .iter()
            .take(RELEASE_CHUNK)
            .take_while(|(l, _, _)| Arc::ptr_eq(&l.slot, &slot))
            .count();
        let (chunk, tail) = lives.split_at(n);
        let mut released = Vec::new();
        let mut writes = Vec::new();
        let mut st = slot.lock();
        for (live, reason, at) in chunk {
            let mut ops = Vec::new();
            released.extend(self.release_locked(&mut st, live, *reason, *at, &mut ops));
            writes.push(self.submit_background(ops));
        }
        (released, writes, tail)
    }

    /// Queues a background journal write (see `Journal::submit_background`); called with the
    /// pool lock held like [`Self::submit`].
    fn submit_background(&self, ops: Vec<Op>) -> Write {
        Write {
            written: match (&self.journal, ops.is_empty()) {
                (Some(j), false) => Some(j.submit_background(ops)),
                _ => None,
            },
        }
    }

    /// Releases seats that a login or a first request found expired under the pool lock, at
    /// most [`INLINE_RELEASES`] of them, without making that call wait: their writes are
    /// background writes, and the observer hears of them once those are durable, from a task
    /// of their own. The rest stay doomed (not counted) until the sweep or their own cookie's
    /// next request releases them.
    pub(super) async fn expire_some(
        &self,
        mut lives: Vec<(Arc<Live>, ReleaseReason)>,
        now: Millis,
    ) {
        lives.truncate(INLINE_RELEASES);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return self.expire_all(lives, now).await;
        };
        let lives = in_chunk_order(lives, now);
        let mut rest = &lives[..];
        while !rest.is_empty() {
            let (released, writes, tail) = self.release_chunk(rest);
            rest = tail;
            if released.is_empty() && writes.iter().all(|w| w.written.is_none()) {
                continue;
            }
            let observer = self.observer.clone();
            rt.spawn(async move {
                for w in writes {
                    w.logged().await;
                }
                for r in released {
                    observer.released(&r.record, r.reason);
                }
            });
        }
    }

    /// A cookie that leads to a session that expired is released before it is used again.
    pub(super) async fn clear_expired(&self, session: &SessionKey, now: Millis) {
        if let Some(old) = self.live_of(session) {
            if let Some(r) = old.expired(now) {
                self.expire(&old, r, now).await;
            }
        }
    }

    /// Ends the overflow seats of pools whose allowance is spent, as an admin end would.
    pub(super) async fn stop_spent_overflow(&self, now: Millis) {
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
                    .overflowing
                    .iter()
                    .filter_map(|id| st.seats.get(id))
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

    /// Releases whatever expired, then ends the overflow seats of pools whose allowance is
    /// spent, and forgets tombstones and ended ids whose time is up. Its cost follows what
    /// lapsed, not what the store holds: no pass over every session or tombstone.
    pub(super) async fn sweep_now(&self, now: Millis) -> Result<usize, LedgerError> {
        // Every lapsed seat's heap entry is looked at first, a bounded `due` per lock hold:
        // lapsed seats stop counting at once and `available` counts without walking the
        // pool, while their releases take their time. The doomed ones (these, and those a
        // login found and left) are taken for release as they go.
        let mut expired = Vec::new();
        for slot in self.slots() {
            let spec = slot.spec();
            loop {
                {
                    let mut st = slot.lock();
                    st.due(&spec, now);
                    expired.extend(st.take_doomed(&spec, now, SWEEP_PER_HOLD));
                    if !st.any_due(now) && st.doomed_order.is_empty() {
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
        }
        expired.extend(self.others_due(now).await);
        let n = expired.len();
        self.expire_all(expired, now).await;
        self.stop_spent_overflow(now).await;
        for slot in self.slots() {
            let spec = slot.spec();
            let mut st = slot.lock();
            st.pending.retain(|_, p| p.expires > now);
            st.undoom(&spec, now);
        }
        let mut forget = Vec::new();
        drain_due(&self.gone_until, now, |(row, key)| {
            // A cookie used again, or tombstoned again since, has another row (or none).
            if self.gone.remove_if(&key, |_, v| v.2 == row).is_some() {
                forget.push(Op::Forget(key, row));
            }
        })
        .await;
        drain_due(&self.ended_until, now, |id| {
            if self
                .ended_ids
                .remove_if(&id, |_, until| *until <= now)
                .is_some()
            {
                forget.push(Op::Unset(ended_counter(id)));
            }
        })
        .await;
        if let (Some(j), false) = (&self.journal, forget.is_empty()) {
            j.enqueue(forget);
        }
        Ok(n)
    }

    pub(super) async fn flush_now(&self) -> Result<(), LedgerError> {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        let mut ops: Vec<Op> = dirty
            .into_iter()
            .filter_map(|id| self.live_by_id(&id))
            .filter(|l| l.dirty.swap(false, Ordering::AcqRel))
            .flat_map(|l| {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Full, FullReason, Grant};
    use crate::ledger::NoObserver;

    fn spec(seats: u32) -> PoolSpec {
        PoolSpec {
            key: PoolKey::new("p", "default"),
            grants: vec![Grant {
                seats,
                not_before: None,
                expires: None,
            }],
            idle_timeout: 1_000,
            max_lifetime: 100_000,
            presence_timeout: None,
            standby_timeout: 50_000,
            seats_per: SeatsPer::Session,
            max_sessions: None,
            groups: vec![],
            overflow_ms: None,
            queue: None,
        }
    }

    fn claim(i: u64) -> Claim {
        Claim {
            pool: PoolKey::new("p", "default"),
            user: Some(format!("u{i}")),
            device: None,
            client: "web".into(),
            lease_id: i,
        }
    }

    async fn seat(l: &MemoryLedger, i: u64, now: Millis) -> SessionKey {
        let Reservation::Granted(lease) = l.reserve(&claim(i), now).await.unwrap() else {
            panic!("no seat for {i}")
        };
        let k = SessionKey::new("p", &i.to_string());
        l.commit(&lease, &claim(i), k, now).await.unwrap();
        k
    }

    fn peak(st: &PoolState) -> u32 {
        st.peak
    }

    /// `seats` sessions of which one lapsed at 1_100, found only after every other seat's
    /// stale heap entry (they were touched later, their entries still say 1_000): more
    /// entries than one `due` pops.
    async fn one_lapse_behind(capacity: u32, seats: u64) -> (MemoryLedger, Arc<PoolSlot>) {
        let l = MemoryLedger::volatile(Arc::new(NoObserver));
        l.configure(&[spec(capacity)]);
        let mut keys = Vec::new();
        for i in 0..seats - 1 {
            keys.push(seat(&l, i, 0).await);
        }
        seat(&l, seats - 1, 100).await;
        for k in &keys {
            let _ = l.touch(k, 500).await.unwrap();
        }
        let slot = l.slot(&PoolKey::new("p", "default")).unwrap();
        (l, slot)
    }

    /// A full pool with a lapsed seat behind more heap entries than one call pops: the
    /// login gets that seat (a denial waits until every due entry was looked at), the next
    /// is denied with the exact count, and the peak is what held at once.
    #[tokio::test]
    async fn a_denial_is_decided_on_exact_counts() {
        let (l, slot) = one_lapse_behind(1_000, 1_000).await;
        assert!(
            matches!(
                l.reserve(&claim(5_000), 1_200).await.unwrap(),
                Reservation::Granted(_)
            ),
            "the lapsed seat is free"
        );
        let full = Full {
            in_use: 1_000,
            capacity: 1_000,
            reason: FullReason::Pool,
        };
        assert_eq!(
            l.reserve(&claim(5_001), 1_200).await.unwrap(),
            Reservation::Full(full)
        );
        assert_eq!(peak(&slot.view()), 1_000);
    }

    /// Room to spare: the login is admitted whatever the heap holds, but the peak it would
    /// raise is counted exactly (the lapsed seat does not count).
    #[tokio::test]
    async fn a_new_peak_is_counted_exactly() {
        let (l, slot) = one_lapse_behind(2_000, 1_000).await;
        assert_eq!(peak(&slot.view()), 1_000);
        let Reservation::Granted(_) = l.reserve(&claim(5_000), 1_200).await.unwrap() else {
            panic!("room to spare")
        };
        assert_eq!(peak(&slot.view()), 1_000, "999 seats and one login hold");
        assert_eq!(
            l.available(&PoolKey::new("p", "default"), 1_200),
            Some(1_000)
        );
    }

    /// A mass lapse costs an admission one bounded look at the heap, not the lapse.
    #[tokio::test]
    async fn an_admission_during_a_mass_lapse_finds_a_bounded_part_of_it() {
        let l = MemoryLedger::volatile(Arc::new(NoObserver));
        l.configure(&[spec(2_000)]);
        for i in 0..1_000 {
            seat(&l, i, 0).await;
        }
        let slot = l.slot(&PoolKey::new("p", "default")).unwrap();
        let Reservation::Granted(_) = l.reserve(&claim(5_000), 1_200).await.unwrap() else {
            panic!("room to spare")
        };
        {
            let st = slot.view();
            assert!(st.doomed.len() + (1_000 - st.seats.len()) <= 256);
            assert!(st.any_due(1_200), "most of the lapse is left for the sweep");
        }
        assert_eq!(
            l.available(&PoolKey::new("p", "default"), 1_200),
            Some(1_999)
        );
        // The login released up to `INLINE_RELEASES` of what it found; the sweep the rest.
        assert_eq!(
            l.sweep(1_200).await.unwrap(),
            1_000 - INLINE_RELEASES.min(256)
        );
        let st = slot.view();
        assert_eq!(st.seats.len(), 0);
        assert!(!st.any_due(1_200), "the sweep looked at every due entry");
    }
}
