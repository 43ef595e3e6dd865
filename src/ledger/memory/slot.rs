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
    pub(super) seats: HashMap<SeatId, Arc<Live>>,
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
}

pub(super) struct Pending {
    pub(super) user: Option<String>,
    pub(super) expires: Millis,
    pub(super) counts: bool,
    pub(super) overflow: bool,
}

pub(super) fn overflow_counter(key: &PoolKey) -> String {
    format!("overflow_ms/{}/{}", key.product, key.pool)
}

pub(super) fn ended_counter(id: SeatId) -> String {
    format!("ended/{id}")
}

impl MemoryLedger {
    /// Holders of a pool at `now`, expired seats and lapsed leases excluded (the seats are
    /// returned for release).
    pub(super) fn holders<'a>(
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
    pub(super) fn bump_peak(st: &mut PoolState, spec: &PoolSpec, now: Millis) {
        let (holders, _) = Self::holders(st, spec, now);
        let n = holders.users.len() as u32;
        st.peak = st.peak.max(n);
    }

    pub(super) fn overflow_left(st: &PoolState, spec: &PoolSpec, now: Millis) -> Option<u64> {
        let allowance = spec.overflow_ms?;
        let running: u64 = st.seats.values().map(|l| l.overflow_ms(spec, now)).sum();
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
        st.seats
            .values()
            .filter(|l| l.user.as_deref() == Some(user) && same_device(l))
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

    pub(super) fn available_now(&self, pool: &PoolKey, now: Millis) -> Option<u32> {
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
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Grant, SeatsPer};
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
