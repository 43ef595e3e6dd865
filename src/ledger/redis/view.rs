//! The pool view behind `available()`: refreshed every [`VIEW_EVERY`] and by every usage
//! listing, no answer once older than [`STALE_AFTER`]; and the listings (sessions, usage).

use super::*;

#[derive(Clone)]
pub(super) struct View {
    pub(super) capacity: u32,
    pub(super) held: u32,
    /// Waiting tickets that keep newcomers back (barging off): while any waits, no seat is
    /// free for a check or a newcomer's login, whatever `held` says.
    pub(super) waiting: u32,
    pub(super) at: Instant,
    /// What `wait_estimate` reads: the earliest deadlines of the seats that count (a few,
    /// earliest first), the releases of the last hour and the window they cover.
    pub(super) earliest: Vec<Millis>,
    pub(super) releases: u64,
    pub(super) window: Millis,
}

impl View {
    pub(super) fn of(a: &Answer, capacity: u32, held: u32) -> Self {
        View {
            capacity,
            held,
            waiting: a.waiting.min(u32::MAX as u64) as u32,
            at: Instant::now(),
            earliest: a.earliest.iter().map(|d| d.0).collect(),
            releases: a.releases,
            window: rate_window(a.since, a.now),
        }
    }
}

impl View {
    pub(super) fn fresh(&self) -> bool {
        self.at.elapsed() <= STALE_AFTER
    }

    /// Seats a newcomer could take: none while tickets wait ahead of it (a seat freed
    /// meanwhile goes to the head at the next reserve or sweep), else capacity less held.
    pub(super) fn available(&self) -> u32 {
        if self.waiting > 0 {
            return 0;
        }
        self.capacity.saturating_sub(self.held)
    }
}

impl Inner {
    /// `f` of the pool's view, `None` without one or once it is older than [`STALE_AFTER`]
    /// (the store stopped answering). The first ask starts the refresher.
    pub(super) fn with_view<T>(
        self: &Arc<Self>,
        pool: &PoolKey,
        f: impl FnOnce(&View) -> T,
    ) -> Option<T> {
        self.start_refresher();
        self.views.get(pool).filter(|v| v.fresh()).map(|v| f(&v))
    }

    pub(super) fn start_refresher(self: &Arc<Self>) {
        if self.refresher.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.refresher.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { return };
                me.refresh_views().await;
                drop(me);
                tokio::time::sleep(VIEW_EVERY).await;
            }
        });
    }

    pub(super) async fn refresh_views(self: &Arc<Self>) {
        for pool in self.all_pools() {
            if let Ok(a) = self.call(&pool, "view", &[]).await {
                self.views.insert(
                    pool.spec.key.clone(),
                    View::of(&a, a.capacity as u32, a.held as u32),
                );
            }
        }
    }
}

impl RedisLedger {
    /// Test hook: refreshes the pool views behind `available()` now.
    #[doc(hidden)]
    pub async fn refresh_view(&self) {
        self.inner.refresh_views().await
    }

    /// Test hook: makes the pool views `by` older, as if the store had not answered since.
    #[doc(hidden)]
    pub fn age_views(&self, by: Duration) {
        for mut v in self.inner.views.iter_mut() {
            if let Some(at) = v.at.checked_sub(by) {
                v.at = at;
            }
        }
    }

    pub(super) async fn list_sessions(&self, now: Millis) -> Result<Vec<SeatRecord>, LedgerError> {
        self.inner.at(now);
        let mut out = Vec::new();
        for pool in self.inner.all_pools() {
            let a = self.inner.call(&pool, "list", &[]).await?;
            for rec in seats_of(&a)? {
                if expiry(&pool.spec, &rec.times(), a.now).is_none() {
                    out.push(rec.record(&pool.spec.key)?);
                }
            }
        }
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub(super) async fn list_usage(&self, now: Millis) -> Result<Vec<PoolUsage>, LedgerError> {
        self.inner.at(now);
        let mut out = Vec::new();
        for pool in self.inner.all_pools() {
            let a = self.inner.call(&pool, "list", &[]).await?;
            let (mut live, mut standby, mut ending, mut running) = (0u32, 0u32, 0u32, 0u64);
            for rec in seats_of(&a)? {
                let t = rec.times();
                if !t.state.holds_seat() {
                    continue;
                }
                if rec.overflow {
                    // Overflow time stops at the seat's deadline, swept or not.
                    running += deadline(&pool.spec, &t)
                        .min(a.now)
                        .saturating_sub(rec.started_at);
                }
                if expiry(&pool.spec, &t, a.now).is_some() {
                    continue;
                }
                live += 1;
                match t.state {
                    SeatState::Standby => standby += 1,
                    SeatState::Ending => ending += 1,
                    _ => {}
                }
            }
            let mut used = a.overflow_ms + running;
            if let Some(allowance) = pool.spec.overflow_ms {
                used = used.min(allowance);
            }
            let capacity = pool.spec.capacity(a.now);
            let in_use = live + a.pending as u32;
            self.inner
                .views
                .insert(pool.spec.key.clone(), View::of(&a, capacity, in_use));
            out.push(PoolUsage {
                product: pool.spec.key.product.clone(),
                pool: pool.spec.key.pool.clone(),
                capacity,
                in_use,
                available: capacity.saturating_sub(in_use),
                peak: a.peak as u32,
                denied: a.denied,
                standby: standby + a.pending as u32,
                ending,
                overflow_used_seconds: used / 1000,
                queue_length: a.queue_length as u32,
            });
        }
        Ok(out)
    }
}
