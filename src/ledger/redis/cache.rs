//! The session cache: sessions verified with Redis are trusted for [`CACHE_TTL`], their activity
//! queued and written by `flush`; a cache miss verifies (and restores a seat after Redis lost
//! its data).

use super::*;

/// Verified sessions are remembered this long (after which only Redis knows them): what
/// `last_known` answers from during an outage, and what `restore` re-seats after one.
pub(super) const CACHE_KEEP: Duration = Duration::from_secs(15 * 60);

/// Sessions cached at most; beyond it entries are simply verified on each request.
pub(super) const MAX_CACHED: usize = 500_000;

#[derive(Clone)]
pub(super) struct Cached {
    pub(super) pool: PoolKey,
    pub(super) seat: Rec,
    pub(super) epoch: String,
    pub(super) checked: Stamp,
    /// The seat's deadline as verified (later touches only move it later): a cache hit never
    /// answers for a seat past it.
    pub(super) deadline: Millis,
}

/// When something happened, for the gateway's own timers (cache freshness, activity age):
/// wall-clock time, or the test clock's `now` while a test drives time.
#[derive(Clone, Copy)]
pub(super) struct Stamp {
    pub(super) at: Instant,
    pub(super) ms: Millis,
}

impl Inner {
    pub(super) fn stamp(&self) -> Stamp {
        Stamp {
            at: Instant::now(),
            ms: self.caller_now.load(Ordering::Relaxed),
        }
    }

    pub(super) fn since(&self, s: Stamp) -> Duration {
        if self.caller_clock.load(Ordering::Relaxed) {
            Duration::from_millis(self.caller_now.load(Ordering::Relaxed).saturating_sub(s.ms))
        } else {
            s.at.elapsed()
        }
    }

    pub(super) fn wall_ms(&self) -> Millis {
        if self.caller_clock.load(Ordering::Relaxed) {
            self.caller_now.load(Ordering::Relaxed)
        } else {
            now_ms()
        }
    }

    /// The pools where a session may be, in the order to ask them: the one it was last seen in
    /// first, then the product's other pools (a cookie is hashed with its product, so it is in
    /// none of another's); unseen, every pool. Callers stop at the first pool that holds it, so
    /// a cached session costs one call; the others are asked only when that pool no longer
    /// holds it, because another replica may have given the cookie a seat in another pool of
    /// the product since (the cache here only knew the old one).
    pub(super) fn pools_for(&self, session: &SessionKey) -> Vec<Arc<Pool>> {
        let Some(key) = self.cache.get(session).map(|c| c.pool.clone()) else {
            return self.all_pools();
        };
        self.pool(&key)
            .into_iter()
            .chain(self.sibling_pools(&key))
            .collect()
    }

    pub(super) fn remember(
        &self,
        session: SessionKey,
        pool: &PoolKey,
        seat: Rec,
        epoch: Option<String>,
    ) {
        if self.cache.len() >= MAX_CACHED && !self.cache.contains_key(&session) {
            return;
        }
        let epoch = epoch.unwrap_or_default();
        let deadline = self
            .pool(pool)
            .map_or(0, |p| deadline(&p.spec, &seat.times()));
        self.cache.insert(
            session,
            Cached {
                pool: pool.clone(),
                seat,
                epoch,
                checked: self.stamp(),
                deadline,
            },
        );
    }

    pub(super) fn held(pool: &PoolKey, seat: &Rec) -> Touch {
        Touch::Held {
            id: seat.id,
            pool: pool.clone(),
            state: seat.state,
            ending_at: (seat.ending_at > 0).then_some(seat.ending_at),
        }
    }

