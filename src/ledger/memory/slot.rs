//! A pool's slot: its spec and, under one mutex, the seats that count, pending reservations
//! and counters; admission (reserve), reuse, overflow and the pool's counts (usage, available).

use super::*;

pub(super) struct PoolSlot {
    pub(super) key: PoolKey,
    pub(super) spec: RwLock<Arc<PoolSpec>>,
    pub(super) state: Mutex<PoolState>,
}

impl PoolSlot {
    pub(super) fn spec(&self) -> Arc<PoolSpec> {
        self.spec.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The state, for a change: whoever may change seats, pending reservations or their
    /// deadlines goes through here, so the cached count of [`Self::view`] is dropped.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        let mut st = self.view();
        st.held_until = None;
        st
    }

    /// The state, to read it without changing any seat.
    pub(super) fn view(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
pub(super) struct PoolState {
    /// Seats that count (standby, active, ending); paused and uncounted ones are not here.
    /// Changed only through `insert_seat` and `remove_seat`, which keep the indexes below.
    pub(super) seats: HashMap<SeatId, Arc<Live>>,
    /// A lower bound of every counted seat's deadline (see [`bound`]), earliest first: the
    /// seats that may have lapsed by `now` are found without walking the pool. Entries of
    /// seats released since are dropped when they come up.
    pub(super) deadlines: BinaryHeap<Reverse<(Millis, SeatId)>>,
    /// Seats found past their deadline and not yet released: no longer counted.
    pub(super) doomed: HashSet<SeatId>,
    /// `doomed` in the order found, for the sweep to release (see [`Self::take_doomed`]):
    /// whoever found them may release only some, or none.
    pub(super) doomed_order: VecDeque<SeatId>,
    /// The counted seats of each user: reuse and per-user and group counts look here.
    pub(super) by_user: HashMap<String, Vec<SeatId>>,
    /// The counted seats admitted beyond capacity (their time draws on the allowance).
    pub(super) overflowing: HashSet<SeatId>,
    pub(super) pending: HashMap<u64, Pending>,
    pub(super) peak: u32,
    pub(super) denied: u64,
    /// `peak` and `denied` as last written by `flush` (they survive restarts, lagging by at
    /// most one flush period).
    pub(super) stats_written: (u32, u64),
    /// Overflow seat time used by overflow seats that no longer run, in ms.
    pub(super) overflow_used_ms: u64,
    /// Seats held (live and pending) and the first instant one of them may lapse: checks
    /// answer from this in O(1) instead of scanning every seat, until a seat changes or
    /// that instant passes.
    pub(super) held_until: Option<(u32, Millis)>,
    /// The waiting line (`queue`), empty for a pool without one.
    pub(super) line: super::queue::Line,
    /// The wait estimate's inputs: earliest deadlines (cached) and the release rate.
    pub(super) estimates: super::queue::Estimates,
}

pub(super) struct Pending {
    pub(super) user: Option<String>,
    pub(super) expires: Millis,
    pub(super) counts: bool,
    pub(super) overflow: bool,
}

/// A lower bound of the seat's deadline from `now` on. Activity only moves a deadline later;
/// the one change that moves it earlier without the pool lock is a first heartbeat (presence
/// then applies), which cannot come before `now` and so ends no sooner than `now` plus the
/// presence timeout. An end (`ending_at`) and a new spec are re-watched under the lock.
pub(super) fn bound(spec: &PoolSpec, t: &SeatTimes, now: Millis) -> Millis {
    let d = deadline(spec, t);
    match spec.presence_timeout {
        Some(pt) if t.last_heartbeat == 0 => d.min(t.last_activity.max(now).saturating_add(pt)),
        _ => d,
    }
}

impl PoolState {
    pub(super) fn insert_seat(&mut self, live: Arc<Live>, spec: &PoolSpec, now: Millis) {
        self.watch(&live, spec, now);
        if let Some(u) = &live.user {
            // Most users hold one seat: room for one, not the four a first push reserves.
            self.by_user
                .entry(u.clone())
                .or_insert_with(|| Vec::with_capacity(1))
                .push(live.id);
        }
        if live.overflow() {
            self.overflowing.insert(live.id);
        }
        self.seats.insert(live.id, live);
    }

    /// A counted seat leaves (released or paused): it also counts in the release rate.
    pub(super) fn remove_seat(&mut self, id: &SeatId) -> Option<Arc<Live>> {
        let live = self.forget_seat(id)?;
        self.estimates.unrated += 1;
        Some(live)
    }

    /// A seat taken back that never held (its journal write failed): not a release.
    pub(super) fn forget_seat(&mut self, id: &SeatId) -> Option<Arc<Live>> {
        let live = self.seats.remove(id)?;
        self.doomed.remove(id);
        self.overflowing.remove(id);
        if let Some(u) = &live.user {
            if let Some(ids) = self.by_user.get_mut(u) {
                ids.retain(|x| x != id);
                if ids.is_empty() {
                    self.by_user.remove(u);
                }
            }
        }
        Some(live)
    }

    /// Records the seat's deadline bound again: after it was admitted, or ended earlier.
    pub(super) fn watch(&mut self, live: &Live, spec: &PoolSpec, now: Millis) {
        self.deadlines
            .push(Reverse((bound(spec, &live.times(), now), live.id)));
    }

    /// Every seat watched afresh (a new spec, or too many entries of released seats).
    pub(super) fn rewatch(&mut self, spec: &PoolSpec) {
        self.doomed.clear();
        let bounds: Vec<_> = self
            .seats
            .values()
            .map(|l| Reverse((bound(spec, &l.times(), 0), l.id)))
            .collect();
        self.deadlines = BinaryHeap::from(bounds);
    }

    /// Seats past their deadline at `now`, each found once (then `doomed` until released),
    /// from at most 256 heap entries: the amortised cost is per seat that lapses, not per
    /// seat held, and no call pays for a mass lapse under the pool lock. Entries still due
    /// after it (see [`Self::any_due`]) are seats that count although they lapsed.
    pub(super) fn due(&mut self, spec: &PoolSpec, now: Millis) -> Vec<(Arc<Live>, ReleaseReason)> {
        const PER_CALL: usize = 256;
        if outgrown(self.deadlines.len(), self.seats.len()) {
            let doomed = std::mem::take(&mut self.doomed);
            self.rewatch(spec);
            self.doomed = doomed;
        }
        let mut out = Vec::new();
        for _ in 0..PER_CALL {
            let Some(&Reverse((at, id))) = self.deadlines.peek() else {
                break;
            };
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(live) = self.seats.get(&id).cloned() else {
                continue;
            };
            if self.doomed.contains(&id) {
                continue;
            }
            let t = live.times();
            match expiry(spec, &t, now) {
                Some(r) => {
                    self.doomed.insert(id);
                    self.doomed_order.push_back(id);
                    out.push((live, r));
                }
                None => {
                    let at = bound(spec, &t, now).max(now + 1);
                    self.deadlines.push(Reverse((at, id)));
                }
            }
        }
        out
    }

    /// Up to `max` doomed seats to release, oldest found first: ids released or counted again
    /// since are skipped; one that holds again at `now` (a store whose clock went back) stays
    /// doomed for [`Self::undoom`], which the sweep runs after its releases.
    pub(super) fn take_doomed(
        &mut self,
        spec: &PoolSpec,
        now: Millis,
        max: usize,
    ) -> Vec<(Arc<Live>, ReleaseReason)> {
        let mut out = Vec::new();
        for _ in 0..max {
            let Some(id) = self.doomed_order.pop_front() else {
                break;
            };
            if !self.doomed.contains(&id) {
                continue;
            }
            if let Some(live) = self.seats.get(&id) {
                if let Some(r) = expiry(spec, &live.times(), now) {
                    out.push((live.clone(), r));
                }
            }
        }
        out
    }

    /// Doomed seats that hold again (a store whose clock went back) are counted and watched.
    pub(super) fn undoom(&mut self, spec: &PoolSpec, now: Millis) {
        let back: Vec<Arc<Live>> = self
            .doomed
            .iter()
            .filter_map(|id| self.seats.get(id))
            .filter(|l| expiry(spec, &l.times(), now).is_none())
            .cloned()
            .collect();
        for l in back {
            self.doomed.remove(&l.id);
            self.watch(&l, spec, now);
        }
    }

    /// Whether a heap entry is due at `now`: until none is, counts may include lapsed seats.
    pub(super) fn any_due(&self, now: Millis) -> bool {
        self.deadlines.peek().is_some_and(|r| r.0 .0 <= now)
    }

    /// Who holds the pool at `now`, as admission counts it for `user`. Exact once no entry
    /// is due (see [`MemoryLedger::holders`]), else it may count seats that lapsed; costs the
    /// pool's groups' sizes and its pending logins, never its seats.
    pub(super) fn counts(&self, spec: &PoolSpec, user: Option<&str>, now: Millis) -> Counts {
        let holding =
            |ids: &Vec<SeatId>| ids.iter().filter(|id| !self.doomed.contains(id)).count() as u32;
        let groups = &spec.groups;
        let mut c = Counts {
            in_use: (self.seats.len() - self.doomed.len()) as u32,
            mine: user.and_then(|u| self.by_user.get(u)).map_or(0, holding),
            per_group: vec![0; groups.len()],
        };
        let members: usize = groups.iter().map(|g| g.users.len()).sum();
        if members <= self.by_user.len() {
            for (g, group) in groups.iter().enumerate() {
                for u in &group.users {
                    if admission::group_of(groups, Some(u)) == Some(g) {
                        c.per_group[g] += self.by_user.get(u.as_str()).map_or(0, holding);
                    }
                }
            }
        } else if !groups.is_empty() {
            for (u, ids) in &self.by_user {
                if let Some(g) = admission::group_of(groups, Some(u)) {
                    c.per_group[g] += holding(ids);
                }
            }
        }
        for p in self
            .pending
            .values()
            .filter(|p| p.counts && p.expires > now)
        {
            c.in_use += 1;
            if user.is_some() && p.user.as_deref() == user {
                c.mine += 1;
            }
            if let Some(g) = admission::group_of(groups, p.user.as_deref()) {
                c.per_group[g] += 1;
            }
        }
        c
    }
}

pub(super) fn overflow_counter(key: &PoolKey) -> String {
    format!("overflow_ms/{}/{}", key.product, key.pool)
}

pub(super) fn ended_counter(id: SeatId) -> String {
    format!("ended/{id}")
}

impl MemoryLedger {
    /// Holders of a pool at `now` as admission counts them for `user`, lapsed leases and
    /// expired seats excluded (those found are returned for release), as far as the answer
    /// depends on it: lapsed seats not yet found only ever count more, and fewer holders
    /// never turn a seat into a denial, so the search goes on (a bounded `due` at a time)
    /// only while the counts would deny `user` or could raise the peak (a reservation takes
    /// `in_use + 1`). A denial, an overflow seat and a new peak are decided on exact counts;
    /// an admission during a mass lapse costs a few hundred heap entries, not the lapse.
    pub(super) fn holders(
        st: &mut PoolState,
        spec: &PoolSpec,
        user: Option<&str>,
        now: Millis,
    ) -> (Counts, Vec<(Arc<Live>, ReleaseReason)>) {
        let mut expired = st.due(spec, now);
        loop {
            let counts = st.counts(spec, user, now);
            if !st.any_due(now)
                || (counts.in_use < st.peak
                    && admission::admit_counts(spec, &counts, user, now, None) == Admit::Seat)
            {
                return (counts, expired);
            }
            expired.extend(st.due(spec, now));
        }
    }

    /// A seat was taken: the peak counts what holds now (seats past their deadline that no
    /// sweep has released yet do not, found as far as a new peak depends on it; those found
    /// here are left doomed for the sweep).
    pub(super) fn bump_peak(st: &mut PoolState, spec: &PoolSpec, now: Millis) {
        let (counts, _) = Self::holders(st, spec, None, now);
        st.peak = st.peak.max(counts.in_use);
    }

    pub(super) fn overflow_left(st: &PoolState, spec: &PoolSpec, now: Millis) -> Option<u64> {
        let allowance = spec.overflow_ms?;
        let running: u64 = st
            .overflowing
            .iter()
            .filter_map(|id| st.seats.get(id))
            .map(|l| l.overflow_ms(spec, now))
            .sum();
        Some(allowance.saturating_sub(st.overflow_used_ms + running))
    }

    pub(super) fn reusable(
        st: &PoolState,
        spec: &PoolSpec,
        claim: &Claim,
        now: Millis,
    ) -> Option<SeatId> {
        let user = claim.user.as_deref()?;
        let same_device = |l: &Live| match spec.seats_per {
            SeatsPer::UserDevice => claim.device.is_some() && l.device == claim.device,
            SeatsPer::User => true,
            SeatsPer::Session => false,
        };
        st.by_user
            .get(user)?
            .iter()
            .filter_map(|id| st.seats.get(id))
            .filter(|l| same_device(l))
            .filter(|l| matches!(l.state(), SeatState::Active | SeatState::Standby))
            .filter(|l| expiry(spec, &l.times(), now).is_none())
            .max_by_key(|l| l.last_activity.load(Ordering::Relaxed))
            .map(|l| l.id)
    }

    /// A seat that left made room: overflow seats beyond what the pool is still over capacity
    /// become ordinary seats (oldest first), so overflow time is time spent over capacity, and
    /// a spent allowance never ends a seat that fits.
    pub(super) fn promote_overflow(
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
            .overflowing
            .iter()
            .filter_map(|id| st.seats.get(id))
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
            st.overflowing.remove(&l.id);
            ops.push(Op::Put(Box::new(l.record())));
        }
        ops.push(Op::Counter(overflow_counter(key), st.overflow_used_ms));
    }

    /// `reserve` with the reservation's lifetime given (`None`: the pool's standby timeout).
    pub(super) async fn reserve_for(
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
        let mut told = super::queue::Told::default();
        let outcome = {
            let mut st = slot.lock();
            // Lapsed reservations go first (`tend_line`); a freed seat goes to the head of
            // the line before any newcomer.
            let no_barging = spec.queue.is_some_and(|q| !q.barging);
            Self::tend_line(&mut st, &spec, now, no_barging, &mut told);
            let out = self.reserve_locked(&mut st, &spec, claim, ttl, no_barging, now, &mut told);
            self.write_line(&mut told);
            out
        };
        let expired = self.tell(told);
        self.expire_some(expired, now).await;
        Ok(outcome)
    }

    /// The admission of `reserve_for` under the pool lock (the line already tended).
    #[allow(clippy::too_many_arguments)]
    fn reserve_locked(
        &self,
        st: &mut PoolState,
        spec: &PoolSpec,
        claim: &Claim,
        ttl: Millis,
        no_barging: bool,
        now: Millis,
        told: &mut super::queue::Told,
    ) -> Reservation {
        let granted = |reuse, overflow| {
            Reservation::Granted(Lease {
                id: claim.lease_id,
                pool: claim.pool.clone(),
                reuse,
                overflow,
            })
        };
        if let Some(p) = st.pending.get(&claim.lease_id) {
            // Also a ready ticket's held seat, found by its lease id.
            return granted(None, p.overflow);
        }
        // Taking over one's own seat takes no seat from the line.
        if let Some(id) = Self::reusable(st, spec, claim, now) {
            let pending = Pending {
                user: claim.user.clone(),
                expires: now + ttl,
                counts: false,
                overflow: false,
            };
            st.pending.insert(claim.lease_id, pending);
            return granted(Some(id), false);
        }
        let (counts, expired) = Self::holders(st, spec, claim.user.as_deref(), now);
        told.expired.extend(expired);
        let in_use = counts.in_use;
        if no_barging && st.line.anyone_waits() {
            st.denied += 1;
            return Reservation::Full(Full {
                in_use,
                capacity: spec.capacity(now),
                reason: FullReason::Pool,
            });
        }
        let overflow_left = Self::overflow_left(st, spec, now);
        match admission::admit_counts(spec, &counts, claim.user.as_deref(), now, overflow_left) {
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
                granted(None, overflow)
            }
        }
    }

    pub(super) fn available_now(&self, pool: &PoolKey, now: Millis) -> Option<u32> {
        let slot = self.slot(pool)?;
        let spec = slot.spec();
        let mut st = slot.view();
        // A newcomer's login is refused while the line waits (barging off), so a check fails
        // then too, even between a release and the head's promotion.
        if spec
            .queue
            .is_some_and(|q| !q.barging && st.line.waits_at(&q, now))
        {
            return Some(0);
        }
        let may_lapse = st.deadlines.peek().map_or(Millis::MAX, |r| r.0 .0);
        let held = match st.held_until {
            Some((held, until)) if now < until => held,
            // No seat may have lapsed: the count is the seats not doomed, plus pending logins.
            _ if now < may_lapse => {
                let pending = st.pending.values().filter(|p| p.counts && p.expires > now);
                (st.seats.len() - st.doomed.len() + pending.count()) as u32
            }
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

    pub(super) async fn usage_now(&self, now: Millis) -> Result<Vec<PoolUsage>, LedgerError> {
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
                queue_length: st.line.live_len(spec.queue.as_ref(), now),
            });
        }
        Ok(out)
    }
}
