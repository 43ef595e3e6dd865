//! Cookies and sessions: which cookie leads to which session (one at most), moving a seat to
//! a new cookie, activating standby and paused seats, commit and rekey.

use super::*;

impl MemoryLedger {
    /// Makes `session` lead to `live`, unless another session that still holds has it: then
    /// that one's id. The map entry is the one place where two pools racing for one cookie
    /// meet, so one cookie never holds two sessions.
    pub(super) fn claim_session(
        &self,
        session: SessionKey,
        live: &Arc<Live>,
        now: Millis,
    ) -> Option<SeatId> {
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

    /// Moves `live` from cookie `from` to `to` (the app set a new value, or a login reused the
    /// seat): `from` is refused from then on. The caller holds the pool lock.
    pub(super) fn move_session(
        &self,
        live: &Arc<Live>,
        from: Option<SessionKey>,
        to: SessionKey,
        now: Millis,
        ops: &mut Vec<Op>,
    ) {
        live.set_session(Some(to));
        self.forget_gone(to, ops);
        if let Some(old) = from.filter(|o| *o != to) {
            self.by_session.remove_if(&old, |_, v| Arc::ptr_eq(v, live));
            let until = now + live.slot.spec().max_lifetime;
            self.remember_gone(old, Gone::Released(ReleaseReason::Replaced), until, ops);
        }
    }

    /// Takes a move back whose journal write failed.
    pub(super) fn unmove_session(
        &self,
        live: &Arc<Live>,
        from: Option<SessionKey>,
        to: SessionKey,
    ) {
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
    pub(super) async fn activate(&self, live: &Arc<Live>, now: Millis) -> Activated {
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
                    let user = live.user.as_deref();
                    let (counts, expired) = Self::holders(&mut st, &spec, user, now);
                    if matches!(
                        admission::admit_counts(&spec, &counts, user, now, None),
                        Admit::Deny(_)
                    ) {
                        st.denied += 1;
                        (Activated::Full, expired, Write { written: None })
                    } else {
                        live.last_activity.store(now, Ordering::Release);
                        live.set_state(SeatState::Active);
                        st.insert_seat(live.clone(), &spec, now);
                        Self::bump_peak(&mut st, &spec, now);
                        let w = self.submit(vec![Op::Put(Box::new(live.record()))]);
                        (Activated::Resumed, expired, w)
                    }
                }
                s => (Activated::Now(s), Vec::new(), Write { written: None }),
            }
        };
        write.logged().await;
        self.expire_some(expired, now).await;
        if let Activated::Resumed = outcome {
            self.observer.resumed(&live.record());
        }
        outcome
    }

    /// A cookie that already leads to a live session (of any pool, in any state) keeps it: the
    /// lease is dropped and that session's id returned, so concurrent requests with one
    /// adopted cookie never take two seats. A lease that lapsed is admitted afresh
    /// (`LeaseLost` when the pool is full). Not done unless written: a failed journal write
    /// takes the seat back and answers `Journal`.
    pub(super) async fn commit_lease(
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
                    let (counts, exp) = Self::holders(&mut st, &spec, None, now);
                    expired = exp;
                    overflow = counts.in_use >= spec.capacity(now);
                }
                if !fresh.as_ref().is_some_and(|p| p.counts) {
                    let user = claim.user.as_deref();
                    let (counts, exp) = Self::holders(&mut st, &spec, user, now);
                    expired.extend(exp);
                    let left = Self::overflow_left(&st, &spec, now);
                    match admission::admit_counts(&spec, &counts, user, now, left) {
                        Admit::Deny(_) => lost = true,
                        a => overflow = a == Admit::Overflow,
                    }
                }
                if lost {
                    (None, None)
                } else {
                    let live =
                        self.new_live(&slot, claim, session, SeatState::Standby, overflow, now);
                    if let Some(other) = self.claim_session(session, &live, now) {
                        return Ok(other);
                    }
                    st.insert_seat(live.clone(), &spec, now);
                    self.by_id.insert(live.id, live.clone());
                    Self::bump_peak(&mut st, &spec, now);
                    self.forget_gone(session, &mut ops);
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
        self.expire_some(expired, now).await;
        let Some(live) = live else {
            return Err(LedgerError::LeaseLost(lease.id));
        };
        if let Err(e) = write.durable().await {
            match moved {
                Some(old) => self.unmove_session(&live, old, session),
                None => {
                    slot.lock().forget_seat(&live.id);
                    self.by_id.remove_if(&live.id, |_, v| Arc::ptr_eq(v, &live));
                    self.by_session
                        .remove_if(&session, |_, v| Arc::ptr_eq(v, &live));
                }
            }
            return Err(e);
        }
        Ok(live.id)
    }

    /// When `new` already leads to a live session of its own, that one stays and the seat of
    /// `old` is released (`Replaced`): the answer is then the id of `new`'s session.
    pub(super) async fn rekey_now(
        &self,
        old: &SessionKey,
        new: SessionKey,
        now: Millis,
    ) -> Result<Option<SeatId>, LedgerError> {
        let Some(live) = self.live_within(old, now).await else {
            return Ok(None);
        };
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
}