    /// Verifies a session with Redis (cache miss or stale entry).
    pub(super) async fn verify(
        self: &Arc<Self>,
        session: &SessionKey,
        activity: bool,
    ) -> Result<Touch, LedgerError> {
        let before = self.cache.get(session).map(|c| c.clone());
        let hex = session.hex();
        let args = [hex.clone(), if activity { "1" } else { "0" }.to_string()];
        let mut gone = Gone::Unknown;
        let mut gone_until = 0;
        let mut err = None;
        for pool in self.pools_for(session) {
            let a = match self.call(&pool, "touch", &args).await {
                Ok(a) => a,
                Err(e) => {
                    err = Some(e);
                    continue;
                }
            };
            match (a.kind, a.seat) {
                (Kind::Held, Some(seat)) => {
                    // Written now; queued activity is only dropped when this was activity.
                    self.requests.remove(&seat.id);
                    if activity {
                        self.activity.remove(&seat.id);
                    }
                    let t = Self::held(&pool.spec.key, &seat);
                    self.remember(*session, &pool.spec.key, seat, a.epoch);
                    return Ok(t);
                }
                (Kind::Gone, _) => match parse_gone(a.reason.as_deref().unwrap_or_default()) {
                    Ok(GoneWhy::Unknown) => {
                        if let Some(t) = self
                            .restore(session, &pool, before.as_ref(), a.epoch.as_deref())
                            .await
                        {
                            return Ok(t);
                        }
                    }
                    Ok(GoneWhy::Paused) => {
                        self.cache.remove(session);
                        return Ok(Touch::Gone(Gone::Released(ReleaseReason::Paused)));
                    }
                    Ok(GoneWhy::Released(r)) => {
                        if gone == Gone::Unknown || a.gone_until > gone_until {
                            gone = Gone::Released(r);
                            gone_until = a.gone_until;
                        }
                    }
                    Err(e) => err = Some(e),
                },
                (k, _) => err = Some(corrupt(format!("unexpected answer {k:?} to touch"))),
            }
        }
        match (gone, err) {
            // Kept: `last_known` and `restore` need it once the store answers again.
            (Gone::Unknown, Some(e)) => Err(e),
            (g, _) => {
                self.cache.remove(session);
                Ok(Touch::Gone(g))
            }
        }
    }

    /// Redis lost its data (the pool's epoch changed since this replica verified the session,
    /// e.g. a restart without persistence or a failover to an empty replica): a session this
    /// replica knew held a seat takes it back through normal admission, so the pool never goes
    /// beyond capacity; when it is full the session is treated as unknown.
    pub(super) async fn restore(
        self: &Arc<Self>,
        session: &SessionKey,
        pool: &Pool,
        before: Option<&Cached>,
        epoch: Option<&str>,
    ) -> Option<Touch> {
        let c = before.filter(|c| c.pool == pool.spec.key)?;
        if c.epoch.is_empty() || Some(c.epoch.as_str()) == epoch {
            return None;
        }
        let json = serde_json::to_string(&c.seat).ok()?;
        let a = self.call(pool, "restore", &[json]).await.ok()?;
        let seat = a.seat.filter(|_| a.kind == Kind::Held)?;
        log::info!(
            "restored {session:?} as seat {} after the store lost its data",
            seat.id
        );
        let t = Self::held(&pool.spec.key, &seat);
        self.remember(*session, &pool.spec.key, seat, a.epoch);
        Some(t)
    }
}

impl RedisLedger {
    pub(super) async fn flush_queued(&self) -> Result<(), LedgerError> {
        // (seat, when, whether it was activity or only a request).
        let mut by_pool: HashMap<PoolKey, Vec<(SeatId, Stamp, bool)>> = HashMap::new();
        for (queue, counts) in [(&self.inner.activity, true), (&self.inner.requests, false)] {
            let ids: Vec<SeatId> = queue.iter().map(|e| *e.key()).collect();
            for id in ids {
                if let Some((_, (pool, at))) = queue.remove(&id) {
                    by_pool.entry(pool).or_default().push((id, at, counts));
                }
            }
        }
        let mut result = Ok(());
        for (key, seats) in by_pool {
            let Some(pool) = self.inner.pool(&key) else {
                continue;
            };
            let mut args = Vec::with_capacity(seats.len() * 3);
            for (id, at, counts) in &seats {
                args.push(id.to_string());
                args.push((self.inner.since(*at).as_millis() as u64).to_string());
                args.push(if *counts { "a" } else { "r" }.to_string());
            }
            if let Err(e) = self.inner.call(&pool, "activity", &args).await {
                // Keep them for the next flush (newer activity wins).
                for (id, at, counts) in seats {
                    let queue = if counts {
                        &self.inner.activity
                    } else {
                        &self.inner.requests
                    };
                    queue.entry(id).or_insert((key.clone(), at));
                }
                result = Err(e);
            }
        }
        result
    }
}
